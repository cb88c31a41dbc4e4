"""``python -m prism_jax`` / ``prism-jax``: the demo and small utilities.

``demo`` superoptimizes the Prism workloads of BENCHMARKS.md (or the ones named): each region is
searched, proved, instantiated and checked against ``jax.jit``; the kernels are tuned and timed against
XLA's program for each region where they run (Pallas on a GPU, native C++ kernels on a CPU;
``--backend interpret`` runs Pallas kernels in interpret mode, numerics only), and the cost model's H100
estimates stand beside (labelled as estimates). One table at the end; a second run finds everything in
the on-disk cache.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Sequence

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    import jax
    from tqdm import tqdm

    import prism_jax
    from prism_jax import workloads

    chosen = [workloads.get_workload(n) for n in args.workload] if args.workload else workloads.prism_workloads()
    on_gpu = jax.default_backend() == "gpu"
    backend = args.backend or ("pallas" if on_gpu else "cpu")
    config = prism_jax.SearchConfig(time_limit_s=args.time_limit, progress=False)
    rows, failures = [], 0
    for wl in tqdm(chosen, desc=f"superoptimizing ({backend})", file=sys.stderr, disable=args.quiet):
        shape = workloads.small_shape(wl) if args.small else wl.shapes[0]
        fn = wl.fn_for(shape)
        call_args = wl.make_args(shape, args.dtype, 0)
        optimized = prism_jax.superoptimize(fn, backend=backend, search_config=config, progress=not args.quiet)
        start = time.perf_counter()
        report = optimized.explain(*call_args)
        build_s = time.perf_counter() - start
        got, want = optimized(*call_args), jax.jit(fn)(*call_args)
        err = max(_relative_error(g, w) for g, w in zip(jax.tree_util.tree_leaves(got),
                                                         jax.tree_util.tree_leaves(want)))
        ok = err <= (args.rtol if args.dtype == "float32" else 5e-2)
        failures += not ok
        if not args.quiet:  # tqdm.write keeps the progress bar intact
            tqdm.write(f"\n=== {wl.name} {shape.label} ===\n{report}")
        rows.append(_demo_row(wl.name, shape.label, report.plan, build_s, err, ok))
    where = "GPU" if backend == "pallas" else "CPU" if backend == "cpu" else "interp."
    _print_table(("workload", "shape", "kernels", "proof", f"prism {where}", f"XLA {where}", "speedup",
                  "prism H100 est.", "XLA H100 est.", "search+tune s", "cache", "rel error", "check"), rows)
    print()
    if backend == "interpret":
        print(f"kernels ran in Pallas interpret mode on {jax.default_backend()} (numerics only: nothing timed)")
    elif backend == "cpu":
        print(f"native CPU kernels ({_cpu_name()}), each timed against jax.jit's program for the region on this "
              "machine (chained calls in one jitted loop); a region whose kernel lost runs on XLA and counts "
              "XLA's time")
    print("H100 est.: the cost model's estimate for an H100 SXM of the best proved candidate and of XLA's "
          "fused program; estimates, not measurements")
    return 1 if failures else 0


def _cpu_name() -> str:
    from prism_jax.cost import host_cpu

    spec = host_cpu()
    return f"{spec.name}, {spec.parallel_units} cores, {'/'.join(spec.isa) or 'no SIMD flags'}"


def _demo_row(name: str, shape: str, plan, build_s: float, err: float, ok: bool) -> tuple:
    kernel_s = xla_s = 0.0
    for p in plan.regions:
        choice = p.choice
        if choice is None or choice.xla_measured_s is None:
            kernel_s = xla_s = 0.0  # nothing measured (interpret mode, or a region without candidates)
            break
        mine = choice.measured_s if p.uses_kernel else choice.xla_measured_s
        kernel_s, xla_s = kernel_s + mine, xla_s + choice.xla_measured_s
    prism_est, xla_est = _h100_estimates(plan)
    kernels = sum(len(p.choice.graph.custom_kernels) for p in plan.regions if p.uses_kernel)
    proofs = sorted({p.search.candidates[p.choice.candidate].verdict.method for p in plan.regions if p.uses_kernel})
    hit = all(p.search is not None and p.search.cache_hit and (p.choice is None or p.choice.cache_hit)
              for p in plan.regions)
    speedup = f"{xla_s / kernel_s:.2f}x" if kernel_s and xla_s else "-"
    return (name, shape, kernels, ",".join(proofs) or "-", _us(kernel_s), _us(xla_s), speedup, _us(prism_est),
            _us(xla_est), f"{build_s:.1f}", "hit" if hit else "miss", f"{err:.1e}", "ok" if ok else "MISMATCH")


def _h100_estimates(plan) -> tuple[float, float]:
    """The cost model's H100 seconds: per region its best proved candidate (or XLA's program where none
    is cheaper), and XLA's program; summed over the regions."""
    from prism_jax.cost import H100_SXM, TRITON, estimate, ranked_sizes

    prism_s = xla_s = 0.0
    for p in plan.regions:
        xla = estimate(p.region.graph, H100_SXM).seconds
        best = xla
        for candidate in (p.search.candidates if p.search is not None else ())[:10]:
            ranked = ranked_sizes(candidate.graph, H100_SXM, p.search.sizes, 1, rules=TRITON)
            best = min([best] + [r.seconds for r in ranked])
        prism_s, xla_s = prism_s + best, xla_s + xla
    return prism_s, xla_s


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs" if seconds else "-"


def _relative_error(got, want) -> float:
    """max |got − want| relative to the largest |want| (elementwise ratios explode near zero)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*map(str, row)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prism-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="superoptimize the Prism workloads and print what was found, checked and timed")
    demo.add_argument("--workload", action="append", help="only this workload (repeatable; any BENCHMARKS.md name)")
    demo.add_argument("--small", action="store_true", help="tiny shapes (fast) instead of the first BENCHMARKS.md shape")
    demo.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    demo.add_argument("--rtol", type=float, default=1e-4, help="float32 tolerance of the check against jax.jit")
    demo.add_argument("--time-limit", type=float, default=60.0, help="search seconds per region")
    demo.add_argument("--backend", choices=("interpret", "cpu", "pallas"),
                      help="where kernels run (default: pallas on a GPU, else cpu: native kernels timed against XLA); "
                           "interpret: Pallas interpret mode, numerics only")
    demo.add_argument("--quiet", action="store_true", help="only the summary table")
    demo.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub.add_parser("version", help="print versions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    if args.command == "version":
        import jax

        import prism_jax

        print(f"prism_jax {prism_jax.__version__}, jax {jax.__version__}")
        return 0
    return _demo(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
