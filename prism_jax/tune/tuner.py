"""The tuner: a region's verified symbolic candidates → one checked kernel (or XLA) at concrete shapes.

1. *Instantiate*: per candidate, the cheapest size assignments by the cost model under the backend's
   tile rules (:func:`prism_jax.cost.ranked_sizes`; Triton's power-of-two blocks where any assignment
   meets them).
2. *Build and check*: each shortlisted program is emitted (Pallas) and compared with the region's JAX
   reference on random inputs (float32 tight, 16-bit loose); one that fails is never used.
3. *Measure* (on a device that runs the kernels natively): the programs are built and checked in
   parallel threads, then they and XLA's own program for the region are timed one by one (device
   time: many calls in one jitted loop, :mod:`prism_jax.tune.measure`); the fastest wins, XLA included. In interpret mode nothing is timed: the
   cost model's best checked program is used, and its estimate is reported as an estimate.

The choice is cached on disk per (region with its shapes and dtypes, backend, device, versions).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import hashlib
import json
import logging
import math
import pathlib
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prism_jax import native
from prism_jax.codegen import cpp, cuda, pallas
from prism_jax.cost import TRITON, DeviceSpec, TileRules, estimate, ranked_sizes
from prism_jax.cost import model as cost_model
from prism_jax.cost import sizing as cost_sizing
from prism_jax.frontend.to_jax import USER_PRECISION, jax_dtype, kernel_graph_fn
from prism_jax.ir import DType, IRError, KernelGraph, content_hash, instantiate
from prism_jax.tune.measure import ChainTimer, Inputs

if TYPE_CHECKING:
    from prism_jax.cache import NullCache, ResultCache

log = logging.getLogger("prism_jax.tune")

CACHE_NAMESPACE = "tune/v1"


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """How many programs are built, checked and timed per region, and how."""

    candidates: int = 3  # verified candidates of the search considered, best-estimated first
    sizes_per_candidate: int = 3  # size assignments per candidate (the cost model's cheapest)
    launch_options: tuple[tuple[int, int], ...] = ((4, 2), (8, 3))  # (num_warps, num_stages) tried on GPUs
    cpu_threads: tuple[int, ...] = (0, 1)  # threads per native CPU kernel tried (0: XLA's intra-op pool size)
    cuda_threads: tuple[int, ...] = (128, 256)  # threads per block of the CUDA kernels tried
    warmup: int = 2
    iterations: int = 100  # timed calls per program on a device, in one jitted loop (tune/measure.py)
    loop_s: float = 0.1  # ... fewer where that many of XLA's calls for the region take longer than this
    repeats: int = 3  # rounds timing every program (XLA's too) once in turn, at least; the median counts
    max_repeats: int = 25  # rounds at most: short programs get more, up to timing_budget_s of timed loops
    timing_budget_s: float = 0.25  # timed loops per region (all programs) above which no more rounds
    min_speedup: float = 1.03  # a kernel replaces XLA only when this much faster (timing noise on shared hosts)
    finalists: int = 3  # the rounds' fastest programs, timed again with XLA's to pick the winner
    finalist_spread: float = 1.25  # ... those within this factor of the fastest
    final_budget_s: float = 0.5  # timed loops of that final (all its programs): its rounds as timing_budget_s's
    compile_workers: int = 4  # threads building and checking programs on a device
    seed: int = 0  # of the random check inputs
    use_cache: bool = True

    def key_fields(self) -> dict:
        return {"candidates": self.candidates, "sizes_per_candidate": self.sizes_per_candidate,
                "launch_options": [list(o) for o in self.launch_options], "cpu_threads": list(self.cpu_threads),
                "cuda_threads": list(self.cuda_threads),
                "min_speedup": self.min_speedup}


@dataclasses.dataclass(frozen=True)
class Choice:
    """What runs for one region at one shape: a kernel program (``graph`` set) or XLA (``graph`` None,
    ``reason`` says why)."""

    graph: KernelGraph | None  # instantiated
    candidate: int | None  # index among the search's candidates
    sizes: dict[str, int]
    options: Any  # the emitter's options (PallasOptions, CppOptions, CudaOptions); None for XLA
    estimate_s: float | None  # cost model, on the ranking device
    xla_estimate_s: float | None
    measured_s: float | None  # device time of the kernel (None: not measured)
    xla_measured_s: float | None
    max_error: float | None  # against the JAX reference on random inputs
    reason: str = ""
    cache_hit: bool = False

    @property
    def uses_kernel(self) -> bool:
        return self.graph is not None


def tolerance(dtypes: Sequence[DType]) -> float:
    """Relative error allowed against the reference (16-bit inputs round at every load and store)."""
    return 5e-2 if any(d.itemsize < 4 for d in dtypes if d.is_float) else 2e-4


def random_args(region: KernelGraph, seed: int) -> list[jax.Array]:
    """Check inputs of the region's input types (:func:`random_leaves`)."""
    return random_leaves([jax.ShapeDtypeStruct(tuple(int(d) for d in t.shape), jax_dtype(t))
                          for t in region.input_types], seed)


