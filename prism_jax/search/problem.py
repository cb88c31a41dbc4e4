"""What a search works on: a region split into the re-views of its inputs and outputs (reshapes: free,
they only rename a contiguous buffer's dims) and the *core* computation between them.

Custom kernels read the core's inputs, so a ``g: [d]`` weight that the region reshapes to ``[1, d]``
before scaling ``[n, d]`` rows is loaded by the kernel already as ``[1, d]``; the candidate program
is the views followed by the kernel (:func:`SearchProblem.assemble`)."""

from __future__ import annotations

import dataclasses

from prism_jax.ir import KernelGraph, KernelGraphBuilder, Op, OpKind

VIEW_KINDS = frozenset({OpKind.RESHAPE})


@dataclasses.dataclass(frozen=True)
class SearchProblem:
    reference: KernelGraph  # the region as traced
    core: KernelGraph  # the region after its input views, over the viewed inputs
    views: tuple[Op, ...]  # the reference's ops that only re-view its inputs
    core_sources: tuple[int, ...]  # reference value read as each core input
    output_views: tuple[Op | None, ...] = ()  # per output: the reshape that re-views it, if any

    @staticmethod
    def of(reference: KernelGraph) -> "SearchProblem":
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
        return SearchProblem(reference, core, kept, sources, output_views)

    def assemble(self, candidate: KernelGraph) -> KernelGraph:
        """The whole region's program: the reference's inputs, its views, then ``candidate`` (a program
        over the core's inputs)."""
        kb = KernelGraphBuilder(candidate.name)
        env = {v: kb.input(t, name) for v, t, name in zip(self.reference.inputs, self.reference.input_types,
                                                          self.reference.input_names)}
        for op in self.views:
            env[op.outputs[0]] = kb.op(op.kind, env[op.inputs[0]], **op.attrs.as_dict())
        inner = {cv: env[src] for cv, src in zip(candidate.inputs, self.core_sources)}
        for op in candidate.ops:
            if op.kind == OpKind.CUSTOM_KERNEL:
                outs = kb.custom_kernel(op.block, *(inner[v] for v in op.inputs))
            else:
                outs = (kb.op(op.kind, *(inner[v] for v in op.inputs), **op.attrs.as_dict()),)
            inner.update(zip(op.outputs, outs))
        results = [inner[v] for v in candidate.outputs]
        for k, view in enumerate(self.output_views):
            if view is not None:
                results[k] = kb.op(view.kind, results[k], **view.attrs.as_dict())
        return kb.build(results)


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
