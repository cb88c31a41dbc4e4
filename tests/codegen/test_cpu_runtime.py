"""csrc/runtime/prism_cpu.h, the CPU tile runtime generated host kernels include: its matmuls and
bfloat16 conversions, compiled into a small shim once per code path (the AVX-512 micro-kernel with and
without AMX, the AVX2 one with 32 and with 16 vector registers, and the portable scalar fallback, with and
without AVX2 in the compiler flags), against numpy and ml_dtypes.  A build the host cannot run is skipped."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from prism_jax.native import runtime_include_dir

SHIM = r"""
#include "prism_cpu.h"
#include "prism_cpu_nt.h"
#include "prism_cpu_pool.h"
#include <thread>
#include <vector>
using namespace prism_jax::cpu;
using i64 = std::int64_t;
extern "C" {
int shim_path() { return detail::kAvx512 ? 2 : detail::kAvx2Fma ? 1 : 0; }
int shim_dp_compiled() { return PRISM_CPU_DP; }
int shim_prefetch_b() { return PRISM_CPU_PREFETCH_B; }
#if PRISM_CPU_AVX512
int shim_max_mr() { return detail::z::kMaxMr; }
#else
int shim_max_mr() { return detail::kMaxMr; }
#endif
void shim_matmul(const float* A, i64 lda, const float* B, i64 ldb, float* C, i64 ldc, i64 M, i64 N, i64 K) {
  matmul_acc(A, lda, B, ldb, C, ldc, M, N, K);
}
void shim_matmul_bf16(const float* A, i64 lda, const std::uint16_t* B, i64 ldb, float* C, i64 ldc, i64 M,
                      i64 N, i64 K) {
  matmul_acc_bf16(A, lda, B, ldb, C, ldc, M, N, K);
}
void shim_matmul_bf16_dot(const float* A, i64 lda, const std::uint16_t* B, i64 ldb, float* C, i64 ldc, i64 M,
                          i64 N, i64 K) {
  matmul_acc_bf16_dot(A, lda, B, ldb, C, ldc, M, N, K);
}
int shim_amx_compiled() { return PRISM_CPU_AMX; }
int shim_amx_available() { return amx::available() ? 1 : 0; }
void shim_to_bf16_each(const float* s, std::uint16_t* d, i64 n) {
  for (i64 i = 0; i < n; ++i) d[i] = f32_to_bf16(s[i]);
}
void shim_to_f32_each(const std::uint16_t* s, float* d, i64 n) {
  for (i64 i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
}
void shim_to_bf16(const float* s, std::uint16_t* d, i64 n) { f32_to_bf16(s, d, n); }
void shim_to_f32(const std::uint16_t* s, float* d, i64 n) { bf16_to_f32(s, d, n); }
void shim_matmul_nt(const float* A, i64 lda, const float* B, i64 ldb, float* C, i64 ldc, i64 M, i64 N, i64 K,
                    float* sumsq) {
  if (sumsq) matmul_nt_acc_sumsq(A, lda, B, ldb, C, ldc, M, N, K, sumsq);
  else matmul_nt_acc(A, lda, B, ldb, C, ldc, M, N, K);
}
void shim_matmul_nt_bf16(const float* A, i64 lda, const std::uint16_t* B, i64 ldb, float* C, i64 ldc, i64 M, i64 N,
                         i64 K, float* sumsq) {
  if (sumsq) matmul_nt_acc_bf16_sumsq(A, lda, B, ldb, C, ldc, M, N, K, sumsq);
  else matmul_nt_acc_bf16(A, lda, B, ldb, C, ldc, M, N, K);
}
void shim_matmul_nt_bf16_dot(const float* A, i64 lda, const std::uint16_t* B, i64 ldb, float* C, i64 ldc, i64 M,
                             i64 N, i64 K) {
  matmul_nt_acc_bf16_dot(A, lda, B, ldb, C, ldc, M, N, K);
}
static void count_block(void* ctx, i64 b) {
  reinterpret_cast<std::atomic<int>*>(ctx)[b].fetch_add(1);
}
// `callers` threads at once each run `blocks` blocks on the pool with `workers` threads; counts[c * blocks + b]
// is how often caller c's block b ran
void shim_pool_run(int callers, i64 workers, i64 blocks, int* counts) {
  std::vector<std::atomic<int>> seen(callers * blocks);
  for (auto& n : seen) n.store(0);  // (C++17 leaves a default-constructed atomic uninitialized)
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c)
    threads.emplace_back([&, c] { pool::shared_pool().run(workers, blocks, count_block, seen.data() + c * blocks); });
  for (auto& t : threads) t.join();
  for (i64 i = 0; i < callers * blocks; ++i) counts[i] = seen[i].load();
}
void shim_fast_exp(const float* s, float* d, i64 n) {
  for (i64 i = 0; i < n; ++i) d[i] = fast_exp(s[i]);
}
}
"""

COMMON = ["-std=c++17", "-pthread", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror"]
# name: (flags, CPU flags the host needs to run it, expected path (2 AVX-512, 1 AVX2, 0 scalar), max MR)
BUILDS = {
    # as generated kernels are built on an AVX-512 host: zmm micro-kernel, MR up to 14
    "avx512": (["-O3", "-march=native"], ("avx512f", "avx512bw", "avx512vl", "avx2", "fma"), 2, 14),
    # the ymm micro-kernel with AVX-512VL's 32 registers: MR up to 12
    "avx2_vl": (["-O3", "-march=native", "-DPRISM_CPU_NO_AVX512"], ("avx512vl", "avx2", "fma"), 1, 12),
    # an AVX2-only machine (AMD EPYC): 16 ymm registers, MR up to 6
    "avx2": (["-O3", "-mavx2", "-mfma", "-mno-avx512f"], ("avx2", "fma"), 1, 6),
    # the AVX-512 kernels with AMX switched off (matmul_acc_bf16_dot: VDPBF16PS where the host has
    # AVX512_BF16 and the compiler does not target AMX, else the zmm kernel on the rounded A), prefetching
    # B in the strip kernels whatever the host
    "avx512_no_amx": (["-O3", "-march=native", "-DPRISM_CPU_NO_AMX", "-DPRISM_CPU_PREFETCH_B=1"],
                      ("avx512f", "avx512bw", "avx512vl", "avx2", "fma"), 2, 14),
    # and without the VDPBF16PS kernel: the zmm kernel on the rounded A, and no prefetching
    "avx512_no_dp": (["-O3", "-march=native", "-DPRISM_CPU_NO_AMX", "-DPRISM_CPU_NO_DP", "-DPRISM_CPU_PREFETCH_B=0"],
                     ("avx512f", "avx512bw", "avx512vl", "avx2", "fma"), 2, 14),
    # the portable fallback: without AVX2 in the flags, and with it switched off by the macro
    "scalar": (["-O2", "-mno-avx2", "-mno-fma"], (), 0, None),
    "no_simd": (["-O2", "-march=native", "-DPRISM_CPU_NO_SIMD"], (), 0, None),
}


def _host_cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class Shim:
    def __init__(self, path: Path):
        lib = ctypes.CDLL(str(path))
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        for name in ("shim_matmul", "shim_matmul_bf16", "shim_matmul_bf16_dot", "shim_matmul_nt_bf16_dot"):
            getattr(lib, name).argtypes = [ptr, i64, ptr, i64, ptr, i64, i64, i64, i64]
            getattr(lib, name).restype = None
        lib.shim_pool_run.argtypes = [ctypes.c_int, i64, i64, ptr]
        lib.shim_pool_run.restype = None
        for name in ("shim_matmul_nt", "shim_matmul_nt_bf16"):
            getattr(lib, name).argtypes = [ptr, i64, ptr, i64, ptr, i64, i64, i64, i64, ptr]
            getattr(lib, name).restype = None
        for name in ("shim_to_bf16_each", "shim_to_f32_each", "shim_to_bf16", "shim_to_f32", "shim_fast_exp"):
            getattr(lib, name).argtypes = [ptr, ptr, i64]
            getattr(lib, name).restype = None
        self.lib = lib
        self.path = int(lib.shim_path())
        self.max_mr = int(lib.shim_max_mr())
        self.amx_compiled, self.amx_available = bool(lib.shim_amx_compiled()), bool(lib.shim_amx_available())
        self.dp_compiled = bool(lib.shim_dp_compiled())
        self.prefetch_b = bool(lib.shim_prefetch_b())

    def matmul(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, dot: bool = False) -> None:
        """c += a @ b on views (row-major with unit column stride: sub-tiles of bigger arrays); ``dot``:
        bfloat16 ``b`` through matmul_acc_bf16_dot (``a`` rounded to bfloat16)."""
        (m, k), (k2, n) = a.shape, b.shape
        assert k == k2 and c.shape == (m, n) and c.dtype == np.float32 and a.dtype == np.float32
        for x in (a, b, c):
            assert x.strides[1] == x.itemsize
        assert not dot or b.dtype == np.uint16
        fn = (self.lib.shim_matmul_bf16_dot if dot else self.lib.shim_matmul_bf16) if b.dtype == np.uint16 \
            else self.lib.shim_matmul
        ld = [x.strides[0] // x.itemsize for x in (a, b, c)]
        fn(a.ctypes.data, ld[0], b.ctypes.data, ld[1], c.ctypes.data, ld[2], m, n, k)

    def convert(self, name: str, src: np.ndarray, out_dtype) -> np.ndarray:
        src = np.ascontiguousarray(src)
        dst = np.empty(src.shape, out_dtype)
        getattr(self.lib, name)(src.ctypes.data, dst.ctypes.data, src.size)
        return dst


@pytest.fixture(scope="module")
def shims(tmp_path_factory) -> dict[str, Shim]:
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not found")
    tmp = tmp_path_factory.mktemp("prism_cpu")
    src = tmp / "shim.cc"
    src.write_text(SHIM)
    host = _host_cpu_flags()
    builds = {k: flags for k, (flags, needs, _, _) in BUILDS.items() if set(needs) <= host}
    procs = {}
    for name, flags in builds.items():  # compile in parallel
        cmd = [cxx, *flags, *COMMON, f"-I{runtime_include_dir()}", str(src), "-o", str(tmp / f"{name}.so")]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = {}
    for name, proc in procs.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} build failed:\n{log}"
        out[name] = Shim(tmp / f"{name}.so")
    return out


@pytest.fixture(params=list(BUILDS))
def shim(request, shims) -> Shim:
    if request.param not in shims:
        pytest.skip(f"the host lacks {' / '.join(BUILDS[request.param][1])}")
    return shims[request.param]


@pytest.mark.parametrize("name", list(BUILDS))
def test_builds_take_the_intended_path(shims, name):
    if name not in shims:
        pytest.skip(f"the host lacks {' / '.join(BUILDS[name][1])}")
    _, _, path, max_mr = BUILDS[name]
    assert shims[name].path == path
    if max_mr is not None:
        assert shims[name].max_mr == max_mr


def _tile(rng, rows, cols, dtype=np.float32, pad=(2, 3, 1, 5)):
    """A (rows, cols) view into a bigger random array (leading dimension > cols), and the array."""
    top, left, bottom, right = pad
    big = rng.standard_normal((top + rows + bottom, left + cols + right)).astype(np.float32)
    if dtype == np.uint16:
        big = big.astype(ml_dtypes.bfloat16).view(np.uint16)
    return big[top:top + rows, left:left + cols], big


def _b_values(b: np.ndarray) -> np.ndarray:
    return b.view(ml_dtypes.bfloat16).astype(np.float64) if b.dtype == np.uint16 else b.astype(np.float64)


def _check_matmul(shim: Shim, rng, m, n, k, b_dtype, dot: bool = False):
    a, _ = _tile(rng, m, k)
    b, _ = _tile(rng, k, n, b_dtype)
    c, c_big = _tile(rng, m, n)
    before = c_big.copy()
    a_values = a.astype(ml_dtypes.bfloat16) if dot else a
    expected = c.astype(np.float64) + a_values.astype(np.float64) @ _b_values(b)
    shim.matmul(a, b, c, dot=dot)
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=2e-5 * np.sqrt(k) + 1e-6,
                               err_msg=f"M={m} N={n} K={k} B={np.dtype(b_dtype).name}")
    # nothing outside the tile of C was written (masked N tails, M tails)
    outside = np.ones(c_big.shape, bool)
    outside[2:2 + m, 3:3 + n] = False
    np.testing.assert_array_equal(c_big[outside], before[outside])


SIZES = [1, 7, 17, 33, 100, 256]


@pytest.mark.parametrize("b_dtype", [np.float32, np.uint16], ids=["f32", "bf16"])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 7, 8, 16, 24])
def test_matmul_shapes_and_tails(shim, m, b_dtype):
    rng = np.random.default_rng(m)
    for n in SIZES:
        for k in SIZES:
            _check_matmul(shim, rng, m, n, k, b_dtype)


@pytest.mark.parametrize("b_dtype", [np.float32, np.uint16], ids=["f32", "bf16"])
@pytest.mark.parametrize("m,n,k", [(4, 16, 8), (6, 48, 24), (7, 40, 9), (12, 31, 50), (13, 64, 33),
                                   (14, 95, 70), (15, 130, 66), (3, 65, 35), (17, 23, 40), (29, 70, 48),
                                   (33, 20, 17), (9, 1100, 20), (2, 1100, 300), (16, 2064, 16),
                                   (1, 4096, 64), (8, 1030, 150), (7, 9, 1000), (8, 64, 129), (16, 40, 257)])
def test_matmul_blocking_boundaries(shim, m, n, k, b_dtype):
    """Row blocks (6, 12, 14 rows), the AVX2 buffered path (7+ rows), row groups (16), column chunks
    (1024), strips (16, 32 columns), K blocks (8, 16, 32 rows; 128 on AMD Zen 5) and the copies of A (128 columns)."""
    _check_matmul(shim, np.random.default_rng(m * n + k), m, n, k, b_dtype)


@pytest.mark.parametrize("b_dtype", [np.float32, np.uint16], ids=["f32", "bf16"])
@pytest.mark.parametrize("m", [1, 2, 3])
def test_matmul_few_rows_boundaries(shim, m, b_dtype):
    """One to three rows against at most 256 / 128 / 64 columns: the whole row of C in registers over
    all of K (16, 32, 64, 128, 256-column kernels, masked tails), and just past each limit."""
    rng = np.random.default_rng(20 + m)
    for n in (16, 31, 32, 48, 63, 64, 65, 96, 127, 128, 129, 200, 255, 256, 257):
        for k in (1, 2, 3, 37, 1024):
            _check_matmul(shim, rng, m, n, k, b_dtype)


@pytest.mark.parametrize("b_dtype", [np.float32, np.uint16], ids=["f32", "bf16"])
def test_matmul_unaligned_b(shim, b_dtype):
    """B's rows a multiple of 64 bytes apart, its tile starting anywhere in a cache line: the strips
    start at the first aligned column, after a partial strip (and end with one)."""
    rng = np.random.default_rng(3)
    k, width = 40, 192  # 768 / 384 bytes per row
    big = rng.standard_normal((k, width)).astype(np.float32)
    if b_dtype == np.uint16:
        big = big.astype(ml_dtypes.bfloat16).view(np.uint16)
    for m in (1, 16):
        a = rng.standard_normal((m, k)).astype(np.float32)
        for off in (1, 5, 15, 17, 31, 33):
            for n in (3, 40, width - off - 2):
                b = big[:, off:off + n]
                c = np.zeros((m, n), np.float32)
                shim.matmul(a, b, c)
                expected = a.astype(np.float64) @ _b_values(b)
                np.testing.assert_allclose(c, expected, rtol=1e-5, atol=2e-5 * np.sqrt(k),
                                           err_msg=f"M={m} N={n} offset={off}")


def test_matmul_power_of_two_leading_dims(shim):
    """Decode-like: 4 KiB-multiple strides (B and C rows in the same cache sets)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 1024)).astype(np.float32)
    b = rng.standard_normal((1024, 1024)).astype(np.float32)
    for m in (1, 8):
        for b_arg in (b, b.astype(ml_dtypes.bfloat16).view(np.uint16)):
            c = np.ones((m, 1024), np.float32)
            shim.matmul(a[:m], b_arg, c)
            expected = 1.0 + a[:m].astype(np.float64) @ _b_values(b_arg)
            np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-3)


