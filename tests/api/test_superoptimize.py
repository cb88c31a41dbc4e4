"""superoptimize end to end on CPU (Pallas interpret mode): every BENCHMARKS.md workload equals jax.jit,
through jax.grad and jax.vmap too; the backends, the report, the cache and the fallbacks."""

import re
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prism_jax
from prism_jax import Backend
from prism_jax.codegen import cuda
from prism_jax.codegen.pallas import PallasOptions, kernel_graph_function, lower_for_cuda
from prism_jax.frontend.to_jax import jax_dtype
from prism_jax.workloads import WORKLOADS

SEARCH = prism_jax.SearchConfig(time_limit_s=15.0, progress=False)
TOLERANCE = {jnp.float32: 2e-4, jnp.bfloat16: 6e-2}


@pytest.fixture(autouse=True)
def private_cache(run_shared_dir, monkeypatch):
    """One cache for the module, shared by the run's workers (a second plan of a workload is a hit),
    none of the user's."""
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(run_shared_dir("superoptimize-cache")))


def interpret(fn, **kwargs):
    return prism_jax.superoptimize(fn, backend="interpret", search_config=SEARCH, progress=False, **kwargs)


def assert_close(got, expected, dtype):
    got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
    scale = max(1.0, float(np.max(np.abs(expected))))
    assert np.max(np.abs(got - expected)) <= TOLERANCE[dtype] * scale, np.max(np.abs(got - expected))


def loss(fn, probe):
    """A fixed random projection of the output (a sum of squares would be constant for outputs that
    end in an RMSNorm, leaving only rounding noise in the gradient)."""
    return lambda *args: jnp.sum(fn(*args).astype(jnp.float32) * probe)


def assert_grad_and_vmap_match(optimized, fn, args, dtype):
    """jax.grad (of a random projection) and jax.vmap through ``optimized`` equal them through ``fn``."""
    probe = jax.random.normal(jax.random.key(7), jax.eval_shape(fn, *args).shape)
    grads = jax.grad(loss(optimized, probe), argnums=tuple(range(len(args))))(*args)
    expected = jax.grad(loss(fn, probe), argnums=tuple(range(len(args))))(*args)
    for g, e in zip(grads, expected):
        assert_close(g, e, dtype)
    batch = jnp.stack([args[0], -args[0]])
    assert_close(jax.vmap(lambda x: optimized(x, *args[1:]))(batch), jax.vmap(lambda x: fn(x, *args[1:]))(batch), dtype)


# every float32 case before any bfloat16 one: a bfloat16 region reuses its float32 twin's search
CASES = [(w.name, prefill, dtype) for dtype in (jnp.float32, jnp.bfloat16) for w in WORKLOADS.values()
         for prefill in ([False, True] if w.small_prefill else [False])]


@pytest.mark.slow
@pytest.mark.parametrize("name,prefill,dtype", CASES,
                         ids=[f"{n}{'-prefill' if p else ''}-{jnp.dtype(d).name}" for n, p, d in CASES])
def test_workload_matches_jit_with_grad_and_vmap(name, prefill, dtype):
    workload = prism_jax.workloads.get_workload(name)
    shape = workload.small_prefill if prefill else workload.small
    fn = workload.fn_for(shape)
    args = workload.make_args(shape, dtype)
    optimized = interpret(fn)
    assert_close(optimized(*args), jax.jit(fn)(*args), dtype)
    report = optimized.explain(*args)
    assert report.plan.regions and all(p.uses_kernel or p.note for p in report.plan.regions)
    assert any(p.uses_kernel for p in report.plan.regions), str(report)
    assert_grad_and_vmap_match(optimized, fn, args, dtype)
    for plan in report.plan.regions:  # what would run on a GPU lowers for CUDA here (Triton needs 2^k tiles)
        if plan.uses_kernel and power_of_two_tiles(plan.choice.graph):
            graph = plan.choice.graph
            specs = [jax.ShapeDtypeStruct(tuple(t.shape), jax_dtype(t)) for t in graph.input_types]
            lower_for_cuda(kernel_graph_function(graph, PallasOptions(num_warps=4, num_stages=2)), *specs)
    if dtype == jnp.float32 and shutil.which("nvcc"):  # the CUDA emitter's code for the same kernels compiles
        for plan in report.plan.regions:
            for k, op in enumerate(plan.choice.graph.custom_kernels if plan.uses_kernel else ()):
                graph = plan.choice.graph
                cuda.compile_object(cuda.kernel_source(op.block, [graph.values[v] for v in op.inputs], f"check{k}"))