def random_leaves(avals: Sequence[Any], seed: int) -> list[jax.Array]:
    """Inputs of these shapes and dtypes: standard normal floats, small non-negative integers (indices
    and positions stay in range), random booleans. Drawn by numpy, not ``jax.random``, which compiles
    a program per shape (~0.3 s each on a 2-core host)."""
    rng = np.random.default_rng(seed)
    leaves = []
    for aval in avals:
        shape, dtype = tuple(aval.shape), jnp.dtype(aval.dtype)
        if jnp.issubdtype(dtype, jnp.floating):
            value = rng.standard_normal(shape, dtype=np.float32)
        elif dtype == jnp.bool_:
            value = rng.random(shape) < 0.5
        else:
            value = rng.integers(0, 4, shape)
        leaves.append(jnp.asarray(np.asarray(value).astype(dtype)))
    return leaves


def max_relative_error(got: Sequence[Any], expected: Sequence[Any]) -> float:
    """Largest |got − expected| over the scale of ``expected`` (max |expected|, at least 1), per output."""
    worst = 0.0
    for g, e in zip(got, expected):
        if np.shape(g) != np.shape(e) or np.asarray(g).dtype != np.asarray(e).dtype:
            return float("inf")
        g64, e64 = np.asarray(g, np.float64), np.asarray(e, np.float64)
        finite = np.isfinite(e64)
        if not np.array_equal(finite, np.isfinite(g64)):
            return float("inf")
        scale = max(1.0, float(np.max(np.abs(e64[finite]), initial=0.0)))
        worst = max(worst, float(np.max(np.abs(g64[finite] - e64[finite]), initial=0.0)) / scale)
    return worst


class Emitter(str, enum.Enum):
    """Which code generator builds the kernels."""

    PALLAS = "pallas"  # Pallas: Triton on GPUs, interpret mode on CPU
    CPP = "cpp"  # native C++ for the host CPU, called through XLA FFI
    CUDA = "cuda"  # CUDA C++ built by nvcc, called through XLA FFI on NVIDIA GPUs


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the kernels run: the ranking device's spec, whether kernels are interpreted (then nothing
    is timed), the tile rules the backend's compiler accepts, and the emitter."""

    name: str
    device: DeviceSpec
    interpret: bool
    rules: TileRules = TRITON
    emitter: Emitter = Emitter.PALLAS

    def build(self, graph: KernelGraph, options: Any) -> Callable[..., list]:
        """The JAX function of an instantiated program under ``options``."""
        if self.emitter == Emitter.CPP:
            return cpp.kernel_graph_function(graph, options)
        if self.emitter == Emitter.CUDA:
            return cuda.kernel_graph_function(graph, options)
        return pallas.kernel_graph_function(graph, options)

    def options_from(self, fields: dict) -> Any:
        options = {Emitter.CPP: cpp.CppOptions, Emitter.CUDA: cuda.CudaOptions}.get(self.emitter, pallas.PallasOptions)
        return options(**fields)


