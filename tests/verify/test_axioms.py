"""Every rewrite rule of the e-graph prover's ``tiling`` and ``algebra`` rulesets, checked numerically.

Each rule is restated below as two small term trees (``term_semantics.Term``, mirroring the egglog
constructors) plus its side conditions, written exactly as in ``prism_jax/verify/egraph.py``:
``test_rules_match_egraph_source`` renders them and compares with the source, so a rule edited there
without being re-checked here fails. For a rule, ``check`` instantiates

- dims ``d``, ``e`` with every value in range (up to the rank itself for rules on inserted unit dims) that
  satisfies the ``ne``/``eq``/``<``/``<=`` conditions, ``r`` with
  the rank, ``f`` with several op names, axes ``p``/``q`` with distinct axes and (where the rule does
  not require ``ne(p).to(q)``) with the same axis;
- extents 2 and 3 (every dim a multiple of the extents' product, dims of distinct sizes), ranks 2 to 4;
- each pattern variable with a family of random float64 tensors indexed by the axes it may depend on:
  every axis of the rule, except those an ``indep`` condition excludes and those invariant W excludes
  (a partition's operand never depends on the partition's axis; see ``term_semantics.w_violations``);

(plus, per rule, ``Variant``s instantiating some variables as broadcast values) and checks, for every
index assignment of the axes, that both sides evaluate to the same tensor (shape, broadcast marks,
values), that the right side is well-formed whenever the left side is, that it does not depend on more
axes, and that it keeps invariant W. Birewrites are checked in both directions. Instances found unsound
are listed in ``XFAIL`` (strict).

Also here: the checker's power (W and the side conditions are needed: dropping one gives
counterexamples), a regression test for a wrong merge an unsound axiom caused, the meaning of the
``independence`` rules, and tests that the rule lists here follow ``egraph.py`` (count and text).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import pathlib
import re
import zlib
from typing import Callable, Mapping

import numpy as np
import pytest

from term_semantics import (Evaluator, IllFormed, Sym, Term, amax, asum, bc, bin, comb, environments, free_axes,
                            make_leaf, mm, mT, opaque, opaque2, part, render, rmax, rsum, sel, sq, un, unsq, var,
                            variables, w_independent_vars, w_violations)

EGRAPH_SOURCE = pathlib.Path(__file__).resolve().parents[2] / "prism_jax" / "verify" / "egraph.py"

a, b, c, m, n, x = (var(name) for name in "abcmnx")

UN_OPS = ("exp", "log", "sqrt", "rsqrt", "neg", "square", "tanh", "reciprocal")
BIN_OPS = ("add", "sub", "mul", "div", "max", "min", "pow")
FWD, BWD = "fwd", "bwd"

# (rank, extent of the first axis, extent of the second axis); a rule's min_rank raises the rank
CONFIGS = ((2, 2, 3), (3, 3, 2), (3, 2, 2), (4, 2, 2))


@dataclasses.dataclass(frozen=True)
class Binding:
    """Values of a rule's non-tensor pattern variables: symbolic (for rendering) or concrete."""

    d: object = Sym("d")
    e: object = Sym("e")
    r: object = Sym("r")
    p: object = Sym("p")
    q: object = Sym("q")
    f: object = Sym("f")


