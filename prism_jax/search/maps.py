"""Map instantiation: the imap/fmap/omap assignments of a block-graph *structure* (ops fixed, maps
free), canonical up to permutation of grid dims, filtered by shape checking, then verified.

Level 1 of the search produces structures whose maps are left open (Prism's Boolean map variables);
this module resolves them, as the paper does inside verification."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Iterator, Sequence

from prism_jax.ir import (Attrs, BlockGraph, BlockGraphBuilder, IRError, KernelGraph, KernelGraphBuilder, OpKind,
                          Size, TensorType, infer_types, map_from_dims, sym, tile_dim)
from prism_jax.ir.ops import ACCUMULATORS
from prism_jax.verify import AutoVerifier, Status, Verdict

GRID_NAMES = ("gx", "gy", "gz")
LOOP_NAME = "F"


@dataclasses.dataclass(frozen=True)
class BlockStructure:
    """What a custom kernel computes, without its maps: block input k loads kernel input k; value ids
    0..n-1 are the input tiles and op i defines value n+i."""

    num_inputs: int
    ops: tuple[tuple[OpKind, tuple[int, ...], Attrs], ...]
    outputs: tuple[int, ...]

    @staticmethod
    def from_block(block: BlockGraph) -> "BlockStructure":
        """Strip the maps (and sizes) from a block graph whose input k loads kernel input k."""
        renumber = {inp.value: k for k, inp in enumerate(sorted(block.inputs, key=lambda i: i.source))}
        if sorted(inp.source for inp in block.inputs) != list(range(len(block.inputs))):
            raise IRError("from_block needs one block input per kernel input, in order")
        ops = []
        for op in block.ops:
            ops.append((op.kind, tuple(renumber[v] for v in op.inputs), op.attrs))
            renumber[op.outputs[0]] = len(block.inputs) + len(ops) - 1
        return BlockStructure(len(block.inputs), tuple(ops), tuple(renumber[o.value] for o in block.outputs))


@dataclasses.dataclass(frozen=True)
class MapAssignment:
    """Per grid dim, the data dim it splits (None: replicated for inputs, summed for outputs), per input;
    the data dim the loop splits, per input; per output, the data dim each grid dim places."""

    inputs: tuple[tuple[int | None, ...], ...]  # [input][grid dim] -> data dim
    loops: tuple[int | None, ...]  # [input] -> data dim split by the for-loop
    outputs: tuple[tuple[int | None, ...], ...]  # [output][grid dim] -> data dim

    def grid_signature(self, p: int) -> tuple:
        return (tuple(-1 if m[p] is None else m[p] for m in self.inputs),
                tuple(-1 if m[p] is None else m[p] for m in self.outputs))


def _grid_choices(rank: int, grid_rank: int) -> Iterator[tuple[int | None, ...]]:
    """Each grid dim splits one data dim or none; a data dim is split by at most one grid dim."""
    for choice in itertools.product([None, *range(rank)], repeat=grid_rank):
        used = [d for d in choice if d is not None]
        if len(used) == len(set(used)):
            yield choice


def map_assignments(structure: BlockStructure, reference: KernelGraph, grid_rank: int) -> Iterator[MapAssignment]:
    """Canonical assignments whose shapes check: inputs are assigned one at a time and every op whose
    operands are assigned is shape-checked at once (symbolic dimension matching prunes early); outputs
    must assemble the reference's output types; one assignment per class of grid-dim permutations
    (grid signatures in decreasing order), and every grid dim splits at least one input (else its
    blocks would all repeat the same work)."""
    grid = tuple(sym(n) for n in GRID_NAMES[:grid_rank])
    types = list(reference.input_types)
    # without an accumulator nothing may vary with the loop: a per-iteration value could not be stored
    accumulates = any(kind in ACCUMULATORS for kind, _, _ in structure.ops)
    ready = _ready_ops(structure, range(structure.num_inputs))

    def inputs_from(k: int, chosen: list, tiles: list) -> Iterator[tuple[list, list]]:
        if k == structure.num_inputs:
            yield chosen, tiles
            return
        for grid_dims in _grid_choices(types[k].rank, grid_rank):
            for loop in (None, *range(types[k].rank)) if accumulates else (None,):
                trial = chosen + [(grid_dims, loop)]
                if not _grid_order_open(trial, grid_rank):
                    continue
                extended = _with_input(structure, tiles, k, _tile(types[k], tuple(grid_dims), loop, grid), ready[k])
                if extended is not None:
                    yield from inputs_from(k + 1, trial, extended)

    for chosen, tiles in inputs_from(0, [], [None] * (structure.num_inputs + len(structure.ops))):
        if any(all(g[p] is None for g, _ in chosen) for p in range(grid_rank)):
            continue
        options = [[dims for dims in _grid_choices(tiles[v].rank, grid_rank)
                    if _assembled(tiles[v], dims, grid) == reference.output_types[k]]
                   for k, v in enumerate(structure.outputs)]
        for outputs in itertools.product(*options):
            a = MapAssignment(tuple(g for g, _ in chosen), tuple(loop for _, loop in chosen), tuple(outputs))
            signatures = [a.grid_signature(p) for p in range(grid_rank)]
            if signatures == sorted(signatures, reverse=True):
                yield a


def parallel_assignments(structure: BlockStructure, reference: KernelGraph,
                         grid_rank: int) -> Iterator[MapAssignment]:
    """Canonical assignments of *parallel* kernels: every grid dim places one dim of the first output
    (no block sums a partial result with others: cross-block reductions are for multi-kernel
    programs), and splits, in each input, either nothing or a dim of the same symbolic size
    (dimension matching by symbol). Grid dims place output dims in increasing order, one assignment
    per permutation class. Far fewer candidates than :func:`map_assignments`, found much faster."""
    grid = tuple(sym(n) for n in GRID_NAMES[:grid_rank])
    types = list(reference.input_types)
    first_out = reference.output_types[0]
    accumulates = any(kind in ACCUMULATORS for kind, _, _ in structure.ops)
    placeable = [j for j, d in enumerate(first_out.shape) if d != 1]

    # inputs in the order ops first read them, so shape checks prune as early as possible
    first_read = {}
    for i, (_, args, _) in enumerate(structure.ops):
        for a in args:
            first_read.setdefault(a, i)
    order = sorted(range(structure.num_inputs), key=lambda k: (first_read.get(k, len(structure.ops)), k))
    ready = _ready_ops(structure, order)

    def inputs_from(position: int, placed: tuple, chosen: dict, tiles: list, loop_size) -> Iterator[tuple[dict, list]]:
        if position == structure.num_inputs:
            yield chosen, tiles
            return
        k = order[position]
        shape = types[k].shape
        per_dim = [[None, *(d for d, size in enumerate(shape) if size == first_out.shape[j])] for j in placed]
        # the loop walks one logical dim: in every input it splits a dim of that one size (never a unit dim)
        loops = (None, *(d for d, size in enumerate(shape) if size != 1 and loop_size in (None, size)))
        for grid_dims in itertools.product(*per_dim):
            used = [d for d in grid_dims if d is not None]
            if len(used) != len(set(used)):
                continue
            for loop in loops if accumulates else (None,):
                extended = _with_input(structure, tiles, k, _tile(types[k], tuple(grid_dims), loop, grid),
                                       ready[position])
                if extended is not None:
                    size = shape[loop] if loop is not None else loop_size
                    yield from inputs_from(position + 1, placed, {**chosen, k: (grid_dims, loop)}, extended, size)

    for placed in itertools.combinations(placeable, grid_rank):
        start = [None] * (structure.num_inputs + len(structure.ops))
        for by_input, tiles in inputs_from(0, placed, {}, start, None):
            chosen = [by_input[k] for k in range(structure.num_inputs)]
            if any(all(g[p] is None for g, _ in chosen) for p in range(grid_rank)):
                continue
            first = tuple(placed)
            if _assembled(tiles[structure.outputs[0]], first, grid) != first_out:
                continue
            others = [[dims for dims in _grid_choices(tiles[v].rank, grid_rank)
                       if None not in dims and _assembled(tiles[v], dims, grid) == reference.output_types[k]]
                      for k, v in enumerate(structure.outputs) if k > 0]
            for rest in itertools.product(*others):
                yield MapAssignment(tuple(g for g, _ in chosen), tuple(loop for _, loop in chosen), (first, *rest))


def _grid_order_open(chosen: list, grid_rank: int) -> bool:
    """Can the grid signatures still come out in decreasing order? They compare the inputs' entries
    first, so a strictly increasing pair among the inputs chosen so far can never be repaired."""
    prefixes = [tuple(-1 if g[p] is None else g[p] for g, _ in chosen) for p in range(grid_rank)]
    return all(prefixes[p] >= prefixes[p + 1] for p in range(grid_rank - 1))


def _ready_ops(structure: BlockStructure, order) -> list[list[int]]:
    """Per position in ``order`` (the order inputs are placed in), the ops that become computable
    once that input is placed (ops are topologically ordered, so one pass finds chains too)."""
    known: set[int] = set()
    ready = []
    n = structure.num_inputs
    for k in order:
        known.add(k)
        now = []
        for i, (_, args, _) in enumerate(structure.ops):
            if n + i not in known and all(v in known for v in args):
                now.append(i)
                known.add(n + i)
        ready.append(now)
    return ready


def _with_input(structure: BlockStructure, tiles: list, k: int, tile: TensorType, ready: list[int]) -> list | None:
    """``tiles`` (tile types of the values known so far) with input ``k`` known and the ``ready`` ops
    (those it makes computable) computed; None when an op's tile shapes disagree (symbolic dimension
    matching)."""
    tiles = list(tiles)
    tiles[k] = tile
    n = structure.num_inputs
    for i in ready:
        kind, args, attrs = structure.ops[i]
        out = _infer(kind, attrs, tuple(tiles[v] for v in args))
        if out is None:
            return None
        tiles[n + i] = out
    return tiles


@functools.lru_cache(maxsize=1 << 16)
def _tile(t: TensorType, grid_dims: tuple, loop_dim: int | None, grid: tuple) -> TensorType:
    imap = map_from_dims(t.rank, len(grid), grid_dims)
    loop = sym(LOOP_NAME)
    return t.with_shape(tile_dim(d, row, grid, i == loop_dim, loop) for i, (d, row) in enumerate(zip(t.shape, imap)))


_INFERRED: dict[tuple, TensorType | None] = {}


def _infer(kind: OpKind, attrs: Attrs, operands: tuple[TensorType, ...]) -> TensorType | None:
    """An op's tile type, memoized: the map search asks the same question ~10^5 times per region
    (keyed by the kind's value: an Enum member hashes in Python)."""
    key = (kind.value, attrs, operands)
    found = _INFERRED.get(key, _INFERRED)
    if found is not _INFERRED:
        return found
    if len(_INFERRED) > 1 << 17:
        _INFERRED.clear()
    try:
        found = infer_types(kind, attrs, operands, f"block {kind}")
    except IRError:
        found = None
    _INFERRED[key] = found
    return found


def _assembled(tile: TensorType, dims: Sequence[int | None], grid) -> TensorType:
    shape = list(tile.shape)
    for p, d in enumerate(dims):
        if d is not None:
            shape[d] = shape[d] * grid[p]
    return tile.with_shape(shape)


def build_candidate(structure: BlockStructure, reference: KernelGraph, assignment: MapAssignment,
                    grid: Sequence[Size] | None = None, forloop: Size | None = None) -> KernelGraph:
    """One custom kernel computing ``structure`` over the reference's inputs with the given maps;
    grid and loop extents default to symbols. Raises IRError when the maps make shapes disagree."""
    grid_rank = len(assignment.inputs[0]) if assignment.inputs else 1
    grid = tuple(grid) if grid is not None else tuple(sym(n) for n in GRID_NAMES[:grid_rank])
    forloop = forloop if forloop is not None else sym(LOOP_NAME)
    kb = KernelGraphBuilder(f"{reference.name}.candidate")
    sources = [kb.input(t, name) for t, name in zip(reference.input_types, reference.input_names)]
    types: list[TensorType] = list(reference.input_types)
    bb = BlockGraphBuilder(grid, forloop)
    values = [bb.input(k, types[k], map_from_dims(types[k].rank, grid_rank, assignment.inputs[k]),
                       tuple(d == assignment.loops[k] for d in range(types[k].rank)))
              for k in range(structure.num_inputs)]
    for kind, args, attrs in structure.ops:
        values.append(bb.op(kind, *(values[v] for v in args), **attrs.as_dict()))
    for out, dims in zip(structure.outputs, assignment.outputs):
        bb.output(values[out], map_from_dims(bb.type_of(values[out]).rank, grid_rank, dims))
    outs = kb.custom_kernel(bb.build(types), *sources)
    return kb.build(list(outs))


@dataclasses.dataclass
class MapSearchResult:
    assignment: MapAssignment
    graph: KernelGraph
    verdict: Verdict


@dataclasses.dataclass
class MapSearchStats:
    assignments: int = 0
    ill_typed: int = 0
    verified: int = 0
    proved: int = 0
    refuted: int = 0
    unknown: int = 0


def resolve_maps(structure: BlockStructure, reference: KernelGraph, grid_rank: int,
                 verifier: AutoVerifier | None = None) -> tuple[list[MapSearchResult], MapSearchStats]:
    """Every canonical map assignment of ``structure`` that type-checks, verified against ``reference``;
    returns the proved ones (in enumeration order, which is deterministic) and counts of each outcome."""
    verifier = verifier or AutoVerifier()
    stats = MapSearchStats()
    proved: list[MapSearchResult] = []
    for assignment in map_assignments(structure, reference, grid_rank):
        stats.assignments += 1
        try:
            graph = build_candidate(structure, reference, assignment)
        except IRError:
            stats.ill_typed += 1
            continue
        stats.verified += 1
        verdict = verifier.verify(reference, graph)
        if verdict.status is Status.EQUAL:
            stats.proved += 1
            proved.append(MapSearchResult(assignment, graph, verdict))
        elif verdict.status is Status.NOT_EQUAL:
            stats.refuted += 1
        else:
            stats.unknown += 1
    return proved, stats