def tune_region(region: KernelGraph, candidates: Sequence[tuple[KernelGraph, dict[str, int]]], target: Target,
                config: TuneConfig = TuneConfig(), cache: "ResultCache | NullCache | None" = None) -> Choice:
    """The program to run for ``region`` (concrete) among ``candidates`` (symbolic graph, region sizes)."""
    key = _cache_key(region, candidates, target, config)
    if cache is not None and config.use_cache:
        stored = cache.get(CACHE_NAMESPACE, key)
        choice = _from_cache(stored, candidates, target) if stored is not None else None
        if choice is not None:  # the cost model may have changed since: estimate XLA afresh (cheap)
            choice = dataclasses.replace(choice, xla_estimate_s=xla_estimate_of(region, target.device))
        if choice is not None and choice.graph is not None:  # checked again before this process uses it
            checker = _Checker(region, config.seed, target)
            try:
                return dataclasses.replace(choice, max_error=checker.error(choice.graph, choice.options))
            except _CheckFailed as err:
                log.warning("the cached kernel for %s fails its check (%s); tuning again", region.name, err)
        elif choice is not None:
            return choice
    choice = _tune(region, candidates, target, config)
    if cache is not None and config.use_cache:
        cache.put(CACHE_NAMESPACE, key, _to_cache(choice))
    return choice


class _CheckFailed(Exception):
    pass


class _Checker:
    """Runs programs on the region's random check inputs and compares them with its JAX reference."""

    def __init__(self, region: KernelGraph, seed: int, target: Target) -> None:
        self.target = target
        self.reference = jax.jit(_flat(kernel_graph_fn(region)))
        # what runs if XLA keeps the region, and what kernels are timed against (the reference's
        # HIGHEST-precision dots are slower on XLA:CPU than the user's program's)
        self.xla = jax.jit(_flat(kernel_graph_fn(region, USER_PRECISION)))
        self.args = random_args(region, seed)
        self.expected = self.reference(*self.args)
        self.allowed = tolerance([t.dtype for t in region.input_types + region.output_types])

    def error(self, graph: KernelGraph, options: Any) -> float:
        return self.check(graph, options)[1]

    def check(self, graph: KernelGraph, options: Any) -> tuple[Callable, float]:
        """The program's jitted function and its error; raises ``_CheckFailed`` when it is not usable."""
        try:
            fn = jax.jit(_flat(self.target.build(graph, options)))
            got = fn(*self.args)
        except Exception as err:  # a kernel that does not build or run is not used
            raise _CheckFailed(f"{type(err).__name__}: {str(err)[:200]}") from err
        wrong = [f"{g.dtype}{list(g.shape)} for {e.dtype}{list(e.shape)}" for g, e in zip(got, self.expected)
                 if g.dtype != e.dtype or g.shape != e.shape]
        if wrong:
            raise _CheckFailed(f"returns {', '.join(wrong)}")
        error = max_relative_error(got, self.expected)
        if error > self.allowed:
            raise _CheckFailed(f"numerics off by {error:.2e} (allowed {self.allowed:.0e})")
        return fn, error


