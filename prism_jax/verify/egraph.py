"""Formal equivalence by e-graph saturation (egglog). This package is the only egglog user.

sGraphs are encoded as terms of a tensor algebra in which grid and loop splits are explicit:
``part(x, d, a)`` is the tile of ``x`` along data dim ``d`` for the block/iteration index on axis ``a``,
``comb(t, d, a)`` reassembles tiles, ``asum(t, a)`` / ``amax(t, a)`` sum or max over an axis (loop
accumulators, and grid dims an omap leaves unmapped), ``bc(t, d)`` marks implicit broadcasting of a
size-1 dim, ``unsq(t, d)`` / ``sq(t, d)`` insert / remove a size-1 dim (reshapes that do only that; other
reshapes stay opaque). Sizes never appear in terms, so a proof holds for every size that satisfies the
graph's divisibility constraints. The axioms are Mirage's (partition/combine cancellation and commutation,
elementwise ops and matmuls commuting with partitions, split-K as a sum of partial products, reductions
split over tiles, row scaling commuting with matmul, commutativity/associativity) plus what numerically
stable kernels need (the online-softmax rescaling identity exp(a−m₁)·exp(m₁−m₂) = exp(a−m₂) and
scales distributing over sums) and what multi-kernel programs need (a grid dim whose per-block results
are placed along a new unit dim, reduced over that dim by a later kernel, as split-KV decoding combines
its chunks). Every axiom is checked numerically in the tests.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Sequence

from egglog import EGraph, Expr, String, StringLike, Unit, eq, function, i64, i64Like, ne, rewrite, rule, ruleset, \
    vars_, birewrite
from egglog.declarations import CallDecl, ClassMethodRef, FunctionRef, LitDecl, MethodRef

from prism_jax.ir import BlockGraph, KernelGraph, Mono, Op, OpKind
from prism_jax.ir.ops import ACCUMULATORS, BINARY, UNARY
from prism_jax.verify.verdict import Status, Verdict

log = logging.getLogger("prism_jax.verify")


class Ten(Expr):
    """A tensor (or tile) term."""

    @classmethod
    def input(cls, name: StringLike) -> Ten: ...

    @classmethod
    def const(cls, value: StringLike) -> Ten: ...


@function
def un(op: StringLike, a: Ten) -> Ten: ...


@function
def bin(op: StringLike, a: Ten, b: Ten) -> Ten: ...


@function
def sel(c: Ten, a: Ten, b: Ten) -> Ten: ...


@function
def mm(a: Ten, b: Ten, rank: i64Like) -> Ten: ...


@function
def rsum(a: Ten, dim: i64Like) -> Ten: ...


@function
def rmax(a: Ten, dim: i64Like) -> Ten: ...


@function
def bc(a: Ten, dim: i64Like) -> Ten: ...


@function
def mT(a: Ten, rank: i64Like) -> Ten: ...


@function
def opaque(op: StringLike, a: Ten) -> Ten: ...


@function
def opaque2(op: StringLike, a: Ten, b: Ten) -> Ten: ...


@function
def unsq(a: Ten, dim: i64Like) -> Ten: ...


@function
def sq(a: Ten, dim: i64Like) -> Ten: ...


@function
def part(a: Ten, dim: i64Like, axis: StringLike) -> Ten: ...


@function
def comb(a: Ten, dim: i64Like, axis: StringLike) -> Ten: ...


@function
def asum(a: Ten, axis: StringLike) -> Ten: ...


@function
def amax(a: Ten, axis: StringLike) -> Ten: ...


@function
def indep(a: Ten, axis: StringLike) -> Unit: ...


# ---------------------------------------------------------------------------------------------
# axioms

a, b, c, m, n, t, x = vars_("a b c m n t x", Ten)
d, e, r = vars_("d e r", i64)
p, q, f = vars_("p q f", String)

# partitions, combines and the ops that commute with them
tiling = ruleset(
    rewrite(comb(part(a, d, p), d, p)).to(a),
    rewrite(part(part(a, d, p), e, q)).to(part(part(a, e, q), d, p), ne(d).to(e)),
    rewrite(comb(comb(a, d, p), e, q)).to(comb(comb(a, e, q), d, p), ne(d).to(e), ne(p).to(q)),
    rewrite(comb(part(a, d, p), e, q)).to(part(comb(a, e, q), d, p), ne(d).to(e), ne(p).to(q)),
    rewrite(un(f, part(a, d, p))).to(part(un(f, a), d, p)),
    rewrite(bin(f, part(a, d, p), part(b, d, p))).to(part(bin(f, a, b), d, p)),
    rewrite(bin(f, part(a, d, p), bc(b, d))).to(part(bin(f, a, bc(b, d)), d, p), indep(b, p)),
    rewrite(bin(f, bc(b, d), part(a, d, p))).to(part(bin(f, bc(b, d), a), d, p), indep(b, p)),
    rewrite(sel(part(c, d, p), part(a, d, p), part(b, d, p))).to(part(sel(c, a, b), d, p)),
    rewrite(un(f, comb(a, d, p))).to(comb(un(f, a), d, p)),
    rewrite(bin(f, comb(a, d, p), comb(b, d, p))).to(comb(bin(f, a, b), d, p)),
    rewrite(bc(part(a, d, p), e)).to(part(bc(a, e), d, p), ne(d).to(e)),
    rewrite(bc(bc(a, d), e)).to(bc(bc(a, e), d), ne(d).to(e)),
    # matmul: rows, columns and batch dims split; a split contracting dim is a sum of partial products
    rewrite(mm(part(a, d, p), b, r)).to(part(mm(a, b, r), d, p), eq(d).to(r - 2), indep(b, p)),
    rewrite(mm(a, part(b, d, p), r)).to(part(mm(a, b, r), d, p), eq(d).to(r - 1), indep(a, p)),
    rewrite(mm(part(a, d, p), part(b, d, p), r)).to(part(mm(a, b, r), d, p), ne(d).to(r - 1), ne(d).to(r - 2)),
    rewrite(asum(mm(part(a, d, p), part(b, e, p), r), p)).to(mm(a, b, r), eq(d).to(r - 1), eq(e).to(r - 2)),
    # transposes of the last two dims move partitions between them
    rewrite(mT(part(a, d, p), r)).to(part(mT(a, r), r - 2, p), eq(d).to(r - 1)),
    rewrite(mT(part(a, d, p), r)).to(part(mT(a, r), r - 1, p), eq(d).to(r - 2)),
    rewrite(mT(part(a, d, p), r)).to(part(mT(a, r), d, p), ne(d).to(r - 1), ne(d).to(r - 2)),
    # reductions over a dim that is not split commute with the split; over the split dim they sum tiles
    rewrite(rsum(part(a, d, p), e)).to(part(rsum(a, e), d, p), ne(d).to(e)),
    rewrite(rmax(part(a, d, p), e)).to(part(rmax(a, e), d, p), ne(d).to(e)),
    rewrite(asum(rsum(part(a, d, p), d), p)).to(rsum(a, d)),
    rewrite(amax(rmax(part(a, d, p), d), p)).to(rmax(a, d)),
    rewrite(rsum(asum(a, p), e)).to(asum(rsum(a, e), p)),
    rewrite(asum(bin("add", a, b), p)).to(bin("add", asum(a, p), asum(b, p))),
    rewrite(asum(bin("mul", a, b), p)).to(bin("mul", asum(a, p), b), indep(b, p)),
    rewrite(asum(bin("mul", b, a), p)).to(bin("mul", b, asum(a, p)), indep(b, p)),
    # unit dims: unsq(a, d) inserts a size-1 dim at d, sq(a, d) removes the size-1 dim d
    rewrite(sq(unsq(a, d), d)).to(a),
    rewrite(un(f, unsq(a, d))).to(unsq(un(f, a), d)),
    rewrite(bin(f, unsq(a, d), unsq(b, d))).to(unsq(bin(f, a, b), d)),
    rewrite(bin(f, unsq(a, d), bc(unsq(b, d), d))).to(unsq(bin(f, a, b), d)),
    rewrite(bc(unsq(a, d), e)).to(unsq(bc(a, e), d), e < d),
    rewrite(bc(unsq(a, d), e)).to(unsq(bc(a, e - 1), d), d < e),
    rewrite(unsq(part(a, d, p), e)).to(part(unsq(a, e), d, p), d < e),
    rewrite(unsq(part(a, d, p), e)).to(part(unsq(a, e), d + 1, p), e <= d),
    rewrite(sq(part(a, d, p), e)).to(part(sq(a, e), d, p), d < e),
    rewrite(sq(part(a, d, p), e)).to(part(sq(a, e), d - 1, p), e < d),
    # tiles placed along a new unit dim (a grid dim's chunk results) and reduced over it in a later kernel
    rewrite(bc(comb(a, d, p), e)).to(comb(bc(a, e), d, p), ne(d).to(e)),
    rewrite(bin(f, comb(a, d, p), bc(b, d))).to(comb(bin(f, a, bc(b, d)), d, p), indep(b, p)),
    rewrite(rsum(comb(unsq(a, d), d, p), d)).to(unsq(asum(a, p), d)),
    rewrite(rmax(comb(unsq(a, d), d, p), d)).to(unsq(amax(a, p), d)),
)

# which terms do not vary along an axis (side condition of the rules above)
independence = ruleset(
    rule(eq(t).to(un(f, a)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(bin(f, a, b)), indep(a, p), indep(b, p)).then(indep(t, p)),
    rule(eq(t).to(sel(c, a, b)), indep(c, p), indep(a, p), indep(b, p)).then(indep(t, p)),
    rule(eq(t).to(mm(a, b, r)), indep(a, p), indep(b, p)).then(indep(t, p)),
    rule(eq(t).to(rsum(a, d)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(rmax(a, d)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(bc(a, d)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(mT(a, r)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(unsq(a, d)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(sq(a, d)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(opaque(f, a)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(opaque2(f, a, b)), indep(a, p), indep(b, p)).then(indep(t, p)),
    rule(eq(t).to(part(a, d, q)), indep(a, p), ne(p).to(q)).then(indep(t, p)),
    rule(eq(t).to(comb(a, d, q)), indep(a, p), ne(p).to(q)).then(indep(t, p)),
    rule(eq(t).to(asum(a, q)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(amax(a, q)), indep(a, p)).then(indep(t, p)),
    rule(eq(t).to(asum(a, p))).then(indep(t, p)),
    rule(eq(t).to(amax(a, p))).then(indep(t, p)),
)

# algebra on whole tensors
algebra = ruleset(
    rewrite(bin("add", a, b)).to(bin("add", b, a)),
    rewrite(bin("mul", a, b)).to(bin("mul", b, a)),
    birewrite(bin("add", bin("add", a, b), c)).to(bin("add", a, bin("add", b, c))),
    birewrite(bin("mul", bin("mul", a, b), c)).to(bin("mul", a, bin("mul", b, c))),
    rewrite(bin("mul", a, bin("add", b, c))).to(bin("add", bin("mul", a, b), bin("mul", a, c))),
    rewrite(mm(a, bin("add", b, c), r)).to(bin("add", mm(a, b, r), mm(a, c, r))),
    rewrite(mm(bin("add", a, b), c, r)).to(bin("add", mm(a, c, r), mm(b, c, r))),
    # row scaling ([.., M, 1] broadcast along K) commutes with matmul; column scaling likewise
    birewrite(mm(bin("mul", a, bc(c, e)), b, r)).to(bin("mul", mm(a, b, r), bc(c, e)), eq(e).to(r - 1)),
    birewrite(mm(bin("div", a, bc(c, e)), b, r)).to(bin("div", mm(a, b, r), bc(c, e)), eq(e).to(r - 1)),
    birewrite(mm(a, bin("mul", b, bc(c, e)), r)).to(bin("mul", mm(a, b, r), bc(c, e)), eq(e).to(r - 2)),
    # division and reciprocal square roots
    birewrite(bin("mul", a, un("rsqrt", b))).to(bin("div", a, un("sqrt", b))),
    birewrite(bin("div", bin("mul", a, b), c)).to(bin("mul", a, bin("div", b, c))),
    birewrite(bin("div", bin("div", a, b), c)).to(bin("div", a, bin("mul", b, c))),
    # a scale with a size-1 dim passes through a sum over that dim
    birewrite(bin("mul", rsum(a, d), c)).to(rsum(bin("mul", a, bc(c, d)), d)),
    rewrite(rsum(bin("div", a, bc(c, d)), d)).to(bin("div", rsum(a, d), c)),
    # online softmax: exp(x - m) * exp(m - n) = exp(x - n), and shift invariance of exp ratios
    rewrite(bin("mul", un("exp", bin("sub", x, bc(m, d))), bc(un("exp", bin("sub", m, n)), d))).to(
        un("exp", bin("sub", x, bc(n, d)))),
    rewrite(bin("mul", un("exp", bin("sub", m, n)), un("exp", bin("sub", n, c)))).to(un("exp", bin("sub", m, c))),
    rewrite(bin("div", un("exp", bin("sub", x, bc(m, d))), bc(rsum(un("exp", bin("sub", x, bc(m, d))), d), d))).to(
        bin("div", un("exp", x), bc(rsum(un("exp", x), d), d))),
)

AXIOMS = tiling | independence | algebra


# ---------------------------------------------------------------------------------------------
# encoding


def term_key(term: Ten):
    """A hashable, structural identity of a term (equal terms, equal keys) that is cheap to compute,
    unlike printing it."""
    return term.__egg_typed_expr__


class EncodingError(ValueError):
    """The graph uses something the term algebra cannot express (the verdict is then ``unknown``)."""


def _const_name(value) -> str:
    if isinstance(value, Mono):
        return str(value)
    if isinstance(value, bool):
        return str(value)
    number = float(value)
    return repr(int(number)) if number.is_integer() else repr(number)


@dataclasses.dataclass
class Encoding:
    outputs: list[Ten]
    axes: set[str]
    leaves: list[Ten]


class Encoder:
    """Turns kernel graphs (with their block graphs) into terms over shared input leaves.

    ``abstract=True`` erases tiling (partitions, combines and sums over grid/loop axes): the result
    is the *abstract expression* a tile computes a piece of, which the search's pruning compares with
    the target's (see :class:`AbstractTarget`)."""

    def __init__(self, abstract: bool = False) -> None:
        self.abstract = abstract
        self.values: dict[tuple[str, int], Ten] = {}  # (graph prefix, value id) → term, block values too
        self.axes: set[str] = set()
        self.leaves: dict[str, Ten] = {}
        self._kernels = 0

    def leaf(self, key: str, make) -> Ten:
        if key not in self.leaves:
            self.leaves[key] = make()
        return self.leaves[key]

    def op_term(self, op: Op, args: list[Ten], values, units) -> Ten:
        """The term of one (block-graph) op from its operands' terms, without a whole graph: lets the
        search extend a partial program one op at a time. ``values``/``units`` map value ids to types
        and structural unit dims, as in :func:`unit_dims`."""
        if op.kind in ACCUMULATORS:
            return self._accumulate(op, args, units, "L")
        return self._op(op, args, values, units)

    def encode(self, graph: KernelGraph, prefix: str) -> list[Ten]:
        env: dict[int, Ten] = {v: self.leaf(f"in{k}", lambda k=k: Ten.input(f"in{k}"))
                               for k, v in enumerate(graph.inputs)}
        units: dict[int, tuple[bool, ...]] = {v: tuple(d == 1 for d in graph.values[v].shape) for v in graph.inputs}
        copies: dict[int, tuple[bool, ...]] = {v: (False,) * graph.values[v].rank for v in graph.inputs}
        for op in graph.ops:
            if op.kind == OpKind.CUSTOM_KERNEL:
                self._kernels += 1
                name = f"{prefix}k{self._kernels}"
                outs, out_units, out_copies = self._block(op.block, [env[v] for v in op.inputs],
                                                          [units[v] for v in op.inputs],
                                                          [copies[v] for v in op.inputs], name)
                env.update(zip(op.outputs, outs))
                units.update(zip(op.outputs, out_units))
                copies.update(zip(op.outputs, out_copies))
            else:
                units[op.outputs[0]] = unit_dims(op, [units[v] for v in op.inputs], graph.values)
                copies[op.outputs[0]] = broadcast_copies(op, [copies[v] for v in op.inputs],
                                                         [units[v] for v in op.inputs], units[op.outputs[0]])
                env[op.outputs[0]] = self._op(op, [env[v] for v in op.inputs], graph.values, units)
        self.values.update({(prefix, v): term for v, term in env.items()})
        return [env[v] for v in graph.outputs]

    # tiling constructors, erased in abstract mode
    def _part(self, term: Ten, d: int, axis: str) -> Ten:
        return term if self.abstract else part(term, d, axis)

    def _comb(self, term: Ten, d: int, axis: str) -> Ten:
        return term if self.abstract else comb(term, d, axis)

    def _asum(self, term: Ten, axis: str) -> Ten:
        return term if self.abstract else asum(term, axis)

    def _amax(self, term: Ten, axis: str) -> Ten:
        return term if self.abstract else amax(term, axis)

    def _block(self, block: BlockGraph, sources: Sequence[Ten], source_units: Sequence[tuple[bool, ...]],
               source_copies: Sequence[tuple[bool, ...]], name: str):
        grid_axes = [f"{name}g{k}" for k in range(block.grid_rank)]
        loop_axis = f"{name}L"
        self.axes.update(grid_axes + [loop_axis])
        env: dict[int, Ten] = {}
        units: dict[int, tuple[bool, ...]] = {}
        copies: dict[int, tuple[bool, ...]] = {}
        split_axes: set[str] = set()  # grid axes that partition some input
        for inp in block.inputs:
            units[inp.value] = source_units[inp.source]  # a tile dim that is 1 only by splitting is no unit
            copies[inp.value] = source_copies[inp.source]
            term = sources[inp.source]
            for d, row in enumerate(inp.imap):
                for p_index, split in enumerate(row):
                    if split is not True and split is not False:
                        raise EncodingError("block graph has unresolved map variables")
                    # a size-1 dim can only be split once (g = 1): such a split is the identity
                    if split and not source_units[inp.source][d]:
                        term = self._part(term, d, grid_axes[p_index])
                        split_axes.add(grid_axes[p_index])
                if inp.fmap[d] is True and not source_units[inp.source][d]:
                    term = self._part(term, d, loop_axis)
            env[inp.value] = term
        for op in block.ops:
            args = [env[v] for v in op.inputs]
            units[op.outputs[0]] = unit_dims(op, [units[v] for v in op.inputs], block.values)
            copies[op.outputs[0]] = broadcast_copies(op, [copies[v] for v in op.inputs], [units[v] for v in op.inputs],
                                                     units[op.outputs[0]])
            if op.kind in ACCUMULATORS:
                env[op.outputs[0]] = self._accumulate(op, args, units, loop_axis)
            else:
                env[op.outputs[0]] = self._op(op, args, block.values, units)
        self.values.update({(name, v): term for v, term in env.items()})
        outs, out_units = [], []
        for k, out in enumerate(block.outputs):
            term = env[out.value]
            out_shape = block.output_type(k).shape
            combined = set()
            for p_index in reversed(range(block.grid_rank)):
                dims = [d for d, row in enumerate(out.omap) if row[p_index] is True]
                if dims and out_shape[dims[0]] == 1 and grid_axes[p_index] not in split_axes:
                    continue  # a size-1 output dim combines a single block (g = 1)
                if dims:  # (still combined where the axis split an input: the comb binds the axis)
                    combined.add(dims[0])
                term = (self._comb(term, dims[0], grid_axes[p_index]) if dims
                        else self._asum(term, grid_axes[p_index]))
            outs.append(term)
            mapped = {d for d, row in enumerate(out.omap) if any(e is True for e in row)}
            out_units.append(tuple(u and d not in combined and (d not in mapped or out_shape[d] == 1)
                                   for d, u in enumerate(units[out.value])))
        return outs, out_units, [copies[out.value] for out in block.outputs]

    def _accumulate(self, op: Op, args: list[Ten], units, loop_axis: str) -> Ten:
        if op.kind == OpKind.ACCUM_SUM:
            return self._asum(args[0], loop_axis)
        if op.kind == OpKind.ACCUM_SUM_SQUARES:
            return self._asum(bin("mul", args[0], args[0]), loop_axis)
        if op.kind == OpKind.ACCUM_MAX:
            return self._amax(args[0], loop_axis)
        # rescaled sum: Σ_i value_i · exp(s_i − M), M = max_i s_i (what the online update computes)
        value, log_scale = args
        if self.abstract:  # the rescaling only changes which max the pieces are relative to
            return value
        running_max = amax(log_scale, loop_axis)
        factor = self._broadcast(un("exp", bin("sub", log_scale, running_max)), units[op.inputs[1]],
                                 units[op.inputs[0]])
        return asum(bin("mul", value, factor), loop_axis)

    @staticmethod
    def _broadcast(term: Ten, unit: Sequence[bool], out_unit: Sequence[bool]) -> Ten:
        """Mark the dims where a structurally size-1 operand meets a result that is not."""
        for d, (is_unit, out_is_unit) in enumerate(zip(unit, out_unit)):
            if is_unit and not out_is_unit:
                term = bc(term, d)
        return term

    def _op(self, op: Op, args: list[Ten], values, units) -> Ten:
        out_t = values[op.outputs[0]]
        in_ts = [values[v] for v in op.inputs]
        in_units = [units[v] for v in op.inputs]
        out_unit = units[op.outputs[0]]
        kind = op.kind
        if kind == OpKind.CONSTANT:
            leaf = self.leaf(f"const:{_const_name(op.attrs['value'])}",
                             lambda: Ten.const(_const_name(op.attrs["value"])))
            return self._broadcast(leaf, (True,) * out_t.rank, out_unit)
        if kind == OpKind.SQUARE:  # one canonical form, so x*x and square(x) are the same term
            return bin("mul", args[0], args[0])
        if kind in UNARY:
            suffix = {OpKind.INTEGER_POW: lambda: str(op.attrs["exponent"]),
                      OpKind.CONVERT: lambda: op.attrs["dtype"].value}.get(kind, lambda: "")()
            return un(kind.value + suffix, args[0])
        if kind in BINARY:
            x, y = (self._broadcast(arg, u, out_unit) for arg, u in zip(args, in_units))
            return bin(kind.value, x, y)
        if kind == OpKind.SELECT:
            return sel(*(self._broadcast(arg, u, out_unit) for arg, u in zip(args, in_units)))
        if kind == OpKind.MATMUL:  # batch broadcasting is made explicit like elementwise broadcasting
            batch_unit = out_unit[:-2]
            x, y = (self._broadcast(arg, u[:-2], batch_unit) for arg, u in zip(args, in_units))
            return mm(x, y, out_t.rank)
        if kind in (OpKind.REDUCE_SUM, OpKind.REDUCE_MAX):
            term = args[0]
            for axis in sorted(op.attrs["axes"]):
                if not in_units[0][axis]:
                    term = rsum(term, axis) if kind == OpKind.REDUCE_SUM else rmax(term, axis)
            return term
        if kind == OpKind.BROADCAST:
            return self._broadcast(args[0], in_units[0], out_unit)
        if kind == OpKind.TRANSPOSE:
            perm = tuple(op.attrs["perm"])
            rank = len(perm)
            if rank >= 2 and perm == tuple(range(rank - 2)) + (rank - 1, rank - 2):
                return mT(args[0], rank)
            return opaque(f"transpose{perm}", args[0])
        if kind == OpKind.RESHAPE:
            if in_ts[0].shape == out_t.shape:
                return args[0]
            steps = unit_reshape(in_ts[0].shape, in_units[0], out_t.shape)
            if steps is not None:
                squeezed, inserted = steps
                term = args[0]
                for d in sorted(squeezed, reverse=True):
                    term = sq(term, d)
                for d in sorted(inserted):
                    term = unsq(term, d)
                return term
            return opaque(f"reshape{tuple(map(str, in_ts[0].shape))}->{tuple(map(str, out_t.shape))}", args[0])
        if kind == OpKind.IOTA:
            return self.leaf(f"iota:{op.attrs}", lambda: Ten.const(f"iota{tuple(map(str, out_t.shape))}"
                                                                     f"@{op.attrs['dimension']}"))
        if kind in (OpKind.SLICE, OpKind.CONCAT):
            term = args[0]
            for k, other in enumerate(args[1:]):
                term = opaque2(f"{kind.value}{op.attrs}#{k}", term, other)
            return opaque(f"{kind.value}{op.attrs}", term)
        raise EncodingError(f"{kind} has no term encoding")


