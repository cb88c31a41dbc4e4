"""Level-1 enumeration: block-graph structures (ops, accumulators, ops after the loop; maps left open)
for one custom kernel computing a region, pruned by the abstract-expression test against the target.

A partial structure is extended one op at a time, incrementally: each value carries its untiled type,
its abstract expression (tiling erased), which kernel inputs it reaches without crossing an accumulator
and whether it is computed after the loop. Pruning rules, each sound:

- *types*: the untiled op must type-check (a tiling only divides dims, so an ill-typed untiled op is
  ill-typed for every map assignment);
- *abstract expressions*: every new value must be a subexpression of the target's (saturated once
  with the algebraic axioms, :class:`~prism_jax.verify.AbstractTarget`), as in Mirage;
- *canonical order*: the ops appear in the greedy topological order by key (each op's key exceeds the
  keys of all ops after its last operand), so each structure is generated once;
- *structure*: accumulators only combine partial reductions; no value is computed twice (same
  expression, same phase); a per-iteration value is never mixed with an after-loop value;
- *numerics*: where the region exponentiates only shifted values (``exp(x - max)``), so must the
  candidate (an equal program that drops the shift can overflow);
- *liveness*: every op must end up feeding an output, and an op can close at most one open value, so
  a prefix with more open values than the remaining ops can close is abandoned.

The region's constants (and iotas) are free leaves, not ops: they do not count against the op limit.
A structure whose values compute every target output (same e-class, none per-iteration) with no dead
op is complete; its maps are resolved by :func:`prism_jax.search.maps.resolve_maps`."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Iterator, Sequence

from prism_jax.ir import Attrs, IRError, KernelGraph, Op, OpKind, TensorType
from prism_jax.ir.ops import ACCUMULATORS, ELEMENTWISE, REDUCTIONS, SOURCES, arity, infer_types

# binary ops whose operands may be swapped (broadcasting is symmetric too)
COMMUTATIVE = frozenset({OpKind.ADD, OpKind.MUL, OpKind.MAX, OpKind.MIN, OpKind.AND, OpKind.OR, OpKind.EQ, OpKind.NE})
from prism_jax.search.maps import BlockStructure, resolve_maps
from prism_jax.verify import AbstractTarget
from prism_jax.verify.egraph import Encoder, EncodingError, Ten, broadcast_copies, term_key, unit_dims

_STRUCTURAL = frozenset({OpKind.RESHAPE, OpKind.BROADCAST, OpKind.CONCAT, OpKind.SLICE, OpKind.CUSTOM_KERNEL})


@dataclasses.dataclass(frozen=True)
class EnumerationConfig:
    max_block_ops: int = 11  # ops in the block graph, constants not counted (Mirage's limit)
    max_accumulators: int = 3
    time_limit_s: float = 60.0
    # deepen at most this many ops past the smallest complete structure of a start point: loops,
    # accumulators and online-softmax rescaling cost a few ops more than the plain program
    depth_slack: int = 2


@dataclasses.dataclass
class EnumerationStats:
    expanded: int = 0
    ill_typed: int = 0
    pruned_abstract: int = 0
    pruned_duplicate: int = 0
    pruned_order: int = 0  # tuples checked one by one (those of a kind ruled out in bulk are not counted)
    pruned_phase: int = 0
    pruned_liveness: int = 0
    pruned_numerics: int = 0
    complete: int = 0
    seconds: float = 0.0
    timed_out: bool = False

    def add(self, other: "EnumerationStats") -> None:
        """Fold in another start point's counts (enumerated in another process)."""
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            setattr(self, field.name, (mine or theirs) if isinstance(mine, bool) else mine + theirs)


def vocabulary(reference: KernelGraph) -> list[tuple[OpKind, Attrs]]:
    """The (kind, attributes) alphabet: the region's own ops plus the loop accumulators."""
    seen: dict[tuple, None] = {}
    for op in reference.ops:
        if op.kind not in _STRUCTURAL and op.kind not in SOURCES:
            seen[(op.kind, op.attrs)] = None
    for kind in (OpKind.ACCUM_SUM, OpKind.ACCUM_MAX, OpKind.ACCUM_RESCALED_SUM):
        seen[(kind, Attrs())] = None
    return sorted(seen, key=lambda item: (item[0].value, str(item[1])))


