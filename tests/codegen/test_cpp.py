"""The C++ emitter: each example kernel compiled and called through XLA FFI equals the interpreter;
and the bad cases — no compiler, a corrupt cached library, two processes compiling one kernel — each
end in a working program or a clear error."""

import os
import pathlib
import re
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


# rows of 32 to 100 elements: the row reductions (norms, softmax max and sum) take the vectorized path
# (32 partial results and a scalar tail), elementwise chains are inlined into them, inputs read only by
# such loops are read in place
WIDE = [("rmsnorm_matmul", {"n": 3, "d": 100, "N": 8}, {"grid": (1, 2), "forloop": 1}),
        ("qknorm_attention", {"b": 1, "h": 2, "q": 3, "kv": 80, "D": 40}, {"grid": (1, 2, 1), "forloop": 2}),
        ("attention", {"b": 1, "h": 2, "q": 2, "kv": 96, "D": 8}, {"grid": (1, 2, 1), "forloop": 1}),
        ("rmsnorm_mlp", {"n": 2, "d": 64, "N": 6}, {"grid": (1, 2), "forloop": 1})]


@needs_compiler
@pytest.mark.parametrize("name,sizes,tiling", WIDE, ids=[w[0] for w in WIDE])
def test_wide_rows_match_interpreter(name, sizes, tiling):
    graph = instantiate_example(name, tiling, sizes)
    op = graph.custom_kernels[0]
    source = cpp.kernel_source(op.block, [graph.values[v] for v in op.inputs], "wide_probe")
    assert f"float part[{cpp.emit._REDUCE_LANES}]" in source  # a vectorized row reduction
    # X / Q, K: read only by elementwise loops and reductions, so read in place, not copied
    assert source.count("read in place") >= 2
    if name == "qknorm_attention":  # q·γ against K's rows as they lie, K's norms from the same pass
        assert "matmul_nt_acc_sumsq(" in source and "*= " in source
    inputs = random_inputs(graph, seed=5)
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


def runtime_library_in(directory: pathlib.Path) -> pathlib.Path:
    """The module cache's runtime library copied into the cache at ``directory`` (as a build there would
    name it), so that a test of another cache compiles only what it is about."""
    from prism_jax.codegen.cpp import build

    built = build.runtime_library()
    (directory / "kernels").mkdir(parents=True, exist_ok=True)
    return shutil.copyfile(built, directory / "kernels" / built.name)


@needs_compiler
def test_a_corrupt_runtime_library_is_rebuilt(tmp_path, monkeypatch):
    runtime = runtime_library_in(tmp_path)  # copied, not loaded from there (a loaded file stays loaded)
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path))
    runtime.write_bytes(b"not a shared library")
    graph = instantiate_example("rmsnorm_matmul", {"grid": (2, 4), "forloop": 4})
    inputs = random_inputs(graph, seed=0)
    got = jax.jit(cpp.kernel_graph_function(graph))(*inputs)
    np.testing.assert_allclose(np.asarray(got[0]), evaluate(graph, *inputs)[0], rtol=2e-5, atol=2e-5)
    assert runtime.stat().st_size > 1000


@needs_compiler
def test_kernels_compile_against_the_precompiled_prelude_and_survive_an_unreadable_one(monkeypatch, caplog):
    """With GCC the header every kernel includes is precompiled once per cache dir and searched first;
    a precompiled header GCC cannot read (here truncated) is deleted and the kernel compiled without it."""
    from prism_jax import native
    from prism_jax.codegen.cpp import build

    tool = build.compiler()
    if not build._is_gcc(tool):
        pytest.skip("precompiled headers are used with GCC only")
    graph = instantiate_example("rmsnorm_matmul", {"grid": (2, 4), "forloop": 4})
    op = graph.custom_kernels[0]
    commands = []
    real = build._compile
    monkeypatch.setattr(build, "_compile", lambda command, *a, **k: commands.append(command) or real(command, *a, **k))
    prelude = build.precompiled_prelude(tool)
    gch = prelude / f"{build.PRELUDE}.gch"
    source = cpp.kernel_source(op.block, [graph.values[v] for v in op.inputs], "prelude_probe")
    assert build.library_for(source).exists() and gch.stat().st_size > 1_000_000
    assert f"-I{prelude}" in commands[-1]
    os.truncate(gch, 1000)
    source = cpp.kernel_source(op.block, [graph.values[v] for v in op.inputs], "prelude_probe_after")
    path = build.library_for(source)
    assert native.load_symbol_capsule(path, "prelude_probe_after") is not None
    assert not gch.exists() and "could not read" in caplog.text
    assert f"-I{prelude}" not in commands[-1]


