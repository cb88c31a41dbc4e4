"""The op vocabulary shared by kernel graphs and block graphs, with shape inference.

Conventions that keep the IR canonical (the frontend normalizes JAX code into them):
- elementwise ops take operands of equal rank whose dims are equal or 1 (numpy broadcasting
  without rank promotion), so a row statistic ``[n, 1]`` scales an ``[n, d]`` tile directly;
- reductions keep the reduced dims as size 1 (rank never changes, so maps stay aligned);
- ``matmul`` is ``[..., M, K] @ [..., K, N]`` with broadcastable batch dims.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Iterable, Mapping, Sequence

from prism_jax.ir.errors import IRError
from prism_jax.ir.symbolic import Mono, Size, mul, normalize
from prism_jax.ir.types import DType, TensorType


class OpKind(enum.Enum):
    # sources
    CONSTANT = "constant"
    IOTA = "iota"
    # unary elementwise
    NEG = "neg"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    RSQRT = "rsqrt"
    TANH = "tanh"
    LOGISTIC = "logistic"
    SQUARE = "square"
    RECIPROCAL = "reciprocal"
    ABS = "abs"
    NOT = "not"
    INTEGER_POW = "integer_pow"
    CONVERT = "convert"
    # binary elementwise
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    MAX = "max"
    MIN = "min"
    POW = "pow"
    AND = "and"
    OR = "or"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    NE = "ne"
    SELECT = "select"  # select(pred, on_false, on_true), like lax.select_n with two cases
    # reductions (keepdims)
    REDUCE_SUM = "reduce_sum"
    REDUCE_MAX = "reduce_max"
    # contraction
    MATMUL = "matmul"
    # layout
    BROADCAST = "broadcast"
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    CONCAT = "concat"
    SLICE = "slice"
    # kernel graph only
    CUSTOM_KERNEL = "custom_kernel"
    # block graph only: for-loop accumulators
    ACCUM_SUM = "accum_sum"
    ACCUM_SUM_SQUARES = "accum_sum_squares"
    ACCUM_MAX = "accum_max"
    ACCUM_RESCALED_SUM = "accum_rescaled_sum"  # (value, log_scale): online-softmax rescaling

    def __str__(self) -> str:
        return self.value


UNARY = frozenset({
    OpKind.NEG, OpKind.EXP, OpKind.LOG, OpKind.SQRT, OpKind.RSQRT, OpKind.TANH, OpKind.LOGISTIC,
    OpKind.SQUARE, OpKind.RECIPROCAL, OpKind.ABS, OpKind.NOT, OpKind.INTEGER_POW, OpKind.CONVERT,
})
COMPARISONS = frozenset({OpKind.LT, OpKind.LE, OpKind.GT, OpKind.GE, OpKind.EQ, OpKind.NE})
BINARY = frozenset({
    OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.DIV, OpKind.MAX, OpKind.MIN, OpKind.POW,
    OpKind.AND, OpKind.OR,
}) | COMPARISONS
ELEMENTWISE = UNARY | BINARY | {OpKind.SELECT}
REDUCTIONS = frozenset({OpKind.REDUCE_SUM, OpKind.REDUCE_MAX})
LAYOUT = frozenset({OpKind.BROADCAST, OpKind.RESHAPE, OpKind.TRANSPOSE, OpKind.CONCAT, OpKind.SLICE})
SOURCES = frozenset({OpKind.CONSTANT, OpKind.IOTA})
ACCUMULATORS = frozenset({OpKind.ACCUM_SUM, OpKind.ACCUM_SUM_SQUARES, OpKind.ACCUM_MAX, OpKind.ACCUM_RESCALED_SUM})
PREDEFINED = ELEMENTWISE | REDUCTIONS | LAYOUT | SOURCES | {OpKind.MATMUL}
"""Ops a kernel graph may use directly (besides custom kernels)."""
BLOCK_OPS = PREDEFINED | ACCUMULATORS
"""Ops a block graph may use on tiles."""

# required attributes per kind; anything else is rejected by validation
_ATTRS: dict[OpKind, frozenset[str]] = {
    OpKind.CONSTANT: frozenset({"value", "shape", "dtype"}),
    OpKind.IOTA: frozenset({"shape", "dimension", "dtype"}),
    OpKind.INTEGER_POW: frozenset({"exponent"}),
    OpKind.CONVERT: frozenset({"dtype"}),
    OpKind.REDUCE_SUM: frozenset({"axes"}),
    OpKind.REDUCE_MAX: frozenset({"axes"}),
    OpKind.BROADCAST: frozenset({"shape"}),
    OpKind.RESHAPE: frozenset({"shape"}),
    OpKind.TRANSPOSE: frozenset({"perm"}),
    OpKind.CONCAT: frozenset({"axis"}),
    OpKind.SLICE: frozenset({"start", "limit"}),
}

_ARITY: dict[OpKind, int] = {k: 1 for k in UNARY | REDUCTIONS | {OpKind.BROADCAST, OpKind.RESHAPE,
                                                                 OpKind.TRANSPOSE, OpKind.SLICE}}
_ARITY.update({k: 2 for k in BINARY | {OpKind.MATMUL, OpKind.ACCUM_RESCALED_SUM}})
_ARITY.update({k: 1 for k in ACCUMULATORS - {OpKind.ACCUM_RESCALED_SUM}})
_ARITY.update({OpKind.SELECT: 3, OpKind.CONSTANT: 0, OpKind.IOTA: 0})


# attributes a kind may carry beyond its required ones: a matmul's ``precision``, the user's explicit
# precision (a pair of ``jax.lax.Precision`` names, or ("algorithm", a ``DotAlgorithmPreset`` name)),
# kept for the code that lowers the op back to XLA; absent where the user left the default
_OPTIONAL_ATTRS: dict[OpKind, frozenset[str]] = {OpKind.MATMUL: frozenset({"precision"})}


def required_attrs(kind: OpKind) -> frozenset[str]:
    return _ATTRS.get(kind, frozenset())


def optional_attrs(kind: OpKind) -> frozenset[str]:
    return _OPTIONAL_ATTRS.get(kind, frozenset())


def arity(kind: OpKind) -> int | None:
    """Number of inputs, or None for variadic ops (concat, custom kernels)."""
    return _ARITY.get(kind)


@dataclasses.dataclass(frozen=True, slots=True)
class Attrs:
    """Immutable, hashable op attributes (sorted name/value pairs)."""

    items: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(mapping: Mapping[str, Any] | None = None, **kwargs: Any) -> "Attrs":
        merged = dict(mapping or {}, **kwargs)
        return Attrs(tuple(sorted((k, _freeze(v)) for k, v in merged.items())))

    def __getitem__(self, name: str) -> Any:
        for k, v in self.items:
            if k == name:
                return v
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def keys(self) -> set[str]:
        return {k for k, _ in self.items}

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items)

    def __str__(self) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in self.items)


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Mono):
        return normalize(value)
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_fmt(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, DType):
        return value.value
    return str(value)


# ---------------------------------------------------------------------------------------------
# shape inference


def broadcast_shapes(shapes: Sequence[tuple[Size, ...]], what: str) -> tuple[Size, ...]:
    ranks = {len(s) for s in shapes}
    if len(ranks) != 1:
        raise IRError(f"{what}: operands must have equal rank, got shapes {_shapes(shapes)}")
    out = []
    for dims in zip(*shapes):
        big = {d for d in dims if d != 1}
        if len(big) > 1:
            raise IRError(f"{what}: dims {list(dims)} are neither equal nor 1 in shapes {_shapes(shapes)}")
        out.append(big.pop() if big else 1)
    return tuple(out)


def _shapes(shapes) -> str:
    return ", ".join("[" + ",".join(map(str, s)) + "]" for s in shapes)


def _check_axes(axes: Iterable[int], rank: int, what: str) -> tuple[int, ...]:
    axes = tuple(axes)
    if any(not 0 <= a < rank for a in axes) or len(set(axes)) != len(axes):
        raise IRError(f"{what}: axes {axes} invalid for rank {rank}")
    return axes


def infer_types(kind: OpKind, attrs: Attrs, inputs: Sequence[TensorType], what: str) -> TensorType:
    """The output type of a predefined op or accumulator; ``what`` names the op in errors."""
    expected = arity(kind)
    if expected is not None and len(inputs) != expected:
        raise IRError(f"{what}: takes {expected} inputs, got {len(inputs)}")
    missing = required_attrs(kind) - attrs.keys()
    if missing:
        raise IRError(f"{what}: missing attributes {sorted(missing)}")
    rule = _RULES.get(kind)
    if rule is None:
        raise IRError(f"{what}: no shape rule for op kind {kind}")
    return rule(attrs, list(inputs), what)


def _dtype_attr(attrs, what) -> DType:
    dtype = attrs["dtype"]
    if not isinstance(dtype, DType):  # a plain "float32" would slip through ``in DType`` on Python 3.12
        raise IRError(f"{what}: dtype attribute must be a DType, got {dtype!r}")
    return dtype


def _source(attrs, inputs, what):
    _dtype_attr(attrs, what)
    if "dimension" in attrs.keys() and not 0 <= attrs["dimension"] < len(attrs["shape"]):
        raise IRError(f"{what}: iota dimension {attrs['dimension']} outside shape {attrs['shape']}")
    return TensorType(attrs["shape"], attrs["dtype"])


def _unary(attrs, inputs, what):
    (x,) = inputs
    if "dtype" in attrs.keys():
        return x.with_dtype(_dtype_attr(attrs, what))
    return x


def _binary(attrs, inputs, what):
    shape = broadcast_shapes([t.shape for t in inputs], what)
    dtypes = {t.dtype for t in inputs}
    if len(dtypes) != 1:
        raise IRError(f"{what}: operand dtypes differ: {sorted(d.value for d in dtypes)}")
    return TensorType(shape, dtypes.pop())


def _compare(attrs, inputs, what):
    return _binary(attrs, inputs, what).with_dtype(DType.BOOL)


def _select(attrs, inputs, what):
    pred, on_false, on_true = inputs
    if pred.dtype != DType.BOOL:
        raise IRError(f"{what}: predicate must be bool, got {pred.dtype.value}")
    value = _binary(attrs, [on_false, on_true], what)
    return TensorType(broadcast_shapes([pred.shape, value.shape], what), value.dtype)


def _reduce(attrs, inputs, what):
    (x,) = inputs
    axes = _check_axes(attrs["axes"], x.rank, what)
    return x.with_shape(1 if i in axes else d for i, d in enumerate(x.shape))


def _matmul(attrs, inputs, what):
    a, b = inputs
    if a.rank < 2 or a.rank != b.rank:
        raise IRError(f"{what}: operands need equal rank >= 2, got {a} and {b}")
    if a.shape[-1] != b.shape[-2]:
        raise IRError(f"{what}: contracting dims differ: {a.shape[-1]} vs {b.shape[-2]} ({a} @ {b})")
    if a.dtype != b.dtype:
        raise IRError(f"{what}: operand dtypes differ: {a.dtype.value} vs {b.dtype.value}")
    batch = broadcast_shapes([a.shape[:-2], b.shape[:-2]], what)
    return TensorType(batch + (a.shape[-2], b.shape[-1]), a.dtype)


def _broadcast(attrs, inputs, what):
    (x,) = inputs
    shape = tuple(attrs["shape"])
    if len(shape) != x.rank or any(d != 1 and d != s for d, s in zip(x.shape, shape)):
        raise IRError(f"{what}: cannot broadcast {x} to [{','.join(map(str, shape))}]")
    return x.with_shape(shape)


def _reshape(attrs, inputs, what):
    (x,) = inputs
    out = x.with_shape(attrs["shape"])
    if normalize(out.num_elements) != normalize(x.num_elements):
        raise IRError(f"{what}: cannot reshape {x} ({x.num_elements} elements) to {out}")
    return out


def _transpose(attrs, inputs, what):
    (x,) = inputs
    perm = tuple(attrs["perm"])
    if sorted(perm) != list(range(x.rank)):
        raise IRError(f"{what}: perm {perm} is not a permutation of rank {x.rank}")
    return x.with_shape(x.shape[p] for p in perm)


def _concat(attrs, inputs, what):
    if not inputs:
        raise IRError(f"{what}: needs at least one input")
    axis = attrs["axis"]
    first = inputs[0]
    _check_axes([axis], first.rank, what)
    for t in inputs[1:]:
        if t.rank != first.rank or t.dtype != first.dtype or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis):
            raise IRError(f"{what}: operands {first} and {t} do not match off axis {axis}")
    total: Size = 0
    for t in inputs:
        if isinstance(total, int) and isinstance(t.shape[axis], int):
            total += t.shape[axis]
        else:
            raise IRError(f"{what}: concat along a symbolic dim is not supported")
    return first.with_shape(total if i == axis else d for i, d in enumerate(first.shape))


def _slice(attrs, inputs, what):
    (x,) = inputs
    start, limit = tuple(attrs["start"]), tuple(attrs["limit"])
    if len(start) != x.rank or len(limit) != x.rank:
        raise IRError(f"{what}: start/limit must have rank {x.rank}")
    shape = []
    for s, l, d in zip(start, limit, x.shape):
        if not (isinstance(s, int) and isinstance(l, int)) or not 0 <= s <= l or (isinstance(d, int) and l > d):
            raise IRError(f"{what}: slice [{s}:{l}] invalid for dim {d}")
        shape.append(l - s)
    return x.with_shape(shape)


def _accum(attrs, inputs, what):
    return inputs[0]


def _rescaled_sum(attrs, inputs, what):
    value, log_scale = inputs
    broadcast_shapes([value.shape, log_scale.shape], what)
    if broadcast_shapes([value.shape, log_scale.shape], what) != value.shape:
        raise IRError(f"{what}: log_scale {log_scale} must broadcast to value {value}")
    return value


_RULES = {OpKind.CONSTANT: _source, OpKind.IOTA: _source, OpKind.SELECT: _select, OpKind.MATMUL: _matmul,
          OpKind.BROADCAST: _broadcast, OpKind.RESHAPE: _reshape, OpKind.TRANSPOSE: _transpose,
          OpKind.CONCAT: _concat, OpKind.SLICE: _slice, OpKind.ACCUM_RESCALED_SUM: _rescaled_sum}
_RULES.update({k: _unary for k in UNARY})
_RULES.update({k: _binary for k in BINARY - COMPARISONS})
_RULES.update({k: _compare for k in COMPARISONS})
_RULES.update({k: _reduce for k in REDUCTIONS})
_RULES.update({k: _accum for k in ACCUMULATORS - {OpKind.ACCUM_RESCALED_SUM}})


def element_count(t: TensorType) -> Size:
    return mul(*t.shape)