SYMBOLIC = Binding()


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Shape helpers for one instance: every dim divisible by every extent, dims of distinct sizes."""

    R: int
    d: int | None
    e: int | None
    unit: int  # product of the extents

    @property
    def S(self) -> tuple[int, ...]:
        return tuple(self.unit * (k + 2) for k in range(self.R))

    def one(self, *dims: int) -> tuple[int, ...]:
        return tuple(1 if k in dims else s for k, s in enumerate(self.S))

    @property
    def batch(self) -> tuple[int, ...]:
        return self.S[:self.R - 2]

    @property
    def M(self) -> int:
        return self.S[self.R - 2]

    @property
    def N(self) -> int:
        return self.S[self.R - 1]

    @property
    def K(self) -> int:
        return self.unit * (self.R + 2)

    def mmA(self, batch=None, M=None, K=None) -> tuple[int, ...]:
        return tuple(self.batch if batch is None else batch) + (self.M if M is None else M, self.K if K is None else K)

    def mmB(self, batch=None, K=None, N=None) -> tuple[int, ...]:
        return tuple(self.batch if batch is None else batch) + (self.K if K is None else K, self.N if N is None else N)

    @property
    def batch1(self) -> tuple[int, ...]:
        return (1,) * (self.R - 2)

    def batch_bc(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], set[int]]:
        """A matmul operand (or scale) broadcast along every batch dim, marked by bc as the Encoder does."""
        return (self.batch1 + tuple(shape[self.R - 2:]), set(range(self.R - 2)))


@dataclasses.dataclass(frozen=True)
class Variant:
    """Another instantiation of some pattern variables (e.g. as broadcast values)."""

    name: str
    shapes: Callable[[Shapes], Mapping]
    directions: tuple[str, ...] = (FWD, BWD)
    min_rank: int = 2


@dataclasses.dataclass(frozen=True)
class Case:
    ruleset: str
    name: str
    kind: str  # "rewrite" or "birewrite"
    build: Callable[[Binding], tuple[Term, Term]]
    conds: tuple[str, ...] = ()
    shapes: Callable[[Shapes], Mapping] = lambda z: {}
    ops: tuple[str, ...] = ()
    bools: tuple[str, ...] = ()  # variables holding 0/1 (select predicates)
    min_rank: int = 2
    variants: tuple[Variant, ...] = ()
    positions: bool = False  # dims d, e also take the value R (a position where unsq inserts a dim)

    def source(self) -> str:
        lhs, rhs = self.build(SYMBOLIC)
        return f"{self.kind}({render(lhs)}).to({', '.join([render(rhs), *self.conds])})"

    def uses(self, symbol: str) -> bool:
        return re.search(rf"\b{symbol}\b", re.sub(r"'[^']*'", "", self.source())) is not None


def S(z: Shapes) -> dict:
    """Every variable full-size."""
    return {v: z.S for v in "abcmnx"}


# ---------------------------------------------------------------------------------------------
# the rules (same order as in egraph.py)

TILING = (
    Case("tiling", "comb-part-cancel", "rewrite", lambda v: (comb(part(a, v.d, v.p), v.d, v.p), a), shapes=S,
         variants=(Variant("a-bc-along-d", lambda z: {"a": (z.one(z.d), {z.d})}),)),
    Case("tiling", "part-part-swap", "rewrite",
         lambda v: (part(part(a, v.d, v.p), v.e, v.q), part(part(a, v.e, v.q), v.d, v.p)),
         ("ne(d).to(e)",), S),
    Case("tiling", "comb-comb-swap", "rewrite",
         lambda v: (comb(comb(a, v.d, v.p), v.e, v.q), comb(comb(a, v.e, v.q), v.d, v.p)),
         ("ne(d).to(e)", "ne(p).to(q)"), S),
    Case("tiling", "comb-part-swap", "rewrite",
         lambda v: (comb(part(a, v.d, v.p), v.e, v.q), part(comb(a, v.e, v.q), v.d, v.p)),
         ("ne(d).to(e)", "ne(p).to(q)"), S),
    Case("tiling", "un-part", "rewrite", lambda v: (un(v.f, part(a, v.d, v.p)), part(un(v.f, a), v.d, v.p)),
         shapes=S, ops=UN_OPS),
    Case("tiling", "bin-part-part", "rewrite",
         lambda v: (bin(v.f, part(a, v.d, v.p), part(b, v.d, v.p)), part(bin(v.f, a, b), v.d, v.p)),
         shapes=S, ops=BIN_OPS,
         variants=(Variant("b-bc-along-d", lambda z: {"b": (z.one(z.d), {z.d})}),
                   Variant("b-bc-other-dim", lambda z: {"b": (z.one((z.d + 1) % z.R), {(z.d + 1) % z.R})}))),
    Case("tiling", "bin-part-bc", "rewrite",
         lambda v: (bin(v.f, part(a, v.d, v.p), bc(b, v.d)), part(bin(v.f, a, bc(b, v.d)), v.d, v.p)),
         ("indep(b, p)",), lambda z: {"a": z.S, "b": z.one(z.d)}, ops=BIN_OPS),
    Case("tiling", "bin-bc-part", "rewrite",
         lambda v: (bin(v.f, bc(b, v.d), part(a, v.d, v.p)), part(bin(v.f, bc(b, v.d), a), v.d, v.p)),
         ("indep(b, p)",), lambda z: {"a": z.S, "b": z.one(z.d)}, ops=BIN_OPS),
    Case("tiling", "sel-part", "rewrite",
         lambda v: (sel(part(c, v.d, v.p), part(a, v.d, v.p), part(b, v.d, v.p)), part(sel(c, a, b), v.d, v.p)),
         shapes=S, bools=("c",)),
    Case("tiling", "un-comb", "rewrite", lambda v: (un(v.f, comb(a, v.d, v.p)), comb(un(v.f, a), v.d, v.p)),
         shapes=S, ops=UN_OPS),
    Case("tiling", "bin-comb-comb", "rewrite",
         lambda v: (bin(v.f, comb(a, v.d, v.p), comb(b, v.d, v.p)), comb(bin(v.f, a, b), v.d, v.p)),
         shapes=S, ops=BIN_OPS),
    Case("tiling", "bc-part", "rewrite", lambda v: (bc(part(a, v.d, v.p), v.e), part(bc(a, v.e), v.d, v.p)),
         ("ne(d).to(e)",), lambda z: {"a": z.one(z.e)}),
    Case("tiling", "bc-bc-swap", "rewrite", lambda v: (bc(bc(a, v.d), v.e), bc(bc(a, v.e), v.d)),
         ("ne(d).to(e)",), lambda z: {"a": z.one(z.d, z.e)}),
    Case("tiling", "mm-part-rows", "rewrite", lambda v: (mm(part(a, v.d, v.p), b, v.r), part(mm(a, b, v.r), v.d, v.p)),
         ("eq(d).to(r - 2)", "indep(b, p)"), lambda z: {"a": z.mmA(), "b": z.mmB()},
         variants=(Variant("a-batch-bc", lambda z: {"a": z.batch_bc(z.mmA())}, min_rank=3),
                   Variant("b-batch-bc", lambda z: {"b": z.batch_bc(z.mmB())}, min_rank=3))),
    Case("tiling", "mm-part-cols", "rewrite", lambda v: (mm(a, part(b, v.d, v.p), v.r), part(mm(a, b, v.r), v.d, v.p)),
         ("eq(d).to(r - 1)", "indep(a, p)"), lambda z: {"a": z.mmA(), "b": z.mmB()},
         variants=(Variant("a-batch-bc", lambda z: {"a": z.batch_bc(z.mmA())}, min_rank=3),
                   Variant("b-batch-bc", lambda z: {"b": z.batch_bc(z.mmB())}, min_rank=3))),
    Case("tiling", "mm-part-batch", "rewrite",
         lambda v: (mm(part(a, v.d, v.p), part(b, v.d, v.p), v.r), part(mm(a, b, v.r), v.d, v.p)),
         ("ne(d).to(r - 1)", "ne(d).to(r - 2)"), lambda z: {"a": z.mmA(), "b": z.mmB()}, min_rank=3,
         variants=(Variant("a-bc-batch-dim", lambda z: {"a": (z.one(z.d)[:-2] + (z.M, z.K), {z.d})}),)),
    Case("tiling", "split-k", "rewrite",
         lambda v: (asum(mm(part(a, v.d, v.p), part(b, v.e, v.p), v.r), v.p), mm(a, b, v.r)),
         ("eq(d).to(r - 1)", "eq(e).to(r - 2)"), lambda z: {"a": z.mmA(), "b": z.mmB()},
         variants=(Variant("b-batch-bc", lambda z: {"b": z.batch_bc(z.mmB())}, min_rank=3),
                   Variant("a-bc-contracting", lambda z: {"a": _bc_contracting(z, "left")}))),
    Case("tiling", "mT-part-last-dim", "rewrite",
         lambda v: (mT(part(a, v.d, v.p), v.r), part(mT(a, v.r), v.r - 2, v.p)), ("eq(d).to(r - 1)",), S),
    Case("tiling", "mT-part-second-last-dim", "rewrite",
         lambda v: (mT(part(a, v.d, v.p), v.r), part(mT(a, v.r), v.r - 1, v.p)), ("eq(d).to(r - 2)",), S),
    Case("tiling", "mT-part-batch-dim", "rewrite",
         lambda v: (mT(part(a, v.d, v.p), v.r), part(mT(a, v.r), v.d, v.p)),
         ("ne(d).to(r - 1)", "ne(d).to(r - 2)"), S, min_rank=3),
    Case("tiling", "rsum-part-other-dim", "rewrite",
         lambda v: (rsum(part(a, v.d, v.p), v.e), part(rsum(a, v.e), v.d, v.p)), ("ne(d).to(e)",), S),
    Case("tiling", "rmax-part-other-dim", "rewrite",
         lambda v: (rmax(part(a, v.d, v.p), v.e), part(rmax(a, v.e), v.d, v.p)), ("ne(d).to(e)",), S),
    Case("tiling", "asum-rsum-part", "rewrite", lambda v: (asum(rsum(part(a, v.d, v.p), v.d), v.p), rsum(a, v.d)),
         shapes=S),
    Case("tiling", "amax-rmax-part", "rewrite", lambda v: (amax(rmax(part(a, v.d, v.p), v.d), v.p), rmax(a, v.d)),
         shapes=S, variants=(Variant("a-bc-along-d", lambda z: {"a": (z.one(z.d), {z.d})}),)),
    Case("tiling", "rsum-asum-swap", "rewrite", lambda v: (rsum(asum(a, v.p), v.e), asum(rsum(a, v.e), v.p)),
         shapes=S),
    Case("tiling", "asum-add", "rewrite",
         lambda v: (asum(bin("add", a, b), v.p), bin("add", asum(a, v.p), asum(b, v.p))), shapes=S,
         variants=(Variant("b-bc", lambda z: {"b": (z.one(0), {0})}),)),
    Case("tiling", "asum-mul-indep-right", "rewrite",
         lambda v: (asum(bin("mul", a, b), v.p), bin("mul", asum(a, v.p), b)), ("indep(b, p)",), S,
         variants=(Variant("b-bc", lambda z: {"b": (z.one(z.R - 1), {z.R - 1})}),)),
    Case("tiling", "asum-mul-indep-left", "rewrite",
         lambda v: (asum(bin("mul", b, a), v.p), bin("mul", b, asum(a, v.p))), ("indep(b, p)",), S,
         variants=(Variant("b-bc", lambda z: {"b": (z.one(0), {0})}),)),
    # unit dims (unit-dim reshapes) and tiles placed along a new unit dim
    Case("tiling", "sq-unsq-cancel", "rewrite", lambda v: (sq(unsq(a, v.d), v.d), a), shapes=S, positions=True,
         variants=(Variant("a-bc", lambda z: {"a": (z.one(0), {0})}),)),
    Case("tiling", "un-unsq", "rewrite", lambda v: (un(v.f, unsq(a, v.d)), unsq(un(v.f, a), v.d)), shapes=S,
         ops=UN_OPS, positions=True, variants=(Variant("a-bc", lambda z: {"a": (z.one(z.R - 1), {z.R - 1})}),)),
    Case("tiling", "bin-unsq-unsq", "rewrite",
         lambda v: (bin(v.f, unsq(a, v.d), unsq(b, v.d)), unsq(bin(v.f, a, b), v.d)), shapes=S, ops=BIN_OPS,
         positions=True, variants=(Variant("b-bc", lambda z: {"b": (z.one(0), {0})}),
                                   Variant("a-and-b-bc", lambda z: {"a": (z.one(0), {0}), "b": (z.one(0), {0})}))),
    Case("tiling", "bin-unsq-bc-unsq", "rewrite",
         lambda v: (bin(v.f, unsq(a, v.d), bc(unsq(b, v.d), v.d)), unsq(bin(v.f, a, b), v.d)), shapes=S,
         ops=BIN_OPS, positions=True, variants=(Variant("b-bc", lambda z: {"b": (z.one(0), {0})}),)),
    Case("tiling", "bc-unsq-before", "rewrite", lambda v: (bc(unsq(a, v.d), v.e), unsq(bc(a, v.e), v.d)),
         ("e < d",), lambda z: {"a": z.one(z.e)}, positions=True),
    Case("tiling", "bc-unsq-after", "rewrite", lambda v: (bc(unsq(a, v.d), v.e), unsq(bc(a, v.e - 1), v.d)),
         ("d < e",), lambda z: {"a": z.one(z.e - 1)}, positions=True),
    Case("tiling", "unsq-part-after", "rewrite", lambda v: (unsq(part(a, v.d, v.p), v.e), part(unsq(a, v.e), v.d, v.p)),
         ("d < e",), S, positions=True,
         variants=(Variant("a-bc-along-d", lambda z: {"a": (z.one(z.d % z.R), {z.d % z.R})}),)),
    Case("tiling", "unsq-part-before", "rewrite",
         lambda v: (unsq(part(a, v.d, v.p), v.e), part(unsq(a, v.e), v.d + 1, v.p)), ("e <= d",), S, positions=True,
         variants=(Variant("a-bc-along-d", lambda z: {"a": (z.one(z.d % z.R), {z.d % z.R})}),)),
    Case("tiling", "sq-part-after", "rewrite", lambda v: (sq(part(a, v.d, v.p), v.e), part(sq(a, v.e), v.d, v.p)),
         ("d < e",), lambda z: {"a": z.one(z.e)}),
    Case("tiling", "sq-part-before", "rewrite", lambda v: (sq(part(a, v.d, v.p), v.e), part(sq(a, v.e), v.d - 1, v.p)),
         ("e < d",), lambda z: {"a": z.one(z.e)},
         variants=(Variant("a-bc-along-d", lambda z: {"a": (z.one(z.d, z.e), {z.d})}),)),
    Case("tiling", "bc-comb", "rewrite", lambda v: (bc(comb(a, v.d, v.p), v.e), comb(bc(a, v.e), v.d, v.p)),
         ("ne(d).to(e)",), lambda z: {"a": z.one(z.e)}),
    Case("tiling", "bin-comb-bc", "rewrite",
         lambda v: (bin(v.f, comb(a, v.d, v.p), bc(b, v.d)), comb(bin(v.f, a, bc(b, v.d)), v.d, v.p)),
         ("indep(b, p)",), lambda z: {"a": z.S, "b": z.one(z.d)}, ops=BIN_OPS),
    Case("tiling", "rsum-comb-unsq", "rewrite",
         lambda v: (rsum(comb(unsq(a, v.d), v.d, v.p), v.d), unsq(asum(a, v.p), v.d)), shapes=S, positions=True,
         variants=(Variant("a-bc", lambda z: {"a": (z.one(0), {0})}),)),
    Case("tiling", "rmax-comb-unsq", "rewrite",
         lambda v: (rmax(comb(unsq(a, v.d), v.d, v.p), v.d), unsq(amax(a, v.p), v.d)), shapes=S, positions=True,
         variants=(Variant("a-bc", lambda z: {"a": (z.one(0), {0})}),)),
)


def _row_scale(z: Shapes, batch=None) -> tuple[int, ...]:
    return tuple(z.batch if batch is None else batch) + (z.M, 1)


def _col_scale(z: Shapes, batch=None) -> tuple[int, ...]:
    return tuple(z.batch if batch is None else batch) + (1, z.N)


def _bc_contracting(z: Shapes, which: str) -> tuple:
    """A matmul operand broadcast along the contracting dim (K)."""
    if which == "left":
        return z.mmA(K=1), {z.R - 1}
    return z.mmB(K=1), {z.R - 2}


CONTRACTION_SIZE = ("RHS contracts a dim both operands broadcast: its value depends on K, which no term carries "
                    "(mm(bc(u, r-1), bc(w, r-2), r) = K·u·w for every K). Such terms arise only inside the e-graph, "
                    "within one K context; the Encoder refuses sums and contractions over broadcast dims "
                    "(tests/verify/test_api.py::test_contraction_over_a_broadcast_dim_is_never_proved)")

ALGEBRA = (
    Case("algebra", "add-comm", "rewrite", lambda v: (bin("add", a, b), bin("add", b, a)), shapes=S),
    Case("algebra", "mul-comm", "rewrite", lambda v: (bin("mul", a, b), bin("mul", b, a)), shapes=S),
    Case("algebra", "add-assoc", "birewrite",
         lambda v: (bin("add", bin("add", a, b), c), bin("add", a, bin("add", b, c))), shapes=S),
    Case("algebra", "mul-assoc", "birewrite",
         lambda v: (bin("mul", bin("mul", a, b), c), bin("mul", a, bin("mul", b, c))), shapes=S),
    Case("algebra", "mul-add-distribute", "rewrite",
         lambda v: (bin("mul", a, bin("add", b, c)), bin("add", bin("mul", a, b), bin("mul", a, c))), shapes=S,
         variants=(Variant("a-bc", lambda z: {"a": (z.one(0), {0})}),)),
    Case("algebra", "mm-add-right", "rewrite",
         lambda v: (mm(a, bin("add", b, c), v.r), bin("add", mm(a, b, v.r), mm(a, c, v.r))),
         shapes=lambda z: {"a": z.mmA(), "b": z.mmB(), "c": z.mmB()},
         variants=(Variant("b-bc-contracting", lambda z: {"b": _bc_contracting(z, "right")}),
                   Variant("a-batch-bc", lambda z: {"a": z.batch_bc(z.mmA())}, min_rank=3),
                   Variant("a-and-b-bc-contracting",
                           lambda z: {"a": _bc_contracting(z, "left"), "b": _bc_contracting(z, "right")}))),
    Case("algebra", "mm-add-left", "rewrite",
         lambda v: (mm(bin("add", a, b), c, v.r), bin("add", mm(a, c, v.r), mm(b, c, v.r))),
         shapes=lambda z: {"a": z.mmA(), "b": z.mmA(), "c": z.mmB()},
         variants=(Variant("a-bc-contracting", lambda z: {"a": _bc_contracting(z, "left")}),
                   Variant("c-batch-bc", lambda z: {"c": z.batch_bc(z.mmB())}, min_rank=3),
                   Variant("a-and-c-bc-contracting",
                           lambda z: {"a": _bc_contracting(z, "left"), "c": _bc_contracting(z, "right")}))),
    Case("algebra", "mm-row-scale-mul", "birewrite",
         lambda v: (mm(bin("mul", a, bc(c, v.e)), b, v.r), bin("mul", mm(a, b, v.r), bc(c, v.e))),
         ("eq(e).to(r - 1)",), lambda z: {"a": z.mmA(), "b": z.mmB(), "c": _row_scale(z)},
         variants=(Variant("a-batch-bc", lambda z: {"a": z.batch_bc(z.mmA())}, min_rank=3),
                   Variant("a-and-c-batch-bc", lambda z: {"a": z.batch_bc(z.mmA()), "c": z.batch_bc(_row_scale(z))},
                           min_rank=3))),
    Case("algebra", "mm-row-scale-div", "birewrite",
         lambda v: (mm(bin("div", a, bc(c, v.e)), b, v.r), bin("div", mm(a, b, v.r), bc(c, v.e))),
         ("eq(e).to(r - 1)",), lambda z: {"a": z.mmA(), "b": z.mmB(), "c": _row_scale(z)},
         variants=(Variant("a-batch-bc", lambda z: {"a": z.batch_bc(z.mmA())}, min_rank=3),
                   Variant("a-and-c-batch-bc", lambda z: {"a": z.batch_bc(z.mmA()), "c": z.batch_bc(_row_scale(z))},
                           min_rank=3))),
    Case("algebra", "mm-col-scale-mul", "birewrite",
         lambda v: (mm(a, bin("mul", b, bc(c, v.e)), v.r), bin("mul", mm(a, b, v.r), bc(c, v.e))),
         ("eq(e).to(r - 2)",), lambda z: {"a": z.mmA(), "b": z.mmB(), "c": _col_scale(z)},
         variants=(Variant("b-batch-bc", lambda z: {"b": z.batch_bc(z.mmB())}, min_rank=3),
                   Variant("b-and-c-batch-bc", lambda z: {"b": z.batch_bc(z.mmB()), "c": z.batch_bc(_col_scale(z))},
                           min_rank=3))),
    Case("algebra", "rsqrt-as-div-sqrt", "birewrite",
         lambda v: (bin("mul", a, un("rsqrt", b)), bin("div", a, un("sqrt", b))), shapes=S),
    Case("algebra", "div-mul-assoc", "birewrite",
         lambda v: (bin("div", bin("mul", a, b), c), bin("mul", a, bin("div", b, c))), shapes=S),
    Case("algebra", "div-div", "birewrite",
         lambda v: (bin("div", bin("div", a, b), c), bin("div", a, bin("mul", b, c))), shapes=S),
    Case("algebra", "rsum-scale", "birewrite",
         lambda v: (bin("mul", rsum(a, v.d), c), rsum(bin("mul", a, bc(c, v.d)), v.d)),
         shapes=lambda z: {"a": z.S, "c": z.one(z.d)},
         variants=(Variant("c-bc-other-dim", lambda z: {"c": (z.one(z.d, (z.d + 1) % z.R), {(z.d + 1) % z.R})}),)),
    Case("algebra", "rsum-div-scale", "rewrite",
         lambda v: (rsum(bin("div", a, bc(c, v.d)), v.d), bin("div", rsum(a, v.d), c)),
         shapes=lambda z: {"a": z.S, "c": z.one(z.d)}),
    Case("algebra", "online-softmax-rescale", "rewrite",
         lambda v: (bin("mul", un("exp", bin("sub", x, bc(m, v.d))), bc(un("exp", bin("sub", m, n)), v.d)),
                    un("exp", bin("sub", x, bc(n, v.d)))),
         shapes=lambda z: {"x": z.S, "m": z.one(z.d), "n": z.one(z.d)}),
    Case("algebra", "exp-sub-chain", "rewrite",
         lambda v: (bin("mul", un("exp", bin("sub", m, n)), un("exp", bin("sub", n, c))), un("exp", bin("sub", m, c))),
         shapes=S),
    Case("algebra", "softmax-shift", "rewrite",
         lambda v: (bin("div", un("exp", bin("sub", x, bc(m, v.d))),
                        bc(rsum(un("exp", bin("sub", x, bc(m, v.d))), v.d), v.d)),
                    bin("div", un("exp", x), bc(rsum(un("exp", x), v.d), v.d))),
         shapes=lambda z: {"x": z.S, "m": z.one(z.d)}),
)

CASES = TILING + ALGEBRA

# rule instances found unsound (strict xfail: once the rule is fixed they pass, and fail until removed from here)
XFAIL = {
    "algebra-06-mm-add-right-fwd-a-and-b-bc-contracting": CONTRACTION_SIZE,
    "algebra-07-mm-add-left-fwd-a-and-c-bc-contracting": CONTRACTION_SIZE,
}


# ---------------------------------------------------------------------------------------------
# the checker

_COND = re.compile(r"^(ne|eq)\((.+)\)\.to\((.+)\)$")
_ORDER = re.compile(r"^(\w+) (<|<=) (\w+)$")
_INDEP = re.compile(r"^indep\((\w+), (\w+)\)$")


def _value(expr: str, binding: Binding):
    return eval(expr, {"__builtins__": {}}, dataclasses.asdict(binding))  # noqa: S307 - "r - 2" and the like


def _conditions_hold(case: Case, binding: Binding) -> bool:
    for cond in case.conds:
        if match := _COND.match(cond):
            op, lhs, rhs = match.groups()
            if (_value(lhs, binding) == _value(rhs, binding)) != (op == "eq"):
                return False
        elif match := _ORDER.match(cond):
            lhs, op, rhs = match.groups()
            x, y = _value(lhs, binding), _value(rhs, binding)
            if not (x < y if op == "<" else x <= y):
                return False
        elif not _INDEP.match(cond):
            raise AssertionError(f"condition {cond!r} is not understood by this test")
    return True


def _indep_conditions(case: Case, binding: Binding) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for cond in case.conds:
        if match := _INDEP.match(cond):
            out.setdefault(match.group(1), set()).add(getattr(binding, match.group(2)))
    return out


@dataclasses.dataclass
class Instance:
    binding: Binding
    extents: dict[str, int]
    shapes: Shapes
    seed: int


def instances(case: Case, mode: str, variant: Variant | None):
    """Concrete bindings: all dims and ops allowed by the conditions, for every configuration."""
    for k, (rank, e0, e1) in enumerate(CONFIGS):
        R = max(rank, case.min_rank, variant.min_rank if variant else 2)
        if case.uses("q"):
            extents, p, q = ({"P": e0, "Q": e1}, "P", "Q") if mode == "distinct-axes" else ({"P": e0}, "P", "P")
        elif case.uses("p"):
            extents, p, q = {"P": e0}, "P", None
        else:
            extents, p, q = {}, None, None
        unit = max(math.prod(extents.values()), 2)
        dims = range(R + 1) if case.positions else range(R)
        dims_d = dims if case.uses("d") else [None]
        dims_e = dims if case.uses("e") else [None]
        for d in dims_d:
            for e in dims_e:
                for f in case.ops or [None]:
                    binding = Binding(d=d, e=e, r=R, p=p, q=q, f=f)
                    if _conditions_hold(case, binding):
                        seed = f"{case.name}/{mode}/{variant and variant.name}/{k}/{d}/{e}/{f}"
                        yield Instance(binding, extents, Shapes(R, d, e, unit), zlib.crc32(seed.encode()))


def _shape_and_marks(spec) -> tuple[tuple[int, ...], set[int]]:
    """A variable's instantiation: a shape, or (shape, dims it broadcasts) for a value marked by bc."""
    if len(spec) == 2 and isinstance(spec[1], (set, frozenset)):
        return tuple(spec[0]), set(spec[1])
    return tuple(spec), set()


