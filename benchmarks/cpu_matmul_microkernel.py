"""CPU tile runtime matmul (csrc/runtime/prism_cpu.h) against XLA's CPU dot on decode shapes.

    .venv/bin/python benchmarks/cpu_matmul_microkernel.py [--m 1 8 16] [--k 4096] [--n 4096]
        [--repeat 25] [--xla-single-thread] [--json benchmarks/results/cpu_matmul_microkernel.json]

The header is compiled into a small ctypes shim as generated kernels are (g++ -O3 -march=native);
`matmul_acc` (float32 B) and `matmul_acc_bf16` (bfloat16 B widened in registers) run on one thread.
XLA runs `jax.jit(lambda a, b: a @ b)` on the same shapes: float32 for the float32 rows; for the bfloat16
rows `dot(a.astype(bf16), b_bf16, preferred_element_type=f32)` (column xla) and, timed in a separate pass,
`dot(a_f32, b_bf16, preferred_element_type=f32)` (xla_mixed: XLA converts B to float32 first).  prism and
xla are timed call by call, interleaved (the host is shared and noisy), medians after a warm-up.  Before
every timed call an untimed pass reads a 64 MiB buffer, so each call starts from the same cold cache
(decode streams weights that are not in cache).  xla_mixed is kept out of the interleaving: the call after
it pays for writing back its 64 MiB float32 copy of B and runs up to 2x slower.  GB/s is B's bytes / time.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHIM = r"""
#include "prism_cpu.h"
using i64 = std::int64_t;
extern "C" {
void shim_matmul(const float* A, i64 lda, const float* B, i64 ldb, float* C, i64 ldc, i64 M, i64 N, i64 K) {
  prism_jax::cpu::matmul_acc(A, lda, B, ldb, C, ldc, M, N, K);
}
void shim_matmul_bf16(const float* A, i64 lda, const std::uint16_t* B, i64 ldb, float* C, i64 ldc, i64 M,
                      i64 N, i64 K) {
  prism_jax::cpu::matmul_acc_bf16(A, lda, B, ldb, C, ldc, M, N, K);
}
}
"""


def build_shim(workdir: Path) -> ctypes.CDLL:
    from prism_jax.native import runtime_include_dir

    cxx = shutil.which("g++")
    if cxx is None:
        raise SystemExit("g++ not found")
    src, lib = workdir / "shim.cc", workdir / "shim.so"
    src.write_text(SHIM)
    cmd = [cxx, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", f"-I{runtime_include_dir()}",
           str(src), "-o", str(lib)]
    subprocess.run(cmd, check=True)
    dll = ctypes.CDLL(str(lib))
    for name in ("shim_matmul", "shim_matmul_bf16"):
        getattr(dll, name).argtypes = [ctypes.c_void_p, ctypes.c_int64] * 3 + [ctypes.c_int64] * 3
        getattr(dll, name).restype = None
    return dll


def timed(fn, scrub) -> float:
    scrub.sum()  # untimed: evict (and write back) what the previous call left in the caches
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=25, help="timed calls per contender (>= 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--xla-single-thread", action="store_true",
                        help="run XLA's CPU backend on one thread too (XLA_FLAGS)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.xla_single_thread:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()

    import jax
    import jax.numpy as jnp
    import ml_dtypes
    import numpy as np

    import prism_jax
    from prism_jax.cost import host_cpu

    K, N = args.k, args.n
    rng = np.random.default_rng(0)
    b32 = rng.standard_normal((K, N), dtype=np.float32)
    b16 = b32.astype(ml_dtypes.bfloat16)
    b16_bits = b16.view(np.uint16)
    jb32, jb16 = jnp.asarray(b32), jnp.asarray(b16)
    scrub = np.ones(16 << 20, np.float32)
    xla_f32 = jax.jit(lambda a, b: a @ b)
    xla_bf16 = jax.jit(lambda a, b: jnp.dot(a.astype(jnp.bfloat16), b, preferred_element_type=jnp.float32))
    xla_mixed = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))

    with tempfile.TemporaryDirectory() as tmp:
        dll = build_shim(Path(tmp))
        rows = []
        for M in args.m:
            a = rng.standard_normal((M, K), dtype=np.float32)
            ja = jnp.asarray(a)
            c = np.zeros((M, N), np.float32)
            for variant in ("f32", "bf16"):
                b_np = b32 if variant == "f32" else b16_bits
                fn = dll.shim_matmul if variant == "f32" else dll.shim_matmul_bf16
                contenders = {
                    "prism": lambda: fn(a.ctypes.data, K, b_np.ctypes.data, N, c.ctypes.data, N, M, N, K)}
                if variant == "f32":
                    contenders["xla"] = lambda: xla_f32(ja, jb32).block_until_ready()
                else:
                    contenders["xla"] = lambda: xla_bf16(ja, jb16).block_until_ready()
                for f in contenders.values():
                    for _ in range(args.warmup):
                        f()
                times = {name: [] for name in contenders}
                for _ in range(args.repeat):  # interleaved: A, B, A, B, ...
                    for name, f in contenders.items():
                        times[name].append(timed(f, scrub))
                if variant == "bf16":  # on its own, after the others
                    mixed = lambda: xla_mixed(ja, jb16).block_until_ready()  # noqa: E731
                    for _ in range(args.warmup):
                        mixed()
                    times["xla_mixed"] = [timed(mixed, scrub) for _ in range(args.repeat)]
                flops, b_bytes = 2.0 * M * N * K, K * N * (4 if variant == "f32" else 2)
                med = {name: statistics.median(t) for name, t in times.items()}
                best_xla = min(v for name, v in med.items() if name != "prism")  # xla is the faster one
                row = {"M": M, "K": K, "N": N, "B": variant}
                for name, t in med.items():
                    row[f"{name}_ms"] = round(t * 1e3, 3)
                    row[f"{name}_gflops"] = round(flops / t / 1e9, 1)
                    row[f"{name}_gbps"] = round(b_bytes / t / 1e9, 1)
                row["speedup_vs_xla"] = round(best_xla / med["prism"], 2)
                rows.append(row)

    header = ["M", "K", "N", "B", "prism_ms", "prism_gflops", "prism_gbps",
              "xla_ms", "xla_gflops", "xla_gbps", "xla_mixed_ms", "speedup_vs_xla"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row.get(h, "")) for h in header) + " |")
    if args.json:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        commit = git.stdout.strip()
        cpu = host_cpu()
        meta = {"machine": platform.machine(), "cpu": cpu.name, "cores": cpu.parallel_units,
                "python": sys.version.split()[0], "jax": jax.__version__, "prism_jax": prism_jax.__version__,
                "commit": commit, "repeat": args.repeat, "xla_flags": os.environ.get("XLA_FLAGS", "")}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
