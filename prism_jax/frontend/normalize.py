"""Canonicalization passes on the flat program, so one computation gives one region however it was
written: identity layout ops vanish, reshape/transpose/broadcast chains compose, broadcasts feeding
elementwise ops become implicit, ``x*x`` is ``square(x)``, duplicates are merged, dead ops dropped."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from prism_jax.frontend.program import FlatProgram, IrNode, LiteralValue, ScanNode
from prism_jax.ir.ops import REDUCTIONS
from prism_jax.ir import (ELEMENTWISE, Attrs, DType, Interpreter, IRError, Mono, Op, OpKind, TensorType,
                          broadcast_shapes, numpy_dtype)

Pass = Callable[[FlatProgram, IrNode, dict[int, IrNode]], "int | IrNode | None"]


def normalize(program: FlatProgram, max_rounds: int = 20) -> FlatProgram:
    for _ in range(max_rounds):
        changed = _rewrite_round(program)
        changed |= _cse(program)
        changed |= _dce(program)
        if not changed:
            break
    for node in program.nodes:
        if isinstance(node, ScanNode):
            normalize(node.body, max_rounds)
    return program


def _rewrite_round(program: FlatProgram) -> bool:
    """Apply the local rewrites once over all IR nodes; aliases are substituted as we go."""
    alias: dict[int, int] = {}
    defs: dict[int, IrNode] = {}
    changed = False
    new_nodes = []
    for node in program.nodes:
        node.inputs = tuple(_resolve(alias, v) for v in node.inputs)
        if isinstance(node, IrNode):
            for rewrite in _REWRITES:
                result = rewrite(program, node, defs)
                if result is None:
                    continue
                changed = True
                if isinstance(result, int):
                    alias[node.output] = _resolve(alias, result)
                    node = None
                    break
                if isinstance(result, list):  # new nodes before the one that keeps the output
                    for extra in result[:-1]:
                        defs[extra.output] = extra
                        new_nodes.append(extra)
                    result = result[-1]
                node = result
            if node is None:
                continue
            defs[node.output] = node
        new_nodes.append(node)
    program.nodes = new_nodes
    program.outputs = [_resolve(alias, v) for v in program.outputs]
    return changed


def _resolve(alias: dict[int, int], v):
    if isinstance(v, LiteralValue):
        return v
    while v in alias:
        v = alias[v]
    return v


def _drop_identity(program, node, defs):
    t_in = program.types.get(node.inputs[0]) if node.inputs else None
    t_out = program.types[node.output]
    if node.kind in (OpKind.RESHAPE, OpKind.BROADCAST, OpKind.CONVERT) and t_in == t_out:
        return node.inputs[0]
    if node.kind == OpKind.TRANSPOSE and tuple(node.attrs["perm"]) == tuple(range(t_out.rank)):
        return node.inputs[0]
    return None


def _unit_transpose(program, node, defs):
    """A transpose that moves only size-1 dims (the others keep their order) is a reshape: the same
    elements in the same order. Attention's [b, 1, h, d] → [b, h, 1, d] at decode is one; as a reshape
    it is a free view the search handles at a region's edge, and composes with the reshapes around it."""
    if node.kind != OpKind.TRANSPOSE:
        return None
    shape = program.types[node.inputs[0]].shape
    moved = [p for p in node.attrs["perm"] if shape[p] != 1]
    if moved != sorted(moved):
        return None
    return IrNode(OpKind.RESHAPE, Attrs.of(shape=program.types[node.output].shape), node.inputs, node.output)


def _compose_layout(program, node, defs):
    """reshape∘reshape, transpose∘transpose, broadcast∘broadcast, reshape∘(unit-dim broadcast)."""
    src = defs.get(node.inputs[0]) if node.inputs else None
    if src is None or src.kind != node.kind:
        return None
    if node.kind in (OpKind.RESHAPE, OpKind.BROADCAST):
        return IrNode(node.kind, node.attrs, src.inputs, node.output)
    if node.kind == OpKind.TRANSPOSE:
        inner, outer = src.attrs["perm"], node.attrs["perm"]
        return IrNode(node.kind, Attrs.of(perm=tuple(inner[p] for p in outer)), src.inputs, node.output)
    return None


