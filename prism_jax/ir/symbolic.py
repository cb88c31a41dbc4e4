"""Symbolic integer sizes and the constraints on them.

Hot paths (shape inference, tile shapes) use :class:`Mono`, a rational monomial
``coeff * Π sym**exp`` that is closed under multiplication and exact division —
exactly what tile shapes ``D / (g_x * F)`` need — and cheap to hash and compare.
Anything that needs sums (memory budgets, Boolean map variables) converts to
sympy through :func:`to_sympy`.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Iterable, Mapping, Union

import sympy

from prism_jax.ir.errors import IRError


@dataclasses.dataclass(frozen=True, slots=True)
class Mono:
    """A rational monomial ``coeff * Π name**exp`` over positive integer symbols."""

    coeff: Fraction
    factors: tuple[tuple[str, int], ...]  # sorted by name, exponents nonzero
    # computed on first use: shape inference looks tile types up by hash millions of times, and a
    # Fraction hashes in Python
    _hash: int | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash((self.coeff, self.factors)))
        return self._hash

    def __reduce__(self):  # without the cached hash: string hashes differ between processes
        return Mono, (self.coeff, self.factors)

    @staticmethod
    def symbol(name: str) -> "Mono":
        if not name.isidentifier():
            raise IRError(f"symbol name {name!r} is not an identifier")
        return Mono(Fraction(1), ((name, 1),))

    @staticmethod
    def of(value: "Size") -> "Mono":
        if isinstance(value, Mono):
            return value
        if isinstance(value, (int, Fraction)) and not isinstance(value, bool):
            return Mono(Fraction(value), ())
        raise IRError(f"not a size: {value!r}")

    def _combine(self, other: "Mono", sign: int) -> "Mono":
        exps = dict(self.factors)
        for name, exp in other.factors:
            exps[name] = exps.get(name, 0) + sign * exp
        factors = tuple(sorted((n, e) for n, e in exps.items() if e != 0))
        coeff = self.coeff * other.coeff if sign > 0 else self.coeff / other.coeff
        return Mono(coeff, factors)

    def __mul__(self, other: "Size") -> "Size":
        return normalize(self._combine(Mono.of(other), +1))

    __rmul__ = __mul__

    def __truediv__(self, other: "Size") -> "Size":
        other = Mono.of(other)
        if other.coeff == 0:
            raise IRError("division of a size by zero")
        return normalize(self._combine(other, -1))

    def __rtruediv__(self, other: "Size") -> "Size":
        return Mono.of(other) / self

    @property
    def free_symbols(self) -> frozenset[str]:
        return frozenset(n for n, _ in self.factors)

    def is_integral_polynomial(self) -> bool:
        """True when the monomial is an integer for every positive integer assignment."""
        return self.coeff.denominator == 1 and all(e > 0 for _, e in self.factors)

    def __str__(self) -> str:
        num = [n if e == 1 else f"{n}^{e}" for n, e in self.factors if e > 0]
        den = [n if e == -1 else f"{n}^{-e}" for n, e in self.factors if e < 0]
        if self.coeff.numerator != 1 or not num:
            num.insert(0, str(self.coeff.numerator))
        if self.coeff.denominator != 1:
            den.insert(0, str(self.coeff.denominator))
        text = "*".join(num)
        if den:
            text += "/" + ("*".join(den) if len(den) == 1 else "(" + "*".join(den) + ")")
        return text

    __repr__ = __str__


Size = Union[int, Mono]
"""A tensor or tile dimension: a plain ``int`` when concrete, else a :class:`Mono`."""


def sym(name: str) -> Mono:
    """A positive integer size variable (a grid dim, a loop extent, a data dim)."""
    return Mono.symbol(name)


def normalize(value: Size | Fraction) -> Size:
    """Concrete integral sizes become ``int`` so the common case stays fast and readable."""
    if isinstance(value, Mono):
        if not value.factors and value.coeff.denominator == 1:
            return int(value.coeff)
        return value
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return int(value)
        return Mono(value, ())
    if isinstance(value, bool) or not isinstance(value, int):
        raise IRError(f"not a size: {value!r}")
    return value


def is_concrete(value: Size) -> bool:
    return isinstance(value, int)


def free_symbols(value: Size) -> frozenset[str]:
    return value.free_symbols if isinstance(value, Mono) else frozenset()


def mul(*values: Size) -> Size:
    out: Size = 1
    for v in values:
        out = Mono.of(out) * v if isinstance(v, Mono) or isinstance(out, Mono) else out * v
    return normalize(out)


def div(numerator: Size, denominator: Size) -> Size:
    """Exact division of sizes; a concrete remainder is an error (tile shapes must divide)."""
    if isinstance(numerator, int) and isinstance(denominator, int):
        if denominator <= 0 or numerator % denominator:
            raise IRError(f"{numerator} is not divisible by {denominator}")
        return numerator // denominator
    return Mono.of(numerator) / denominator


def substitute(value: Size, env: Mapping[str, int], integral: bool = True) -> Size:
    """Replace the symbols bound in ``env``; fully bound values become ``int``.

    ``integral=False`` allows a rational result (constants such as 1/D), kept as a factor-free Mono."""
    if not isinstance(value, Mono):
        return value
    # plain integer arithmetic: this runs for every dim of every value when a graph is instantiated
    num, den = value.coeff.numerator, value.coeff.denominator
    rest = []
    for name, exp in value.factors:
        if name in env:
            if exp > 0:
                num *= env[name] ** exp
            else:
                den *= env[name] ** -exp
        else:
            rest.append((name, exp))
    if rest:
        return normalize(Mono(Fraction(num, den), tuple(rest)))
    if num % den == 0:
        return num // den
    if integral:
        raise IRError(f"{value} is not an integer when {dict(env)}: {Fraction(num, den)}")
    return Mono(Fraction(num, den), ())


def evaluate(value: Size, env: Mapping[str, int]) -> int:
    """The concrete value of ``value`` under ``env``; every symbol must be bound."""
    out = substitute(value, env)
    if not isinstance(out, int):
        missing = sorted(free_symbols(out))
        raise IRError(f"size {value} has unbound symbols {missing}")
    return out


def constant_value(value):
    """The number a CONSTANT op's value attribute stands for (a size such as ``d`` must be bound)."""
    if isinstance(value, Mono):
        if value.factors:
            raise IRError(f"constant {value} has unbound symbols; instantiate the graph first")
        return float(value.coeff)
    return value