def test_few_columns_over_a_long_k(shim):
    """Few columns (attention's p @ V): one to three rows keep whole rows of C in registers, four to
    eight go in pairs over K blocks of 512 rows (two whole blocks and a partial one here), bfloat16 x
    bfloat16 with one to three rows through the same kernel on the rounded A."""
    rng = np.random.default_rng(31)
    for m in (1, 2, 3, 4, 5, 8, 9):
        for n in (64, 100, 128):
            for b_dtype, dot in ((np.float32, False), (np.uint16, False), (np.uint16, True)):
                _check_matmul(shim, rng, m, n, 1100, b_dtype, dot=dot)


@pytest.mark.parametrize("m", [1, 3, 4, 5, 8, 16, 17, 40])
def test_bf16_dot_shapes_and_tails(shim, m):
    """bfloat16 x bfloat16 (A rounded to nearest even): on AMX tiles from 4 rows where the build and
    the host have them -- K padded to 32, 64-column strips with masked tails, 32-row K blocks, row
    groups of 16 -- on VDPBF16PS where the host has AVX512_BF16 but no AMX (odd K, 32-column strips
    with masked tails, row blocks of up to 14), else the zmm/ymm/scalar kernel on the rounded A."""
    rng = np.random.default_rng(100 + m)
    for n in SIZES + [64, 65, 130]:
        for k in SIZES + [32, 64, 96]:
            _check_matmul(shim, rng, m, n, k, np.uint16, dot=True)


