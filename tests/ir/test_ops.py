"""The op vocabulary: shape inference, attributes, op sets."""

from fractions import Fraction

import pytest

from prism_jax.ir import (ACCUMULATORS, BLOCK_OPS, ELEMENTWISE, LAYOUT, PREDEFINED, REDUCTIONS, Attrs, DType,
                          IRError, Mono, OpKind, TensorType, broadcast_shapes, infer_types, sym)
from prism_jax.ir import interpreter, ops

n, d = sym("n"), sym("d")


def t(*shape, dtype=DType.FLOAT32):
    return TensorType(shape, dtype)


def infer(kind, *inputs, **attrs):
    return infer_types(kind, Attrs.of(attrs), list(inputs), f"op #3 ({kind})")


# -- op sets ---------------------------------------------------------------------------------------


def test_op_sets_partition_the_vocabulary():
    assert ACCUMULATORS <= BLOCK_OPS and not ACCUMULATORS & PREDEFINED
    assert OpKind.CUSTOM_KERNEL not in BLOCK_OPS | PREDEFINED
    assert OpKind.MATMUL in PREDEFINED and OpKind.TRANSPOSE in LAYOUT
    assert not ELEMENTWISE & REDUCTIONS
    assert set(OpKind) == BLOCK_OPS | {OpKind.CUSTOM_KERNEL}


@pytest.mark.parametrize("kind", sorted(BLOCK_OPS, key=lambda k: k.value))
def test_every_block_op_has_a_shape_rule_and_an_evaluator(kind):
    assert kind in ops._RULES
    if kind not in ACCUMULATORS:
        assert kind in interpreter._EVAL
    else:
        assert kind in interpreter._ACCUMULATE


# -- shape inference -------------------------------------------------------------------------------


def test_broadcast_shapes():
    assert broadcast_shapes([(n, 1), (1, d)], "x") == (n, d)
    assert broadcast_shapes([(4, 1, 3), (4, 5, 1)], "x") == (4, 5, 3)
    with pytest.raises(IRError, match="equal rank"):
        broadcast_shapes([(4,), (1, 4)], "op #1 (add)")
    with pytest.raises(IRError, match=r"op #1 \(add\): dims \[4, 5\] are neither equal nor 1"):
        broadcast_shapes([(4,), (5,)], "op #1 (add)")
    with pytest.raises(IRError, match="neither equal nor 1"):
        broadcast_shapes([(n,), (d,)], "x")


def test_elementwise_and_comparisons():
    assert infer(OpKind.ADD, t(n, 1), t(1, d)) == t(n, d)
    assert infer(OpKind.EXP, t(n, d)) == t(n, d)
    assert infer(OpKind.LT, t(4, 3), t(4, 1)) == t(4, 3, dtype=DType.BOOL)
    assert infer(OpKind.CONVERT, t(4), dtype=DType.BFLOAT16) == t(4, dtype=DType.BFLOAT16)
    assert infer(OpKind.SELECT, t(4, 1, dtype=DType.BOOL), t(4, 3), t(1, 3)) == t(4, 3)
    with pytest.raises(IRError, match="predicate must be bool"):
        infer(OpKind.SELECT, t(4, 3), t(4, 3), t(4, 3))
    with pytest.raises(IRError, match="dtypes differ"):
        infer(OpKind.MUL, t(4), t(4, dtype=DType.FLOAT16))
    with pytest.raises(IRError, match=r"op #3 \(add\): takes 2 inputs, got 1"):
        infer(OpKind.ADD, t(4))


def test_reductions_keep_dims():
    assert infer(OpKind.REDUCE_SUM, t(n, d), axes=(1,)) == t(n, 1)
    assert infer(OpKind.REDUCE_MAX, t(2, 3, 4), axes=(0, 2)) == t(1, 3, 1)
    with pytest.raises(IRError, match=r"axes \(2,\) invalid for rank 2"):
        infer(OpKind.REDUCE_SUM, t(4, 4), axes=(2,))
    with pytest.raises(IRError, match=r"missing attributes \['axes'\]"):
        infer(OpKind.REDUCE_SUM, t(4, 4))


