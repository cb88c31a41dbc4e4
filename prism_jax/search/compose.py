"""Kernel graphs of several kernels: predefined ops and custom kernels mixed.

When the one-kernel search finds nothing for a region (three matmuls feeding norms, attention followed
by its output projection, ...), the region is split into its outputs' slices (several outputs) and cut
in two after a matmul or reduction. Each part is then either kept as predefined ops (a part with no
matmul or reduction: XLA fuses such elementwise code itself) or searched as a region of its own --
recursively, so a part may be split again, and through the cache, so a part seen before costs nothing.
The parts' programs are joined into one kernel graph; all of it within the time it is given.

Soundness is compositional: every searched part is proved equal to its ops (its own e-graph proof),
predefined parts are the region's own ops, and the region is the composition of its parts, so the
joined program equals the region. Its verdict says so ("composition") and lists the parts' proofs.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Any, Callable, Iterator, Sequence

from prism_jax.ir import KernelGraph, KernelGraphBuilder, OpKind, rename_symbols
from prism_jax.ir.symbolic import free_symbols
from prism_jax.verify import Status, Verdict

HEAVY = frozenset({OpKind.MATMUL, OpKind.REDUCE_SUM, OpKind.REDUCE_MAX})
SOURCES = frozenset({OpKind.CONSTANT, OpKind.IOTA})
METHOD = "composition"
log = logging.getLogger("prism_jax.search")


@dataclasses.dataclass(frozen=True)
class Part:
    """A contiguous run of the region's ops as a graph of its own."""

    graph: KernelGraph
    inputs: tuple[int, ...]  # region values it reads, in its input order
    outputs: tuple[int, ...]  # region values it defines that later parts or the region's outputs read

    @property
    def heavy(self) -> bool:
        return any(op.kind in HEAVY for op in self.graph.ops)


def cut_positions(region: KernelGraph) -> list[int]:
    """Op indices after a matmul or reduction where the region can be cut in two, each side keeping at
    least one of them: cuts after a matmul first (a reduction is mostly inside a norm or a softmax,
    whose statistics a cut would send through memory: attention followed by its output projection is
    cut after P V, not between softmax's max and sum), the most balanced first among each."""
    heavy_at = [i for i, op in enumerate(region.ops) if op.kind in HEAVY]
    positions = [i + 1 for i in heavy_at[:-1]]
    middle = len(heavy_at) / 2
    return sorted(positions, key=lambda p: (region.ops[p - 1].kind != OpKind.MATMUL,
                                            abs(sum(1 for h in heavy_at if h < p) - middle), p))


def cut(region: KernelGraph, position: int) -> tuple[Part, Part]:
    return (_part(region, region.ops[:position], region.ops[position:], f"{region.name}.head"),
            _part(region, region.ops[position:], (), f"{region.name}.tail"))


def _part(region: KernelGraph, ops: Sequence, later: Sequence, name: str) -> Part:
    """``ops`` as a graph: inputs are the values they read and do not define (constants and iotas
    are recreated, not passed), outputs the values they define that ``later`` ops or the region read."""
    defined = {op.outputs[0] for op in ops}
    source_ops = {op.outputs[0]: op for op in region.ops if op.kind in SOURCES}
    reads = [v for op in ops for v in op.inputs if v not in defined]
    needed_sources = [v for v in dict.fromkeys(reads) if v in source_ops]
    inputs = tuple(v for v in dict.fromkeys(reads) if v not in source_ops)
    read_later = {v for op in later for v in op.inputs} | set(region.outputs)
    outputs = tuple(v for v in dict.fromkeys(op.outputs[0] for op in ops)
                    if v in read_later and region.ops[_index(region, v)].kind not in SOURCES)
    kb = KernelGraphBuilder(name)
    names = dict(zip(region.inputs, region.input_names))
    env = {v: kb.input(region.values[v], names.get(v, f"v{v}")) for v in inputs}
    for v in needed_sources:
        op = source_ops[v]
        env[v] = kb.op(op.kind, **op.attrs.as_dict())
    for op in ops:
        if op.outputs[0] not in env:
            env[op.outputs[0]] = kb.op(op.kind, *(env[u] for u in op.inputs), **op.attrs.as_dict())
    return Part(kb.build([env[v] for v in outputs]), inputs, outputs)


