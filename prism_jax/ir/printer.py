"""A readable text form of sGraphs (what ``print(graph)`` and ``explain()`` show)."""

from __future__ import annotations

from prism_jax.ir.graph import BlockGraph, KernelGraph, Op, Phase
from prism_jax.ir.maps import MapMatrix
from prism_jax.ir.ops import ACCUMULATORS
from prism_jax.ir.types import TensorType

_GRID_NAMES = "xyz"


def format_kernel_graph(graph: KernelGraph) -> str:
    params = ", ".join(f"%{v} {name}: {graph.values[v]}" for v, name in zip(graph.inputs, graph.input_names))
    lines = [f"kernel_graph {graph.name}({params}) {{"]
    for op in graph.ops:
        lines += _format_op(op, graph.values, indent="  ")
    lines.append("  return " + ", ".join(f"%{v}" for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines)


def _format_op(op: Op, values: tuple[TensorType, ...], indent: str) -> list[str]:
    outs = ", ".join(f"%{v}: {values[v]}" for v in op.outputs)
    args = ", ".join(f"%{v}" for v in op.inputs)
    attrs = f" {op.attrs}" if op.attrs.items else ""
    head = f"{indent}{outs} = {op.kind}({args}){attrs}"
    if op.block is None:
        return [head]
    return [head + " {"] + format_block_graph(op.block, indent + "  ").splitlines() + [indent + "}"]


def format_block_graph(block: BlockGraph, indent: str = "") -> str:
    grid = ", ".join(f"{_GRID_NAMES[p]}={g}" for p, g in enumerate(block.grid))
    lines = [f"{indent}grid({grid}) forloop({block.forloop})"]
    for inp in block.inputs:
        lines.append(f"{indent}%{inp.value}: {block.values[inp.value]} = input(${inp.source}) "
                     f"imap={_format_map(inp.imap)} fmap={_format_row(inp.fmap)}")
    phases = block.phases()
    for op in block.ops:
        after_loop = phases[op.outputs[0]] == Phase.POST and op.kind not in ACCUMULATORS
        lines += [line + ("  # after loop" if after_loop else "") for line in _format_op(op, block.values, indent)]
    for k, out in enumerate(block.outputs):
        lines.append(f"{indent}output[{k}] = %{out.value} omap={_format_map(out.omap)}")
    return "\n".join(lines)


def _format_map(matrix: MapMatrix) -> str:
    """Per grid dim, the data dim it splits: ``{x:0, y:-}`` (``-`` = replicated / summed)."""
    if not matrix:
        return "{}"
    parts = []
    for p in range(len(matrix[0])):
        dims = [str(d) if e is True else f"{d}{e}" for d, row in enumerate(matrix) for e in [row[p]] if e is not False]
        parts.append(f"{_GRID_NAMES[p]}:{'|'.join(dims) or '-'}")
    return "{" + ", ".join(parts) + "}"


def _format_row(row) -> str:
    dims = [str(d) if e is True else f"{d}{e}" for d, e in enumerate(row) if e is not False]
    return "|".join(dims) or "-"