@pytest.mark.parametrize("m", [1, 2, 5, 8, 12, 14])
def test_bf16_dot_large_b_streams_k_blocks_through_accumulators_in_memory(shim, m):
    """A B of at least 2^18 values with at most 14 rows of A: K blocks of 12 (Zen 5) or 8 rows, the
    strips' accumulators in memory between them, columns in chunks of 64 KiB of accumulators (two
    chunks and a masked last strip at 14 rows; one at fewer), an odd K (a last block of 5 rows or 1)."""
    _check_matmul(shim, np.random.default_rng(200 + m), m, 1300, 1001, np.uint16, dot=True)


@pytest.mark.parametrize("m,n,k", [(15, 257, 129), (16, 600, 300), (29, 513, 257), (16, 31, 3), (64, 96, 40),
                                   (70, 300, 33), (65, 64, 1)])
def test_bf16_dot_packed_panels(shim, m, n, k):
    """More rows than one VDPBF16PS micro-kernel holds: B packed 256 columns by a K block at a time
    (partial last panels and strips, odd K, several K blocks with the next panel prefetched across
    them) and every row block against the packed strips, 64 rows per packing."""
    _check_matmul(shim, np.random.default_rng(m * n + k), m, n, k, np.uint16, dot=True)


def test_amx_where_the_host_has_it(shims):
    """-march=native on a host with AMX compiles the AMX path (and Linux grants the tile state here);
    PRISM_CPU_NO_AMX and the non-native builds leave it out."""
    host_amx = {"amx_tile", "amx_bf16", "avx512_bf16"} <= _host_cpu_flags()
    for name, s in shims.items():
        assert s.amx_compiled == (host_amx and name == "avx512"), name
        assert s.amx_available <= s.amx_compiled


