"""Level-1 enumeration: block-graph structures (ops, accumulators, ops after the loop; maps left open)
for one custom kernel computing a region, pruned by the abstract-expression test against the target.

Each partial structure is checked on its *untiled* form (one block, one iteration, no splits): shapes
must agree, and the abstract expression of its newest value (tiling erased) must be a subexpression of
the target's, saturated once with the algebraic axioms. Independent consecutive ops must appear in
increasing key order, so each structure is generated once. A structure whose values already compute the
target's outputs (same e-class) and has no dead ops is complete; its maps are resolved by
:func:`prism_jax.search.maps.resolve_maps`."""

from __future__ import annotations

import dataclasses
import time
from typing import Iterator

from prism_jax.ir import Attrs, IRError, KernelGraph, OpKind
from prism_jax.ir.ops import ACCUMULATORS, arity
from prism_jax.search.maps import BlockStructure, MapAssignment, build_candidate
from prism_jax.verify import AbstractTarget
from prism_jax.verify.egraph import Encoder, EncodingError

_STRUCTURAL = frozenset({OpKind.RESHAPE, OpKind.BROADCAST, OpKind.CONCAT, OpKind.SLICE, OpKind.CUSTOM_KERNEL})


@dataclasses.dataclass(frozen=True)
class EnumerationConfig:
    max_block_ops: int = 11  # ops in the block graph, constants included (Mirage's limit)
    max_accumulators: int = 3
    time_limit_s: float = 60.0


@dataclasses.dataclass
class EnumerationStats:
    expanded: int = 0
    ill_typed: int = 0
    pruned_abstract: int = 0
    pruned_duplicate: int = 0
    pruned_order: int = 0
    complete: int = 0
    seconds: float = 0.0
    timed_out: bool = False


def vocabulary(reference: KernelGraph) -> list[tuple[OpKind, Attrs]]:
    """The (kind, attributes) alphabet: the region's own ops plus the loop accumulators."""
    seen: dict[tuple, None] = {}
    for op in reference.ops:
        if op.kind not in _STRUCTURAL:
            seen[(op.kind, op.attrs)] = None
    for kind in (OpKind.ACCUM_SUM, OpKind.ACCUM_MAX, OpKind.ACCUM_RESCALED_SUM):
        seen[(kind, Attrs())] = None
    return sorted(seen, key=lambda item: (item[0].value, str(item[1])))


def enumerate_structures(reference: KernelGraph, config: EnumerationConfig = EnumerationConfig(),
                         stats: EnumerationStats | None = None) -> Iterator[BlockStructure]:
    """Complete structures, deterministically, depth-first."""
    stats = stats if stats is not None else EnumerationStats()
    target = AbstractTarget(reference)
    alphabet = vocabulary(reference)
    n = len(reference.inputs)
    trivial = MapAssignment(tuple((None,) for _ in range(n)), (None,) * n,
                            tuple((None,) for _ in reference.outputs))
    start = time.perf_counter()
    seen_complete: set[tuple] = set()

    def terms_of(structure: BlockStructure) -> list | None:
        # inputs read directly by an accumulated partial reduction must vary with the loop (else every
        # iteration adds the same partial); marking them lets phase validation reject the structures
        # that would use per-iteration values after the loop
        varying = _loop_varying_inputs(structure.ops, n)
        assignment = dataclasses.replace(trivial, loops=tuple(0 if k in varying else None for k in range(n)))
        graph = _probe(structure, reference, assignment)
        if graph is None:
            return None
        encoder = Encoder(abstract=True)
        try:
            encoder.encode(graph, "p")
        except EncodingError:
            return None
        block_terms = {v: t for (scope, v), t in encoder.values.items() if scope.startswith("pk")}
        return [block_terms[v] for v in sorted(block_terms)]

    def expand(ops: tuple, keys: tuple, term_strs: tuple, accumulators: int, depth: int) -> Iterator[BlockStructure]:
        if time.perf_counter() - start > config.time_limit_s:
            stats.timed_out = True
            return
        stats.expanded += 1
        values = n + len(ops)
        if len(ops) >= depth:
            return
        for kind, attrs in alphabet:
            if kind in ACCUMULATORS and accumulators >= config.max_accumulators:
                continue
            for args in _argument_tuples(kind, values):
                if kind in ACCUMULATORS and not _accumulates_partials(kind, args, ops, n):
                    stats.pruned_order += 1
                    continue
                key = (kind.value, args, str(attrs))
                if ops and not _depends_on(ops, n, args, values - 1) and key <= keys[-1]:
                    stats.pruned_order += 1
                    continue
                candidate_ops = ops + ((kind, args, attrs),)
                structure = BlockStructure(n, candidate_ops, (values,))
                terms = terms_of(structure)
                if terms is None:
                    stats.ill_typed += 1
                    continue
                new_term = terms[values]
                signature = (str(new_term), kind in ACCUMULATORS or _after_loop(candidate_ops, n, values))
                if signature in term_strs:
                    stats.pruned_duplicate += 1
                    continue
                if kind != OpKind.CONSTANT and not target.admits_term(new_term):
                    stats.pruned_abstract += 1
                    continue
                outputs = _complete(target, terms, candidate_ops, n, len(reference.outputs))
                if outputs is not None:
                    done = BlockStructure(n, candidate_ops, outputs)
                    if (done.ops, done.outputs) not in seen_complete:
                        seen_complete.add((done.ops, done.outputs))
                        stats.complete += 1
                        yield done
                yield from expand(candidate_ops, keys + (key,), term_strs + (signature,),
                                  accumulators + (kind in ACCUMULATORS), depth)

    try:  # iterative deepening: the smallest structures first, and no deep dive into a wrong prefix
        for depth in range(1, config.max_block_ops + 1):
            yield from expand((), (), (), 0, depth)
            if stats.timed_out:
                break
    finally:
        stats.seconds = time.perf_counter() - start


