"""Kernel graphs and block graphs: building, validation (malformed graphs), constraints, instantiation."""

import dataclasses

import pytest

from prism_jax.ir import (PREDEFINED, Attrs, BlockGraphBuilder, Divisible, DType, InRange, IRError,
                          KernelGraph, KernelGraphBuilder, MapVar, MemoryBudget, Op, OpKind, Phase, TensorType,
                          instantiate, is_concrete_graph, map_from_dims, sym, validate_kernel_graph)
from prism_jax.ir.examples import EXAMPLES, attention, split_kv_decode_attention, tiled_matmul
from prism_jax.ir.maps import loop_map

F32 = DType.FLOAT32


def t(*shape, dtype=F32):
    return TensorType(shape, dtype)


def replace_block(graph: KernelGraph, k: int = 0, **changes) -> KernelGraph:
    """``graph`` with custom kernel ``k``'s block graph fields replaced (no validation)."""
    index = [i for i, op in enumerate(graph.ops) if op.kind == OpKind.CUSTOM_KERNEL][k]
    op = graph.ops[index]
    new_op = dataclasses.replace(op, block=dataclasses.replace(op.block, **changes))
    return dataclasses.replace(graph, ops=graph.ops[:index] + (new_op,) + graph.ops[index + 1:])


# -- the examples are valid graphs -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_build_at_every_tiling_and_symbolically(name):
    ex = EXAMPLES[name]
    kernels = 2 if name == "split_kv_decode_attention" else 1
    for tiling in ex.tilings:
        graph = ex.concrete(tiling)
        validate_kernel_graph(graph)
        assert is_concrete_graph(graph)
        assert len(graph.custom_kernels) == kernels
        assert graph.custom_kernels[0].block.grid == tuple(tiling["grid"])
        assert graph.custom_kernels[0].block.forloop == tiling["forloop"]
        assert graph.output_types == ex.reference_graph().output_types
    symbolic = ex.symbolic()
    assert not is_concrete_graph(symbolic)
    assert symbolic.custom_kernels[0].block.grid[0] == sym("gx")
    reference = ex.reference_graph()
    assert not reference.custom_kernels
    assert all(op.kind in PREDEFINED for op in reference.ops)
    assert reference.input_types == ex.concrete().input_types
    assert ex.symbolic_reference().input_types == symbolic.input_types


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_symbolic_examples_constraints_and_instantiation(name):
    ex = EXAMPLES[name]
    symbolic = ex.symbolic()
    for tiling in ex.tilings:
        env = ex.env(tiling)
        for op in symbolic.custom_kernels:
            cs = op.block.constraints([symbolic.values[v] for v in op.inputs])
            assert cs.is_satisfied(env), cs.violations(env)
        assert instantiate(symbolic, env) == ex.concrete(tiling)
    # every constraint of a concrete graph is decided, and true
    for op in ex.concrete().custom_kernels:
        concrete_graph = ex.concrete()
        cs = op.block.constraints([concrete_graph.values[v] for v in op.inputs])
        assert len(cs) > 0 and len(cs.simplify()) == 0


def test_tiled_matmul_constraints_name_the_tiling():
    M, K, N = sym("M"), sym("K"), sym("N")
    graph = tiled_matmul(M, K, N)
    (op,) = graph.custom_kernels
    cs = op.block.constraints(graph.input_types)
    gx, gy, F = sym("gx"), sym("gy"), sym("F")
    assert Divisible(M, gx) in cs and Divisible(K, F) in cs and Divisible(N, gy) in cs
    assert InRange(F, 1) in cs
    simple = cs.simplify()
    assert Divisible(M, gx) in simple and InRange(gx, 1) in simple
    env = {"M": 8, "K": 12, "N": 6, "gx": 2, "gy": 3, "F": 4}
    assert simple.is_satisfied(env)
    assert any("input 0 dim 0" in v for v in simple.violations({**env, "gx": 3}))
    budget = op.block.constraints(graph.input_types, onchip_bytes=1024)
    (mem,) = [c for c in budget if isinstance(c, MemoryBudget)]
    # tiles: A [4,3], B [3,2], A@B [4,2], accumulator [4,2] in f32
    assert mem.usage(env) == (12 + 6 + 8 + 8) * 4
    assert not mem.holds({**env, "gx": 1, "gy": 1, "F": 1})  # whole matrices: (96 + 72 + 48 + 48) * 4 > 1024


def test_split_k_output_is_summed_over_the_unmapped_grid_dim():
    graph = tiled_matmul(8, 12, 6, grid=(2, 3, 2), forloop=3)
    block = graph.custom_kernels[0].block
    assert block.num_blocks == 12
    assert block.outputs[0].omap == ((True, False, False), (False, True, False))
    assert block.output_type(0) == t(8, 6)
    assert block.values[block.inputs[0].value] == t(4, 2)  # K = 12 / (gz=2 * F=3)


