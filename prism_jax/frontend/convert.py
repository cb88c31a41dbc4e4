"""jaxpr → flat program: nested calls inlined, primitives converted by a rule table.

Each rule emits IR ops for one equation. A rule that cannot express an equation raises
:class:`Unsupported`; its partial output is rolled back and the equation is kept as an opaque node
(a region boundary), never an error.
"""

from __future__ import annotations

import ast
import logging
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jcore

from prism_jax.frontend.program import FlatProgram, IrNode, LiteralValue, OpaqueNode, ScanNode
from prism_jax.ir import Attrs, DType, IRError, OpKind, TensorType, infer_types

log = logging.getLogger(__name__)


class Unsupported(Exception):
    """This equation has no IR form; it becomes an opaque node."""


# primitives whose sub-jaxpr is inlined (the param holding it, in the order tried)
_CALL_PARAMS = {
    "jit": ("jaxpr",), "pjit": ("jaxpr",), "closed_call": ("call_jaxpr",), "core_call": ("call_jaxpr",),
    "remat": ("jaxpr",), "checkpoint": ("jaxpr",), "custom_jvp_call": ("call_jaxpr",),
    "custom_vjp_call": ("call_jaxpr", "fun_jaxpr"), "custom_vjp_call_jaxpr": ("fun_jaxpr", "call_jaxpr"),
}
_IDENTITY = frozenset({"copy", "copy_p", "stop_gradient", "optimization_barrier_identity"})


def ir_dtype(dtype: Any) -> DType:
    try:
        return DType.from_name(np.dtype(dtype).name)
    except (ValueError, TypeError):
        raise Unsupported(f"dtype {dtype} has no IR form") from None


def ir_type(aval: Any) -> TensorType | None:
    shape = getattr(aval, "shape", None)
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    try:
        return TensorType(tuple(shape), ir_dtype(aval.dtype))
    except Unsupported:
        return None