def check(case: Case, direction: str, mode: str, variant: Variant | None,
          extra_deps: Mapping[str, str] | None = None) -> tuple[int, list[str]]:
    """(instances checked, failure descriptions). An instance whose LHS is ill-formed is outside the
    rule's domain and skipped. ``extra_deps`` forces variables to depend on axes (to show why W is needed)."""
    extra_deps = extra_deps or {}
    checked, failures = 0, []
    for inst in instances(case, mode, variant):
        lhs, rhs = case.build(inst.binding)
        if direction == BWD:
            lhs, rhs = rhs, lhs
        spec = dict(case.shapes(inst.shapes))
        if variant is not None:
            spec.update(variant.shapes(inst.shapes))
        indep = _indep_conditions(case, inst.binding)
        w_indep = w_independent_vars(lhs)
        rng = np.random.default_rng(inst.seed)
        leaves, deps = {}, {}
        for name in sorted(variables(lhs) | variables(rhs)):
            shape, marks = _shape_and_marks(spec[name])
            deps[name] = set(inst.extents) - indep.get(name, set()) - w_indep.get(name, set())
            if name in extra_deps:
                deps[name].add(extra_deps[name])
            leaves[name] = make_leaf(rng, shape, deps[name], inst.extents, marks, boolean=name in case.bools)
        evaluate = Evaluator(leaves)
        where = (f"{case.source()} [{direction}] with {inst.binding}, extents {inst.extents}, "
                 f"variables {({k: (v.shape, sorted(v.marks), v.deps) for k, v in leaves.items()})}")
        try:
            lhs_values = [(env, evaluate(lhs, env)) for env in environments(inst.extents)]
        except IllFormed:
            continue  # this instantiation is outside the rule's domain in this direction
        checked += 1
        if not w_violations(lhs, deps) and w_violations(rhs, deps):
            failures.append(f"{where}: RHS breaks invariant W at {[render(t) for t in w_violations(rhs, deps)]}")
            continue
        if not free_axes(rhs, deps) <= free_axes(lhs, deps):
            failures.append(f"{where}: RHS depends on axes {free_axes(rhs, deps)}, LHS on {free_axes(lhs, deps)}")
            continue
        for env, left in lhs_values:
            try:
                right = evaluate(rhs, env)
            except IllFormed as err:
                failures.append(f"{where}, at {env}: LHS is well-formed, RHS is not: {type(err).__name__}: {err}")
                break
            if left.arr.shape != right.arr.shape or left.marks != right.marks:
                failures.append(f"{where}, at {env}: LHS has shape {left.arr.shape} (broadcast {sorted(left.marks)}), "
                                f"RHS {right.arr.shape} (broadcast {sorted(right.marks)})")
                break
            if not np.allclose(left.arr, right.arr, rtol=1e-9, atol=1e-12):
                failures.append(f"{where}, at {env}: values differ by up to "
                                f"{np.max(np.abs(left.arr - right.arr)):.3g}")
                break
    return checked, failures


