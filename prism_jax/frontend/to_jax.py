"""IR ops evaluated with JAX (``jax.lax``/``jnp``): how IR code outside regions runs, and the JAX
reference of a region (used for XLA fallbacks and for the backward pass of kernels)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prism_jax.ir import Attrs, IRError, KernelGraph, OpKind, TensorType, constant_value, numpy_dtype


def jax_dtype(t: TensorType) -> Any:
    return numpy_dtype(t.dtype)


def _iota(attrs: Attrs, args, t: TensorType):
    return jax.lax.broadcasted_iota(jax_dtype(t), tuple(t.shape), attrs["dimension"])


def _slice(attrs: Attrs, args, t):
    return jax.lax.slice(args[0], tuple(attrs["start"]), tuple(attrs["limit"]))


_UNARY: dict[OpKind, Callable] = {
    OpKind.NEG: jnp.negative, OpKind.EXP: jnp.exp, OpKind.LOG: jnp.log, OpKind.SQRT: jnp.sqrt,
    OpKind.RSQRT: jax.lax.rsqrt, OpKind.TANH: jnp.tanh, OpKind.LOGISTIC: jax.nn.sigmoid,
    OpKind.SQUARE: jnp.square, OpKind.RECIPROCAL: jnp.reciprocal, OpKind.ABS: jnp.abs,
    OpKind.NOT: jnp.logical_not,
}
_BINARY: dict[OpKind, Callable] = {
    OpKind.ADD: jnp.add, OpKind.SUB: jnp.subtract, OpKind.MUL: jnp.multiply, OpKind.DIV: jnp.divide,
    OpKind.MAX: jnp.maximum, OpKind.MIN: jnp.minimum, OpKind.POW: jnp.power, OpKind.AND: jnp.logical_and,
    OpKind.OR: jnp.logical_or, OpKind.LT: jnp.less, OpKind.LE: jnp.less_equal, OpKind.GT: jnp.greater,
    OpKind.GE: jnp.greater_equal, OpKind.EQ: jnp.equal, OpKind.NE: jnp.not_equal,
}
_OTHER: dict[OpKind, Callable] = {
    OpKind.CONSTANT: lambda a, args, t: jnp.full(t.shape, constant_value(a["value"]), jax_dtype(t)),
    OpKind.IOTA: _iota,
    OpKind.INTEGER_POW: lambda a, args, t: jax.lax.integer_pow(args[0], a["exponent"]),
    OpKind.CONVERT: lambda a, args, t: args[0].astype(jax_dtype(t)),
    OpKind.SELECT: lambda a, args, t: jnp.where(args[0], args[2], args[1]),
    OpKind.REDUCE_SUM: lambda a, args, t: jnp.sum(args[0], axis=tuple(a["axes"]), keepdims=True),
    OpKind.REDUCE_MAX: lambda a, args, t: jnp.max(args[0], axis=tuple(a["axes"]), keepdims=True),
    OpKind.BROADCAST: lambda a, args, t: jnp.broadcast_to(args[0], t.shape),
    OpKind.RESHAPE: lambda a, args, t: jnp.reshape(args[0], t.shape),
    OpKind.TRANSPOSE: lambda a, args, t: jnp.transpose(args[0], a["perm"]),
    OpKind.CONCAT: lambda a, args, t: jnp.concatenate(args, axis=a["axis"]),
    OpKind.SLICE: _slice,
}


# The precision of a reference's matmuls: a float32 reference to check kernels against (GPUs default to
# TF32 passes). Code that runs as the user's own (a region left to XLA, equations outside regions)
# uses USER_PRECISION, what the user's jax.jit program gets: the default (or
# jax_default_matmul_precision), or a dot's own precision where the user named one (the matmul's
# ``precision`` attribute); XLA:CPU compiles HIGHEST dots to slower code.
REFERENCE_PRECISION = jax.lax.Precision.HIGHEST
USER_PRECISION = None


def apply_op(kind: OpKind, attrs: Attrs, args: Sequence[Any], out_type: TensorType,
             precision: Any = REFERENCE_PRECISION) -> Any:
    """Evaluate one predefined IR op with JAX (matmuls at ``precision``; at USER_PRECISION a matmul the
    user gave a precision of its own keeps it)."""
    if kind is OpKind.MATMUL:
        return jnp.matmul(args[0], args[1], precision=_matmul_precision(attrs, precision))
    if kind in _UNARY:
        return _UNARY[kind](args[0])
    if kind in _BINARY:
        return _BINARY[kind](args[0], args[1])
    if kind in _OTHER:
        return _OTHER[kind](attrs, args, out_type)
    raise IRError(f"{kind} has no JAX form (custom kernels run through codegen)")


def _matmul_precision(attrs: Attrs, precision: Any) -> Any:
    """``precision``, or at USER_PRECISION the matmul's own (its ``precision`` attribute, set where the
    user's dot named one: ``jnp.dot(.., precision=HIGHEST)`` stays HIGHEST where XLA runs it)."""
    own = attrs.get("precision") if precision is USER_PRECISION else None
    if own is None:
        return precision
    if own[0] == "algorithm":
        return jax.lax.DotAlgorithmPreset[own[1]]
    return tuple(jax.lax.Precision(name) for name in own)


def kernel_graph_fn(graph: KernelGraph, precision: Any = REFERENCE_PRECISION) -> Callable[..., list[Any]]:
    """A JAX function computing a kernel graph of predefined ops (traceable: jit/grad/vmap work), its
    matmuls at ``precision`` (see REFERENCE_PRECISION)."""

    def fn(*args: Any) -> list[Any]:
        env = dict(zip(graph.inputs, args))
        for op in graph.ops:
            env[op.outputs[0]] = apply_op(op.kind, op.attrs, [env[v] for v in op.inputs], graph.values[op.outputs[0]],
                                          precision)
        return [env[v] for v in graph.outputs]

    return fn


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(jax.device_get(x))