def test_matmul():
    assert infer(OpKind.MATMUL, t(n, d), t(d, 5)) == t(n, 5)
    assert infer(OpKind.MATMUL, t(2, 1, 4, 3), t(1, 5, 3, 7)) == t(2, 5, 4, 7)
    with pytest.raises(IRError, match=r"op #3 \(matmul\): contracting dims differ: 4 vs 5"):
        infer(OpKind.MATMUL, t(3, 4), t(5, 6))
    with pytest.raises(IRError, match="contracting dims differ: d vs n"):
        infer(OpKind.MATMUL, t(3, d), t(n, 6))
    with pytest.raises(IRError, match="equal rank >= 2"):
        infer(OpKind.MATMUL, t(3, 4), t(1, 4, 6))


def test_layout_ops():
    assert infer(OpKind.TRANSPOSE, t(2, 3, 4), perm=(0, 2, 1)) == t(2, 4, 3)
    with pytest.raises(IRError, match="not a permutation"):
        infer(OpKind.TRANSPOSE, t(2, 3), perm=(0, 0))
    assert infer(OpKind.RESHAPE, t(n, d), shape=(1, n, d)) == t(1, n, d)
    assert infer(OpKind.RESHAPE, t(6, 4), shape=(3, 8)) == t(3, 8)
    with pytest.raises(IRError, match="cannot reshape"):
        infer(OpKind.RESHAPE, t(6, 4), shape=(5, 5))
    assert infer(OpKind.BROADCAST, t(1, d), shape=(n, d)) == t(n, d)
    with pytest.raises(IRError, match="cannot broadcast"):
        infer(OpKind.BROADCAST, t(2, d), shape=(n, d))
    assert infer(OpKind.CONCAT, t(2, 3), t(4, 3), axis=0) == t(6, 3)
    with pytest.raises(IRError, match="symbolic dim"):
        infer(OpKind.CONCAT, t(n, 3), t(4, 3), axis=0)
    assert infer(OpKind.SLICE, t(8, 5), start=(2, 0), limit=(6, 5)) == t(4, 5)
    with pytest.raises(IRError, match=r"slice \[0:9\] invalid for dim 8"):
        infer(OpKind.SLICE, t(8, 5), start=(0, 0), limit=(9, 5))


def test_sources():
    assert infer(OpKind.CONSTANT, value=n, shape=(1, 1), dtype=DType.FLOAT32) == t(1, 1)
    assert infer(OpKind.IOTA, shape=(4, 3), dimension=1, dtype=DType.INT32) == t(4, 3, dtype=DType.INT32)
    with pytest.raises(IRError, match="iota dimension 2 outside"):
        infer(OpKind.IOTA, shape=(4, 3), dimension=2, dtype=DType.INT32)
    with pytest.raises(IRError, match="dtype attribute must be a DType"):
        infer(OpKind.CONSTANT, value=1.0, shape=(1,), dtype="float32")
    with pytest.raises(IRError, match="dtype attribute must be a DType"):
        infer(OpKind.CONVERT, t(4), dtype="float16")


def test_accumulators():
    assert infer(OpKind.ACCUM_SUM, t(n, d)) == t(n, d)
    assert infer(OpKind.ACCUM_RESCALED_SUM, t(n, d), t(n, 1)) == t(n, d)
    with pytest.raises(IRError, match="log_scale .* must broadcast to value"):
        infer(OpKind.ACCUM_RESCALED_SUM, t(n, 1), t(n, d))
    with pytest.raises(IRError, match="takes 1 inputs"):
        infer(OpKind.ACCUM_MAX, t(4), t(4))


# -- attributes ------------------------------------------------------------------------------------


def test_attrs_are_canonical_and_hashable():
    a = Attrs.of(shape=[1, 2], axes=[0])
    b = Attrs.of({"axes": (0,)}, shape=(1, 2))
    assert a == b and hash(a) == hash(b)
    assert a.items == (("axes", (0,)), ("shape", (1, 2)))
    assert a["shape"] == (1, 2) and a.get("missing", 7) == 7
    assert a.keys() == {"axes", "shape"}
    with pytest.raises(KeyError):
        a["missing"]
    # a Mono that cancels becomes an int, a symbolic one stays
    unnormalized = Mono(Fraction(3), ())
    assert Attrs.of(value=unnormalized)["value"] == 3 and isinstance(Attrs.of(value=unnormalized)["value"], int)
    assert Attrs.of(value=n)["value"] == n
    assert str(Attrs.of(axes=(1,), dtype=DType.FLOAT32)) == "axes=(1,) dtype=float32"