def test_dot_product_kernel_where_the_host_has_avx512_bf16_but_no_amx(shims):
    """-march=native on a host with AVX512_BF16 and no AMX (AMD Zen 4) compiles the VDPBF16PS kernel
    for matmul_acc_bf16_dot; PRISM_CPU_NO_DP, the other builds, and AMX hosts leave it out."""
    flags = _host_cpu_flags()
    host_dp = "avx512_bf16" in flags and "amx_bf16" not in flags
    for name, s in shims.items():
        assert s.dp_compiled == (host_dp and name in ("avx512", "avx512_no_amx")), name


def test_strip_kernels_prefetch_b_except_where_the_compiler_targets_amx(shims):
    """PRISM_CPU_PREFETCH_B: on by default unless -march=native targets AMX (measured slower there);
    the two no-AMX builds force it on and off, so both are tested on every host."""
    host_amx = {"amx_tile", "amx_bf16"} <= _host_cpu_flags()
    expected = {"avx512": not host_amx, "avx512_no_amx": True, "avx512_no_dp": False}
    for name, want in expected.items():
        if name in shims:
            assert shims[name].prefetch_b == want, name


def test_matmul_empty_is_a_no_op(shim):
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    c = np.full((3, 5), 2.0, np.float32)
    shim.matmul(a[:, :0], b[:0], c)
    shim.matmul(a[:0], b, c[:0])
    bf = b.astype(ml_dtypes.bfloat16).view(np.uint16)
    shim.matmul(a[:, :0], bf[:0], c, dot=True)
    shim.matmul(a[:0], bf, c[:0], dot=True)
    np.testing.assert_array_equal(c, 2.0)


