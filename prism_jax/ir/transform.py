"""Graph → graph passes on the IR: instantiation of symbolic sizes and map variables, renaming symbols."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from prism_jax.ir.graph import BlockGraph, BlockInput, BlockOutput, KernelGraph, Op, validate_kernel_graph
from prism_jax.ir.maps import substitute_map
from prism_jax.ir.ops import Attrs
from prism_jax.ir.symbolic import Mono, normalize, substitute
from prism_jax.ir.types import TensorType


def instantiate(graph: KernelGraph, sizes: Mapping[str, int] | None = None,
                maps: Mapping[str, bool] | None = None, validate: bool = True) -> KernelGraph:
    """Bind size symbols and Boolean map variables; the result is validated again unless the caller
    knows the sizes satisfy the graph's constraints (``validate=False``, the fingerprint's hot path)."""
    sizes = dict(sizes or {})
    out = _map_graph(graph, lambda d: substitute(d, sizes), lambda v: substitute(v, sizes, integral=False),
                     dict(maps or {}))
    if validate:
        validate_kernel_graph(out)
    return out


def rename_symbols(graph: KernelGraph, names: Mapping[str, str]) -> KernelGraph:
    """The same graph with size symbols renamed (e.g. to keep two kernels' grid extents apart)."""

    def rename(value: Any) -> Any:
        if not isinstance(value, Mono):
            return value
        factors: dict[str, int] = {}
        for name, exp in value.factors:
            new = names.get(name, name)
            factors[new] = factors.get(new, 0) + exp
        return normalize(Mono(value.coeff, tuple(sorted((n, e) for n, e in factors.items() if e))))

    return _map_graph(graph, rename, rename, {})


def _map_graph(graph: KernelGraph, size: Callable[[Any], Any], attr: Callable[[Any], Any],
               maps: Mapping[str, bool]) -> KernelGraph:
    return KernelGraph(graph.name, tuple(_type(t, size) for t in graph.values), graph.inputs, graph.input_names,
                       tuple(_op(op, size, attr, maps) for op in graph.ops), graph.outputs)


def _type(t: TensorType, size: Callable[[Any], Any]) -> TensorType:
    if all(type(d) is int for d in t.shape):  # nothing to bind
        return t
    return t.with_shape(size(d) for d in t.shape)


def _value(v: Any, attr: Callable[[Any], Any]) -> Any:
    if isinstance(v, tuple):
        return tuple(_value(x, attr) for x in v)
    return attr(v) if isinstance(v, Mono) else v


def _op(op: Op, size, attr, maps: Mapping[str, bool]) -> Op:
    attrs = Attrs(tuple((k, _value(v, attr)) for k, v in op.attrs.items))
    block = _block(op.block, size, attr, maps) if op.block is not None else None
    return dataclasses.replace(op, attrs=attrs, block=block)


def _block(block: BlockGraph, size, attr, maps: Mapping[str, bool]) -> BlockGraph:
    return BlockGraph(
        grid=tuple(size(g) for g in block.grid),
        forloop=size(block.forloop),
        values=tuple(_type(t, size) for t in block.values),
        inputs=tuple(BlockInput(i.value, i.source, substitute_map(i.imap, maps), substitute_map(i.fmap, maps))
                     for i in block.inputs),
        ops=tuple(_op(op, size, attr, maps) for op in block.ops),
        outputs=tuple(BlockOutput(o.value, substitute_map(o.omap, maps)) for o in block.outputs),
    )
