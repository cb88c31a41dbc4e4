"""Two-kernel programs by splitting a kernel's loop reduction across blocks (split-K, and for attention
split-KV / flash-decoding): when a kernel's grid leaves the device mostly idle (decode shapes: few rows,
a long reduction), a new grid dim ``C`` also splits the loop's dim, so each block reduces one chunk.

Kernel 1 is the kernel up to and including its accumulators, storing every accumulator's state with
a new leading chunk axis (the rescaled sums also store the running max they are relative to); kernel 2
merges the states along that axis by each accumulator's own merge (sum, max, or rescale to the global
max and sum) and runs the kernel's after-loop ops. The merge depends only on the accumulator kinds, so
every kernel with accumulators has a split form; verification decides, as for any candidate."""

from __future__ import annotations

from prism_jax.ir import BlockGraphBuilder, IRError, KernelGraph, KernelGraphBuilder, OpKind, map_from_dims, sym
from prism_jax.ir.ops import ACCUMULATORS, SOURCES
from prism_jax.search.maps import GRID_NAMES, LOOP_NAME, BlockStructure, MapAssignment

CHUNK_NAME = "C"  # the grid dim over chunks of the loop's dim


def split_candidate(structure: BlockStructure, reference: KernelGraph, assignment: MapAssignment) -> KernelGraph | None:
    """The two-kernel form of ``structure`` under ``assignment``; None when it has none (no loop
    reduction, three grid dims already, several outputs, or after-loop ops that read loop-invariant
    tiles other than constants)."""
    n = structure.num_inputs
    grid_rank = len(assignment.inputs[0])
    if grid_rank >= 3 or len(structure.outputs) != 1 or all(loop is None for loop in assignment.loops):
        return None
    post = _after_loop(structure)
    states = [n + i for i, (kind, _, _) in enumerate(structure.ops) if kind in ACCUMULATORS]
    if not states:
        return None
    def available_to_merge_kernel(value: int) -> bool:  # an after-loop value or a constant it can recreate
        return value in post or (value >= n and structure.ops[value - n][0] in SOURCES)

    after_loop_reads = [a for i, (kind, args, _) in enumerate(structure.ops)
                        if n + i in post and kind not in ACCUMULATORS for a in args]
    if not all(available_to_merge_kernel(a) for a in after_loop_reads):
        return None
    try:
        return _build(structure, reference, assignment, post, states)
    except IRError:
        return None


def _after_loop(structure: BlockStructure) -> set[int]:
    n, post = structure.num_inputs, set()
    for i, (kind, args, _) in enumerate(structure.ops):
        if kind in ACCUMULATORS or any(a in post for a in args):
            post.add(n + i)
    return post


def _build(structure: BlockStructure, reference: KernelGraph, assignment: MapAssignment, post: set[int],
           states: list[int]) -> KernelGraph:
    n = structure.num_inputs
    grid_rank = len(assignment.inputs[0])
    grid = tuple(sym(name) for name in GRID_NAMES[:grid_rank])
    out_dims = assignment.outputs[0]
    kb = KernelGraphBuilder(f"{reference.name}.split")
    sources = [kb.input(t, name) for t, name in zip(reference.input_types, reference.input_names)]
    types = list(reference.input_types)

    # kernel 1: the loop part over grid + (C,), C splitting the loop's dim of every looped input
    bb = BlockGraphBuilder(grid + (sym(CHUNK_NAME),), sym(LOOP_NAME))
    values: dict[int, int] = {}
    for k in range(n):
        dims = tuple(assignment.inputs[k]) + (assignment.loops[k],)
        values[k] = bb.input(k, types[k], map_from_dims(types[k].rank, grid_rank + 1, dims),
                             tuple(d == assignment.loops[k] for d in range(types[k].rank)))
    maxes: dict[int, int] = {}  # log-scale value -> its running max (a state the merge needs)
    for i, (kind, args, attrs) in enumerate(structure.ops):
        if n + i in post and kind not in ACCUMULATORS:
            continue
        values[n + i] = bb.op(kind, *(values[a] for a in args), **attrs.as_dict())
        if kind == OpKind.ACCUM_RESCALED_SUM and args[1] not in maxes:
            maxes[args[1]] = bb.accumulate(OpKind.ACCUM_MAX, values[args[1]])
    stored = [values[s] for s in states] + list(maxes.values())
    for value in stored:
        shape = bb.type_of(value).shape
        chunked = bb.op(OpKind.RESHAPE, value, shape=(1, *shape))
        bb.output(chunked, map_from_dims(len(shape) + 1, grid_rank + 1, tuple(d + 1 for d in out_dims) + (0,)))
    parts = kb.custom_kernel(bb.build(types), *sources)

    # kernel 2: merge the chunk states, then the after-loop ops, over the original grid
    part_types = [kb.type_of(v) for v in parts]
    cb = BlockGraphBuilder(grid, 1)
    tiles = [cb.input(k, t, map_from_dims(t.rank, grid_rank, tuple(d + 1 for d in out_dims)))
             for k, t in enumerate(part_types)]
    max_tiles = dict(zip(maxes, tiles[len(states):]))
    merged: dict[int, int] = {}
    weights: dict[int, int] = {}
    for state, tile in zip(states, tiles):
        kind, args, _ = structure.ops[state - n]
        if kind == OpKind.ACCUM_MAX:
            total = cb.op(OpKind.REDUCE_MAX, tile, axes=(0,))
        elif kind == OpKind.ACCUM_RESCALED_SUM:
            if args[1] not in weights:  # exp(m_c - max_c m_c): each chunk's state rescaled to the global max
                chunk_max = max_tiles[args[1]]
                weights[args[1]] = cb.op(OpKind.EXP, cb.op(OpKind.SUB, chunk_max,
                                                           cb.op(OpKind.REDUCE_MAX, chunk_max, axes=(0,))))
            total = cb.op(OpKind.REDUCE_SUM, cb.op(OpKind.MUL, tile, weights[args[1]]), axes=(0,))
        else:  # sums (of squares too): the chunks' partial sums add up
            total = cb.op(OpKind.REDUCE_SUM, tile, axes=(0,))
        merged[state] = cb.op(OpKind.RESHAPE, total, shape=tuple(cb.type_of(total).shape[1:]))
    for i, (kind, args, attrs) in enumerate(structure.ops):
        v = n + i
        if v in merged or v not in post and kind not in SOURCES:
            continue
        if kind in SOURCES:
            merged[v] = cb.op(kind, **attrs.as_dict())
        else:
            merged[v] = cb.op(kind, *(merged[a] for a in args), **attrs.as_dict())
    (out,) = structure.outputs
    cb.output(merged[out], map_from_dims(cb.type_of(merged[out]).rank, grid_rank, out_dims))
    (result,) = kb.custom_kernel(cb.build(part_types), *parts)
    return kb.build([result])


def is_split(graph: KernelGraph) -> bool:
    return sum(op.kind == OpKind.CUSTOM_KERNEL for op in graph.ops) == 2