def to_sympy(value: Size) -> sympy.Expr:
    if isinstance(value, int):
        return sympy.Integer(value)
    expr = sympy.Rational(value.coeff.numerator, value.coeff.denominator)
    for name, exp in value.factors:
        expr *= sympy.Symbol(name, positive=True, integer=True) ** exp
    return expr


def from_sympy(expr: sympy.Expr) -> Size:
    """Back from sympy; only monomials are sizes."""
    expr = sympy.nsimplify(sympy.simplify(expr))
    coeff, factors = Fraction(1), {}
    for base, exp in expr.as_powers_dict().items():
        if base.is_Number:
            coeff *= Fraction(str(base)) ** int(exp)
        elif base.is_Symbol and exp.is_Integer:
            factors[str(base)] = factors.get(str(base), 0) + int(exp)
        else:
            raise IRError(f"{expr} is not a monomial size")
    return normalize(Mono(coeff, tuple(sorted((n, e) for n, e in factors.items() if e))))


# ---------------------------------------------------------------------------------------------
# Constraints


@dataclasses.dataclass(frozen=True)
class Divisible:
    """``numerator`` is an integer multiple of ``denominator`` (tiles divide their dims)."""

    numerator: Size
    denominator: Size
    reason: str = dataclasses.field(default="", compare=False)

    def holds(self, env: Mapping[str, int]) -> bool:
        return evaluate(self.numerator, env) % evaluate(self.denominator, env) == 0

    def substitute(self, env: Mapping[str, int]) -> "Divisible":
        return Divisible(substitute(self.numerator, env), substitute(self.denominator, env), self.reason)

    def trivially(self) -> bool | None:
        """True/False when decided for every assignment, None when it depends on the sizes."""
        if is_concrete(self.numerator) and is_concrete(self.denominator):
            return self.numerator % self.denominator == 0
        quotient = Mono.of(self.numerator) / self.denominator
        if isinstance(quotient, int) or quotient.is_integral_polynomial():
            return True
        return None

    def __str__(self) -> str:
        return f"{self.denominator} | {self.numerator}"


