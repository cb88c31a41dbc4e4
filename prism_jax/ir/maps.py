"""Data-to-grid maps (imap/omap) and data-to-loop maps (fmap).

A map is a Boolean matrix m[d][p]: "data dim d is split along parallel (grid) dim p". Entries are
concrete ``bool`` or a :class:`MapVar` still to be chosen by the search. A dim split along several
grid dims is split major-to-minor in grid-dim order, then by the for-loop (the innermost split), so
a tile's dim is D / Π_p (1 − m[d,p] + m[d,p]·g_p), divided by F where the fmap is set.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator, Mapping, Sequence, Union

import sympy

from prism_jax.ir.errors import IRError
from prism_jax.ir.symbolic import Size, div, mul, to_sympy


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class MapVar:
    """A Boolean map variable m[d,p] left for the search to resolve."""

    name: str

    def __str__(self) -> str:
        return f"?{self.name}"


MapEntry = Union[bool, MapVar]
MapMatrix = tuple[tuple[MapEntry, ...], ...]
"""``rank`` rows (data dims) × ``len(grid)`` columns (grid dims)."""


def no_split(rank: int, grid_rank: int) -> MapMatrix:
    return tuple((False,) * grid_rank for _ in range(rank))


def map_from_dims(rank: int, grid_rank: int, dim_of_grid: Sequence[int | None]) -> MapMatrix:
    """The Mirage-style encoding: for each grid dim p, the data dim it splits (or None: replicate)."""
    if len(dim_of_grid) != grid_rank:
        raise IRError(f"map names {len(dim_of_grid)} grid dims, the grid has {grid_rank}")
    rows = [[False] * grid_rank for _ in range(rank)]
    for p, d in enumerate(dim_of_grid):
        if d is not None:
            if not 0 <= d < rank:
                raise IRError(f"grid dim {p} maps to data dim {d}, outside rank {rank}")
            rows[d][p] = True
    return tuple(tuple(r) for r in rows)


def loop_map(rank: int, dim: int | None) -> tuple[bool, ...]:
    if dim is not None and not 0 <= dim < rank:
        raise IRError(f"for-loop maps data dim {dim}, outside rank {rank}")
    return tuple(d == dim for d in range(rank))


def is_concrete_map(entries) -> bool:
    if isinstance(entries, tuple):  # a matrix or a row (hot: every validation and cost estimate asks)
        return all(is_concrete_map(e) if isinstance(e, tuple) else e is True or e is False for e in entries)
    return entries is True or entries is False


def map_variables(entries) -> tuple[MapVar, ...]:
    return tuple(sorted({e for e in _flat(entries) if isinstance(e, MapVar)}))


def substitute_map(entries, assignment: Mapping[str, bool]):
    """Resolve map variables; unknown ones stay symbolic."""
    if not assignment:
        return entries
    if isinstance(entries, tuple):
        return tuple(substitute_map(e, assignment) for e in entries)
    if isinstance(entries, MapVar) and entries.name in assignment:
        return bool(assignment[entries.name])
    return entries


def _flat(entries) -> Iterator[MapEntry]:
    if isinstance(entries, tuple):
        for e in entries:
            yield from _flat(e)
    else:
        yield entries


def check_map_shape(matrix: MapMatrix, rank: int, grid_rank: int, what: str) -> None:
    if len(matrix) != rank or any(len(row) != grid_rank for row in matrix):
        raise IRError(f"{what}: map must be {rank}x{grid_rank} (data dims x grid dims), got "
                      f"{len(matrix)}x{len(matrix[0]) if matrix else 0}")
    for row in matrix:
        for e in row:
            if not isinstance(e, (bool, MapVar)):
                raise IRError(f"{what}: map entry {e!r} is neither bool nor MapVar")
    for p in range(grid_rank):
        if sum(1 for row in matrix if row[p] is True) > 1:
            raise IRError(f"{what}: grid dim {p} splits more than one data dim")


def split_factor(row: Sequence[MapEntry], grid: Sequence[Size], loop_entry: MapEntry, forloop: Size) -> Size:
    """How many pieces a data dim is cut into (concrete map entries only)."""
    if not is_concrete_map(tuple(row) + (loop_entry,)):
        raise IRError("split_factor needs a concrete map; use tile_dim_expr for symbolic maps")
    parts = [g for g, m in zip(grid, row) if m]
    if loop_entry:
        parts.append(forloop)
    return mul(*parts)


def tile_dim(dim: Size, row: Sequence[MapEntry], grid: Sequence[Size], loop_entry: MapEntry = False,
             forloop: Size = 1) -> Size:
    return div(dim, split_factor(row, grid, loop_entry, forloop))


def tile_dim_expr(dim: Size, row: Sequence[MapEntry], grid: Sequence[Size], loop_entry: MapEntry = False,
                  forloop: Size = 1) -> sympy.Expr:
    """D / Π_p(1 − m[d,p] + m[d,p]·g_p) (and likewise for the loop) with Boolean map variables."""

    def factor(entry: MapEntry, size: Size) -> sympy.Expr:
        m = sympy.Integer(int(entry)) if isinstance(entry, bool) else sympy.Symbol(entry.name)
        return 1 - m + m * to_sympy(size)

    denominator = sympy.Mul(*(factor(m, g) for m, g in zip(row, grid))) * factor(loop_entry, forloop)
    return to_sympy(dim) / denominator


def block_offsets(row: Sequence[bool], grid: Sequence[int], block: Sequence[int],
                  loop_entry: bool = False, forloop: int = 1, iteration: int = 0) -> tuple[int, int]:
    """(chunk index, chunk count) of a block/iteration along one data dim: grid dims major-to-minor,
    then the loop innermost."""
    index, count = 0, 1
    for m, g, b in zip(row, grid, block):
        if m:
            index, count = index * g + b, count * g
    if loop_entry:
        index, count = index * forloop + iteration, count * forloop
    return index, count


def enumerate_assignments(variables: Sequence[MapVar]) -> Iterator[dict[str, bool]]:
    for values in itertools.product((False, True), repeat=len(variables)):
        yield {v.name: b for v, b in zip(variables, values)}