def test_only_gcc_gets_a_precompiled_prelude(tmp_path):
    fake = tmp_path / "clang++"
    fake.write_text("#!/bin/sh\necho 'clang version 17.0.6'\n")
    fake.chmod(0o755)
    assert cpp.build.precompiled_prelude(str(fake)) is None


@needs_compiler
def test_threads_asking_for_one_library_at_once_compile_it_once(monkeypatch):
    """The tuner builds candidates in threads, and several (one per thread count) share a source."""
    import concurrent.futures

    from prism_jax.codegen.cpp import build

    compiles = []
    real = build._compile
    monkeypatch.setattr(build, "_compile", lambda *a, **k: compiles.append(a[0]) or real(*a, **k))
    source = f'extern "C" int answer() {{ return {os.getpid()}; }}\n'  # new to this session's cache
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: build.build_cached(source, build.compiler(), build.FLAGS, [], ".cc"),
                              range(4)))
    assert len(set(paths)) == 1 and paths[0].exists() and len(compiles) == 1


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
    runtime_library_in(tmp_path)  # the processes race to compile the kernel only
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


def _bf16_matmul_graph(out_dtype):
    """``A @ B`` with bfloat16 A and B (loads widened to float32 by converts, as the frontend builds
    them), the result stored as ``out_dtype``: grid (1, 2), K through a 2-step loop."""
    from prism_jax.ir import DType, TensorType
    from prism_jax.ir.graph import BlockGraphBuilder, KernelGraphBuilder
    from prism_jax.ir.maps import loop_map, map_from_dims
    from prism_jax.ir.ops import OpKind

    ta, tb = TensorType((8, 64), DType.BFLOAT16), TensorType((64, 96), DType.BFLOAT16)
    kb = KernelGraphBuilder("bf16_matmul")
    a_in, b_in = kb.input(ta, "A"), kb.input(tb, "B")
    bb = BlockGraphBuilder((1, 2), 2)
    a = bb.input(0, ta, map_from_dims(2, 2, [0, None]), loop_map(2, 1))
    b = bb.input(1, tb, map_from_dims(2, 2, [None, 1]), loop_map(2, 0))
    wide = [bb.op(OpKind.CONVERT, v, dtype=DType.FLOAT32) for v in (a, b)]
    c = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.MATMUL, *wide))
    if out_dtype != DType.FLOAT32:
        c = bb.op(OpKind.CONVERT, c, dtype=out_dtype)
    bb.output(c, map_from_dims(2, 2, [0, 1]))
    (out,) = kb.custom_kernel(bb.build([ta, tb]), a_in, b_in)
    return kb.build([out])


@needs_compiler
@pytest.mark.parametrize("out", ["bfloat16", "float32"])
def test_a_bfloat16_program_multiplies_bfloat16_matrices(out):
    """Every float the kernel reads and writes bfloat16: its matmuls use the bfloat16 x bfloat16 runtime
    call (AMX where the host has it); a float32 result (a mixed program) keeps the widening matmul."""
    from prism_jax.ir import DType

    graph = _bf16_matmul_graph(DType(out))
    op = graph.custom_kernels[0]
    source = cpp.kernel_source(op.block, [graph.values[v] for v in op.inputs], "bf16_probe")
    assert ("pc::matmul_acc_bf16_dot(" in source) == (out == "bfloat16")
    assert ("pc::matmul_acc_bf16(" in source) == (out == "float32")
    inputs = random_inputs(graph, seed=4)
    (expected,) = evaluate(graph, *inputs)
    (got,) = jax.jit(cpp.kernel_graph_function(graph))(*inputs)
    tol = 1e-2 if out == "bfloat16" else 2e-5
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(expected, np.float32), rtol=tol, atol=tol)


