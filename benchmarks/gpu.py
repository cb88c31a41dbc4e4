"""GPU benchmark: XLA (``jax.jit``), cuDNN attention and prism_jax on the BENCHMARKS.md workloads.

    .venv/bin/python benchmarks/gpu.py [--workload NAME ...] [--dtype bfloat16|float16|float32]
        [--iterations 100] [--repeats 5] [--warmup 2] [--small] [--out benchmarks/results/gpu_<device>.json]
    .venv/bin/python benchmarks/gpu.py --dry-run --small --workload rmsnorm_matmul   # any machine

Per workload x shape x implementation (``xla``: ``jax.jit(fn)``; for attention workloads also
``cudnn`` and ``dpa_xla``: ``jax.nn.dot_product_attention(implementation="cudnn"|"xla")`` on inputs
given in its [b, seq, heads, D] layout; ``prism_jax``: ``prism_jax.superoptimize(fn, backend="pallas")``):

1. Numerics: the output is compared with the float32 reference (``jax.jit(fn)`` on float32 inputs,
   matmuls at "highest" precision); an implementation that fails gets ``"numerics": "FAILED ..."``
   and no speed figure.
2. Device time (GPU protocol): ``--iterations`` calls chained inside ONE jitted ``fori_loop``; before
   each call the first element of every input is moved by 1e-30 x the previous output's first element
   (numerically nothing, but a real data dependence: ``lax.optimization_barrier`` alone is stripped
   before loop-invariant code motion on XLA:CPU, which then hoists the calls), so XLA can neither
   hoist a call nor merge calls. The loop is timed with ``time.perf_counter`` around
   ``block_until_ready`` and divided by the number of calls; median, min and max over ``--repeats``
   runs. The same loop around a function that only reads one element per input gives the harness's
   own cost per call (loop control, dispatch, the single-element updates); ``net`` = median minus
   it, and bandwidth fractions, TFLOP/s and speedups use the net time (raw speedups are kept too).
   Warm L2: every call reads the same inputs.
3. Roofline: bytes = every input read once + every output written once; the device's copy bandwidth
   (``jnp.negative`` on a 256 MiB array: read + write) is measured in the same run and each row
   reports its fraction of it; matmul FLOPs come from the function's jaxpr (TFLOP/s for prefill
   shapes).
4. Optimization time: prism_jax's search + tune seconds per region (``.explain``) and a second
   ``superoptimize`` build's time (a cache hit). A fresh cache directory is used unless
   ``--cache-dir`` names one.

Results: a JSON file (header: device, driver/CUDA, versions, commit, date, L2 state, command line;
one row per workload, shape, dtype and implementation), a markdown table next to it (``.md``) and,
where matplotlib is importable, a PNG of the speedup vs XLA per shape.

Without a GPU the script says so and exits 0; ``--dry-run`` exercises the whole harness anywhere:
prism_jax in Pallas interpret mode, small shapes, few iterations, and every timing labelled
"interpret (not a speed measurement)".
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import platform
import re
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

import prism_jax
from prism_jax import workloads
from prism_jax.tune.measure import Timing, chained_loop, perturb, time_chained  # noqa: F401 (used by the tests)


def _common():
    """benchmarks/ is not a package: its shared helpers (common.py), loaded once as ``benchmarks_common``."""
    if "benchmarks_common" not in sys.modules:
        path = pathlib.Path(__file__).resolve().parent / "common.py"
        spec = importlib.util.spec_from_file_location("benchmarks_common", path)
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules["benchmarks_common"]


common = _common()
# the shared helpers, under the names this harness (and its tests) use
ROOT, RESULTS = common.ROOT, common.RESULTS
io_bytes, matmul_flops, reference_output = common.io_bytes, common.matmul_flops, common.reference_output
region_summary, optimization_table, optimization_totals = (common.region_summary, common.optimization_table,
                                                           common.optimization_totals)
plot_speedups, prism_cache, package_versions, git_commit = (common.plot_speedups, common.prism_cache,
                                                            common.package_versions, common.git_commit)
device_slug, _run, _us, _fmt, _time_cell = common.slug, common.run_command, common.us, common.fmt, common.time_cell
NO_GPU = ("no GPU found (jax backend: {backend}): GPU figures cannot be measured here; "
          "use --dry-run to exercise the harness")
DRY_RUN_LABEL = "interpret (not a speed measurement)"
DEVICE_LABEL = "device time (warm L2)"
WARM_L2 = ("warm: every call of the timed loop reads the same inputs, so inputs that fit in L2 stay cached "
           "between calls (no flush)")
ATTENTION_WORKLOADS = ("attention", "qknorm_attention", "gqa")
COPY_BYTES = 256 << 20  # the copy-bandwidth array (dry run: 16 MiB)
TOLERANCE = {"float32": 1e-2, "bfloat16": 5e-2, "float16": 5e-2}  # max |error| / max(1, max |reference|)
TOLERANCE_NOTE = ("max |out - reference| / max(1, max |reference|); float32 is loose because GPU float32 "
                  "matmuls run as TF32 by default (XLA, cuDNN, Triton)")


# ---------------------------------------------------------------------------------------------------
# Roofline
# ---------------------------------------------------------------------------------------------------


def copy_bandwidth(nbytes: int, iterations: int, repeats: int, warmup: int) -> dict:
    """Bytes/s of ``jnp.negative`` (a read and a write of ``nbytes``; ``x + 0`` would be folded away)."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    timing = time_chained(jnp.negative, (x,), iterations=iterations, repeats=repeats, warmup=warmup)
    return {"array_bytes": int(x.nbytes), "bytes_moved": 2 * int(x.nbytes), "median_s": timing.median_s,
            "bytes_per_s": 2 * x.nbytes / timing.median_s, "max_bytes_per_s": 2 * x.nbytes / timing.min_s}


