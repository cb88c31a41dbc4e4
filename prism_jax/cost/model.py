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


def overlaps_loads(block: BlockGraph, device: DeviceSpec, streamed_operands: bool = False) -> bool:
    """A block hides its loads behind compute when its loop has several iterations (the next tiles
    load while this one computes) or when two blocks fit on chip at once (with ``streamed_operands``,
    as the CPU kernels do, not counting the matmul operands: the matmul reads them as it computes)."""
    return int(block.forloop) >= 2 or 2 * tile_bytes(block, streamed_operands) <= device.onchip_bytes


def tile_bytes(block: BlockGraph, streamed_operands: bool = False) -> int:
    """Bytes of a block's tiles on chip; with ``streamed_operands`` less those its matmuls read in place
    (:func:`streamed_matmul_operands`)."""
    streamed = streamed_matmul_operands(block) if streamed_operands else set()
    return sum(_bytes(t) for v, t in enumerate(block.values) if v not in streamed)


def streamed_matmul_operands(block) -> set[int]:
    """Block inputs whose only readers are matmuls, directly or through a convert and/or a transpose that
    is each value's only reader, with those converts and transposes: what a kernel can read in place
    from memory rather than hold as a tile (the C++ emitter's views; it may copy a few of them after
    all, e.g. a converted left operand, which the tuner's timing then shows)."""
    readers: dict[int, list] = {}
    for op in block.ops:
        for v in op.inputs:
            readers.setdefault(v, []).append(op)
    outputs = {o.value for o in block.outputs}
    streamed: set[int] = set()
    for inp in block.inputs:
        chain, current = [inp.value], inp.value
        while current not in outputs and readers.get(current):
            users = readers[current]
            if all(u.kind == OpKind.MATMUL for u in users):
                streamed.update(chain)
                break
            if len(users) != 1 or users[0].kind not in (OpKind.CONVERT, OpKind.TRANSPOSE):
                break
            current = users[0].outputs[0]
            chain.append(current)
    return streamed


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


def estimate(graph: KernelGraph, device: DeviceSpec, streamed_operands: bool = False) -> CostEstimate:
    """Each custom kernel is one kernel; predefined ops run as XLA fuses them (see :func:`_fusions`).
    ``streamed_operands``: the kernels read matmul operands in place (the CPU target's rules,
    ``TileRules.streamed_matmul_operands``)."""
    if not is_concrete_graph(graph):
        raise IRError(f"cost of {graph.name!r} needs concrete sizes; instantiate it first")
    fused, reads = _fusions(graph)
    kernels = []
    for i, op in enumerate(graph.ops):
        ins = [graph.values[v] for v in op.inputs]
        itemsize = min((t.dtype.itemsize for t in ins), default=4)
        if op.kind == OpKind.CUSTOM_KERNEL:
            nbytes, flops, blocks = block_cost(op.block, ins)
            steps = blocks * int(op.block.forloop) / min(blocks, device.parallel_units)  # per unit, in parallel
            seconds = _time(device, nbytes, flops, blocks, itemsize, overlaps_loads(op.block, device, streamed_operands))
            kernels.append(KernelCost(f"#{i} {op.kind}", nbytes, flops, blocks,
                                      seconds + steps * device.step_overhead_s))
            continue
        v = op.outputs[0]
        if v in fused or op.kind in _FREE:
            continue
        sources = frozenset().union(*(reads(u) for u in op.inputs))
        nbytes = sum(_bytes(graph.values[u]) for u in sources) + _bytes(graph.values[v])
        flops = op_flops(op, ins, graph.values[v])
        kernels.append(KernelCost(f"#{i} {op.kind}", nbytes, flops, device.parallel_units,
                                  _time(device, nbytes, flops, device.parallel_units, itemsize)))
    return CostEstimate(device.name, tuple(kernels))


def _fusions(graph: KernelGraph):
    """How XLA runs predefined ops: each matmul and reduction is a kernel reading its inputs through
    fused elementwise/layout producers; an elementwise value is written to memory (by a loop fusion of
    its own) only when a matmul or custom kernel reads it or the graph returns it; reshapes are free.
    Returns the fused values and ``reads(v)``: the values in memory a computation of ``v`` reads."""
    producer = {v: op for op in graph.ops for v in op.outputs}

    def underlying(v: int) -> int:
        while v in producer and producer[v].kind == OpKind.RESHAPE:
            v = producer[v].inputs[0]
        return v

    stored = {underlying(v) for v in graph.outputs}
    stored |= {underlying(v) for op in graph.ops if op.kind in (OpKind.MATMUL, OpKind.CUSTOM_KERNEL) for v in op.inputs}
    fused = {v for v, op in producer.items() if op.kind not in _KERNEL_KINDS and v not in stored}
    memo: dict[int, frozenset[int]] = {}

    def reads(v: int) -> frozenset[int]:
        if v not in memo:
            op = producer.get(v)
            if op is None:
                memo[v] = frozenset({v})
            elif op.kind in (OpKind.CONSTANT, OpKind.IOTA):
                memo[v] = frozenset()
            elif op.kind == OpKind.RESHAPE or v in fused:
                memo[v] = frozenset().union(*(reads(u) for u in op.inputs))
            else:
                memo[v] = frozenset({v})
        return memo[v]

    return fused, reads


_KERNEL_KINDS = REDUCTIONS | {OpKind.MATMUL, OpKind.CUSTOM_KERNEL, OpKind.RESHAPE, OpKind.CONSTANT, OpKind.IOTA}


def memory_floor_seconds(graph: KernelGraph, device: DeviceSpec) -> float:
    """The roofline floor: every input read once and every output written once, at peak bandwidth."""
    nbytes = sum(_bytes(t) for t in graph.input_types) + sum(_bytes(t) for t in graph.output_types)
    return nbytes / device.memory_bandwidth