def _argument_tuples(kind: OpKind, values: int) -> Iterator[tuple[int, ...]]:
    count = arity(kind)
    if count == 0:
        yield ()
    elif count == 1:
        for a in range(values):
            yield (a,)
    elif count == 2:
        for a in range(values):
            for b in range(values):
                if kind == OpKind.ACCUM_RESCALED_SUM and a == b:
                    continue
                yield (a, b)
    elif count == 3:
        return


# what each accumulator may combine across iterations: partial results of a reduction along the loop
_PARTIALS = {OpKind.ACCUM_SUM: ({OpKind.REDUCE_SUM, OpKind.MATMUL},),
             OpKind.ACCUM_SUM_SQUARES: ({OpKind.REDUCE_SUM, OpKind.MATMUL},),
             OpKind.ACCUM_MAX: ({OpKind.REDUCE_MAX},),
             OpKind.ACCUM_RESCALED_SUM: ({OpKind.REDUCE_SUM, OpKind.MATMUL}, {OpKind.REDUCE_MAX})}


def _accumulates_partials(kind: OpKind, args: tuple[int, ...], ops: tuple, n: int) -> bool:
    """Structural rule: an accumulator combines per-iteration partial reductions (a sum of partial
    sums or products, a max of partial maxes), never a raw tile, which would only repeat work the
    loop split cannot justify."""
    return all(a >= n and ops[a - n][0] in allowed for a, allowed in zip(args, _PARTIALS[kind]))


def _probe(structure: BlockStructure, reference: KernelGraph, assignment: MapAssignment) -> KernelGraph | None:
    """The untiled graph of a partial structure, storing its newest value; a per-iteration value is
    stored through a probe accumulator (the partial structure may still accumulate it later)."""
    for ops in (structure.ops, structure.ops + ((OpKind.ACCUM_SUM, structure.outputs, Attrs()),)):
        outputs = (structure.num_inputs + len(ops) - 1,) if ops is not structure.ops else structure.outputs
        try:
            return build_candidate(BlockStructure(structure.num_inputs, ops, outputs), reference, assignment,
                                   grid=(1,), forloop=1)
        except IRError as err:
            if "per-iteration" not in str(err):
                return None
    return None


def _loop_varying_inputs(ops: tuple, n: int) -> set[int]:
    varying = set()
    for kind, args, _ in ops:
        if kind in ACCUMULATORS:
            for a in args:
                if a >= n:
                    varying.update(x for x in ops[a - n][1] if x < n)
    return varying


def _depends_on(ops: tuple, n: int, args: tuple[int, ...], value: int) -> bool:
    """Does an op reading ``args`` depend (transitively) on ``value``?"""
    stack, seen = list(args), set()
    while stack:
        v = stack.pop()
        if v == value:
            return True
        if v in seen or v < n:
            continue
        seen.add(v)
        stack.extend(ops[v - n][1])
    return False


def _after_loop(ops: tuple, n: int, value: int) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if v < n:
            continue
        kind, args, _ = ops[v - n]
        if kind in ACCUMULATORS:
            return True
        stack.extend(args)
    return False


def _complete(target: AbstractTarget, terms: list, ops: tuple, n: int, num_outputs: int) -> tuple[int, ...] | None:
    """Output values for every target output, when the newest value completes the set and no op is dead."""
    found: dict[int, int] = {}
    for v in range(n, n + len(ops)):
        k = target.output_index(terms[v])
        if k is not None and _after_loop(ops, n, v) and k not in found:
            found[k] = v
    if len(found) != num_outputs or (n + len(ops) - 1) not in found.values():
        return None
    outputs = tuple(found[k] for k in range(num_outputs))
    live = set()
    stack = list(outputs)
    while stack:
        v = stack.pop()
        if v in live or v < n:
            continue
        live.add(v)
        stack.extend(ops[v - n][1])
    return outputs if len(live) == len(ops) else None


@dataclasses.dataclass
class FusedKernel:
    structure: BlockStructure
    graph: KernelGraph
    detail: str


def find_fused_kernels(reference: KernelGraph, grid_rank: int, config: EnumerationConfig = EnumerationConfig(),
                       max_structures: int = 50, stats: EnumerationStats | None = None) -> list[FusedKernel]:
    """Single-custom-kernel programs for ``reference``: enumerated structures whose maps resolve to a
    proved candidate (every proved map assignment is kept, in enumeration order)."""
    from prism_jax.search.maps import resolve_maps

    found = []
    for k, structure in enumerate(enumerate_structures(reference, config, stats)):
        if k >= max_structures:
            break
        for result in resolve_maps(structure, reference, grid_rank)[0]:
            found.append(FusedKernel(structure, result.graph, str(result.verdict)))
    return found