def _params():
    params = []
    for index, case in enumerate(CASES):
        number = index + 1 if case.ruleset == "tiling" else index - len(TILING) + 1
        directions = (FWD, BWD) if case.kind == "birewrite" else (FWD,)
        two_axes = case.uses("q")
        modes = ["distinct-axes"] + ([] if "ne(p).to(q)" in case.conds else ["same-axis"]) if two_axes else ["one-axis"]
        for direction in directions:
            for mode in modes:
                for variant in (None, *case.variants):
                    if variant is not None and direction not in variant.directions:
                        continue
                    ident = f"{case.ruleset}-{number:02d}-{case.name}-{direction}"
                    ident += "-same-axis" if mode == "same-axis" else ""
                    ident += f"-{variant.name}" if variant is not None else ""
                    marks = [pytest.mark.xfail(strict=True, reason=XFAIL[ident])] if ident in XFAIL else []
                    params.append(pytest.param(case, direction, mode, variant, id=ident, marks=marks))
    return params


@pytest.mark.parametrize("case, direction, mode, variant", _params())
def test_axiom_holds_numerically(case: Case, direction: str, mode: str, variant: Variant | None):
    checked, failures = check(case, direction, mode, variant)
    assert checked, f"no instantiation of {case.source()} [{direction}, {mode}] is well-formed: fix the test's shapes"
    assert not failures, f"{len(failures)} counterexample(s); first: {failures[0]}"


