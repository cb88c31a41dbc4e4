"""Kernel graphs and block graphs: the two levels of an sGraph.

A :class:`KernelGraph` works on device tensors with predefined ops and custom-kernel ops; each
custom kernel owns a :class:`BlockGraph`, which says what one block of the grid does on tiles in
each for-loop iteration, what it accumulates across iterations, and what it computes after the loop.
Graphs are immutable SSA: values are numbered, ops list their input and output value ids in
topological order. Build them with :class:`KernelGraphBuilder` / :class:`BlockGraphBuilder`.
"""

from __future__ import annotations

import dataclasses
import enum
import weakref
from typing import Any, Sequence

from prism_jax.ir.errors import IRError
from prism_jax.ir.maps import (MapEntry, MapMatrix, check_map_shape, is_concrete_map, no_split, split_factor,
                               tile_dim)
from prism_jax.ir.ops import (ACCUMULATORS, BLOCK_OPS, PREDEFINED, Attrs, OpKind, infer_types, optional_attrs,
                              required_attrs)
from prism_jax.ir.symbolic import ConstraintSet, Divisible, InRange, MemoryBudget, Size, is_concrete, mul
from prism_jax.ir.types import DType, TensorType


@dataclasses.dataclass(frozen=True)
class Op:
    """One op: ``outputs = kind(inputs; attrs)``; custom kernels also carry their block graph."""

    kind: OpKind
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    attrs: Attrs = Attrs()
    block: "BlockGraph | None" = None

    def describe(self, index: int) -> str:
        outs = ", ".join(f"%{o}" for o in self.outputs)
        ins = ", ".join(f"%{i}" for i in self.inputs)
        return f"op #{index} ({outs} = {self.kind}({ins}))"


# ---------------------------------------------------------------------------------------------
# block graphs


class Phase(enum.IntEnum):
    """When a block-graph value is computed."""

    INVARIANT = 0  # the same in every loop iteration (loop-invariant inputs, constants)
    LOOP = 1  # per iteration (depends on an input split along the loop)
    POST = 2  # after the loop (depends on an accumulator)


@dataclasses.dataclass(frozen=True)
class BlockInput:
    """Loads a tile of the custom kernel's input ``source``: imap splits it over the grid, fmap over the loop."""

    value: int
    source: int
    imap: MapMatrix
    fmap: tuple[MapEntry, ...]


@dataclasses.dataclass(frozen=True)
class BlockOutput:
    """Stores a tile: omap places it in the output; grid dims it leaves unmapped are summed over."""

    value: int
    omap: MapMatrix


@dataclasses.dataclass(frozen=True)
class BlockGraph:
    grid: tuple[Size, ...]
    forloop: Size
    values: tuple[TensorType, ...]
    inputs: tuple[BlockInput, ...]
    ops: tuple[Op, ...]
    outputs: tuple[BlockOutput, ...]

    @property
    def grid_rank(self) -> int:
        return len(self.grid)

    @property
    def num_blocks(self) -> Size:
        return mul(*self.grid)

    def output_type(self, index: int) -> TensorType:
        """The device tensor the ``index``-th output assembles from its per-block tiles."""
        out = self.outputs[index]
        tile = self.values[out.value]
        if not is_concrete_map(out.omap):
            raise IRError(f"block output {index}: omap has unresolved variables")
        shape = [mul(tile_d, split_factor(row, self.grid, False, 1)) for tile_d, row in zip(tile.shape, out.omap)]
        return tile.with_shape(shape)

    def phases(self) -> list[Phase]:
        """Phase of every value; raises when a post-loop op reads a per-iteration value."""
        phase = [Phase.INVARIANT] * len(self.values)
        for inp in self.inputs:
            if any(e is not False for e in inp.fmap):
                phase[inp.value] = Phase.LOOP
        for i, op in enumerate(self.ops):
            ins = {phase[v] for v in op.inputs}
            if op.kind in ACCUMULATORS:
                if Phase.POST in ins:
                    raise IRError(f"block {op.describe(i)}: accumulates a value computed after the loop")
                out = Phase.POST
            else:
                if {Phase.LOOP, Phase.POST} <= ins:
                    raise IRError(f"block {op.describe(i)}: mixes a per-iteration value with an after-loop "
                                  "value; accumulate the per-iteration value first")
                out = max(ins, default=Phase.INVARIANT)
            for v in op.outputs:
                phase[v] = out
        return phase

    def constraints(self, source_types: Sequence[TensorType], onchip_bytes: int | None = None) -> ConstraintSet:
        """What the sizes must satisfy: tiles divide dims, grid/loop extents positive, tiles fit on chip."""
        items = [InRange(g, 1, reason=f"grid dim {p}") for p, g in enumerate(self.grid)]
        items.append(InRange(self.forloop, 1, reason="for-loop extent"))
        for k, inp in enumerate(self.inputs):
            src = source_types[inp.source]
            for d, (dim, row) in enumerate(zip(src.shape, inp.imap)):
                items.append(Divisible(dim, split_factor(row, self.grid, inp.fmap[d], self.forloop),
                                       reason=f"input {k} dim {d}"))
        if onchip_bytes is not None:
            buffers = tuple((t.num_elements, t.dtype.itemsize) for t in self.values)
            items.append(MemoryBudget(buffers, onchip_bytes, reason="tiles on chip"))
        return ConstraintSet.of(items)


