"""Map instantiation: from a block-graph structure with its maps stripped, the canonical assignments are
few (shapes are checked as inputs are assigned), and the proved ones really compute the reference."""

import numpy as np
import pytest

from prism_jax.ir import Interpreter, instantiate
from prism_jax.ir.examples import EXAMPLES, random_inputs
from prism_jax.search import BlockStructure, map_assignments, resolve_maps


def _structure(name):
    example = EXAMPLES[name]
    fused = example.symbolic()
    (kernel,) = fused.custom_kernels
    assert list(kernel.inputs) == list(fused.inputs)
    return example, BlockStructure.from_block(kernel.block), kernel.block.grid_rank


@pytest.mark.parametrize("name", ["tiled_matmul", "swiglu"])
def test_proved_assignments_compute_the_reference(name):
    example, structure, grid_rank = _structure(name)
    proved, stats = resolve_maps(structure, example.symbolic_reference(), grid_rank)
    assert proved, stats
    assert stats.proved + stats.refuted + stats.unknown == stats.verified == stats.assignments - stats.ill_typed
    sizes = dict(example.sizes)
    reference = example.reference_graph()
    for result in proved:
        env = {**sizes, "gx": 2, "gy": 2, "gz": 2, "F": 2}
        concrete = instantiate(result.graph, {k: v for k, v in env.items()})
        inputs = random_inputs(reference, seed=1, dtype=np.float64)
        want = Interpreter(np.float64).run(reference, *inputs)
        got = Interpreter(np.float64).run(concrete, *inputs)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-10)


def test_enumeration_is_canonical_and_deterministic():
    example, structure, grid_rank = _structure("tiled_matmul")
    first = list(map_assignments(structure, example.symbolic_reference(), grid_rank))
    again = list(map_assignments(structure, example.symbolic_reference(), grid_rank))
    assert first == again
    signatures = [tuple(a.grid_signature(p) for p in range(grid_rank)) for a in first]
    assert all(list(s) == sorted(s, reverse=True) for s in signatures)
    # no two assignments are the same up to a permutation of grid dims (x and y swapped)
    classes = {(frozenset(s), a.loops) for s, a in zip(signatures, first)}
    assert len(classes) == len(first)


def test_early_shape_checks_prune_most_assignments():
    example, structure, grid_rank = _structure("swiglu")
    assert len(list(map_assignments(structure, example.symbolic_reference(), grid_rank))) <= 20