def _tune(region: KernelGraph, candidates, target: Target, config: TuneConfig) -> Choice:
    checker = _Checker(region, config.seed, target)
    xla_estimate = xla_estimate_of(region, target.device)
    shortlist, reasons = _shortlist(candidates[:config.candidates], target, config)
    programs = [(index, graph, ranked, options) for index, graph, ranked in shortlist
                for options in _launch_options(target, config)]
    checked = _check_all(checker, programs, target, config, reasons)
    if not checked:
        return _xla_choice(xla_estimate, "; ".join(reasons) or "no candidate")
    if target.interpret:  # interpreted kernels say nothing about speed: the cost model decides
        index, graph, ranked, options, _, error = checked[0]
        if ranked.seconds >= xla_estimate:
            return _xla_choice(xla_estimate, f"the cost model estimates XLA faster ({xla_estimate * 1e6:.1f} µs vs "
                               f"{ranked.seconds * 1e6:.1f} µs)")
        return Choice(graph, index, dict(ranked.sizes), options, ranked.seconds, xla_estimate, None, None, error)

    programs = [checker.xla] + [fn for *_, fn, _ in checked]
    xla_time, *times = _device_times(programs, checker.args, config)
    log.debug("%s: XLA %.1f µs; %s", region.name, xla_time * 1e6, "; ".join(
        f"candidate {index} {ranked.sizes} {options}: {t * 1e6:.1f} µs"
        for (index, _, ranked, options, _, _), t in zip(checked, times)))
    finalists = _finalists(times, config)
    chosen, best_time = finalists[0], times[finalists[0]]
    reason = _not_clearly_faster(best_time, xla_time, config)
    if reason is None:
        # the best of several noisy timings is biased low (and a noisy moment can favour any program):
        # the fastest few are timed again with XLA's program, in rounds of their own (a 50 µs kernel
        # gets ~10), and the winner of that must beat XLA (lora float32 once won 276 vs 347 µs and then
        # ran 300 µs to XLA's 250 in the benchmark; attention bfloat16 took sizes running 101 µs in one
        # tuning, 54-66 in others)
        final = dataclasses.replace(config, timing_budget_s=config.final_budget_s)
        xla_time, *final_times = _device_times([checker.xla] + [checked[i][4] for i in finalists], checker.args,
                                               final)
        log.debug("%s: final: XLA %.1f µs; %s", region.name, xla_time * 1e6,
                  "; ".join(f"{checked[i][2].sizes} {checked[i][3]}: {t * 1e6:.1f} µs"
                            for i, t in zip(finalists, final_times)))
        winner = min(range(len(finalists)), key=final_times.__getitem__)
        chosen, best_time = finalists[winner], final_times[winner]
        reason = _not_clearly_faster(best_time, xla_time, config, again=True)
    if reason is not None:
        return _xla_choice(xla_estimate, reason, xla_time)
    index, graph, ranked, options, fn, error = checked[chosen]
    return Choice(graph, index, dict(ranked.sizes), options, ranked.seconds, xla_estimate, best_time, xla_time, error)


def _finalists(times: Sequence[float], config: TuneConfig) -> list[int]:
    """Indices of the programs timed again: the fastest, and up to ``finalists - 1`` more within
    ``finalist_spread`` of it, fastest first."""
    order = sorted(range(len(times)), key=times.__getitem__)
    fastest = times[order[0]]
    return [i for i in order[:max(1, config.finalists)] if times[i] <= config.finalist_spread * fastest]


def _not_clearly_faster(kernel_s: float, xla_s: float, config: TuneConfig, again: bool = False) -> str | None:
    """Why XLA stays (None: the kernel is at least ``min_speedup`` times faster)."""
    if kernel_s * config.min_speedup < xla_s:
        return None
    when = " timed again against the winner" if again else ""
    if kernel_s >= xla_s:
        return f"XLA is faster{when} ({xla_s * 1e6:.1f} µs vs {kernel_s * 1e6:.1f} µs)"
    return (f"the kernel is not clearly faster{when} ({kernel_s * 1e6:.1f} µs vs XLA's {xla_s * 1e6:.1f} µs; "
            f"it must be {config.min_speedup:g}x)")