def _transposed_sum_graph():
    """``Q @ (K + bias)^T``: a computed right operand read transposed that is not a product (no scales
    to factor out): the matmul takes dot products with the rows of the computed tile."""
    from prism_jax.ir import DType, TensorType
    from prism_jax.ir.graph import BlockGraphBuilder, KernelGraphBuilder
    from prism_jax.ir.maps import map_from_dims
    from prism_jax.ir.ops import OpKind

    tq, tk = TensorType((4, 48), DType.FLOAT32), TensorType((40, 48), DType.FLOAT32)
    kb = KernelGraphBuilder("transposed_sum")
    q_in, k_in, bias_in = kb.input(tq, "Q"), kb.input(tk, "K"), kb.input(tk, "bias")
    bb = BlockGraphBuilder((2,), 1)
    q = bb.input(0, tq, map_from_dims(2, 1, [None]))
    k = bb.input(1, tk, map_from_dims(2, 1, [0]))
    bias = bb.input(2, tk, map_from_dims(2, 1, [0]))
    kt = bb.op(OpKind.TRANSPOSE, bb.op(OpKind.ADD, k, bias), perm=(1, 0))
    bb.output(bb.op(OpKind.MATMUL, q, kt), map_from_dims(2, 1, [1]))
    (out,) = kb.custom_kernel(bb.build([tq, tk, tk]), q_in, k_in, bias_in)
    return kb.build([out])


@needs_compiler
def test_a_computed_transposed_operand_is_computed_once_and_read_by_rows():
    graph = _transposed_sum_graph()
    op = graph.custom_kernels[0]
    source = cpp.kernel_source(op.block, [graph.values[v] for v in op.inputs], "transposed_sum")
    assert "pc::matmul_nt_acc(" in source and "_sumsq" not in source
    inputs = random_inputs(graph, seed=2)
    expected = evaluate(graph, *inputs)
    got = jax.jit(cpp.kernel_graph_function(graph))(*inputs)
    np.testing.assert_allclose(np.asarray(got[0]), expected[0], rtol=2e-5, atol=2e-5)


def _lora_graph(dtype: str = "float32", product_as_output: bool = False):
    """``X W + (X A) B`` (LoRA) as one kernel over column tiles; ``product_as_output``: X W is also a
    result of its own."""
    from prism_jax.ir import DType, TensorType
    from prism_jax.ir.graph import BlockGraphBuilder, KernelGraphBuilder
    from prism_jax.ir.maps import map_from_dims
    from prism_jax.ir.ops import OpKind

    dt = DType(dtype)
    tx, tw, ta, tb = (TensorType(s, dt) for s in ((5, 40), (40, 96), (40, 4), (4, 96)))
    kb = KernelGraphBuilder("lora")
    inputs = [kb.input(t, n) for t, n in ((tx, "X"), (tw, "W"), (ta, "A"), (tb, "B"))]
    bb = BlockGraphBuilder((2,), 1)
    splits = ([None], [1], [None], [1])  # W and B: columns over the grid
    x, w, a, b = (bb.input(k, t, map_from_dims(2, 1, s)) for k, (t, s) in enumerate(zip((tx, tw, ta, tb), splits)))
    if dt != DType.FLOAT32:
        x, w, a, b = (bb.op(OpKind.CONVERT, v, dtype=DType.FLOAT32) for v in (x, w, a, b))
    xw = bb.op(OpKind.MATMUL, x, w)
    y = bb.op(OpKind.ADD, xw, bb.op(OpKind.MATMUL, bb.op(OpKind.MATMUL, x, a), b))
    if dt != DType.FLOAT32:
        y = bb.op(OpKind.CONVERT, y, dtype=dt)
    bb.output(y, map_from_dims(2, 1, [1]))
    if product_as_output:
        bb.output(xw, map_from_dims(2, 1, [1]))
    outs = kb.custom_kernel(bb.build([tx, tw, ta, tb]), *inputs)
    return kb.build(list(outs))