DECODE_CASES = [(name, dtype) for name, prefill, dtype in CASES if not prefill]


@pytest.mark.slow
@pytest.mark.parametrize("name,dtype", DECODE_CASES, ids=[f"{n}-{jnp.dtype(d).name}" for n, d in DECODE_CASES])
def test_workload_native_cpu_kernels_match_jit_with_grad_and_vmap(name, dtype, native_kernels_win):
    workload = prism_jax.workloads.get_workload(name)
    fn = workload.fn_for(workload.small)
    args = workload.make_args(workload.small, dtype)
    tune = prism_jax.TuneConfig(candidates=1, sizes_per_candidate=1, cpu_threads=(0,), iterations=2, repeats=1)
    optimized = prism_jax.superoptimize(fn, backend="cpu", search_config=SEARCH, tune_config=tune, progress=False)
    assert_close(optimized(*args), jax.jit(fn)(*args), dtype)
    report = optimized.explain(*args)
    assert any(p.uses_kernel for p in report.plan.regions), str(report)
    assert_grad_and_vmap_match(optimized, fn, args, dtype)


# the tuner builds one program (the plumbing tests fake its clock: more programs would only cost compiles)
ONE_PROGRAM = prism_jax.TuneConfig(candidates=1, sizes_per_candidate=1, cpu_threads=(0,))


def power_of_two_tiles(graph):
    return all(int(d) & (int(d) - 1) == 0 for op in graph.custom_kernels for t in op.block.values for d in t.shape)


def rmsnorm_matmul(x, g, w):
    h = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * g
    return h @ w


def small_args(n=4, d=64):
    keys = jax.random.split(jax.random.key(0), 3)
    return (jax.random.normal(keys[0], (n, d)), 1 + 0.1 * jax.random.normal(keys[1], (d,)),
            jax.random.normal(keys[2], (d, d)) / 8)


def test_decorator_forms_jit_and_report():
    @prism_jax.superoptimize(backend="interpret", search_config=SEARCH, progress=False)
    def f(x, g, w):
        return rmsnorm_matmul(x, g, w)

    args = small_args()
    assert_close(jax.jit(f)(*args), rmsnorm_matmul(*args), jnp.float32)
    report = f.explain(*args)
    text = str(report)
    assert "custom_kernel" in text and "egraph" in text and "est." in text
    assert "<table>" in report._repr_html_()
    assert report.plan.regions[0].uses_kernel
    # a second signature gets its own plan; the first is reused
    assert f.explain(*args) is not None and len(f._plans) == 1
    f(*small_args(n=8))
    assert len(f._plans) == 2


def test_second_build_is_a_cache_hit():
    args = small_args()
    interpret(rmsnorm_matmul)(*args)
    again = interpret(rmsnorm_matmul)
    region = again.explain(*args).plan.regions[0]
    assert region.search.cache_hit and region.choice.cache_hit
    assert "hit" in again.explain(*args).table()


def test_a_scan_over_layers_stays_one_loop_with_its_kernels_inside():
    """``lax.scan`` over stacked layers: the regions found in the body run inside one ``lax.scan``
    (the body traced once), not a loop unrolled into the program, and equal jax.jit with grad."""
    ws = jax.random.normal(jax.random.key(3), (5, 64, 64)) / 8
    gains = 1.0 + jax.random.normal(jax.random.key(4), (5, 64)) / 10

    def layers(x, ws, gains):
        def body(h, layer):
            w, g = layer
            n = h * jax.lax.rsqrt(jnp.mean(h * h, -1, keepdims=True) + 1e-6) * g
            return h + jnp.tanh(n @ w), jnp.sum(n)
        return jax.lax.scan(body, x, (ws, gains))

    x = jax.random.normal(jax.random.key(5), (4, 64))
    optimized = interpret(layers)
    (h, sums), (h_ref, sums_ref) = optimized(x, ws, gains), jax.jit(layers)(x, ws, gains)
    assert_close(h, h_ref, jnp.float32)
    assert_close(sums, sums_ref, jnp.float32)
    program = str(jax.make_jaxpr(optimized)(x, ws, gains))
    assert program.count("scan[") == 1 and 1 <= program.count("pallas_call[") < 5, program
    grad = jax.grad(lambda w: jnp.sum(optimized(x, w, gains)[0]))(ws)
    assert_close(grad, jax.grad(lambda w: jnp.sum(layers(x, w, gains)[0]))(ws), jnp.float32)


