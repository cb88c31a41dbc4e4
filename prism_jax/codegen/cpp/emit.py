"""An instantiated custom kernel → C++17 source with an XLA FFI handler (CPU platform).

The grid's blocks run on the runtime library's worker threads (``csrc/runtime/prism_cpu_pool.h``: as many
as XLA's intra-op pool has, awake for a while after each call, since waking a sleeping pool thread cost
~40 µs of a ~200 µs kernel); each block copies its
tiles out of the device buffers (offsets from the imap, and per iteration from the fmap), runs the
loop-invariant ops once, the for-loop sequentially with accumulators in local buffers (sums from 0,
maxima from −inf, online softmax with its running max), the after-loop ops, and copies its output
tiles back (omap). Tile ops are plain loops the compiler vectorizes (broadcasting by zero strides);
matmuls call the runtime's ``matmul_acc``. Values compute in float32 (bfloat16 tiles are stored as
their bits and converted by the block graph's explicit converts). In a kernel whose every float input and
output is bfloat16 a matmul with a bfloat16 right operand rounds its left one to bfloat16, as the program
does, and multiplies bfloat16 matrices (``matmul_acc_bf16_dot``: AMX tiles where the host has them).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

from prism_jax.ir import BlockGraph, DType, IRError, OpKind, TensorType, constant_value
from prism_jax.ir.graph import BlockInput, Op, Phase

STORAGE = {DType.FLOAT32: "float", DType.BFLOAT16: "std::uint16_t", DType.FLOAT64: "double",
           DType.INT32: "std::int32_t", DType.INT64: "std::int64_t", DType.UINT32: "std::uint32_t",
           DType.INT8: "std::int8_t", DType.BOOL: "std::uint8_t"}
FFI_TYPE = {DType.FLOAT32: "F32", DType.BFLOAT16: "BF16", DType.FLOAT64: "F64", DType.INT32: "S32",
            DType.INT64: "S64", DType.UINT32: "U32", DType.INT8: "S8", DType.BOOL: "PRED"}

PREAMBLE = r"""#include "prism_kernel_prelude.h"
namespace ffi = xla::ffi;
namespace pc = prism_jax::cpu;
static inline float p_logistic(float x) {
  float e = pc::fast_exp(-std::fabs(x));
  return x >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
static constexpr float P_NEG_INF = -std::numeric_limits<float>::infinity();
"""

_UNARY = {
    OpKind.NEG: "(-{0})", OpKind.EXP: "std::exp({0})", OpKind.LOG: "std::log({0})", OpKind.SQRT: "std::sqrt({0})",
    OpKind.RSQRT: "(1.0f / std::sqrt({0}))", OpKind.TANH: "std::tanh({0})", OpKind.LOGISTIC: "p_logistic({0})",
    OpKind.SQUARE: "(({0}) * ({0}))", OpKind.RECIPROCAL: "(1.0f / ({0}))", OpKind.ABS: "std::fabs({0})",
    OpKind.NOT: "(!({0}))",
}
_BINARY = {
    OpKind.ADD: "({0} + {1})", OpKind.SUB: "({0} - {1})", OpKind.MUL: "({0} * {1})", OpKind.DIV: "({0} / {1})",
    OpKind.MAX: "std::max({0}, {1})", OpKind.MIN: "std::min({0}, {1})", OpKind.POW: "std::pow({0}, {1})",
    OpKind.AND: "({0} && {1})", OpKind.OR: "({0} || {1})", OpKind.LT: "({0} < {1})", OpKind.LE: "({0} <= {1})",
    OpKind.GT: "({0} > {1})", OpKind.GE: "({0} >= {1})", OpKind.EQ: "({0} == {1})", OpKind.NE: "({0} != {1})",
}
# independent partial results of a row reduction (_reduce_last_axis): two zmm registers of float32, so
# consecutive adds do not wait for each other (one register: a chain at the add's latency; 8 x 4096
# bfloat16 sums of squares, 8 rows of ntrans: 12.2 -> 10.3 µs with 32 lanes, 11.1 with 64)
_REDUCE_LANES = 32
# ops _elementwise_expr writes as one scalar expression (candidates for inlining into their reader)
_ELEMENTWISE = frozenset({*_UNARY, *_BINARY, OpKind.SELECT, OpKind.CONVERT, OpKind.INTEGER_POW})


def _shape(t: TensorType) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape)


def _strides(shape: Sequence[int]) -> list[int]:
    out, step = [], 1
    for d in reversed(shape):
        out.append(step)
        step *= d
    return out[::-1]


def _broadcast_strides(shape: Sequence[int], target: Sequence[int]) -> list[int]:
    return [0 if d == 1 and t != 1 else s for d, t, s in zip(shape, target, _strides(shape))]


def _ctype(t: TensorType) -> str:
    if t.dtype not in STORAGE:
        raise IRError(f"the C++ emitter does not handle {t.dtype.value} values")
    return STORAGE[t.dtype]


def _compute(dtype: DType) -> str:
    return "double" if dtype == DType.FLOAT64 else "float" if dtype.is_float else "std::int64_t"


@dataclasses.dataclass(frozen=True)
class ScaledOperand:
    """A transposed matmul operand X·r·g computed as ((A·g) @ X^T)·r^T (KernelEmitter._plan_scaled_operands):
    ``data`` is X (or the bfloat16 input X widens), ``rows`` the factors constant along k (one per row of X,
    a column of C), ``cols`` those constant along n (one per column of X, a column of A)."""

    data: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 1

    def __call__(self, line: str) -> None:
        self.lines.append("  " * self.depth + line)

    def loops(self, shape: Sequence[int], body: str, index: str = "i") -> None:
        """``body`` inside nested loops over ``shape`` (loop variables i0, i1, ...)."""
        if not shape:
            self(body)
            return
        for d, n in enumerate(shape):
            self(f"for (std::int64_t {index}{d} = 0; {index}{d} < {n}; ++{index}{d}) {{")
            self.depth += 1
        self(body)
        for _ in shape:
            self.depth -= 1
            self("}")


def _swaps_last_two(op: Op) -> bool:
    perm = tuple(op.attrs["perm"])
    rank = len(perm)
    return rank >= 2 and perm == (*range(rank - 2), rank - 1, rank - 2)


_SUBSCRIPT = re.compile(r"\b([A-Za-z_]\w*)\[([^\[\]]*)\]")
_ASSIGNED = re.compile(r"\b([A-Za-z_]\w*)\[[^\[\]]*\]\s*[-+*/]?=(?!=)")


def _hoist_invariant_reads(code: str, index: str) -> tuple[list[str], str]:
    """The element reads in ``code`` whose subscript does not use the loop variable ``index`` (a row's
    scale, a scalar) and whose buffer ``code`` does not write, as declarations ``const auto hN = v[..];``
    to put before the loop, and ``code`` reading ``hN`` instead."""
    written = set(_ASSIGNED.findall(code))
    invariant = re.compile(rf"\b{index}\b")
    names: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        if match.group(1) in written or invariant.search(match.group(2)):
            return match.group(0)
        return names.setdefault(match.group(0), f"h{len(names)}")

    code = _SUBSCRIPT.sub(replace, code)
    return [f"const auto {name} = {read};" for read, name in names.items()], code


def _offset(strides: Sequence[int], index: str = "i") -> str:
    terms = [f"{index}{d} * {s}" for d, s in enumerate(strides) if s]
    return " + ".join(terms) or "0"


class KernelEmitter:
    """C++ for one custom kernel (``block``, concrete) reading sources of ``source_types``."""

    def __init__(self, block: BlockGraph, source_types: Sequence[TensorType], symbol: str) -> None:
        self.block, self.sources, self.symbol = block, list(source_types), symbol
        self.grid = [int(g) for g in block.grid]
        self.forloop = int(block.forloop)
        self.w = _Writer()
        self.view_strides: dict[int, list[int]] = {}  # block input read in place → the source's strides
        self.bf16_operands: dict[int, int] = {}  # matmul operand → the bf16 input it widens in registers
        self.nt_operands: dict[int, int] = {}  # matmul operand → the input it reads transposed (rows of B^T)
        self.elided: set[int] = set()  # values never computed (the matmul reads their input instead)
        self.scaled_operands: dict[int, ScaledOperand] = {}  # transposed matmul operand → its factors
        self.stored: set[int] = set()  # values a matmul reads from their buffer (never inlined)
        self.fused_sums: dict[int, Op] = {}  # row sum of squares → the matmul whose pass over X computes it
        self.accumulated: dict[int, int] = {}  # matmul product → the product it accumulates into
        self.sums: dict[int, int] = {}  # add of those two → the product holding the sum
        self.bf16_program = self._is_bf16_program()
        self.phases = block.phases()  # of every value: before, in or after the for-loop
        self.readers: dict[int, list[Op]] = {}  # value → the ops that read it
        for op in block.ops:
            for v in op.inputs:
                self.readers.setdefault(v, []).append(op)
        self._plan_views()
        if self.ACCUMULATED_SUMS:
            self._plan_accumulated_sums()
        self.inlined = self._plan_inlining()  # elementwise values computed inside their reader's loop
        self.inline_exprs: dict[int, str] = {}  # inlined value → its expression (set when its op is emitted)
        # row reduction → the elementwise op whose loop it joins (that loop moves to the reduction)
        self.producer_of: dict[int, Op] = self._plan_reductions_in_producers() if self.REDUCE_IN_PRODUCER else {}
        self.deferred = {op.outputs[0] for op in self.producer_of.values()}
        self.in_place = self._outputs_in_place()  # output value → the output whose result it is written in

    def _is_bf16_program(self) -> bool:
        """Whether every floating-point value the kernel reads or writes is bfloat16: the program then
        multiplies bfloat16 matrices, so a matmul with a bfloat16 right operand may round its left one
        to bfloat16 too (as the program does) and use bfloat16 x bfloat16 hardware (AMX)."""
        boundary = [t.dtype for t in self.sources] + [self.block.values[o.value].dtype for o in self.block.outputs]
        floats = [d for d in boundary if d.is_float]
        return bool(floats) and all(d == DType.BFLOAT16 for d in floats)

    @property
    def views(self) -> dict[int, int]:
        """Block input read in place → its row stride in the source."""
        return {v: strides[-2] if len(strides) >= 2 else 1 for v, strides in self.view_strides.items()}

    # whether views may have leading (batch) dims, and whether a transposed operand is read in place
    # (the CUDA emitter does neither)
    BATCHED_VIEWS = True
    TRANSPOSED_VIEWS = True
    # whether reductions read their input through ``elem`` with the input's index names (CUDA's do not)
    INLINE_INTO_REDUCTIONS = True
    # whether inputs read only by elementwise loops and reductions are read in place (CUDA stages them
    # in shared memory)
    ELEMENTWISE_VIEWS = True
    # whether a transposed right operand that is a product of one tile with row and column scales is
    # multiplied unscaled, the scales applied to A's columns and C's columns instead (CUDA: no)
    SCALED_OPERANDS = True
    # whether a row reduction of a stored elementwise value is computed in the loop that computes the
    # value (CUDA: its reductions are loops of their own)
    REDUCE_IN_PRODUCER = True
    # whether a matmul product only added to another product accumulates into that one's buffer
    # (CUDA: its matmuls write their tiles)
    ACCUMULATED_SUMS = True

    def _plan_views(self) -> None:
        """Block inputs read only as matmul operands are not copied: the matmul reads the source in
        place (a pointer and strides), so large weights stream from memory once. On the way to the
        matmul an input may be widened from bfloat16 (in registers, by the matmul) and its last two
        dims swapped (the matmul then takes dot products with rows of the source: ``q @ k^T`` reads
        K's rows in place)."""
        users = self.readers
        outputs = {o.value for o in self.block.outputs}
        for inp in self.block.inputs:
            tile = _shape(self.block.values[inp.value])
            if len(tile) < 2 or inp.value in outputs or (not self.BATCHED_VIEWS and any(d != 1 for d in tile[:-2])):
                continue
            chain = self._operand_chain(inp.value, users, outputs)
            if chain is None:
                continue
            final, transposed, between = chain
            self.view_strides[inp.value] = _strides(_shape(self.sources[inp.source]))
            if final != inp.value:
                self.elided |= set(between) | {final}
                (self.nt_operands if transposed else self.bf16_operands)[final] = inp.value
        if self.ELEMENTWISE_VIEWS:
            self._plan_elementwise_views(users, outputs)
        if self.TRANSPOSED_VIEWS:
            self._plan_computed_transposes(users, outputs)
            if self.SCALED_OPERANDS:
                self._plan_scaled_operands(users, outputs)

    def _plan_accumulated_sums(self) -> None:
        """Two matmul products read only by one add of the two (LoRA's ``x W + (x A) B``): the later
        matmul accumulates into the earlier's buffer (the runtime's matmuls add to C), so the later needs
        no zeroed buffer and no pass adds them (LoRA in bfloat16, two threads: 88 -> 85 µs, /tmp
        harness). Only float32 tiles of the add's shape, neither an output nor computed elsewhere
        (fused sums) nor scaled after its product, both in the add's phase."""
        outputs = {o.value for o in self.block.outputs}
        order = {op.outputs[0]: n for n, op in enumerate(self.block.ops)}
        defs = {op.outputs[0]: op for op in self.block.ops}
        for op in self.block.ops:
            if op.kind != OpKind.ADD or len(set(op.inputs)) != 2:
                continue
            out = op.outputs[0]
            products = [defs.get(v) for v in op.inputs]
            if not all(self._plain_product(m, op, outputs) for m in products):
                continue
            earlier, later = sorted((m.outputs[0] for m in products), key=order.__getitem__)
            if self.phases[earlier] == self.phases[later] == self.phases[out]:
                self.accumulated[later] = earlier
                self.sums[out] = earlier

    def _plain_product(self, op: Op | None, add: Op, outputs: set) -> bool:
        """Whether ``op`` is a matmul whose float32 product, of ``add``'s shape, only ``add`` reads and
        that _matmul_product writes as it is (see _plan_accumulated_sums)."""
        if op is None or op.kind != OpKind.MATMUL:
            return False
        out = op.outputs[0]
        scaled = self.scaled_operands.get(op.inputs[1])
        return (out not in outputs and out not in self.elided and self.readers.get(out) == [add]
                and self.block.values[out].dtype == DType.FLOAT32
                and _shape(self.block.values[out]) == _shape(self.block.values[add.outputs[0]])
                and not (scaled is not None and scaled.rows) and not any(m is op for m in self.fused_sums.values()))

    def _plan_inlining(self) -> set[int]:
        """Elementwise values read once, by an elementwise op over the same shape or a reduction of it in
        the same phase, are not stored: the reader's loop computes them (one pass over the tile instead
        of two, and no buffer; e.g. a norm's square → sum). A convert (a shift for bfloat16) is inlined
        into every reader when all of them qualify: re-widening is cheaper than a float32 copy of the tile."""
        readers = self.readers
        phases = self.phases
        outputs = {o.value for o in self.block.outputs}
        inlined = set()
        for op in self.block.ops:
            out = op.outputs[0]
            if op.kind not in _ELEMENTWISE or out in outputs or out in self.elided or out in self.stored:
                continue
            users = [u for u in readers.get(out, []) if u.outputs[0] not in self.elided]
            if not users:
                if readers.get(out):  # read only by values never computed (a factored operand)
                    self.elided.add(out)
                continue
            if len(users) > 1 or users[0].inputs.count(out) > 1:
                if op.kind != OpKind.CONVERT:
                    continue
            if all(self._loops_over(user, out) and phases[user.outputs[0]] == phases[out] for user in users):
                inlined.add(out)
        return inlined

    def _plan_reductions_in_producers(self) -> dict[int, Op]:
        """Row reductions (last axis, float, rows of at least _REDUCE_LANES) of a value p that an
        elementwise op computes into its buffer, read directly or through ops inlined into the
        reduction: p's loop moves to the reduction and computes both, one pass over p instead of two
        (ntrans: ``x + a * (..)`` and its sum of squares). Only when no op between the two reads p but
        those inlined into the reduction. Returns the reduction's output → p's op."""
        defs = {op.outputs[0]: op for op in self.block.ops}
        order = {op.outputs[0]: n for n, op in enumerate(self.block.ops)}
        found: dict[int, Op] = {}
        for reduction in self.block.ops:
            if not self._reduces_rows_in_lanes(reduction) or reduction.outputs[0] in self.fused_sums:
                continue
            out, src = reduction.outputs[0], reduction.inputs[0]
            chain, leaves, todo = set(), set(), [src]
            while todo:
                v = todo.pop()
                if v in self.inlined:
                    chain.add(v)
                    todo.extend(defs[v].inputs)
                else:
                    leaves.add(v)
            candidates = [v for v in leaves if self._can_defer(defs.get(v), reduction, chain, order)]
            if candidates:
                producer = defs[max(candidates, key=order.__getitem__)]
                if producer not in found.values():
                    found[out] = producer
        return found

    def _reduces_rows_in_lanes(self, op: Op) -> bool:
        """Whether ``op`` is a reduction that _reduce_last_axis emits."""
        if op.kind not in (OpKind.REDUCE_SUM, OpKind.REDUCE_MAX):
            return False
        in_shape, shape = _shape(self.block.values[op.inputs[0]]), _shape(self.block.values[op.outputs[0]])
        axes = [d for d, (a, b) in enumerate(zip(in_shape, shape)) if a != b]
        floats = self.block.values[op.outputs[0]].dtype in (DType.FLOAT32, DType.BFLOAT16)
        return floats and axes == [len(in_shape) - 1] and in_shape[-1] >= _REDUCE_LANES

    def _can_defer(self, producer: Op | None, reduction: Op, chain: set[int], order: dict[int, int]) -> bool:
        """Whether ``producer``'s loop may move to ``reduction`` (see _plan_reductions_in_producers)."""
        if producer is None or producer.kind not in _ELEMENTWISE:
            return False
        p = producer.outputs[0]
        if p in self.inlined or p in self.elided or self.phases[p] != self.phases[reduction.outputs[0]]:
            return False
        if _shape(self.block.values[p]) != _shape(self.block.values[reduction.inputs[0]]):
            return False
        between = self.block.ops[order[p] + 1:order[reduction.outputs[0]]]
        return all(op.outputs[0] in chain for op in between if p in op.inputs)

    def _loops_over(self, reader: Op, value: int) -> bool:
        """Whether ``reader``'s loop walks ``value``'s shape with its index names (so it can compute the
        value in place): an elementwise op of the same shape, or a reduction of it."""
        out = reader.outputs[0]
        if out in self.elided:
            return False
        if reader.kind in _ELEMENTWISE:
            return _shape(self.block.values[out]) == _shape(self.block.values[value])
        return self.INLINE_INTO_REDUCTIONS and reader.kind in (OpKind.REDUCE_SUM, OpKind.REDUCE_MAX)

    def _plan_elementwise_views(self, users: dict, outputs: set) -> None:
        """Block inputs read only by loops over their own shape (elementwise ops, reductions) are not
        copied either: the loops index the source with its strides (a K tile normalized in the kernel
        is read where it lies, widened from bfloat16 on the fly, instead of copied first)."""
        for inp in self.block.inputs:
            readers = users.get(inp.value, [])
            if (inp.value in self.view_strides or inp.value in outputs or not readers
                    or not all(self._loops_over(r, inp.value) for r in readers)):
                continue
            self.view_strides[inp.value] = _strides(_shape(self.sources[inp.source]))

    def _plan_computed_transposes(self, users: dict, outputs: set) -> None:
        """A computed float32 tile whose transpose only feeds matmuls as their right operand is not
        transposed: the matmul takes dot products with its rows (e.g. q @ k^T with k normalized in the
        kernel)."""
        for op in self.block.ops:
            if op.kind != OpKind.TRANSPOSE or not _swaps_last_two(op):
                continue
            src, out = op.inputs[0], op.outputs[0]
            readers = users.get(out, [])
            if (out in self.elided or out in outputs or src in self.view_strides or not readers
                    or self.block.values[src].dtype != DType.FLOAT32
                    or not all(r.kind == OpKind.MATMUL and r.inputs[1] == out and r.inputs[0] != out for r in readers)):
                continue
            self.nt_operands[out] = src
            self.elided.add(out)
            self.stored.add(src)  # the matmul reads its buffer (never computed inside a reader's loop)

    def _plan_scaled_operands(self, users: dict, outputs: set) -> None:
        """A computed right operand read transposed that is a float32 product of one tile X (n × k) with
        factors constant along k (row scales r) and along n (column scales g) is not computed:
        A @ (X·r·g)^T = ((A·g) @ X^T)·r^T, so the matmul reads X's rows where they lie (a bfloat16 K tile
        widened in registers) and the scales go to A's columns and C's columns. QK-norm attention's
        normalized K tile (K · rsqrt(mean K²) · γ) was written and read back per KV tile."""
        defs = {op.outputs[0]: op for op in self.block.ops}
        for b, src in list(self.nt_operands.items()):
            if src in self.view_strides or len(users.get(src, [])) != 1:
                continue
            factored = self._product_factors(src, defs, users, outputs)
            if factored is None:
                continue
            leaves, between = factored
            scaled = self._classify_factors(src, leaves, users.get(b, []), defs)
            if scaled is None:
                continue
            self.scaled_operands[b] = scaled
            self.nt_operands[b] = scaled.data
            self.elided |= set(between)
            self.stored.discard(src)  # never computed now
            self.stored |= set(scaled.rows) | set(scaled.cols)
            if scaled.data not in self.view_strides:
                self.stored.add(scaled.data)
            x = next(v for v in leaves if _shape(self.block.values[v]) == _shape(self.block.values[src]))
            self._plan_fused_sum_of_squares(b, x, scaled, users)

    def _plan_fused_sum_of_squares(self, b: int, x: int, scaled: "ScaledOperand", users: dict) -> None:
        """A row sum of squares of the scaled operand's X (QK-norm's mean K²) is taken by the matmul's
        own pass over X's rows (``matmul_nt_acc*_sumsq``), where the reduction stood: a second pass over
        a K tile cost as much as the first. Only when the matmul's other inputs are ready there."""
        matmuls = users.get(b, [])
        if len(matmuls) != 1:
            return
        matmul = matmuls[0]
        shape = _shape(self.block.values[x])
        if shape[:-2] != _shape(self.block.values[matmul.outputs[0]])[:-2]:
            return  # X broadcast over a batch dim: its sums would be taken once per batch index
        order = {op.outputs[0]: i for i, op in enumerate(self.block.ops)}
        phases = self.phases
        for square in users.get(x, []):
            out = square.outputs[0]
            squares = ((square.kind == OpKind.MUL and list(square.inputs) == [x, x]) or
                       (square.kind == OpKind.SQUARE) or
                       (square.kind == OpKind.INTEGER_POW and int(square.attrs.get("exponent", 0)) == 2))
            readers = users.get(out, [])
            if not squares or len(readers) != 1 or readers[0].kind != OpKind.REDUCE_SUM:
                continue
            reduce = readers[0]
            total = reduce.outputs[0]
            if (_shape(self.block.values[total]) != shape[:-1] + (1,) or self.block.values[total].dtype != DType.FLOAT32
                    or phases[total] != phases[matmul.outputs[0]]):
                continue
            ready = [matmul.inputs[0], *scaled.cols]
            if any(v in order and order[v] > order[total] for v in ready):
                continue
            self.fused_sums[total] = matmul
            self.elided.add(out)
            return

    def _product_factors(self, root: int, defs: dict, users: dict, outputs: set) -> tuple[list[int], list[int]] | None:
        """(the factors, the products in between) of a float32 product tree rooted at ``root`` whose inner
        products each have one reader; None when ``root`` is not a product."""
        leaves, between, stack = [], [], [root]
        while stack:
            v = stack.pop()
            op = defs.get(v)
            inner = v == root or (len(users.get(v, [])) == 1 and v not in outputs and v not in self.elided)
            if (op is not None and op.kind == OpKind.MUL and inner and len(set(op.inputs)) == 2
                    and self.block.values[v].dtype == DType.FLOAT32):
                between.append(v)
                stack.extend(op.inputs)
            else:
                leaves.append(v)
        return (leaves, between) if between else None

    def _classify_factors(self, src: int, leaves: list[int], matmuls: list[Op], defs: dict) -> "ScaledOperand | None":
        """The factors as (the tile X, its row scales, its column scales), X given as the bfloat16 input it
        converts where it is one read in place; None unless exactly one factor has the product's shape and
        every other is constant along its last or second-to-last dim."""
        shape = _shape(self.block.values[src])
        if len(shape) < 2 or not leaves:
            return None
        values = self.block.values
        full = [v for v in leaves if _shape(values[v]) == shape]
        rest = [v for v in leaves if v not in full]
        rows = [v for v in rest if _shape(values[v])[-1] == 1]
        cols = [v for v in rest if v not in rows and _shape(values[v])[-2] == 1]
        if (len(full) != 1 or len(rows) + len(cols) != len(rest) or values[full[0]].dtype != DType.FLOAT32
                or any(values[v].dtype != DType.FLOAT32 or v in self.elided for v in rest)):
            return None
        for mm in matmuls:  # A·g: g's leading dims must match A's (or broadcast)
            a_lead = _shape(values[mm.inputs[0]])[:-2]
            if any(_shape(values[g])[:-2] not in (a_lead, (1,) * len(a_lead)) for g in cols):
                return None
        data = full[0]
        op = defs.get(data)
        if (op is not None and op.kind == OpKind.CONVERT and op.inputs[0] in self.view_strides
                and values[op.inputs[0]].dtype == DType.BFLOAT16):
            data = op.inputs[0]  # the matmul widens the bfloat16 rows itself
        elif data in self.elided:
            return None
        return ScaledOperand(data, tuple(rows), tuple(cols))

    def _operand_chain(self, value: int, users: dict, outputs: set) -> tuple[int, bool, list[int]] | None:
        """(the value the matmuls read, whether it is transposed, the values in between) when ``value``
        reaches matmuls only through at most one bf16→f32 convert and one last-two-dims transpose,
        each its value's only reader; None otherwise."""
        dtype = self.block.values[value].dtype
        current, transposed, converted, between = value, False, dtype == DType.FLOAT32, []
        while True:
            readers = users.get(current, [])
            if not readers or current in outputs:
                return None
            if converted and all(op.kind == OpKind.MATMUL for op in readers):
                plain = current == value  # an f32 input in place may be either operand
                if plain or all(op.inputs[1] == current and op.inputs[0] != current for op in readers):
                    return current, transposed, between[:-1]
                return None
            if len(readers) != 1:
                return None
            op, out = readers[0], readers[0].outputs[0]
            if (op.kind == OpKind.CONVERT and not converted and dtype == DType.BFLOAT16
                    and self.block.values[out].dtype == DType.FLOAT32):
                converted = True
            elif op.kind == OpKind.TRANSPOSE and not transposed and self.TRANSPOSED_VIEWS and _swaps_last_two(op):
                transposed = True
            else:
                return None
            between.append(out)
            current = out

    # -- element access ------------------------------------------------------------------------

    def read(self, value: int, expr: str) -> str:
        """An element of a value's buffer as a compute-type scalar."""
        t = self.block.values[value]
        if t.dtype == DType.BFLOAT16:
            return f"{self.BF16_TO_F32}({expr})"
        return f"static_cast<{_compute(t.dtype)}>({expr})"

    def write(self, value: int, expr: str) -> str:
        t = self.block.values[value]
        if t.dtype == DType.BFLOAT16:
            return f"{self.F32_TO_BF16}(static_cast<float>({expr}))"
        return f"static_cast<{_ctype(t)}>({expr})"

    def elem(self, value: int, target: Sequence[int]) -> str:
        if value in self.inline_exprs:  # same shape as the reader's loop (see _plan_inlining)
            return self.inline_exprs[value]
        shape = _shape(self.block.values[value])
        if value in self.view_strides:  # read in place: the source's strides (0 where it broadcasts)
            strides = [0 if d == 1 and t != 1 else s for d, t, s in zip(shape, target, self.view_strides[value])]
            return self.read(value, f"v{value}[{_offset(strides)}]")
        return self.read(value, f"v{value}[{_offset(_broadcast_strides(shape, target))}]")

    # -- target hooks (the CUDA emitter overrides these) -------------------------------------------

    BF16_TO_F32 = "pc::bf16_to_f32"
    F32_TO_BF16 = "pc::f32_to_bf16"
    EXP = "pc::fast_exp"  # float32 exp the compiler vectorizes (libm's is a call per element)

    def loops(self, shape: Sequence[int], body: str) -> None:
        """``body`` once per element of ``shape`` (loop variables i0, i1, ...); elements independent.
        Reads that do not move with the innermost loop (a row's scale) are loaded before it: GCC left
        such a loop scalar when its store might alias the scale's buffer (8 rows of ntrans in bfloat16,
        one thread: 35 -> 12 µs)."""
        if not shape or shape[-1] <= 1 or "for (" in body:
            self.w.loops(shape, body)
            return
        last = len(shape) - 1
        hoisted, body = _hoist_invariant_reads(body, f"i{last}")
        if not hoisted:
            self.w.loops(shape, body)
            return
        inner = f"for (std::int64_t i{last} = 0; i{last} < {shape[-1]}; ++i{last}) {{ {body} }}"
        self.w.loops(shape[:-1], "{ " + " ".join([*hoisted, inner]) + " }")

    def fill(self, pointer: str, n: int, value: str) -> None:
        self.w(f"std::fill({pointer}, {pointer} + {n}, {value});")

    def copy(self, dst: str, src: str, n: int) -> None:
        self.w(f"std::memcpy({dst}, {src}, {n} * sizeof(*{dst}));")

    def scratch(self, name: str, n: int, value: str) -> None:
        """A float work array of ``n`` elements set to ``value``."""
        self.w(f"std::vector<float> {name}({n}, {value});")

    # -- the source ----------------------------------------------------------------------------

    def source(self) -> str:
        w = self.w
        self._check_supported()
        args = ", ".join(["ffi::ThreadPool pool", "std::int64_t workers"] + [f"ffi::AnyBuffer a{k}" for k in range(len(self.sources))]
                         + [f"ffi::Result<ffi::AnyBuffer> r{k}" for k in range(len(self.block.outputs))])
        head = [f"static ffi::Error {self.symbol}_impl({args}) {{"]
        for k, t in enumerate(self.sources):
            head.append(f"  const {_ctype(t)}* src{k} = reinterpret_cast<const {_ctype(t)}*>(a{k}.untyped_data());")
        for k in range(len(self.block.outputs)):
            t = self.block.output_type(k)
            head.append(f"  {_ctype(t)}* dst{k} = reinterpret_cast<{_ctype(t)}*>(r{k}->untyped_data());")
        # the grid's blocks run on the runtime's worker threads; XLA's pool size is the default thread count
        head.append("  auto block = [&](std::int64_t blk) {")
        w.depth = 2
        self._block_indices()
        self._declare_values()
        self._block_body()
        blocks = math.prod(self.grid)
        tail = ["  };", f"  pc::parallel_blocks(workers > 0 ? workers : pool.num_threads(), {blocks}, block);",
                "  return ffi::Error::Success();", "}"]
        bind = '.Ctx<ffi::ThreadPool>().Attr<std::int64_t>("workers")' + "".join(".Arg<ffi::AnyBuffer>()" for _ in self.sources) + "".join(
            ".Ret<ffi::AnyBuffer>()" for _ in self.block.outputs)
        tail.append(f"XLA_FFI_DEFINE_HANDLER_SYMBOL({self.symbol}, {self.symbol}_impl, ffi::Ffi::Bind(){bind});")
        return "\n".join(head + w.lines + tail) + "\n"

    def _block_body(self) -> None:
        """What one block does: loads, loop-invariant ops, the for-loop with its accumulators, the
        after-loop ops, stores (block indices b0.. and tile buffers v0.. already defined)."""
        w = self.w
        phases = self.phases
        looped = [any(e is True for e in inp.fmap) for inp in self.block.inputs]
        for inp, is_looped in zip(self.block.inputs, looped):
            if not is_looped:
                self._load(inp, "0")
        for op in self.block.ops:
            if phases[op.outputs[0]] == Phase.INVARIANT:
                self._op(op)
        accumulators = [op for op in self.block.ops if op.kind in _ACCUMULATORS]
        for op in accumulators:
            self._init_accumulator(op)
        if accumulators or any(looped):
            w(f"for (std::int64_t it = 0; it < {self.forloop}; ++it) {{")
            w.depth += 1
            for inp, is_looped in zip(self.block.inputs, looped):
                if is_looped:
                    self._load(inp, "it")
            for op in self.block.ops:
                if phases[op.outputs[0]] == Phase.LOOP:
                    self._op(op)
            for op in accumulators:
                self._accumulate(op)
            w.depth -= 1
            w("}")
        for op in self.block.ops:
            if phases[op.outputs[0]] == Phase.POST and op.kind not in _ACCUMULATORS:
                self._op(op)
        for k, out in enumerate(self.block.outputs):
            self._store(k, out.value)

    def _check_supported(self) -> None:
        for k, out in enumerate(self.block.outputs):
            for p, extent in enumerate(self.grid):
                if extent > 1 and not any(row[p] for row in out.omap):
                    raise IRError("the C++ emitter does not sum partial results over grid dims (split-K in one "
                                  "kernel); the two-kernel split form is the CPU's way")
        for t in self.block.values:
            _ctype(t)

    def _block_indices(self) -> None:
        rest = "blk"
        for p in range(len(self.grid) - 1, -1, -1):
            self.w(f"const std::int64_t b{p} = {rest} % {self.grid[p]};")
            rest = f"({rest} / {self.grid[p]})"

    def _declare_values(self) -> None:
        """Tile buffers, allocated once per thread (``thread_local``) and reused by its blocks; an output
        tile that is one contiguous chunk of the result is computed where it lies in the result."""
        for v, t in enumerate(self.block.values):
            if v in self.views:
                self.w(f"const {_ctype(t)}* v{v} = nullptr;  // read in place")
            elif v in self.elided or v in self.inlined or v in self.accumulated:
                continue  # the matmul reads (widens, transposes) the input itself / the reader computes it /
                # the product is added into another's buffer
            elif v in self.in_place:
                k = self.in_place[v]
                self.w(f"{_ctype(t)}* v{v} = dst{k} + ({self._output_base(k)});  // written in place")
            else:
                n = max(1, math.prod(_shape(t)))
                self.w(f"static thread_local std::vector<{_ctype(t)}> v{v}_buf; v{v}_buf.resize({n}); "
                       f"{_ctype(t)}* v{v} = v{v}_buf.data();")

    def _chunk(self, row, loop_entry: bool, iteration: str) -> str:
        index = "0"
        for p, split in enumerate(row):
            if split:
                index = f"({index} * {self.grid[p]} + b{p})"
        if loop_entry:
            index = f"({index} * {self.forloop} + {iteration})"
        return index

    def _load(self, inp: BlockInput, iteration: str) -> None:
        tile = _shape(self.block.values[inp.value])
        source = _shape(self.sources[inp.source])
        strides = _strides(source)
        base = " + ".join(f"{self._chunk(row, loop, iteration)} * {t * s}"
                          for row, loop, t, s in zip(inp.imap, inp.fmap, tile, strides)) or "0"
        if inp.value in self.views:
            self.w(f"v{inp.value} = src{inp.source} + ({base});")
            return
        self.w(f"{{ const auto* base = src{inp.source} + ({base});")
        self.w.depth += 1
        inner = tile[-1] if tile else 1
        outer = tile[:-1]
        src_off = _offset(strides[:-1])
        dst_off = _offset(_strides(tile)[:-1])
        self.loops(outer, f"std::memcpy(v{inp.value} + {dst_off}, base + {src_off}, "
                            f"{inner} * sizeof(*base));")
        self.w.depth -= 1
        self.w("}")

    def _outputs_in_place(self) -> dict[int, int]:
        """Output values (with a buffer of their own) whose tile is one contiguous chunk of the result
        (its dims after the first that is not 1 are whole): value → the output that holds it. Such a
        tile indexed as a buffer is indexed as the result, so it needs no buffer and no copy."""
        in_place: dict[int, int] = {}
        for k, out in enumerate(self.block.outputs):
            v = out.value
            if v in in_place or v in self.views or v in self.elided or v in self.inlined:
                continue
            if _ctype(self.block.values[v]) != _ctype(self.block.output_type(k)):
                continue
            tile, full = _shape(self.block.values[v]), _shape(self.block.output_type(k))
            first = next((d for d, n in enumerate(tile) if n != 1), len(tile))
            if tile[first + 1:] == full[first + 1:]:
                in_place[v] = k
        return in_place

    def _output_base(self, k: int) -> str:
        """Offset of block output ``k``'s tile in its result (from the omap and the block indices)."""
        out = self.block.outputs[k]
        tile = _shape(self.block.values[out.value])
        strides = _strides(_shape(self.block.output_type(k)))
        return " + ".join(f"{self._chunk(row, False, '0')} * {t * s}"
                          for row, t, s in zip(out.omap, tile, strides)) or "0"

    def _store(self, k: int, value: int) -> None:
        if self.in_place.get(value) == k:
            return  # computed where it lies in the result
        tile = _shape(self.block.values[value])
        strides = _strides(_shape(self.block.output_type(k)))
        self.w(f"{{ auto* base = dst{k} + ({self._output_base(k)});")
        self.w.depth += 1
        inner = tile[-1] if tile else 1
        self.loops(tile[:-1], f"std::memcpy(base + {_offset(strides[:-1])}, v{value} + "
                                f"{_offset(_strides(tile)[:-1])}, {inner} * sizeof(*base));")
        self.w.depth -= 1
        self.w("}")

    # -- ops -----------------------------------------------------------------------------------

    def _op(self, op: Op) -> None:
        out = op.outputs[0]
        shape = _shape(self.block.values[out])
        kind = op.kind
        dst = f"v{out}[{_offset(_strides(shape))}]"
        if out in self.elided:
            return  # read in place by the matmul
        if out in self.deferred:
            return  # computed by the loop of the row reduction that reads it
        expr = self._elementwise_expr(op, shape)
        if expr is not None:
            if out in self.inlined:  # computed by its reader's loop; rounded as if stored
                self.inline_exprs[out] = self.read(out, self.write(out, expr))
            else:
                self.loops(shape, f"{dst} = {self.write(out, expr)};")
            return
        if kind == OpKind.CONSTANT:
            value = float(constant_value(op.attrs["value"]))
            literal = "P_NEG_INF" if value == -math.inf else repr(value) if math.isfinite(value) else "INFINITY"
            self.fill(f"v{out}", math.prod(shape), self.write(out, literal))
        elif kind == OpKind.IOTA:
            dim = op.attrs["dimension"]
            self.loops(shape, f"{dst} = {self.write(out, f'i{dim}')};")
        elif kind == OpKind.RESHAPE:
            self.copy(f"v{out}", f"v{op.inputs[0]}", math.prod(shape))
        elif kind == OpKind.TRANSPOSE:
            self._transpose(op, shape)
        elif kind in (OpKind.REDUCE_SUM, OpKind.REDUCE_MAX):
            self._reduce(op, shape)
        elif kind == OpKind.MATMUL:
            self._matmul(op, shape)
        else:
            raise IRError(f"the C++ emitter has no rule for {kind}")

    def _elementwise_expr(self, op: Op, shape: Sequence[int]) -> str | None:
        """The scalar expression of an elementwise op at index (i0, i1, ...) of ``shape``; None for others."""
        kind = op.kind
        if kind == OpKind.EXP:
            return f"{self.EXP}({self.elem(op.inputs[0], shape)})"
        if kind in _UNARY:
            return _UNARY[kind].format(self.elem(op.inputs[0], shape))
        if op.outputs[0] in self.sums:  # the matmuls summed into one buffer
            return self.elem(self.sums[op.outputs[0]], shape)
        if kind in _BINARY:
            return _BINARY[kind].format(*(self.elem(v, shape) for v in op.inputs))
        if kind == OpKind.SELECT:
            pred, on_false, on_true = (self.elem(v, shape) for v in op.inputs)
            return f"({pred} ? {on_true} : {on_false})"
        if kind in (OpKind.CONVERT, OpKind.BROADCAST):
            return self.elem(op.inputs[0], shape)
        if kind == OpKind.INTEGER_POW:
            return f"std::pow({self.elem(op.inputs[0], shape)}, {int(op.attrs['exponent'])})"
        return None

    def _transpose(self, op: Op, shape: Sequence[int]) -> None:
        src = op.inputs[0]
        in_strides = _strides(_shape(self.block.values[src]))
        perm = op.attrs["perm"]
        strides = [in_strides[p] for p in perm]  # output dim d walks input dim perm[d]
        self.loops(shape, f"v{op.outputs[0]}[{_offset(_strides(shape))}] = v{src}[{_offset(strides)}];")

    def _reduce(self, op: Op, shape: Sequence[int]) -> None:
        src, out = op.inputs[0], op.outputs[0]
        if out in self.fused_sums:  # the matmul's pass over the rows sums their squares
            matmul = self.fused_sums[out]
            self._matmul_product(matmul, _shape(self.block.values[matmul.outputs[0]]), sum_of_squares=out)
            return
        in_shape = _shape(self.block.values[src])
        is_sum = op.kind == OpKind.REDUCE_SUM
        identity = "0.0f" if is_sum else "P_NEG_INF"
        if self._reduces_rows_in_lanes(op):  # partials in float
            self._reduce_last_axis(op, shape, in_shape, is_sum, identity)
            return
        self.fill(f"v{out}", math.prod(shape), self.write(out, identity))
        acc = f"v{out}[{_offset(_broadcast_strides(shape, in_shape))}]"
        current = self.read(out, acc)
        element = self.elem(src, in_shape)
        combined = f"({current} + {element})" if is_sum else f"std::max({current}, {element})"
        self.loops(in_shape, f"{acc} = {self.write(out, combined)};")

    def _reduce_last_axis(self, op: Op, shape: Sequence[int], in_shape: Sequence[int], is_sum: bool,
                          identity: str) -> None:
        """A row reduction as _REDUCE_LANES independent partial results combined at the end: the
        compiler vectorizes it (one running value per row would be a chain of dependent adds, which
        it may not reorder), so a norm's sum of squares or softmax's max costs a pass at vector speed."""
        src, out = op.inputs[0], op.outputs[0]
        last, n, lanes = len(in_shape) - 1, in_shape[-1], _REDUCE_LANES
        produce = ""  # computing and storing the value reduced, when this loop is its producer's
        producer = self.producer_of.get(out)
        if producer is None:
            element = self.elem(src, in_shape)
        else:
            p = producer.outputs[0]
            produce = (f"const auto x{p} = {self.write(p, self._elementwise_expr(producer, in_shape))}; "
                       f"v{p}[{_offset(_strides(in_shape))}] = x{p}; ")
            self.inline_exprs[p] = self.read(p, f"x{p}")  # this loop's value; later readers read the buffer
            element = self.elem(src, in_shape)
            del self.inline_exprs[p]
        hoisted, code = _hoist_invariant_reads(f"{produce}\n{element}", f"i{last}")
        produce, element = code.split("\n")

        def combine(a: str, b: str) -> str:
            return f"({a} + {b})" if is_sum else f"std::max({a}, {b})"

        body = [*hoisted, f"float part[{lanes}]; std::fill(part, part + {lanes}, {identity});",
                f"std::int64_t j = 0; for (; j + {lanes} <= {n}; j += {lanes}) "
                f"for (std::int64_t u = 0; u < {lanes}; ++u) {{ const std::int64_t i{last} = j + u; "
                f"{produce}part[u] = {combine('part[u]', element)}; }}",
                f"for (; j < {n}; ++j) {{ const std::int64_t i{last} = j; {produce}"
                f"part[0] = {combine('part[0]', element)}; }}",
                f"for (std::int64_t w = {lanes} / 2; w > 0; w /= 2) for (std::int64_t u = 0; u < w; ++u) "
                f"part[u] = {combine('part[u]', 'part[u + w]')};",
                f"v{out}[{_offset(_strides(shape[:-1]))}] = {self.write(out, 'part[0]')};"]
        self.loops(list(shape[:-1]), "{ " + " ".join(body) + " }")

    def _matmul(self, op: Op, shape: Sequence[int]) -> None:
        out = op.outputs[0]
        if not any(m is op for m in self.fused_sums.values()):  # else computed where its row norm stood
            self._matmul_product(op, shape)
        scaled = self.scaled_operands.get(op.inputs[1])
        for r in scaled.rows if scaled is not None else ():
            self.loops(shape, f"v{out}[{_offset(_strides(shape))}] *= {self._row_scale(r, shape)};")

    def _matmul_product(self, op: Op, shape: Sequence[int], sum_of_squares: int | None = None) -> None:
        """The matmul call(s) into v<out> (zeroed first); ``sum_of_squares``: also the value that gets the
        sums of squares of the transposed operand's rows."""
        a, b = op.inputs
        out = op.outputs[0]
        if any(self.block.values[v].dtype != DType.FLOAT32 for v in (a, b, out)):
            raise IRError("the C++ emitter multiplies float32 tiles only (the block graph converts loads)")
        a_shape, b_shape = _shape(self.block.values[a]), _shape(self.block.values[b])
        m, k = a_shape[-2:]
        n = b_shape[-1]
        b_source = self.nt_operands.get(b, self.bf16_operands.get(b, b))
        lda, ldb = self.views.get(a, k), self.views.get(b_source, k if b in self.nt_operands else n)
        function = "pc::matmul_nt_acc" if b in self.nt_operands else "pc::matmul_acc"
        if self.block.values[b_source].dtype == DType.BFLOAT16:  # (no bfloat16 product fuses sums of squares)
            function += "_bf16_dot" if self.bf16_program and sum_of_squares is None else "_bf16"
        batch = shape[:-2]
        scaled = self.scaled_operands.get(b)
        a_name = f"v{a}"
        a_off = _offset(self._batch_strides(a, a_shape, batch))
        if scaled is not None and scaled.cols:  # A·g, into a buffer of A's shape
            a_name, lda = f"sa{out}", k
            self.w(f"static thread_local std::vector<float> {a_name}_buf; {a_name}_buf.resize({math.prod(a_shape)}); "
                   f"float* {a_name} = {a_name}_buf.data();")
            product = " * ".join([self.elem(a, a_shape)] + [self.elem(g, a_shape) for g in scaled.cols])
            self.loops(a_shape, f"{a_name}[{_offset(_strides(a_shape))}] = {product};")
            a_off = _offset([s * m * k for s in _broadcast_strides(a_shape[:-2], batch)])
        b_off = _offset(self._batch_strides(b_source, b_shape, batch))
        target = self.accumulated.get(out, out)
        if target == out:
            self.fill(f"v{out}", math.prod(shape), "0.0f")
        c_off = _offset(_strides(batch) if batch else [])
        extra = ""
        if sum_of_squares is not None:  # one sum per row of X: (.., n, 1), contiguous per batch index
            function += "_sumsq"
            extra = f", v{sum_of_squares} + ({c_off}) * {n}"
        call = (f"{function}({a_name} + ({a_off}), {lda}, v{b_source} + ({b_off}), {ldb}, "
                f"v{target} + ({c_off}) * {m * n}, {n}, {m}, {n}, {k}{extra});")
        self.loops(batch, call)

    def _row_scale(self, r: int, shape: Sequence[int]) -> str:
        """Element (.., i, j) of a matmul result's column scale: factor ``r`` of row j of the transposed
        operand X (r's shape (.., n, 1), so its second-to-last dim walks C's last)."""
        r_shape = _shape(self.block.values[r])
        own = self.view_strides.get(r, _strides(r_shape))
        strides = [0 if d == 1 and t != 1 else st for d, t, st in zip(r_shape[:-2], shape[:-2], own[:-2])]
        strides += [0, own[-2] if r_shape[-2] != 1 else 0]
        return self.read(r, f"v{r}[{_offset(strides)}]")

    def _batch_strides(self, value: int, shape: Sequence[int], batch: Sequence[int]) -> list[int]:
        """Element strides of a matmul operand's leading dims along the output's batch dims (0 where it
        broadcasts): the source's strides for a view, the tile's for a buffer."""
        if not batch:
            return []
        lead = list(shape[:-2])
        if value in self.view_strides:
            source = self.view_strides[value][:-2]
            return [0 if d == 1 and t != 1 else s for d, t, s in zip(lead, batch, source)]
        rows_cols = shape[-2] * shape[-1]
        return [s * rows_cols for s in _broadcast_strides(lead, batch)]

    # -- accumulators --------------------------------------------------------------------------

    def _init_accumulator(self, op: Op) -> None:
        out = op.outputs[0]
        n = math.prod(_shape(self.block.values[out]))
        fill = "P_NEG_INF" if op.kind == OpKind.ACCUM_MAX else "0.0f"
        self.fill(f"v{out}", n, fill)
        if op.kind == OpKind.ACCUM_RESCALED_SUM:
            m = math.prod(_shape(self.block.values[op.inputs[1]]))
            self.scratch(f"run{out}", m, "P_NEG_INF")
            self.scratch(f"old{out}", m, "0.0f")
            self.scratch(f"new{out}", m, "0.0f")

    def _accumulate(self, op: Op) -> None:
        out = op.outputs[0]
        shape = _shape(self.block.values[out])
        acc = f"v{out}[{_offset(_strides(shape))}]"
        x = self.elem(op.inputs[0], shape)
        if op.kind == OpKind.ACCUM_SUM:
            self.loops(shape, f"{acc} += {x};")
        elif op.kind == OpKind.ACCUM_SUM_SQUARES:
            self.loops(shape, f"{{ const float x = {x}; {acc} += x * x; }}")
        elif op.kind == OpKind.ACCUM_MAX:
            self.loops(shape, f"{acc} = std::max({acc}, {x});")
        else:
            self._rescaled(op, shape)

    def _rescaled(self, op: Op, shape: Sequence[int]) -> None:
        """acc·exp(m − m') + value·exp(s − m'), m' = max(m, s); −inf terms contribute 0."""
        out, (value, scale) = op.outputs[0], op.inputs
        s_shape = _shape(self.block.values[scale])
        idx = _offset(_strides(s_shape))
        s = self.read(scale, f"v{scale}[{idx}]")
        self.loops(s_shape, f"{{ const float s = {s}, m = run{out}[{idx}], mx = std::max(m, s); "
                              f"old{out}[{idx}] = m == P_NEG_INF ? 0.0f : {self.EXP}(m - mx); "
                              f"new{out}[{idx}] = s == P_NEG_INF ? 0.0f : {self.EXP}(s - mx); run{out}[{idx}] = mx; }}")
        factor = _offset(_broadcast_strides(s_shape, shape))
        acc = f"v{out}[{_offset(_strides(shape))}]"
        self.loops(shape, f"{acc} = {acc} * old{out}[{factor}] + {self.elem(value, shape)} * new{out}[{factor}];")


_ACCUMULATORS = frozenset({OpKind.ACCUM_SUM, OpKind.ACCUM_SUM_SQUARES, OpKind.ACCUM_MAX, OpKind.ACCUM_RESCALED_SUM})


def kernel_source(block: BlockGraph, source_types: Sequence[TensorType], symbol: str) -> str:
    """The whole translation unit of one custom kernel (``symbol`` names its FFI handler)."""
    return PREAMBLE + KernelEmitter(block, source_types, symbol).source()
