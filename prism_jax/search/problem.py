"""What a search works on: a region split into the re-views of its inputs and outputs (reshapes: free,
they only rename a contiguous buffer's dims) and the *core* computation between them.

Custom kernels read the core's inputs, so a ``g: [d]`` weight that the region reshapes to ``[1, d]``
before scaling ``[n, d]`` rows is loaded by the kernel already as ``[1, d]``; the candidate program
is the views followed by the kernel (:func:`SearchProblem.assemble`)."""

from __future__ import annotations

import dataclasses

from prism_jax.ir import (Attrs, BlockGraph, BlockGraphBuilder, DType, KernelGraph, KernelGraphBuilder, Op, OpKind,
                          TensorType, validate_kernel_graph)

VIEW_KINDS = frozenset({OpKind.RESHAPE})


@dataclasses.dataclass(frozen=True)
class SearchProblem:
    reference: KernelGraph  # the region as traced
    core: KernelGraph  # the region after its input views, over the viewed inputs
    views: tuple[Op, ...]  # the reference's ops that only re-view its inputs
    core_sources: tuple[int, ...]  # reference value read as each core input
    output_views: tuple[Op | None, ...] = ()  # per output: the reshape that re-views it, if any
    # the core computes in float32 with its float converts erased (bf16/f16 regions upcast around
    # reductions); kernels then convert tiles at load and store. Proofs hold up to float rounding.
    converts_erased: bool = False

    @staticmethod
    def of(region: KernelGraph) -> "SearchProblem":
        widened = _in_float32(region)
        reference = widened or region
        viewed = set(reference.inputs)
        views = []
        for op in reference.ops:
            if op.kind in VIEW_KINDS and op.inputs[0] in viewed:
                views.append(op)
                viewed.add(op.outputs[0])
        view_outputs = {op.outputs[0] for op in views}
        output_views = _output_views(reference, view_outputs)
        trailing = {op.outputs[0] for op in output_views if op is not None}
        computed = [op for op in reference.ops if op.outputs[0] not in view_outputs | trailing]
        outputs = [op.inputs[0] if op is not None else v for op, v in zip(output_views, reference.outputs)]
        read = {v for op in computed for v in op.inputs} | set(outputs)
        sources = tuple(v for v in (*reference.inputs, *(op.outputs[0] for op in views)) if v in read)
        core = _core(reference, sources, computed, outputs)
        kept = _needed_views(views, sources)
        return SearchProblem(region, core, kept, sources, output_views, widened is not None)

    def _output_type(self, candidate: KernelGraph, value: int) -> TensorType:
        """The region's type for the candidate output ``value`` (before any output view)."""
        k = candidate.outputs.index(value)
        view = self.output_views[k] if k < len(self.output_views) else None
        stored = self.reference.values[self.reference.outputs[k]]
        if view is None:
            return stored
        # the view reads the widened graph's value (its convert erased): its shape, the output's dtype
        return self.reference.values[view.inputs[0]].with_dtype(stored.dtype)

    def assemble(self, candidate: KernelGraph) -> KernelGraph:
        """The whole region's program: the reference's inputs, its views, then ``candidate`` (a program
        over the core's inputs)."""
        kb = KernelGraphBuilder(candidate.name)
        env = {v: kb.input(t, name) for v, t, name in zip(self.reference.inputs, self.reference.input_types,
                                                          self.reference.input_names)}
        for op in self.views:  # on the region's own (possibly 16-bit) inputs
            env[op.outputs[0]] = kb.op(op.kind, env[op.inputs[0]], **op.attrs.as_dict())
        inner = {cv: env[src] for cv, src in zip(candidate.inputs, self.core_sources)}
        final = set(candidate.outputs)
        for op in candidate.ops:
            if op.kind == OpKind.CUSTOM_KERNEL:
                block = op.block
                if self.converts_erased:
                    stores = [self._output_type(candidate, v) if v in final else None for v in op.outputs]
                    block = _with_tile_converts(block, [kb.type_of(inner[v]) for v in op.inputs], stores)
                outs = kb.custom_kernel(block, *(inner[v] for v in op.inputs))
            else:
                outs = (kb.op(op.kind, *(inner[v] for v in op.inputs), **op.attrs.as_dict()),)
            inner.update(zip(op.outputs, outs))
        results = [inner[v] for v in candidate.outputs]
        for k, view in enumerate(self.output_views):
            if view is not None:
                results[k] = kb.op(view.kind, results[k], **view.attrs.as_dict())
        return kb.build(results)