def _implicit_broadcast(program, node, defs):
    """An explicit broadcast into an elementwise op is dropped when the op's result keeps its shape."""
    if node.kind not in ELEMENTWISE or node.kind in (OpKind.CONVERT,) or len(node.inputs) < 2:
        return None
    inputs = list(node.inputs)
    out_shape = program.types[node.output].shape
    for i, v in enumerate(inputs):
        src = defs.get(v)
        if src is None or src.kind != OpKind.BROADCAST:
            continue
        trial = inputs[:i] + [src.inputs[0]] + inputs[i + 1:]
        try:
            shape = broadcast_shapes([program.types[x].shape for x in trial], "broadcast folding")
        except IRError:
            continue
        if shape == out_shape:
            return IrNode(node.kind, node.attrs, tuple(trial), node.output)
    return None


def _square(program, node, defs):
    if node.kind == OpKind.MUL and node.inputs[0] == node.inputs[1]:
        return IrNode(OpKind.SQUARE, Attrs(), (node.inputs[0],), node.output)
    return None


def _constant_value(defs, v):
    src = defs.get(v)
    if src is not None and src.kind == OpKind.CONSTANT and not isinstance(src.attrs["value"], Mono):
        return src.attrs["value"]
    return None


def _fold_constants(program, node, defs):
    """An elementwise or layout op on fill constants is a fill constant."""
    if node.kind not in _FOLDABLE or not node.inputs:
        return None
    values = [_constant_value(defs, v) for v in node.inputs]
    if any(v is None for v in values):
        return None
    out_type = program.types[node.output]
    if node.kind in ELEMENTWISE:
        args = [np.asarray(v, numpy_dtype(program.types[x].dtype)) for v, x in zip(values, node.inputs)]
        with np.errstate(all="ignore"):
            value = _EVAL_SCALAR[node.kind](args)
    else:
        value = values[0]
    value = np.asarray(value).astype(numpy_dtype(out_type.dtype)).item()
    return IrNode(OpKind.CONSTANT, Attrs.of(value=value, shape=out_type.shape, dtype=out_type.dtype), (),
                  node.output)


def _neutral_operand(program, node, defs):
    """x+0, x-0, x*1, x/1, max(x,-inf), min(x,inf) are x (when the result keeps x's type)."""
    if node.kind not in _NEUTRAL or len(node.inputs) != 2:
        return None
    out_type = program.types[node.output]
    for keep, other in ((0, 1), (1, 0)):
        if other == 0 and node.kind in (OpKind.SUB, OpKind.DIV):
            continue
        value = _constant_value(defs, node.inputs[other])
        if value is not None and value == _NEUTRAL[node.kind] and program.types[node.inputs[keep]] == out_type:
            return node.inputs[keep]
    return None


def _is_unit_reshape(src_shape, dst_shape) -> bool:
    """A reshape that only inserts or removes size-1 dims."""
    return [d for d in src_shape if d != 1] == [d for d in dst_shape if d != 1]


def _sink_unit_reshape(program, node, defs):
    """op(reshape(x), ...) → reshape(op(x, ...)) for unit-dim reshapes, so reshape chains meet and
    cancel: ``sum(x, -1)[:, None] / d`` and ``mean(x, -1, keepdims=True)`` become one form, and a
    softmax computed on a view with an extra unit dim (grouped-query attention) becomes the plain one.
    Elementwise ops qualify when every operand is a constant or a unit-dim reshape inserting the same
    dims; reductions when the reduced dims survive the reshape."""
    if node.kind in REDUCTIONS:
        return _sink_through_reduction(program, node, defs)
    if node.kind not in ELEMENTWISE:
        return None
    return _sink_insertions(program, node, defs) or _sink_one_reshape(program, node, defs)