def test_phases_of_attention():
    graph = attention(1, 2, 4, 8, 4, grid=(1, 2, 1), forloop=2)
    block = graph.custom_kernels[0].block
    phases = block.phases()
    q_in, k_in, v_in = block.inputs
    assert phases[q_in.value] == Phase.INVARIANT
    assert phases[k_in.value] == phases[v_in.value] == Phase.LOOP
    accs = [op for op in block.ops if op.kind == OpKind.ACCUM_RESCALED_SUM]
    assert len(accs) == 2 and all(phases[op.outputs[0]] == Phase.POST for op in accs)
    assert phases[block.outputs[0].value] == Phase.POST
    constant = next(op for op in block.ops if op.kind == OpKind.CONSTANT)
    assert phases[constant.outputs[0]] == Phase.INVARIANT


def test_split_kv_partials_have_a_chunk_dim():
    graph = split_kv_decode_attention(4, 1, 32, 8, grid=(2, 4), forloop=2)
    first, second = graph.custom_kernels
    assert [graph.values[v] for v in first.outputs] == [t(4, 4, 1, 8), t(4, 4, 1, 1), t(4, 4, 1, 1)]
    assert second.inputs == first.outputs
    assert second.block.grid == (2,) and second.block.forloop == 1
    assert graph.output_types == (t(4, 1, 8),)


def test_graphs_are_values():
    a = tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)
    b = tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)
    assert a == b and hash(a.ops) == hash(b.ops)
    assert a != tiled_matmul(8, 12, 6, grid=(2, 3), forloop=2)
    assert a.op_counts() == {"custom_kernel": 1}
    assert a.input_names == ("A", "B")


# -- malformed graphs: every error names the op ----------------------------------------------------


def kernel_graph(values, ops, outputs, inputs=(0, 1)):
    return KernelGraph("bad", tuple(values), tuple(inputs), tuple(f"in{k}" for k in range(len(inputs))),
                       tuple(ops), tuple(outputs))


def test_matmul_with_mismatched_contracting_dims():
    values = [t(4, 6), t(5, 3), t(4, 6), t(5, 3), t(4, 3)]
    ops = [Op(OpKind.EXP, (0,), (2,)), Op(OpKind.EXP, (1,), (3,)), Op(OpKind.MATMUL, (2, 3), (4,))]
    with pytest.raises(IRError, match=r"op #2 \(%4 = matmul\(%2, %3\)\): contracting dims differ: 6 vs 5"):
        validate_kernel_graph(kernel_graph(values, ops, [4]))
    kb = KernelGraphBuilder()
    a, b = kb.input(t(4, 6)), kb.input(t(5, 3))
    with pytest.raises(IRError, match=r"op #0 \(matmul\): contracting dims differ"):
        kb.op(OpKind.MATMUL, a, b)
    bb = BlockGraphBuilder((2,), 1)
    a = bb.input(0, t(4, 6), map_from_dims(2, 1, [0]))
    b = bb.input(1, t(5, 3))
    bb.op(OpKind.EXP, a)
    with pytest.raises(IRError, match=r"op #1 \(matmul\): contracting dims differ: 6 vs 5"):
        bb.op(OpKind.MATMUL, a, b)


def test_op_reading_an_undefined_value():
    values = [t(4), t(4), t(4), t(4), t(4)]
    ops = [Op(OpKind.EXP, (0,), (2,)), Op(OpKind.ADD, (2, 4), (3,)), Op(OpKind.EXP, (1,), (4,))]
    with pytest.raises(IRError, match=r"op #1 .*reads %4 before it is defined"):
        validate_kernel_graph(kernel_graph(values, ops, [3]))
    graph = tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)
    block = graph.custom_kernels[0].block
    matmul = block.ops[0]
    bad = replace_block(graph, ops=(dataclasses.replace(matmul, inputs=(0, 9)),) + block.ops[1:])
    with pytest.raises(IRError, match=r"custom_kernel.*block graph: op #0 \(%2 = matmul\(%0, %9\)\): reads %9"):
        validate_kernel_graph(bad)
    kb = KernelGraphBuilder()
    kb.input(t(4))
    with pytest.raises(IRError, match=r"op #0 \(exp\): unknown input %3"):
        kb.op(OpKind.EXP, 3)


def test_block_output_of_a_per_iteration_value():
    bb = BlockGraphBuilder((2,), 4)
    x = bb.input(0, t(8, 8), map_from_dims(2, 1, [0]), loop_map(2, 1))
    y = bb.op(OpKind.EXP, x)
    bb.output(y, map_from_dims(2, 1, [0]))
    with pytest.raises(IRError, match=r"output 0 \(%1\): stores a per-iteration value; accumulate it"):
        bb.build([t(8, 8)])