def _touch_every_input(*args):
    return sum(a.reshape(-1)[0].astype(jnp.float32) for a in jax.tree.leaves(args))


def harness_overhead(args: Sequence[Any], iterations: int, repeats: int, warmup: int) -> Timing:
    """The timed loop's own cost per call with these inputs: loop control, dispatch spread over the
    calls and :func:`perturb`'s updates, around a function that only reads one element of each input."""
    return time_chained(_touch_every_input, args, iterations=iterations, repeats=repeats, warmup=warmup)


# ---------------------------------------------------------------------------------------------------
# Implementations
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Impl:
    """One implementation of a workload at a shape: ``fn(*args)`` gives the workload's output after
    ``to_workload_layout``; ``skip`` (instead of ``fn``) says why it does not run here."""

    name: str
    fn: Callable | None
    args: tuple = ()
    to_workload_layout: Callable = lambda out: out
    notes: list[str] = dataclasses.field(default_factory=list)
    skip: str = ""
    optimization: dict | None = None


def _bshd(x):
    """[b, heads, seq, D] <-> [b, seq, heads, D] (the workloads' layout <-> dot_product_attention's)."""
    return jnp.swapaxes(x, 1, 2)


def dpa_impl(workload, shape, args, implementation: str, dtype: str, on_gpu: bool) -> Impl:
    """``jax.nn.dot_product_attention`` for an attention workload, inputs pre-transposed (outside the
    timed loop) to its [b, seq, heads, D] layout; GQA maps natively (query head h reads KV head
    h // (Hq/Hkv), as the workload does); QK-norm runs its RMSNorms in XLA before the call."""
    name = "cudnn" if implementation == "cudnn" else "dpa_xla"
    causal = workload.fn_for(shape) is workloads.causal_attention
    if implementation == "cudnn" and not on_gpu:
        return Impl(name, None, skip="cuDNN needs a GPU (dry run)")
    if implementation == "cudnn" and dtype == "float32":
        return Impl(name, None, skip="cuDNN flash attention takes float16/bfloat16 only")
    if causal and shape.q != shape.kv:
        return Impl(name, None, skip="workload's causal mask is bottom-right aligned, dot_product_attention's "
                                     "top-left: they differ when q != kv")

    def attend(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=implementation)

    notes = ["inputs in [b, seq, heads, D] layout (transposed outside the timed loop)"]
    if workload.name == "qknorm_attention":
        notes.append("RMSNorm of Q and K by XLA before the attention call")
        return Impl(name, lambda q, k, v, gq, gk: attend(workloads.rmsnorm(q, gq), workloads.rmsnorm(k, gk), v),
                    tuple(_bshd(a) for a in args[:3]) + tuple(args[3:]), _bshd, notes)
    return Impl(name, attend, tuple(_bshd(a) for a in args), _bshd, notes)


def build_prism(fn: Callable, args: Sequence[Any], backend: str, search_config, tune_config) -> Impl:
    """``prism_jax.superoptimize(fn)`` built for ``args`` (timed), then built again by a fresh
    ``superoptimize`` (timed: the cache hit)."""
    optimized, optimization, notes = common.build_superoptimized(fn, args, backend, search_config, tune_config)
    return Impl("prism_jax", optimized, tuple(args), notes=notes, optimization=optimization)