def _sink_insertions(program, node, defs):
    out_type = program.types[node.output]
    reshaped = {k: defs[v] for k, v in enumerate(node.inputs)
                if v in defs and defs[v].kind == OpKind.RESHAPE
                and _is_unit_reshape(program.types[defs[v].inputs[0]].shape, program.types[v].shape)}
    others = [v for k, v in enumerate(node.inputs) if k not in reshaped]
    if not reshaped or any(_constant_value(defs, u) is None and not _viewable(program, defs, u, out_type)
                           for u in others):
        return None
    widest = max(reshaped, key=lambda k: program.types[reshaped[k].inputs[0]].num_elements)
    src_shape = program.types[reshaped[widest].inputs[0]].shape
    positions = _unit_insertions(src_shape, program.types[node.inputs[widest]].shape)
    if positions is None:
        return None
    for k, src in reshaped.items():  # every operand must drop back to the source rank the same way
        x_shape = program.types[src.inputs[0]].shape
        if len(x_shape) != len(src_shape) or _place(x_shape, positions, len(out_type.shape)) != \
                tuple(program.types[node.inputs[k]].shape):
            return None
    rank = len(src_shape)
    extra, inputs = [], []
    inner_shape = tuple(out_type.shape[p] for p in positions)
    if _place(inner_shape, positions, len(out_type.shape)) != tuple(out_type.shape):
        return None
    for k, u in enumerate(node.inputs):
        if k in reshaped:
            inputs.append(reshaped[k].inputs[0])
        elif _constant_value(defs, u) is not None:
            inputs.append(_constant_of_rank(program, defs, u, rank, extra))
        else:  # an operand from outside the IR (a region input): viewed without the unit dims
            view = program.new_value(program.types[u].with_shape(inner_shape))
            extra.append(IrNode(OpKind.RESHAPE, Attrs.of(shape=inner_shape), (u,), view))
            inputs.append(view)
    inner = program.new_value(out_type.with_shape(inner_shape))
    extra.append(IrNode(node.kind, node.attrs, tuple(inputs), inner))
    return extra + [IrNode(OpKind.RESHAPE, Attrs.of(shape=out_type.shape), (inner,), node.output)]


def _viewable(program, defs, value, out_type: TensorType) -> bool:
    """A value of the op's full shape that no IR op defines (an argument, or an equation the IR does not
    represent): whatever region reads it takes it as an input, where a reshape is a free view. Such an
    operand lets a unit-dim insertion on its partner sink (``x + y.reshape(1, 1, d)`` with ``x`` an
    argument: a residual added to a projection computed in 2-D) without a reshape inside a region."""
    return (not isinstance(value, LiteralValue) and value not in defs and program.types.get(value) is not None
            and program.types[value].shape == out_type.shape)


def _sink_one_reshape(program, node, defs):
    """The single-reshape form (inserting or removing unit dims) with constant other operands. A removal
    off a value no IR op defines stays: that is where :func:`_hoist_unit_removal` puts it (a free view
    of a region input)."""
    out_type = program.types[node.output]
    for k, v in enumerate(node.inputs):
        src = defs.get(v)
        if src is None or src.kind != OpKind.RESHAPE:
            continue
        x_type = program.types[src.inputs[0]]
        if x_type.rank > out_type.rank and src.inputs[0] not in defs:
            continue
        others = [u for j, u in enumerate(node.inputs) if j != k]
        if (not _is_unit_reshape(x_type.shape, out_type.shape) or program.types[v].shape != out_type.shape
                or any(_constant_value(defs, u) is None for u in others)):
            continue
        extra, inputs = [], []
        for j, u in enumerate(node.inputs):
            if j == k:
                inputs.append(src.inputs[0])
                continue
            inputs.append(_constant_of_rank(program, defs, u, x_type.rank, extra))
        inner = program.new_value(out_type.with_shape(x_type.shape))
        extra.append(IrNode(node.kind, node.attrs, tuple(inputs), inner))
        return extra + [IrNode(OpKind.RESHAPE, Attrs.of(shape=out_type.shape), (inner,), node.output)]
    return None


def _constant_of_rank(program, defs, value: int, rank: int, extra: list) -> int:
    """The scalar constant ``value`` re-made with ``rank`` unit dims (its node appended to ``extra``)."""
    const_type = TensorType((1,) * rank, program.types[value].dtype)
    c = program.new_value(const_type)
    extra.append(IrNode(OpKind.CONSTANT, Attrs.of(value=_constant_value(defs, value), shape=const_type.shape,
                                                  dtype=const_type.dtype), (), c))
    return c