def unit_reshape(in_shape: Sequence, in_unit: Sequence[bool],
                 out_shape: Sequence) -> tuple[list[int], list[int]] | None:
    """``(squeezed input dims, inserted output dims)`` when a reshape only removes and inserts size-1 dims,
    else None. Dims that are size 1 by structure (``in_unit``) may be removed; every other input dim is
    kept, matched in order to the first output dim of the same size after only size-1 dims (a tile dim that
    is 1 by accident stays a dim). Between two kept dims, size-1 input dims are paired with size-1 output
    dims from the right: the surplus is removed (or inserted) at the left of the run, as in the symbolic
    graph where such a run holds only the new unit dims. Any choice is sound (squeezing or inserting any
    size-1 dim gives the same array); the rule only makes a concrete graph encode like its symbolic one."""
    unit = [bool(u) and s == 1 for u, s in zip(in_unit, in_shape)]
    kept: list[tuple[int, int]] = []  # (input dim, output dim)
    j = 0
    for i, size in enumerate(in_shape):
        if unit[i]:
            continue
        while j < len(out_shape) and out_shape[j] != size:
            if out_shape[j] != 1:
                return None
            j += 1
        if j == len(out_shape):
            return None
        kept.append((i, j))
        j += 1
    if any(s != 1 for s in out_shape[j:]):
        return None
    squeezed, inserted = [], []
    bounds = [(-1, -1), *kept, (len(in_shape), len(out_shape))]
    for (i0, j0), (i1, j1) in zip(bounds, bounds[1:]):
        ins, outs = list(range(i0 + 1, i1)), list(range(j0 + 1, j1))  # all size 1 (unit inputs, output ones)
        paired = min(len(ins), len(outs))
        squeezed += ins[:len(ins) - paired]
        inserted += outs[:len(outs) - paired]
    return squeezed, inserted


