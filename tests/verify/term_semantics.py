"""Numpy semantics of the e-graph prover's term algebra (``prism_jax/verify/egraph.py``), for tests.

Terms are small trees of :class:`Term` mirroring the egglog constructors (``un``, ``bin``, ``sel``, ``mm``,
``rsum``, ``rmax``, ``bc``, ``mT``, ``unsq``, ``sq``, ``opaque``, ``opaque2``, ``part``, ``comb``, ``asum``,
``amax``) plus ``var`` leaves standing for pattern variables. Arguments are kept in egglog's order, so
:func:`render` prints a term exactly as ``ast.unparse`` prints the rule in ``egraph.py``.

A term with free axes is evaluated under an environment ``{axis: (index, extent)}``:

- ``part(x, d, a)`` is chunk ``index(a)`` of ``x`` cut into ``extent(a)`` equal chunks along ``d``;
- ``comb(t, d, a)`` concatenates ``t`` over every index of ``a`` along ``d``; ``asum`` / ``amax`` sum /
  max over every index of ``a`` (these bind ``a``);
- ``rsum`` / ``rmax`` reduce one dim keeping it as size 1; ``mm(a, b, r)`` is the batched matmul of
  rank-``r`` tensors; ``mT(t, r)`` swaps
  the last two dims; ``unsq(t, d)`` inserts a size-1 dim at ``d``, ``sq(t, d)`` removes dim ``d``, which
  must have size 1; ``un`` / ``bin`` are elementwise ops named by IR op names; ``sel(c, x, y)`` is
  the IR's ``select(pred, on_false, on_true)``.

Broadcasting is explicit, as in the Encoder: a value carries the set of dims marked by ``bc`` (size 1,
broadcast to whatever size the context has). Elementwise ops and matmul batch dims only broadcast marked
dims; a contraction broadcasts a marked contracting dim to the other operand's size; ``part`` of a
marked dim is the value itself. Terms that break these conventions raise :class:`IllFormed`; terms whose
value would depend on a size the term does not carry (a sum or contraction over a broadcast dim) raise
:class:`SizeDependent`.
``strict=False`` drops the conventions (numpy broadcasting, ``bc`` of any size) to show what a term
outside them means.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, Mapping

import numpy as np


class IllFormed(Exception):
    """The term breaks the Encoder's conventions (ranks, explicit broadcasting, divisibility)."""


class SizeDependent(IllFormed):
    """The value depends on a size that the term does not carry."""