def output_slices(region: KernelGraph) -> list[Part]:
    """For a region of several outputs, one part per output: the ops that output depends on (ops shared
    by several outputs recomputed in each), so each part is a region of one output -- the Q, K and V
    projections of a decoder, each with its own norm, rather than cuts by op order that mix them."""
    outputs = list(dict.fromkeys(region.outputs))
    producer = {op.outputs[0]: op for op in region.ops}
    if sum(v in producer for v in outputs) < 2:
        return []
    parts = []
    for k, value in enumerate(v for v in outputs if v in producer):
        needed, stack = set(), [value]
        while stack:
            v = stack.pop()
            if v in producer and v not in needed:
                needed.add(v)
                stack.extend(producer[v].inputs)
        ops = [op for op in region.ops if op.outputs[0] in needed]
        parts.append(_part(region, ops, (), f"{region.name}.out{k}"))
    # the smallest first: a larger slice often holds a smaller one's ops (Q = V's RMSNorm and projection,
    # then a norm), and a part searched before is a cache hit when the larger one is cut
    return sorted(parts, key=lambda part: len(part.graph.ops))


def _index(region: KernelGraph, value: int) -> int:
    return next(i for i, op in enumerate(region.ops) if op.outputs[0] == value)


@dataclasses.dataclass(frozen=True)
class PartProgram:
    """What computes one part: a proved program in the region's size symbols, or its own ops."""

    graph: KernelGraph
    verdict: Verdict | None  # None: the part's own predefined ops
    kernels: int


def _own(part: Part) -> PartProgram:
    return PartProgram(part.graph, None, 0)


# (part in the region's symbols, seconds its search may take in all) -> RegionSearch
SearchFn = Callable[[KernelGraph, float], "object"]


MAX_CUTS = 3  # cut positions tried per region (most balanced first); parts may be cut again


MIN_PART_S = 0.5  # a part is searched only with at least this much of the composition's time left
SLICE_SHARE = 0.6  # of the composition's time, what the output slices may use before the cuts' turn


def compose(region: KernelGraph, search: SearchFn, rank: Callable[[KernelGraph], Any], max_kernels: int,
            budget_s: float, progress: Callable[[int, int], None] | None = None
            ) -> list[tuple[KernelGraph, Verdict, Any]]:
    """Programs whose parts give at least one custom kernel and at most ``max_kernels``, as (graph,
    verdict, rank), found within ``budget_s`` seconds: the cheapest by ``rank`` (None: it does not fit),
    then, when another, the cheapest of those that leave the fewest matmuls and reductions to predefined
    ops. The cost model takes predefined ops at the roofline, which XLA's own matmuls are far from on
    some targets (its CPU dots of a few rows), so the tuner times both. A region of several outputs is
    first split into its output slices (until ``SLICE_SHARE`` of the time), then cut (the most balanced
    cuts, in the time left). The parts of a split share the time left, and a part's search ends within
    its share, its own composition included. ``progress(seconds spent, budget)`` is called after each
    split."""
    start = time.perf_counter()
    end, slices_end = start + budget_s, start + budget_s * SLICE_SHARE
    cheapest = widest = None
    for splits, deadline in ((_slice_splits(region), slices_end), (_cut_splits(region), end)):
        for parts in splits:
            if deadline - time.perf_counter() < MIN_PART_S:
                break
            for programs in _choices(parts, _programs(parts, search, deadline), max_kernels):
                graph = _join(region, parts, programs)
                cost = rank(graph)
                if cost is None:
                    continue
                found = (graph, _verdict(programs), cost)
                if cheapest is None or cost.key < cheapest[2].key:
                    cheapest = found
                if widest is None or (_left_heavy(graph), cost.key) < (_left_heavy(widest[0]), widest[2].key):
                    widest = found
            if progress is not None:
                progress(round(time.perf_counter() - start), round(budget_s))
    if cheapest is None:
        return []
    return [cheapest] if _left_heavy(widest[0]) == _left_heavy(cheapest[0]) else [cheapest, widest]


def _left_heavy(graph: KernelGraph) -> int:
    """Matmuls and reductions a program leaves to predefined ops."""
    return sum(op.kind in HEAVY for op in graph.ops)


MAX_CHOICE_PARTS = 6  # parts with programs up to which every subset of them is ranked


