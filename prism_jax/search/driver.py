"""The search of one region, end to end.

1. *Symbolize*: the region's dims become size symbols (equal dims share one), and constants that
   equal a dim (a mean's ``1/d``) become that symbol, so one search serves every shape of the region
   and its cache key holds no sizes.
2. *Enumerate* block-graph structures (:mod:`prism_jax.search.enumerate`) within a share of the time
   limit.
3. *Instantiate maps* of each structure (:mod:`prism_jax.search.maps`) and screen every assignment
   with the fingerprint (random inputs; refutes wrong ones in milliseconds).
4. *Rank* the survivors by the cost model at the region's shapes (:mod:`prism_jax.cost.sizing`).
5. *Prove* them with the e-graph, best first, until enough are proved; only proved candidates are
   returned.

Results are deterministic: every phase walks its inputs in a fixed order, and ties are broken by
enumeration order."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import pickle
import time
from typing import TYPE_CHECKING, Callable, Iterator

from prism_jax.cost import GPUS, H100_SXM, DeviceSpec, Ranked, best_sizes, host_cpu, memory_floor_seconds
from prism_jax.ir import (IRError, KernelGraph, OpKind, content_hash, format_kernel_graph, from_json, instantiate,
                          to_json)
from prism_jax.search.compose import MIN_PART_S, compose
from prism_jax.search.enumerate import EnumerationConfig, EnumerationStats, count_start_points, enumerate_structures
from prism_jax.search.maps import build_candidate, parallel_assignments
from prism_jax.search.pool import shared_pool
from prism_jax.search.problem import SearchProblem
from prism_jax.search.split import is_split, split_candidate
from prism_jax.search.symbolize import symbolize
from prism_jax.verify import EGraphConfig, EGraphVerifier, FingerprintConfig, FingerprintVerifier, Status, Verdict

if TYPE_CHECKING:
    from prism_jax.cache import NullCache, ResultCache

log = logging.getLogger("prism_jax.search")

HOST = "host"
COMPOSED = -1  # the structure index of a program composed from parts
MAX_FAILED_PROOFS = 3  # per program shape (one kernel / split in two) before its other candidates are skipped


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Limits of the symbolic search (defaults near Mirage's) and what ranks its results."""

    max_block_ops: int = 11  # enumerated block-graph ops, constants not counted
    max_accumulators: int = 3
    max_kernels: int = 5  # custom kernels of a program composed from parts (1: one-kernel programs only)
    depth_slack: int = 2  # enumerate at most this many ops past a start point's smallest complete structure
    time_limit_s: float = 60.0  # the region's one-kernel search, returning the best found so far when it
    # runs out; composing parts (when no one kernel covers the region) gets twice as much
    enumeration_share: float = 0.55  # of the time limit, for enumerating structures
    screening_share: float = 0.85  # of the time limit, by when map screening stops (ranking, proofs follow)
    max_structures: int = 400
    max_candidates: int = 3  # proved candidates kept per region
    device: str = H100_SXM.name  # the cost model's device for ranking: a GPU name or "host"
    egraph_seconds: float = 5.0  # per proof attempt
    use_cache: bool = True
    progress: bool = True
    workers: int = 0  # processes for the enumeration; 0: one per core (1: in this process)

    def worker_count(self) -> int:
        if self.workers > 0:
            return self.workers
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def device_spec(self) -> DeviceSpec:
        if self.device == HOST:
            return host_cpu()
        if self.device not in GPUS:
            raise ValueError(f"SearchConfig.device={self.device!r}: use 'host' or one of {sorted(GPUS)}")
        return GPUS[self.device]

    def enumeration_config(self, time_limit_s: float) -> EnumerationConfig:
        return EnumerationConfig(self.max_block_ops, self.max_accumulators, time_limit_s, self.depth_slack)

    def key_fields(self) -> dict:
        """The fields that change what a search finds (the cache key includes them)."""
        return {"max_block_ops": self.max_block_ops, "max_accumulators": self.max_accumulators,
                "max_kernels": self.max_kernels,
                "depth_slack": self.depth_slack,
                "max_structures": self.max_structures, "max_candidates": self.max_candidates,
                "device": self.device}


