"""The reference interpreter: every example at several tilings against numpy, accumulator semantics,
single-op semantics."""

import numpy as np
import pytest

from prism_jax.ir import (BlockGraphBuilder, DType, Interpreter, IRError, KernelGraphBuilder, OpKind, TensorType,
                          evaluate, instantiate, map_from_dims)
from prism_jax.ir.examples import EXAMPLES, random_inputs, rmsnorm_matmul, tiled_matmul
from prism_jax.ir.maps import loop_map

F32 = DType.FLOAT32
CASES = [(name, k) for name in sorted(EXAMPLES) for k in range(len(EXAMPLES[name].tilings))]

# per example: other sizes and a tiling legal for them (for the symbolic instantiation test)
OTHER_SIZES = {
    "tiled_matmul": ({"M": 6, "K": 8, "N": 10}, {"grid": (3, 5), "forloop": 2}),
    "rmsnorm_matmul": ({"n": 6, "d": 24, "N": 4}, {"grid": (3, 2), "forloop": 3}),
    "swiglu": ({"n": 2, "d": 8, "N": 9}, {"grid": (2, 3), "forloop": 8}),
    "rmsnorm_mlp": ({"n": 3, "d": 10, "N": 4}, {"grid": (1, 4), "forloop": 5}),
    "attention": ({"b": 1, "h": 3, "q": 6, "kv": 9, "D": 4}, {"grid": (1, 3, 2), "forloop": 3}),
    "qknorm_attention": ({"b": 2, "h": 1, "q": 2, "kv": 8, "D": 6}, {"grid": (2, 1, 2), "forloop": 2}),
    "split_kv_decode_attention": ({"h": 2, "q": 3, "kv": 24, "D": 4}, {"grid": (2, 3), "forloop": 4}),
}


def check(got, want, float64: bool) -> None:
    if float64:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.max(np.abs(want)))


def run(graph, inputs, float64: bool) -> np.ndarray:
    (out,) = Interpreter(np.float64 if float64 else None).run(graph, *inputs)
    assert out.dtype == (np.float64 if float64 else np.float32)
    return out


@pytest.mark.parametrize("name,k", CASES)
def test_fused_example_matches_numpy(name, k):
    ex = EXAMPLES[name]
    graph = ex.concrete(ex.tilings[k])
    inputs = random_inputs(graph, seed=k)
    want = ex.numpy(*inputs)
    assert want.shape == graph.output_types[0].shape
    check(run(graph, inputs, True), want, True)
    check(run(graph, inputs, False), want, False)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_reference_example_matches_numpy(name):
    ex = EXAMPLES[name]
    graph = ex.reference_graph()
    inputs = random_inputs(graph, seed=7)
    want = ex.numpy(*inputs)
    check(run(graph, inputs, True), want, True)
    check(run(graph, inputs, False), want, False)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_symbolic_example_instantiated_at_two_size_assignments(name):
    ex = EXAMPLES[name]
    symbolic = ex.symbolic()
    other_sizes, other_tiling = OTHER_SIZES[name]
    for sizes, tiling in ((ex.sizes, ex.tilings[0]), (other_sizes, other_tiling)):
        graph = instantiate(symbolic, ex.env(tiling, sizes))
        assert graph.input_types == ex.reference_graph(sizes).input_types
        inputs = random_inputs(graph, seed=1)
        check(run(graph, inputs, True), ex.numpy(*inputs), True)
        reference = instantiate(ex.symbolic_reference(), sizes)
        check(run(reference, inputs, True), ex.numpy(*inputs), True)


