"""The CUDA emitter: every example kernel compiles with nvcc for sm_90 (skipped where nvcc is absent);
numerics need a GPU and are not checked here. (tests/api/test_superoptimize.py compiles the kernels
chosen for every BENCHMARKS.md workload too.)"""

import shutil

import pytest

from prism_jax.codegen import cuda
from prism_jax.ir import IRError
from prism_jax.ir.examples import EXAMPLES, instantiate_example, tiled_matmul

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cuda-cache"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_kernel_compiles_with_nvcc(name):
    graph = instantiate_example(name, EXAMPLES[name].tilings[0])
    for k, op in enumerate(graph.custom_kernels):
        source = cuda.kernel_source(op.block, [graph.values[v] for v in op.inputs], f"{name}_{k}")
        assert "__global__" in source and "XLA_FFI_DEFINE_HANDLER_SYMBOL" in source
        assert cuda.compile_object(source).stat().st_size > 0


def test_a_compile_error_names_nvcc():
    with pytest.raises(cuda.build.CompileError, match="nvcc"):
        cuda.compile_object("this is not CUDA;\n")


def test_partial_sums_over_a_grid_dim_are_refused():
    graph = tiled_matmul(8, 16, 8, grid=(2, 2, 4), forloop=2)
    op = graph.custom_kernels[0]
    with pytest.raises(IRError, match="split"):
        cuda.kernel_source(op.block, [graph.values[v] for v in op.inputs], "partial")
