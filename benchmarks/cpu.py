"""CPU benchmark: XLA (``jax.jit``) and prism_jax (``superoptimize(backend="cpu")``: native C++ kernels
where they beat XLA, XLA elsewhere) side by side on the BENCHMARKS.md workloads, CPU protocol.

    .venv/bin/python benchmarks/cpu.py [--workload NAME ...] [--dtype float32|bfloat16 ...]
        [--shapes first|all] [--timing loop|call] [--iterations 20] [--repeats 5] [--out benchmarks/results/cpu_<cpu>.json]
    .venv/bin/python benchmarks/cpu.py --quick --workload rmsnorm_matmul --dtype float32   # a smoke run

Per workload (Prism and Mirage sets; decode shapes: the first, or ``--shapes all``; prefill shapes are
left to the GPU harness) x dtype (float32 and bfloat16 unless ``--dtype`` says):

1. Build: ``prism_jax.superoptimize(fn, backend="cpu")`` is built for the inputs (search + tune,
   timed: the first build) and built again by a fresh ``superoptimize`` (timed: a cache hit). A fresh
   cache directory is used unless ``--cache-dir`` names one. Which regions run a kernel and which stay
   on XLA (with the tuner's reason) is recorded.
2. Numerics: each implementation's output is compared with the float32 reference (``jax.jit(fn)`` on
   float32 copies of the inputs, matmuls at "highest" precision); one that fails gets no speed figure.
3. Time (``--timing loop``, the default): each implementation runs ``--unroll`` calls, times as many
   trips as make the fastest implementation's loop last ``--min-loop-ms`` (2 ms; the same trips for
   every implementation, at most 100), inside one jitted loop, every call's inputs depending on the
   previous call's output
   (``prism_jax.tune.measure.Chain``: one in-place single-element update per input, so XLA can
   neither hoist a call, nor the weight-only part of one, out of the loop; the loop runs on its own
   copies of the inputs, donated and carried from run to run, so no run copies an input); the loops of the
   implementations are interleaved A, B, A, B, ... after ``--warmup`` runs each, ``--repeats`` rounds of
   ``--iterations`` loops each, every timed loop right after an untimed run of the same loop (A, A, B,
   B, ...: XLA's intra-op pool keeps a thread spinning for ~5-9 ms after a program that used it, which
   on 2 cores cost the next implementation's 20 ms loop ~9 ms); seconds per call = loop time / (trips x unroll); median and min over all loops.
   This is the time a region costs inside a larger jitted program (an LLM's forward pass), without
   Python dispatch. ``--timing call`` times synchronous calls instead (``block_until_ready`` after
   each), with a third function that only reads one element of every input giving the call overhead
   (dispatch + wait), reported, not subtracted. Every call reads the same inputs: caches are warm
   (inputs larger than the L3 stream from memory anyway). speedup = XLA median / prism_jax median (and
   min / min).
4. Roofline: the machine's streaming-read bandwidth is measured in the same run, at its start and end
   (reductions over a 256 MiB float32 array: a jitted ``jnp.sum``, a jitted row-sum XLA can split over
   cores, numpy's sum; the fastest reader's median counts, and the larger of the two measurements:
   fractions err low). bytes = every input read once + every output written once; each row reports its
   floor (bytes / bandwidth) and its fraction of the bandwidth (bytes / median / bandwidth).
   So is the cores' float32 multiply-add peak (the runtime library's ``prism_cpu_fma_peak``: independent
   FMA chains in registers, one thread per core, at the run's start and end): a row whose matmul FLOPs at
   that peak take longer than its bytes at the read bandwidth is compute-bound (``bound``); its floor is
   the larger of the two. The bandwidth target counts the memory-bound rows. Bfloat16 rows on hosts with a
   bfloat16 dot product in hardware (AVX512_BF16, AMX), which multiply faster than float32 FMAs, get no
   compute floor: they count as memory-bound.

Results: a JSON file (header: CPU model, cores, caches, ISA flags, compiler and flags, jax/jaxlib/prism_jax
versions, git commit, date, command line, bandwidth, geometric-mean speedups; one row per workload,
shape, dtype and implementation), a markdown table next to it (``.md``) and, where matplotlib is
importable, a PNG of the speedup per workload. The geometric mean of prism_jax's speedup over the
Prism set (float32 and bfloat16 together) is printed and stored.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import platform
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import prism_jax
from prism_jax import workloads
from prism_jax.tune import measure


def _common():
    """benchmarks/ is not a package: its shared helpers (common.py), loaded once as ``benchmarks_common``."""
    if "benchmarks_common" not in sys.modules:
        path = pathlib.Path(__file__).resolve().parent / "common.py"
        spec = importlib.util.spec_from_file_location("benchmarks_common", path)
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules["benchmarks_common"]


common = _common()

DTYPES = ("float32", "bfloat16")
READ_BYTES = 256 << 20  # the bandwidth array (--quick: 16 MiB, cache-resident: not a bandwidth figure)
NATIVE_BF16_DOT = ("avx512_bf16", "amx_bf16")  # ISA flags under which bfloat16 rows get no compute floor
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}  # max |error| / max(1, max |reference|)
TOLERANCE_NOTE = ("max |out - reference| / max(1, max |reference|); the reference is float32 at 'highest' "
                  "matmul precision on the same (rounded) inputs")
TIMING_LOOP = ("seconds per call inside a jitted loop of chained calls (each call's inputs depend on the previous "
               "output), loops interleaved A, B, A, B, ..., each timed right after an untimed run of itself; warm caches (every call reads the same inputs)")
TIMING = ("wall time per synchronous call of a jitted executable (block_until_ready after each), "
          "interleaved A, B, A, B, ...; warm caches (every call reads the same inputs)")
QUICK_LABEL = "quick (tiny shapes, few calls: not a benchmark figure)"
MAX_TRIPS = 100  # trips of --unroll calls per timed loop at most (see _trips)
TARGETS = {"geomean_speedup": 1.5, "read_bw_fraction": 0.7}
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "sve", "bf16")


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------


def time_interleaved(fns: dict[str, Callable], args: Sequence[Any], *, iterations: int, repeats: int,
                     warmup: int, settle: bool = False) -> dict[str, dict]:
    """Seconds per synchronous call of each function on the same ``args``, calls interleaved
    (A, B, A, B, ...): ``warmup`` calls each first, then ``repeats`` rounds of ``iterations`` calls each;
    with ``settle`` each timed call right after an untimed one of the same function (A, A, B, B, ...),
    so none is timed in the wake of another (``prism_jax.tune.tuner._settled``: XLA's intra-op pool
    spins for ~5-9 ms after a program that used it). Per function: median, min and max over all
    calls, and each round's median (the spread)."""
    for fn in fns.values():
        for _ in range(max(1, warmup)):
            jax.block_until_ready(fn(*args))
    samples: dict[str, list[list[float]]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name in fns:
            samples[name].append([])
        for _ in range(max(1, iterations)):
            for name, fn in fns.items():
                if settle:
                    jax.block_until_ready(fn(*args))
                start = time.perf_counter()
                jax.block_until_ready(fn(*args))
                samples[name][-1].append(time.perf_counter() - start)
    timings = {}
    for name, rounds in samples.items():
        calls = [s for r in rounds for s in r]
        timings[name] = {"median_s": float(np.median(calls)), "min_s": min(calls), "max_s": max(calls),
                         "round_medians_s": [float(np.median(r)) for r in rounds], "calls": len(calls),
                         "repeats": len(rounds)}
    return timings


def _time(fns: dict[str, Callable], args: Sequence[Any], settings: "Settings") -> dict[str, dict]:
    """Seconds per call of each function (``settings.timing``: in a chained jitted loop, or per
    synchronous call with the call overhead alongside)."""
    if settings.timing == "call":
        timings = time_interleaved({**fns, "call overhead": jax.jit(_touch_every_input)}, args,
                                   iterations=settings.iterations, repeats=settings.repeats, warmup=settings.warmup)
        overhead = timings.pop("call overhead")["median_s"]
        return {name: {**t, "call_overhead_s": overhead} for name, t in timings.items()}
    trips = _trips(fns, args, settings)
    loops = {name: measure.Chain(f, args, trips, settings.unroll) for name, f in fns.items()}
    timings = time_interleaved(loops, (), iterations=settings.iterations, repeats=settings.repeats,
                               warmup=settings.warmup, settle=True)
    per_loop = trips * settings.unroll
    scale = 1.0 / per_loop
    return {name: {**t, "median_s": t["median_s"] * scale, "min_s": t["min_s"] * scale, "max_s": t["max_s"] * scale,
                   "round_medians_s": [r * scale for r in t["round_medians_s"]], "calls": t["calls"] * per_loop,
                   "calls_per_loop": per_loop} for name, t in timings.items()}


def _trips(fns: dict[str, Callable], args: Sequence[Any], settings: "Settings") -> int:
    """Trips of ``unroll`` calls per timed loop: enough that the fastest implementation's loop lasts
    ``min_loop_s`` (the loop's own launch and wait, ~0.1 ms here, then costs each call of a 10 us
    kernel under 1 us instead of ~10), the same for every implementation."""
    if settings.min_loop_s <= 0:
        return 1
    fastest = math.inf
    for f in fns.values():
        chain = measure.Chain(f, args, 1, settings.unroll)
        jax.block_until_ready(chain())  # compiles
        start = time.perf_counter()
        jax.block_until_ready(chain())
        fastest = min(fastest, time.perf_counter() - start)
    return max(1, min(MAX_TRIPS, math.ceil(settings.min_loop_s / fastest)))


def _touch_every_input(*args):
    return sum(a.reshape(-1)[0].astype(jnp.float32) for a in jax.tree.leaves(args))


def read_bandwidth(nbytes: int = READ_BYTES, calls: int = 10, warmup: int = 2) -> dict:
    """The machine's streaming-read bandwidth (bytes/s): reductions over a float32 array of ``nbytes``
    (a jitted ``jnp.sum``, a jitted row-sum XLA can split over cores, numpy's sum), interleaved; the
    fastest reader's median counts."""
    rows = 64
    x = jnp.ones((nbytes // 4 // rows * rows,), jnp.float32)
    host = np.asarray(x)
    readers = {"jnp.sum": (jax.jit(jnp.sum), x),
               "row sums": (jax.jit(lambda a: jnp.sum(a.reshape(rows, -1), axis=1)), x),
               "numpy sum": (np.sum, host)}
    timings = time_interleaved({name: (lambda f=f, a=a: f(a)) for name, (f, a) in readers.items()}, (),
                               iterations=calls, repeats=1, warmup=warmup)
    per_reader = {name: {"median_s": t["median_s"], "min_s": t["min_s"], "bytes_per_s": x.nbytes / t["median_s"]}
                  for name, t in timings.items()}
    best = max(per_reader, key=lambda name: per_reader[name]["bytes_per_s"])
    return {"array_bytes": int(x.nbytes), "calls": calls, "readers": per_reader, "reader": best,
            "bytes_per_s": per_reader[best]["bytes_per_s"]}


def fma_peak(seconds: float = 0.2) -> dict | None:
    """The cores' float32 multiply-add peak (FLOP/s): the runtime library's probe (independent FMA chains in
    registers, as wide as the kernels' vectors) on one thread per available core at once; None without a
    C++ compiler."""
    from prism_jax.codegen.cpp import build

    try:
        lib = ctypes.CDLL(str(build.runtime_library()))
    except (build.CompileError, OSError) as err:
        print(f"no FMA peak ({err}): every row counts as memory-bound", flush=True)
        return None
    probe = lib.prism_cpu_fma_peak
    probe.restype, probe.argtypes = ctypes.c_double, [ctypes.c_double]
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # ctypes lets go of the GIL
        per_thread = list(pool.map(lambda _: probe(seconds), range(threads)))
    return {"threads": threads, "seconds": seconds, "per_thread_flop_per_s": per_thread,
            "flop_per_s": float(sum(per_thread))}


def roofline(row: dict, bytes_per_s: float, flop_per_s: float | None, native_bf16_dot: bool) -> dict:
    """A row's floors: bytes at the read bandwidth, matmul FLOPs at the FMA peak (none for bfloat16 where
    the host multiplies bfloat16 natively), the larger of the two, which one bounds it, and the row's
    fractions of the bandwidth and of the floor (the one place they are computed)."""
    memory_s = row["bytes"] / bytes_per_s
    no_compute_floor = flop_per_s is None or (row["dtype"] == "bfloat16" and native_bf16_dot)
    compute_s = None if no_compute_floor else row.get("matmul_flops", 0) / flop_per_s
    bound = "compute" if compute_s is not None and compute_s > memory_s else "memory"
    fields = {"memory_floor_s": memory_s, "compute_floor_s": compute_s, "bound": bound,
              "floor_s": max(memory_s, compute_s or 0.0)}
    if row.get("median_s"):
        fields["read_bw_fraction"] = row["bytes"] / row["median_s"] / bytes_per_s
        fields["roofline_fraction"] = fields["floor_s"] / row["median_s"]
    return fields


# ---------------------------------------------------------------------------------------------------
# One workload at one shape and dtype
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    timing: str  # "loop" or "call"
    unroll: int
    min_loop_s: float
    iterations: int
    repeats: int
    warmup: int
    quick: bool
    search_config: Any
    tune_config: Any

    @property
    def label(self) -> str:
        if self.quick:
            return QUICK_LABEL
        return ("chained calls in a jitted loop, interleaved" if self.timing == "loop" else
                "wall time, synchronous calls, interleaved")


def _regions_cell(optimization: dict | None) -> str:
    if not optimization:
        return "-"
    cells = []
    for g in optimization["regions"]:
        name = g["region"].rsplit(".", 1)[-1]
        cells.append(f"{name}: kernel" if g["uses_kernel"] else f"{name}: XLA ({g['note']})")
    return "; ".join(cells) or "no fusible region"


def benchmark_shape(workload, shape, dtype: str, settings: Settings) -> list[dict]:
    """The XLA row and the prism_jax row for one workload, shape and dtype (floors and fractions are added
    by ``roofline`` once the run's bandwidth and peak are known)."""
    fn = workload.fn_for(shape)
    args = workload.make_args(shape, dtype)
    expected = common.reference_output(fn, args)
    nbytes = common.io_bytes(fn, args)
    base = {"workload": workload.name, "suite": workload.suite.value, "shape": shape.as_dict(),
            "shape_label": shape.label, "dtype": dtype, "timing": settings.label, "bytes": nbytes,
            "matmul_flops": common.matmul_flops(fn, args)}
    rows = {"xla": {**base, "implementation": "xla", "notes": []}}
    fns: dict[str, Callable] = {"xla": jax.jit(fn)}
    try:
        optimized, optimization, notes = common.build_superoptimized(fn, args, "cpu", settings.search_config,
                                                                     settings.tune_config)
        fns["prism_jax"] = jax.jit(optimized)
        rows["prism_jax"] = {**base, "implementation": "prism_jax", "notes": notes, "optimization": optimization,
                             "regions": _regions_cell(optimization)}
    except Exception as err:  # recorded, the run goes on
        rows["prism_jax"] = {**base, "implementation": "prism_jax", "status": "error", "numerics": "not checked",
                             "notes": [f"build failed: {type(err).__name__}: {str(err)[:300]}"]}
    timed: dict[str, Callable] = {}
    for name, f in fns.items():
        try:
            ok, numerics, error = common.numerics_verdict(f(*args), expected, TOLERANCE[dtype])
        except Exception as err:  # an implementation that does not run
            rows[name].update(status="error", numerics="not checked")
            rows[name]["notes"] = rows[name]["notes"] + [f"{type(err).__name__}: {str(err)[:300]}"]
            continue
        rows[name].update(numerics=numerics, max_error=error, status="measured" if ok else "failed")
        if ok:
            timed[name] = f
    if timed:
        for name, t in _time(timed, args, settings).items():
            rows[name].update(t)
    add_speedups(list(rows.values()))
    return list(rows.values())


def add_speedups(rows: list[dict]) -> None:
    """``speedup_vs_xla`` = XLA's median / the row's median; ``speedup_vs_xla_min`` from the minima."""
    xla = next((r for r in rows if r["implementation"] == "xla"), {})
    for r in rows:
        for key, field in (("speedup_vs_xla", "median_s"), ("speedup_vs_xla_min", "min_s")):
            r[key] = xla[field] / r[field] if xla.get(field) and r.get(field) else None


def summarize(rows: list[dict]) -> dict:
    """Geometric-mean speedups of prism_jax (Prism set over both dtypes: the headline; per dtype; Mirage
    set) and read-bandwidth fractions, against the targets."""
    prism = [r for r in rows if r["implementation"] == "prism_jax"]

    def geomean(selected):
        speedups = [r["speedup_vs_xla"] for r in selected if r.get("speedup_vs_xla")]
        return {"geomean_speedup": common.geometric_mean(speedups), "rows": len(speedups),
                "rows_without_speed_figure": len(selected) - len(speedups)}

    in_prism_set = [r for r in prism if r["suite"] == workloads.Suite.PRISM.value]
    summary = {"prism_set": geomean(in_prism_set),
               "prism_set_by_dtype": {d: geomean([r for r in in_prism_set if r["dtype"] == d])
                                      for d in dict.fromkeys(r["dtype"] for r in in_prism_set)},
               "mirage_set": geomean([r for r in prism if r["suite"] != workloads.Suite.PRISM.value]),
               "targets": TARGETS}
    def memory_bound(r):  # rows without a roofline (older results, unit tests) count as memory-bound
        return r.get("bound", "memory") == "memory"

    fractions = {impl: [r["read_bw_fraction"] for r in rows if r["implementation"] == impl
                        and r.get("read_bw_fraction") and memory_bound(r)] for impl in ("xla", "prism_jax")}
    summary["read_bw_fraction"] = {impl: {"median": float(np.median(v)) if v else None, "max": max(v, default=None),
                                          "rows_at_target": sum(f >= TARGETS["read_bw_fraction"] for f in v),
                                          "rows": len(v)} for impl, v in fractions.items()}
    roof = {impl: [r["roofline_fraction"] for r in rows if r["implementation"] == impl and r.get("roofline_fraction")]
            for impl in ("xla", "prism_jax")}
    summary["roofline_fraction"] = {impl: {"median": float(np.median(v)) if v else None, "rows": len(v)}
                                    for impl, v in roof.items()}
    summary["compute_bound_rows"] = sorted({f"{r['workload']} {r['dtype']}" for r in rows if not memory_bound(r)})
    headline = summary["prism_set"]["geomean_speedup"]
    summary["speedup_target_met"] = headline is not None and headline >= TARGETS["geomean_speedup"]
    at = summary["read_bw_fraction"]["prism_jax"]
    summary["bandwidth_target_met"] = bool(at["rows"]) and at["rows_at_target"] == at["rows"]
    return summary


# ---------------------------------------------------------------------------------------------------
# Environment and tables
# ---------------------------------------------------------------------------------------------------


def _cache_sizes() -> dict:
    sizes = {}
    for index in sorted(pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            sizes[f"L{level}{'i' if kind == 'Instruction' else 'd' if kind == 'Data' else ''}"] = (
                index / "size").read_text().strip()
        except OSError:
            continue
    return sizes


def cpu_info() -> dict:
    """CPU model, cores, caches and ISA flags (``/proc/cpuinfo``, ``/sys``), and how kernels are compiled."""
    fields: dict[str, str] = {}
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    info = {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "family_model_stepping": "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping")),
            "machine": platform.machine(), "cores_available": len(os.sched_getaffinity(0)) if hasattr(
                os, "sched_getaffinity") else os.cpu_count(), "logical_cpus": os.cpu_count(),
            "caches": _cache_sizes(), "isa": [f for f in ISA_FLAGS if f in flags],
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    try:
        from prism_jax.codegen.cpp import build

        path = build.compiler()
        info["kernel_compiler"] = {"path": path, "version": build._compiler_version(path), "flags": list(build.FLAGS)}
    except Exception as err:  # no compiler: the prism_jax rows say why they failed
        info["kernel_compiler"] = {"error": f"{type(err).__name__}: {err}"}
    info["env"] = {k: os.environ[k] for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "JAX_PLATFORMS") if k in os.environ}
    return info


def _pair(rows: list[dict], impl: str) -> dict:
    return next((r for r in rows if r["implementation"] == impl), {})


def _median_min(r: dict) -> str:
    return "-" if r.get("median_s") is None else f"{common.us(r['median_s'])} ({common.us(r['min_s'])})"


def _percent(fraction: float | None) -> str:
    return common.fmt(None if fraction is None else 100 * fraction, ".3g", "%")


def markdown_table(rows: list[dict]) -> str:
    """One line per workload, shape and dtype, XLA and prism_jax side by side: µs per call, median (min);
    speedup (median; min); the floor (see ``roofline``) and what bounds it, each one's fraction of the read
    bandwidth and prism_jax's of the floor; which regions run a kernel; numerics (a failed check leaves no speed figure)."""
    lines = ["| workload | shape | dtype | XLA µs median (min) | prism_jax µs median (min) | speedup (median; min) | "
             "floor µs (bound) | XLA % of read BW | prism_jax % of read BW | prism_jax % of floor | prism_jax regions | "
             "numerics (XLA; prism_jax) |",
             "|---" * 12 + "|"]
    groups = dict.fromkeys((r["workload"], r["shape_label"], r["dtype"]) for r in rows)
    for workload, shape_label, dtype in groups:
        group = [r for r in rows if (r["workload"], r["shape_label"], r["dtype"]) == (workload, shape_label, dtype)]
        xla, prism = _pair(group, "xla"), _pair(group, "prism_jax")
        speedup = (f"{common.fmt(prism.get('speedup_vs_xla'), '.2f', '×')}; "
                   f"{common.fmt(prism.get('speedup_vs_xla_min'), '.2f', '×')}")
        regions = prism.get("regions") or "; ".join(prism.get("notes", [])) or "-"
        numerics = f"{xla.get('numerics', 'not run')}; {prism.get('numerics', 'not run')}"
        floor = (xla or prism).get("floor_s")
        bound = (xla or prism).get("bound")
        lines.append(f"| {workload} | {shape_label} | {dtype} | {_median_min(xla)} | {_median_min(prism)} | {speedup} | "
                     f"{common.us(floor)}{f' ({bound})' if bound else ''} | {_percent(xla.get('read_bw_fraction'))} | "
                     f"{_percent(prism.get('read_bw_fraction'))} | {_percent(prism.get('roofline_fraction'))} | "
                     f"{regions.replace('|', '/')} | {numerics.replace('|', '/')} |")
    return "\n".join(lines)


def summary_lines(header: dict) -> list[str]:
    """The headline: bandwidth, geometric-mean speedups and the targets, met or not."""
    s, bw = header["summary"], header["read_bandwidth"]
    headline = s["prism_set"]["geomean_speedup"]
    lines = [f"streaming-read bandwidth: {bw['bytes_per_s'] / 1e9:.1f} GB/s ({bw['note']})",
             *([f"float32 FMA peak: {peak['flop_per_s'] / 1e9:.1f} GFLOP/s ({peak['note']})"]
               if (peak := header.get("fma_peak")) and peak.get("flop_per_s") else []),
             f"geometric-mean speedup of prism_jax over jax.jit, Prism set (float32 and bfloat16 together, "
             f"{s['prism_set']['rows']} rows): {common.fmt(headline, '.3f', '×')} — target "
             f"≥ {TARGETS['geomean_speedup']}×: {'met' if s['speedup_target_met'] else 'NOT met'}"]
    for dtype, g in s["prism_set_by_dtype"].items():
        lines.append(f"  {dtype}: {common.fmt(g['geomean_speedup'], '.3f', '×')} ({g['rows']} rows)")
    if s["mirage_set"]["rows"]:
        lines.append(f"Mirage set: {common.fmt(s['mirage_set']['geomean_speedup'], '.3f', '×')} "
                     f"({s['mirage_set']['rows']} rows)")
    if s.get("compute_bound_rows"):
        lines.append(f"compute-bound (matmul FLOPs at the FMA peak outlast the bytes at the read bandwidth; "
                     f"not counted below): {', '.join(s['compute_bound_rows'])}")
    for impl, f in s["read_bw_fraction"].items():
        lines.append(f"{impl}: median {_percent(f['median'])}, best {_percent(f['max'])} of the read bandwidth "
                     f"(memory-bound rows); {f['rows_at_target']}/{f['rows']} rows at "
                     f"≥ {100 * TARGETS['read_bw_fraction']:.0f}%")
    for impl, f in s.get("roofline_fraction", {}).items():
        lines.append(f"{impl}: median {_percent(f['median'])} of its floor over all {f['rows']} rows")
    lines.append(f"bandwidth target (every memory-bound prism_jax row ≥ {100 * TARGETS['read_bw_fraction']:.0f}%): "
                 f"{'met' if s['bandwidth_target_met'] else 'NOT met'}")
    return lines


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", action="append", choices=list(workloads.WORKLOADS),
                        help="only these workloads (repeatable; default: the Prism and Mirage sets)")
    parser.add_argument("--dtype", action="append", choices=list(DTYPES), help="repeatable; default: both")
    parser.add_argument("--shapes", choices=["first", "all"], default="first",
                        help="decode shapes: each workload's first (default) or all of them")
    parser.add_argument("--timing", choices=["loop", "call"], default="loop",
                        help="loop: chained calls inside one jitted loop (default); call: synchronous calls")
    parser.add_argument("--unroll", type=int, default=10, help="calls per trip of the timed loop (--timing loop)")
    parser.add_argument("--min-loop-ms", type=float, default=2.0,
                        help="trips per timed loop: enough for the fastest implementation's loop to last this "
                             "long (0: one trip; --timing loop)")
    parser.add_argument("--iterations", type=int,
                        help="timed loops (or calls) per round per implementation (default 50; quick 5)")
    parser.add_argument("--repeats", type=int, help="rounds (default 5; quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed calls each first (default 3; quick 1)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="symbolic search seconds per region")
    parser.add_argument("--cache-dir", help="prism_jax cache to use (default: a fresh temporary directory)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes, few calls, a small bandwidth array and a light tuner: a smoke run")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/cpu_<cpu>.json); "
                                      "the markdown table and plot go next to it")
    return parser.parse_args(argv)