@needs_compiler
@pytest.mark.parametrize("dtype,product_as_output", [("float32", False), ("bfloat16", False), ("float32", True)])
def test_a_product_added_to_another_accumulates_into_its_buffer(dtype, product_as_output):
    """LoRA's ``X W + (X A) B``: (X A) B is multiplied into X W's buffer (one zeroed buffer for the two,
    no loop adding them), unless X W is read elsewhere (here: a result of its own)."""
    graph = _lora_graph(dtype, product_as_output)
    op = graph.custom_kernels[0]
    source = cpp.kernel_source(op.block, [graph.values[v] for v in op.inputs], "lora_probe")
    calls = re.findall(r"pc::matmul_acc\w*\([^;]*?, (v\d+) \+ \(0\) \* \d+, ", source)
    zeroed = re.findall(r"std::fill\((v\d+),", source)
    assert len(calls) == 3, source
    if product_as_output:
        assert len(set(calls)) == 3 and " + " in source.split(calls[2], 2)[-1]
    else:  # X W's buffer receives (X A) B; X A has one of its own
        assert calls[0] == calls[2] and calls[1] != calls[0] and sorted(zeroed) == sorted(calls[:2]), source
    inputs = random_inputs(graph, seed=6)
    expected = evaluate(graph, *inputs)
    got = jax.jit(cpp.kernel_graph_function(graph))(*inputs)
    for e, g in zip(expected, got):  # bfloat16: X A rounded to bfloat16 before (X A) B, as a bf16 program does
        e, g = np.asarray(e, np.float32), np.asarray(g, np.float32)
        scale = 2e-2 * np.abs(e).max() if dtype == "bfloat16" else 2e-5
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=scale)


def _bf16_scores_graph():
    """``Q @ K^T`` with bfloat16 Q (4 rows, as GQA's query heads per KV head), K and result."""
    from prism_jax.ir import DType, TensorType
    from prism_jax.ir.graph import BlockGraphBuilder, KernelGraphBuilder
    from prism_jax.ir.maps import map_from_dims
    from prism_jax.ir.ops import OpKind

    tq, tk = TensorType((4, 48), DType.BFLOAT16), TensorType((40, 48), DType.BFLOAT16)
    kb = KernelGraphBuilder("bf16_scores")
    q_in, k_in = kb.input(tq, "Q"), kb.input(tk, "K")
    bb = BlockGraphBuilder((2,), 1)
    q = bb.op(OpKind.CONVERT, bb.input(0, tq, map_from_dims(2, 1, [None])), dtype=DType.FLOAT32)
    k = bb.op(OpKind.CONVERT, bb.input(1, tk, map_from_dims(2, 1, [0])), dtype=DType.FLOAT32)
    scores = bb.op(OpKind.MATMUL, q, bb.op(OpKind.TRANSPOSE, k, perm=(1, 0)))
    bb.output(bb.op(OpKind.CONVERT, scores, dtype=DType.BFLOAT16), map_from_dims(2, 1, [1]))
    (out,) = kb.custom_kernel(bb.build([tq, tk]), q_in, k_in)
    return kb.build([out])


@needs_compiler
def test_a_bfloat16_program_multiplies_by_bfloat16_rows_read_in_place():
    """q @ k^T in a bfloat16 program: K's rows read in place by the bfloat16 x bfloat16 call (AMX tiles
    loaded straight from K's rows where the host has them)."""
    graph = _bf16_scores_graph()
    op = graph.custom_kernels[0]
    source = cpp.kernel_source(op.block, [graph.values[v] for v in op.inputs], "bf16_scores")
    assert "pc::matmul_nt_acc_bf16_dot(" in source and "read in place" in source
    inputs = random_inputs(graph, seed=3)
    (expected,) = evaluate(graph, *inputs)
    (got,) = jax.jit(cpp.kernel_graph_function(graph))(*inputs)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(expected, np.float32), rtol=1e-2, atol=1e-2)


