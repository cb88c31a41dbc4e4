"""``python -m prism_jax`` / ``prism-jax``: the demo and small utilities.

``demo`` traces the BENCHMARKS.md workloads, prints each one's regions as IR, checks that running the
regions through the reference interpreter reproduces ``jax.jit`` exactly, and prints a summary table.
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

    chosen = [workloads.get_workload(n) for n in args.workload] if args.workload else \
        list(workloads.WORKLOADS.values())
    rows, failures = [], 0
    for wl in tqdm(chosen, desc="tracing workloads", file=sys.stderr, disable=args.quiet):
        shape = workloads.small_shape(wl) if args.small else wl.shapes[0]
        call_args = wl.make_args(shape, args.dtype, 0)
        start = time.perf_counter()
        traced = prism_jax.trace(wl.fn, *call_args)
        trace_s = time.perf_counter() - start
        got, want = traced.evaluate(*call_args), jax.jit(wl.fn)(*call_args)
        err = max(_relative_error(g, w) for g, w in zip(jax.tree_util.tree_leaves(got),
                                                         jax.tree_util.tree_leaves(want)))
        ok = err <= args.rtol
        failures += not ok
        if not args.quiet:  # tqdm.write keeps the progress bar intact
            tqdm.write(f"\n=== {wl.name} {shape.label} ({wl.suite.value}) ===\n{traced}")
        ops = sum(len(r.graph.ops) for r in traced.regions)
        rows.append((wl.name, shape.label, len(traced.regions), ops, f"{trace_s * 1e3:.0f}", f"{err:.1e}",
                     "ok" if ok else "MISMATCH"))
    _print_table(("workload", "shape", "regions", "IR ops", "trace ms", "rel error", "interpreter vs jit"), rows)
    return 1 if failures else 0


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
    demo = sub.add_parser("demo", help="trace the benchmark workloads and print their regions and IR")
    demo.add_argument("--workload", action="append", help="only this workload (repeatable)")
    demo.add_argument("--small", action="store_true", help="tiny shapes (fast) instead of the first BENCHMARKS.md shape")
    demo.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    demo.add_argument("--rtol", type=float, default=1e-4, help="tolerance of the interpreter-vs-jit check")
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
