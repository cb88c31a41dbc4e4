"""Device time of a JAX callable, as the GPU protocol of BENCHMARKS.md asks: many calls inside one
jitted loop, each call's inputs made to depend on the previous call's output (so XLA can neither hoist
a call out of the loop nor merge calls), wall time around ``block_until_ready`` divided by the calls.
The tuner and ``benchmarks/gpu.py`` time with it."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call: median, min and max over repeats of one timed loop of ``calls`` calls."""

    median_s: float
    min_s: float
    max_s: float
    samples_s: tuple[float, ...]
    calls: int
    repeats: int


def corners(args: tuple) -> tuple:
    """The first element of every input (what :func:`perturb` writes back, moved)."""
    return tuple(jax.tree.map(lambda a: a.reshape(-1)[:1] if a.size else a, a) for a in args)


def perturb(args: tuple, out: Any, first: tuple | None = None) -> tuple:
    """``args`` with the first element of every floating-point input set to ``first`` (its original
    value, :func:`corners`) plus ``1e-30 x`` the first element of ``out``: numerically nothing (it
    rounds away), but a real data dependence to XLA -- one single-element update per input. The update
    reads nothing of the array it writes, so XLA does it in place; an earlier form read the element
    from the array and XLA:CPU then copied the whole input per call (6 ms for a 64 MiB weight)."""
    first = corners(args) if first is None else first
    head = jax.tree.leaves(out)[0]
    delta = head.reshape(-1)[:1].astype(jnp.float32) * 1e-30

    def move(a, c):
        if not jnp.issubdtype(a.dtype, jnp.floating) or a.size == 0:
            return a
        moved = (c.astype(jnp.float32) + delta).astype(a.dtype).reshape((1,) * a.ndim)
        return jax.lax.dynamic_update_slice(a, moved, (0,) * a.ndim)

    return tuple(jax.tree.map(move, a, c) for a, c in zip(args, first))


@functools.lru_cache(maxsize=64)  # timing rounds of one program reuse its compiled loop
def chained_loop(fn: Callable, trips: int, unroll: int) -> Callable:
    """A jitted ``trips x unroll`` calls of ``fn(*args)``, each call's inputs perturbed by the previous
    call's output (:func:`perturb`), so XLA can neither hoist a call (or part of one) out of the loop
    nor merge calls. It takes the inputs as one tuple, donates them and updates them in place, and
    returns ``(inputs, output)``: the inputs as the last call saw them and its output. Run it through
    :class:`Chain`, which hands it copies and threads each run's inputs into the next. (Without the
    donation XLA:CPU copied every input at the loop's entry: 25 ms for 64 MiB of weights, more than
    ten calls of the kernel that read them.)"""

    def loop(args: tuple):
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *args))
        # taken first: a later read of an input's original value would force a copy of the input
        first = jax.lax.optimization_barrier(corners(args))

        def body(_, carry):
            args, out = carry
            for _ in range(unroll):
                args = perturb(args, out, first)
                out = fn(*args)
            return args, out

        return jax.lax.fori_loop(0, trips, body, (args, zeros))

    return jax.jit(loop, donate_argnums=0)


class Inputs:
    """A copy of some inputs (made, and waited for, here) that :class:`Chain` runs donate and replace;
    chains of programs with the same signature may share one (a single copy of large weights)."""

    def __init__(self, args: Sequence[Any]):
        self.value = jax.block_until_ready(jax.tree.map(jnp.copy, tuple(args)))


class Chain:
    """A :func:`chained_loop` of ``fn`` run again and again on its own copies of ``args`` (the loop
    donates them; the caller's arrays are never touched), each run starting from the inputs the last
    one left. The copies are made (and waited for) here, outside any timing, unless ``inputs`` (an
    :class:`Inputs`, possibly shared with other chains) is given. Calling it runs the loop once and
    returns its output (dispatched, not waited for)."""

    def __init__(self, fn: Callable, args: Sequence[Any], trips: int, unroll: int, inputs: Inputs | None = None):
        self.loop = chained_loop(fn, trips, unroll)
        self.calls_per_run = trips * unroll
        self.inputs = inputs if inputs is not None else Inputs(args)

    def __call__(self) -> Any:
        self.inputs.value, out = self.loop(self.inputs.value)
        return out


class ChainTimer:
    """Seconds per call of ``fn(*args)``, one timed :class:`Chain` run of ``iterations`` calls (rounded
    up to a multiple of ``unroll``) per call of the timer: wall time around ``block_until_ready``
    divided by the calls. The inputs are copied once, here (or shared: ``inputs``); the first run
    compiles (warm up first)."""

    def __init__(self, fn: Callable, args: Sequence[Any], *, iterations: int = 100, unroll: int = 10,
                 inputs: Inputs | None = None):
        unroll = max(1, min(unroll, iterations))
        self.chain = Chain(fn, args, math.ceil(iterations / unroll), unroll, inputs)

    def __call__(self) -> float:
        start = time.perf_counter()
        jax.block_until_ready(self.chain())
        return (time.perf_counter() - start) / self.chain.calls_per_run


def time_chained(fn: Callable, args: Sequence[Any], *, iterations: int = 100, repeats: int = 5, warmup: int = 2,
                 unroll: int = 10) -> Timing:
    """Seconds per call of ``fn(*args)`` (any JAX-traceable callable): a :class:`ChainTimer` run
    ``repeats`` times after ``warmup`` runs (the first compiles)."""
    timer = ChainTimer(fn, args, iterations=iterations, unroll=unroll)
    for _ in range(max(0, warmup)):  # the first run compiles: warmup=0 only for a loop already run
        timer()
    samples = [timer() for _ in range(max(1, repeats))]
    calls = timer.chain.calls_per_run
    return Timing(float(np.median(samples)), min(samples), max(samples), tuple(samples), calls, len(samples))
