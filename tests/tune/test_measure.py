"""The device-time loop (the GPU protocol's): positive times with their spread, every call inside the
loop, and the input perturbation that chains calls changes no value."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prism_jax.tune.measure import Chain, ChainTimer, Inputs, chained_loop, perturb, time_chained


def _matmul_tanh(a, b):
    return jnp.tanh(a @ b)


def _square_args():
    key_a, key_b = jax.random.split(jax.random.key(0))
    return jax.random.normal(key_a, (64, 64)), jax.random.normal(key_b, (64, 64)) / 8


def test_time_chained_returns_seconds_and_spread():
    timing = time_chained(_matmul_tanh, _square_args(), iterations=6, repeats=3, warmup=1, unroll=3)
    assert timing.median_s > 0
    assert timing.min_s <= timing.median_s <= timing.max_s
    assert len(timing.samples_s) == timing.repeats == 3
    assert timing.calls == 6


def test_time_chained_works_for_any_callable():
    timing = time_chained(lambda x: {"y": jnp.sin(x)}, (jnp.ones((8,)),), iterations=2, repeats=1, warmup=1)
    assert timing.median_s > 0 and timing.calls == 2


def test_chained_loop_runs_every_call_inside_the_loop():
    """XLA must neither hoist the calls out of the loop (inputs are loop-invariant otherwise) nor merge
    the unrolled calls: the compiled module holds one dot per unrolled call."""
    hlo = chained_loop(jax.jit(_matmul_tanh), 2, 3).lower(_square_args()).compile().as_text()
    assert len(re.findall(r"\bdot\(", hlo)) == 3


def test_chained_loop_keeps_weight_only_work_inside_the_loop():
    """Widening a bfloat16 weight depends on the weight alone: with loop-invariant inputs XLA would
    hoist it; the barrier keeps one convert per call inside the loop body."""
    fn = jax.jit(lambda x, w: x @ w.astype(jnp.float32))
    x, w = jnp.ones((4, 64)), jnp.ones((64, 64), jnp.bfloat16)
    hlo = chained_loop(fn, 2, 3).lower((x, w)).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    assert not re.search(r"f32\[64,64\]\S* fusion", entry)  # a hoisted convert: f32[64,64] fusion(%w)
    assert len(re.findall(r"\bdot\(", hlo)) == 3


def test_chained_loop_copies_no_input():
    """The loop updates its donated inputs in place: the compiled module copies none of them (it once
    copied every input at the loop's entry, 25 ms for 64 MiB, which the timings then carried)."""
    w = jnp.ones((256, 512))
    hlo = chained_loop(jax.jit(lambda x, w: jnp.tanh(x @ w)), 2, 3).lower((jnp.ones((4, 256)), w)).compile().as_text()
    assert not re.search(r"f32\[256,512\]\S* copy\(", hlo)


def test_chain_leaves_the_callers_inputs_alone_and_continues_from_the_last_run():
    x = jnp.arange(4.0)
    run = Chain(lambda x: x * 2, (x,), 2, 2)
    first, second = np.asarray(run()), np.asarray(run())
    assert np.array_equal(np.asarray(x), np.arange(4.0))  # the caller's array: not donated
    np.testing.assert_allclose(first, second)  # perturbations round away
    assert run.calls_per_run == 4


def test_chains_of_programs_can_share_one_copy_of_the_inputs():
    """The tuner's programs pass one copy of the inputs from run to run (one copy of large weights)."""
    x = jnp.arange(6.0)
    shared = Inputs((x,))
    double, negate = Chain(lambda x: x * 2, (x,), 1, 2, shared), Chain(lambda x: -x, (x,), 1, 2, shared)
    np.testing.assert_allclose(np.asarray(double()), np.arange(6.0) * 2)
    np.testing.assert_allclose(np.asarray(negate()), -np.arange(6.0))  # reads what double's run left
    assert double.inputs is negate.inputs is shared
    assert np.array_equal(np.asarray(x), np.arange(6.0))
    timer = ChainTimer(lambda x: x + 1, (x,), iterations=4, unroll=2, inputs=shared)
    timer()  # compiles
    assert timer() > 0 and timer.chain.calls_per_run == 4


def test_chained_loop_copies_no_input_per_call():
    """The chaining itself costs next to nothing, even for a 16 MiB input (it once copied the input)."""
    w = jnp.ones((2048, 2048))
    touch = time_chained(lambda w: w[:1, :1] * 2, (w,), iterations=20, repeats=3, warmup=1)
    copy = time_chained(lambda w: w * 2, (w,), iterations=20, repeats=3, warmup=1)
    assert touch.median_s < copy.median_s / 4


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_perturb_changes_no_value(dtype):
    args = (jnp.linspace(1.0, 2.0, 12, dtype=dtype).reshape(3, 4), jnp.full((5,), -3.0, dtype))
    moved = jax.jit(perturb)(args, jnp.full((2, 2), 7.0, dtype))
    for a, b in zip(args, moved):
        assert b.dtype == a.dtype and np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