# ---------------------------------------------------------------------------------------------
# invariant W: the cancellation axioms need it (the Encoder guarantees it, every axiom keeps it)

W_DEPENDENT = ("comb-part-cancel", "split-k", "asum-rsum-part", "amax-rmax-part")


@pytest.mark.parametrize("name", W_DEPENDENT)
def test_cancellation_axioms_are_wrong_without_invariant_w(name: str):
    """With ``a`` depending on the partition's own axis (which W rules out) these axioms are false,
    which is why ``check`` keeps such operands independent and checks that every RHS keeps W."""
    case = next(case for case in TILING if case.name == name)
    checked, failures = check(case, FWD, "one-axis", None, extra_deps={"a": "P"})
    assert checked and len(failures) == checked, failures


# side conditions: each of these is needed (dropping it admits a counterexample), so the checker can tell

NEEDED_CONDITIONS = (
    ("part-part-swap", "ne(d).to(e)"), ("comb-comb-swap", "ne(d).to(e)"), ("comb-comb-swap", "ne(p).to(q)"),
    ("comb-part-swap", "ne(d).to(e)"), ("comb-part-swap", "ne(p).to(q)"), ("bin-part-bc", "indep(b, p)"),
    ("bin-bc-part", "indep(b, p)"), ("mm-part-rows", "indep(b, p)"), ("mm-part-cols", "indep(a, p)"),
    ("mT-part-last-dim", "eq(d).to(r - 1)"), ("mT-part-second-last-dim", "eq(d).to(r - 2)"),
    ("mT-part-batch-dim", "ne(d).to(r - 1)"), ("mT-part-batch-dim", "ne(d).to(r - 2)"),
    ("rsum-part-other-dim", "ne(d).to(e)"), ("rmax-part-other-dim", "ne(d).to(e)"),
    ("asum-mul-indep-right", "indep(b, p)"), ("asum-mul-indep-left", "indep(b, p)"),
    ("bc-unsq-before", "e < d"), ("bc-unsq-after", "d < e"), ("unsq-part-after", "d < e"),
    ("unsq-part-before", "e <= d"), ("bin-comb-bc", "indep(b, p)"),
)  # the others (e.g. eq(d).to(r - 2) on mm-part-rows) only exclude instances whose LHS is ill-formed anyway


