"""The tuner: instantiation under the backend's tile rules, the numerics check that keeps wrong kernels
out, XLA as the fallback with its reason, and the on-disk cache."""

import logging

import jax
import numpy as np
import pytest

from prism_jax.cache import ResultCache
from prism_jax.cost import H100_SXM, TRITON
from prism_jax.ir import DType
from prism_jax.ir.examples import EXAMPLES
from prism_jax.tune import Target, TuneConfig, max_relative_error, tolerance, tune_region
from prism_jax.tune.tuner import CACHE_NAMESPACE
from prism_jax.verify.mutate import mutants

INTERPRET = Target("pallas-interpret", H100_SXM, interpret=True)
SIZES = {"n": 16, "d": 64, "N": 32}


def problem(name="rmsnorm_matmul", sizes=SIZES):
    example = EXAMPLES[name]
    return example.reference_graph(sizes), example.symbolic(), dict(sizes)


def test_checked_kernel_with_power_of_two_tiles():
    region, symbolic, sizes = problem()
    choice = tune_region(region, [(symbolic, sizes)], INTERPRET)
    assert choice.uses_kernel and choice.candidate == 0
    assert choice.max_error is not None and choice.max_error < tolerance([DType.FLOAT32])
    for op in choice.graph.custom_kernels:
        for t in op.block.values:
            assert all(int(d) & (int(d) - 1) == 0 for d in t.shape), t
    assert choice.estimate_s < choice.xla_estimate_s  # the cost model's view: fused beats unfused


def test_wrong_candidate_is_not_used():
    region, symbolic, sizes = problem()
    wrong = next(m.graph for m in mutants(symbolic) if "drop" in m.description or "swap" in m.description)
    choice = tune_region(region, [(wrong, sizes)], INTERPRET)
    assert not choice.uses_kernel
    assert "numerics off" in choice.reason or "Error" in choice.reason


def test_falls_through_to_the_next_candidate():
    region, symbolic, sizes = problem()
    wrong = next(m.graph for m in mutants(symbolic))
    choice = tune_region(region, [(wrong, sizes), (symbolic, sizes)], INTERPRET)
    assert choice.uses_kernel and choice.candidate == 1


def test_no_power_of_two_tiling_still_runs_interpreted():
    region, symbolic, sizes = problem(sizes={"n": 4, "d": 48, "N": 24})
    choice = tune_region(region, [(symbolic, sizes)], INTERPRET)
    assert choice.uses_kernel
    strict = tune_region(region, [(symbolic, sizes)],
                         Target("strict", H100_SXM, interpret=True, rules=TRITON), TuneConfig(sizes_per_candidate=1))
    assert strict.uses_kernel  # interpret mode relaxes the rule and says so in the log of reasons


def test_cache_hit_and_corrupt_entry(tmp_path, caplog):
    cache = ResultCache(tmp_path / "cache.sqlite")
    region, symbolic, sizes = problem()
    first = tune_region(region, [(symbolic, sizes)], INTERPRET, cache=cache)
    second = tune_region(region, [(symbolic, sizes)], INTERPRET, cache=cache)
    assert not first.cache_hit and second.cache_hit
    assert second.sizes == first.sizes and second.graph == first.graph
    (key,) = [k for k in cache.keys(CACHE_NAMESPACE)]
    cache.put(CACHE_NAMESPACE, key, {"candidate": 7})
    with caplog.at_level(logging.WARNING):
        third = tune_region(region, [(symbolic, sizes)], INTERPRET, cache=cache)
    assert third.uses_kernel and not third.cache_hit
    assert "unreadable cached tuning result" in caplog.text


def test_max_relative_error():
    a = np.array([1.0, 2.0, 4.0])
    assert max_relative_error([a], [a]) == 0
    assert max_relative_error([a + 0.04], [a]) == pytest.approx(0.01)
    assert max_relative_error([np.array([np.nan, 2, 4])], [a]) == float("inf")
    assert max_relative_error([a[:2]], [a]) == float("inf")
    assert max_relative_error([a.astype(np.float32)], [a]) == float("inf")  # dtypes must match too
    assert tolerance([DType.BFLOAT16, DType.FLOAT32]) > tolerance([DType.FLOAT32])


