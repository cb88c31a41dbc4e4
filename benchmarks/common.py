"""What the benchmark harnesses (``gpu.py``, ``cpu.py``) share: the roofline's bytes and FLOPs, the float32
reference and its error, prism_jax builds and their optimization time, the run's environment (versions,
git commit), table cells and the speedup plot.

``benchmarks/`` is not a package: the scripts load this file by its path, once, as the module
``benchmarks_common``."""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import pathlib
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import prism_jax
from prism_jax.tune import max_relative_error

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------------------------------------
# Roofline
# ---------------------------------------------------------------------------------------------------


def io_bytes(fn: Callable, args: Sequence[Any]) -> int:
    """Every input read once + every output written once."""
    outs = jax.tree.leaves(jax.eval_shape(fn, *args))
    return sum(int(a.nbytes) for a in jax.tree.leaves(args)) + sum(math.prod(o.shape) * o.dtype.itemsize for o in outs)


def _subjaxprs(params: dict) -> list:
    found = []
    for value in params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if hasattr(item, "eqns"):
                found.append(item)
            elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
                found.append(item.jaxpr)
    return found


def _dot_flops(eqn) -> int:
    (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    contract = math.prod(lhs[d] for d in lhs_contract)
    batch = math.prod(lhs[d] for d in lhs_batch)
    lhs_free = math.prod(lhs) // (contract * batch)
    rhs_free = math.prod(rhs) // (contract * batch)
    return 2 * batch * contract * lhs_free * rhs_free


def _jaxpr_flops(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            total += _dot_flops(eqn)
        for sub in _subjaxprs(eqn.params):
            total += _jaxpr_flops(sub)
    return total


def matmul_flops(fn: Callable, args: Sequence[Any]) -> int:
    """2·M·N·K summed over the function's matmuls (``dot_general`` in its jaxpr, as written: a causal
    mask's skipped half is counted too)."""
    return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


# ---------------------------------------------------------------------------------------------------
# Numerics
# ---------------------------------------------------------------------------------------------------


def reference_output(fn: Callable, args: Sequence[Any]) -> list[np.ndarray]:
    """``jax.jit(fn)`` on float32 copies of the inputs' floating-point leaves (any pytrees; integer
    leaves as they are), matmuls at full float32 precision."""
    def widen(a):
        return a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a

    with jax.default_matmul_precision("highest"):
        out = jax.jit(fn)(*jax.tree.map(widen, tuple(args)))
    return [np.asarray(o, np.float64) for o in jax.tree.leaves(out)]


def numerics_verdict(out: Any, expected: list[np.ndarray], allowed: float) -> tuple[bool, str, float]:
    """``out`` (any pytree of arrays) against the float32 reference: (passes, verdict text, error)."""
    error = max_relative_error([np.asarray(o, np.float64) for o in jax.tree.leaves(out)], expected)
    verdict = f"max rel. error {error:.1e} (allowed {allowed:.0e})"
    return error <= allowed, ("ok, " if error <= allowed else "FAILED: ") + verdict, error


# ---------------------------------------------------------------------------------------------------
# prism_jax builds and their optimization time
# ---------------------------------------------------------------------------------------------------


def region_summary(plan) -> dict:
    """One region of an ``Explanation``'s plan: kernel or XLA, search + tune seconds, cache, estimates."""
    choice, search = plan.choice, plan.search
    stats_s = search.stats.seconds if search is not None else {}
    return {"region": plan.region.name, "uses_kernel": plan.uses_kernel, "note": plan.note,
            "search_tune_s": plan.seconds, "search_s_recorded": stats_s.get("total", sum(stats_s.values()) or None),
            "search_cache_hit": bool(search is not None and search.cache_hit),
            "cache_hit": bool(search is not None and search.cache_hit and choice is not None and choice.cache_hit),
            "estimate_s": getattr(choice, "estimate_s", None),
            "xla_estimate_s": getattr(choice, "xla_estimate_s", None),
            "tuner_measured_s": getattr(choice, "measured_s", None),
            "tuner_xla_measured_s": getattr(choice, "xla_measured_s", None),
            "max_error": getattr(choice, "max_error", None), "sizes": dict(choice.sizes) if choice else None}


def build_superoptimized(fn: Callable, args: Sequence[Any], backend: str, search_config,
                         tune_config) -> tuple[Any, dict, list[str]]:
    """``prism_jax.superoptimize(fn)`` built for ``args`` (timed), then built again by a fresh
    ``superoptimize`` (timed: the cache hit). Returns the first build, its optimization record
    (build seconds, second build seconds, regions) and notes (regions left on XLA, with the reason)."""
    def build():
        start = time.perf_counter()
        optimized = prism_jax.superoptimize(fn, backend=backend, search_config=search_config,
                                            tune_config=tune_config, progress=False)
        explanation = optimized.explain(*args)
        return optimized, explanation, time.perf_counter() - start

    optimized, explanation, first_s = build()
    _, again, second_s = build()
    regions = [region_summary(p) for p in explanation.plan.regions]
    notes = [f"{sum(r['uses_kernel'] for r in regions)}/{len(regions)} regions run a kernel"]
    notes += [f"{r['region']}: XLA ({r['note']})" for r in regions if not r["uses_kernel"]]
    if explanation.plan.note:
        notes.append(explanation.plan.note)
    optimization = {"build_s": first_s, "second_build_s": second_s, "regions": regions,
                    "second_build_cache_hit": all(region_summary(p)["cache_hit"] for p in again.plan.regions)}
    return optimized, optimization, notes


def _first_build_cache(region: dict) -> str:
    return "hit" if region["cache_hit"] else "search hit" if region["search_cache_hit"] else "miss"


def optimization_table(rows: list[dict]) -> str:
    """prism_jax's optimization time per workload and shape (and dtype, where the rows have more than
    one): first build (search + tune per region, with what the cache held) and second build (a cache hit)."""
    with_dtype = len({r.get("dtype") for r in rows}) > 1
    head = "| workload | shape | " + ("dtype | " if with_dtype else "")
    lines = [head + "regions with a kernel | search + tune s (per region) | first build cache | "
             "first build s | second build s (cache) |", "|---" * (7 + with_dtype) + "|"]
    for r in rows:
        opt = r.get("optimization")
        if r["implementation"] != "prism_jax" or opt is None:
            continue
        regions = opt["regions"]
        per_region = ", ".join(f"{g['search_tune_s']:.2f}" for g in regions)
        cache = ", ".join(_first_build_cache(g) for g in regions)
        dtype = f"{r['dtype']} | " if with_dtype else ""
        lines.append(f"| {r['workload']} | {r['shape_label']} | {dtype}{sum(g['uses_kernel'] for g in regions)}/"
                     f"{len(regions)} | {per_region} | {cache} | {opt['build_s']:.2f} | {opt['second_build_s']:.2f} "
                     f"({'hit' if opt['second_build_cache_hit'] else 'miss'}) |")
    return "\n".join(lines)


def optimization_totals(rows: list[dict]) -> dict:
    """Per workload, prism_jax's build seconds summed over its shapes (and dtypes): first builds (the
    search once, tuning per shape) and second builds (cache hits)."""
    totals: dict[str, dict] = {}
    for r in rows:
        if r["implementation"] == "prism_jax" and r.get("optimization"):
            t = totals.setdefault(r["workload"], {"shapes": 0, "first_builds_s": 0.0, "second_builds_s": 0.0})
            t["shapes"] += 1
            t["first_builds_s"] += r["optimization"]["build_s"]
            t["second_builds_s"] += r["optimization"]["second_build_s"]
    return totals


@contextlib.contextmanager
def prism_cache(path: str | None, prefix: str = "prism_jax_bench_"):
    """``PRISM_JAX_CACHE_DIR`` set to ``path`` or to a fresh temporary directory, restored after."""
    previous = os.environ.get("PRISM_JAX_CACHE_DIR")
    with contextlib.ExitStack() as stack:
        directory = path or stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix))
        os.environ["PRISM_JAX_CACHE_DIR"] = directory
        try:
            yield "fresh temporary directory" if path is None else directory
        finally:
            if previous is None:
                os.environ.pop("PRISM_JAX_CACHE_DIR", None)
            else:
                os.environ["PRISM_JAX_CACHE_DIR"] = previous