def settings_from(ns: argparse.Namespace) -> Settings:
    quick = ns.quick
    pick = (lambda value, default, quick_default: value if value is not None else (quick_default if quick else default))
    if quick:
        search = prism_jax.SearchConfig(time_limit_s=min(ns.time_limit, 20.0), progress=False)
        tune = prism_jax.TuneConfig(candidates=1, sizes_per_candidate=1, iterations=10, repeats=1, warmup=1)
    else:
        search, tune = prism_jax.SearchConfig(time_limit_s=ns.time_limit, progress=False), prism_jax.TuneConfig()
    return Settings(ns.timing, max(1, ns.unroll), max(0.0, ns.min_loop_ms) / 1e3, pick(ns.iterations, 20 if ns.timing == "loop" else 50, 5), pick(ns.repeats, 5, 2), pick(ns.warmup, 3, 1), quick, search, tune)


def selected_shapes(workload, which: str, quick: bool) -> list:
    if quick:
        return [workload.small]
    return list(workload.shapes[:1] if which == "first" else workload.shapes)


def output_path(ns: argparse.Namespace, model: str) -> pathlib.Path:
    if ns.out:
        return pathlib.Path(ns.out)
    return common.RESULTS / f"cpu_{'quick_' if ns.quick else ''}{common.slug(model)}.json"