def unit_dims(op: Op, in_units: Sequence[tuple[bool, ...]], values) -> tuple[bool, ...]:
    """Which dims of the op's result are size 1 by structure (a reduction's kept dim, a user's size-1
    dim, a constant) rather than by accident (a tile split down to size 1). Encoding broadcasts by
    structure makes a concrete instantiation encode exactly like its symbolic graph."""
    out = values[op.outputs[0]]
    kind = op.kind
    if kind in (OpKind.CONSTANT, OpKind.IOTA):
        return tuple(d == 1 for d in out.shape)
    if kind in (OpKind.REDUCE_SUM, OpKind.REDUCE_MAX):
        axes = set(op.attrs["axes"])
        return tuple(u or i in axes for i, u in enumerate(in_units[0]))
    if kind == OpKind.MATMUL:
        a, b = in_units
        return tuple(x and y for x, y in zip(a[:-2], b[:-2])) + (a[-2], b[-1])
    if kind == OpKind.TRANSPOSE:
        return tuple(in_units[0][p] for p in op.attrs["perm"])
    if kind == OpKind.BROADCAST:
        return tuple(u and d == 1 for u, d in zip(in_units[0], out.shape))
    if kind in (OpKind.RESHAPE, OpKind.CONCAT, OpKind.SLICE):
        return tuple(d == 1 for d in out.shape)
    if kind in ACCUMULATORS or kind in UNARY:
        return in_units[0]
    if len({len(u) for u in in_units}) == 1:  # elementwise: unit only where every operand is
        return tuple(all(col) for col in zip(*in_units))
    return tuple(d == 1 for d in out.shape)


