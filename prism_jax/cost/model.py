"""Analytic roofline cost of an instantiated kernel graph: bytes moved and FLOPs per kernel, turned
into time by a device spec. Used to rank candidates before (and instead of) measuring them."""

from __future__ import annotations

import dataclasses
import math

from prism_jax.cost.devices import DeviceSpec
from prism_jax.ir import BlockGraph, IRError, KernelGraph, Op, OpKind, Phase, TensorType, is_concrete_graph
from prism_jax.ir.ops import ACCUMULATORS, ELEMENTWISE, REDUCTIONS

# achievable fractions of peak: streaming kernels reach ~85% of bandwidth, good matmuls ~70% of FLOP/s
BANDWIDTH_EFFICIENCY = 0.85
COMPUTE_EFFICIENCY = 0.7
_FREE = frozenset({OpKind.RESHAPE, OpKind.CONSTANT, OpKind.IOTA})  # metadata or fused into consumers


@dataclasses.dataclass(frozen=True)
class KernelCost:
    name: str
    bytes: int
    flops: int
    blocks: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    """An estimate (never a measurement) of one kernel graph on one device."""

    device: str
    kernels: tuple[KernelCost, ...]

    @property
    def seconds(self) -> float:
        return sum(k.seconds for k in self.kernels)

    @property
    def bytes(self) -> int:
        return sum(k.bytes for k in self.kernels)

    @property
    def flops(self) -> int:
        return sum(k.flops for k in self.kernels)

    def __str__(self) -> str:
        return (f"~{self.seconds * 1e6:.1f} µs on {self.device} (estimate): {len(self.kernels)} kernel(s), "
                f"{self.bytes / 2**20:.2f} MiB, {self.flops / 1e9:.3f} GFLOP")


def _bytes(t: TensorType) -> int:
    return int(math.prod(t.shape)) * t.dtype.itemsize


def op_flops(op: Op, inputs: list[TensorType], out: TensorType) -> int:
    if op.kind == OpKind.MATMUL:
        return 2 * int(math.prod(out.shape)) * int(inputs[0].shape[-1])
    if op.kind in ELEMENTWISE or op.kind in ACCUMULATORS:
        return int(math.prod(out.shape))
    if op.kind in REDUCTIONS:
        return int(math.prod(inputs[0].shape))
    return 0


def _time(device: DeviceSpec, nbytes: int, flops: int, blocks: int, itemsize: int, overlapped: bool = True) -> float:
    """Roofline time; ``overlapped=False`` for a kernel that can neither pipeline its loads (no loop)
    nor hide them behind another resident block: it loads, then computes."""
    utilization = min(1.0, blocks / device.parallel_units) if blocks else 1.0
    memory = nbytes / (device.memory_bandwidth * BANDWIDTH_EFFICIENCY * utilization)
    compute = flops / (device.flops(itemsize) * COMPUTE_EFFICIENCY * utilization)
    return (max(memory, compute) if overlapped else memory + compute) + device.launch_overhead_s


def overlaps_loads(block: BlockGraph, device: DeviceSpec) -> bool:
    """A block hides its loads behind compute when its loop has several iterations (the next tiles
    load while this one computes) or when two blocks fit on chip at once."""
    tile_bytes = sum(_bytes(t) for t in block.values)
    return int(block.forloop) >= 2 or 2 * tile_bytes <= device.onchip_bytes


def block_cost(block: BlockGraph, sources: list[TensorType]) -> tuple[int, int, int]:
    """(bytes, flops, blocks) of one custom kernel: each input tile is loaded once per block, or once per
    iteration when it varies with the loop; partial sums over unmapped grid dims are written and re-read."""
    blocks = int(math.prod(block.grid))
    iterations = int(block.forloop)
    phases = block.phases()
    nbytes = 0
    for inp in block.inputs:
        loads = iterations if phases[inp.value] == Phase.LOOP else 1
        nbytes += _bytes(block.values[inp.value]) * loads * blocks
    for k, out in enumerate(block.outputs):
        partial = any(not any(row[p] is True for row in out.omap) for p in range(block.grid_rank))
        written = _bytes(block.values[out.value]) * blocks
        nbytes += written * (2 if partial else 1) + (_bytes(block.output_type(k)) if partial else 0)
    flops = 0
    for op in block.ops:
        per = op_flops(op, [block.values[v] for v in op.inputs], block.values[op.outputs[0]])
        flops += per * blocks * (iterations if phases[op.outputs[0]] != Phase.POST else 1)
    return nbytes, flops, blocks