def measure_bandwidth(quick: bool) -> dict:
    nbytes = (16 << 20) if quick else READ_BYTES
    bandwidth = read_bandwidth(nbytes, calls=3 if quick else 10, warmup=1 if quick else 2)
    print(f"streaming-read bandwidth {bandwidth['bytes_per_s'] / 1e9:.1f} GB/s ({bandwidth['reader']}, "
          f"{nbytes >> 20} MiB)", flush=True)
    return bandwidth


def measure_peak(quick: bool) -> dict | None:
    peak = fma_peak(0.05 if quick else 0.2)
    if peak is not None:
        print(f"float32 FMA peak {peak['flop_per_s'] / 1e9:.1f} GFLOP/s ({peak['threads']} threads)", flush=True)
    return peak


def run_all(names: Sequence[str], dtypes: Sequence[str], which: str, settings: Settings,
            isa: Sequence[str] = ()) -> tuple[list[dict], dict]:
    start, peak_start = measure_bandwidth(settings.quick), measure_peak(settings.quick)
    rows = []
    for name in names:
        workload = workloads.get_workload(name)
        for shape in selected_shapes(workload, which, settings.quick):
            for dtype in dtypes:
                shape_rows = benchmark_shape(workload, shape, dtype, settings)
                rows += shape_rows
                for r in shape_rows:
                    print(f"{name:20s} {shape.label:26s} {dtype:9s} {r['implementation']:10s} "
                          f"{_median_min(r):>22s} µs  {common.fmt(r.get('speedup_vs_xla'), '.2f', '×'):>6s}  "
                          f"{r.get('numerics', '')}  {r.get('regions', '')}", flush=True)
    end, peak_end = measure_bandwidth(settings.quick), measure_peak(settings.quick)
    best = max(start["bytes_per_s"], end["bytes_per_s"])
    peaks = [p["flop_per_s"] for p in (peak_start, peak_end) if p is not None]
    flops = max(peaks) if peaks else None
    native_bf16_dot = any(flag in isa for flag in NATIVE_BF16_DOT)
    for r in rows:  # the floors use the larger of the two measurements of each
        r.update(roofline(r, best, flops, native_bf16_dot))
    note = (f"{READ_BYTES >> 20} MiB float32, fastest of jnp.sum / row sums / numpy sum, median of "
            f"{start['calls']} calls; the larger of the run's start and end" if not settings.quick else
            "quick: a 16 MiB array (cache-resident), not a bandwidth figure")
    peak_note = ("float32 FMA chains in registers, one thread per core; the larger of the run's start and end; "
                 + ("bfloat16 rows: no compute floor (the host multiplies bfloat16 natively)" if native_bf16_dot
                    else "bfloat16 rows at the same rate (no bfloat16 dot product here)"))
    return rows, {"read_bandwidth": {"bytes_per_s": best, "start": start, "end": end, "note": note},
                  "fma_peak": {"flop_per_s": flops, "start": peak_start, "end": peak_end, "note": peak_note}}