def test_split_k_and_variants():
    a, b = random_inputs(tiled_matmul(8, 12, 6, grid=(1, 1), forloop=1), seed=3)
    for grid, forloop in (((2, 3, 2), 3), ((1, 1, 12), 1), ((4, 2, 3), 2)):
        check(run(tiled_matmul(8, 12, 6, grid=grid, forloop=forloop), [a, b], True), a.astype(float) @ b, True)
    graph = rmsnorm_matmul(4, 16, 8, grid=(4,), forloop=2)  # columns only
    squares = rmsnorm_matmul(4, 16, 8, grid=(2, 2), forloop=4, accumulate_squares=True)
    assert any(op.kind == OpKind.ACCUM_SUM_SQUARES for op in squares.custom_kernels[0].block.ops)
    inputs = random_inputs(graph, seed=4)
    want = EXAMPLES["rmsnorm_matmul"].numpy(*inputs)
    check(run(graph, inputs, True), want, True)
    check(run(squares, inputs, True), want, True)


def test_evaluate_convenience_and_input_errors():
    graph = EXAMPLES["swiglu"].concrete()
    inputs = random_inputs(graph)
    (out,) = evaluate(graph, *inputs, compute_dtype=np.float64)
    check(out, EXAMPLES["swiglu"].numpy(*inputs), True)
    with pytest.raises(IRError, match=r"input 1 \(Wg\): expected shape \(12, 6\), got \(6, 12\)"):
        evaluate(graph, inputs[0], inputs[1].T, inputs[2])
    with pytest.raises(IRError, match="takes 3 inputs, got 2"):
        evaluate(graph, *inputs[:2])
    with pytest.raises(IRError, match="symbolic sizes; instantiate it first"):
        evaluate(EXAMPLES["swiglu"].symbolic(), *inputs)


# -- accumulator semantics, block by block ----------------------------------------------------------


def one_kernel(block_fn, sources, grid=(1,), forloop=4):
    """A kernel graph with one custom kernel whose block graph ``block_fn(bb, tiles)`` builds."""
    kb = KernelGraphBuilder("k")
    ins = [kb.input(TensorType(s.shape, F32)) for s in sources]
    bb = BlockGraphBuilder(grid, forloop)
    block_fn(bb, [TensorType(s.shape, F32) for s in sources])
    outs = kb.custom_kernel(bb.build([kb.type_of(v) for v in ins]), *ins)
    return kb.build(outs)


def test_accum_rescaled_sum_is_the_online_softmax_sum():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((5, 3))  # iteration i adds row i
    scales = rng.standard_normal((5, 1)) * 3

    def block(bb, types):
        v = bb.input(0, types[0], fmap=loop_map(2, 0))
        s = bb.input(1, types[1], fmap=loop_map(2, 0))
        bb.output(bb.accumulate(OpKind.ACCUM_RESCALED_SUM, v, s))

    (got,) = Interpreter(np.float64).run(one_kernel(block, [values, scales], forloop=5), values, scales)
    want = np.sum(values * np.exp(scales - scales.max()), axis=0, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_accum_max_sum_squares_and_invariant_sums():
    x = np.random.default_rng(1).standard_normal((4, 6))

    def block(bb, types):
        per_iteration = bb.input(0, types[0], fmap=loop_map(2, 0))
        whole = bb.input(0, types[0])  # loop-invariant: summed F times
        bb.output(bb.accumulate(OpKind.ACCUM_MAX, per_iteration))
        bb.output(bb.accumulate(OpKind.ACCUM_SUM_SQUARES, per_iteration))
        bb.output(bb.accumulate(OpKind.ACCUM_SUM, whole))

    got_max, got_sq, got_sum = Interpreter(np.float64).run(one_kernel(block, [x]), x)
    np.testing.assert_allclose(got_max, x.max(axis=0, keepdims=True))
    np.testing.assert_allclose(got_sq, (x * x).sum(axis=0, keepdims=True))
    np.testing.assert_allclose(got_sum, 4 * x)


def test_outputs_are_placed_by_omap_and_summed_over_unmapped_grid_dims():
    x = np.arange(24, dtype=np.float64).reshape(4, 6)

    def block(bb, types):
        tile = bb.input(0, types[0], map_from_dims(2, 2, [0, 1]))  # [2, 2] tiles
        bb.output(bb.op(OpKind.EXP, tile), map_from_dims(2, 2, [0, 1]))  # placed: identity
        bb.output(bb.op(OpKind.NEG, tile), map_from_dims(2, 2, [0, None]))  # y unmapped: summed

    placed, summed = Interpreter(np.float64).run(one_kernel(block, [x], grid=(2, 3), forloop=1), x)
    np.testing.assert_allclose(placed, np.exp(x))
    np.testing.assert_allclose(summed, -x.reshape(4, 3, 2).sum(axis=1))


def test_post_loop_ops_use_invariant_and_accumulated_values():
    x = np.random.default_rng(2).standard_normal((8, 2))

    def block(bb, types):
        chunk = bb.input(0, types[0], fmap=loop_map(2, 0))
        whole = bb.input(0, types[0])
        total = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.REDUCE_SUM, chunk, axes=(0,)))
        bb.output(bb.op(OpKind.SUB, whole, total))  # whole is loop-invariant: allowed after the loop

    (got,) = Interpreter(np.float64).run(one_kernel(block, [x]), x)
    np.testing.assert_allclose(got, x - x.sum(axis=0, keepdims=True))