def _in_float32(graph: KernelGraph) -> KernelGraph | None:
    """``graph`` with its float converts dropped (readers read the unconverted value) and every float
    value in float32, value ids kept; None when it already is so."""
    converts = {op.outputs[0]: op.inputs[0] for op in graph.ops if op.kind == OpKind.CONVERT
                and op.attrs["dtype"].is_float and graph.values[op.inputs[0]].dtype.is_float}
    if not converts and all(t.dtype == DType.FLOAT32 for t in graph.values if t.dtype.is_float):
        return None

    def source(v: int) -> int:
        while v in converts:
            v = converts[v]
        return v

    values = tuple(t.with_dtype(DType.FLOAT32) if t.dtype.is_float else t for t in graph.values)
    ops = []
    for op in graph.ops:
        if op.outputs[0] in converts:
            continue
        attrs = op.attrs.as_dict()
        if op.kind == OpKind.CONSTANT and attrs["dtype"].is_float:
            attrs["dtype"] = DType.FLOAT32
        ops.append(dataclasses.replace(op, inputs=tuple(source(v) for v in op.inputs), attrs=Attrs.of(attrs)))
    widened = KernelGraph(graph.name, values, graph.inputs, graph.input_names, tuple(ops),
                          tuple(source(v) for v in graph.outputs))
    validate_kernel_graph(widened)
    return widened


def _with_tile_converts(block: BlockGraph, source_types: list[TensorType],
                        stores: list[TensorType | None]) -> BlockGraph:
    """``block`` (computing in float32) reading sources of other float types: each such tile is
    converted to float32 after its load, and each output with a ``stores`` type before its store."""
    bb = BlockGraphBuilder(block.grid, block.forloop)
    env: dict[int, int] = {}
    for inp in block.inputs:
        value = bb.input(inp.source, source_types[inp.source], inp.imap, inp.fmap)
        if source_types[inp.source].dtype != block.values[inp.value].dtype:
            value = bb.op(OpKind.CONVERT, value, dtype=block.values[inp.value].dtype)
        env[inp.value] = value
    for op in block.ops:
        env[op.outputs[0]] = bb.op(op.kind, *(env[v] for v in op.inputs), **op.attrs.as_dict())
    for out, store in zip(block.outputs, stores):
        value = env[out.value]
        if store is not None and store.dtype != bb.type_of(value).dtype:
            value = bb.op(OpKind.CONVERT, value, dtype=store.dtype)
        bb.output(value, out.omap)
    return bb.build(source_types)


def _output_views(reference: KernelGraph, input_views: set[int]) -> tuple[Op | None, ...]:
    """Per region output: the reshape producing it from a computed value read by nothing else (the
    kernel stores the value; the reshape only renames its dims), else None."""
    defining = {op.outputs[0]: op for op in reference.ops}
    readers: dict[int, int] = {}
    for op in reference.ops:
        for v in op.inputs:
            readers[v] = readers.get(v, 0) + 1
    found = []
    for v in reference.outputs:
        op = defining.get(v)
        ok = (op is not None and op.kind in VIEW_KINDS and v not in input_views and op.inputs[0] in defining
              and readers.get(v, 0) == 0 and readers.get(op.inputs[0], 0) == 1
              and reference.outputs.count(v) == 1 and op.inputs[0] not in reference.outputs)
        found.append(op if ok else None)
    return tuple(found)


def _core(reference: KernelGraph, sources: tuple[int, ...], computed: list[Op], outputs: list[int]) -> KernelGraph:
    kb = KernelGraphBuilder(reference.name)
    names = dict(zip(reference.inputs, reference.input_names))
    env = {v: kb.input(reference.values[v], names.get(v, f"view{k}")) for k, v in enumerate(sources)}
    for op in computed:
        env[op.outputs[0]] = kb.op(op.kind, *(env[v] for v in op.inputs), **op.attrs.as_dict())
    return kb.build([env[v] for v in outputs])


def _needed_views(views: list[Op], sources: tuple[int, ...]) -> tuple[Op, ...]:
    needed = set(sources)
    for op in reversed(views):
        if op.outputs[0] in needed:
            needed.add(op.inputs[0])
    return tuple(op for op in views if op.outputs[0] in needed)