def write_outputs(path: pathlib.Path, header: dict, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = header["cpu"]
    title = (f"{cpu['model']} ({cpu['cores_available']} cores, {', '.join(cpu['isa'])}) — jax.jit vs "
             f"prism_jax (backend='cpu')" + (" — QUICK, not a benchmark figure" if header["quick"] else ""))
    header["plot"] = common.plot_speedups(rows, path.with_suffix(".png"), title)
    with open(path, "w") as f:
        json.dump({"environment": header, "results": rows}, f, indent=1, default=float)
    summary = "\n".join(summary_lines(header))
    table = markdown_table(rows)
    optimization = common.optimization_table(rows)
    path.with_suffix(".md").write_text(
        f"{title}\n\n{header['date']}, commit {header['git']['commit']}{' (dirty)' if header['git']['dirty'] else ''}"
        f", `{header['command']}`\n\n{summary}\n\n{table}\n\nOptimization time (prism_jax):\n\n{optimization}\n")
    print(table)
    print(optimization)
    print(summary)
    print(f"results: {path} (+ .md); {header['plot']}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(argv)
    settings = settings_from(ns)
    names = ns.workload or list(workloads.WORKLOADS)
    dtypes = list(dict.fromkeys(ns.dtype or DTYPES))
    if jax.default_backend() != "cpu":
        print(f"note: jax's default backend is {jax.default_backend()!r}; this harness times the CPU: "
              "set JAX_PLATFORMS=cpu", flush=True)
    cpu = cpu_info()
    with common.prism_cache(ns.cache_dir, "prism_jax_cpu_bench_") as cache:
        rows, measured = run_all(names, dtypes, ns.shapes, settings, cpu["isa"])
    header = {"harness": "benchmarks/cpu.py", "quick": settings.quick, "timing": TIMING_LOOP if settings.timing == "loop" else TIMING,
              "unroll": settings.unroll if settings.timing == "loop" else None,
              "min_loop_s": settings.min_loop_s if settings.timing == "loop" else None, "date": common.utc_now(),
              "command": common.command_line("benchmarks/cpu.py", argv), "cpu": cpu,
              "jax_backend": jax.default_backend(), "versions": common.package_versions(), "git": common.git_commit(),
              "workloads": names, "dtypes": dtypes, "shapes": "small (quick)" if settings.quick else ns.shapes,
              "iterations": settings.iterations, "repeats": settings.repeats, "warmup": settings.warmup,
              "search_time_limit_s": settings.search_config.time_limit_s,
              "tune_config": dataclasses.asdict(settings.tune_config), "numerics_tolerance": TOLERANCE,
              "numerics_measure": TOLERANCE_NOTE, "prism_cache": cache, **measured,
              "summary": summarize(rows), "optimization_totals": common.optimization_totals(rows)}
    write_outputs(output_path(ns, cpu["model"]), header, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