def broadcast_copies(op: Op, in_copies: Sequence[tuple[bool, ...]], in_units: Sequence[tuple[bool, ...]],
                     out_unit: tuple[bool, ...]) -> tuple[bool, ...]:
    """Which dims of the result are broadcast copies of a size-1 dim. Terms do not carry sizes, so a sum
    or contraction over such a dim (whose value depends on the dim's size) cannot be encoded soundly:
    it raises :class:`EncodingError` (verdict ``unknown``) instead of risking a wrong proof."""
    kind = op.kind
    if kind in (OpKind.CONSTANT, OpKind.IOTA):
        return (False,) * len(out_unit)
    if kind in UNARY or kind in ACCUMULATORS:
        return in_copies[0]
    if kind == OpKind.BROADCAST:
        return tuple(c or (u and not o) for c, u, o in zip(in_copies[0], in_units[0], out_unit))
    if kind in (OpKind.REDUCE_SUM, OpKind.REDUCE_MAX):
        axes = set(op.attrs["axes"])
        if kind == OpKind.REDUCE_SUM and any(in_copies[0][a] for a in axes):
            raise EncodingError("a sum over a broadcast dim depends on its size, which terms do not carry")
        return tuple(c and i not in axes for i, c in enumerate(in_copies[0]))
    if kind == OpKind.MATMUL:
        (ca, cb), (ua, ub) = in_copies, in_units
        if ca[-1] or cb[-2] or ua[-1] != ub[-2]:
            raise EncodingError("a contraction over a broadcast dim depends on its size, which terms do not carry")
        batch = tuple(not o and all(c or u for c, u in ((ca[d], ua[d]), (cb[d], ub[d])))
                      for d, o in enumerate(out_unit[:-2]))
        return batch + (ca[-2], cb[-1])
    if kind == OpKind.TRANSPOSE:
        return tuple(in_copies[0][p] for p in op.attrs["perm"])
    if kind in (OpKind.RESHAPE, OpKind.CONCAT, OpKind.SLICE):
        if any(any(c) for c in in_copies):
            raise EncodingError(f"{kind} of a broadcast tensor is not encoded")
        return (False,) * len(out_unit)
    # elementwise: a copy where every operand is a copy or size 1 and the result is not size 1
    return tuple(not o and all(c[d] or u[d] for c, u in zip(in_copies, in_units)) for d, o in enumerate(out_unit))