@pytest.mark.parametrize("name, condition", NEEDED_CONDITIONS, ids=[f"{n}-{c}" for n, c in NEEDED_CONDITIONS])
def test_side_condition_is_needed(name: str, condition: str):
    case = next(case for case in CASES if case.name == name)
    assert condition in case.conds
    weaker = dataclasses.replace(case, conds=tuple(c for c in case.conds if c != condition))
    modes = ["distinct-axes", "same-axis"] if weaker.uses("q") else ["one-axis"]
    failures = [f for mode in modes for f in check(weaker, FWD, mode, None)[1]]
    assert failures, f"{case.source()} holds without {condition}"


# ---------------------------------------------------------------------------------------------
# merges an unsound axiom made the e-graph derive (regression tests): the terms differ numerically, and the
# e-graph must keep them apart

def _ten_mirror(term: Term):
    """The egglog term of one of our trees (only for the derivation tests below)."""
    from prism_jax.verify import egraph as eg
    if term.op == "var":
        return eg.Ten.input(term.args[0])
    return getattr(eg, term.op)(*(_ten_mirror(x) if isinstance(x, Term) else x for x in term.args))


E_X = un("exp", var("X"))
WRONG_MERGES = {
    # a block with grid axis g writes exp(X) split along dim 0 (O1) and exp(X) replicated, placed along dim 1 (O2);
    # comb-comb-swap without ne(p).to(q) rewrote O2 into W: comb(comb(a,d,p),e,p) concatenates the tiles along d
    # and repeats that along e (block (i, j) = a_i), comb(comb(a,e,p),d,p) gives block (i, j) = a_j
    "comb-comb-same-axis": dict(
        context=[comb(un("exp", part(var("X"), 0, "g")), 0, "g")],
        left=comb(E_X, 1, "g"),
        right=comb(comb(part(E_X, 0, "g"), 1, "g"), 0, "g"),
        leaves={"X": (4, 6)}, extents={"g": 2}),
}