def implementations(workload, shape, args, settings: "Settings") -> list[Impl]:
    """Every implementation benchmarked for this workload and shape (build errors become rows)."""
    fn = workload.fn_for(shape)
    impls = [Impl("xla", jax.jit(fn), tuple(args))]
    if workload.name in ATTENTION_WORKLOADS:
        for implementation in ("cudnn", "xla"):
            impls.append(dpa_impl(workload, shape, args, implementation, settings.dtype, settings.on_gpu))
    try:
        impls.append(build_prism(fn, args, settings.backend, settings.search_config, prism_jax.TuneConfig()))
    except Exception as err:  # recorded, the run goes on
        impls.append(Impl("prism_jax", None, skip=f"build failed: {type(err).__name__}: {str(err)[:300]}"))
    return impls


# ---------------------------------------------------------------------------------------------------
# One workload at one shape
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    dtype: str
    iterations: int
    repeats: int
    warmup: int
    dry_run: bool
    on_gpu: bool
    backend: str
    search_config: Any

    @property
    def label(self) -> str:
        return DRY_RUN_LABEL if self.dry_run else DEVICE_LABEL


def check_numerics(impl: Impl, expected: list, dtype: str) -> tuple[bool, str, float]:
    out = impl.to_workload_layout(jax.jit(impl.fn)(*impl.args))
    return common.numerics_verdict(out, expected, TOLERANCE[dtype])


def measure(impl: Impl, expected, settings: Settings) -> dict:
    """Numerics first; a timing only for an implementation that passes them."""
    if impl.fn is None:
        return {"status": "skipped", "numerics": "not run", "notes": impl.notes + [impl.skip]}
    try:
        ok, numerics, error = check_numerics(impl, expected, settings.dtype)
        if not ok:
            return {"status": "failed", "numerics": numerics, "max_error": error, "notes": impl.notes}
        timing = time_chained(impl.fn, impl.args, iterations=settings.iterations, repeats=settings.repeats,
                              warmup=settings.warmup)
    except Exception as err:  # an implementation that does not build or run on this device
        return {"status": "error", "numerics": "not checked", "notes": impl.notes + [
            f"{type(err).__name__}: {str(err)[:300]}"]}
    return {"status": "measured", "numerics": numerics, "max_error": error, "notes": impl.notes,
            "median_s": timing.median_s, "min_s": timing.min_s, "max_s": timing.max_s,
            "samples_s": list(timing.samples_s), "calls": timing.calls, "repeats": timing.repeats}


def add_net_time(row: dict, overhead: Timing) -> dict:
    """``net_s``: the median minus the harness's own cost per call (None when noise makes it <= 0)."""
    row["harness_overhead_s"] = overhead.median_s
    median = row.get("median_s")
    row["net_s"] = median - overhead.median_s if median and median > overhead.median_s else None
    if median and row["net_s"] is None:
        row["notes"] = row["notes"] + ["median within the harness overhead: no net time"]
    return row


def add_roofline(row: dict, nbytes: int, flops: int, copy_bytes_per_s: float, prefill: bool) -> dict:
    """Fraction of the copy bandwidth and (prefill shapes) TFLOP/s, both from the net time."""
    net = row.get("net_s")
    row["bytes"], row["matmul_flops"] = nbytes, flops
    row["copy_bw_fraction"] = nbytes / net / copy_bytes_per_s if net else None
    row["tflops"] = flops / net / 1e12 if net and prefill and flops else None
    return row


def add_speedups(rows: list[dict]) -> None:
    """``speedup_vs_xla`` = XLA's net time / the row's (rows of one workload, shape and dtype), and
    ``speedup_vs_xla_raw`` from the medians with the harness overhead left in (a lower bound)."""
    xla = next((r for r in rows if r["implementation"] == "xla"), {})
    for r in rows:
        for key, field in (("speedup_vs_xla", "net_s"), ("speedup_vs_xla_raw", "median_s")):
            r[key] = xla[field] / r[field] if xla.get(field) and r.get(field) else None


