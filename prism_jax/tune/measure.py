"""Device time of a JAX callable, as the GPU protocol of BENCHMARKS.md asks: many calls inside one
jitted loop, each call's inputs made to depend on the previous call's output (so XLA can neither hoist
a call out of the loop nor merge calls), wall time around ``block_until_ready`` divided by the calls.
The tuner and ``benchmarks/gpu.py`` time with it."""

from __future__ import annotations

import dataclasses
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


def perturb(args: tuple, out: Any) -> tuple:
    """``args`` with the first element of every floating-point input moved by ``1e-30 x`` the first
    element of ``out``: numerically nothing (it rounds away), but a real data dependence to XLA -- one
    in-place single-element update per input, the same for every implementation (``harness_overhead``
    measures it)."""
    head = jax.tree.leaves(out)[0]
    delta = head.reshape(-1)[:1].astype(jnp.float32) * 1e-30

    def move(a):
        if not jnp.issubdtype(a.dtype, jnp.floating) or a.size == 0:
            return a
        corner = (0,) * a.ndim
        first = jax.lax.dynamic_slice(a, corner, (1,) * a.ndim)
        return jax.lax.dynamic_update_slice(a, first + delta.reshape((1,) * a.ndim).astype(a.dtype), corner)

    return tuple(jax.tree.map(move, a) for a in args)


def chained_loop(fn: Callable, trips: int, unroll: int) -> Callable:
    """A jitted ``trips x unroll`` calls of ``fn(*args)``, each call's inputs perturbed by the previous
    call's output (:func:`perturb`), so XLA can neither hoist a call (or part of one) out of the loop
    nor merge calls."""

    def loop(*args):
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *args))

        def body(_, carry):
            args, out = carry
            for _ in range(unroll):
                args = perturb(args, out)
                out = fn(*args)
            return args, out

        return jax.lax.fori_loop(0, trips, body, (tuple(args), zeros))[1]

    return jax.jit(loop)


def time_chained(fn: Callable, args: Sequence[Any], *, iterations: int = 100, repeats: int = 5, warmup: int = 2,
                 unroll: int = 10) -> Timing:
    """Seconds per call of ``fn(*args)`` (any JAX-traceable callable): ``iterations`` calls (rounded
    up to a multiple of ``unroll``) in one jitted loop, timed ``repeats`` times after ``warmup`` runs
    (the first compiles); wall time around ``block_until_ready`` divided by the calls."""
    unroll = max(1, min(unroll, iterations))
    trips = math.ceil(iterations / unroll)
    loop = chained_loop(fn, trips, unroll)
    for _ in range(max(1, warmup)):
        jax.block_until_ready(loop(*args))
    samples = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        jax.block_until_ready(loop(*args))
        samples.append((time.perf_counter() - start) / (trips * unroll))
    return Timing(float(np.median(samples)), min(samples), max(samples), tuple(samples), trips * unroll, len(samples))