def leaves(reference: KernelGraph) -> list[tuple[OpKind, Attrs]]:
    """The region's constants and iotas, each once: free operands of the enumerated ops."""
    return list(dict.fromkeys((op.kind, op.attrs) for op in reference.ops if op.kind in SOURCES))


@dataclasses.dataclass(frozen=True)
class _Value:
    type: TensorType
    units: tuple[bool, ...]
    copies: tuple[bool, ...]
    term: object
    text: object  # structural key of the term
    reach: frozenset[int]  # kernel inputs reached without crossing an accumulator
    post: bool  # computed after the loop
    position: int  # index of the defining op; -1 for inputs and leaves
    output: int | None  # the target output whose e-class it is in
    cls: object = None  # its e-class in the saturated target
    cid: int = -1  # identifies (term, type, units, copies): the memo key of ops reading it


@dataclasses.dataclass(frozen=True)
class _Partial:
    ops: tuple[tuple[OpKind, tuple[int, ...], Attrs], ...]
    suffix_max: tuple[tuple, ...]  # [i]: the largest key among ops i.. (for the canonical-order rule)
    values: tuple[_Value, ...]
    varying: frozenset[int]  # kernel inputs the loop must split (read by accumulated partial reductions)
    consumed: frozenset[int]
    accumulators: int
    fixed: int = 0  # leading ops taken whole from the region (a prologue), not counted as enumerated
    hidden: frozenset[int] = frozenset()  # a prologue's intermediate values: not operands of later ops