def benchmark_shape(workload, shape, settings: Settings, copy_bytes_per_s: float) -> list[dict]:
    """Every implementation's row for one workload at one shape."""
    fn = workload.fn_for(shape)
    args = workload.make_args(shape, settings.dtype)
    prefill = shape in workload.prefill_shapes or shape == workload.small_prefill
    expected = reference_output(fn, args)
    nbytes, flops = io_bytes(fn, args), matmul_flops(fn, args)
    overhead = harness_overhead(args, settings.iterations, settings.repeats, settings.warmup)
    base = {"workload": workload.name, "suite": workload.suite.value, "shape": shape.as_dict(),
            "shape_label": shape.label, "prefill": prefill, "dtype": settings.dtype, "timing": settings.label}
    rows = []
    for impl in implementations(workload, shape, args, settings):
        row = {**base, "implementation": impl.name, **measure(impl, expected, settings)}
        if impl.optimization is not None:
            row["optimization"] = impl.optimization
        rows.append(add_roofline(add_net_time(row, overhead), nbytes, flops, copy_bytes_per_s, prefill))
    add_speedups(rows)
    return rows


# ---------------------------------------------------------------------------------------------------
# Environment, tables, plot
# ---------------------------------------------------------------------------------------------------


def has_gpu() -> bool:
    return jax.default_backend() in ("gpu", "cuda", "rocm")


def gpu_software() -> dict:
    """Driver and CUDA/cuDNN versions, where obtainable (``nvidia-smi``, jaxlib's CUDA plugin)."""
    info: dict[str, Any] = {}
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem",
                "--format=csv,noheader"])
    if smi:
        info["nvidia_smi_query"] = smi
    banner = _run(["nvidia-smi"]) or ""
    match = re.search(r"CUDA Version:\s*([\d.]+)", banner)
    if match:
        info["cuda_driver_api"] = match.group(1)
    try:
        from jax._src.lib import cuda_versions
        if cuda_versions is not None:
            info["cudnn"] = cuda_versions.cudnn_get_version()
            info["cuda_runtime"] = cuda_versions.cuda_runtime_get_version()
    except Exception:  # private API; absent on CPU-only jaxlib
        pass
    return info


def environment(command: str, settings: Settings, extra: dict) -> dict:
    device = jax.devices()[0]
    return {"harness": "benchmarks/gpu.py", "dry_run": settings.dry_run, "timing": settings.label,
            "date": common.utc_now(),
            "command": command, "device": {"kind": device.device_kind, "platform": device.platform,
                                           "count": jax.device_count(), **gpu_software()},
            "host": {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
            "versions": package_versions(), "git": git_commit(), "l2": WARM_L2, "dtype": settings.dtype,
            "iterations": settings.iterations, "repeats": settings.repeats, "warmup": settings.warmup,
            "prism_backend": settings.backend, "search_time_limit_s": settings.search_config.time_limit_s,
            "numerics_tolerance": TOLERANCE[settings.dtype], "numerics_measure": TOLERANCE_NOTE, **extra}


def markdown_table(rows: list[dict]) -> str:
    """One line per row: µs per call (median, min–max, harness overhead included), the net µs (overhead
    subtracted), fraction of copy bandwidth and TFLOP/s (prefill shapes) from the net time, speedup vs
    XLA (net; raw), numerics and notes; the timing column says what was timed."""
    lines = ["| workload | shape | dtype | implementation | timing | µs per call (min–max) | net µs | "
             "% of copy BW | TFLOP/s | vs XLA (net; raw) | numerics | notes |", "|---" * 12 + "|"]
    for r in rows:
        fraction = None if r.get("copy_bw_fraction") is None else 100 * r["copy_bw_fraction"]
        speedup = f"{_fmt(r.get('speedup_vs_xla'), '.2f', '×')}; {_fmt(r.get('speedup_vs_xla_raw'), '.2f', '×')}"
        notes = "; ".join(r.get("notes", [])).replace("|", "/")
        lines.append(f"| {r['workload']} | {r['shape_label']} | {r['dtype']} | {r['implementation']} | {r['timing']} | "
                     f"{_time_cell(r)} | {_us(r.get('net_s'))} | {_fmt(fraction, '.3g', '%')} | "
                     f"{_fmt(r.get('tflops'), '.3g')} | {speedup} | {r['numerics']} | {notes} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", action="append", help="only these workloads (repeatable; default: all)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--iterations", type=int, help="calls per timed loop (default 100; dry run 4)")
    parser.add_argument("--repeats", type=int, help="timed loops per implementation (default 5; dry run 3)")
    parser.add_argument("--warmup", type=int, help="untimed loops first (default 2; dry run 1)")
    parser.add_argument("--small", action="store_true", help="each workload's small (and small prefill) shape")
    parser.add_argument("--dry-run", action="store_true",
                        help="run anywhere: prism_jax in Pallas interpret mode, small shapes, few iterations; "
                             "no figure is a speed measurement")
    parser.add_argument("--time-limit", type=float, default=60.0, help="symbolic search seconds per region")
    parser.add_argument("--cache-dir", help="prism_jax cache to use (default: a fresh temporary directory)")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/gpu_<device>.json); "
                                      "the markdown table and plot go next to it")
    return parser.parse_args(argv)