def _merge_values(spec):
    rng = np.random.default_rng(0)
    leaves = {k: make_leaf(rng, shape, (), spec["extents"]) for k, shape in spec["leaves"].items()}
    env = next(environments(spec["extents"]))
    return Evaluator(leaves)(spec["left"], env), Evaluator(leaves)(spec["right"], env)


@pytest.mark.parametrize("name", WRONG_MERGES)
def test_wrong_merge_terms_really_differ(name: str):
    left, right = _merge_values(WRONG_MERGES[name])
    assert left.arr.shape == right.arr.shape and not np.allclose(left.arr, right.arr)


@pytest.mark.parametrize("name", WRONG_MERGES)
def test_egraph_does_not_merge_numerically_different_terms(name: str):
    from egglog import EGraph, eq
    from prism_jax.verify.egraph import AXIOMS, Ten, indep
    spec = WRONG_MERGES[name]
    left, right = _ten_mirror(spec["left"]), _ten_mirror(spec["right"])
    egraph = EGraph()
    egraph.register(left, right, *(_ten_mirror(t) for t in spec["context"]))
    for leaf in spec["leaves"]:
        for axis in spec["extents"]:
            egraph.register(indep(Ten.input(leaf), axis))
    for _ in range(4):
        egraph.run(AXIOMS)
        assert not egraph.check_bool(eq(left).to(right))


# ---------------------------------------------------------------------------------------------
# the independence rules: a node whose operands do not depend on axis p does not depend on p

_u, _w, _k, _h, _z = (var(name) for name in ("u", "w", "k", "h", "z"))
INDEPENDENCE = (  # (node, conditions); operands u, w, k, h depend on q only, z on p and q
    (lambda v: un(v.f, _u), ("indep(a, p)",)),
    (lambda v: bin(v.f, _u, _w), ("indep(a, p)", "indep(b, p)")),
    (lambda v: sel(_k, _u, _w), ("indep(c, p)", "indep(a, p)", "indep(b, p)")),
    (lambda v: mm(_u, mT(_w, v.r), v.r), ("indep(a, p)", "indep(b, p)")),
    (lambda v: rsum(_u, v.d), ("indep(a, p)",)),
    (lambda v: rmax(_u, v.d), ("indep(a, p)",)),
    (lambda v: bc(_h, v.d), ("indep(a, p)",)),
    (lambda v: mT(_u, v.r), ("indep(a, p)",)),
    (lambda v: unsq(_u, v.d), ("indep(a, p)",)),
    (lambda v: sq(_h, v.d), ("indep(a, p)",)),
    (lambda v: opaque(v.f, _u), ("indep(a, p)",)),
    (lambda v: opaque2(v.f, _u, _w), ("indep(a, p)", "indep(b, p)")),
    (lambda v: part(_u, v.d, v.q), ("indep(a, p)", "ne(p).to(q)")),
    (lambda v: comb(_u, v.d, v.q), ("indep(a, p)", "ne(p).to(q)")),
    (lambda v: asum(_u, v.q), ("indep(a, p)",)),
    (lambda v: amax(_u, v.q), ("indep(a, p)",)),
    (lambda v: asum(_z, v.p), ()),
    (lambda v: amax(_z, v.p), ()),
)
_INDEP_NAMES = {"u": "a", "w": "b", "k": "c", "h": "a", "z": "a"}  # our operands → the rule's variables