# block graphs that passed validation against these source types, by identity: a block graph is
# checked when built, when added to a kernel graph and when that is frozen (the search builds thousands)
_VALIDATED: dict[int, tuple[weakref.ref, tuple[TensorType, ...]]] = {}


def validate_block_graph(block: BlockGraph, source_types: Sequence[TensorType], where: str = "block graph") -> None:
    """Structural checks; every error names the offending op, input or output."""
    seen = _VALIDATED.get(id(block))
    if seen is not None and seen[0]() is block and seen[1] == tuple(source_types):
        return
    _validate_block_graph(block, source_types, where)
    if len(_VALIDATED) > 4096:
        _VALIDATED.clear()
    _VALIDATED[id(block)] = (weakref.ref(block), tuple(source_types))


def _validate_block_graph(block: BlockGraph, source_types: Sequence[TensorType], where: str) -> None:
    if not 1 <= block.grid_rank <= 3:
        raise IRError(f"{where}: grid must have 1 to 3 dims, got {block.grid_rank}")
    defined: set[int] = set()

    def define(v: int, what: str) -> None:
        if not 0 <= v < len(block.values):
            raise IRError(f"{where}: {what} defines unknown value %{v}")
        if v in defined:
            raise IRError(f"{where}: {what} redefines %{v}")
        defined.add(v)

    for k, inp in enumerate(block.inputs):
        what = f"input {k} (%{inp.value} from kernel input {inp.source})"
        if not 0 <= inp.source < len(source_types):
            raise IRError(f"{where}: {what}: kernel has {len(source_types)} inputs")
        src = source_types[inp.source]
        check_map_shape(inp.imap, src.rank, block.grid_rank, f"{where}: {what} imap")
        if len(inp.fmap) != src.rank or sum(1 for e in inp.fmap if e is True) > 1:
            raise IRError(f"{where}: {what}: fmap must have {src.rank} entries with at most one set")
        if is_concrete_map(inp.imap) and is_concrete_map(inp.fmap):
            try:
                expected = src.with_shape(tile_dim(d, row, block.grid, f, block.forloop)
                                          for d, row, f in zip(src.shape, inp.imap, inp.fmap))
            except IRError as e:
                raise IRError(f"{where}: {what}: cannot tile {src} with grid {list(block.grid)}, forloop "
                              f"{block.forloop}: {e}") from None
            if block.values[inp.value] != expected:
                raise IRError(f"{where}: {what}: tile type {block.values[inp.value]} does not follow from "
                              f"{src} and the maps (expected {expected})")
        define(inp.value, what)
    for i, op in enumerate(block.ops):
        what = f"{where}: {op.describe(i)}"
        if op.kind not in BLOCK_OPS:
            raise IRError(f"{what}: {op.kind} is not allowed in a block graph")
        _check_op(op, block.values, defined, what)
        for v in op.outputs:
            define(v, what)
    phases = block.phases()
    if not block.outputs:
        raise IRError(f"{where}: has no outputs")
    for k, out in enumerate(block.outputs):
        what = f"{where}: output {k} (%{out.value})"
        if out.value not in defined:
            raise IRError(f"{what}: stores an undefined value")
        check_map_shape(out.omap, block.values[out.value].rank, block.grid_rank, f"{what} omap")
        if phases[out.value] == Phase.LOOP:
            raise IRError(f"{what}: stores a per-iteration value; accumulate it over the loop first")


def _check_op(op: Op, values: Sequence[TensorType], defined: set[int], what: str) -> None:
    for v in op.inputs:
        if v not in defined:
            raise IRError(f"{what}: reads %{v} before it is defined")
    extra = op.attrs.keys() - required_attrs(op.kind) - optional_attrs(op.kind)
    if extra:
        raise IRError(f"{what}: unexpected attributes {sorted(extra)}")
    if len(op.outputs) != 1:
        raise IRError(f"{what}: must have exactly one output")
    inferred = infer_types(op.kind, op.attrs, [values[v] for v in op.inputs], what)
    if not 0 <= op.outputs[0] < len(values) or values[op.outputs[0]] != inferred:
        raise IRError(f"{what}: output type should be {inferred}")


