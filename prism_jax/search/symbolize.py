"""Symbolic regions: a traced region's dims become size symbols so that one search (and one cache
entry) serves every shape of the region.

Equal dims share a symbol, and a constant equal to a dim (a mean's divisor ``d``) becomes that
symbol. Both only ever make the symbolized graph *more* specific, and the cache key is the
symbolized graph itself: a region of another shape reuses a result exactly when its own symbolized
graph is the same, and binding the symbols to its sizes gives back that region. Regions with ops whose
attributes hold positions (slices, concatenations, iotas) keep their concrete sizes."""

from __future__ import annotations

import dataclasses

from prism_jax.ir import IRError, KernelGraph, Op, OpKind, TensorType, sym, validate_kernel_graph

_POSITIONAL = frozenset({OpKind.SLICE, OpKind.CONCAT, OpKind.IOTA})
SYMBOL_PREFIX = "s"  # s0, s1, ...: never a grid ("gx") or loop ("F") name


def symbolize(region: KernelGraph) -> tuple[KernelGraph, dict[str, int]]:
    """The region over size symbols, and the symbols' values for this region."""
    if any(op.kind in _POSITIONAL for op in region.ops) or not all(
            isinstance(d, int) for t in region.values for d in t.shape):
        return region, {}
    dims: dict[int, str] = {}
    for t in (*region.input_types, *region.values):
        for d in t.shape:
            if d > 1 and d not in dims:
                dims[d] = f"{SYMBOL_PREFIX}{len(dims)}"
    if not dims:
        return region, {}
    values = tuple(_type(t, dims) for t in region.values)
    ops = tuple(_op(op, dims) for op in region.ops)
    graph = KernelGraph(region.name, values, region.inputs, region.input_names, ops, region.outputs)
    try:
        validate_kernel_graph(graph)
    except IRError:  # e.g. a reshape that splits a dim: its sizes relate, one symbol each cannot say so
        return region, {}
    return graph, {name: d for d, name in dims.items()}


def _size(d, dims: dict[int, str]):
    return sym(dims[d]) if isinstance(d, int) and d in dims else d


def _type(t: TensorType, dims: dict[int, str]) -> TensorType:
    return t.with_shape([_size(d, dims) for d in t.shape])


def _op(op: Op, dims: dict[int, str]) -> Op:
    attrs = op.attrs.as_dict()
    if "shape" in attrs:
        attrs["shape"] = tuple(_size(d, dims) for d in attrs["shape"])
    if op.kind == OpKind.CONSTANT:
        value = attrs["value"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() \
                and int(value) in dims:
            attrs["value"] = sym(dims[int(value)])
    return dataclasses.replace(op, attrs=type(op.attrs).of(attrs))