def _sink_through_reduction(program, node, defs):
    src = defs.get(node.inputs[0])
    if src is None or src.kind != OpKind.RESHAPE:
        return None
    x_shape = program.types[src.inputs[0]].shape
    dst_shape = program.types[node.inputs[0]].shape
    positions = _unit_insertions(x_shape, dst_shape) if _is_unit_reshape(x_shape, dst_shape) else None
    if positions is None or not set(node.attrs["axes"]) <= set(positions):
        return None
    axes = tuple(sorted(positions.index(a) for a in node.attrs["axes"]))
    out_type = program.types[node.output]
    inner = program.new_value(out_type.with_shape(tuple(1 if i in axes else d for i, d in enumerate(x_shape))))
    return [IrNode(node.kind, Attrs.of(axes=axes), (src.inputs[0],), inner),
            IrNode(OpKind.RESHAPE, Attrs.of(shape=out_type.shape), (inner,), node.output)]


def _hoist_unit_removal(program, node, defs):
    """reshape(op(x, ...)) → op(reshape(x), ...) for a reshape that only removes unit dims, applied to the
    whole chain of elementwise ops and reductions above it at once, down to values no IR op defines
    (region inputs: the reshape becomes a free view), constants and other reshapes (which compose).
    An RMSNorm computed on a [1, 1, d] decode token and viewed as [1, d] for the projection after it
    then runs in 2-D, with no reshape between the norm and the matmul for the search to stop at. Only
    when every value of the chain is read by the chain alone (nothing is computed twice)."""
    if node.kind != OpKind.RESHAPE or node.inputs[0] not in defs:
        return None
    src_shape, dst_shape = program.types[node.inputs[0]].shape, program.types[node.output].shape
    kept = _unit_insertions(dst_shape, src_shape)
    if kept is None or len(kept) == len(src_shape) or defs[node.inputs[0]].kind not in ELEMENTWISE | REDUCTIONS:
        return None
    removed = tuple(sorted(set(range(len(src_shape))) - set(kept)))
    chain: dict[int, tuple[int, ...]] = {}
    if not _removable(program, defs, node.inputs[0], removed, chain) or not _read_by_chain_only(program, node, chain):
        return None
    extra: list[IrNode] = []
    built: dict[tuple[int, tuple[int, ...]], int] = {}
    value = _without_units(program, defs, node.inputs[0], removed, extra, built)
    last = extra.pop()
    return extra + [IrNode(last.kind, last.attrs, last.inputs, node.output)] if last.output == value else None


def _removable(program, defs, value, removed: tuple[int, ...], chain: dict) -> bool:
    """Whether ``value`` can be rebuilt without its unit dims ``removed``; the computed values that would
    be rebuilt go to ``chain`` (value → removed dims)."""
    if isinstance(value, LiteralValue) or value not in defs or defs[value].kind == OpKind.RESHAPE:
        return True
    node, shape = defs[value], program.types[value].shape
    if chain.get(value, removed) != removed or any(shape[d] != 1 for d in removed):
        return False
    if value in chain:
        return True
    if node.kind == OpKind.CONSTANT:
        return _constant_value(defs, value) is not None
    if node.kind in REDUCTIONS:
        if set(node.attrs["axes"]) & set(removed):
            return False
    elif node.kind not in ELEMENTWISE:
        return False
    chain[value] = removed
    return all(isinstance(u, LiteralValue) or program.types[u].rank == len(shape) for u in node.inputs) and \
        all(_removable(program, defs, u, removed, chain) for u in node.inputs)


def _read_by_chain_only(program, node, chain: dict) -> bool:
    if set(chain) & set(program.outputs):
        return False
    return all(not (set(n.inputs) & set(chain)) or (n is node or getattr(n, "output", None) in chain)
               for n in program.nodes)