# -- single ops -------------------------------------------------------------------------------------


def test_elementwise_and_layout_ops():
    kb = KernelGraphBuilder("ops")
    x = kb.input(TensorType((2, 3), F32), "x")
    y = kb.input(TensorType((2, 3), F32), "y")
    outs = [
        kb.op(OpKind.LOGISTIC, x),
        kb.op(OpKind.SELECT, kb.op(OpKind.GT, x, y), x, y),  # select(pred, on_false, on_true)
        kb.op(OpKind.INTEGER_POW, x, exponent=3),
        kb.op(OpKind.CONVERT, x, dtype=DType.INT32),
        kb.op(OpKind.IOTA, shape=(2, 3), dimension=1, dtype=DType.INT32),
        kb.op(OpKind.CONCAT, x, y, axis=1),
        kb.op(OpKind.SLICE, x, start=(0, 1), limit=(2, 3)),
        kb.op(OpKind.BROADCAST, kb.op(OpKind.REDUCE_MAX, x, axes=(1,)), shape=(2, 3)),
        kb.op(OpKind.TRANSPOSE, x, perm=(1, 0)),
        kb.op(OpKind.RSQRT, kb.op(OpKind.ABS, x)),
    ]
    xv = np.array([[-200.0, -1.5, 0.0], [0.5, 2.5, 300.0]], np.float32)
    yv = np.ones((2, 3), np.float32)
    got = evaluate(kb.build(outs), xv, yv)
    np.testing.assert_allclose(got[0], [[0.0, 1 / (1 + np.exp(1.5)), 0.5], [1 / (1 + np.exp(-0.5)),
                                                                             1 / (1 + np.exp(-2.5)), 1.0]], rtol=1e-6)
    assert np.all(np.isfinite(got[0]))
    np.testing.assert_array_equal(got[1], np.where(xv > yv, yv, xv))
    np.testing.assert_allclose(got[2], xv ** 3)
    assert got[3].dtype == np.int32 and got[3][1, 1] == 2
    np.testing.assert_array_equal(got[4], [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(got[5], np.concatenate([xv, yv], axis=1))
    np.testing.assert_array_equal(got[6], xv[:, 1:])
    np.testing.assert_array_equal(got[7], np.broadcast_to(xv.max(axis=1, keepdims=True), (2, 3)))
    np.testing.assert_array_equal(got[8], xv.T)
    assert got[9][0, 2] == np.inf  # 1/sqrt(0), no warning (warnings are errors in this suite)


def test_unresolved_maps_are_refused():
    import dataclasses

    from prism_jax.ir import MapVar

    graph = tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)
    op = graph.ops[0]
    a_in = dataclasses.replace(op.block.inputs[0], imap=((MapVar("m"), False), (False, False)))
    block = dataclasses.replace(op.block, inputs=(a_in,) + op.block.inputs[1:])
    with pytest.raises(IRError, match="unresolved map variables"):
        Interpreter().run_block(block, random_inputs(graph))
