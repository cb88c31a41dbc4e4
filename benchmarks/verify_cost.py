"""Per-candidate verification cost: the fingerprint and the e-graph proof for every hand-built example
(symbolic sizes), and the e-graph's time to give up on the wrong candidates derived from them.

    .venv/bin/python benchmarks/verify_cost.py [--repeat 5] [--json benchmarks/results/verify_cost.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import jax

import prism_jax
from prism_jax.cost import host_cpu
from prism_jax.ir.examples import EXAMPLES
from prism_jax.verify import EGraphVerifier, FingerprintVerifier, Status
from prism_jax.verify.mutate import mutants


def _median_ms(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for name, example in EXAMPLES.items():
        ref, cand = example.symbolic_reference(), example.symbolic()
        fp_ms, fp = _median_ms(lambda: FingerprintVerifier().verify(ref, cand), args.repeat)
        eg_ms, eg = _median_ms(lambda: EGraphVerifier().verify(ref, cand), args.repeat)
        wrong = list(mutants(cand))
        refuted = [FingerprintVerifier().verify(ref, m.graph) for m in wrong]
        disproofs = [EGraphVerifier().verify(ref, m.graph) for m in wrong]
        rows.append({
            "example": name, "fingerprint_ms": round(fp_ms, 2), "fingerprint": fp.status.value,
            "egraph_ms": round(eg_ms, 1), "egraph": eg.status.value, "egraph_detail": eg.detail,
            "wrong_candidates": len(wrong),
            "wrong_refuted_by_fingerprint": sum(v.status is Status.NOT_EQUAL for v in refuted),
            "wrong_fingerprint_median_ms": round(statistics.median([v.seconds * 1e3 for v in refuted]), 2)
            if refuted else None,
            "wrong_proved_by_egraph": sum(v.status is Status.EQUAL for v in disproofs),
            "wrong_egraph_max_ms": round(max(v.seconds * 1e3 for v in disproofs), 1) if disproofs else None,
        })
    header = ["example", "fingerprint_ms", "egraph_ms", "egraph", "wrong_candidates",
              "wrong_refuted_by_fingerprint", "wrong_fingerprint_median_ms", "wrong_proved_by_egraph",
              "wrong_egraph_max_ms"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        cpu = host_cpu()
        meta = {"machine": platform.machine(), "cpu": cpu.name, "cores": cpu.parallel_units, "python": sys.version.split()[0], "jax": jax.__version__,
                "prism_jax": prism_jax.__version__, "commit": commit, "repeat": args.repeat}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
