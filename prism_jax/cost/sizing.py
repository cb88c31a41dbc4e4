"""Ranking symbolic candidates: the analytic cost of each at its best size assignment for the region's
concrete shapes. Sizes are grid extents and the for-loop extent (powers of two that divide the dims
they split) with every block's tiles fitting the device's on-chip memory; a coordinate descent over
those options finds a good assignment in a few dozen estimates. The tuner later picks sizes for real
(and measures); this only orders candidates."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Mapping

from prism_jax.cost.devices import DeviceSpec
from prism_jax.cost.model import CostEstimate, estimate, tile_bytes
from prism_jax.ir import Divisible, IRError, KernelGraph, OpKind, instantiate
from prism_jax.ir.symbolic import free_symbols, substitute


@dataclasses.dataclass(frozen=True)
class Ranked:
    estimate: CostEstimate
    sizes: Mapping[str, int]
    onchip_bytes: int  # the largest block's tiles: at equal time, less on chip means more resident blocks

    @property
    def seconds(self) -> float:
        return self.estimate.seconds

    @property
    def key(self) -> tuple[float, int]:
        return (round(self.seconds, 12), self.onchip_bytes)


def size_options(graph: KernelGraph, fixed: Mapping[str, int], min_tile: int = 1) -> dict[str, list[int]]:
    """Per grid/loop symbol of the custom kernels, the powers of two that divide every dim it splits
    and leave tiles of at least ``min_tile`` where the dim allows (the region's sizes are ``fixed``)."""
    options: dict[str, int] = {}
    extents: set[str] = set()
    for op in graph.ops:
        if op.kind != OpKind.CUSTOM_KERNEL:
            continue
        for extent in (*op.block.grid, op.block.forloop):
            extents |= free_symbols(extent) - set(fixed)
        for item in op.block.constraints([graph.values[v] for v in op.inputs]):
            if not isinstance(item, Divisible):
                continue
            numerator = substitute(item.numerator, fixed)
            dim = numerator if isinstance(numerator, int) else None
            for name in sorted(free_symbols(item.denominator) - set(fixed)):
                bound = _power_of_two_part(dim) if dim is not None else 1 << 12
                if dim is not None and dim >= 2 * min_tile:
                    bound = min(bound, _power_of_two_part(dim // min_tile))
                options[name] = min(options.get(name, bound), bound)
    for name in extents - set(options):  # an extent that splits nothing stays 1
        options[name] = 1
    return {name: [1 << k for k in range(int(math.log2(bound)) + 1)] for name, bound in sorted(options.items())}


def _power_of_two_part(n: int) -> int:
    return n & -n if n > 0 else 1


EXHAUSTIVE_LIMIT = 256  # size assignments tried one by one; beyond it, coordinate descent


@dataclasses.dataclass(frozen=True)
class TileRules:
    """What a backend accepts beyond fitting on chip: the smallest matmul tiles (tensor-core dots need
    16), whether every block dim must be a power of two (Triton's block shapes), and whether block
    inputs read only as matmul operands stream from memory instead of taking on-chip space (the native
    CPU kernels read them in place: a weight tile of a whole-row block may be larger than the cache)."""

    min_matmul_tile: int = 1
    power_of_two_blocks: bool = False
    streamed_matmul_operands: bool = False

    @staticmethod
    def for_device(device: DeviceSpec) -> "TileRules":
        """The rules a target's kernels follow by default: tensor-core tiles on GPUs; on a CPU the C++
        kernels', whose matmuls read their operands in place (:data:`NATIVE_CPU`)."""
        return TileRules(MIN_MATMUL_TILE) if device.kind == "gpu" else NATIVE_CPU


TRITON = TileRules(min_matmul_tile=16, power_of_two_blocks=True)  # Pallas' Triton lowering
NATIVE_CPU = TileRules(streamed_matmul_operands=True)  # codegen/cpp: matmul operands read in place


def best_sizes(graph: KernelGraph, device: DeviceSpec, fixed: Mapping[str, int], rounds: int = 3,
               rules: TileRules | None = None) -> Ranked | None:
    """The cheapest size assignment: every combination when there are few, else coordinate descent
    from the smallest, the largest and the middle extents (None when nothing fits on chip)."""
    ranked = ranked_sizes(graph, device, fixed, 1, rounds, rules)
    return ranked[0] if ranked else None


def ranked_sizes(graph: KernelGraph, device: DeviceSpec, fixed: Mapping[str, int], limit: int = 4,
                 rounds: int = 3, rules: TileRules | None = None) -> list[Ranked]:
    """The ``limit`` cheapest size assignments that fit (the tuner's shortlist), cheapest first."""
    rules = rules or TileRules.for_device(device)
    options = size_options(graph, fixed, rules.min_matmul_tile)
    names = sorted(options)
    seen: dict[tuple, Ranked | None] = {}

    def cost(sizes: dict[str, int]) -> Ranked | None:
        key = tuple(sizes[n] for n in names)
        if key not in seen:
            seen[key] = _cost(graph, {**fixed, **sizes}, device, rules)
        return seen[key]

    if math.prod(len(options[n]) for n in names) <= EXHAUSTIVE_LIMIT:
        for values in itertools.product(*(options[n] for n in names)):
            cost(dict(zip(names, values)))
    else:
        for pick in (lambda v: v[0], lambda v: v[-1], lambda v: v[len(v) // 2]):  # smallest, largest, middle
            _descend(cost, {n: pick(v) for n, v in options.items()}, options, rounds)
    found = sorted((r for r in seen.values() if r is not None), key=lambda r: r.key)
    return found[:limit]


def _descend(cost, current: dict[str, int], options: dict[str, list[int]], rounds: int) -> None:
    best = cost(current)
    for _ in range(rounds):
        improved = False
        for name, values in options.items():
            for value in values:
                trial = dict(current, **{name: value})
                found = cost(trial)
                if found is not None and (best is None or found.key < best.key):
                    best, current, improved = found, trial, True
        if not improved:
            break


def _cost(graph: KernelGraph, sizes: dict[str, int], device: DeviceSpec, rules: TileRules) -> Ranked | None:
    try:  # the symbolic graph is valid, so binding sizes can only break divisibility, which binding raises;
        concrete = instantiate(graph, sizes, validate=False)  # validating again would double the ranking's time
    except IRError:
        return None
    footprint = 0
    for op in concrete.ops:
        if op.kind == OpKind.CUSTOM_KERNEL:
            on_chip = tile_bytes(op.block, rules.streamed_matmul_operands)
            if on_chip > device.onchip_bytes or not _tiles_ok(op.block, rules):
                return None
            footprint = max(footprint, on_chip)
    return Ranked(estimate(concrete, device, rules.streamed_matmul_operands), dict(sizes), footprint)


MIN_MATMUL_TILE = 16  # tensor-core tiles (Triton's minimum dot size) on GPUs


def _tiles_ok(block, rules: TileRules) -> bool:
    """With ``power_of_two_blocks`` every block a BlockSpec loads or stores is a power of two. (Matmul
    tiles below ``rules.min_matmul_tile`` only come from whole dims that small: ``size_options`` never
    splits a dim below it.)"""
    if rules.power_of_two_blocks:
        tiles = [block.values[i.value].shape for i in block.inputs] + [block.values[o.value].shape for o in block.outputs]
        if any(int(d) & (int(d) - 1) for shape in tiles for d in shape):
            return False
    return True