class Converter:
    """Builds one :class:`FlatProgram`; ``emit`` is what rules call."""

    def __init__(self, name: str) -> None:
        self.program = FlatProgram(name, {}, {}, [], {}, [], [])
        self._next = 0

    # -- values --------------------------------------------------------------------------------

    def new_value(self, t: TensorType | None, aval: Any = None) -> int:
        v = self._next
        self._next += 1
        self.program.types[v] = t
        self.program.avals[v] = aval
        return v

    def type(self, v: int) -> TensorType:
        t = self.program.types[v]
        if t is None:
            raise Unsupported(f"value %{v} has no IR type")
        return t

    def emit(self, kind: OpKind, *inputs: int, **attrs: Any) -> int:
        attr = Attrs.of(attrs)
        try:
            out_type = infer_types(kind, attr, [self.type(v) for v in inputs], str(kind))
        except IRError as e:
            raise Unsupported(str(e)) from None
        out = self.new_value(out_type)
        self.program.nodes.append(IrNode(kind, attr, tuple(inputs), out))
        return out

    def constant(self, value: Any, rank: int, dtype: DType) -> int:
        return self.emit(OpKind.CONSTANT, value=value, shape=(1,) * rank, dtype=dtype)

    # -- jaxprs --------------------------------------------------------------------------------

    def convert_top(self, jaxpr: Any) -> FlatProgram:
        env: dict[Any, int] = {}
        for var in jaxpr.invars:
            env[var] = self.new_value(ir_type(var.aval), var.aval)
            self.program.inputs.append(env[var])
        self._bind_consts(jaxpr, env)
        self.inline(jaxpr, env)
        self.program.outputs = [self._operand(env, x, IRError) for x in jaxpr.outvars]
        return self.program

    def _bind_consts(self, jaxpr: Any, env: dict, consts: Any = None) -> None:
        """Scalar constants become CONSTANT ops; arrays stay closed-over values (region inputs)."""
        for var, value in zip(jaxpr.constvars, getattr(jaxpr, "consts", ()) if consts is None else consts):
            array = np.asarray(value)
            t = ir_type(var.aval)
            if t is not None and array.ndim == 0:
                env[var] = self.constant(array.item(), 0, t.dtype)
            else:
                env[var] = self.new_value(t, var.aval)
                self.program.consts[env[var]] = array

    def inline(self, jaxpr: Any, env: dict) -> None:
        """Convert every equation of ``jaxpr`` (whose invars/constvars are bound in ``env``)."""
        for eqn in jaxpr.eqns:
            self._equation(eqn, env)

    def _equation(self, eqn: Any, env: dict) -> None:
        name = eqn.primitive.name
        if name in _CALL_PARAMS:
            sub = next((eqn.params[p] for p in _CALL_PARAMS[name] if p in eqn.params), None)
            if sub is not None:
                self._inline_call(sub, eqn, env)
                return
        if name == "scan":
            self._scan(eqn, env)
            return
        rule = RULES.get(name)
        mark = len(self.program.nodes)
        if rule is not None:
            try:
                ins = [self._operand(env, x) for x in eqn.invars]
                outs = rule(self, eqn, ins)
                for var, v in zip(eqn.outvars, outs):
                    env[var] = v
                    self.program.avals[v] = var.aval
                return
            except Unsupported as e:
                reason = f"{name}: {e}"
                del self.program.nodes[mark:]
        else:
            reason = f"no rule for primitive '{name}'"
        self._opaque(eqn, env, reason)

    def _operand(self, env: dict, x: Any, error: type[Exception] = Unsupported) -> int:
        """The value of a jaxpr operand; a literal becomes a scalar CONSTANT op."""
        if isinstance(x, jcore.Literal):
            t = ir_type(x.aval)
            if t is None:
                raise error(f"literal {x} has no IR type")
            return self.constant(np.asarray(x.val).item(), 0, t.dtype)
        return env[x]

    def _verbatim_operands(self, eqn: Any, env: dict) -> tuple[tuple, tuple[int, ...]]:
        """Operands and fresh output values of an equation that JAX evaluates as written."""
        ins = tuple(LiteralValue(x.val) if isinstance(x, jcore.Literal) else env[x] for x in eqn.invars)
        outs = []
        for var in eqn.outvars:
            env[var] = self.new_value(ir_type(var.aval), var.aval)
            outs.append(env[var])
        return ins, tuple(outs)

    def _opaque(self, eqn: Any, env: dict, reason: str) -> None:
        ins, outs = self._verbatim_operands(eqn, env)
        self.program.nodes.append(OpaqueNode(eqn, ins, outs, reason))
        self.program.unsupported.append(reason)
        log.debug("region boundary at %s", reason)

    def _inline_call(self, sub: Any, eqn: Any, env: dict) -> None:
        inner = getattr(sub, "jaxpr", sub)  # tolerate ClosedJaxpr-like wrappers
        if not hasattr(inner, "eqns"):
            inner = sub
        inner_env: dict = {}
        consts = getattr(sub, "consts", getattr(inner, "consts", ()))
        invars = list(inner.invars)
        operands = list(eqn.invars)
        if len(operands) != len(invars):  # custom_jvp/vjp calls may pass extra leading operands
            operands = operands[len(operands) - len(invars):]
        for var, x in zip(invars, operands):
            inner_env[var] = self._operand(env, x)
        self._bind_consts(inner, inner_env, consts)
        self.inline(inner, inner_env)
        for var, x in zip(eqn.outvars, inner.outvars):
            env[var] = self._operand(inner_env, x, IRError)

    def _scan(self, eqn: Any, env: dict) -> None:
        counts = _scan_counts(eqn)
        body_jaxpr = eqn.params.get("jaxpr")
        if counts is None or body_jaxpr is None:
            self._opaque(eqn, env, "scan: parameters of this JAX version not understood")
            return
        body = Converter(f"{self.program.name}.scan_body").convert_top(body_jaxpr)
        ins, outs = self._verbatim_operands(eqn, env)
        self.program.nodes.append(ScanNode(body, eqn, counts[0], counts[1], ins, outs))