def test_device_path_times_programs_against_xla_and_keeps_the_faster(monkeypatch):
    """The measuring path, on CPU: XLA's program and the checked kernels are each timed (a fixed clock
    here: interpreted kernels on tiny shapes race XLA), the faster kept, and the choice says why."""
    import prism_jax.tune.tuner as tuner
    from prism_jax.codegen.pallas import PallasOptions

    monkeypatch.setattr(tuner, "_launch_options", lambda target, config: [PallasOptions(interpret=True)])
    timed_calls = []

    def timer(fn, args, **kwargs):  # a real run of the program, then a fixed time: XLA 1 ms, kernels 2 ms
        jax.block_until_ready(fn(*args))
        timed_calls.append(fn)
        seconds = 1e-3 if fn is timed_calls[0] else 2e-3
        return lambda: seconds

    monkeypatch.setattr(tuner, "ChainTimer", timer)
    region, symbolic, sizes = problem()
    timed = Target("cpu-timed", H100_SXM, interpret=False)
    choice = tune_region(region, [(symbolic, sizes)], timed, TuneConfig(iterations=4, repeats=1, warmup=1))
    assert not choice.uses_kernel and "XLA is faster (1000.0 µs vs 2000.0 µs)" in choice.reason, choice.reason
    assert choice.xla_measured_s == 1e-3 and len(timed_calls) >= 2


def test_kernels_that_do_not_build_fall_back_to_xla_with_the_reason():
    """Triton kernels cannot build on a CPU-only machine: every program fails its check, XLA runs."""
    region, symbolic, sizes = problem()
    choice = tune_region(region, [(symbolic, sizes)], Target("triton-on-cpu", H100_SXM, interpret=False),
                         TuneConfig(launch_options=((4, 2),)))
    assert not choice.uses_kernel and "candidate 0" in choice.reason


def test_cuda_target_builds_cuda_custom_calls_and_reads_its_options():
    """The CUDA target's programs are nvcc-built FFI custom calls (lowered here for CUDA; they run
    where a GPU is), and its cached options read back as CudaOptions."""
    import shutil

    from prism_jax.codegen import cuda
    from prism_jax.cost import H100_SXM, TileRules
    from prism_jax.ir.examples import EXAMPLES, instantiate_example, random_inputs
    from prism_jax.tune.tuner import Emitter, Target

    target = Target("cuda-native", H100_SXM, interpret=False, rules=TileRules(), emitter=Emitter.CUDA)
    assert target.options_from({"threads": 256}) == cuda.CudaOptions(threads=256)
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found")
    graph = instantiate_example("tiled_matmul", EXAMPLES["tiled_matmul"].tilings[0])
    fn = target.build(graph, cuda.CudaOptions())
    specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in random_inputs(graph, seed=0)]
    text = jax.jit(fn).trace(*specs).lower(lowering_platforms=("cuda",)).as_text()
    assert "stablehlo.custom_call @prism_" in text


def test_device_times_interleave_programs_in_rounds_and_take_the_median(monkeypatch):
    """Every round times each program once, in order; a slow moment in one round does not decide."""
    import prism_jax.tune.tuner as tuner

    order, slow_round = [], {5}  # the kernel's timed run in the first round (after 2 warm-ups) is slow

    def timer(fn, args, **kwargs):
        def run():
            order.append(fn)
            return (1e-3 if fn == "xla" else 0.9e-3) * (10 if len(order) - 1 in slow_round else 1)
        return run

    monkeypatch.setattr(tuner, "ChainTimer", timer)
    monkeypatch.setattr(tuner, "_calls_per_loop", lambda reference, args, config: config.iterations)
    times = tuner._device_times(["xla", "kernel"], (), TuneConfig(warmup=1, repeats=3, timing_budget_s=0))
    # a warm-up pass, then three rounds: each program's timed run right after an untimed one
    assert order == ["xla", "kernel"] + ["xla", "xla", "kernel", "kernel"] * 3
    assert times == [pytest.approx(1e-3), pytest.approx(0.9e-3)]


@pytest.mark.parametrize("seconds,rounds", [(20e-6, 25), (100e-6, 6), (5e-3, 3)])
def test_short_programs_get_more_rounds_within_the_timing_budget(monkeypatch, seconds, rounds):
    """Rounds beyond ``repeats`` while they fit ``timing_budget_s`` (a round of two programs' 100-call
    loops, each timed after an untimed one, takes 8 ms for a 20 µs program: 31 fit 0.25 s, capped at
    25; 40 ms for a 100 µs one: 6), never fewer than ``repeats``."""
    import prism_jax.tune.tuner as tuner

    runs = []

    def timer(fn, args, **kwargs):
        def run():
            runs.append(fn)
            return seconds
        return run

    monkeypatch.setattr(tuner, "ChainTimer", timer)
    monkeypatch.setattr(tuner, "_calls_per_loop", lambda reference, args, config: config.iterations)
    tuner._device_times(["xla", "kernel"], (), TuneConfig(warmup=1))
    assert len(runs) == 2 + 4 * rounds