# ---------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """A file-name-safe lower-case form of a device or CPU name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "unknown"


def run_command(cmd: list[str]) -> str | None:
    """A command's stripped stdout, or None when it cannot run or fails."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def package_versions() -> dict:
    import importlib.metadata as metadata

    versions = {"python": platform.python_version(), "prism_jax": prism_jax.__version__}
    for name in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def git_commit() -> dict:
    commit = run_command(["git", "rev-parse", "HEAD"])
    dirty = run_command(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def command_line(script: str, argv: Sequence[str]) -> str:
    """How this run was started, relative to the repository root."""
    return shlex.join([os.path.relpath(sys.executable, ROOT), script, *argv])


# ---------------------------------------------------------------------------------------------------
# Table cells and the plot
# ---------------------------------------------------------------------------------------------------


def us(seconds: float | None) -> str:
    """Microseconds, 4 significant digits ("-" for none)."""
    return "-" if seconds is None else f"{seconds * 1e6:.4g}"


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def time_cell(r: dict) -> str:
    """µs per call: median (min–max)."""
    if r.get("median_s") is None:
        return "-"
    return f"{us(r['median_s'])} ({us(r['min_s'])}–{us(r['max_s'])})"


def geometric_mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def plot_speedups(rows: list[dict], path: pathlib.Path, title: str) -> str:
    """A PNG of speedup vs XLA per (workload, shape[, dtype]), one bar per non-XLA implementation;
    returns a note (written, or why not)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed"
    with_dtype = len({r.get("dtype") for r in rows}) > 1
    keys = list(dict.fromkeys((r["workload"], r["shape_label"], r.get("dtype")) for r in rows))
    impls = list(dict.fromkeys(r["implementation"] for r in rows if r["implementation"] != "xla"))
    speed = {(r["workload"], r["shape_label"], r.get("dtype"), r["implementation"]): r.get("speedup_vs_xla")
             for r in rows}
    width = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(keys)), 4.5))
    for i, impl in enumerate(impls):
        values = [speed.get((*key, impl)) or 0.0 for key in keys]
        ax.bar([k + i * width for k in range(len(keys))], values, width, label=impl)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([k + width * (len(impls) - 1) / 2 for k in range(len(keys))])
    ax.set_xticklabels([f"{w}\n{s}" + (f"\n{d}" if with_dtype else "") for w, s, d in keys], rotation=60, ha="right",
                       fontsize=7)
    ax.set_ylabel("speedup vs XLA (jax.jit)")
    ax.set_title("\n".join(textwrap.wrap(title, 110)), fontsize=9)  # a CPU's flags make a long title
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written: {path}"
