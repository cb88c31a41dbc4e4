"""The C++ emitter: each example kernel compiled and called through XLA FFI equals the interpreter;
and the bad cases — no compiler, a corrupt cached library, two processes compiling one kernel — each
end in a working program or a clear error."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from prism_jax.codegen import cpp
from prism_jax.ir import IRError, evaluate
from prism_jax.ir.examples import EXAMPLES, instantiate_example, random_inputs, tiled_matmul

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="no C++ compiler")
CASES = [(name, 0) for name in EXAMPLES] + [("split_kv_decode_attention", 3), ("attention", 2)]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cpp-cache"))


@needs_compiler
@pytest.mark.parametrize("name,tiling", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_native_kernel_matches_interpreter(name, tiling):
    graph = instantiate_example(name, EXAMPLES[name].tilings[tiling])
    inputs = random_inputs(graph, seed=tiling)
    expected = evaluate(graph, *inputs)
    got = jax.jit(cpp.kernel_graph_function(graph))(*inputs)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), e, rtol=2e-5, atol=2e-5)


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_give_the_same_result_from_one_compiled_kernel(threads, monkeypatch):
    """The thread count is an FFI attribute: every setting runs the one compiled library, blocks split
    over that many threads (more threads than blocks is fine)."""
    graph = instantiate_example("tiled_matmul", EXAMPLES["tiled_matmul"].tilings[0])
    inputs = random_inputs(graph, seed=1)
    expected = evaluate(graph, *inputs)
    compiled = []
    real = cpp.build.build_cached
    monkeypatch.setattr(cpp.build, "build_cached", lambda *a, **k: compiled.append(a[0]) or real(*a, **k))
    got = jax.jit(cpp.kernel_graph_function(graph, cpp.CppOptions(threads=threads)))(*inputs)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), e, rtol=2e-5, atol=2e-5)
    assert len({src for src in compiled if "XLA_FFI_DEFINE_HANDLER" in src}) <= 1  # kernels, not the runtime


def test_partial_sums_over_a_grid_dim_are_refused_with_a_reason():
    graph = tiled_matmul(8, 16, 8, grid=(2, 2, 4), forloop=2)
    with pytest.raises(IRError, match="split"):
        cpp.kernel_graph_function(graph)


def test_a_compiler_that_does_not_exist_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(cpp.build.COMPILER_ENV, "no-such-compiler-xyz")
    graph = instantiate_example("tiled_matmul", {"grid": (2, 3), "forloop": 4})
    with pytest.raises(cpp.CompileError, match="no-such-compiler-xyz"):
        cpp.kernel_graph_function(graph)


def test_a_compile_error_says_what_failed():
    with pytest.raises(cpp.CompileError, match="failed on a generated kernel"):
        cpp.library_for("this is not C++;\n")


@needs_compiler
def test_a_corrupt_cached_library_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path))
    graph = instantiate_example("rmsnorm_matmul", {"grid": (2, 4), "forloop": 4})
    op = graph.custom_kernels[0]
    source = cpp.kernel_source(op.block, [graph.values[v] for v in op.inputs], "corrupt_probe")
    path = cpp.library_for(source)
    path.write_bytes(b"not a shared library")
    name = cpp.ffi_target(source, "corrupt_probe")  # loads, fails, rebuilds, registers
    assert name.startswith("prism_") and path.stat().st_size > 1000


@needs_compiler
def test_a_corrupt_runtime_library_is_rebuilt(tmp_path, monkeypatch):
    from prism_jax.codegen.cpp import build

    from prism_jax import native

    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path))
    source = (native.runtime_include_dir() / build.RUNTIME_SOURCE).read_text()
    runtime = build.build_cached(source, build.compiler(), build.FLAGS, build.include_dirs(), ".cc",
                                 context=build._host_context())  # built, not loaded (a loaded file stays loaded)
    runtime.write_bytes(b"not a shared library")
    graph = instantiate_example("rmsnorm_matmul", {"grid": (2, 4), "forloop": 4})
    inputs = random_inputs(graph, seed=0)
    got = jax.jit(cpp.kernel_graph_function(graph))(*inputs)
    np.testing.assert_allclose(np.asarray(got[0]), evaluate(graph, *inputs)[0], rtol=2e-5, atol=2e-5)
    assert runtime.stat().st_size > 1000


@needs_compiler
def test_two_processes_compiling_one_kernel_both_work(tmp_path):
    script = (
        "import sys, numpy as np, jax\n"
        "from prism_jax.codegen import cpp\n"
        "from prism_jax.ir import evaluate\n"
        "from prism_jax.ir.examples import instantiate_example, random_inputs\n"
        "g = instantiate_example('swiglu', {'grid': (2, 3), 'forloop': 3})\n"
        "x = random_inputs(g)\n"
        "got = jax.jit(cpp.kernel_graph_function(g))(*x)[0]\n"
        "np.testing.assert_allclose(np.asarray(got), evaluate(g, *x)[0], rtol=2e-5, atol=2e-5)\n"
    )
    env = dict(os.environ, PRISM_JAX_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    assert len(list((tmp_path / "kernels").glob("*.so"))) == 2  # the kernel and the runtime library, once each


@needs_compiler
def test_a_changed_runtime_header_rebuilds_the_kernel(tmp_path, monkeypatch):
    """Cached libraries are keyed by the runtime headers' contents (and the host CPU), not only the
    generated source: an edited header must not leave stale kernels in use."""
    import shutil as sh

    from prism_jax import native
    from prism_jax.codegen.cpp import build

    headers = tmp_path / "runtime"
    sh.copytree(native.runtime_include_dir(), headers)
    monkeypatch.setattr(native, "runtime_include_dir", lambda: headers)
    source = '#include "prism_cpu.h"\nextern "C" int answer() { return 42; }\n'
    build._host_context.cache_clear()
    first = build.library_for(source)
    with open(headers / "prism_cpu.h", "a") as f:
        f.write("\n// edited\n")
    build._host_context.cache_clear()
    second = build.library_for(source)
    build._host_context.cache_clear()
    assert first != second and first.exists() and second.exists()