def test_static_argnums_and_pytrees():
    def f(params, x, scale):
        return rmsnorm_matmul(x, params["g"], params["w"]) * scale

    x, g, w = small_args()
    optimized = interpret(f, static_argnums=2)
    assert_close(optimized({"g": g, "w": w}, x, 2.0), f({"g": g, "w": w}, x, 2.0), jnp.float32)
    assert_close(optimized({"g": g, "w": w}, x, 3.0), f({"g": g, "w": w}, x, 3.0), jnp.float32)


def test_call_signatures_pick_plans_like_jax_jit():
    """A negative static argnum, arrays passed by keyword, one plan per tree/shape/dtype/static value:
    the call's own flattening (done once, for the key and the arguments) feeds the traced program."""
    def f(x, g, w, scale):  # test_static_argnums_and_pytrees's region: its search is a cache hit
        return rmsnorm_matmul(x, g, w) * scale

    x, g, w = small_args()
    optimized = interpret(f, static_argnums=-1)
    assert optimized.static_argnums == (3,) and optimized.static_argnames == ("scale",)
    assert_close(optimized(x, g, w=w, scale=2.0), f(x, g, w, 2.0), jnp.float32)
    assert_close(optimized(x + 1, g, w=w, scale=2.0), f(x + 1, g, w, 2.0), jnp.float32)
    assert len(optimized._plans) == 1
    assert_close(optimized(x, g, w, 2.0), f(x, g, w, 2.0), jnp.float32)  # w by position: another tree
    assert len(optimized._plans) == 2
    assert all(any(r.uses_kernel for r in plan.regions) for plan in optimized._plans.values())
    dynamic_scale = interpret(f)  # a Python scalar that is not static: weakly typed, any value, one plan
    for scale in (2.0, 3.0):
        assert_close(dynamic_scale(x, g, w, scale), f(x, g, w, scale), jnp.float32)
    assert len(dynamic_scale._plans) == 1 and dynamic_scale(x, g, w, 2.0).dtype == jnp.float32
    by_name = interpret(f, static_argnames="scale")
    assert by_name.static_argnums == (3,) and by_name.static_argnames == ("scale",)
    with pytest.raises(ValueError, match="must be hashable"):
        by_name(x, g, w, [2.0])
    with pytest.raises(ValueError, match="4 positional parameter"):
        interpret(f, static_argnums=4)


def test_xla_backend_never_rewrites():
    optimized = prism_jax.superoptimize(rmsnorm_matmul, backend="xla")
    args = small_args()
    assert_close(optimized(*args), rmsnorm_matmul(*args), jnp.float32)
    assert "jax.jit" in str(optimized.explain(*args))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks auto on a CPU")
def test_auto_on_cpu_means_native_kernels():
    optimized = prism_jax.superoptimize(rmsnorm_matmul)
    args = small_args()
    assert_close(optimized(*args), rmsnorm_matmul(*args), jnp.float32)
    report = optimized.explain(*args)
    assert report.plan.backend == Backend.CPU and "backend=cpu" in str(report)