@dataclasses.dataclass(frozen=True)
class Sym:
    """A pattern variable for a dim, rank, axis or op name; ``r - 2`` stays symbolic."""

    name: str

    def __sub__(self, k: int) -> Sym:
        return Sym(f"{self.name} - {k}")

    def __add__(self, k: int) -> Sym:
        return Sym(f"{self.name} + {k}")

    def __str__(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class Term:
    op: str
    args: tuple  # egglog argument order: Terms, op names, dims, ranks, axes

    @property
    def kids(self) -> tuple[Term, ...]:
        return tuple(x for x in self.args if isinstance(x, Term))


def var(name: str) -> Term:
    return Term("var", (name,))


def un(f, a) -> Term:
    return Term("un", (f, a))


def bin(f, a, b) -> Term:  # noqa: A001 - mirrors egglog's name
    return Term("bin", (f, a, b))


def sel(c, a, b) -> Term:
    return Term("sel", (c, a, b))


def mm(a, b, r) -> Term:
    return Term("mm", (a, b, r))


def rsum(a, d) -> Term:
    return Term("rsum", (a, d))


def rmax(a, d) -> Term:
    return Term("rmax", (a, d))


def bc(a, d) -> Term:
    return Term("bc", (a, d))


def mT(a, r) -> Term:
    return Term("mT", (a, r))


def unsq(a, d) -> Term:
    return Term("unsq", (a, d))


def sq(a, d) -> Term:
    return Term("sq", (a, d))


def opaque(f, a) -> Term:
    return Term("opaque", (f, a))


def opaque2(f, a, b) -> Term:
    return Term("opaque2", (f, a, b))


def part(a, d, p) -> Term:
    return Term("part", (a, d, p))


def comb(a, d, p) -> Term:
    return Term("comb", (a, d, p))


def asum(a, p) -> Term:
    return Term("asum", (a, p))


def amax(a, p) -> Term:
    return Term("amax", (a, p))


BINDERS = {"comb": 2, "asum": 1, "amax": 1}  # op → position of the axis it binds


def render(term) -> str:
    """Egglog-like text, as ``ast.unparse`` prints the rule source."""
    if isinstance(term, Term):
        if term.op == "var":
            return term.args[0]
        return f"{term.op}({', '.join(render(x) for x in term.args)})"
    if isinstance(term, Sym):
        return term.name
    if isinstance(term, str):
        return repr(term)
    return str(term)


def variables(term: Term) -> set[str]:
    if term.op == "var":
        return {term.args[0]}
    return set().union(*(variables(k) for k in term.kids)) if term.kids else set()


# ---------------------------------------------------------------------------------------------
# axis dependence (structural)


def free_axes(term: Term, deps: Mapping[str, Iterable[str]]) -> set[str]:
    """Axes the term may depend on, given the axes each variable depends on."""
    if term.op == "var":
        return set(deps[term.args[0]])
    inner = set().union(*(free_axes(k, deps) for k in term.kids))
    if term.op == "part":
        return inner | {term.args[2]}
    if term.op in BINDERS:
        return inner - {term.args[BINDERS[term.op]]}
    return inner


def w_violations(term: Term, deps: Mapping[str, Iterable[str]]) -> list[Term]:
    """``part(x, d, a)`` nodes whose operand depends on ``a``.

    Invariant W: the operand of a partition never depends on the partition's own axis. The Encoder
    guarantees it (``part`` is only applied to kernel-level values, and each grid dim / the loop splits
    at most one data dim); the cancellation axioms (``comb(part(a,d,p),d,p) → a``, split-K, split
    reductions) are only sound under it, so every axiom must preserve it."""
    found = []
    if term.op == "part" and term.args[2] in free_axes(term.args[0], deps):
        found.append(term)
    for k in term.kids:
        found += w_violations(k, deps)
    return found


def w_independent_vars(term: Term) -> dict[str, set[str]]:
    """For each variable, the axes W forbids it to depend on: those of the partitions it sits under
    (not counting partitions inside a binder of the same axis)."""
    out: dict[str, set[str]] = {}

    def walk(t: Term, under: frozenset[str]) -> None:
        if t.op == "var":
            out.setdefault(t.args[0], set()).update(under)
            return
        if t.op == "part":
            under = under | {t.args[2]}
        elif t.op in BINDERS:
            under = under - {t.args[BINDERS[t.op]]}
        for k in t.kids:
            walk(k, under)

    walk(term, frozenset())
    return out


# ---------------------------------------------------------------------------------------------
# values


@dataclasses.dataclass(frozen=True)
class Val:
    arr: np.ndarray
    marks: frozenset[int] = frozenset()  # dims broadcast by bc (size 1)


@dataclasses.dataclass
class Leaf:
    """A pattern variable instantiated as a family of tensors indexed by the axes it depends on."""

    shape: tuple[int, ...]
    deps: tuple[str, ...]
    marks: frozenset[int]
    table: dict[tuple[int, ...], np.ndarray]

    def value(self, env: Mapping[str, tuple[int, int]]) -> Val:
        return Val(self.table[tuple(env[a][0] for a in self.deps)], self.marks)


def make_leaf(rng: np.random.Generator, shape, deps, extents: Mapping[str, int], marks=frozenset(),
              boolean: bool = False, low: float = 0.5, high: float = 2.0) -> Leaf:
    marks = frozenset(marks)
    if any(shape[d] != 1 for d in marks):
        raise ValueError(f"marked dims {sorted(marks)} of a leaf of shape {shape} must have size 1")
    deps = tuple(sorted(deps))
    table = {}
    for key in itertools.product(*(range(extents[a]) for a in deps)):
        table[key] = (rng.integers(0, 2, shape).astype(np.float64) if boolean
                      else rng.uniform(low, high, shape))
    return Leaf(tuple(shape), deps, marks, table)


UNARY = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "square": np.square, "neg": np.negative, "tanh": np.tanh, "abs": np.abs,
    "reciprocal": lambda x: 1.0 / x, "logistic": lambda x: 1.0 / (1.0 + np.exp(-x)),
}
BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "max": np.maximum, "min": np.minimum, "pow": np.power,
}