def test_post_loop_op_mixing_a_loop_value():
    bb = BlockGraphBuilder((2,), 4)
    x = bb.input(0, t(8, 8), map_from_dims(2, 1, [0]), loop_map(2, 1))
    acc = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.EXP, x))
    bb.output(bb.op(OpKind.ADD, acc, x), map_from_dims(2, 1, [0]))
    with pytest.raises(IRError, match=r"op #2 \(%3 = add\(%2, %0\)\): mixes a per-iteration value"):
        bb.build([t(8, 8)])


def test_accumulating_an_after_loop_value():
    bb = BlockGraphBuilder((1,), 2)
    x = bb.input(0, t(8), None, loop_map(1, 0))
    bb.output(bb.accumulate(OpKind.ACCUM_SUM, bb.accumulate(OpKind.ACCUM_MAX, x)))
    with pytest.raises(IRError, match=r"op #1 \(%2 = accum_sum\(%1\)\): accumulates a value computed after"):
        bb.build([t(8)])


def test_grid_dim_splitting_two_data_dims():
    bb = BlockGraphBuilder((2, 2), 1)
    with pytest.raises(IRError, match=r"block input 0 \(kernel input 0\).*grid dim 1 splits more than one"):
        bb.input(0, t(4, 4), ((False, True), (False, True)))
    graph = tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)
    a_in = graph.custom_kernels[0].block.inputs[0]
    bad_input = dataclasses.replace(a_in, imap=((True, False), (True, False)))
    bad = replace_block(graph, inputs=(bad_input,) + graph.custom_kernels[0].block.inputs[1:])
    with pytest.raises(IRError, match=r"op #0 \(.*custom_kernel.*input 0 .*grid dim 0 splits more than one data"):
        validate_kernel_graph(bad)


def test_tile_type_that_does_not_follow_from_the_maps():
    graph = tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)
    block = graph.custom_kernels[0].block
    values = list(block.values)
    values[0] = t(8, 3)  # A's tile is [8/2, 12/4] = [4, 3]
    with pytest.raises(IRError, match=r"op #0 .*input 0 .*tile type f32\[8,3\] does not follow .*expected f32\[4,3\]"):
        validate_kernel_graph(replace_block(graph, values=tuple(values)))


def test_tiling_that_does_not_divide():
    with pytest.raises(IRError, match=r"block input 0 \(kernel input 0\): cannot tile f32\[8,12\].*not divisible"):
        tiled_matmul(8, 12, 6, grid=(3, 3), forloop=4)
    with pytest.raises(IRError, match="M/gx is not an integer"):
        instantiate(tiled_matmul(sym("M"), 12, 6), {"M": 8, "gx": 3, "gy": 3, "F": 4})


def test_wrong_attrs():
    values = [t(4, 4), t(4, 4), t(4, 1)]
    extra = [Op(OpKind.EXP, (0,), (1,)), Op(OpKind.REDUCE_SUM, (1,), (2,), Attrs.of(axes=(1,), keepdims=True))]
    with pytest.raises(IRError, match=r"op #1 \(.*reduce_sum.*unexpected attributes \['keepdims'\]"):
        validate_kernel_graph(kernel_graph(values, extra, [2], inputs=(0,)))
    missing = [Op(OpKind.EXP, (0,), (1,)), Op(OpKind.REDUCE_SUM, (1,), (2,))]
    with pytest.raises(IRError, match=r"op #1 .*missing attributes \['axes'\]"):
        validate_kernel_graph(kernel_graph(values, missing, [2], inputs=(0,)))
    out_of_range = [Op(OpKind.EXP, (0,), (1,)), Op(OpKind.REDUCE_SUM, (1,), (2,), Attrs.of(axes=(2,)))]
    with pytest.raises(IRError, match=r"op #1 .*axes \(2,\) invalid for rank 2"):
        validate_kernel_graph(kernel_graph(values, out_of_range, [2], inputs=(0,)))
    wrong_type = [Op(OpKind.EXP, (0,), (1,)), Op(OpKind.REDUCE_SUM, (1,), (2,), Attrs.of(axes=(0,)))]
    with pytest.raises(IRError, match=r"op #1 .*output type should be f32\[1,4\]"):
        validate_kernel_graph(kernel_graph(values, wrong_type, [2], inputs=(0,)))


