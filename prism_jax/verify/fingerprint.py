"""Randomized fingerprint verification: evaluate reference and candidate on random inputs at several
concrete instantiations of the symbolic sizes, in float64 and — where every op is exact there — in
modular arithmetic over a prime field (Mirage's fingerprint). Fast ``not_equal`` with a
counterexample; passing is evidence, never a proof (the verdict stays ``unknown``)."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Mapping, Sequence

import numpy as np

from prism_jax.ir import (ConstraintSet, Divisible, Interpreter, IRError, KernelGraph, Mono, Op, OpKind,
                          TensorType, instantiate)
from prism_jax.ir.symbolic import evaluate as evaluate_size
from prism_jax.ir.symbolic import free_symbols
from prism_jax.verify.verdict import Counterexample, Status, Verdict

PRIME = 1_000_003  # residues < 2**20: products < 2**40, so sums of 2**23 products fit in int64


@dataclasses.dataclass(frozen=True)
class FingerprintConfig:
    trials: int = 3  # size instantiations
    inputs_per_trial: int = 1
    max_size_factor: int = 3  # grid dims / loop extents drawn from 1..this
    max_dim_multiple: int = 2  # data dims = lcm of their divisors × 1..this
    rtol: float = 1e-7
    atol: float = 1e-9
    seed: int = 0
    modular: bool = True


class FingerprintVerifier:
    name = "fingerprint"

    def __init__(self, config: FingerprintConfig = FingerprintConfig()) -> None:
        self.config = config

    def verify(self, reference: KernelGraph, candidate: KernelGraph) -> Verdict:
        start = time.perf_counter()
        problem = _interface_mismatch(reference, candidate)
        if problem:
            return Verdict(Status.NOT_EQUAL, self.name, time.perf_counter() - start, problem)
        rng = random.Random(self.config.seed)
        trials = 0
        size_sets = instantiations(reference, candidate, self.config, rng)
        draws = max(self.config.inputs_per_trial, -(-self.config.trials // max(1, len(size_sets))))
        for sizes in size_sets:
            for _ in range(draws):
                try:
                    # the sizes satisfy both graphs' constraints: the symbolic validation carries over
                    ref = instantiate(reference, sizes, validate=False)
                    cand = instantiate(candidate, sizes, validate=False)
                    found = self._compare(ref, cand, sizes, np.random.default_rng(rng.getrandbits(32)))
                except IRError as e:
                    return Verdict(Status.NOT_EQUAL, self.name, time.perf_counter() - start,
                                   f"candidate cannot run at sizes {dict(sizes)}: {e}")
                if found is not None:
                    return Verdict(Status.NOT_EQUAL, self.name, time.perf_counter() - start,
                                   f"outputs differ at sizes {dict(sizes)} ({found.arithmetic}, max error "
                                   f"{found.max_error:.3g})", found)
                trials += 1
        return Verdict(Status.UNKNOWN, self.name, time.perf_counter() - start,
                       f"fingerprints agree on {trials} random trial(s)", evidence=trials)

    def _compare(self, ref: KernelGraph, cand: KernelGraph, sizes, np_rng) -> Counterexample | None:
        inputs = [_random_input(t, np_rng) for t in ref.input_types]
        want = Interpreter(np.float64).run(ref, *inputs)
        got = Interpreter(np.float64).run(cand, *inputs)
        for w, g in zip(want, got):
            if w.shape != g.shape or not _close(w, g, self.config):
                err = float(np.max(np.abs(w - g))) if w.shape == g.shape else math.inf
                return Counterexample(dict(sizes), tuple(inputs), err, "float64")
        if self.config.modular and modular_exact(ref) and modular_exact(cand):
            residues = [np_rng.integers(0, PRIME, size=t.shape, dtype=np.int64) for t in ref.input_types]
            want, got = ModularInterpreter().run(ref, *residues), ModularInterpreter().run(cand, *residues)
            for w, g in zip(want, got):
                if not np.array_equal(w % PRIME, g % PRIME):
                    return Counterexample(dict(sizes), tuple(residues), float(np.count_nonzero(w != g)),
                                          f"mod {PRIME}")
        return None


def _close(want: np.ndarray, got: np.ndarray, config: FingerprintConfig) -> bool:
    if want.dtype == bool or got.dtype == bool:
        return np.array_equal(want, got)
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)):
        return False
    scale = max(1.0, float(np.max(np.abs(want[finite]), initial=0.0)))
    return np.allclose(want[finite], got[finite], rtol=config.rtol, atol=config.atol * scale)


def _interface_mismatch(reference: KernelGraph, candidate: KernelGraph) -> str:
    if len(reference.inputs) != len(candidate.inputs) or len(reference.outputs) != len(candidate.outputs):
        return (f"interfaces differ: reference takes {len(reference.inputs)} inputs and returns "
                f"{len(reference.outputs)}, candidate {len(candidate.inputs)} and {len(candidate.outputs)}")
    for k, (a, b) in enumerate(zip(reference.input_types, candidate.input_types)):
        if a != b:
            return f"input {k}: reference {a}, candidate {b}"
    return ""


def _random_input(t: TensorType, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(int(d) for d in t.shape)
    if t.dtype.is_float:
        # positive-leaning values keep sqrt/log/rsqrt of reductions well defined
        return rng.uniform(0.1, 1.0, size=shape) * rng.choice([1.0, 1.0, -1.0], size=shape)
    if t.dtype.value == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.integers(0, 8, size=shape)


# ---------------------------------------------------------------------------------------------
# size instantiation


def _graph_symbols(graph: KernelGraph) -> tuple[set[str], set[str]]:
    """(data-dim symbols: in input shapes; parameter symbols: grid dims, loop extents, others)."""
    data = {s for t in graph.input_types for d in t.shape for s in free_symbols(d)}
    params: set[str] = set()
    for op in graph.custom_kernels:
        for size in (*op.block.grid, op.block.forloop):
            params |= free_symbols(size)
    for t in graph.values:
        for d in t.shape:
            params |= free_symbols(d)
    return data, params - data


def _divisibility(graph: KernelGraph) -> ConstraintSet:
    items = []
    for op in graph.custom_kernels:
        items += list(op.block.constraints([graph.values[v] for v in op.inputs]))
    return ConstraintSet.of(items)


def instantiations(reference: KernelGraph, candidate: KernelGraph, config: FingerprintConfig,
                   rng: random.Random) -> list[Mapping[str, int]]:
    """Concrete size assignments that satisfy the candidate's constraints (distinct, small)."""
    data, params = set(), set()
    for g in (reference, candidate):
        d, p = _graph_symbols(g)
        data |= d
        params |= p
    params -= data
    constraints = _divisibility(candidate) & _divisibility(reference)
    found: list[dict[str, int]] = []
    for attempt in range(config.trials * 20):
        env = {p: rng.randint(1, config.max_size_factor) for p in sorted(params)}
        if attempt == 0:
            env = {p: min(2, config.max_size_factor) for p in sorted(params)}
        for d in sorted(data):
            env[d] = _dim_value(d, constraints, env, rng, config)
        try:
            ok = constraints.is_satisfied(env)
        except IRError:
            ok = False
        if ok and env not in found:
            found.append(env)
        if len(found) >= config.trials:
            break
    if not data and not params:
        return [{}]
    return found


