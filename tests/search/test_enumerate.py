"""Level-1 enumeration from scratch: the structures found for a region, once their maps are resolved,
include the fused kernel with the contraction dim in the for-loop (nothing but outputs written)."""


from prism_jax.ir import OpKind
from prism_jax.ir.examples import EXAMPLES
from prism_jax.search.enumerate import (EnumerationConfig, EnumerationStats, enumerate_structures,
                                        find_fused_kernels, prologues, vocabulary)


def _loop_splits_contraction(graph, input_index, dim):
    (kernel,) = graph.custom_kernels
    block_input = next(i for i in kernel.block.inputs if i.source == input_index)
    return block_input.fmap[dim] is True


def test_tiled_matmul_structures_are_the_whole_k_and_the_k_loop_kernels():
    stats = EnumerationStats()
    structures = list(enumerate_structures(EXAMPLES["tiled_matmul"].symbolic_reference(), stats=stats))
    assert [[op[0] for op in s.ops] for s in structures] == [[OpKind.MATMUL], [OpKind.MATMUL, OpKind.ACCUM_SUM]]
    assert stats.pruned_order > 0 and stats.ill_typed > 0


def test_tiled_matmul_kernel_with_k_in_the_loop_is_proved():
    found = find_fused_kernels(EXAMPLES["tiled_matmul"].symbolic_reference(), grid_rank=2)
    assert any(_loop_splits_contraction(f.graph, 0, 1) and _loop_splits_contraction(f.graph, 1, 0) for f in found)
    assert all("equal" in f.detail for f in found)


def test_vocabulary_is_the_regions_ops_plus_accumulators():
    kinds = {kind for kind, _ in vocabulary(EXAMPLES["swiglu"].symbolic_reference())}
    assert {OpKind.MATMUL, OpKind.LOGISTIC, OpKind.MUL, OpKind.ACCUM_SUM} <= kinds
    assert OpKind.EXP not in kinds


def test_swiglu_structures_include_both_matmuls_accumulated_in_one_kernel():
    reference = EXAMPLES["swiglu"].symbolic_reference()
    stats = EnumerationStats()
    structures = list(enumerate_structures(reference, EnumerationConfig(max_block_ops=7), stats))
    kinds = [[op[0] for op in s.ops] for s in structures]
    assert any(k.count(OpKind.MATMUL) == 2 and k.count(OpKind.ACCUM_SUM) == 2 for k in kinds)
    assert stats.pruned_abstract > 0 and stats.pruned_order > 0
    found = find_fused_kernels(reference, grid_rank=2, config=EnumerationConfig(max_block_ops=7))
    assert any(_loop_splits_contraction(f.graph, 0, 1) for f in found)


def test_enumeration_is_deterministic():
    reference = EXAMPLES["rmsnorm_matmul"].symbolic_reference()
    config = EnumerationConfig(max_block_ops=8)
    assert list(enumerate_structures(reference, config)) == list(enumerate_structures(reference, config))


def test_norm_prologues_are_found_before_matmuls():
    from prism_jax.search.problem import SearchProblem

    found = prologues(SearchProblem.of(EXAMPLES["qknorm_attention"].symbolic_reference()).core)
    assert len(found) == 2
    assert all(any(op.kind == OpKind.RSQRT for op in p) for p in found)
    assert prologues(EXAMPLES["attention"].symbolic_reference()) == []


def test_numerics_rule_keeps_the_softmax_shift():
    """softmax(x) = exp(x - max x) / sum(...) equals exp(x) / sum(exp(x)), which overflows: never proposed."""
    from prism_jax.ir import DType, KernelGraphBuilder, TensorType, sym

    kb = KernelGraphBuilder("softmax")
    x = kb.input(TensorType((sym("n"), sym("d")), DType.FLOAT32), "x")
    m = kb.op(OpKind.REDUCE_MAX, x, axes=(1,))
    e = kb.op(OpKind.EXP, kb.op(OpKind.SUB, x, m))
    reference = kb.build([kb.op(OpKind.DIV, e, kb.op(OpKind.REDUCE_SUM, e, axes=(1,)))])
    stats = EnumerationStats()
    structures = list(enumerate_structures(reference, EnumerationConfig(max_block_ops=6), stats))
    assert structures and stats.pruned_numerics > 0
    for s in structures:
        for kind, args, _ in s.ops:
            if kind == OpKind.EXP:
                assert s.ops[args[0] - s.num_inputs][0] == OpKind.SUB