class _Extender:
    """Extends partial structures by one op, applying the per-op pruning rules."""

    def __init__(self, reference: KernelGraph, stats: EnumerationStats) -> None:
        self.reference = reference
        self.stats = stats
        self.target = AbstractTarget(reference)
        self.encoder = Encoder(abstract=True)
        self.num_inputs = len(reference.inputs)
        self.leaves = leaves(reference)
        # numerical safety: where the region only exponentiates shifted values (x - max, as softmax
        # does), so must the candidate, else a mathematically equal kernel could overflow
        self.guarded_exp = _exp_is_guarded(reference)
        self._typed: dict[tuple, tuple | None] = {}
        self._cids: dict[tuple, int] = {}
        self._judged: dict[object, tuple[bool, int | None]] = {}
        self._leaf_types = {(op.kind, op.attrs): reference.values[op.outputs[0]]
                            for op in reference.ops if op.kind in SOURCES}

    def start(self) -> _Partial:
        values = [self._source(k, t) for k, t in enumerate(self.reference.input_types)]
        for kind, attrs in self.leaves:
            values.append(self._leaf(kind, attrs, self._leaf_types[(kind, attrs)], len(values)))
        return _Partial((), (), tuple(values), frozenset(), frozenset(), 0)

    def _source(self, k: int, t: TensorType) -> _Value:
        term = self.encoder.leaf(f"in{k}", lambda: Ten.input(f"in{k}"))
        units = tuple(d == 1 for d in t.shape)
        copies = (False,) * t.rank
        return _Value(t, units, copies, term, term_key(term), frozenset({k}), False, -1, None,
                      cid=self._cid(term, t, units, copies))

    def _leaf(self, kind: OpKind, attrs: Attrs, t: TensorType, index: int) -> _Value:
        op = Op(kind, (), (index,), attrs)
        values = {index: t}
        units = {index: unit_dims(op, [], values)}
        term = self.encoder.op_term(op, [], values, units)
        copies = (False,) * t.rank
        admitted, _, cls = self.target.judge(term)
        cls = cls if admitted else term_key(term)
        return _Value(t, units[index], copies, term, term_key(term), frozenset(), False, -1, None, cls=cls,
                      cid=self._cid(term, t, units[index], copies))

    def extend(self, partial: _Partial, kind: OpKind, attrs: Attrs, args: tuple[int, ...],
               attrs_text: str | None = None) -> _Partial | None:
        """``partial`` with one more op, or None when a pruning rule rejects it. The canonical-order
        rule is the caller's: :func:`_ordered_arguments` applies it to whole argument lists (prologue
        ops, added with blank order keys, are exempt)."""
        stats, values = self.stats, partial.values
        key = (kind.value, args, str(attrs) if attrs_text is None else attrs_text)
        if kind == OpKind.EXP and self.guarded_exp and not self._is_op(partial, args[0], OpKind.SUB):
            stats.pruned_numerics += 1
            return None
        value = self._value(kind, attrs, args, values, len(partial.ops))
        if value is None:
            stats.ill_typed += 1
            return None
        varying = partial.varying
        if kind in ACCUMULATORS:
            varying = varying.union(*(self._direct_inputs(partial, p) for p in args))
        ops = partial.ops + ((kind, args, attrs),)
        # the earlier ops passed with partial.varying: only a grown set can fail them now
        first = 0 if len(varying) != len(partial.varying) else len(ops) - 1
        if not _phases_ok(ops, values + (value,), varying, first):
            stats.pruned_phase += 1
            return None
        verdict = self._judged.get(value.text)
        if verdict is None:  # the same expressions recur in many prefixes (and at every depth)
            verdict = self._judged[value.text] = self.target.judge(value.term)
        if not verdict[0]:
            stats.pruned_abstract += 1
            return None
        no_op = kind not in ACCUMULATORS and any(values[a].text == value.text for a in args)  # accumulators
        if no_op or any(  # are the identity on abstract expressions
                v.cls == verdict[2] and v.post == value.post for v in values[self.num_inputs:]):
            stats.pruned_duplicate += 1  # a no-op, or re-derives a value already there (same e-class and phase)
            return None
        value = dataclasses.replace(value, output=verdict[1], cls=verdict[2])
        suffix_max = tuple(max(k, key) for k in partial.suffix_max) + (key,)
        return _Partial(ops, suffix_max, values + (value,), varying, partial.consumed | set(args),
                        partial.accumulators + (kind in ACCUMULATORS), partial.fixed, partial.hidden)

    def with_prologues(self, root: _Partial, prologues: Sequence[tuple[Op, ...]]) -> _Partial | None:
        """``root`` with the region's prologue ops in front; their keys are the smallest possible, so
        the canonical-order rule never constrains later ops by them."""
        index = {v: k for k, v in enumerate(self.reference.inputs)}
        leaf_of = {leaf: self.num_inputs + k for k, leaf in enumerate(self.leaves)}
        for op in self.reference.ops:
            if op.kind in SOURCES:
                index[op.outputs[0]] = leaf_of[(op.kind, op.attrs)]
        partial = root
        for prologue in prologues:
            for op in prologue:
                args = tuple(index[v] for v in op.inputs)
                child = self.extend(dataclasses.replace(partial, suffix_max=((),) * len(partial.suffix_max)), op.kind,
                                    op.attrs, args)
                if child is None:
                    return None
                index[op.outputs[0]] = len(child.values) - 1
                partial = dataclasses.replace(child, suffix_max=((),) * len(child.suffix_max), fixed=len(child.ops))
            inner = {index[op.outputs[0]] for op in prologue[:-1]}
            partial = dataclasses.replace(partial, hidden=partial.hidden | inner)
        # sources the region reads only inside the chosen prologues are not operands of later ops either
        inside = {id(op) for prologue in prologues for op in prologue}
        outside = {v for op in self.reference.ops if id(op) not in inside for v in op.inputs}
        outside |= set(self.reference.outputs)
        private = {index[v] for v in index if index[v] < len(root.values) and v not in outside}
        return dataclasses.replace(partial, hidden=partial.hidden | private)

    @staticmethod
    def _is_op(partial: _Partial, value: int, kind: OpKind) -> bool:
        position = partial.values[value].position
        return position >= 0 and partial.ops[position][0] == kind

    def _direct_inputs(self, partial: _Partial, value: int) -> set[int]:
        """Kernel inputs read directly by the op defining ``value`` (a partial reduction being
        accumulated): they must vary with the loop, else every iteration would add the same partial."""
        position = partial.values[value].position
        if position < 0:
            return set()
        return {a for a in partial.ops[position][1] if a < self.num_inputs}

    def _value(self, kind: OpKind, attrs: Attrs, args: tuple[int, ...], values: tuple[_Value, ...],
               position: int) -> _Value | None:
        operands = tuple(values[a] for a in args)
        # the kind's value: an Enum member hashes in Python, and this runs ~10^5 times a second
        memo_key = (kind.value, attrs, tuple(v.cid for v in operands))
        if memo_key not in self._typed:  # building egglog terms is the costly part: once per expression
            self._typed[memo_key] = self._type_and_term(kind, attrs, operands)
        typed = self._typed[memo_key]
        if typed is None:
            return None
        out_type, units, copies, term, text, cid = typed
        accumulates = kind in ACCUMULATORS
        reach = frozenset() if accumulates else frozenset().union(*(v.reach for v in operands))
        post = accumulates or any(v.post for v in operands)
        return _Value(out_type, units, copies, term, text, reach, post, position, None, cid=cid)

    def _type_and_term(self, kind: OpKind, attrs: Attrs, operands: tuple[_Value, ...]):
        ids = tuple(range(len(operands)))
        index = len(operands)
        op = Op(kind, ids, (index,), attrs)
        try:
            out_type = infer_types(kind, attrs, [v.type for v in operands], "candidate op")
            types = dict(enumerate(v.type for v in operands))
            types[index] = out_type
            units = dict(enumerate(v.units for v in operands))
            units[index] = unit_dims(op, [v.units for v in operands], types)
            copies = broadcast_copies(op, [v.copies for v in operands], [v.units for v in operands], units[index])
            term = self.encoder.op_term(op, [v.term for v in operands], types, units)
        except (IRError, EncodingError):
            return None
        return out_type, units[index], copies, term, term_key(term), self._cid(term, out_type, units[index], copies)

    def _cid(self, term, t: TensorType, units: tuple, copies: tuple) -> int:
        return self._cids.setdefault((term_key(term), t, units, copies), len(self._cids))