def test_builds_agree(shims):
    """The scalar fallback and the SIMD builds compute the same products (up to summation order)."""
    rng = np.random.default_rng(7)
    for m, n, k in [(1, 100, 256), (5, 33, 17), (16, 257, 100)]:
        a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        for b_arg in (b, b.astype(ml_dtypes.bfloat16).view(np.uint16)):
            results = {}
            for name, s in shims.items():
                c = np.zeros((m, n), np.float32)
                s.matmul(a, b_arg, c)
                results[name] = c
            for name, c in results.items():
                np.testing.assert_allclose(c, results["scalar"], rtol=1e-5, atol=1e-5 * np.sqrt(k),
                                           err_msg=name)


def _special_f32_bits() -> np.ndarray:
    ties = []
    for hi in (0x3F80, 0x3F81, 0x4049, 0xC049, 0x0001, 0x0000, 0x8001, 0x7F7F, 0x0080, 0x007F):
        for lo in (0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF):
            ties.append((hi << 16) | lo)
    special = [0x00000000, 0x80000000,  # +-0
               0x7F800000, 0xFF800000,  # +-inf
               0x00000001, 0x80000001, 0x007FFFFF, 0x00400000, 0x00008000, 0x00018000,  # subnormals
               0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x7F7F7FFF,  # smallest normal, max (to inf)
               0x3FFFFFFF, 0x3F7FFFFF, 0x3F800000]  # rounding up into the next binade
    rng = np.random.default_rng(0)
    random = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([np.array(ties + special, np.uint32), random])