def settings_from(ns: argparse.Namespace) -> Settings:
    dry = ns.dry_run
    pick = (lambda value, gpu, dry_default: value if value is not None else (dry_default if dry else gpu))
    config = prism_jax.SearchConfig(time_limit_s=ns.time_limit, progress=False)
    return Settings(ns.dtype, pick(ns.iterations, 100, 4), pick(ns.repeats, 5, 3), pick(ns.warmup, 2, 1), dry,
                    has_gpu(), "interpret" if dry else "pallas", config)


def selected_shapes(workload, small: bool) -> list:
    if small:
        return [workload.small] + ([workload.small_prefill] if workload.small_prefill is not None else [])
    return list(workload.shapes) + list(workload.prefill_shapes)


def output_path(ns: argparse.Namespace, dry_run: bool) -> pathlib.Path:
    if ns.out:
        return pathlib.Path(ns.out)
    slug = device_slug(jax.devices()[0].device_kind)
    return RESULTS / f"gpu_{'dry_run_' if dry_run else ''}{slug}.json"


def protocol_notes(settings: Settings) -> list[str]:
    notes = []
    if settings.dry_run:
        notes.append(f"dry run on {jax.default_backend()}: prism_jax in Pallas interpret mode; "
                     "no figure here is a GPU speed measurement")
    elif settings.iterations < 100 or settings.repeats < 5:
        notes.append(f"below the GPU protocol (>= 100 iterations, >= 5 repeats): "
                     f"{settings.iterations} iterations, {settings.repeats} repeats")
    return notes


def run_all(names: Sequence[str], settings: Settings, small: bool) -> tuple[list[dict], dict]:
    copy_bytes = (16 << 20) if settings.dry_run else COPY_BYTES
    bandwidth = copy_bandwidth(copy_bytes, settings.iterations, settings.repeats, settings.warmup)
    print(f"copy bandwidth {bandwidth['bytes_per_s'] / 1e9:.1f} GB/s ({settings.label})", flush=True)
    rows = []
    for name in names:
        workload = workloads.get_workload(name)
        for shape in selected_shapes(workload, small):
            shape_rows = benchmark_shape(workload, shape, settings, bandwidth["bytes_per_s"])
            rows += shape_rows
            for r in shape_rows:
                print(f"{name:20s} {shape.label:28s} {r['implementation']:10s} {_time_cell(r):>26s} µs "
                      f"(net {_us(r.get('net_s'))})  {r['numerics']}", flush=True)
    return rows, {"copy_bandwidth": bandwidth}


def write_outputs(path: pathlib.Path, header: dict, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"{header['device']['kind']} — {header['dtype']}" + (" — DRY RUN, not a speed measurement"
                                                                  if header["dry_run"] else "")
    header["plot"] = plot_speedups(rows, path.with_suffix(".png"), title)
    with open(path, "w") as f:
        json.dump({"environment": header, "results": rows}, f, indent=1, default=float)
    table = markdown_table(rows) + "\n\nOptimization time (prism_jax):\n\n" + optimization_table(rows)
    path.with_suffix(".md").write_text(f"{title}\n\n{table}\n")
    print(table)
    print(f"results: {path} (+ .md); {header['plot']}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(argv)
    if not ns.dry_run and not has_gpu():
        print(NO_GPU.format(backend=jax.default_backend()))
        return 0
    ns.small = ns.small or ns.dry_run
    settings = settings_from(ns)
    names = ns.workload or list(workloads.WORKLOADS)
    for note in protocol_notes(settings):
        print(note, flush=True)
    with prism_cache(ns.cache_dir, "prism_jax_gpu_bench_") as cache:
        rows, measured = run_all(names, settings, ns.small)
    command = common.command_line("benchmarks/gpu.py", argv)
    header = environment(command, settings, {**measured, "prism_cache": cache, "small_shapes": ns.small,
                                             "protocol_notes": protocol_notes(settings),
                                             "optimization_totals": optimization_totals(rows)})
    write_outputs(output_path(ns, settings.dry_run), header, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