def _exp_is_guarded(reference: KernelGraph) -> bool:
    defining = {op.outputs[0]: op.kind for op in reference.ops}
    exps = [op for op in reference.ops if op.kind == OpKind.EXP]
    return bool(exps) and all(defining.get(op.inputs[0]) == OpKind.SUB for op in exps)


def _phases_ok(ops, values, varying: frozenset[int], first: int = 0) -> bool:
    """No op in ``ops[first:]`` mixes a per-iteration value with an after-loop one; no accumulator
    reads an after-loop value (every op is rechecked when an accumulator makes more inputs
    loop-varying)."""
    for kind, args, _ in ops[first:]:
        if kind in ACCUMULATORS:
            if any(values[a].post for a in args):
                return False
            continue
        if any(values[a].post for a in args) and any(values[a].reach & varying for a in args):
            return False
    return True


def enumerate_structures(reference: KernelGraph, config: EnumerationConfig = EnumerationConfig(),
                         stats: EnumerationStats | None = None, only: int | None = None) -> Iterator[BlockStructure]:
    """Complete structures, deterministically, smallest first (iterative deepening: no deep dive
    into a wrong prefix). ``only`` restricts the search to one start point (see
    :func:`count_start_points`), with the whole time limit: the unit of parallel enumeration."""
    stats = stats if stats is not None else EnumerationStats()
    start = time.perf_counter()
    extender = _Extender(reference, stats)
    alphabet = [(kind, attrs, str(attrs), kind in ACCUMULATORS) for kind, attrs in vocabulary(reference)]
    has_square = any(kind == OpKind.SQUARE for kind, *_ in alphabet)
    num_outputs = len(reference.outputs)
    first_op = extender.num_inputs + len(extender.leaves)

    deadline = [start + config.time_limit_s]
    yielded: set[BlockStructure] = set()

    def emit(partial: _Partial) -> Iterator[BlockStructure]:
        """``partial`` as a structure when it is complete and new (the seed may equal an enumerated one)."""
        outputs = _complete(partial, first_op, num_outputs)
        structure = _structure(partial, outputs, extender.num_inputs, extender.leaves) if outputs else None
        if structure is not None and structure not in yielded:
            stats.complete += 1
            yielded.add(structure)
            yield structure

    def expand(partial: _Partial, depth: int) -> Iterator[BlockStructure]:
        if time.perf_counter() > deadline[0]:
            return
        stats.expanded += 1
        remaining = depth - (len(partial.ops) - partial.fixed) - 1  # ops still to add after the next one
        if remaining < 0:
            return
        operands = [v for v in range(len(partial.values)) if v not in partial.hidden]
        positions = [v.position for v in partial.values]
        for kind, attrs, attrs_text, accumulates in alphabet:
            if accumulates and partial.accumulators >= config.max_accumulators:
                continue
            for args in _ordered_arguments(kind, attrs_text, operands, positions, partial.suffix_max, has_square,
                                           stats):
                if accumulates and not _accumulates_partials(kind, args, partial):
                    stats.pruned_order += 1
                    continue
                child = extender.extend(partial, kind, attrs, args, attrs_text)
                if child is None:
                    continue
                if _open_values(child, first_op) - remaining > num_outputs:
                    stats.pruned_liveness += 1
                    continue
                if remaining == 0:
                    yield from emit(child)
                yield from expand(child, depth)

    try:
        # first the seed (the region itself as one kernel, complete without enumeration, so the plain fused
        # kernel is always screened), then the prologue combinations, most prologues first (the smallest
        # programs to find): that one gets half the time, the others equal shares of what is left (time a
        # start point does not use passes on); iterative deepening within each
        seed = extender.with_prologues(extender.start(), [tuple(op for op in reference.ops if op.kind not in SOURCES)])
        start_points = [seed] + _start_points(extender, reference)[::-1]
        if only is not None:
            start_points = start_points[only:only + 1]
        end = start + config.time_limit_s
        for k, root in enumerate(start_points):
            if root is None:
                continue
            if root is seed:
                yield from emit(root)
                continue
            share = 0.5 if k == 1 and len(start_points) > 2 else 1 / (len(start_points) - k)
            deadline[0] = time.perf_counter() + (end - time.perf_counter()) * share
            first_found = None
            for depth in range(1, config.max_block_ops + 1):
                if first_found is not None and depth > first_found + config.depth_slack:
                    break  # the ladder stops a few ops above the smallest complete structure
                before = stats.complete
                yield from expand(root, depth)
                if first_found is None and stats.complete > before:
                    first_found = depth
                if time.perf_counter() > deadline[0]:
                    stats.timed_out = True
                    break
    finally:
        stats.seconds = time.perf_counter() - start