@dataclasses.dataclass(frozen=True)
class InRange:
    """``lo <= value <= hi`` (block counts, loop extents, tile sizes)."""

    value: Size
    lo: int = 1
    hi: int | None = None
    reason: str = dataclasses.field(default="", compare=False)

    def holds(self, env: Mapping[str, int]) -> bool:
        v = evaluate(self.value, env)
        return v >= self.lo and (self.hi is None or v <= self.hi)

    def substitute(self, env: Mapping[str, int]) -> "InRange":
        return InRange(substitute(self.value, env), self.lo, self.hi, self.reason)

    def trivially(self) -> bool | None:
        if is_concrete(self.value):
            return self.value >= self.lo and (self.hi is None or self.value <= self.hi)
        return None

    def __str__(self) -> str:
        hi = "" if self.hi is None else f" <= {self.hi}"
        return f"{self.lo} <= {self.value}{hi}"


@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    """Σ elements_i * bytes_i fits in ``limit_bytes`` of on-chip memory (shared memory, cache)."""

    buffers: tuple[tuple[Size, int], ...]  # (element count, bytes per element)
    limit_bytes: int
    reason: str = dataclasses.field(default="", compare=False)

    def usage(self, env: Mapping[str, int]) -> int:
        return sum(evaluate(n, env) * b for n, b in self.buffers)

    def holds(self, env: Mapping[str, int]) -> bool:
        return self.usage(env) <= self.limit_bytes

    def substitute(self, env: Mapping[str, int]) -> "MemoryBudget":
        return MemoryBudget(tuple((substitute(n, env), b) for n, b in self.buffers), self.limit_bytes, self.reason)

    def trivially(self) -> bool | None:
        if all(is_concrete(n) for n, _ in self.buffers):
            return sum(n * b for n, b in self.buffers) <= self.limit_bytes
        return None

    def as_sympy(self) -> sympy.Expr:
        return sympy.Add(*(to_sympy(n) * b for n, b in self.buffers)) <= self.limit_bytes

    def __str__(self) -> str:
        terms = " + ".join(f"{b}*{n}" for n, b in self.buffers)
        return f"{terms} <= {self.limit_bytes} bytes"


Constraint = Union[Divisible, InRange, MemoryBudget]


@dataclasses.dataclass(frozen=True)
class ConstraintSet:
    """A conjunction of constraints with substitution and simplification."""

    constraints: tuple[Constraint, ...] = ()

    @staticmethod
    def of(items: Iterable[Constraint]) -> "ConstraintSet":
        return ConstraintSet(tuple(dict.fromkeys(items)))

    def __iter__(self):
        return iter(self.constraints)

    def __len__(self) -> int:
        return len(self.constraints)

    def __and__(self, other: "ConstraintSet") -> "ConstraintSet":
        return ConstraintSet.of(self.constraints + other.constraints)

    @property
    def free_symbols(self) -> frozenset[str]:
        names: set[str] = set()
        for c in self.constraints:
            if isinstance(c, Divisible):
                names |= free_symbols(c.numerator) | free_symbols(c.denominator)
            elif isinstance(c, InRange):
                names |= free_symbols(c.value)
            else:
                for n, _ in c.buffers:
                    names |= free_symbols(n)
        return frozenset(names)

    def substitute(self, env: Mapping[str, int]) -> "ConstraintSet":
        return ConstraintSet.of(c.substitute(env) for c in self.constraints)

    def simplify(self) -> "ConstraintSet":
        """Drop constraints that hold for every assignment; raise on one that never holds."""
        kept = []
        for c in self.constraints:
            verdict = c.trivially()
            if verdict is False:
                raise UnsatisfiableError(f"constraint can never hold: {c} {c.reason}".rstrip())
            if verdict is None:
                kept.append(c)
        return ConstraintSet(tuple(kept))

    def violations(self, env: Mapping[str, int]) -> list[str]:
        return [f"{c} ({c.reason})" if c.reason else str(c) for c in self.constraints if not c.holds(env)]

    def is_satisfied(self, env: Mapping[str, int]) -> bool:
        return not self.violations(env)

    def __str__(self) -> str:
        return " and ".join(str(c) for c in self.constraints) or "true"


class UnsatisfiableError(IRError):
    """A constraint set that no size assignment satisfies."""