NAN_BITS = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FA00000, 0x7F80FFFF, 0x7FFFFFFF],
                    np.uint32)


@pytest.mark.parametrize("fn", ["shim_to_bf16_each", "shim_to_bf16"], ids=["scalar", "vector"])
def test_f32_to_bf16_rounds_to_nearest_even(shim, fn):
    bits = _special_f32_bits()
    bits = bits[~np.isnan(bits.view(np.float32))]
    x = bits.view(np.float32)
    for n in (x.size, 1003, 8, 7, 1):  # vector body and scalar tail
        got = shim.convert(fn, x[:n], np.uint16)
        np.testing.assert_array_equal(got, x[:n].astype(ml_dtypes.bfloat16).view(np.uint16))


@pytest.mark.parametrize("fn", ["shim_to_bf16_each", "shim_to_bf16"], ids=["scalar", "vector"])
def test_f32_to_bf16_keeps_nan(shim, fn):
    x = np.concatenate([NAN_BITS, NAN_BITS, np.array([0x3F800000], np.uint32)]).view(np.float32)  # 15 values
    got = shim.convert(fn, x, np.uint16)
    as_f32 = (got.astype(np.uint32) << 16).view(np.float32)
    assert np.isnan(as_f32[:-1]).all()
    np.testing.assert_array_equal(np.signbit(as_f32[:-1]), np.signbit(x[:-1]))
    assert got[-1] == 0x3F80