def _dim_value(name: str, constraints: ConstraintSet, env: Mapping[str, int], rng: random.Random,
               config: FingerprintConfig) -> int:
    base = 1
    for c in constraints:
        if isinstance(c, Divisible) and isinstance(c.numerator, Mono) and c.numerator.free_symbols == {name}:
            try:
                divisor = evaluate_size(c.denominator, env)
                exponent_free = Mono.of(c.numerator).coeff
            except IRError:
                continue
            base = math.lcm(base, divisor // math.gcd(divisor, int(exponent_free)))
    return base * rng.randint(1, config.max_dim_multiple)


# ---------------------------------------------------------------------------------------------
# modular arithmetic


_MODULAR_OPS = frozenset({
    OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.NEG, OpKind.SQUARE, OpKind.MATMUL, OpKind.REDUCE_SUM,
    OpKind.BROADCAST, OpKind.RESHAPE, OpKind.TRANSPOSE, OpKind.CONCAT, OpKind.SLICE, OpKind.CONSTANT,
    OpKind.CUSTOM_KERNEL, OpKind.ACCUM_SUM, OpKind.ACCUM_SUM_SQUARES, OpKind.INTEGER_POW, OpKind.CONVERT,
})


def modular_exact(graph: KernelGraph) -> bool:
    """True when every op is a ring operation (so the prime-field fingerprint is exact)."""
    def ok(ops: Sequence[Op]) -> bool:
        for op in ops:
            if op.kind not in _MODULAR_OPS:
                return False
            if op.kind == OpKind.CONSTANT and not _integral_constant(op.attrs["value"]):
                return False
            if op.kind == OpKind.INTEGER_POW and op.attrs["exponent"] < 0:
                return False
            if op.block is not None and not ok(op.block.ops):
                return False
        return True
    return ok(graph.ops)


def _integral_constant(value) -> bool:
    if isinstance(value, Mono):
        return value.coeff.denominator == 1 and all(e > 0 for _, e in value.factors)
    return float(value).is_integer()


class ModularInterpreter(Interpreter):
    """The reference interpreter over Z/pZ (int64 residues)."""

    def __init__(self) -> None:
        super().__init__(np.int64)

    def _dtype(self, t: TensorType) -> np.dtype:
        return np.dtype(np.int64)

    def eval_op(self, op: Op, args: list[np.ndarray], out_type: TensorType) -> np.ndarray:
        kind = op.kind
        args = [a % PRIME for a in args]  # accumulators and output assembly add without reducing
        if kind in (OpKind.MATMUL, OpKind.REDUCE_SUM):
            return super().eval_op(op, args, out_type) % PRIME
        if kind == OpKind.MUL:
            return (args[0] * args[1]) % PRIME
        if kind == OpKind.SQUARE:
            return (args[0] * args[0]) % PRIME
        if kind == OpKind.INTEGER_POW:
            out = np.ones_like(args[0])
            for _ in range(op.attrs["exponent"]):
                out = (out * args[0]) % PRIME
            return out
        if kind == OpKind.CONSTANT:
            value = op.attrs["value"]
            return np.full(out_type.shape, int(float(value.coeff) if isinstance(value, Mono) else value) % PRIME)
        if kind in (OpKind.ADD, OpKind.SUB, OpKind.NEG):
            return super().eval_op(op, args, out_type) % PRIME
        if kind == OpKind.CONVERT:
            return args[0]
        return super().eval_op(op, args, out_type)

