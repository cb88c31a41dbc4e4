"""CPU benchmark of a whole LLM step: one KV-cache decode step of the Llama-style block
(``prism_jax.workloads.llama``: RMSNorm, grouped-query attention with QK-norm, RoPE, SwiGLU MLP) through
``superoptimize(backend="cpu")`` against ``jax.jit``, timed as ``cpu.py`` times a workload (chained calls
in one jitted loop, loops interleaved A, B, A, B, ..., each right after an untimed run of itself).

    .venv/bin/python benchmarks/cpu_llama_decode.py [--dtype float32|bfloat16 ...] [--time-limit 10]
        [--cache-dir DIR] [--out benchmarks/results/cpu_llama_decode.json]
    .venv/bin/python benchmarks/cpu_llama_decode.py --quick   # the tiny block, few calls: a smoke run

Where the per-region workloads of ``cpu.py`` each are one region, this step has several, with XLA code
between them (RoPE, the cache update): the row says which regions run kernels and whether the whole
rewritten program beat ``jax.jit``'s (``explain()``'s whole-program check), and the step's time is
the user's figure for decoding."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import pathlib
import sys
from typing import Sequence

import jax
import jax.numpy as jnp

import prism_jax
from prism_jax.tune import measure
from prism_jax.workloads.llama import LlamaConfig, llama_block_fn, tiny_config


def _cpu_harness():
    """``cpu.py`` (timing, CPU description, shared helpers), loaded by its path once."""
    if "benchmarks_cpu" not in sys.modules:
        path = pathlib.Path(__file__).resolve().parent / "cpu.py"
        spec = importlib.util.spec_from_file_location("benchmarks_cpu", path)
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules["benchmarks_cpu"]


cpu = _cpu_harness()
common = cpu.common

# a 1B-class layer's shape at a quarter of the width: dim 1024, 8 query heads, 2 KV heads of 128
STEP_CONFIG = LlamaConfig(dim=1024, n_heads=8, n_kv_heads=2, head_dim=128, hidden_dim=2816, qk_norm=True)
CONTEXT, CACHE_LEN = 512, 1024  # tokens in the KV cache before the step, cache capacity


def decode_args(config: LlamaConfig, dtype, context: int, cache_len: int, seed: int = 1) -> tuple:
    """One new token and a KV cache of ``cache_len`` positions, the first ``context`` of them in use."""
    keys = jax.random.split(jax.random.key(seed), 3)
    token = jax.random.normal(keys[0], (1, 1, config.dim), dtype)
    shape = (1, config.n_kv_heads, cache_len, config.head_dim)
    return token, jax.random.normal(keys[1], shape, dtype), jax.random.normal(keys[2], shape, dtype), jnp.int32(context)


def benchmark(dtype: str, ns: argparse.Namespace) -> dict:
    config, context, cache_len = (tiny_config(qk_norm=True), 8, 16) if ns.quick else (STEP_CONFIG, CONTEXT, CACHE_LEN)
    fn, params = llama_block_fn(config, mode="decode", dtype=jnp.dtype(dtype))
    args = (params, *decode_args(config, jnp.dtype(dtype), context, cache_len))
    search = prism_jax.SearchConfig(time_limit_s=ns.time_limit, progress=False)
    optimized, optimization, notes = common.build_superoptimized(fn, args, "cpu", search, prism_jax.TuneConfig())
    expected = common.reference_output(fn, args)
    programs = {"xla": jax.jit(fn), "prism_jax": optimized}
    numerics = {name: common.numerics_verdict(f(*args), expected, cpu.TOLERANCE[dtype])[1] for name, f in programs.items()}
    loops = {name: measure.Chain(f, args, 1, ns.unroll) for name, f in programs.items()}
    timings = cpu.time_interleaved(loops, (), iterations=ns.iterations, repeats=ns.repeats, warmup=2, settle=True)
    per_call = {name: {k: t[k] / ns.unroll for k in ("median_s", "min_s", "max_s")} for name, t in timings.items()}
    report = optimized.explain(*args)
    return {"dtype": dtype, "config": dataclasses.asdict(config),
            "context": context, "cache_len": cache_len, "timing": per_call, "numerics": numerics,
            "speedup_median": per_call["xla"]["median_s"] / per_call["prism_jax"]["median_s"],
            "regions": optimization["regions"], "notes": notes, "program": report.program_line(),
            "build_s": optimization["build_s"], "second_build_s": optimization["second_build_s"]}


def row_text(r: dict) -> str:
    t = r["timing"]
    kernels = sum(x["uses_kernel"] for x in r["regions"])
    return (f"| {r['dtype']} | {common.us(t['xla']['median_s'])} ({common.us(t['xla']['min_s'])}) | "
            f"{common.us(t['prism_jax']['median_s'])} ({common.us(t['prism_jax']['min_s'])}) | "
            f"{r['speedup_median']:.2f}× | {kernels}/{len(r['regions'])} | {r['program'] or '-'} | "
            f"{r['build_s']:.1f} / {r['second_build_s']:.1f} | {r['numerics']['xla']}; {r['numerics']['prism_jax']} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", action="append", choices=cpu.DTYPES, help="repeatable (default: both)")
    parser.add_argument("--time-limit", type=float, default=10.0, help="search seconds per region")
    parser.add_argument("--iterations", type=int, default=20, help="timed loops per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds")
    parser.add_argument("--unroll", type=int, default=10, help="chained calls per timed loop")
    parser.add_argument("--cache-dir", help="prism_jax cache (default: a fresh temporary directory)")
    parser.add_argument("--quick", action="store_true", help="the tiny block, few calls (not a benchmark figure)")
    parser.add_argument("--out", help="results JSON (a markdown table is written beside it)")
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.iterations, ns.repeats, ns.unroll, ns.time_limit = 2, 1, 2, min(ns.time_limit, 2.0)
    with common.prism_cache(ns.cache_dir) as cache:
        rows = [benchmark(dtype, ns) for dtype in ns.dtype or cpu.DTYPES]
    header = {"cpu": cpu.cpu_info(), "versions": common.package_versions(), **common.git_commit(),
              "date": common.utc_now(), "command": common.command_line("benchmarks/cpu_llama_decode.py", argv or sys.argv[1:]),
              "cache": cache, "quick": ns.quick, "timing": cpu.TIMING_LOOP}
    table = ["| dtype | XLA µs median (min) | prism_jax µs median (min) | speedup | regions with a kernel | "
             "whole program | build s first / second | numerics (XLA; prism_jax) |", "|---|---|---|---|---|---|---|---|"]
    table += [row_text(r) for r in rows]
    print("\n".join(table))
    if ns.out:
        out = pathlib.Path(ns.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"header": header, "rows": rows}, indent=2, default=str))
        out.with_suffix(".md").write_text(f"{header['cpu']['model']}: {header['date']}, commit {header['commit']}, "
                                          f"`{header['command']}`\n\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