def test_auto_elsewhere_runs_xla_and_says_so(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    optimized = prism_jax.superoptimize(rmsnorm_matmul)
    args = small_args()
    assert_close(optimized(*args), rmsnorm_matmul(*args), jnp.float32)
    report = optimized.explain(*args)
    assert report.plan.backend == Backend.XLA and "XLA program runs unchanged" in str(report)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the no-GPU error")
@pytest.mark.parametrize("backend", ["pallas", "cuda"])
def test_gpu_backends_without_gpu_are_a_clear_error(backend):
    with pytest.raises(RuntimeError, match=f"backend='{backend}'.* needs a GPU"):
        prism_jax.superoptimize(rmsnorm_matmul, backend=backend)(*small_args())


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend="):
        prism_jax.superoptimize(rmsnorm_matmul, backend="cuda-please")
    with pytest.raises(ValueError, match="device="):
        prism_jax.superoptimize(rmsnorm_matmul, device="TPU v9")


def test_region_without_candidates_falls_back_with_reason(monkeypatch):
    """A region the search cannot handle runs on XLA; the report says why."""
    module = sys.modules["prism_jax.api.superoptimize"]  # the attribute of prism_jax.api is the function

    def broken(*args, **kwargs):
        raise RuntimeError("no search today")

    monkeypatch.setattr(module, "search_region", broken)
    optimized = interpret(rmsnorm_matmul)
    args = small_args()
    assert_close(optimized(*args), rmsnorm_matmul(*args), jnp.float32)
    plan = optimized.explain(*args).plan
    assert not plan.regions[0].uses_kernel and "no search today" in plan.regions[0].note
    assert "XLA" in str(optimized.explain(*args))


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
def test_cpu_backend_native_kernels_compose_with_grad_and_vmap(monkeypatch, tmp_path):
    """backend='cpu': native kernels through XLA FFI. The tuner's clock is replaced so the kernel wins
    whatever this machine measures: what is tested is the plumbing (a cache of its own: no real timing
    stored by another test may answer)."""
    import prism_jax.tune.tuner as tuner

    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def fake_timer(fn, args, **kwargs):  # XLA's program is the first the tuner times
        calls.append(fn)
        seconds = 2e-3 if fn is calls[0] else 1e-3
        return lambda: seconds

    monkeypatch.setattr(tuner, "ChainTimer", fake_timer)
    optimized = prism_jax.superoptimize(rmsnorm_matmul, backend="cpu", search_config=SEARCH, tune_config=ONE_PROGRAM,
                                        progress=False)
    args = small_args()
    assert_close(optimized(*args), rmsnorm_matmul(*args), jnp.float32)
    plan = optimized.explain(*args).plan
    assert plan.regions[0].uses_kernel and plan.regions[0].choice.measured_s == 1e-3
    probe = jax.random.normal(jax.random.key(3), (4, 64))
    for got, want in zip(jax.grad(loss(optimized, probe), argnums=(0, 1, 2))(*args),
                         jax.grad(loss(rmsnorm_matmul, probe), argnums=(0, 1, 2))(*args)):
        assert_close(got, want, jnp.float32)
    batch = jnp.stack([args[0], 2 * args[0]])
    assert_close(jax.vmap(lambda x: optimized(x, *args[1:]))(batch),
                 jax.vmap(lambda x: rmsnorm_matmul(x, *args[1:]))(batch), jnp.float32)


def test_cpu_backend_keeps_xla_when_it_is_faster_and_shows_what_was_found(monkeypatch, tmp_path):
    import prism_jax.tune.tuner as tuner

    calls = []

    def fake_timer(fn, args, **kwargs):  # XLA's program (the first timed) wins
        calls.append(fn)
        if len(calls) == 1:  # XLA is timed as it would run: the user's precision, not the reference's HIGHEST
            assert "HIGHEST" not in fn.lower(*args).as_text(debug_info=False)
        seconds = 1e-3 if fn is calls[0] else 2e-3
        return lambda: seconds

    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tuner, "ChainTimer", fake_timer)
    optimized = prism_jax.superoptimize(rmsnorm_matmul, backend="cpu", search_config=SEARCH, tune_config=ONE_PROGRAM,
                                        progress=False)
    args = small_args()
    assert_close(optimized(*args), rmsnorm_matmul(*args), jnp.float32)
    report = optimized.explain(*args)
    assert not report.plan.regions[0].uses_kernel and "XLA is faster" in report.plan.regions[0].note
    text = str(report)
    assert "best proved candidate (symbolic; not used)" in text and "custom_kernel" in text
    # no region on a kernel: the program is jax.jit's own, not the regions' IR lowered again (whose
    # HIGHEST-precision dots XLA:CPU compiles to slower code)
    assert _stablehlo_ops(optimized, args) == _stablehlo_ops(rmsnorm_matmul, args)