def _independence_source(build, conds) -> str:
    node = render(build(SYMBOLIC))
    for ours, theirs in _INDEP_NAMES.items():
        node = re.sub(rf"\b{ours}\b", theirs, node)
    node = node.replace(f"mT({_INDEP_NAMES['w']}, r)", "b")  # mm's second operand is mT(w) to fit the shapes
    return f"rule({', '.join([f'eq(t).to({node})', *conds])}).then(indep(t, p))"


def _independence_leaves(rng, extents):
    return {"u": make_leaf(rng, (6, 6), ("Q",), extents), "w": make_leaf(rng, (6, 6), ("Q",), extents),
            "k": make_leaf(rng, (6, 6), ("Q",), extents, boolean=True),
            "h": make_leaf(rng, (1, 6), ("Q",), extents), "z": make_leaf(rng, (6, 6), ("P", "Q"), extents)}


def _varies_with(term: Term, axis: str, leaves, extents) -> bool:
    evaluate = Evaluator(leaves)
    values = {}
    for env in environments(extents):
        key = tuple(sorted((a, i) for a, (i, _) in env.items() if a != axis))
        values.setdefault(key, []).append(evaluate(term, env).arr)
    return any(not np.array_equal(v, vs[0]) for vs in values.values() for v in vs)


@pytest.mark.parametrize("index", range(len(INDEPENDENCE)))
def test_independence_rule_holds(index: int):
    build, _ = INDEPENDENCE[index]
    extents = {"P": 3, "Q": 2}
    leaves = _independence_leaves(np.random.default_rng(index), extents)
    f = "sub" if build(SYMBOLIC).op == "bin" else "exp"
    node = build(Binding(d=0, e=None, r=2, p="P", q="Q", f=f))
    assert not _varies_with(node, "P", leaves, extents), render(node)


def test_terms_built_from_independent_leaves_do_not_vary():
    extents = {"P": 3, "Q": 2}
    leaves = _independence_leaves(np.random.default_rng(7), extents)
    # a whole tile program over the grid axis Q, with everything indep of P, summed over P at one spot
    term = comb(bin("div", un("exp", mm(part(_u, 0, "Q"), mT(_w, 2), 2)),
                    bc(rsum(part(bin("add", asum(_z, "P"), bc(_h, 0)), 0, "Q"), 1), 1)), 0, "Q")
    assert not _varies_with(term, "P", leaves, extents)
    assert _varies_with(part(_u, 0, "P"), "P", leaves, extents)  # the check can tell


# ---------------------------------------------------------------------------------------------
# the rule lists here must follow egraph.py


def _ruleset_args(name: str) -> list[ast.expr]:
    tree = ast.parse(EGRAPH_SOURCE.read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == name and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "ruleset"):
            return node.value.args
    raise AssertionError(f"egraph.py has no `{name} = ruleset(...)`")


def _count_calls(args: list[ast.expr], names: set[str]) -> int:
    return sum(1 for arg in args for node in ast.walk(arg)
               if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names)


@pytest.mark.parametrize("ruleset, cases", [("tiling", TILING), ("algebra", ALGEBRA)], ids=["tiling", "algebra"])
def test_every_rule_has_a_numeric_test(ruleset: str, cases):
    count = _count_calls(_ruleset_args(ruleset), {"rewrite", "birewrite"})
    assert count == len(cases), (
        f"egraph.py's `{ruleset}` ruleset has {count} rewrite/birewrite rules, tests/verify/test_axioms.py covers "
        f"{len(cases)}: add a numeric test (a Case in {ruleset.upper()}) for every new axiom, and remove the "
        f"Cases of deleted ones")


def test_every_independence_rule_has_a_test():
    count = _count_calls(_ruleset_args("independence"), {"rule"})
    assert count == len(INDEPENDENCE), (
        f"egraph.py's `independence` ruleset has {count} rules, tests/verify/test_axioms.py covers "
        f"{len(INDEPENDENCE)}: add the new rule to INDEPENDENCE")


@pytest.mark.parametrize("ruleset, cases", [("tiling", TILING), ("algebra", ALGEBRA)], ids=["tiling", "algebra"])
def test_rules_match_egraph_source(ruleset: str, cases):
    """Each Case restates its rule exactly (order included), so an edited axiom gets re-checked."""
    source = [ast.unparse(arg) for arg in _ruleset_args(ruleset)]
    ours = [case.source() for case in cases]
    for k, (theirs, mine) in enumerate(zip(source, ours)):
        assert theirs == mine, (f"{ruleset} rule {k + 1} in egraph.py is\n  {theirs}\nbut its numeric test checks\n"
                                f"  {mine}\nupdate the Case (and check the new rule numerically)")
    assert len(source) == len(ours)


def test_independence_rules_match_egraph_source():
    source = [ast.unparse(arg) for arg in _ruleset_args("independence")]
    assert source == [_independence_source(build, conds) for build, conds in INDEPENDENCE]


def test_xfail_entries_name_existing_tests():
    ids = {param.id for param in _params()}
    assert set(XFAIL) <= ids, f"stale XFAIL entries: {sorted(set(XFAIL) - ids)}"