def _without_units(program, defs, value, removed, extra: list, built: dict) -> int:
    """``value`` without its unit dims ``removed`` (new nodes appended to ``extra`` in order)."""
    if isinstance(value, LiteralValue):
        return value
    key = (value, removed)
    if key in built:
        return built[key]
    t = program.types[value]
    shape = tuple(d for i, d in enumerate(t.shape) if i not in removed)
    node = defs.get(value)
    if node is not None and node.kind == OpKind.CONSTANT:
        out = _constant_of_rank(program, defs, value, len(shape), extra)
    elif node is None or node.kind == OpKind.RESHAPE:
        out = program.new_value(t.with_shape(shape))
        extra.append(IrNode(OpKind.RESHAPE, Attrs.of(shape=shape), (value if node is None else node.inputs[0],), out))
    else:
        inputs = tuple(_without_units(program, defs, u, removed, extra, built) for u in node.inputs)
        attrs = node.attrs
        if node.kind in REDUCTIONS:
            attrs = Attrs.of(**{**attrs.as_dict(), "axes": tuple(a - sum(d < a for d in removed)
                                                                  for a in node.attrs["axes"])})
        out = program.new_value(t.with_shape(shape))
        extra.append(IrNode(node.kind, attrs, inputs, out))
    built[key] = out
    return out


def _unit_insertions(src_shape, dst_shape) -> list[int] | None:
    """For a reshape that only inserts size-1 dims: the dst position of each src dim (matched left to
    right by size); None when it is not such a reshape."""
    if len(dst_shape) < len(src_shape):
        return None
    positions, j = [], 0
    for d in src_shape:
        while j < len(dst_shape) and dst_shape[j] != d:
            if dst_shape[j] != 1:
                return None
            j += 1
        if j == len(dst_shape):
            return None
        positions.append(j)
        j += 1
    if any(dst_shape[i] != 1 for i in range(j, len(dst_shape))):
        return None
    return positions


def _place(shape, positions, rank) -> tuple:
    out = [1] * rank
    for d, p in zip(shape, positions):
        out[p] = d
    return tuple(out)


_NEUTRAL = {OpKind.ADD: 0, OpKind.SUB: 0, OpKind.MUL: 1, OpKind.DIV: 1, OpKind.MAX: -math.inf,
            OpKind.MIN: math.inf}
_FOLDABLE = (ELEMENTWISE - {OpKind.SELECT}) | {OpKind.RESHAPE, OpKind.BROADCAST, OpKind.TRANSPOSE}


def _eval_scalar(kind):
    interp = Interpreter()

    def run(args):
        op = Op(kind, tuple(range(len(args))), (len(args),), Attrs())
        return interp.eval_op(op, args, TensorType((), DType.FLOAT64))

    return run


_EVAL_SCALAR = {k: _eval_scalar(k) for k in ELEMENTWISE - {OpKind.SELECT, OpKind.INTEGER_POW, OpKind.CONVERT}}
_EVAL_SCALAR[OpKind.CONVERT] = lambda args: args[0]
_FOLDABLE = _FOLDABLE - {OpKind.INTEGER_POW}

_REWRITES: tuple[Pass, ...] = (_drop_identity, _unit_transpose, _compose_layout, _fold_constants, _neutral_operand,
                               _implicit_broadcast, _square, _sink_unit_reshape, _hoist_unit_removal)


def _cse(program: FlatProgram) -> bool:
    seen: dict[tuple, int] = {}
    alias: dict[int, int] = {}
    kept = []
    for node in program.nodes:
        node.inputs = tuple(_resolve(alias, v) for v in node.inputs)
        if isinstance(node, IrNode):
            key = (node.kind, node.attrs, node.inputs, program.types[node.output])
            if key in seen:
                alias[node.output] = seen[key]
                continue
            seen[key] = node.output
        kept.append(node)
    program.nodes = kept
    program.outputs = [_resolve(alias, v) for v in program.outputs]
    return bool(alias)


def _dce(program: FlatProgram) -> bool:
    """Drop IR nodes nobody reads (opaque JAX equations are kept: they may have effects)."""
    live = set(v for v in program.outputs if isinstance(v, int))
    kept = []
    for node in reversed(program.nodes):
        if isinstance(node, IrNode) and node.output not in live:
            continue
        live.update(v for v in node.inputs if isinstance(v, int))
        kept.append(node)
    kept.reverse()
    dropped = len(kept) != len(program.nodes)
    program.nodes = kept
    return dropped
