"""Reshapes that only insert or remove size-1 dims are encoded as unsq/sq terms (others stay opaque)."""

import pytest

from prism_jax.ir import DType, KernelGraphBuilder, OpKind, TensorType, sym
from prism_jax.verify import EGraphVerifier, Status
from prism_jax.verify.egraph import Encoder, sq, unit_reshape, unsq

n, d = sym("n"), sym("d")


@pytest.mark.parametrize("in_shape, in_unit, out_shape, steps", [
    ((n, d), (False, False), (n, 1, d), ([], [1])),
    ((n, 1, d), (False, True, False), (n, d), ([1], [])),
    ((n, d, 1), (False, False, True), (1, n, d), ([2], [0])),
    ((n, 1), (False, True), (n, 1, 1), ([], [1])),  # a run of size-1 dims grows at its left
    ((1, 1, 8), (False, True, False), (1, 1, 1, 8), ([], [1])),  # a tile dim that is 1 by splitting stays
    ((1, 8), (False, False), (8,), None),  # ... and is never removed
    ((n, d), (False, False), (d, n), None),
    ((2, 3), (False, False), (6,), None),
    ((n, d), (False, False), (n, d, 2), None),
])
def test_unit_reshape(in_shape, in_unit, out_shape, steps):
    assert unit_reshape(in_shape, in_unit, out_shape) == steps


def _reshape_graph(name, *shapes, exp_at=None):
    b = KernelGraphBuilder(name)
    x = b.input(TensorType((n, d), DType.FLOAT32))
    for k, shape in enumerate(shapes):
        x = b.op(OpKind.RESHAPE, x, shape=shape)
        if k == exp_at:
            x = b.op(OpKind.EXP, x)
    return b.build([x])


def test_reshapes_encode_as_unit_dim_terms():
    encoder = Encoder()
    (term,) = encoder.encode(_reshape_graph("a", (n, 1, d), (1, n, 1, d), (n, d)), "a")
    x = encoder.leaves["in0"]
    assert str(term) == str(sq(sq(unsq(unsq(x, 1), 0), 2), 0))
    (term,) = Encoder().encode(_reshape_graph("b", (n * d,)), "b")
    assert "opaque" in str(term)


def test_unit_dim_round_trip_is_proved():
    b = KernelGraphBuilder("ref")
    x = b.input(TensorType((n, d), DType.FLOAT32))
    reference = b.build([b.op(OpKind.EXP, x)])
    candidate = _reshape_graph("cand", (n, 1, d), (n, d), exp_at=0)
    assert EGraphVerifier().verify(reference, candidate).status is Status.EQUAL


def test_unit_dims_at_different_places_are_not_proved_equal():
    verdict = EGraphVerifier().verify(_reshape_graph("a", (1, n, d)), _reshape_graph("b", (n, 1, d)))
    assert verdict.status is not Status.EQUAL