def _choices(parts: Sequence[Part], programs: Sequence[PartProgram], max_kernels: int) -> Iterator[list[PartProgram]]:
    """The ways to run a split's parts with at least one and at most ``max_kernels`` custom kernels: each
    part that has a program runs it or its own ops (three output slices of three kernels each do not all
    fit in five; two of them, or one, may). Up to ``MAX_CHOICE_PARTS`` such parts every subset, else all."""
    searched = [k for k, p in enumerate(programs) if p.kernels]
    if len(searched) > MAX_CHOICE_PARTS:
        subsets = [tuple(searched)]
    else:
        subsets = [c for n in range(len(searched), 0, -1) for c in itertools.combinations(searched, n)]
    for chosen in subsets:
        picked = [p if k in chosen else _own(part) for k, (part, p) in enumerate(zip(parts, programs))]
        if sum(p.kernels for p in picked) <= max_kernels:
            yield picked


def _slice_splits(region: KernelGraph) -> Iterator[Sequence[Part]]:
    slices = output_slices(region)
    if slices:
        yield slices


def _cut_splits(region: KernelGraph) -> Iterator[Sequence[Part]]:
    """The most balanced cuts, each made when reached."""
    for position in cut_positions(region)[:MAX_CUTS]:
        yield cut(region, position)


def _programs(parts: Sequence[Part], search: SearchFn, deadline: float) -> list[PartProgram]:
    """Each part's program; the parts to search share the time to ``deadline`` evenly (a part that
    finishes early leaves its rest to the next), so the first does not starve the others."""
    programs = []
    heavy_left = sum(part.heavy for part in parts)
    for k, part in enumerate(parts):
        programs.append(_program(part, k, search, (deadline - time.perf_counter()) / max(1, heavy_left)))
        heavy_left -= part.heavy
    return programs


def _program(part: Part, index: int, search: SearchFn, given: float) -> PartProgram:
    """The part's program searched in ``given`` seconds, or its own ops: when it has no matmul or
    reduction, when its search finds nothing, or when ``given`` is under ``MIN_PART_S``."""
    own = _own(part)
    start = time.perf_counter()
    if not part.heavy or given < MIN_PART_S:
        return own
    found = search(part.graph, given)
    best = getattr(found, "best", None)
    log.debug("part %s: %s in %.1f s (given %.1f s)", part.graph.name, "a program" if best else "nothing",
              time.perf_counter() - start, given)
    if best is None:
        return own
    graph = _extents_apart(best.graph, set(found.sizes), f"p{index}_")
    return PartProgram(graph, best.verdict, len(graph.custom_kernels))


def _extents_apart(graph: KernelGraph, size_symbols: set[str], prefix: str) -> KernelGraph:
    """The part's program with its grid/loop extents renamed, so two parts' kernels tile independently."""
    extents = {s for op in graph.custom_kernels for e in (*op.block.grid, op.block.forloop) for s in free_symbols(e)}
    return rename_symbols(graph, {s: prefix + s for s in extents - size_symbols})


def _join(region: KernelGraph, parts: Sequence[Part], programs: Sequence[PartProgram]) -> KernelGraph:
    kb = KernelGraphBuilder(f"{region.name}.composed")
    env = {v: kb.input(t, name) for v, t, name in zip(region.inputs, region.input_types, region.input_names)}
    for part, program in zip(parts, programs):
        local = {pv: env[rv] for pv, rv in zip(program.graph.inputs, part.inputs)}
        for op in program.graph.ops:
            ins = [local[v] for v in op.inputs]
            if op.kind == OpKind.CUSTOM_KERNEL:
                outs = kb.custom_kernel(op.block, *ins)
            else:
                outs = (kb.op(op.kind, *ins, **op.attrs.as_dict()),)
            local.update(zip(op.outputs, outs))
        env.update({rv: local[pv] for pv, rv in zip(program.graph.outputs, part.outputs)})
    return kb.build([env[v] for v in region.outputs])


def _verdict(programs: Sequence[PartProgram]) -> Verdict:
    proofs = [p.verdict for p in programs if p.verdict is not None]
    detail = "; ".join(f"part {k}: {'its own ops' if p.verdict is None else p.verdict}"
                       for k, p in enumerate(programs))
    return Verdict(Status.EQUAL, METHOD, sum(v.seconds for v in proofs), detail)