@dataclasses.dataclass
class SearchStats:
    """What each phase did: counts and seconds."""

    enumeration: EnumerationStats = dataclasses.field(default_factory=EnumerationStats)
    structures: int = 0
    assignments: int = 0
    ill_typed: int = 0
    refuted: int = 0
    plausible: int = 0
    split_forms: int = 0  # two-kernel forms built from plausible single kernels
    composed: int = 0  # kernel graphs joined from separately searched parts
    never_fits: int = 0  # tiles exceed on-chip memory at every size
    no_fit: int = 0
    sent_to_egraph: int = 0
    proved: int = 0
    unknown: int = 0
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    timed_out: bool = False
    time_limit_s: float = 0.0  # the limit it ran under: a cached timed-out result is not reused under a longer one

    def rows(self) -> list[tuple[str, str]]:
        e = self.enumeration
        return [("structures enumerated (complete)", str(self.structures)),
                ("  partial structures expanded", str(e.expanded)),
                ("  pruned: ill-typed", str(e.ill_typed)),
                ("  pruned: abstract expression", str(e.pruned_abstract)),
                ("  pruned: canonical order", str(e.pruned_order)),
                ("  pruned: duplicate value", str(e.pruned_duplicate)),
                ("  pruned: phase (loop/after-loop)", str(e.pruned_phase)),
                ("  pruned: liveness", str(e.pruned_liveness)),
                ("  pruned: numerics (unshifted exp)", str(e.pruned_numerics)),
                ("map assignments", str(self.assignments)),
                ("  ill-typed", str(self.ill_typed)),
                ("  pruned: exceeds on-chip memory at every size", str(self.never_fits)),
                ("  sent to fingerprint", str(self.assignments - self.ill_typed)),
                ("  two-kernel split forms built", str(self.split_forms)),
                ("  refuted by fingerprint", str(self.refuted)),
                ("  no size fits on chip", str(self.no_fit)),
                ("kernel graphs composed from parts", str(self.composed)),
                ("sent to e-graph", str(self.sent_to_egraph)),
                ("  proved", str(self.proved)),
                ("  unknown (not proved in time)", str(self.unknown)),
                *((f"seconds: {phase}", f"{s:.2f}") for phase, s in self.seconds.items()),
                ("timed out", "yes" if self.timed_out else "no")]

    def table(self) -> str:
        width = max(len(name) for name, _ in self.rows())
        return "\n".join(f"{name:<{width}}  {value:>10}" for name, value in self.rows())


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A verified program for a region: symbolic in the region's sizes and in its grid/loop extents."""

    graph: KernelGraph
    verdict: Verdict
    ranked: Ranked  # cost estimate at the region's shapes, with the sizes that reach it
    structure: int  # its structure's index in enumeration order

    @property
    def num_kernels(self) -> int:
        return sum(op.kind not in (OpKind.RESHAPE, OpKind.CONSTANT) for op in self.graph.ops)

    def __str__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in sorted(self.ranked.sizes.items()))
        return (f"{format_kernel_graph(self.graph)}\n# {self.verdict}\n# {self.ranked.estimate} with {sizes}")


