"""Graph → graph passes on the IR: instantiation of symbolic sizes and map variables."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from prism_jax.ir.graph import BlockGraph, BlockInput, BlockOutput, KernelGraph, Op, validate_kernel_graph
from prism_jax.ir.maps import substitute_map
from prism_jax.ir.ops import Attrs
from prism_jax.ir.symbolic import Mono, substitute
from prism_jax.ir.types import TensorType


def instantiate(graph: KernelGraph, sizes: Mapping[str, int] | None = None,
                maps: Mapping[str, bool] | None = None, validate: bool = True) -> KernelGraph:
    """Bind size symbols and Boolean map variables; the result is validated again unless the caller
    knows the sizes satisfy the graph's constraints (``validate=False``, the fingerprint's hot path)."""
    sizes, maps = dict(sizes or {}), dict(maps or {})
    out = KernelGraph(graph.name, tuple(_type(t, sizes) for t in graph.values), graph.inputs, graph.input_names,
                      tuple(_op(op, sizes, maps) for op in graph.ops), graph.outputs)
    if validate:
        validate_kernel_graph(out)
    return out


def _type(t: TensorType, sizes: Mapping[str, int]) -> TensorType:
    return t.with_shape(substitute(d, sizes) for d in t.shape)


def _value(v: Any, sizes: Mapping[str, int]) -> Any:
    if isinstance(v, tuple):
        return tuple(_value(x, sizes) for x in v)
    if isinstance(v, Mono):
        return substitute(v, sizes, integral=False)
    return v


def _op(op: Op, sizes: Mapping[str, int], maps: Mapping[str, bool]) -> Op:
    attrs = Attrs(tuple((k, _value(v, sizes)) for k, v in op.attrs.items))
    block = _block(op.block, sizes, maps) if op.block is not None else None
    return dataclasses.replace(op, attrs=attrs, block=block)


def _block(block: BlockGraph, sizes: Mapping[str, int], maps: Mapping[str, bool]) -> BlockGraph:
    return BlockGraph(
        grid=tuple(substitute(g, sizes) for g in block.grid),
        forloop=substitute(block.forloop, sizes),
        values=tuple(_type(t, sizes) for t in block.values),
        inputs=tuple(BlockInput(i.value, i.source, substitute_map(i.imap, maps), substitute_map(i.fmap, maps))
                     for i in block.inputs),
        ops=tuple(_op(op, sizes, maps) for op in block.ops),
        outputs=tuple(BlockOutput(o.value, substitute_map(o.omap, maps)) for o in block.outputs),
    )