@pytest.mark.parametrize("call_s,calls", [(1e-4, 100), (0.02, 5), (0.03, 4), (0.5, 1)])
def test_slow_regions_are_timed_in_loops_of_fewer_calls(monkeypatch, call_s, calls):
    """A timed loop holds ``iterations`` calls, or as many of XLA's as fit ``loop_s`` where fewer (the
    one call's duration given by a fake clock: a real one made this test depend on the host's load)."""
    import types

    import prism_jax.tune.tuner as tuner

    monkeypatch.setattr(tuner, "time", types.SimpleNamespace(perf_counter=iter([0.0, call_s]).__next__))
    ran = []
    assert tuner._calls_per_loop(lambda: ran.append(1) or jax.numpy.zeros(()), (),
                                 TuneConfig(iterations=100, loop_s=0.1)) == calls
    assert ran == [1]  # the reference ran once, between the two readings


def test_a_kernel_must_be_clearly_faster_than_xla(monkeypatch):
    import prism_jax.tune.tuner as tuner
    from prism_jax.codegen.pallas import PallasOptions

    monkeypatch.setattr(tuner, "_launch_options", lambda target, config: [PallasOptions(interpret=True)])
    monkeypatch.setattr(tuner, "_device_times", lambda fns, args, config: [1e-3] + [0.99e-3] * (len(fns) - 1))
    region, symbolic, sizes = problem()
    timed = Target("cpu-timed", H100_SXM, interpret=False)
    choice = tune_region(region, [(symbolic, sizes)], timed, TuneConfig(min_speedup=1.03, use_cache=False))
    assert not choice.uses_kernel and "not clearly faster" in choice.reason
    choice = tune_region(region, [(symbolic, sizes)], timed, TuneConfig(min_speedup=1.0, use_cache=False))
    assert choice.uses_kernel and choice.measured_s == pytest.approx(0.99e-3)


def test_the_winner_must_beat_xla_again_when_timed_against_it_alone(monkeypatch):
    """A kernel that won the rounds (a noisy moment) but loses the second timing against XLA alone is
    not used, and the reason says so."""
    import prism_jax.tune.tuner as tuner
    from prism_jax.codegen.pallas import PallasOptions

    monkeypatch.setattr(tuner, "_launch_options", lambda target, config: [PallasOptions(interpret=True)])
    timings = iter([[1e-3, 0.5e-3], [1e-3, 1.2e-3]])  # the rounds, then XLA and the winner alone
    monkeypatch.setattr(tuner, "_device_times", lambda fns, args, config: next(timings))
    region, symbolic, sizes = problem()
    timed = Target("cpu-timed", H100_SXM, interpret=False)
    choice = tune_region(region, [(symbolic, sizes)], timed, TuneConfig())
    assert not choice.uses_kernel and "XLA is faster timed again against the winner" in choice.reason, choice.reason
    assert choice.xla_measured_s == 1e-3


def test_the_fastest_few_are_timed_again_and_the_final_picks_the_winner(monkeypatch):
    """The rounds' fastest programs within ``finalist_spread`` of the fastest (not a clearly slower one)
    are timed again with XLA's, in rounds within ``final_budget_s``, and the winner of that final is
    used: a program that led the rounds by a noisy moment does not win on it."""
    import prism_jax.tune.tuner as tuner
    from prism_jax.codegen.pallas import PallasOptions

    options = [PallasOptions(interpret=True, num_warps=w) for w in (1, 2, 4)]
    monkeypatch.setattr(tuner, "_launch_options", lambda target, config: options)
    calls = []

    def device_times(fns, args, config):
        calls.append((list(fns), config.timing_budget_s))
        if len(calls) == 1:  # the rounds: num_warps=1 leads, 2 is close, 4 clearly slower
            return [1e-3, 0.50e-3, 0.55e-3, 0.90e-3]
        return [1e-3, 0.60e-3, 0.52e-3]  # the final: num_warps=2 is the faster

    monkeypatch.setattr(tuner, "_device_times", device_times)
    region, symbolic, sizes = problem()
    timed = Target("cpu-timed", H100_SXM, interpret=False)
    choice = tune_region(region, [(symbolic, sizes)], timed, TuneConfig(use_cache=False, final_budget_s=0.9))
    assert choice.uses_kernel and choice.options.num_warps == 2 and choice.measured_s == pytest.approx(0.52e-3)
    (rounds, _), (final, final_budget) = calls
    assert final == rounds[:3] and final_budget == 0.9  # XLA's program and the two finalists, not the third


def test_a_single_finalist_is_the_rounds_winner():
    import prism_jax.tune.tuner as tuner

    assert tuner._finalists([3.0, 1.0, 2.0], TuneConfig(finalists=1)) == [1]
    assert tuner._finalists([3.0, 1.0, 1.2], TuneConfig(finalists=3, finalist_spread=1.25)) == [1, 2]
    assert tuner._finalists([1.0], TuneConfig(finalists=0)) == [0]