def estimate(graph: KernelGraph, device: DeviceSpec) -> CostEstimate:
    """Each predefined op is its own kernel (as XLA would run it unfused); each custom kernel is one."""
    if not is_concrete_graph(graph):
        raise IRError(f"cost of {graph.name!r} needs concrete sizes; instantiate it first")
    kernels = []
    for i, op in enumerate(graph.ops):
        ins = [graph.values[v] for v in op.inputs]
        out = graph.values[op.outputs[0]]
        overlapped = True
        if op.kind == OpKind.CUSTOM_KERNEL:
            nbytes, flops, blocks = block_cost(op.block, ins)
            overlapped = overlaps_loads(op.block, device)
        elif op.kind in _FREE:
            continue
        else:
            nbytes = sum(_bytes(t) for t in ins) + _bytes(out)
            flops, blocks = op_flops(op, ins, out), device.parallel_units
        itemsize = min((t.dtype.itemsize for t in ins), default=4)
        kernels.append(KernelCost(f"#{i} {op.kind}", nbytes, flops, blocks,
                                  _time(device, nbytes, flops, blocks, itemsize, overlapped)))
    return CostEstimate(device.name, tuple(kernels))


def memory_floor_seconds(graph: KernelGraph, device: DeviceSpec) -> float:
    """The roofline floor: every input read once and every output written once, at peak bandwidth."""
    nbytes = sum(_bytes(t) for t in graph.input_types) + sum(_bytes(t) for t in graph.output_types)
    return nbytes / device.memory_bandwidth


def xla_estimate(graph: KernelGraph, device: DeviceSpec) -> CostEstimate:
    """A region of predefined ops as XLA fuses it: each matmul and reduction is a kernel that reads its
    inputs through fused elementwise/layout producers; an elementwise value is written to memory (by a
    loop fusion of its own) only when a matmul reads it or the region returns it."""
    if not is_concrete_graph(graph):
        raise IRError(f"cost of {graph.name!r} needs concrete sizes; instantiate it first")
    producer = {op.outputs[0]: op for op in graph.ops}
    matmul_operands = {v for op in graph.ops if op.kind == OpKind.MATMUL for v in op.inputs}
    fused_into_consumer = {v for v, op in producer.items()
                           if op.kind not in REDUCTIONS and op.kind != OpKind.MATMUL
                           and v not in matmul_operands and v not in graph.outputs}
    memo: dict[int, frozenset[int]] = {}

    def reads(v: int) -> frozenset[int]:
        """The materialized values a fused computation of ``v`` reads."""
        if v not in memo:
            op = producer.get(v)
            if op is None or op.kind in (OpKind.CONSTANT, OpKind.IOTA):
                memo[v] = frozenset({v}) if op is None else frozenset()
            elif v in fused_into_consumer:
                memo[v] = frozenset().union(*(reads(u) for u in op.inputs))
            else:
                memo[v] = frozenset({v})
        return memo[v]

    kernels = []
    for i, op in enumerate(graph.ops):
        v = op.outputs[0]
        if v in fused_into_consumer or op.kind in (OpKind.CONSTANT, OpKind.IOTA):
            continue
        if op.kind == OpKind.RESHAPE and all(u not in producer for u in op.inputs):
            continue  # a re-view of an input
        sources = frozenset().union(*(reads(u) for u in op.inputs))
        nbytes = sum(_bytes(graph.values[u]) for u in sources) + _bytes(graph.values[v])
        ins = [graph.values[u] for u in op.inputs]
        flops = op_flops(op, ins, graph.values[v])
        itemsize = min((t.dtype.itemsize for t in ins), default=4)
        kernels.append(KernelCost(f"#{i} {op.kind} (XLA fusion)", nbytes, flops, device.parallel_units,
                                  _time(device, nbytes, flops, device.parallel_units, itemsize)))
    return CostEstimate(device.name, tuple(kernels))