def _device_times(fns: Sequence[Callable], args: Sequence[Any], config: TuneConfig) -> list[float]:
    """Seconds per call of each program: after a warm-up each, rounds that time every program once in
    turn (A, B, C, A, B, C, ...; each timed loop right after an untimed one, :func:`_settled`), so a
    noisy moment of a shared machine hits them all; the median round counts. At least ``repeats`` rounds, more while they fit ``timing_budget_s`` (the first
    round tells how long one takes; up to ``max_repeats``): the median of a few ~2 ms loops of a
    20 µs kernel was too noisy to rank thread counts. One at a time: timings must not overlap.
    ``fns[0]`` (XLA's program, run before) sets the calls per loop (:func:`_calls_per_loop`)."""
    iterations = _calls_per_loop(fns[0], args, config)
    inputs = Inputs(args)  # one copy, which every program's runs donate and pass on
    timers = [ChainTimer(fn, args, iterations=iterations, inputs=inputs) for fn in fns]
    for timer in timers:
        for _ in range(max(1, config.warmup)):
            timer()
    rounds = [[_settled(timer) for timer in timers]]
    round_s = 2 * sum(rounds[0]) * iterations  # each timed loop and its settling run
    wanted = math.floor(config.timing_budget_s / round_s) if round_s > 0 else config.max_repeats
    for _ in range(min(max(config.repeats, wanted), max(config.repeats, config.max_repeats)) - 1):
        rounds.append([_settled(timer) for timer in timers])
    return [float(np.median(column)) for column in zip(*rounds)]


def _settled(timer: Callable[[], float]) -> float:
    """A timed run of ``timer``'s loop right after an untimed one, so it starts in its own steady state
    rather than in the last program's wake: XLA:CPU's intra-op pool keeps a thread spinning for ~5-9 ms
    after a program that used it, which on 2 cores cost the next program's 20 ms loop ~9 ms (GQA float32
    after XLA's: 2632 vs 1759 µs per call), a bias against whichever kernel is timed right after XLA."""
    timer()
    return timer()


def _calls_per_loop(reference: Callable, args: Sequence[Any], config: TuneConfig) -> int:
    """``config.iterations``, or fewer where that many calls of ``reference`` (compiled and run before)
    take over ``config.loop_s``: a 10 ms region timed in loops of 100 calls spent a minute tuning
    (gated_mlp: 2 warm-ups and 3 rounds of ten programs); loops of 10 calls chose kernels as fast."""
    start = time.perf_counter()
    jax.block_until_ready(reference(*args))
    one_call_s = time.perf_counter() - start
    return max(1, min(config.iterations, math.ceil(config.loop_s / max(one_call_s, 1e-9))))


def _check_all(checker: "_Checker", programs: list, target: Target, config: TuneConfig, reasons: list[str]) -> list:
    """Build and check programs: in interpret mode one by one until the first passes (nothing is timed);
    on a device all of them, compiled in parallel threads."""

    def check(program) -> tuple | None:
        index, graph, ranked, options = program
        try:
            fn, error = checker.check(graph, options)
        except _CheckFailed as err:
            reasons.append(f"candidate {index} {ranked.sizes}: {err}")
            return None
        return index, graph, ranked, options, fn, error

    if target.interpret:
        for program in programs:
            found = check(program)
            if found is not None:
                return [found]
        return []
    with concurrent.futures.ThreadPoolExecutor(max(1, config.compile_workers)) as pool:
        return [found for found in pool.map(check, programs) if found is not None]


def xla_estimate_of(region: KernelGraph, device: DeviceSpec) -> float:
    return estimate(region, device).seconds  # the region's predefined ops, fused as XLA fuses them


def _flat(fn: Callable) -> Callable:
    return lambda *args: tuple(fn(*args))


def _launch_options(target: Target, config: TuneConfig) -> list[Any]:
    if target.emitter == Emitter.CPP:  # one compiled kernel serves every thread count (an FFI attribute)
        return [cpp.CppOptions(threads=t) for t in dict.fromkeys(config.cpu_threads or (0,))]
    if target.emitter == Emitter.CUDA:
        return [cuda.CudaOptions(threads=t) for t in dict.fromkeys(config.cuda_threads or (cuda.CudaOptions().threads,))]
    if target.interpret:
        return [pallas.PallasOptions(interpret=True)]
    return [pallas.PallasOptions(num_warps=w, num_stages=s) for w, s in config.launch_options]