@dataclasses.dataclass(frozen=True)
class EGraphConfig:
    max_iterations: int = 24
    max_seconds: float = 5.0
    max_nodes: int = 200_000


class EGraphVerifier:
    """Proves equivalence by saturation under a node, iteration and time budget."""

    name = "egraph"

    def __init__(self, config: EGraphConfig = EGraphConfig()) -> None:
        self.config = config

    def verify(self, reference: KernelGraph, candidate: KernelGraph) -> Verdict:
        start = time.perf_counter()
        if len(reference.outputs) != len(candidate.outputs) or reference.input_types != candidate.input_types:
            return Verdict(Status.NOT_EQUAL, self.name, time.perf_counter() - start, "interfaces differ")
        encoder = Encoder()
        try:
            ref_terms = encoder.encode(reference, "r")
            cand_terms = encoder.encode(candidate, "c")
        except EncodingError as err:
            return Verdict(Status.UNKNOWN, self.name, time.perf_counter() - start, str(err))
        egraph = EGraph()
        # the goals compare named roots: a goal over the whole terms is a join over every node of both,
        # planned and run again at each check (~0.1 s for an attention kernel, most of a proof's time)
        goals = [eq(egraph.let(f"ref{i}", x)).to(egraph.let(f"cand{i}", y))
                 for i, (x, y) in enumerate(zip(ref_terms, cand_terms))]
        for leaf in encoder.leaves.values():
            for axis in sorted(encoder.axes):
                egraph.register(indep(leaf, axis))
        iterations = 0
        while True:
            if egraph.check_bool(*goals):
                return Verdict(Status.EQUAL, self.name, time.perf_counter() - start,
                               f"proved in {iterations} iteration(s)")
            elapsed = time.perf_counter() - start
            if iterations >= self.config.max_iterations or elapsed >= self.config.max_seconds:
                return Verdict(Status.UNKNOWN, self.name, elapsed, f"budget spent after {iterations} iteration(s)")
            report = egraph.run(AXIOMS)
            iterations += 1
            if not report.updated:
                return Verdict(Status.UNKNOWN, self.name, time.perf_counter() - start,
                               f"saturated after {iterations} iteration(s) without a proof")
            if self._size(egraph) > self.config.max_nodes:
                return Verdict(Status.UNKNOWN, self.name, time.perf_counter() - start,
                               f"node budget ({self.config.max_nodes}) spent after {iterations} iteration(s)")

    @staticmethod
    def _size(egraph: EGraph) -> int:
        return sum(size for _, size in egraph.all_function_sizes())