def _scan_counts(eqn: Any) -> tuple[int, int] | None:
    """(num_consts, num_carry) of a scan, from jax 0.11's ``ft_in`` or older ``num_consts``/``num_carry``."""
    params = eqn.params
    if "num_consts" in params and "num_carry" in params:
        return int(params["num_consts"]), int(params["num_carry"])
    try:
        groups = ast.literal_eval(repr(params["ft_in"]))
        consts, carry = groups[0], groups[1]
        return len(consts), len(carry)
    except (KeyError, ValueError, SyntaxError, TypeError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# the rule table

Rule = Callable[[Converter, Any, Sequence[int]], Sequence[int]]


def _same_rank(c: Converter, a: int, b: int) -> tuple[int, int]:
    """Rank-0 operands (scalar literals) become all-1 tensors of the other operand's rank."""
    ta, tb = c.type(a), c.type(b)
    if ta.rank == tb.rank:
        return a, b
    if ta.rank == 0:
        return c.emit(OpKind.RESHAPE, a, shape=(1,) * tb.rank), b
    if tb.rank == 0:
        return a, c.emit(OpKind.RESHAPE, b, shape=(1,) * ta.rank)
    raise Unsupported(f"operand ranks {ta.rank} and {tb.rank} differ")


def _unary(kind: OpKind) -> Rule:
    return lambda c, eqn, ins: [c.emit(kind, ins[0])]


def _binary(kind: OpKind) -> Rule:
    def rule(c, eqn, ins):
        return [c.emit(kind, *_same_rank(c, ins[0], ins[1]))]
    return rule


def _logical(kind: OpKind) -> Rule:
    def rule(c, eqn, ins):
        if any(c.type(v).dtype != DType.BOOL for v in ins):
            raise Unsupported("bitwise op on integers")
        return [c.emit(kind, *(_same_rank(c, *ins) if len(ins) == 2 else ins))]
    return rule


def _identity(c, eqn, ins):
    return [ins[0]]


def _integer_pow(c, eqn, ins):
    y = int(eqn.params["y"])
    if y == 1:
        return [ins[0]]
    if y == 2:
        return [c.emit(OpKind.SQUARE, ins[0])]
    return [c.emit(OpKind.INTEGER_POW, ins[0], exponent=y)]


def _convert(c, eqn, ins):
    dtype = ir_dtype(eqn.params["new_dtype"])
    if c.type(ins[0]).dtype == dtype:
        return [ins[0]]
    return [c.emit(OpKind.CONVERT, ins[0], dtype=dtype)]


def _reduce(kind: OpKind) -> Rule:
    def rule(c, eqn, ins):
        x = ins[0]
        axes = tuple(sorted(int(a) for a in eqn.params["axes"]))
        if not axes:
            return [x]
        kept = c.emit(kind, x, axes=axes)
        shape = tuple(d for i, d in enumerate(c.type(x).shape) if i not in axes)
        return [c.emit(OpKind.RESHAPE, kept, shape=shape)]
    return rule


def _broadcast_in_dim(c, eqn, ins):
    x = ins[0]
    shape = tuple(int(d) for d in eqn.params["shape"])
    bdims = tuple(int(d) for d in eqn.params["broadcast_dimensions"])
    if list(bdims) != sorted(bdims):
        order = sorted(range(len(bdims)), key=lambda i: bdims[i])
        x = c.emit(OpKind.TRANSPOSE, x, perm=tuple(order))
        bdims = tuple(sorted(bdims))
    src = c.type(x).shape
    expanded = [1] * len(shape)
    for i, d in enumerate(bdims):
        expanded[d] = src[i]
    if len(src) != len(shape):
        x = c.emit(OpKind.RESHAPE, x, shape=tuple(expanded))
    if tuple(expanded) != shape:
        x = c.emit(OpKind.BROADCAST, x, shape=shape)
    return [x]


def _reshape(c, eqn, ins):
    if eqn.params.get("dimensions") is not None:
        raise Unsupported("reshape with dimensions")
    return [c.emit(OpKind.RESHAPE, ins[0], shape=tuple(int(d) for d in eqn.params["new_sizes"]))]


def _squeeze(c, eqn, ins):
    dims = {int(d) % max(c.type(ins[0]).rank, 1) for d in eqn.params["dimensions"]}
    shape = tuple(d for i, d in enumerate(c.type(ins[0]).shape) if i not in dims)
    return [c.emit(OpKind.RESHAPE, ins[0], shape=shape)]


def _transpose(c, eqn, ins):
    return [c.emit(OpKind.TRANSPOSE, ins[0], perm=tuple(int(p) for p in eqn.params["permutation"]))]


def _select_n(c, eqn, ins):
    pred, *cases = ins
    if len(cases) != 2 or c.type(pred).dtype != DType.BOOL:
        raise Unsupported("select_n with an integer predicate or more than two cases")
    on_false, on_true = _same_rank(c, cases[0], cases[1])
    rank = c.type(on_false).rank
    if c.type(pred).rank != rank:
        pred = _same_rank(c, pred, on_false)[0]
    return [c.emit(OpKind.SELECT, pred, on_false, on_true)]


def _iota(c, eqn, ins):
    return [c.emit(OpKind.IOTA, shape=tuple(int(d) for d in eqn.params["shape"]),
                   dimension=int(eqn.params["dimension"]), dtype=ir_dtype(eqn.params["dtype"]))]


def _split(c, eqn, ins):
    x, axis = ins[0], int(eqn.params["axis"])
    shape = c.type(x).shape
    outs, start = [], 0
    for size in eqn.params["sizes"]:
        lo = [0] * len(shape)
        hi = list(shape)
        lo[axis], hi[axis] = start, start + int(size)
        outs.append(c.emit(OpKind.SLICE, x, start=tuple(lo), limit=tuple(hi)))
        start += int(size)
    return outs


def _slice(c, eqn, ins):
    strides = eqn.params.get("strides")
    if strides is not None and any(int(s) != 1 for s in strides):
        raise Unsupported("strided slice")
    return [c.emit(OpKind.SLICE, ins[0], start=tuple(int(s) for s in eqn.params["start_indices"]),
                   limit=tuple(int(s) for s in eqn.params["limit_indices"]))]


def _concatenate(c, eqn, ins):
    return [c.emit(OpKind.CONCAT, *ins, axis=int(eqn.params["dimension"]))]


def _dot_general(c, eqn, ins):
    """Any dot_general → transposes/reshapes around one ``[B.., M, K] @ [B.., K, N]`` matmul."""
    lhs, rhs = ins
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = (tuple(int(d) for d in x) for x in (lc, rc, lb, rb))
    out_dtype = eqn.params.get("preferred_element_type")
    lt, rt = c.type(lhs), c.type(rhs)
    if out_dtype is not None and ir_dtype(out_dtype) != lt.dtype:
        target = ir_dtype(out_dtype)
        lhs, rhs = c.emit(OpKind.CONVERT, lhs, dtype=target), c.emit(OpKind.CONVERT, rhs, dtype=target)
    elif lt.dtype != rt.dtype:
        raise Unsupported("dot_general of mixed dtypes")
    lf = tuple(d for d in range(lt.rank) if d not in lc and d not in lb)
    rf = tuple(d for d in range(rt.rank) if d not in rc and d not in rb)
    batch = tuple(lt.shape[d] for d in lb)
    m_dims = tuple(lt.shape[d] for d in lf)
    n_dims = tuple(rt.shape[d] for d in rf)
    k = int(np.prod([lt.shape[d] for d in lc], dtype=np.int64))
    m, n = int(np.prod(m_dims, dtype=np.int64)), int(np.prod(n_dims, dtype=np.int64))
    a = c.emit(OpKind.TRANSPOSE, lhs, perm=lb + lf + lc)
    a = c.emit(OpKind.RESHAPE, a, shape=batch + (m, k))
    b = c.emit(OpKind.TRANSPOSE, rhs, perm=rb + rc + rf)
    b = c.emit(OpKind.RESHAPE, b, shape=batch + (k, n))
    if not lc:  # no contraction: an outer (elementwise) product
        a = c.emit(OpKind.RESHAPE, a, shape=batch + (m, 1))
        b = c.emit(OpKind.RESHAPE, b, shape=batch + (1, n))
        out = c.emit(OpKind.MUL, a, b)
    else:
        precision = _precision_attr(eqn.params.get("precision"))
        out = c.emit(OpKind.MATMUL, a, b, **({"precision": precision} if precision else {}))
    return [c.emit(OpKind.RESHAPE, out, shape=batch + m_dims + n_dims)]


def _precision_attr(precision: Any) -> tuple[str, str] | None:
    """A dot's explicit precision as a matmul attribute (see ir.ops._OPTIONAL_ATTRS); None for the
    default. Anything else (a custom ``DotAlgorithm``) keeps the equation as the user wrote it."""
    if precision is None:
        return None
    if isinstance(precision, jax.lax.DotAlgorithmPreset):
        return None if precision == jax.lax.DotAlgorithmPreset.DEFAULT else ("algorithm", precision.name)
    if isinstance(precision, tuple) and len(precision) == 2 and all(
            p is None or isinstance(p, jax.lax.Precision) for p in precision):
        names = tuple("default" if p is None else p.name.lower() for p in precision)
        return None if names == ("default", "default") else names
    raise Unsupported(f"dot_general with precision {precision!r}")


RULES: dict[str, Rule] = {
    "neg": _unary(OpKind.NEG), "exp": _unary(OpKind.EXP), "log": _unary(OpKind.LOG),
    "sqrt": _unary(OpKind.SQRT), "rsqrt": _unary(OpKind.RSQRT), "tanh": _unary(OpKind.TANH),
    "logistic": _unary(OpKind.LOGISTIC), "square": _unary(OpKind.SQUARE), "abs": _unary(OpKind.ABS),
    "integer_pow": _integer_pow, "convert_element_type": _convert,
    "add": _binary(OpKind.ADD), "sub": _binary(OpKind.SUB), "mul": _binary(OpKind.MUL),
    "div": _binary(OpKind.DIV), "max": _binary(OpKind.MAX), "min": _binary(OpKind.MIN),
    "pow": _binary(OpKind.POW),
    "lt": _binary(OpKind.LT), "le": _binary(OpKind.LE), "gt": _binary(OpKind.GT), "ge": _binary(OpKind.GE),
    "eq": _binary(OpKind.EQ), "ne": _binary(OpKind.NE),
    "and": _logical(OpKind.AND), "or": _logical(OpKind.OR), "not": _logical(OpKind.NOT),
    "select_n": _select_n, "iota": _iota,
    "reduce_sum": _reduce(OpKind.REDUCE_SUM), "reduce_max": _reduce(OpKind.REDUCE_MAX),
    "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "squeeze": _squeeze,
    "transpose": _transpose, "dot_general": _dot_general,
    "split": _split, "slice": _slice, "concatenate": _concatenate,
}
RULES.update({name: _identity for name in _IDENTITY})