def _shortlist(candidates, target: Target, config: TuneConfig) -> tuple[list, list[str]]:
    """(candidate index, instantiated graph, ranked sizes), cheapest first over all candidates."""
    items, reasons = [], []
    for index, (graph, sizes) in enumerate(candidates):
        ranked = ranked_sizes(graph, target.device, sizes, config.sizes_per_candidate, rules=target.rules)
        if not ranked and target.interpret:  # interpret mode runs any tile; say it would not lower for Triton
            ranked = ranked_sizes(graph, target.device, sizes, config.sizes_per_candidate,
                                  rules=dataclasses.replace(target.rules, power_of_two_blocks=False))
            if ranked:
                reasons.append(f"candidate {index}: no power-of-two tiling (would not lower for Triton)")
        if not ranked:
            reasons.append(f"candidate {index}: no size assignment fits the {target.name} tile rules")
        for r in ranked:
            try:
                items.append((r.key, index, instantiate(graph, {**sizes, **r.sizes}), r))
            except IRError as err:
                reasons.append(f"candidate {index} {r.sizes}: {err}")
    items.sort(key=lambda item: (item[0], item[1]))
    return [(index, graph, r) for _, index, graph, r in items], reasons


def _xla_choice(xla_estimate: float, reason: str, xla_time: float | None = None) -> Choice:
    return Choice(None, None, {}, None, None, xla_estimate, None, xla_time, None, reason)


def _cache_key(region: KernelGraph, candidates, target: Target, config: TuneConfig) -> str:
    text = json.dumps({"region": content_hash(region), "candidates": [content_hash(g) for g, _ in candidates],
                       "target": target.name, "device": target.device.name, "interpret": target.interpret,
                       "emitter": target.emitter.value, "code": _code_fingerprint(target),
                       "rules": dataclasses.asdict(target.rules), "jax": jax.__version__,
                       "config": config.key_fields()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _code_fingerprint(target: Target) -> str:
    """The emitter's source (and the C++ runtime headers) and the cost model that shortlists sizes: a
    changed code generator or ranking tunes afresh."""
    if target.emitter == Emitter.CPP:
        files = [pathlib.Path(cpp.emit.__file__), *sorted(native.runtime_include_dir().glob("prism_cpu*.h"))]
    elif target.emitter == Emitter.CUDA:
        files = [pathlib.Path(cpp.emit.__file__), pathlib.Path(cuda.emit.__file__)]
    else:
        files = [pathlib.Path(pallas.emit.__file__)]
    files += [pathlib.Path(cost_model.__file__), pathlib.Path(cost_sizing.__file__)]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


def _to_cache(choice: Choice) -> dict:
    return {"candidate": choice.candidate, "sizes": choice.sizes, "options": dataclasses.asdict(choice.options) if choice.options is not None else None,
            "estimate_s": choice.estimate_s, "xla_estimate_s": choice.xla_estimate_s,
            "measured_s": choice.measured_s, "xla_measured_s": choice.xla_measured_s,
            "max_error": choice.max_error, "reason": choice.reason}


def _from_cache(stored: dict, candidates, target: Target) -> Choice | None:
    """The stored choice rebuilt (its graph instantiated again); None when it does not read back."""
    try:
        graph = None
        if stored["candidate"] is not None:
            symbolic, sizes = candidates[stored["candidate"]]
            graph = instantiate(symbolic, {**sizes, **stored["sizes"]})
        options = target.options_from(stored["options"]) if stored["options"] is not None else None
        return Choice(graph, stored["candidate"], dict(stored["sizes"]), options,
                      stored["estimate_s"], stored["xla_estimate_s"], stored["measured_s"],
                      stored["xla_measured_s"], stored["max_error"], stored["reason"], cache_hit=True)
    except (KeyError, IndexError, TypeError, ValueError, IRError) as err:
        log.warning("ignoring an unreadable cached tuning result (%s); tuning again", err)
        return None
