"""The CUDA emitter and its runtime side. Without a GPU: every example kernel compiles with nvcc for
sm_90, a function using the kernels registers them and lowers for CUDA to custom calls with the
kernels' operand and result types, registration happens once, and a missing nvcc is a clear error
(the nvcc tests are skipped where nvcc is absent). With a GPU: the kernels' numerics against the
reference interpreter, for the examples and for a workload's chosen graphs. (tests/api/test_superoptimize.py
compiles the kernels chosen for every BENCHMARKS.md workload too.)"""

import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prism_jax
from prism_jax import workloads
from prism_jax.codegen import cuda
from prism_jax.frontend.to_jax import jax_dtype
from prism_jax.ir import DType, IRError, evaluate
from prism_jax.ir.examples import EXAMPLES, instantiate_example, random_inputs, tiled_matmul

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
needs_gpu = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a CUDA GPU")
MLIR_DTYPE = {DType.FLOAT32: "f32", DType.BFLOAT16: "bf16"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cuda-cache"))


def specs_of(graph):
    return [jax.ShapeDtypeStruct(tuple(t.shape), jax_dtype(t)) for t in graph.input_types]


def mlir_types(types):
    """Each type as a custom call's StableHLO signature prints it (``tensor<4x16xf32>``)."""
    return [f"tensor<{''.join(f'{d}x' for d in t.shape)}{MLIR_DTYPE[t.dtype]}>" for t in types]


@needs_nvcc
@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_kernel_compiles_with_nvcc(name):
    graph = instantiate_example(name, EXAMPLES[name].tilings[0])
    for k, op in enumerate(graph.custom_kernels):
        source = cuda.kernel_source(op.block, [graph.values[v] for v in op.inputs], f"{name}_{k}")
        assert "__global__" in source and "XLA_FFI_DEFINE_HANDLER_SYMBOL" in source
        assert cuda.compile_object(source).stat().st_size > 0


@needs_nvcc
def test_a_compile_error_names_nvcc():
    with pytest.raises(cuda.CompileError, match="nvcc"):
        cuda.compile_object("this is not CUDA;\n")


def test_partial_sums_over_a_grid_dim_are_refused():
    graph = tiled_matmul(8, 16, 8, grid=(2, 2, 4), forloop=2)
    op = graph.custom_kernels[0]
    with pytest.raises(IRError, match="split"):
        cuda.kernel_source(op.block, [graph.values[v] for v in op.inputs], "partial")


@needs_nvcc
@pytest.mark.parametrize("name,tiling", [("rmsnorm_matmul", 0), ("split_kv_decode_attention", 3)])
def test_function_lowers_for_cuda_to_custom_calls_of_its_kernels(name, tiling):
    graph = instantiate_example(name, EXAMPLES[name].tilings[tiling])
    options = cuda.CudaOptions(threads=256)
    targets = cuda.custom_kernel_targets(graph, options)
    text = jax.jit(cuda.kernel_graph_function(graph, options)).trace(*specs_of(graph)).lower(
        lowering_platforms=("cuda",)).as_text()
    calls = re.findall(r"stablehlo\.custom_call @(\w+)\((.*?)\) .*: \((.*)\) -> (.*)$", text, re.MULTILINE)
    assert len(calls) == len(targets) == len(list(graph.custom_kernels)) >= 1
    for (i, target), (called, _, operands, results) in zip(sorted(targets.items()), calls):
        op = graph.ops[i]
        assert called == target
        assert operands.split(", ") == mlir_types([graph.values[v] for v in op.inputs])
        assert results.strip("()").split(", ") == mlir_types([graph.values[v] for v in op.outputs])


@needs_nvcc
def test_threads_per_block_reach_the_launch_and_a_bad_count_is_refused():
    graph = instantiate_example("swiglu", EXAMPLES["swiglu"].tilings[0])
    op = graph.custom_kernels[0]
    source = cuda.kernel_source(op.block, [graph.values[v] for v in op.inputs], "launch", threads=64)
    assert "__launch_bounds__(64)" in source and re.search(r"<<<\d+, 64, ", source)
    with pytest.raises(ValueError, match="multiple of 32"):
        cuda.CudaOptions(threads=100)


@needs_nvcc
def test_registration_is_once_per_target(monkeypatch):
    registered = []
    real = jax.ffi.register_ffi_target

    def spy(name, fn, platform="cpu", **kwargs):
        registered.append((name, platform))
        real(name, fn, platform=platform, **kwargs)

    monkeypatch.setattr(jax.ffi, "register_ffi_target", spy)
    graph = instantiate_example("tiled_matmul", {"grid": (4, 2), "forloop": 3})
    options = cuda.CudaOptions(threads=96)  # a source no other test builds: its first call registers
    first = cuda.custom_kernel_targets(graph, options)
    cuda.kernel_graph_function(graph, options)
    assert cuda.custom_kernel_targets(graph, options) == first
    assert registered == [(name, "CUDA") for name in first.values()]


def test_a_missing_nvcc_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a directory without nvcc
    graph = instantiate_example("tiled_matmul", {"grid": (2, 3), "forloop": 4})
    with pytest.raises(cuda.CompileError, match="nvcc not found"):
        cuda.kernel_graph_function(graph)


# -- on a GPU -------------------------------------------------------------------------------------

CASES = [(name, 0) for name in EXAMPLES] + [("split_kv_decode_attention", 3), ("attention", 2)]


@needs_gpu
@needs_nvcc
@pytest.mark.parametrize("name,tiling", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_cuda_kernel_matches_interpreter(name, tiling):
    graph = instantiate_example(name, EXAMPLES[name].tilings[tiling])
    inputs = random_inputs(graph, seed=tiling)
    got = jax.jit(cuda.kernel_graph_function(graph))(*inputs)
    for e, g in zip(evaluate(graph, *inputs), got):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-4, atol=1e-4)  # FMA contraction, other sum orders


@needs_gpu
@needs_nvcc
@pytest.mark.slow
@pytest.mark.parametrize("name", ["rmsnorm_matmul", "swiglu"])
def test_workload_chosen_graph_runs_on_the_gpu(name):
    workload = workloads.get_workload(name)
    args = workload.make_args(workload.small, jnp.float32)
    optimized = prism_jax.superoptimize(workload.fn_for(workload.small), backend="interpret", progress=False,
                                        search_config=prism_jax.SearchConfig(time_limit_s=15.0, progress=False))
    graphs = [p.choice.graph for p in optimized.explain(*args).plan.regions if p.uses_kernel]
    assert graphs, "the search chose no kernel for the workload"
    for graph in graphs:
        inputs = random_inputs(graph)
        got = jax.jit(cuda.kernel_graph_function(graph))(*inputs)
        for e, g in zip(evaluate(graph, *inputs), got):
            np.testing.assert_allclose(np.asarray(g), e, rtol=1e-4, atol=1e-4)