def count_start_points(reference: KernelGraph) -> int:
    """How many start points :func:`enumerate_structures` walks: the region itself as a seed, then each
    combination of the region's prologues, most prologues first, down to the empty structure."""
    return 2 ** len(prologues(reference)) + 1


def _start_points(extender: _Extender, reference: KernelGraph) -> list[_Partial]:
    """The empty structure, then the structures that begin with some of the region's prologues."""
    root = extender.start()
    found = prologues(reference)
    points = [root]
    for size in range(1, len(found) + 1):
        for chosen in itertools.combinations(found, size):
            point = extender.with_prologues(root, chosen)
            if point is not None:
                points.append(point)
    return points


def prologues(reference: KernelGraph) -> list[tuple[Op, ...]]:
    """Row-local computations on the region's inputs (elementwise ops, reductions, transposes; at least
    one reduction): the ops between the inputs and a matmul operand, such as the RMSNorm of an
    activation or of Q and K; in a region without matmuls, those between the inputs and a value that an
    op combines with another input (a normalized tensor mixed into a residual). A kernel may compute
    them whole on its input tiles (when the reduced dims are not split, which verification checks), so
    the enumeration may start from them instead of rebuilding them op by op."""
    defining = {op.outputs[0]: op for op in reference.ops}
    matmuls = [op for op in reference.ops if op.kind == OpKind.MATMUL]
    if matmuls:
        operands = [v for op in matmuls for v in op.inputs]
    else:  # operands of a binary op whose other operand brings in another input
        operands = []
        for op in (op for op in reference.ops if len(op.inputs) == 2):
            first, second = (_sources(v, defining) for v in op.inputs)
            operands += [v for v, own, other in zip(op.inputs, (first, second), (second, first))
                         if own and not other <= own]
    found: dict[tuple, tuple[Op, ...]] = {}
    for operand in operands:
        ops = _ancestors(operand, defining)
        if ops is None or not all(o.kind in _ROW_LOCAL for o in ops):
            continue
        if sum(o.kind not in SOURCES for o in ops) >= 2 and any(o.kind in REDUCTIONS for o in ops):
            found.setdefault(tuple(o.outputs for o in ops), tuple(o for o in ops if o.kind not in SOURCES))
    return list(found.values())