@pytest.mark.parametrize("fn", ["shim_to_f32_each", "shim_to_f32"], ids=["scalar", "vector"])
def test_bf16_to_f32_every_bit_pattern(shim, fn):
    bits = np.arange(2**16, dtype=np.uint16)
    expected = bits.astype(np.uint32) << 16  # exact widening, NaN payloads included
    for n in (bits.size, 2**16 - 5, 3):
        got = shim.convert(fn, bits[:n], np.float32)
        np.testing.assert_array_equal(got.view(np.uint32), expected[:n])
    finite = ~np.isnan(expected.view(np.float32))
    np.testing.assert_array_equal(expected[finite].view(np.float32),
                                  bits[finite].view(ml_dtypes.bfloat16).astype(np.float32))


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 spacing at the exact value."""
    exact32 = exact.astype(np.float32)
    spacing = np.spacing(np.abs(exact32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / np.maximum(spacing, np.float64(2.0**-149))


def test_fast_exp_is_within_two_ulp(shim):
    """The vectorizable float32 exp of generated kernels against float64 numpy: within 2 ulp across the
    range (subnormal results included), 0 and +inf beyond it, NaN kept."""
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.uniform(-104.0, 88.7, 200_000), rng.uniform(-1.0, 1.0, 20_000),
                        np.linspace(-103.9, -87.0, 5000), [0.0, -0.0, 1.0, -1.0, 88.72, -87.33]]).astype(np.float32)
    got = shim.convert("shim_fast_exp", x, np.float32)
    exact = np.exp(x.astype(np.float64))
    assert _ulps(got, exact).max() <= 2.0
    special = np.array([np.inf, -np.inf, np.nan, 89.0, 1000.0, -105.0, -1e30], np.float32)
    got = shim.convert("shim_fast_exp", special, np.float32)
    np.testing.assert_array_equal(got[[0, 1, 3, 4, 5, 6]], [np.inf, 0.0, np.inf, np.inf, 0.0, 0.0])
    assert np.isnan(got[2])


@pytest.mark.parametrize("b_dtype", [np.float32, np.uint16], ids=["f32", "bf16"])
def test_matmul_nt_and_row_sums_of_squares(shim, b_dtype):
    """C += A @ B^T reading B's rows in place, and with _sumsq B's row sums of squares from the same pass
    (written, one per row of B, whatever M is: 0 rows of A included)."""
    rng = np.random.default_rng(31)
    fn = shim.lib.shim_matmul_nt_bf16 if b_dtype == np.uint16 else shim.lib.shim_matmul_nt
    for m in (0, 1, 2, 3, 4, 5, 6, 7, 9):
        for n in (1, 7, 33):
            for k in (1, 15, 16, 17, 100):
                a, _ = _tile(rng, max(m, 1), k)
                a = a[:m]
                b, _ = _tile(rng, n, k, b_dtype)
                for with_sums in (False, True):
                    c = rng.standard_normal((m, n)).astype(np.float32)
                    expected = c.astype(np.float64) + a.astype(np.float64) @ _b_values(b).T
                    sums = np.full(n, -1.0, np.float32)
                    fn(a.ctypes.data if m else 0, a.strides[0] // 4 if m else k, b.ctypes.data,
                       b.strides[0] // b.itemsize, c.ctypes.data, n, m, n, k, sums.ctypes.data if with_sums else None)
                    label = f"M={m} N={n} K={k}"
                    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=2e-5 * np.sqrt(k), err_msg=label)
                    if with_sums:
                        np.testing.assert_allclose(sums, (_b_values(b) ** 2).sum(axis=1), rtol=1e-5, err_msg=label)
                    else:
                        assert (sums == -1.0).all()


@pytest.mark.parametrize("m", [1, 2, 3, 4, 16, 17, 33])
def test_matmul_nt_bf16_dot_shapes_and_tails(shim, m):
    """C += bf16(A) @ B^T reading B's rows in place: on AMX tiles from 2 rows where the build and the host
    have them (B's rows loaded as tiles in place, 16-row blocks and 32-value chunks with padded tails, A's
    rows in groups of 16, C^T gathered back), on VDPBF16PS where the host has AVX512_BF16 but no AMX (B's
    rows as pairs in place, 32-value chunks with masked tails, 4 x 4 blocks of A's and B's rows and the
    1-3 left of either), else the dot products on the rounded A."""
    rng = np.random.default_rng(200 + m)
    for n in (1, 15, 16, 17, 33, 100):
        for k in (1, 16, 31, 32, 33, 100, 128):
            a, _ = _tile(rng, m, k)
            b, _ = _tile(rng, n, k, np.uint16)
            c, c_big = _tile(rng, m, n)
            before = c_big.copy()
            expected = c.astype(np.float64) + a.astype(ml_dtypes.bfloat16).astype(np.float64) @ _b_values(b).T
            shim.lib.shim_matmul_nt_bf16_dot(a.ctypes.data, a.strides[0] // 4, b.ctypes.data, b.strides[0] // 2,
                                             c.ctypes.data, c.strides[0] // 4, m, n, k)
            np.testing.assert_allclose(c, expected, rtol=1e-5, atol=2e-5 * np.sqrt(k) + 1e-6, err_msg=f"M={m} N={n} K={k}")
            outside = np.ones(c_big.shape, bool)
            outside[2:2 + m, 3:3 + n] = False
            np.testing.assert_array_equal(c_big[outside], before[outside])


@pytest.mark.parametrize("callers", [1, 3])
def test_pool_runs_every_block_once(shim, callers):
    """The worker pool of generated kernels: every block of every caller exactly once, whatever the thread
    count, the block count and how many callers share the pool at the same moment."""
    for workers in (1, 2, 4):
        for blocks in (0, 1, 2, 7, 33):
            counts = np.zeros(callers * blocks, np.int32)
            shim.lib.shim_pool_run(callers, workers, blocks, counts.ctypes.data)
            assert (counts == 1).all(), (workers, blocks, counts)