def test_ops_in_the_wrong_level():
    kb = KernelGraphBuilder()
    x = kb.input(t(4))
    with pytest.raises(IRError, match=r"op #0 \(accum_sum\): accum_sum is not a predefined kernel op"):
        kb.op(OpKind.ACCUM_SUM, x)
    bb = BlockGraphBuilder((1,), 1)
    y = bb.input(0, t(4))
    with pytest.raises(IRError, match="custom_kernel is not allowed in a block graph"):
        bb.op(OpKind.CUSTOM_KERNEL, y)
    with pytest.raises(IRError, match="is not a for-loop accumulator"):
        bb.accumulate(OpKind.ADD, y, y)
    values = [t(4), t(4)]
    with pytest.raises(IRError, match=r"op #0 .*accum_max is not allowed in a kernel graph"):
        validate_kernel_graph(kernel_graph(values, [Op(OpKind.ACCUM_MAX, (0,), (1,))], [1], inputs=(0,)))


def test_custom_kernel_structure_errors():
    graph = tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)
    op = graph.ops[0]
    no_block = dataclasses.replace(graph, ops=(dataclasses.replace(op, block=None),))
    with pytest.raises(IRError, match=r"op #0 .*custom kernel without a block graph"):
        validate_kernel_graph(no_block)
    values = list(graph.values)
    values[op.outputs[0]] = t(8, 5)
    with pytest.raises(IRError, match=r"op #0 .*output 0 should be f32\[8,6\], declared f32\[8,5\]"):
        validate_kernel_graph(dataclasses.replace(graph, values=tuple(values)))
    with pytest.raises(IRError, match="tiled_matmul: grid must have 2 or 3 dims, got 4"):
        tiled_matmul(8, 12, 6, grid=(1, 1, 1, 1), forloop=1)
    bb = BlockGraphBuilder((1, 1, 1, 1), 1)
    bb.output(bb.input(0, t(4)))
    with pytest.raises(IRError, match="grid must have 1 to 3 dims, got 4"):
        bb.build([t(4)])
    bb = BlockGraphBuilder((2,), 1)
    bb.input(0, t(4))
    with pytest.raises(IRError, match="has no outputs"):
        bb.build([t(4)])


def test_kernel_graph_structure_errors():
    values = [t(4), t(4)]
    with pytest.raises(IRError, match="returns undefined value %1"):
        validate_kernel_graph(kernel_graph(values, [], [1], inputs=(0,)))
    with pytest.raises(IRError, match="has no outputs"):
        validate_kernel_graph(kernel_graph(values, [Op(OpKind.EXP, (0,), (1,))], [], inputs=(0,)))
    redefine = [Op(OpKind.EXP, (0,), (1,)), Op(OpKind.EXP, (0,), (1,))]
    with pytest.raises(IRError, match=r"op #1 .*redefines %1"):
        validate_kernel_graph(kernel_graph(values, redefine, [1], inputs=(0,)))
    with pytest.raises(IRError, match="1 inputs but 2 names"):
        validate_kernel_graph(KernelGraph("bad", tuple(values), (0,), ("a", "b"), (), (0,)))


# -- instantiation ---------------------------------------------------------------------------------


def test_instantiate_substitutes_symbols_in_attrs():
    graph = EXAMPLES["rmsnorm_matmul"].symbolic()
    block = graph.custom_kernels[0].block
    means = [op for op in block.ops if op.kind == OpKind.CONSTANT and op.attrs["value"] == sym("d")]
    assert len(means) == 1
    bound = instantiate(graph, EXAMPLES["rmsnorm_matmul"].env())
    values = {op.attrs["value"] for op in bound.custom_kernels[0].block.ops if op.kind == OpKind.CONSTANT}
    assert values == {16, 1e-6}
    partial = instantiate(graph, {"d": 32})
    assert not is_concrete_graph(partial)
    assert partial.input_types[0] == t(sym("n"), 32)


def test_instantiate_resolves_map_variables():
    graph = tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)
    block = graph.custom_kernels[0].block
    a_in = block.inputs[0]
    var = dataclasses.replace(a_in, imap=((MapVar("m"), False), (False, False)))
    symbolic = replace_block(graph, inputs=(var,) + block.inputs[1:])
    validate_kernel_graph(symbolic)  # tile types are checked only once the maps are known
    assert instantiate(symbolic, maps={"m": True}) == graph
    with pytest.raises(IRError, match="does not follow from"):
        instantiate(symbolic, maps={"m": False})


def test_a_validated_block_graph_is_checked_again_against_other_sources():
    """Validation is skipped only for the same block graph object and the same source types."""
    graph = EXAMPLES["tiled_matmul"].concrete()
    op = graph.custom_kernels[0]
    sources = [graph.values[v] for v in op.inputs]
    from prism_jax.ir.graph import validate_block_graph
    validate_block_graph(op.block, sources)
    validate_block_graph(op.block, sources)  # remembered
    wrong = [t(*(2 * d for d in s.shape)) for s in sources]
    with pytest.raises(IRError):
        validate_block_graph(op.block, wrong)