_ROW_LOCAL = ELEMENTWISE | REDUCTIONS | SOURCES | {OpKind.TRANSPOSE}


def _sources(value: int, defining: dict) -> frozenset[int]:
    """The region inputs ``value`` is computed from."""
    seen, stack, inputs = set(), [value], set()
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if v in defining:
            stack.extend(defining[v].inputs)
        else:
            inputs.add(v)
    return frozenset(inputs)


def _ancestors(value: int, defining: dict) -> list[Op] | None:
    """The ops computing ``value`` from the region's inputs, in the region's order; None when a
    matmul is among them."""
    seen, stack = set(), [value]
    while stack:
        v = stack.pop()
        if v in seen or v not in defining:
            continue
        seen.add(v)
        if defining[v].kind == OpKind.MATMUL:
            return None
        stack.extend(defining[v].inputs)
    return [op for op in defining.values() if op.outputs[0] in seen]  # the region's order


def _ordered_arguments(kind: OpKind, attrs_text: str, operands: list[int], positions: list[int],
                       suffix_max: tuple[tuple, ...], square: bool, stats: EnumerationStats) -> list[tuple[int, ...]]:
    """The argument tuples of ``kind`` that pass the canonical-order rule (checked here, before any
    extension, because it rejects most tuples; kinds of a blocked prefix in bulk): an op whose last
    operand is defined at position p must have a key above every key from p + 1 on. ``suffix_max``
    never increases, so a prefix of positions has only larger kinds and rules out every tuple whose
    operands all come before it; the tuples kept keep their order."""
    kind_value = kind.value
    count = len(suffix_max)
    blocked = 0  # positions p + 1 < blocked: suffix_max[p + 1] has a larger kind
    while blocked < count and suffix_max[blocked] and suffix_max[blocked][0] > kind_value:
        blocked += 1
    kept = []
    for args in _argument_tuples(kind, operands, square, positions, blocked - 1):
        last = max(positions[a] for a in args)
        if last + 1 < count and suffix_max[last + 1] >= (kind_value, args, attrs_text):
            stats.pruned_order += 1
            continue
        kept.append(args)
    return kept


def _argument_tuples(kind: OpKind, operands: list[int], square: bool, positions: list[int] | None = None,
                     earliest: int = -1) -> Iterator[tuple[int, ...]]:
    """Operand tuples of ``kind``, in a fixed order; with ``positions``, only those with an operand
    defined at ``earliest`` or later."""
    if positions is not None and earliest > -1:
        late = [v for v in operands if positions[v] >= earliest]
        if not late:
            return
    else:
        late = operands
    count = arity(kind)
    if count == 1:
        for a in late:
            yield (a,)
    elif count == 2:
        for a in operands:
            for b in (operands if late is operands or positions[a] >= earliest else late):
                if kind == OpKind.ACCUM_RESCALED_SUM and a == b:
                    continue
                if kind in COMMUTATIVE and b < a:  # the same op with its operands swapped
                    continue
                if kind == OpKind.MUL and a == b and square:  # x * x is written square(x)
                    continue
                yield (a, b)