class _Builder:
    """Shared SSA bookkeeping of both builders."""

    def __init__(self) -> None:
        self._values: list[TensorType] = []
        self._ops: list[Op] = []

    def _new_value(self, t: TensorType) -> int:
        self._values.append(t)
        return len(self._values) - 1

    def type_of(self, value: int) -> TensorType:
        return self._values[value]

    def op(self, kind: OpKind, *inputs: int, **attrs: Any) -> int:
        """Append a predefined op (or accumulator) and return its output value id."""
        attr = Attrs.of(attrs)
        what = f"op #{len(self._ops)} ({kind})"
        self._check_allowed(kind, what)
        for v in inputs:
            if not 0 <= v < len(self._values):
                raise IRError(f"{what}: unknown input %{v}")
        out_type = infer_types(kind, attr, [self._values[v] for v in inputs], what)
        out = self._new_value(out_type)
        self._ops.append(Op(kind, tuple(inputs), (out,), attr))
        return out

    def constant(self, value: float | int | Size, like: int | None = None, dtype: DType = DType.FLOAT32,
                 rank: int | None = None) -> int:
        """A scalar constant with all-1 dims, broadcastable against ``like`` (or rank ``rank``)."""
        if like is not None:
            dtype, rank = self._values[like].dtype, self._values[like].rank
        return self.op(OpKind.CONSTANT, value=value, shape=(1,) * (rank or 0), dtype=dtype)

    def _check_allowed(self, kind: OpKind, what: str) -> None:
        raise NotImplementedError


class BlockGraphBuilder(_Builder):
    """Builds a block graph: ``input`` loads tiles, ``op`` computes on tiles, ``output`` stores."""

    def __init__(self, grid: Sequence[Size], forloop: Size = 1) -> None:
        super().__init__()
        self.grid, self.forloop = tuple(grid), forloop
        self._inputs: list[BlockInput] = []
        self._outputs: list[BlockOutput] = []

    def _check_allowed(self, kind: OpKind, what: str) -> None:
        if kind not in BLOCK_OPS:
            raise IRError(f"{what}: {kind} is not allowed in a block graph")

    def input(self, source: int, source_type: TensorType, imap: MapMatrix | None = None,
              fmap: Sequence[MapEntry] | None = None) -> int:
        imap = imap if imap is not None else no_split(source_type.rank, len(self.grid))
        fmap = tuple(fmap) if fmap is not None else (False,) * source_type.rank
        what = f"block input {len(self._inputs)} (kernel input {source})"
        check_map_shape(imap, source_type.rank, len(self.grid), what)
        if len(fmap) != source_type.rank:
            raise IRError(f"{what}: fmap must have {source_type.rank} entries")
        try:
            tile = source_type.with_shape(tile_dim(d, row, self.grid, f, self.forloop)
                                          for d, row, f in zip(source_type.shape, imap, fmap))
        except IRError as e:
            raise IRError(f"{what}: cannot tile {source_type} with grid {list(self.grid)}, forloop "
                          f"{self.forloop}: {e}") from None
        value = self._new_value(tile)
        self._inputs.append(BlockInput(value, source, imap, fmap))
        return value

    def accumulate(self, kind: OpKind, *inputs: int) -> int:
        if kind not in ACCUMULATORS:
            raise IRError(f"{kind} is not a for-loop accumulator")
        return self.op(kind, *inputs)

    def output(self, value: int, omap: MapMatrix | None = None) -> None:
        omap = omap if omap is not None else no_split(self._values[value].rank, len(self.grid))
        self._outputs.append(BlockOutput(value, omap))

    def build(self, source_types: Sequence[TensorType]) -> BlockGraph:
        block = BlockGraph(self.grid, self.forloop, tuple(self._values), tuple(self._inputs), tuple(self._ops),
                           tuple(self._outputs))
        validate_block_graph(block, source_types)
        return block


# ---------------------------------------------------------------------------------------------
# kernel graphs