@dataclasses.dataclass
class RegionSearch:
    name: str
    reference: KernelGraph  # the region, symbolized
    sizes: dict[str, int]  # the region's shapes as values of the symbols
    candidates: list[Candidate]
    stats: SearchStats
    cache_hit: bool = False

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@dataclasses.dataclass
class SearchResult:
    """The search of every region of a traced program."""

    regions: list[RegionSearch]

    def table(self) -> str:
        """One line per region: its best candidate, kernels, estimate, proof, search time, cache."""
        rows = [("region", "candidates", "kernels", "estimate", "proof", "search s", "cache")]
        for r in self.regions:
            best = r.best
            seconds = r.stats.seconds.get("total", sum(r.stats.seconds.values()))
            rows.append((r.name, str(len(r.candidates)), str(best.num_kernels) if best else "-",
                         f"{best.ranked.seconds * 1e6:.1f} µs" if best else "-",
                         best.verdict.method if best else "-", f"{seconds:.2f}", "hit" if r.cache_hit else "miss"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)

    def __str__(self) -> str:
        parts = [self.table()]
        for r in self.regions:
            parts.append(f"\n== {r.name}: {len(r.candidates)} verified candidate(s)")
            parts.extend(str(c) for c in r.candidates[:1])
        return "\n".join(parts)


Progress = Callable[[str, int, int], None]  # (phase, done, total)


CACHE_NAMESPACE = "search/v1"
# the proved candidates of a region's float32 core (SearchProblem.core): a bfloat16 or float16 region
# computes the same core as its float32 twin, so either one's search serves the other
CORE_NAMESPACE = "search-core/v1"


def cache_key(symbolic: KernelGraph, config: SearchConfig) -> str:
    """The region's symbolized graph (names excluded) and the config fields that change results: no
    sizes, so every shape of the region shares the entry."""
    text = json.dumps({"graph": content_hash(symbolic), "config": config.key_fields()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def search_region(region: KernelGraph, config: SearchConfig = SearchConfig(),
                  progress: Progress | None = None, cache: "ResultCache | NullCache | None" = None,
                  sizes: dict[str, int] | None = None, deadline: float | None = None) -> RegionSearch:
    """Verified candidates for one region, best-estimated first (see the module docstring). With a
    cache, a region searched before (at any shape) is only re-ranked at its shapes. A region already in
    size symbols (a part of a symbolized region) comes with the ``sizes`` its symbols stand for. When no
    one kernel covers the region its parts are searched (composition) for up to twice the time limit,
    or until ``deadline`` (a ``time.perf_counter()`` value: a part's search ends by its composed region's)."""
    start = time.perf_counter()
    symbolic, sizes = (region, dict(sizes)) if sizes is not None else symbolize(region)
    key = cache_key(symbolic, config)
    if cache is not None:
        stored = cache.get(CACHE_NAMESPACE, key)
        if stored is not None:
            hit = _from_cache(stored, symbolic, sizes, config)
            if hit is not None:
                hit.stats.seconds = {"cache lookup + re-rank": time.perf_counter() - start}
                return hit
    found = _search(region.name, symbolic, sizes, config, progress, start, cache,
                    math.inf if deadline is None else deadline)
    log.debug("%s: %d candidate(s) of its own (one or two kernels) in %.1f s (limit %.1f s, timed out: %s)",
              region.name, len(found.candidates), time.perf_counter() - start, config.time_limit_s,
              found.stats.timed_out)
    compose_s = 2 * config.time_limit_s if deadline is None else deadline - time.perf_counter()
    if config.max_kernels > 1 and compose_s > 0 and (not found.candidates or _falls_short(found, config)):
        _compose(found, symbolic, config, cache, compose_s, progress)
        # only a composed result needs its own entry: any other is its core's entry (CORE_NAMESPACE)
        # assembled again. A timed-out search is stored too: its best so far, with timed_out in its stats
        if cache is not None:
            cache.put(CACHE_NAMESPACE, key,
                      _to_cache([(c.graph, c.verdict, c.structure) for c in found.candidates], found.stats))
    return found


SHORT_OF_FLOOR = 1.5  # a best one-kernel program estimated this many times the region's memory floor


def _falls_short(found: "RegionSearch", config: SearchConfig) -> bool:
    """Whether the best one-kernel program is estimated well above the region's memory floor -- it reads
    its inputs more than once, or runs on fewer blocks than the device has units (a decode MLP as one
    kernel: each block recomputes the whole hidden layer, or one block computes it), so programs of
    several kernels may do better and are composed too (the tuner times both). Not when the best is
    already a program of several kernels (the split-KV attention the search finds itself), and only for
    the host CPU, whose few cores and XLA dots far from the roofline this is for: on a GPU it composed
    QK-norm attention for 75 s (its one flash kernel leaves SMs idle; the split forms are the answer)."""
    best = found.best
    if (config.device != HOST or best is None or len(best.graph.custom_kernels) != 1
            or sum(op.kind == OpKind.MATMUL for op in found.reference.ops) < 2):
        return False
    floor = memory_floor_seconds(instantiate(found.reference, found.sizes), config.device_spec())
    return best.ranked.seconds > SHORT_OF_FLOOR * floor


def _to_cache(candidates: list[tuple[KernelGraph, Verdict, str]], stats: SearchStats) -> dict:
    """A cache entry: proved (graph, proof, structure) triples and the search's stats."""
    return {"candidates": [{"graph": to_json(graph), "method": verdict.method, "detail": verdict.detail,
                            "proof_seconds": verdict.seconds, "structure": structure}
                           for graph, verdict, structure in candidates],
            "stats": dataclasses.asdict(stats)}


def _from_cache(stored: dict, symbolic: KernelGraph, sizes: dict[str, int], config: SearchConfig,
                problem: SearchProblem | None = None) -> RegionSearch | None:
    """Cached candidates re-ranked at this region's shapes; None when the entry does not read back, or
    when that search timed out under a shorter limit than ``config``'s (more time may find more).
    With ``problem`` the entry holds core candidates (CORE_NAMESPACE), assembled into this region."""
    device = config.device_spec()
    try:
        candidates = []
        for item in stored["candidates"]:
            graph = from_json(item["graph"])
            verdict = Verdict(Status.EQUAL, item["method"], item["proof_seconds"], item["detail"])
            if problem is not None:
                graph, verdict = problem.assemble(graph), _in_region(verdict, problem)
            cost = best_sizes(graph, device, sizes)
            if cost is None:
                continue
            candidates.append(Candidate(graph, verdict, cost, item["structure"]))
        stats_fields = dict(stored["stats"])
        stats_fields["enumeration"] = EnumerationStats(**stats_fields["enumeration"])
        stats = SearchStats(**stats_fields)
    except (KeyError, TypeError, ValueError, IRError) as err:
        log.warning("ignoring an unreadable cached search result (%s); searching again", err)
        return None
    if stats.timed_out and stats.time_limit_s < config.time_limit_s:
        log.debug("%s: the cached search timed out at %.1f s; searching again with %.1f s", symbolic.name,
                  stats.time_limit_s, config.time_limit_s)
        return None
    candidates.sort(key=_best_first)
    return RegionSearch(symbolic.name, symbolic, sizes, candidates, stats, cache_hit=True)


def _best_first(candidate: Candidate) -> tuple:
    """The order of a region's candidates: cheapest estimate first, then structure."""
    return candidate.ranked.key, candidate.structure


def _in_region(verdict: Verdict, problem: SearchProblem) -> Verdict:
    """A core candidate's proof as it holds for the region's program."""
    if not problem.converts_erased:  # proved on the float32 forms; the kernels convert at load/store
        return verdict
    return dataclasses.replace(verdict, detail=f"{verdict.detail}; in float32 with the region's float converts "
                                               "erased (equal up to rounding)")


def _compose(found: "RegionSearch", symbolic: KernelGraph, config: SearchConfig, cache, budget_s: float,
             progress: Progress | None = None) -> None:
    """Nothing fused the whole region: split it into parts searched on their own (see compose.py) within
    ``budget_s`` seconds (progress: phase "compose s", seconds spent of them)."""
    start = time.perf_counter()
    part_config = dataclasses.replace(config, max_kernels=config.max_kernels - 1, progress=False)

    def search_part(part: KernelGraph, seconds: float) -> RegionSearch:
        """Half the part's time for its one-kernel search, the rest (if it needs it) to compose it."""
        limit = min(seconds, config.time_limit_s) / 2
        return search_region(part, dataclasses.replace(part_config, time_limit_s=limit), None, cache, found.sizes,
                             deadline=time.perf_counter() + seconds)

    device = config.device_spec()
    composed = compose(symbolic, search_part, lambda graph: best_sizes(graph, device, found.sizes),
                       config.max_kernels, budget_s,
                       None if progress is None else lambda spent, budget: progress("compose s", spent, budget))
    for graph, verdict, cost in composed:
        found.candidates.append(Candidate(graph, verdict, cost, COMPOSED))
        found.stats.composed += 1
    found.candidates.sort(key=_best_first)  # beside a one-kernel program well above its floor
    # the parts had the whole budget: more time might compose more (a longer limit searches again)
    found.stats.timed_out |= time.perf_counter() - start > budget_s - MIN_PART_S
    found.stats.seconds["compose"] = time.perf_counter() - start
    found.stats.seconds["total"] = found.stats.seconds.get("total", 0.0) + found.stats.seconds["compose"]


def _search(name: str, symbolic: KernelGraph, sizes: dict[str, int], config: SearchConfig,
            progress: Progress | None, start: float, cache: "ResultCache | NullCache | None" = None,
            hard_deadline: float = math.inf) -> RegionSearch:
    """The search itself (steps 2-5), unless the region's float32 core was searched before. Past the
    time limit screening and proving go on until a candidate is proved, but never past
    ``hard_deadline`` (a composed region's part: the composition has other ways to cover it)."""
    problem = SearchProblem.of(symbolic)
    core_key = cache_key(problem.core, config)
    stored = cache.get(CORE_NAMESPACE, core_key) if cache is not None else None
    reused = _from_cache(stored, symbolic, sizes, config, problem) if stored is not None else None
    if reused is not None:
        reused.stats.seconds = {"core cache lookup + re-rank": time.perf_counter() - start}
        return reused
    found, cores = _search_core(name, symbolic, problem, sizes, config, progress, start, hard_deadline)
    if cache is not None:
        cache.put(CORE_NAMESPACE, core_key, _to_cache(
            [(core, verdict, c.structure) for c, (core, verdict) in zip(found.candidates, cores)], found.stats))
    return found


def _search_core(name: str, symbolic: KernelGraph, problem: SearchProblem, sizes: dict[str, int],
                 config: SearchConfig, progress: Progress | None, start: float,
                 hard_deadline: float = math.inf) -> tuple[RegionSearch, list]:
    """Enumerate, screen, rank and prove; the candidates, and per candidate its core program (before
    assembly) with the core's proof."""
    deadline = start + config.time_limit_s
    stats = SearchStats(time_limit_s=config.time_limit_s)
    device = config.device_spec()
    parallel_dims = sum(d != 1 for d in problem.core.output_types[0].shape)
    grid_ranks = tuple(range(1, max(1, min(3, parallel_dims)) + 1))

    # the first start points' structures are screened while worker processes still enumerate the others
    batches = _enumerate_batches(problem.core, config, stats, start, progress)
    screen_deadline = start + config.time_limit_s * config.screening_share
    screened = _screen(batches, problem.core, grid_ranks, stats, screen_deadline, progress, device.onchip_bytes,
                       hard_deadline)

    phase_start = time.perf_counter()
    ranked = []
    for index, graph in screened:
        whole = problem.assemble(graph)
        cost = best_sizes(whole, device, sizes)
        if cost is None:
            stats.no_fit += 1
            continue
        ranked.append((cost.key, index, len(ranked), whole, graph, cost))
    ranked.sort(key=lambda item: item[:3])
    stats.seconds["rank"] = time.perf_counter() - phase_start

    phase_start = time.perf_counter()
    proved = _prove(ranked, problem, config, stats, deadline, progress, hard_deadline)
    stats.seconds["prove"] = time.perf_counter() - phase_start
    stats.seconds["total"] = time.perf_counter() - start
    return RegionSearch(name, symbolic, sizes, [c for c, _, _ in proved], stats), [p[1:] for p in proved]


def _enumerate(core: KernelGraph, config: SearchConfig, stats: SearchStats, start: float,
               progress: Progress | None) -> list:
    """Every structure, in start-point order."""
    return [s for batch in _enumerate_batches(core, config, stats, start, progress) for s in batch]


def _enumerate_batches(core: KernelGraph, config: SearchConfig, stats: SearchStats, start: float,
                       progress: Progress | None) -> Iterator[list]:
    """New structures in start-point order, in batches: each as soon as its start points and every
    earlier one are enumerated (in worker processes when there are several). Stats are final once the
    generator is exhausted or closed."""
    budget = config.time_limit_s * config.enumeration_share
    points = count_start_points(core)
    workers = min(config.worker_count(), points - 1)  # the seed (start point 0) shares the first worker
    if workers > 1:
        batches = _enumerate_in_processes(core, config, budget, points, workers, stats)
    else:
        batches = iter([list(itertools.islice(enumerate_structures(core, config.enumeration_config(budget),
                                                                   stats.enumeration), config.max_structures))])
    seen: dict = {}  # start points in other processes may meet the same structure
    try:
        for batch in batches:
            new = [s for s in dict.fromkeys(batch) if s not in seen][:config.max_structures - len(seen)]
            seen.update(dict.fromkeys(new))
            if new:
                yield new
    finally:
        if hasattr(batches, "close"):  # a closed generator stops waiting for the other workers' results
            batches.close()
        if progress:
            progress("enumerate", len(seen), len(seen))
        stats.structures = len(seen)
        stats.timed_out |= stats.enumeration.timed_out
        stats.seconds["enumerate"] = time.perf_counter() - start


def _enumerate_in_processes(core: KernelGraph, config: SearchConfig, budget_s: float, points: int, workers: int,
                            stats: SearchStats) -> Iterator[list]:
    """Start points spread over worker processes, their structures yielded in start-point order
    (deterministic for a given worker count; the same structures for any count whenever no start
    point runs out of time), each batch once every earlier start point is done. The first worker runs
    the seed (start point 0, instant) and the start point with every prologue (the smallest programs)
    with the whole budget, so the most promising structures come first; the others share the
    remaining points."""
    tasks: list[list] = [[] for _ in range(workers)]
    tasks[0] = [(k, budget_s) for k in range(min(2, points))]
    rest = list(range(2, points))
    per_worker = -(-len(rest) // (workers - 1))
    for j, k in enumerate(rest):
        tasks[1 + j % (workers - 1)].append((k, budget_s / per_worker))
    tasks = [batch for batch in tasks if batch]
    payloads = [pickle.dumps([(core, config.enumeration_config(share), k, config.max_structures)
                              for k, share in batch]) for batch in tasks]
    order = sorted(k for batch in tasks for k, _ in batch)
    by_point: dict[int, list] = {}
    for index, answer in shared_pool().run(payloads):
        for (k, _), (found, part) in zip(tasks[index], answer):
            by_point[k] = found
            stats.enumeration.add(part)
        ready = []
        while order and order[0] in by_point:
            ready.extend(by_point.pop(order.pop(0)))
        if ready:
            yield ready


def smallest_footprint(graph: KernelGraph) -> int:
    """A lower bound of any custom kernel's on-chip bytes over every size assignment: a tile dim with a
    symbol in it can be as small as 1 (its grid/loop extents as large as the dim), a concrete one stays."""
    footprint = 0
    for op in graph.custom_kernels:
        total = 0
        for t in op.block.values:
            total += math.prod(d if isinstance(d, int) else 1 for d in t.shape) * t.dtype.itemsize
        footprint = max(footprint, total)
    return footprint


def _screen(structures: list | Iterator[list], core: KernelGraph, grid_ranks: tuple[int, ...], stats: SearchStats,
            deadline: float, progress: Progress | None, onchip_bytes: int,
            hard_deadline: float = math.inf) -> list[tuple[int, KernelGraph]]:
    """Every map assignment of every structure (a list, or batches of them as they are enumerated),
    through the fingerprint; the survivors (past ``deadline`` only while there are none, and never
    past ``hard_deadline``). Records its busy seconds as "maps + fingerprint"."""
    busy = 0.0
    batches = iter([structures]) if isinstance(structures, list) else structures
    seen: list = []
    survivors: list = []
    try:
        for batch in batches:
            phase_start = time.perf_counter()
            first = len(seen)
            seen.extend(batch)
            done = _screen_batch(seen, first, core, grid_ranks, stats, deadline, progress, onchip_bytes, survivors,
                                 hard_deadline)
            busy += time.perf_counter() - phase_start
            if not done:
                break
    finally:
        if hasattr(batches, "close"):
            batches.close()
        stats.seconds["maps + fingerprint"] = busy
    return survivors


def _screen_batch(structures: list, first: int, core: KernelGraph, grid_ranks: tuple[int, ...], stats: SearchStats,
                  deadline: float, progress: Progress | None, onchip_bytes: int, survivors: list,
                  hard_deadline: float = math.inf) -> bool:
    """Screens ``structures[first:]`` into ``survivors``; False when the deadline stopped it."""
    fingerprint = FingerprintVerifier(FingerprintConfig(trials=1))  # a filter: the e-graph has the last word
    for index in range(first, len(structures)):
        structure = structures[index]
        now = time.perf_counter()
        if now > deadline and (survivors or now > hard_deadline):  # past the deadline only while nothing survived
            stats.timed_out = True
            return False
        if progress:
            progress("maps", index + 1, len(structures))
        assignments = (a for rank in grid_ranks for a in parallel_assignments(structure, core, rank))
        for assignment in assignments:
            stats.assignments += 1
            try:
                graph = build_candidate(structure, core, assignment)
            except IRError:
                stats.ill_typed += 1
                continue
            if smallest_footprint(graph) > onchip_bytes:  # sound: no size makes it fit
                stats.never_fits += 1
                continue
            verdict = fingerprint.verify(core, graph)
            if verdict.status is Status.NOT_EQUAL:
                stats.refuted += 1
                continue
            stats.plausible += 1
            survivors.append((index, graph))
            split = split_candidate(structure, core, assignment)  # the loop reduction across blocks too
            if split is not None:
                stats.split_forms += 1
                if fingerprint.verify(core, split).status is Status.NOT_EQUAL:
                    stats.refuted += 1
                    continue
                stats.plausible += 1
                survivors.append((index, split))
    return True


def _prove(ranked: list, problem: SearchProblem, config: SearchConfig, stats: SearchStats, deadline: float,
           progress: Progress | None, hard_deadline: float = math.inf) -> list[tuple[Candidate, KernelGraph, Verdict]]:
    """Proved candidates, best-ranked first, each with its core program and the proof of that (the
    core's own verdict, as the core cache stores it); past ``deadline`` only until one is proved, and
    never past ``hard_deadline``."""
    prover = EGraphVerifier(EGraphConfig(max_seconds=config.egraph_seconds))
    candidates: list[tuple[Candidate, KernelGraph, Verdict]] = []
    kinds_proved: set[bool] = set()
    failures: dict[bool, int] = {}
    kinds_left = {is_split(item[4]) for item in ranked}
    for _, index, _, whole, graph, cost in ranked:
        if len(candidates) >= config.max_candidates and kinds_proved >= kinds_left:
            break  # enough, and the best of each program shape (one kernel, split in two) is in
        if len(candidates) >= config.max_candidates and is_split(graph) in kinds_proved:
            continue
        if failures.get(is_split(graph), 0) >= MAX_FAILED_PROOFS:
            continue  # this program shape's proofs keep timing out: spend the time elsewhere
        now = time.perf_counter()
        if now > deadline and (candidates or now > hard_deadline):
            stats.timed_out = True
            break
        stats.sent_to_egraph += 1
        if progress:
            progress("prove", len(candidates), config.max_candidates)
        verdict = prover.verify(problem.core, graph)
        if verdict.status is Status.EQUAL:
            stats.proved += 1
            candidates.append((Candidate(whole, _in_region(verdict, problem), cost, index), graph, verdict))
            kinds_proved.add(is_split(graph))
        else:
            stats.unknown += 1
            failures[is_split(graph)] = failures.get(is_split(graph), 0) + 1
            log.debug("not proved (%s): structure %d", verdict, index)
    return candidates
