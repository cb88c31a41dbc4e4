"""Region partitioning: which IR ops of the flat program become one superoptimizable region.

A region is a convex set of IR nodes (no path leaves it and comes back) holding a few heavy ops
(matmuls and reductions) and their elementwise neighbours. Elementwise and layout ops only join a
region when everything they read is *anchored*: a function input, a constant, or a value computed by
another region-eligible op. Values computed by opaque JAX equations or by slicing/concatenation
(e.g. RoPE's rotate-half) taint the elementwise ops that consume them until the next heavy op, so
such code stays in XLA instead of being glued onto a neighbouring region.
"""

from __future__ import annotations

import dataclasses

from prism_jax.frontend.program import FlatProgram, IrNode
from prism_jax.ir import OpKind

HEAVY = frozenset({OpKind.MATMUL, OpKind.REDUCE_SUM, OpKind.REDUCE_MAX})
BOUNDARY = frozenset({OpKind.SLICE, OpKind.CONCAT})
SOURCES = frozenset({OpKind.CONSTANT, OpKind.IOTA})


@dataclasses.dataclass(frozen=True)
class RegionConfig:
    """Bounds on one region, like Mirage's limit on kernel ops (we count the heavy ones).

    The default of 6 heavy ops keeps QK-norm attention (two norms, two matmuls, softmax's max and
    sum) in one region while cutting a whole transformer layer into several."""

    max_heavy_ops: int = 6
    max_ops: int = 64
    min_heavy_ops: int = 1


def eligible_nodes(program: FlatProgram) -> set[int]:
    """Indices of IR nodes that may belong to a region (see the module docstring)."""
    producers = program.producers()
    eligible: set[int] = set()
    for i, node in enumerate(program.nodes):
        if not isinstance(node, IrNode) or node.kind in BOUNDARY:
            continue
        if node.kind in HEAVY or node.kind in SOURCES:
            eligible.add(i)
            continue
        if all(_anchored(program, producers, eligible, v) for v in node.inputs):
            eligible.add(i)
    return eligible


def _anchored(program: FlatProgram, producers: dict[int, int], eligible: set[int], v: int) -> bool:
    p = producers.get(v)
    return p is None or p in eligible  # None: a function input or a closed-over constant


def partition(program: FlatProgram, config: RegionConfig = RegionConfig()) -> list[list[int]]:
    """Greedy clustering in program order under the budget and convexity; returns node index lists."""
    eligible = eligible_nodes(program)
    producers = program.producers()
    preds = {i: {producers[v] for v in node.inputs if isinstance(v, int) and v in producers}
             for i, node in enumerate(program.nodes)}
    descendants = _descendants(program, preds)
    region_of: dict[int, int] = {}
    regions: dict[int, set[int]] = {}
    for i, node in enumerate(program.nodes):
        if i not in eligible or node.kind in SOURCES:
            continue  # sources are rematerialized inside every region that reads them
        candidates = sorted({region_of[p] for p in preds[i] if p in region_of})
        placed = False
        for choice in ([candidates] if len(candidates) > 1 else []) + [[c] for c in candidates]:
            merged = set().union(*(regions[r] for r in choice)) | {i}
            if _within_budget(program, merged, config) and _convex(merged, descendants, preds):
                target = choice[0]
                for r in choice[1:]:
                    for n in regions.pop(r):
                        region_of[n] = target
                regions[target] = merged
                for n in merged:
                    region_of[n] = target
                placed = True
                break
        if not placed:
            regions[i] = {i}
            region_of[i] = i
    kept = [sorted(r) for r in regions.values() if _heavy_count(program, r) >= config.min_heavy_ops]
    return sorted(kept, key=lambda r: r[0])


def _heavy_count(program: FlatProgram, nodes: set[int]) -> int:
    return sum(1 for n in nodes if program.nodes[n].kind in HEAVY)


def _within_budget(program: FlatProgram, nodes: set[int], config: RegionConfig) -> bool:
    return _heavy_count(program, nodes) <= config.max_heavy_ops and len(nodes) <= config.max_ops


def _descendants(program: FlatProgram, preds: dict[int, set[int]]) -> list[int]:
    """Bitset of the nodes reachable from each node (the node itself included)."""
    succ: list[list[int]] = [[] for _ in program.nodes]
    for i, ps in preds.items():
        for p in ps:
            succ[p].append(i)
    desc = [0] * len(program.nodes)
    for i in reversed(range(len(program.nodes))):
        bits = 1 << i
        for s in succ[i]:
            bits |= desc[s]
        desc[i] = bits
    return desc


def _convex(nodes: set[int], descendants: list[int], preds: dict[int, set[int]]) -> bool:
    """No path leaves ``nodes`` and re-enters: every outside predecessor of a member must not be
    reachable from the set."""
    reach = 0
    for n in nodes:
        reach |= descendants[n]
    for n in nodes:
        for p in preds[n]:
            if p not in nodes and (reach >> p) & 1:
                return False
    return True