@dataclasses.dataclass(frozen=True)
class KernelGraph:
    """A tensor program on device tensors: predefined ops plus custom kernels (each a block graph)."""

    name: str
    values: tuple[TensorType, ...]
    inputs: tuple[int, ...]
    input_names: tuple[str, ...]
    ops: tuple[Op, ...]
    outputs: tuple[int, ...]

    @property
    def input_types(self) -> tuple[TensorType, ...]:
        return tuple(self.values[v] for v in self.inputs)

    @property
    def output_types(self) -> tuple[TensorType, ...]:
        return tuple(self.values[v] for v in self.outputs)

    @property
    def custom_kernels(self) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if op.kind == OpKind.CUSTOM_KERNEL)

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.kind.value] = counts.get(op.kind.value, 0) + 1
        return counts

    def content_hash(self) -> str:
        """Stable across processes and releases of the same schema: hash of the canonical JSON."""
        from prism_jax.ir.serialize import content_hash

        return content_hash(self)

    def __str__(self) -> str:
        from prism_jax.ir.printer import format_kernel_graph

        return format_kernel_graph(self)


def validate_kernel_graph(graph: KernelGraph) -> None:
    where = f"kernel graph {graph.name!r}"
    if len(graph.input_names) != len(graph.inputs):
        raise IRError(f"{where}: {len(graph.inputs)} inputs but {len(graph.input_names)} names")
    defined: set[int] = set()
    for k, v in enumerate(graph.inputs):
        if not 0 <= v < len(graph.values) or v in defined:
            raise IRError(f"{where}: input {k} ({graph.input_names[k]}) has a bad or repeated value %{v}")
        defined.add(v)
    for i, op in enumerate(graph.ops):
        what = f"{where}: {op.describe(i)}"
        if op.kind == OpKind.CUSTOM_KERNEL:
            _check_custom_kernel(op, graph.values, defined, what)
        elif op.kind in PREDEFINED:
            _check_op(op, graph.values, defined, what)
        else:
            raise IRError(f"{what}: {op.kind} is not allowed in a kernel graph")
        for v in op.outputs:
            if v in defined:
                raise IRError(f"{what}: redefines %{v}")
            defined.add(v)
    if not graph.outputs:
        raise IRError(f"{where}: has no outputs")
    for v in graph.outputs:
        if v not in defined:
            raise IRError(f"{where}: returns undefined value %{v}")


def _check_custom_kernel(op: Op, values: Sequence[TensorType], defined: set[int], what: str) -> None:
    if op.block is None:
        raise IRError(f"{what}: custom kernel without a block graph")
    for v in op.inputs:
        if v not in defined:
            raise IRError(f"{what}: reads %{v} before it is defined")
    validate_block_graph(op.block, [values[v] for v in op.inputs], where=f"{what} block graph")
    if len(op.outputs) != len(op.block.outputs):
        raise IRError(f"{what}: has {len(op.outputs)} outputs, its block graph stores {len(op.block.outputs)}")
    for k, v in enumerate(op.outputs):
        if all(is_concrete_map(o.omap) for o in op.block.outputs) and values[v] != op.block.output_type(k):
            raise IRError(f"{what}: output {k} should be {op.block.output_type(k)}, declared {values[v]}")


class KernelGraphBuilder(_Builder):
    """Builds a kernel graph. ``input`` declares device tensors, ``op`` appends predefined ops,
    ``custom_kernel`` appends a block graph; ``build`` validates and freezes."""

    def __init__(self, name: str = "main") -> None:
        super().__init__()
        self.name = name
        self._inputs: list[int] = []
        self._names: list[str] = []

    def _check_allowed(self, kind: OpKind, what: str) -> None:
        if kind not in PREDEFINED:
            raise IRError(f"{what}: {kind} is not a predefined kernel op")

    def input(self, t: TensorType, name: str | None = None) -> int:
        value = self._new_value(t)
        self._inputs.append(value)
        self._names.append(name or f"in{len(self._inputs) - 1}")
        return value

    def custom_kernel(self, block: BlockGraph, *inputs: int) -> tuple[int, ...]:
        what = f"op #{len(self._ops)} (custom_kernel)"
        validate_block_graph(block, [self._values[v] for v in inputs], where=f"{what} block graph")
        outs = tuple(self._new_value(block.output_type(k)) for k in range(len(block.outputs)))
        self._ops.append(Op(OpKind.CUSTOM_KERNEL, tuple(inputs), outs, Attrs(), block))
        return outs

    def build(self, outputs: Sequence[int]) -> KernelGraph:
        graph = KernelGraph(self.name, tuple(self._values), tuple(self._inputs), tuple(self._names),
                            tuple(self._ops), tuple(outputs))
        validate_kernel_graph(graph)
        return graph


def is_concrete_graph(graph: KernelGraph) -> bool:
    sizes = [d for t in graph.values for d in t.shape]
    for op in graph.custom_kernels:
        sizes += list(op.block.grid) + [op.block.forloop] + [d for t in op.block.values for d in t.shape]
    return all(is_concrete(s) for s in sizes)