def _ntrans_graph():
    """nGPT's ``rmsnorm(X + a * (rmsnorm(H) - X))`` on bfloat16 rows, two rows per block: elementwise
    loops that scale each row by a per-row value (the inverse RMS)."""
    from prism_jax.ir import DType, TensorType
    from prism_jax.ir.graph import BlockGraphBuilder, KernelGraphBuilder
    from prism_jax.ir.maps import map_from_dims
    from prism_jax.ir.ops import OpKind

    t = TensorType((4, 96), DType.BFLOAT16)
    kb = KernelGraphBuilder("ntrans")
    ins = [kb.input(t, name) for name in ("H", "X", "a")]
    bb = BlockGraphBuilder((2,), 1)
    h, x, a = (bb.op(OpKind.CONVERT, bb.input(k, t, map_from_dims(2, 1, [0])), dtype=DType.FLOAT32)
               for k in range(3))

    def normalized(v):
        squares = bb.op(OpKind.REDUCE_SUM, bb.op(OpKind.SQUARE, v), axes=(1,))
        mean = bb.op(OpKind.DIV, squares, bb.constant(96.0, like=squares))
        return bb.op(OpKind.MUL, v, bb.op(OpKind.RSQRT, bb.op(OpKind.ADD, mean, bb.constant(1e-6, like=squares))))

    y = normalized(bb.op(OpKind.ADD, x, bb.op(OpKind.MUL, a, bb.op(OpKind.SUB, normalized(h), x))))
    bb.output(bb.op(OpKind.CONVERT, y, dtype=DType.BFLOAT16), map_from_dims(2, 1, [0]))
    (out,) = kb.custom_kernel(bb.build([t, t, t]), *ins)
    return kb.build([out])


@needs_compiler
def test_a_normalized_update_takes_one_pass_per_norm_and_writes_the_result_in_place():
    """A row's scale is read once per row, before the innermost loop (GCC left such loops scalar when
    the store might alias the scale's buffer); ``x + a * (..)`` and its sum of squares come from one
    loop; the output rows are computed where they lie in the result (no copy); the result still
    matches the interpreter."""
    graph = _ntrans_graph()
    op = graph.custom_kernels[0]
    source = cpp.kernel_source(op.block, [graph.values[v] for v in op.inputs], "ntrans_probe")
    assert "{ const auto h0 = v" in source and "static_cast<float>(h0)" in source
    assert source.count("float part[") == 2  # the two sums of squares, nothing else
    stored = re.search(r"const auto (x\d+) = .*; v\d+\[i0 \* 96 \+ i1 \* 1\] = \1; part\[u\]", source)
    assert stored is not None  # the value and its square's sum in one loop
    assert "// written in place" in source and "std::memcpy(" not in source
    inputs = random_inputs(graph, seed=6)
    (expected,) = evaluate(graph, *inputs)
    (got,) = jax.jit(cpp.kernel_graph_function(graph))(*inputs)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(expected, np.float32), rtol=1e-2, atol=1e-2)


def test_invariant_reads_are_hoisted_and_written_buffers_are_not():
    hoist = cpp.emit._hoist_invariant_reads
    decls, code = hoist("v5[i0 * 8 + i1 * 1] = v3[i0 * 8 + i1 * 1] * v4[i0 * 1] + v4[i0 * 1] - v6[0];", "i1")
    assert decls == ["const auto h0 = v4[i0 * 1];", "const auto h1 = v6[0];"]
    assert code == "v5[i0 * 8 + i1 * 1] = v3[i0 * 8 + i1 * 1] * h0 + h0 - h1;"
    decls, code = hoist("v7[i0 * 1] += v7[i0 * 1] * v2[i10];", "i1")  # written: stays; i10 is not i1
    assert decls == ["const auto h0 = v2[i10];"] and code.startswith("v7[i0 * 1] += v7[i0 * 1] * h0")