# what each accumulator may combine across iterations: partial results of a reduction along the loop
_PARTIALS = {OpKind.ACCUM_SUM: ({OpKind.REDUCE_SUM, OpKind.MATMUL},),
             OpKind.ACCUM_SUM_SQUARES: ({OpKind.REDUCE_SUM, OpKind.MATMUL},),
             OpKind.ACCUM_MAX: ({OpKind.REDUCE_MAX},),
             OpKind.ACCUM_RESCALED_SUM: ({OpKind.REDUCE_SUM, OpKind.MATMUL}, {OpKind.REDUCE_MAX})}


def _accumulates_partials(kind: OpKind, args: tuple[int, ...], partial: _Partial) -> bool:
    """Structural rule: an accumulator combines per-iteration partial reductions (a sum of partial
    sums or products, a max of partial maxes), never a raw tile, which would only repeat work the
    loop split cannot justify."""
    for a, allowed in zip(args, _PARTIALS[kind]):
        position = partial.values[a].position
        if position < 0 or partial.ops[position][0] not in allowed:
            return False
    return True


def _open_values(partial: _Partial, first_op: int) -> int:
    return sum(1 for v in range(first_op, len(partial.values)) if v not in partial.consumed)


def _complete(partial: _Partial, first_op: int, num_outputs: int) -> tuple[int, ...] | None:
    """Output values for every target output, when the newest value completes the set and no op is
    dead; an output may not be a per-iteration value."""
    found: dict[int, int] = {}
    for v in range(first_op, len(partial.values)):
        value = partial.values[v]
        per_iteration = not value.post and bool(value.reach & partial.varying)
        if value.output is not None and not per_iteration and value.output not in found:
            found[value.output] = v
    newest = len(partial.values) - 1
    if len(found) != num_outputs or newest not in found.values():
        return None
    outputs = tuple(found[k] for k in range(num_outputs))
    live = _live(partial, outputs, first_op)
    return outputs if len(live) == len(partial.ops) else None


def _live(partial: _Partial, outputs: tuple[int, ...], first_op: int) -> set[int]:
    live: set[int] = set()
    stack = list(outputs)
    while stack:
        v = stack.pop()
        if v in live or v < first_op:
            continue
        live.add(v)
        stack.extend(partial.ops[v - first_op][1])
    return live


def _structure(partial: _Partial, outputs: tuple[int, ...], num_inputs: int,
               leaf_ops: list[tuple[OpKind, Attrs]]) -> BlockStructure:
    """The block structure: the leaves it uses become constant ops in front of the enumerated ops."""
    first_op = num_inputs + len(leaf_ops)
    used = sorted({a for _, args, _ in partial.ops for a in args if num_inputs <= a < first_op})
    renumber = {v: v for v in range(num_inputs)}
    renumber.update({leaf: num_inputs + k for k, leaf in enumerate(used)})
    ops = [(leaf_ops[leaf - num_inputs][0], (), leaf_ops[leaf - num_inputs][1]) for leaf in used]
    for i, (kind, args, attrs) in enumerate(partial.ops):
        renumber[first_op + i] = num_inputs + len(ops)
        ops.append((kind, tuple(renumber[a] for a in args), attrs))
    return BlockStructure(num_inputs, tuple(ops), tuple(renumber[o] for o in outputs))


@dataclasses.dataclass
class FusedKernel:
    structure: BlockStructure
    graph: KernelGraph
    detail: str


def find_fused_kernels(reference: KernelGraph, grid_rank: int, config: EnumerationConfig = EnumerationConfig(),
                       max_structures: int = 50, stats: EnumerationStats | None = None) -> list[FusedKernel]:
    """Single-custom-kernel programs for ``reference``: enumerated structures whose maps resolve to a
    proved candidate (every proved map assignment is kept, in enumeration order)."""
    found = []
    for k, structure in enumerate(enumerate_structures(reference, config, stats)):
        if k >= max_structures:
            break
        for result in resolve_maps(structure, reference, grid_rank)[0]:
            found.append(FusedKernel(structure, result.graph, str(result.verdict)))
    return found