class Evaluator:
    def __init__(self, leaves: Mapping[str, Leaf], strict: bool = True) -> None:
        self.leaves = leaves
        self.strict = strict

    def __call__(self, term: Term, env: Mapping[str, tuple[int, int]]) -> Val:
        return getattr(self, "_" + term.op)(env, *term.args)

    # leaves and elementwise ops
    def _var(self, env, name):
        return self.leaves[name].value(env)

    def _elementwise(self, vals: list[Val]) -> frozenset[int]:
        rank = vals[0].arr.ndim
        if any(v.arr.ndim != rank for v in vals):
            raise IllFormed(f"elementwise operands of ranks {[v.arr.ndim for v in vals]}")
        marks = set()
        for dim in range(rank):
            n = max(v.arr.shape[dim] for v in vals)
            for v in vals:
                size = v.arr.shape[dim]
                if size != n and not (size == 1 and (dim in v.marks or not self.strict)):
                    raise IllFormed(f"elementwise operands of shapes {[v.arr.shape for v in vals]} "
                                    f"(marks {[sorted(v.marks) for v in vals]}): dim {dim} broadcast "
                                    f"without bc")
            if all(dim in v.marks for v in vals):
                marks.add(dim)
        return frozenset(marks)

    def _un(self, env, f, a):
        x = self(a, env)
        return Val(UNARY[f](x.arr), x.marks)

    def _bin(self, env, f, a, b):
        x, y = self(a, env), self(b, env)
        marks = self._elementwise([x, y])
        return Val(BINARY[f](x.arr, y.arr), marks)

    def _sel(self, env, c, a, b):
        vals = [self(c, env), self(a, env), self(b, env)]
        marks = self._elementwise(vals)
        return Val(np.where(vals[0].arr != 0, vals[2].arr, vals[1].arr), marks)

    def _opaque(self, env, f, a):
        x = self(a, env)
        return Val(np.sin(x.arr + len(f)), x.marks)

    def _opaque2(self, env, f, a, b):
        x, y = self(a, env), self(b, env)
        marks = self._elementwise([x, y])
        return Val(np.sin(x.arr + 2 * y.arr + len(f)), marks)

    # contraction, reductions, layout
    def _mm(self, env, a, b, r):
        x, y = self(a, env), self(b, env)
        if not x.arr.ndim == y.arr.ndim == r or r < 2:
            raise IllFormed(f"mm of rank {r} on shapes {x.arr.shape} @ {y.arr.shape}")
        xa, ya = x.arr, y.arr
        marks = set()
        for dim in range(r - 2):  # batch dims broadcast like elementwise operands: only where bc marks them
            sx, sy = xa.shape[dim], ya.shape[dim]
            if sx != sy and not any(s == 1 and (dim in v.marks or not self.strict) for s, v in ((sx, x), (sy, y))):
                raise IllFormed(f"mm batch dim {dim}: {xa.shape} @ {ya.shape} (marks {sorted(x.marks)}, "
                                f"{sorted(y.marks)}) broadcast without bc")
            if dim in x.marks and dim in y.marks:
                marks.add(dim)
        kx, ky = xa.shape[-1], ya.shape[-2]
        bx, by = (r - 1) in x.marks, (r - 2) in y.marks
        if bx and by:
            raise SizeDependent(f"mm contracts a dim that both operands broadcast: {xa.shape} @ {ya.shape}")
        if kx != ky:
            if kx == 1 and (bx or not self.strict):
                xa = np.broadcast_to(xa, xa.shape[:-1] + (ky,))
            elif ky == 1 and (by or not self.strict):
                ya = np.broadcast_to(ya, ya.shape[:-2] + (kx,) + ya.shape[-1:])
            else:
                raise IllFormed(f"mm contracting dims differ: {xa.shape} @ {ya.shape}")
        if (r - 2) in x.marks:
            marks.add(r - 2)
        if (r - 1) in y.marks:
            marks.add(r - 1)
        return Val(np.matmul(xa, ya), frozenset(marks))

    @staticmethod
    def _dim(x: Val, d: int, what: str, extra: int = 0) -> None:
        if not 0 <= d < x.arr.ndim + extra:
            raise IllFormed(f"{what} at dim {d} of a rank-{x.arr.ndim} value")

    def _rsum(self, env, a, d):
        x = self(a, env)
        self._dim(x, d, "rsum")
        if d in x.marks:
            raise SizeDependent(f"rsum over dim {d}, which is broadcast")
        return Val(x.arr.sum(axis=d, keepdims=True), x.marks)

    def _rmax(self, env, a, d):
        x = self(a, env)  # the max of a broadcast value along the broadcast dim is the value itself
        self._dim(x, d, "rmax")
        return Val(x.arr.max(axis=d, keepdims=True), x.marks - {d})

    def _bc(self, env, a, d):
        x = self(a, env)
        self._dim(x, d, "bc")
        if x.arr.shape[d] != 1:
            if self.strict:
                raise IllFormed(f"bc along dim {d} of shape {x.arr.shape}")
            return x
        return Val(x.arr, x.marks | {d})

    def _mT(self, env, a, r):
        x = self(a, env)
        if x.arr.ndim != r or r < 2:
            raise IllFormed(f"mT of rank {r} on shape {x.arr.shape}")
        swap = {r - 1: r - 2, r - 2: r - 1}
        return Val(np.swapaxes(x.arr, -1, -2), frozenset(swap.get(m, m) for m in x.marks))

    def _unsq(self, env, a, d):
        x = self(a, env)
        self._dim(x, d, "unsq", extra=1)
        return Val(np.expand_dims(x.arr, d), frozenset(k + (k >= d) for k in x.marks))

    def _sq(self, env, a, d):
        x = self(a, env)
        self._dim(x, d, "sq")
        if x.arr.shape[d] != 1:
            raise IllFormed(f"sq of dim {d} of shape {x.arr.shape}")
        if d in x.marks and self.strict:  # the Encoder only removes dims of size 1 by structure
            raise IllFormed(f"sq of dim {d}, which is broadcast")
        return Val(np.squeeze(x.arr, d), frozenset(k - (k > d) for k in x.marks if k != d))

    # tiling
    def _part(self, env, a, d, p):
        x = self(a, env)
        self._dim(x, d, "part")
        index, extent = env[p]
        if d in x.marks:  # a chunk of a broadcast value is the broadcast value
            return x
        if x.arr.shape[d] % extent:
            raise IllFormed(f"part of dim {d} of shape {x.arr.shape} into {extent} chunks")
        return Val(np.split(x.arr, extent, axis=d)[index], x.marks)

    def _over(self, env, a, p) -> list[Val]:
        extent = env[p][1]
        vals = [self(a, {**env, p: (i, extent)}) for i in range(extent)]
        if len({v.arr.shape for v in vals}) != 1:
            raise IllFormed(f"tiles over {p} have shapes {[v.arr.shape for v in vals]}")
        return vals

    def _comb(self, env, a, d, p):
        vals = self._over(env, a, p)
        self._dim(vals[0], d, "comb")
        if any(d in v.marks for v in vals):
            if all(d in v.marks for v in vals) and all(np.array_equal(v.arr, vals[0].arr) for v in vals):
                return vals[0]
            raise SizeDependent(f"comb along dim {d}, which the tiles broadcast")
        return Val(np.concatenate([v.arr for v in vals], axis=d), frozenset.intersection(*(v.marks for v in vals)))

    def _asum(self, env, a, p):
        vals = self._over(env, a, p)
        return Val(sum(v.arr for v in vals), frozenset.intersection(*(v.marks for v in vals)))

    def _amax(self, env, a, p):
        vals = self._over(env, a, p)
        return Val(np.maximum.reduce([v.arr for v in vals]), frozenset.intersection(*(v.marks for v in vals)))


def environments(extents: Mapping[str, int]):
    """Every index assignment of the axes."""
    axes = sorted(extents)
    for idx in itertools.product(*(range(extents[a]) for a in axes)):
        yield {a: (i, extents[a]) for a, i in zip(axes, idx)}