# ---------------------------------------------------------------------------------------------
# abstract expressions (Mirage's pruning)


@function
def sub(a: Ten) -> Unit: ...


subterms = ruleset(
    rule(sub(t), eq(t).to(un(f, a))).then(sub(a)),
    rule(sub(t), eq(t).to(bin(f, a, b))).then(sub(a), sub(b)),
    rule(sub(t), eq(t).to(sel(c, a, b))).then(sub(c), sub(a), sub(b)),
    rule(sub(t), eq(t).to(mm(a, b, r))).then(sub(a), sub(b)),
    rule(sub(t), eq(t).to(rsum(a, d))).then(sub(a)),
    rule(sub(t), eq(t).to(rmax(a, d))).then(sub(a)),
    rule(sub(t), eq(t).to(bc(a, d))).then(sub(a)),
    rule(sub(t), eq(t).to(mT(a, r))).then(sub(a)),
    rule(sub(t), eq(t).to(unsq(a, d))).then(sub(a)),
    rule(sub(t), eq(t).to(sq(a, d))).then(sub(a)),
    rule(sub(t), eq(t).to(opaque(f, a))).then(sub(a)),
    rule(sub(t), eq(t).to(opaque2(f, a, b))).then(sub(a), sub(b)),
)


class AbstractTarget:
    """The target's abstract expressions, saturated once with the algebraic axioms; answers "is this
    partial program's abstract expression a subexpression of the target's?" without further rewriting.

    A partial program whose values are not all subexpressions cannot be completed into the target
    under these axioms, so the search may prune it (as Mirage does); verification stays the judge of
    every complete candidate."""

    def __init__(self, reference: KernelGraph, iterations: int = 6) -> None:
        start = time.perf_counter()
        encoder = Encoder(abstract=True)
        outputs = encoder.encode(reference, "t")
        self._outputs = outputs
        self._egraph = EGraph()
        self._egraph.register(*outputs, *(sub(o) for o in outputs))
        self._egraph.run((algebra | subterms) * iterations)
        self._egraph.run(subterms.saturate())
        self._index = _NodeIndex.of(self._egraph, outputs)
        self._output_classes = [self._index.lookup(o) for o in outputs] if self._index is not None else []
        self.build_seconds = time.perf_counter() - start

    def judge(self, term: Ten) -> tuple[bool, int | None, object]:
        """(admitted, the target output it computes or None, its class key) in one lookup: what the
        enumeration asks of every new value."""
        cls = self._index.lookup(term) if self._index is not None else UNNAMED
        if cls is UNNAMED:  # egglog answers
            if not self._egraph.check_bool(sub(term)):
                return False, None, None
            output = next((k for k, out in enumerate(self._outputs) if self._egraph.check_bool(eq(term).to(out))), None)
            return True, output, term_key(self._egraph.extract(term))
        if cls is None or cls not in self._index.subterm_classes:
            return False, None, None
        return True, next((k for k, c in enumerate(self._output_classes) if c == cls), None), cls

    def admits_term(self, term: Ten) -> bool:
        return self.judge(term)[0]

    def class_key(self, term: Ten):
        """A key shared by all admitted terms in one e-class of the saturated target (its class id, or
        the class's extracted representative): lets the search drop a value that only re-derives
        another."""
        return self.judge(term)[2]

    def output_index(self, term: Ten) -> int | None:
        """Which target output this abstract term already computes (same e-class), if any."""
        return self.judge(term)[1]

    def admits(self, partial: KernelGraph) -> bool:
        """True when every value the partial program computes (tiles included, tiling erased) is a
        subexpression of the target."""
        encoder = Encoder(abstract=True)
        try:
            encoder.encode(partial, "p")
        except EncodingError:
            return True  # cannot judge: never prune what we cannot encode
        leaves = {id(x) for x in encoder.leaves.values()}
        return all(self.admits_term(term) for term in encoder.values.values() if id(term) not in leaves)