def _stablehlo_ops(fn, args) -> list[str]:
    """The StableHLO ops jax.jit lowers ``fn`` to, without value names."""
    text = jax.jit(lambda *a: fn(*a)).lower(*args).as_text(debug_info=False)
    return [re.sub(r"%[\w#]+", "%", line.strip()) for line in text.splitlines() if "stablehlo." in line]


@pytest.mark.parametrize("rewrite_faster", [True, False], ids=["kernels-kept", "jit-runs"])
def test_cpu_program_with_code_outside_its_region_is_timed_whole_against_jit(monkeypatch, tmp_path, rewrite_faster):
    """Each region's kernel beat XLA alone (the fake clock); the rewritten program is then timed whole
    against jax.jit's, and runs jax.jit's program when slower -- with the reason in explain(), the
    verdict cached, and results, grad and vmap those of the function either way."""
    import prism_jax.tune.tuner as tuner

    api = sys.modules["prism_jax.api.superoptimize"]
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path / "cache"))
    calls, program_timers = [], []

    def fake_timer(fn, args, **kwargs):  # the first program timed is XLA's (region) or jax.jit's (program)
        calls.append(fn)
        if program_timers:
            program_timers.append(fn)
            seconds = (2e-3 if rewrite_faster else 1e-3) if fn is calls[0] else (1e-3 if rewrite_faster else 2e-3)
        else:
            seconds = 2e-3 if fn is calls[0] else 1e-3
        return lambda: seconds

    real_check = api.check_program

    def check_program(*args, **kwargs):
        calls.clear()
        program_timers.append("started")
        return real_check(*args, **kwargs)

    monkeypatch.setattr(tuner, "ChainTimer", fake_timer)
    monkeypatch.setattr(api, "check_program", check_program)

    def f(x, g, w):
        return jnp.sin(rmsnorm_matmul(x, g, w))  # sin has no IR rule: code outside the region

    args = small_args()
    optimized = prism_jax.superoptimize(f, backend="cpu", search_config=SEARCH, tune_config=ONE_PROGRAM, progress=False)
    assert_close(optimized(*args), f(*args), jnp.float32)
    report = optimized.explain(*args)
    check = report.plan.program_check
    assert report.plan.regions[0].uses_kernel and check is not None and not check.cache_hit
    assert check.keeps_kernels == rewrite_faster == report.plan.runs_kernels
    lowered = report.plan.call.lower(*report.plan.traced.flatten_args(*args)).as_text()
    assert ("custom_call" in lowered) == rewrite_faster  # what runs: the kernel, or jax.jit's program
    text = str(report)
    if rewrite_faster:
        assert "1000.0 µs with its kernels vs jax.jit's 2000.0 µs" in text
    else:
        assert "jax.jit's program runs: with its kernels the whole program is not clearly faster" in text
        assert "XLA is faster timed again" not in text and "(1000.0 µs vs 2000.0 µs)" in text
        assert report.rows()[1][1] == "XLA (program)"
    probe = jax.random.normal(jax.random.key(3), (4, 64))
    for got, want in zip(jax.grad(loss(optimized, probe), argnums=(0, 1, 2))(*args),
                         jax.grad(loss(f, probe), argnums=(0, 1, 2))(*args)):
        assert_close(got, want, jnp.float32)
    batch = jnp.stack([args[0], 2 * args[0]])
    assert_close(jax.vmap(lambda x: optimized(x, *args[1:]))(batch), jax.vmap(lambda x: f(x, *args[1:]))(batch),
                 jnp.float32)

    program_timers.clear()
    again = prism_jax.superoptimize(f, backend="cpu", search_config=SEARCH, tune_config=ONE_PROGRAM, progress=False)
    cached = again.explain(*args).plan.program_check
    assert cached.cache_hit and cached.keeps_kernels == rewrite_faster
    assert program_timers == ["started"]  # the verdict came from the cache: nothing timed
