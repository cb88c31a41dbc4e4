"""Plausible wrong candidates: small semantic mutations of a correct sGraph (wrong axis, missing eps,
swapped operands, partial sums never combined, a replicate where a partition belongs, a softmax
without its denominator, ...). The verifiers must reject every one; tests and benchmarks use them."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

from prism_jax.ir import (Attrs, BlockGraph, BlockOutput, IRError, KernelGraph, Mono, Op, OpKind,
                          validate_kernel_graph)


@dataclasses.dataclass(frozen=True)
class Mutant:
    description: str
    graph: KernelGraph


_UNARY_SWAPS = {OpKind.EXP: OpKind.TANH, OpKind.RSQRT: OpKind.SQRT, OpKind.SQRT: OpKind.RSQRT,
                OpKind.LOGISTIC: OpKind.TANH, OpKind.SQUARE: OpKind.ABS}
_BINARY_SWAPS = {OpKind.ADD: OpKind.SUB, OpKind.SUB: OpKind.ADD, OpKind.MUL: OpKind.ADD, OpKind.DIV: OpKind.MUL}
_ACCUM_SWAPS = {OpKind.ACCUM_SUM: OpKind.ACCUM_MAX, OpKind.ACCUM_MAX: OpKind.ACCUM_SUM,
                OpKind.ACCUM_SUM_SQUARES: OpKind.ACCUM_SUM}


def mutants(graph: KernelGraph) -> Iterator[Mutant]:
    """Every single-point mutation of the custom kernels' block graphs that still validates."""
    for k, op in enumerate(graph.ops):
        if op.block is None:
            continue
        for description, block in _block_mutations(op.block):
            ops = list(graph.ops)
            ops[k] = dataclasses.replace(op, block=block)
            candidate = dataclasses.replace(graph, ops=tuple(ops))
            try:
                validate_kernel_graph(candidate)
            except IRError:
                continue
            yield Mutant(f"kernel #{k}: {description}", candidate)


def _block_mutations(block: BlockGraph) -> Iterator[tuple[str, BlockGraph]]:
    for i, op in enumerate(block.ops):
        for description, new_op in _op_mutations(op):
            ops = list(block.ops)
            ops[i] = new_op
            yield f"op #{i} {op.kind}: {description}", dataclasses.replace(block, ops=tuple(ops))
        for description, forwarded in _drop_op(block, i):
            yield f"op #{i} {op.kind}: {description}", forwarded
    for k, out in enumerate(block.outputs):
        for p in range(block.grid_rank):
            for d, row in enumerate(out.omap):
                if row[p] is True:  # leave grid dim p unmapped: partial results summed instead of placed
                    omap = tuple(tuple(False if (dd == d and pp == p) else e for pp, e in enumerate(r))
                                 for dd, r in enumerate(out.omap))
                    outputs = list(block.outputs)
                    outputs[k] = BlockOutput(out.value, omap)
                    yield (f"output {k}: grid dim {p} summed instead of combined along dim {d}",
                           dataclasses.replace(block, outputs=tuple(outputs)))
    for j, inp in enumerate(block.inputs):
        for d, row in enumerate(inp.imap):
            for p, e in enumerate(row):
                if e is True:  # replicate where a partition belongs (tile shapes change: usually invalid)
                    imap = tuple(tuple(False if (dd == d and pp == p) else x for pp, x in enumerate(r))
                                 for dd, r in enumerate(inp.imap))
                    inputs = list(block.inputs)
                    inputs[j] = dataclasses.replace(inp, imap=imap)
                    yield f"input {j}: replicated along grid dim {p}", dataclasses.replace(block, inputs=tuple(inputs))


def _op_mutations(op: Op) -> Iterator[tuple[str, Op]]:
    swaps: dict = {**_UNARY_SWAPS, **_BINARY_SWAPS, **_ACCUM_SWAPS}
    if op.kind in swaps:
        yield f"{op.kind} → {swaps[op.kind]}", dataclasses.replace(op, kind=swaps[op.kind])
    if op.kind in (OpKind.SUB, OpKind.DIV, OpKind.MATMUL, OpKind.ACCUM_RESCALED_SUM) and op.inputs[0] != op.inputs[1]:
        yield "operands swapped", dataclasses.replace(op, inputs=op.inputs[::-1])
    if op.kind in (OpKind.REDUCE_SUM, OpKind.REDUCE_MAX):
        (axis,) = op.attrs["axes"][:1]
        for other in range(4):
            if other != axis:
                yield f"reduces axis {other} instead of {axis}", dataclasses.replace(
                    op, attrs=Attrs.of(op.attrs.as_dict(), axes=(other,)))
    if op.kind == OpKind.CONSTANT:
        value = op.attrs["value"]
        changed = value * 2 if isinstance(value, Mono) else (value * 2 + 1)
        yield f"constant {value} → {changed}", dataclasses.replace(op, attrs=Attrs.of(op.attrs.as_dict(), value=changed))


def _drop_op(block: BlockGraph, index: int) -> Iterator[tuple[str, BlockGraph]]:
    """Forward one of the op's inputs in its place (a missing eps, scale or denominator)."""
    op = block.ops[index]
    if op.kind in (OpKind.CONSTANT, OpKind.IOTA):
        return
    for arg in op.inputs:
        if block.values[arg] != block.values[op.outputs[0]]:
            continue
        rename: Callable[[int], int] = lambda v: arg if v == op.outputs[0] else v
        ops = tuple(dataclasses.replace(o, inputs=tuple(map(rename, o.inputs))) for o in block.ops)
        outputs = tuple(BlockOutput(rename(o.value), o.omap) for o in block.outputs)
        yield f"dropped (its input %{arg} forwarded)", dataclasses.replace(block, ops=ops, outputs=outputs)
        return
