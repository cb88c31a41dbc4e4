"""Symbolic search time per workload (cold, then the second run's cache hit) and what it found.

    .venv/bin/python benchmarks/search_time.py [--suite prism|mirage|all] [--dtype bfloat16]
        [--time-limit 60] [--json benchmarks/results/search_time.json] [--markdown]

Each workload is traced at its first BENCHMARKS.md shape; the cold run uses a fresh cache directory,
the second run the same directory (a cache hit: only re-ranking). Rows record the device the cost
model ranks for (an estimate, labelled so), the machine, and the versions."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax

import prism_jax
from prism_jax import workloads
from prism_jax.ir import OpKind
from prism_jax.search import SearchConfig


def describe(candidate) -> str:
    """One line: kernels, and for a single fused kernel which inputs the loop walks and its accumulators."""
    if candidate is None:
        return "nothing proved"
    kernels = [op for op in candidate.graph.ops if op.kind == OpKind.CUSTOM_KERNEL]
    others = [op for op in candidate.graph.ops if op.kind not in (OpKind.CUSTOM_KERNEL, OpKind.RESHAPE)]
    if len(kernels) != 1 or others:
        return f"{len(kernels)} custom kernel(s) + {len(others)} other op(s)"
    block = kernels[0].block
    names = candidate.graph.input_names
    looped = [names[i.source] for i in block.inputs if any(f is True for f in i.fmap)]
    accumulators = sorted({op.kind.value for op in block.ops if op.kind.value.startswith("accum")})
    loop = f"loop over {', '.join(looped)}" if looped else "no loop"
    return f"1 fused kernel, {len(block.ops)} block ops, {loop}; {', '.join(accumulators) or 'no accumulators'}"


def run(name: str, dtype: str, config: SearchConfig, cache_dir: str) -> dict:
    wl = workloads.get_workload(name)
    args = wl.make_args(wl.shapes[0], dtype, 0)
    os.environ["PRISM_JAX_CACHE_DIR"] = cache_dir
    start = time.perf_counter()
    cold = prism_jax.search(wl.fn, *args, config=config)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    warm = prism_jax.search(wl.fn, *args, config=config)
    warm_s = time.perf_counter() - start
    region = cold.regions[0]
    best = region.best
    stats = region.stats
    return {"workload": name, "suite": wl.suite.value, "shape": dataclasses.asdict(wl.shapes[0]), "dtype": dtype,
            "regions": len(cold.regions), "search_s": round(cold_s, 2), "second_run_s": round(warm_s, 3),
            "second_run_cache_hit": all(r.cache_hit for r in warm.regions),
            "timed_out": stats.timed_out, "structures": stats.structures, "assignments": stats.assignments,
            "refuted": stats.refuted, "proved": stats.proved, "found": describe(best),
            "estimate_us": round(best.ranked.seconds * 1e6, 2) if best else None,
            "sizes": dict(best.ranked.sizes) if best else None, "stats": stats.rows()}


def environment(config: SearchConfig) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "jax": jax.__version__, "prism_jax": prism_jax.__version__,
            "commit": commit, "cost_model_device": config.device, "time_limit_s": config.time_limit_s}


def markdown(rows: list[dict]) -> str:
    lines = ["| workload | search s | 2nd run s (cache) | structures | map assignments | proved | best (estimate) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        estimate = f"{r['found']} (~{r['estimate_us']} µs est.)" if r["estimate_us"] else r["found"]
        lines.append(f"| {r['workload']} | {r['search_s']}{' (time limit)' if r['timed_out'] else ''} | "
                     f"{r['second_run_s']} ({'hit' if r['second_run_cache_hit'] else 'miss'}) | {r['structures']} | "
                     f"{r['assignments']} | {r['proved']} | {estimate} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["prism", "mirage", "all"], default="all")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--workload", action="append", help="only these workloads")
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    ns = parser.parse_args(argv)
    config = SearchConfig(time_limit_s=ns.time_limit, progress=False)
    names = ns.workload or [n for n, w in workloads.WORKLOADS.items() if ns.suite in ("all", w.suite.value)]
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as cache_dir:
            row = run(name, ns.dtype, config, cache_dir)
        rows.append(row)
        print(f"{name:22s} {row['search_s']:7.2f} s  second run {row['second_run_s']:.3f} s "
              f"({'hit' if row['second_run_cache_hit'] else 'miss'})  {row['found']}", flush=True)
    if ns.markdown:
        print(markdown(rows))
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump({"environment": environment(config), "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
