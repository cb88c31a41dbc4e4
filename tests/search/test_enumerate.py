"""Level-1 enumeration from scratch: the structures found for a region, once their maps are resolved,
include the fused kernel with the contraction dim in the for-loop (nothing but outputs written)."""

import pytest

from prism_jax.ir import OpKind
from prism_jax.ir.examples import EXAMPLES
from prism_jax.search.enumerate import (EnumerationConfig, EnumerationStats, enumerate_structures,
                                        find_fused_kernels, vocabulary)


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


def test_swiglu_first_structure_is_both_matmuls_in_one_kernel_with_k_in_the_loop():
    reference = EXAMPLES["swiglu"].symbolic_reference()
    stats = EnumerationStats()
    found = find_fused_kernels(reference, grid_rank=2, config=EnumerationConfig(max_block_ops=7), max_structures=1,
                               stats=stats)
    assert found, stats
    structure = found[0].structure
    assert sum(op[0] == OpKind.MATMUL for op in structure.ops) == 2
    assert sum(op[0] == OpKind.ACCUM_SUM for op in structure.ops) == 2
    assert any(_loop_splits_contraction(f.graph, 0, 1) for f in found)
    assert stats.pruned_abstract > 0


@pytest.mark.slow
def test_swiglu_region_traced_from_jax_is_fused_from_scratch():
    """No hand-built structure: the region comes from tracing the workload, the kernel from the search."""
    import jax
    import numpy as np

    import prism_jax
    from prism_jax import workloads
    from prism_jax.ir import Interpreter, instantiate

    wl = workloads.get_workload("swiglu")
    args = wl.make_args(workloads.small_shape(wl), "float32", 0)
    region = prism_jax.trace(wl.fn, *args).regions[0].graph
    found = find_fused_kernels(region, grid_rank=2, config=EnumerationConfig(max_block_ops=7), max_structures=1)
    assert found and all("equal" in f.detail for f in found)
    kernel = found[0].graph
    assert len(kernel.custom_kernels) == 1 and len(kernel.ops) == 1  # nothing else touches device memory
    assert _loop_splits_contraction(kernel, 0, 1)
    concrete = instantiate(kernel, {"gx": 2, "gy": 4, "F": 4})
    (got,) = Interpreter().run(concrete, *(np.asarray(a) for a in args))
    np.testing.assert_allclose(got, jax.jit(wl.fn)(*args), rtol=1e-5, atol=1e-6)