UNNAMED = object()  # a term with a literal or callable the node index cannot name


class _Unnamed(Exception):
    pass


class _NodeIndex:
    """The saturated target's e-nodes as a hash-cons, (op, child classes) -> class, and the classes
    the ``sub`` relation holds for. A term is in the e-graph exactly when it is found bottom-up, node
    by node, which is what egglog's check of it matches; looking it up here costs microseconds where
    each egglog query costs milliseconds (the enumeration asks thousands)."""

    def __init__(self, nodes: dict[tuple, str], subterm_classes: frozenset[str]) -> None:
        self.nodes = nodes
        self.subterm_classes = subterm_classes
        self._memo: dict[object, str | None] = {}

    @classmethod
    def of(cls, egraph: EGraph, outputs: Sequence[Ten]) -> "_NodeIndex | None":
        """The index, checked against egglog on the target's own terms; None (egglog answers every
        query then) when the serialized e-graph does not read back as expected."""
        try:
            data = json.loads(egraph._serialize(split_primitive_outputs=False).to_json())
            node_class = {node_id: node["eclass"] for node_id, node in data["nodes"].items()}
            nodes: dict[tuple, str] = {}
            subterms: set[str] = set()
            for node in data["nodes"].values():
                children = tuple(node_class[c] for c in node["children"])
                if node["op"] == "sub":
                    subterms.update(children)
                else:
                    nodes[(node["op"], children)] = node["eclass"]
            index = cls(nodes, frozenset(subterms))
            if all(index.lookup(o) in index.subterm_classes for o in outputs):  # UNNAMED is not in it
                return index
            log.debug("the e-graph's serialized nodes do not contain the target; querying egglog instead")
        except (AttributeError, KeyError, TypeError, ValueError) as err:  # another egglog's format
            log.debug("cannot index the saturated target (%s); querying egglog instead", err)
        return None

    def lookup(self, term: Ten):
        """The e-class of ``term``; None when some node of it is not in the e-graph; UNNAMED when
        some node has a literal or callable this index cannot name (egglog must answer)."""
        try:
            return self._class_of(term.__egg_typed_expr__.expr)
        except _Unnamed:
            return UNNAMED

    def _class_of(self, expr) -> str | None:
        found = self._memo.get(expr, self)
        if found is not self:
            return found
        found = self._memo[expr] = self._compute(expr)
        return found

    def _compute(self, expr) -> str | None:
        if isinstance(expr, LitDecl):
            return self.nodes.get((_literal_text(expr.value), ()))
        if not isinstance(expr, CallDecl):
            raise _Unnamed
        name = _callable_name(expr.callable)
        children = []
        for arg in expr.args:
            child = self._class_of(arg.expr)
            if child is None:
                return None
            children.append(child)
        return self.nodes.get((name, tuple(children)))


def _callable_name(ref) -> str:
    """The op name the serialized e-graph gives a function (``bin``) or class method (``Ten.input``)."""
    if isinstance(ref, FunctionRef):
        return ref.ident.name
    if isinstance(ref, ClassMethodRef | MethodRef):
        return f"{ref.ident.name}.{ref.method_name}"
    raise _Unnamed


def _literal_text(value) -> str:
    """A literal as the serialized e-graph prints it: strings quoted, integers bare."""
    if isinstance(value, str) and '"' not in value and "\\" not in value:
        return f'"{value}"'
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Unnamed
