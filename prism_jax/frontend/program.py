"""The flat program: a jaxpr with nested calls inlined, its equations converted to IR ops where a rule
exists and kept as opaque JAX equations where none does. Normalization and partitioning work on it."""

from __future__ import annotations

import dataclasses
from typing import Any, Union

import numpy as np

from prism_jax.ir import Attrs, OpKind, TensorType


@dataclasses.dataclass
class IrNode:
    """An IR op on flat-program values (one output)."""

    kind: OpKind
    attrs: Attrs
    inputs: tuple[int, ...]
    output: int

    @property
    def outputs(self) -> tuple[int, ...]:
        return (self.output,)


@dataclasses.dataclass
class OpaqueNode:
    """A JAX equation no rule converts: it ends regions and is evaluated by JAX as written."""

    eqn: Any  # jax.extend.core.JaxprEqn
    inputs: tuple[Union[int, "LiteralValue"], ...]
    outputs: tuple[int, ...]
    reason: str


@dataclasses.dataclass
class ScanNode:
    """``lax.scan``: its body is a flat program of its own (regions are found inside it)."""

    body: "FlatProgram"
    eqn: Any
    num_consts: int
    num_carry: int
    inputs: tuple[Union[int, "LiteralValue"], ...]
    outputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class LiteralValue:
    """A literal operand of an opaque equation (kept verbatim)."""

    value: Any


Node = Union[IrNode, OpaqueNode, ScanNode]


@dataclasses.dataclass
class FlatProgram:
    """Values are ints; ``types[v]`` is the IR type or None for values the IR cannot represent."""

    name: str
    types: dict[int, TensorType | None]
    avals: dict[int, Any]  # jax abstract values, for re-emission
    inputs: list[int]
    consts: dict[int, np.ndarray]  # non-scalar closed-over constants
    nodes: list[Node]
    outputs: list[int]
    unsupported: list[str] = dataclasses.field(default_factory=list)

    def new_value(self, t: TensorType | None, aval: Any = None) -> int:
        v = max(self.types, default=-1) + 1
        self.types[v] = t
        self.avals[v] = aval
        return v

    def producers(self) -> dict[int, int]:
        """value → index of the node that defines it."""
        return {v: i for i, node in enumerate(self.nodes) for v in node.outputs}

    def users(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for v in node.inputs:
                if isinstance(v, int):
                    out.setdefault(v, []).append(i)
        return out
