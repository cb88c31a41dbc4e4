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
    sizes = {d: sym(name) for d, name in dims.items()}
    sizes.update(_products(region, sizes))
    values = tuple(_type(t, sizes) for t in region.values)
    ops = tuple(_op(op, sizes) for op in region.ops)
    graph = KernelGraph(region.name, values, region.inputs, region.input_names, ops, region.outputs)
    try:
        validate_kernel_graph(graph)
    except IRError:  # e.g. a reshape that splits a dim: its sizes relate, one symbol each cannot say so
        return region, {}
    used = {name for t in values for d in t.shape for name in getattr(d, "free_symbols", ())}
    return graph, {name: d for d, name in dims.items() if name in used}


def _products(region: KernelGraph, sizes: dict[int, object]) -> dict[int, object]:
    """A dim that a reshape splits into (or merges from) several dims is their product, so the reshape
    stays valid for every size: grouped-query attention views [b, 32, 1, D] as [b, 8, 4, D]."""
    products: dict[int, object] = {}
    for op in region.ops:
        if op.kind != OpKind.RESHAPE:
            continue
        src = [d for d in region.values[op.inputs[0]].shape if d != 1]
        dst = [d for d in region.values[op.outputs[0]].shape if d != 1]
        for whole, parts in _groups(src, dst) + _groups(dst, src):
            if len(parts) > 1 and whole not in products and whole not in parts:
                product = sizes[parts[0]]
                for part in parts[1:]:
                    product = product * sizes[part]
                products[whole] = product
    return products


def _groups(one: list[int], other: list[int]) -> list[tuple[int, list[int]]]:
    """(a dim of ``one``, the run of ``other``'s dims whose product it is), walking both in order."""
    groups, j = [], 0
    for whole in one:
        run, product = [], 1
        while j < len(other) and product < whole:
            run.append(other[j])
            product *= other[j]
            j += 1
        if product != whole:
            return []
        groups.append((whole, run))
    return groups


def _size(d, sizes: dict[int, object]):
    return sizes[d] if isinstance(d, int) and d in sizes else d


def _type(t: TensorType, sizes: dict[int, object]) -> TensorType:
    return t.with_shape([_size(d, sizes) for d in t.shape])


def _op(op: Op, sizes: dict[int, object]) -> Op:
    attrs = op.attrs.as_dict()
    if "shape" in attrs:
        attrs["shape"] = tuple(_size(d, sizes) for d in attrs["shape"])
    if op.kind == OpKind.CONSTANT:
        value = attrs["value"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() \
                and int(value) in sizes:
            attrs["value"] = sizes[int(value)]
    return dataclasses.replace(op, attrs=type(op.attrs).of(attrs))
