"""Verdicts and the Verifier protocol shared by every verification method."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping, Protocol

from prism_jax.ir import KernelGraph


class Status(enum.Enum):
    EQUAL = "equal"  # proved for every size satisfying the constraints
    NOT_EQUAL = "not_equal"  # a counterexample exists (attached)
    UNKNOWN = "unknown"  # budget spent or method not applicable: never treated as equal


@dataclasses.dataclass(frozen=True)
class Counterexample:
    """Sizes and inputs on which reference and candidate differ."""

    sizes: Mapping[str, int]
    inputs: tuple[Any, ...]  # numpy arrays
    max_error: float
    arithmetic: str  # "float64" or "mod p"


@dataclasses.dataclass(frozen=True)
class Verdict:
    status: Status
    method: str
    seconds: float
    detail: str = ""
    counterexample: Counterexample | None = None
    evidence: int = 0  # random trials a fingerprint survived (0 for proofs)

    @property
    def equal(self) -> bool:
        return self.status is Status.EQUAL

    @property
    def not_equal(self) -> bool:
        return self.status is Status.NOT_EQUAL

    def __str__(self) -> str:
        text = f"{self.status.value} by {self.method} in {self.seconds * 1e3:.1f} ms"
        return f"{text}: {self.detail}" if self.detail else text


class Verifier(Protocol):
    """Decides whether ``candidate`` computes ``reference`` (same inputs, same outputs, in order)."""

    name: str

    def verify(self, reference: KernelGraph, candidate: KernelGraph) -> Verdict: ...
