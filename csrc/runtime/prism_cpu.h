// prism_cpu.h -- header-only CPU tile runtime for host kernels that prism_jax
// generates (compiled with g++ -O3 -march=native -pthread -std=c++17).
//
// Dependency-free: the standard library, plus <immintrin.h> when the
// translation unit is compiled with AVX2 and FMA.  Without them (or with
// PRISM_CPU_NO_SIMD defined) a portable scalar path computes the same
// results (up to float32 summation order; the conversions bit for bit).
// With AVX-512F/BW/VL as well the matmuls use zmm registers (PRISM_CPU_AVX512;
// PRISM_CPU_NO_AVX512 keeps them on the AVX2 path).  Nothing here uses OpenMP,
// and only matmul_acc_bf16_dot allocates (per-thread buffers, grown once to
// the largest call): callers parallelize over tiles and call these
// on one tile per thread.  A matmul call uses up to about 80 KiB of stack
// (AVX2) or 11 KiB (AVX-512).
//
// All matrices are row-major; leading dimensions are in elements.
//
//   matmul_acc       C[M,N] += A[M,K] @ B[K,N]                 (float32)
//   matmul_acc_bf16  the same with B given as bfloat16 bits, widened to
//                    float32 in registers (B is streamed once)
//   matmul_acc_bf16_dot  bfloat16 x bfloat16 (A rounded), on AMX tiles where
//                    available (prism_cpu_amx.h)
//   parallel_blocks  run a kernel's grid blocks on the runtime library's
//                    worker threads (prism_cpu_pool.h)
//   bf16_to_f32 / f32_to_bf16   scalar and vectorized conversions
//                    (float -> bfloat16 rounds to nearest even; NaN stays NaN)
//
// The AVX2 matmul is register blocked: a micro-kernel keeps an MR x 16 block
// of C in 2 * MR ymm accumulators (MR <= 6 with AVX2's 16 registers, <= 12
// when AVX-512VL gives 32) while its K loop streams a 16-column strip of B:
// per row of B two float32 loads (or one 16 x bfloat16 load widened by a
// shift and a mask), MR broadcasts of A, 2 * MR FMAs.  K goes in blocks of 8
// rows (16 with several row blocks); a block walks its strips left to right,
// which reads 8 rows of B side by side, front to back -- as fast as reading
// B sequentially on the machine this was tuned on (AMD EPYC, 2 cores), and
// much faster than longer strips.  For M <= kMaxMr every element of B is
// loaded exactly once per call; with more rows the first row block copies
// each strip (8 or 16 rows) to a small buffer that the others read from L1,
// so B still comes from memory once (once per 16 rows of A).  Tails: a
// partial strip uses masked loads/stores (bfloat16: a zero-padded copy of
// the strip), a partial row block a smaller MR.  From 7 rows on, C is
// accumulated in a local buffer and added to C at the end (kBufferedMinRows).
// Seven or eight rows with 16 registers are one MR x 8 block instead
// (narrow_rows: one accumulator per row, an 8-column strip, no copy).
//
// The AVX-512 matmul (detail::z) is the same design on zmm registers: an
// MR x 32 block of C in 2 * MR zmm accumulators (MR <= 14), 32-column strips
// (two float32 zmm loads per row of B, or one 32 x bfloat16 load widened by
// a shift and a mask, put back in column order by two vpermt2ps per row at
// the end), K blocks of 16 float32 / 32 bfloat16 rows (2 KiB of B per strip
// either way), row blocks balanced (16 -> 8 + 8, the second reading the
// first one's copy of the strip).  Tails are masked: __mmask16 loads and
// stores of float32 and of C, 16-bit masked loads (AVX-512BW) of bfloat16,
// so no zero-padded copy.  C is updated in place at every M.  Tuned on an
// Intel Xeon with AVX-512 and AMX (2 cores of a VM, 48 KiB 12-way L1d,
// 2 MiB L2, single-core reads: ~27 GB/s from L3, ~14 GB/s from DRAM; zmm
// FMA peak measured at ~234 GFLOP/s), one thread, B in L3, best of
// interleaved runs on a busy host, K = N = 4096 (ms; before: the ymm kernel
// with MR <= 12 that -march=native built here, now PRISM_CPU_NO_AVX512):
//     M = 1:  f32 2.4 -> 2.3 (28 GB/s, L3 bound), bf16 1.26 -> 1.16
//     M = 8:  f32 4.4 -> 2.9, bf16 4.1 -> 2.2
//     M = 16: f32 6.6 -> 4.2, bf16 6.4 -> 4.1 (~130 GFLOP/s)
// and at M = 8, K = N = 1024: f32 0.22 -> 0.16, bf16 0.26 -> 0.15.  What
// was tried there and left out: 16-column strips (one zmm, MR <= 16: M = 16
// 1.6x / 2.5x slower for f32 / bf16) and 64-column strips (MR <= 6: M = 16
// f32 ~20% slower); 8-row K blocks (M = 8: f32 ~8%, bf16 ~25% slower),
// 32-row float32 blocks (no better), 64-row bfloat16 blocks (M = 16 ~25%
// slower); the AVX2 path's local buffer of C (kNch = 1024 columns: slower at
// every M tried, 8 to 64, by up to 25%; 512 columns much slower, 2048 in
// between); software prefetch of B (next K block into L2, or 8 strips ahead
// into L1: up to 10% faster at M = 1 with B in DRAM, slower at M >= 8 with B
// in L3 and for bfloat16); row groups of 28 or 32 rows (no change); MR <= 8
// or 12 instead of 14 (no clear change at M = 12 to 16).
//
// Tiling advice for callers: B is row-major, so a tile of few columns reads a
// short piece of each of K rows -- slow whatever the kernel does.  Give each
// call >= 512 columns of B (better the whole row: 2-4 KiB per row at least)
// and split K or M across threads rather than N into narrow tiles.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && !defined(PRISM_CPU_NO_SIMD)
#include <immintrin.h>
#define PRISM_CPU_AVX2 1
#else
#define PRISM_CPU_AVX2 0
#endif

#if PRISM_CPU_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    !defined(PRISM_CPU_NO_AVX512)
#define PRISM_CPU_AVX512 1
#else
#define PRISM_CPU_AVX512 0
#endif

#if PRISM_CPU_AVX512
namespace prism_jax {
namespace cpu {
namespace detail {
// Lanes [0, n) set, n clamped to [0, 16] (resp. [0, 32]): the AVX-512 and AMX
// kernels' tail masks.
inline __mmask16 mask16(std::int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFFu)
                 : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1u);
}
inline __mmask32 mask32(std::int64_t n) {
  return n >= 32 ? static_cast<__mmask32>(0xFFFFFFFFu)
                 : n <= 0 ? static_cast<__mmask32>(0) : static_cast<__mmask32>((1u << n) - 1u);
}
}  // namespace detail
}  // namespace cpu
}  // namespace prism_jax
#endif

#include "prism_cpu_amx.h"

// Software prefetch of B in the strip kernels (detail::z, dp): each row of a
// strip also touches the same row one strip (z) or two strips (dp) further
// on.  A K block reads 16-32 rows of B side by side, 64-128 bytes of each per
// strip; measured on a 2-core AMD EPYC (Zen 4, 32 KiB 8-way L1d), one thread,
// B in DRAM (24 x 2-4 MiB), M = 8, K = N = 1024: bfloat16 x bfloat16 (dp)
// 360-380 -> 150-165 us, float32 A x bfloat16 B (widening) 515-580 -> 230-245
// us, float32 290-370 -> 290-300 us; B from L3 no clear change.  Further ahead
// was slower (4 strips: dp ~180-200 us, 8: ~240-285 us; into L2 no better):
// lines fetched far ahead for 32 rows a power-of-two stride apart evict each
// other from the same L1 sets before they are read.  Off on AMX hosts (the
// Intel Xeon the z kernel was tuned on measured prefetching 8 strips ahead
// slower with B in L3) unless PRISM_CPU_PREFETCH_B is defined to 1.
#if !defined(PRISM_CPU_PREFETCH_B)
#if defined(__AMX_TILE__)
#define PRISM_CPU_PREFETCH_B 0
#else
#define PRISM_CPU_PREFETCH_B 1
#endif
#endif

// Long K blocks (128 rows of B per block in the AVX-512 strip kernels, z and
// dp) on AMD Zen 5: the tuning target __znver5__, or an older Zen name with
// AVX512_VP2INTERSECT, which Zen 5 has and Zen 4 has not (GCC 12 names a
// Zen 5 "znver3" under -march=native).  Measured on a 2-core AMD
// EPYC Zen 5 (AVX-512, AVX512_BF16, 48 KiB L1d, 1 MiB L2), two threads, B in
// L3 unless said, median of 7 interleaved runs of 400 calls (us; before ->
// after): dp (bfloat16 x bfloat16), 32 -> 128 rows: M = 16, K = 256,
// N = 4096 (lora) 114-136 -> 103-106; M = 8, K = N = 1024 44-63 -> 35-39;
// M = 8, K = 1024, N = 2816 134 -> 112; M = 8, K = N = 4096 (B from DRAM)
// 1387-1614 -> 1205-1298 (256 rows: no better than 128; without the
// prefetch of B no better in cache, 30% slower from DRAM).  z, float32,
// 16 -> 128 rows: M = 8, K = N = 1024 86-103 -> 57; lora's shape 124 -> 90;
// M = 8, K = 1024, N = 2816 209 -> 148; K = N = 4096 2540 -> 2210; z,
// widened bfloat16, 32 -> 128: M = 8, K = N = 1024 74 -> 58.  Tiles of 128
// columns: no change.  Elsewhere the blocks stay as tuned on the Intel Xeon
// (where 64-row bfloat16 blocks were ~25% slower at M = 16) and the Zen 4
// (dp; longer blocks not measured there: its 8-way L1d may hold fewer of
// the 128 rows a power-of-two stride apart).
#if !defined(PRISM_CPU_LONG_K_BLOCKS)
#if defined(__znver5__) || ((defined(__znver3__) || defined(__znver4__)) && defined(__AVX512VP2INTERSECT__))
#define PRISM_CPU_LONG_K_BLOCKS 1
#else
#define PRISM_CPU_LONG_K_BLOCKS 0
#endif
#endif

// Full unrolling of the fixed-trip loops of the micro-kernel, so that its
// accumulator arrays live in registers.
#define PRISM_CPU_UNROLL _Pragma("GCC unroll 16")

#if PRISM_CPU_AVX512
namespace prism_jax {
namespace cpu {
namespace detail {
// The strips of one pass of a strip kernel over B, in the order they are
// read: K blocks of `kc` rows outermost; inside, a partial strip of `head`
// columns (if head > 0), `full` strips of `width` columns, then a partial
// strip to column N (if any).  ahead() names the strip read `by` strips
// after one, for PRISM_CPU_PREFETCH_B: with short rows of B (attention's
// p @ V: 128 columns, four strips) that is the next K block's rows.
template <typename Src>
class StripOrder {
 public:
  StripOrder(const Src* B, std::int64_t ldb, std::int64_t K, std::int64_t kc, std::int64_t N, std::int64_t head,
             std::int64_t width)
      : B_(B), ldb_(ldb), K_(K), kc_(kc), N_(N), head_(head), width_(width), full_((N - head) / width),
        count_((head > 0) + full_ + (head + full_ * width < N)) {}

  std::int64_t count() const { return count_; }
  // first column and columns of strip s (s < count())
  std::int64_t start(std::int64_t s) const {
    if (head_ > 0 && s-- == 0) return 0;
    return s < full_ ? head_ + s * width_ : head_ + full_ * width_;
  }
  std::int64_t columns(std::int64_t s) const {
    const std::int64_t j = start(s), end = j + (head_ > 0 && j == 0 ? head_ : width_);
    return (end < N_ ? end : N_) - j;
  }
  // the first row of the strip read `by` strips after strip s of the K block
  // at row k0; nullptr past the end of B (no divisions: one call per strip)
  const Src* ahead(std::int64_t k0, std::int64_t s, std::int64_t by) const {
    std::int64_t t = s + by;
    while (t >= count_) {
      t -= count_;
      k0 += kc_;
    }
    return k0 < K_ ? B_ + k0 * ldb_ + start(t) : nullptr;
  }

 private:
  const Src* B_;
  std::int64_t ldb_, K_, kc_, N_, head_, width_, full_, count_;
};
}  // namespace detail
}  // namespace cpu
}  // namespace prism_jax
#endif

namespace prism_jax {
namespace cpu {
namespace detail {
// Rows of row block `blk` (starting at row i) when M rows go in `blocks`
// blocks of balanced sizes (16 in 2: 8 + 8; in 3: 6 + 5 + 5).
inline std::int64_t row_block(std::int64_t M, std::int64_t blocks, std::int64_t blk, std::int64_t i) {
  return (M - i + (blocks - blk) - 1) / (blocks - blk);
}
}  // namespace detail
}  // namespace cpu
}  // namespace prism_jax

#include "prism_cpu_dp.h"

namespace prism_jax {
namespace cpu {

namespace detail {

// Rows of a matmul operand at most this long (attention's K and V: 128
// values, 256-512 bytes) are prefetched ahead by the AVX2 strip kernel and by
// the dot products of prism_cpu_nt.h: the hardware prefetchers follow such
// short pieces badly from DRAM.  Longer rows stream long enough on their own.
inline constexpr std::int64_t kShortRowBytes = 1024;

// True when this translation unit uses the AVX2/FMA kernels.
inline constexpr bool kAvx2Fma = PRISM_CPU_AVX2 != 0;
// True when the matmuls use the AVX-512 micro-kernel (zmm registers).
inline constexpr bool kAvx512 = PRISM_CPU_AVX512 != 0;

inline std::uint32_t f32_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

inline float bits_f32(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// bfloat16 <-> float32
// ---------------------------------------------------------------------------

inline float bf16_to_f32(std::uint16_t bits) {
  return detail::bits_f32(static_cast<std::uint32_t>(bits) << 16);
}

// Round to nearest, ties to even.  Overflow rounds to +-inf, subnormals are
// kept (no flush to zero), NaN stays NaN (sign and top payload bits kept, the
// quiet bit set so a payload living only in the dropped bits is not lost).
inline std::uint16_t f32_to_bf16(float x) {
  const std::uint32_t u = detail::f32_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  }
  const std::uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

inline void bf16_to_f32(const std::uint16_t* src, float* dst, std::int64_t n) {
  std::int64_t i = 0;
#if PRISM_CPU_AVX2
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
  }
#endif
  for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

inline void f32_to_bf16(const float* src, std::uint16_t* dst, std::int64_t n) {
  std::int64_t i = 0;
#if PRISM_CPU_AVX2
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i bias = _mm256_set1_epi32(0x7FFF);
  const __m256i quiet = _mm256_set1_epi32(0x0040);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    const __m256i u = _mm256_castps_si256(x);
    const __m256i hi = _mm256_srli_epi32(u, 16);
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(hi, one)), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    const __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(hi, quiet), nan);
    // every lane is in [0, 0xFFFF], so the unsigned-saturating pack is exact
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), packed);
  }
#endif
  for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

// ---------------------------------------------------------------------------
// exp
// ---------------------------------------------------------------------------

// e^x for float32 written so that the compiler vectorizes the loops that call
// it (inline arithmetic and selects: glibc's expf is a call per element, and
// softmax and SiLU loops spent most of their time there).  Cody-Waite range
// reduction x = n ln2 + r, |r| <= ln2 / 2, Cephes' degree-6 polynomial for
// e^r (within 2 ulp of the correctly rounded result over the whole range,
// as XLA:CPU's own polynomial exp), 2^n applied in two halves so that
// results in the subnormal range come out right.  exp(-inf) = 0,
// exp(+inf) = +inf, overflow +inf, NaN stays NaN.
inline float fast_exp(float x) {
  constexpr float kMax = 88.72283935546875f;   // above: +inf
  constexpr float kMin = -103.97208404541016f;  // below: 0
  const float xc = x > kMax ? kMax : (x < kMin ? kMin : x);  // NaN passes through
  // n = round(x / ln2) by the 1.5 * 2^23 trick: its low mantissa bits are n
  constexpr float kShift = 12582912.0f;
  const float shifted = xc * 1.44269504088896341f + kShift;
  const float n = shifted - kShift;
  const std::int32_t ni = static_cast<std::int32_t>(detail::f32_bits(shifted) - detail::f32_bits(kShift));
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const std::int32_t half = ni >> 1;  // 2^n = 2^half * 2^(n - half), each a normal float
  const float s1 = detail::bits_f32(static_cast<std::uint32_t>(half + 127) << 23);
  const float s2 = detail::bits_f32(static_cast<std::uint32_t>(ni - half + 127) << 23);
  const float y = er * s1 * s2;
  return x > kMax ? std::numeric_limits<float>::infinity() : (x != x ? x : y);
}
inline double fast_exp(double x) { return std::exp(x); }

// A (M x K, row stride lda) rounded to bfloat16 and widened back, into a
// per-thread buffer (row stride K): the left operand of a bfloat16 x bfloat16
// product where no AMX kernel takes it.
inline const float* rounded_to_bf16(const float* A, std::int64_t lda, std::int64_t M, std::int64_t K) {
  static thread_local std::vector<float> rounded;
  if (static_cast<std::int64_t>(rounded.size()) < M * K) rounded.resize(M * K);
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t k = 0; k < K; ++k) rounded[i * K + k] = bf16_to_f32(f32_to_bf16(A[i * lda + k]));
  return rounded.data();
}

// ---------------------------------------------------------------------------
// matmul
// ---------------------------------------------------------------------------

#if defined(PRISM_CPU_EXTERN_MATMUL)
// Generated kernels call the matmuls compiled once per machine into the runtime
// library (prism_cpu_runtime.cc): a kernel then compiles in a fraction of the
// time its own copy of the micro-kernels would take.
extern "C" void prism_cpu_matmul_acc(const float* A, std::int64_t lda, const float* B, std::int64_t ldb,
                                     float* C, std::int64_t ldc, std::int64_t M, std::int64_t N,
                                     std::int64_t K);
extern "C" void prism_cpu_matmul_acc_bf16(const float* A, std::int64_t lda, const std::uint16_t* B,
                                          std::int64_t ldb, float* C, std::int64_t ldc, std::int64_t M,
                                          std::int64_t N, std::int64_t K);
inline void matmul_acc(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                       std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  prism_cpu_matmul_acc(A, lda, B, ldb, C, ldc, M, N, K);
}
inline void matmul_acc_bf16(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb,
                            float* C, std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  prism_cpu_matmul_acc_bf16(A, lda, B, ldb, C, ldc, M, N, K);
}
extern "C" void prism_cpu_matmul_acc_bf16_dot(const float* A, std::int64_t lda, const std::uint16_t* B,
                                              std::int64_t ldb, float* C, std::int64_t ldc, std::int64_t M,
                                              std::int64_t N, std::int64_t K);
inline void matmul_acc_bf16_dot(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb,
                                float* C, std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  prism_cpu_matmul_acc_bf16_dot(A, lda, B, ldb, C, ldc, M, N, K);
}
#else  // the micro-kernels themselves

namespace detail {

// Most rows of C one micro-kernel keeps in registers: MR x 2 accumulators
// + 2 B vectors + 1 broadcast fit the 16 ymm registers of AVX2 for MR <= 6,
// and the 32 of AVX-512VL (which the compiler then uses for these AVX2
// intrinsics) for MR <= 12.
#if defined(__AVX512VL__)
inline constexpr int kMaxMr = 12;
#else
inline constexpr int kMaxMr = 6;
#endif
// Rows of B per K block (one micro-kernel call per K block and 16-column
// strip) when A fits one row block.  Walking a K block strip by strip reads
// kKc rows of B side by side, each front to back; with 8 rows this runs at
// (or above) the speed of reading B sequentially, with 16 or more rows it
// falls off quickly (too many streams for the hardware prefetchers).
inline constexpr std::int64_t kKc = 8;
// The same with several row blocks: the first one copies the strip to a
// small contiguous buffer as it reads it, the others read the copy from L1.
inline constexpr std::int64_t kKcMany = 16;
// From this many rows of A on, each 16-row group accumulates into a local
// buffer of kNch columns of C (leading dimension kCbufLd) that is added to C
// at the end.  C's rows are usually a power-of-two stride apart, so the rows
// of one strip of C all map to the same L1 set (and to the same 4 KiB
// offset as the strip of B being read): from about 8 rows on, updating C in
// place every kKc rows of B costs more than the arithmetic.
inline constexpr std::int64_t kBufferedMinRows = 7;
inline constexpr std::int64_t kRowGroup = 16;
inline constexpr std::int64_t kNch = 1024;
inline constexpr std::int64_t kCbufLd = kNch + 16;
// Columns of A copied at a time to a contiguous buffer (leading dimension
// kApkLd): A's rows are usually a power-of-two stride apart, like B's and
// C's, so in place they would compete for the same L1 set as the strip of B
// while they are reused for every strip.
inline constexpr std::int64_t kKa = 128;
inline constexpr std::int64_t kApkLd = kKa + 8;
static_assert(kKa % kKc == 0 && kKa % kKcMany == 0, "K blocks tile the copies of A");
// With rows of B of at most kShortRowBytes (attention's p @ V: 128 float32
// columns) a K block is a few KiB in one piece, which the strips read 64
// bytes of a row at a time.  Each row a strip reads then also prefetches
// (into L2) the same row of the strip kPrefetchBlocks K blocks further on.
// Measured on an AMD EPYC (Zen 3, 2 cores, AVX2), M = 4, float32 V of 16
// heads x 4096 x 128 from DRAM, two threads, a noisy host: no prefetch 10-24
// GB/s, the next-but-one block prefetched whole into L1 as a block starts
// 17-30, one line a row into L2 (this) 20-34; 1, 4 or 8 blocks ahead no
// better.
inline constexpr std::int64_t kPrefetchBlocks = 2;

#if PRISM_CPU_AVX2

// An optimization barrier: the value is in a register here.  Without it GCC
// folds the loads of B into the memory operand of every FMA that uses them,
// loading each B vector once per row of A (the loop then runs out of load
// ports at MR >= 2).
inline void in_register(__m256& v) {
#if defined(__GNUC__)
  __asm__("" : "+x"(v));
#else
  (void)v;
#endif
}

inline __m256i tail_mask(std::int64_t n) {  // lanes [0, n) set, 0 <= n <= 8
  alignas(32) static constexpr std::int32_t lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                         0,  0,  0,  0,  0,  0,  0,  0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes + 8 - n));
}

// The micro-kernel: C[0:MR, 0:16] += A[0:MR, 0:kc] @ S[0:kc, 0:16], where S
// is a 16-column strip of B (row k at B + k * ldb), the MR x 16 block of C in
// ymm accumulators over the whole K loop.
//   FULL:  all 16 columns are real; otherwise only the first `ncols`, and C
//          (and float32 B) is read and written with masks -- masked-off lanes
//          of B read as 0.  A bfloat16 partial strip is always a zero-padded
//          copy (there is no 16-bit masked load).
//   PACK:  also copy the strip, as read, to `pk` (kc rows of 16 elements) for
//          the next row blocks.
// Float32 B is read as two vectors per row.  Bfloat16 B is read 16 per
// 256-bit load and widened in registers: the even columns by a shift, the odd
// ones by a mask; the accumulators hold (even, odd) columns and are put back
// in order at the end.  For MR <= 2 the K loop keeps two sets of accumulators
// (even and odd k) to hide the FMA latency.
template <int MR, bool FULL, bool PACK, typename Src>
inline void micro_kernel(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                         std::int64_t ldc, std::int64_t kc, std::int64_t ncols, Src* pk,
                         const Src* next = nullptr) {
  static_assert(MR >= 1 && MR <= kMaxMr, "micro-kernel rows");
  constexpr bool kBf16 = sizeof(Src) == 2;
  constexpr int KU = MR <= 2 ? 2 : 1;

  __m256i mask0 = _mm256_set1_epi32(-1), mask1 = mask0;
  if constexpr (!FULL) {
    mask0 = tail_mask(ncols < 8 ? ncols : 8);
    mask1 = tail_mask(ncols > 8 ? ncols - 8 : 0);
  }
  const __m256i odd_mask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));

  __m256 acc[KU][MR][2];
  PRISM_CPU_UNROLL
  for (int u = 0; u < KU; ++u) {
    PRISM_CPU_UNROLL
    for (int r = 0; r < MR; ++r) {
      acc[u][r][0] = _mm256_setzero_ps();
      acc[u][r][1] = _mm256_setzero_ps();
    }
  }
  const float* a[MR];
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) a[r] = A + r * lda;

  // acc[u] += A[:, k] (x) S[k, :]; row k of the strip at `next` is
  // prefetched (kShortRowBytes)
  auto step = [&](int u, std::int64_t k) {
    const Src* b = B + k * ldb;
    if (next != nullptr) _mm_prefetch(reinterpret_cast<const char*>(next + k * ldb), _MM_HINT_T1);
    __m256 b0, b1;
    if constexpr (kBf16) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
      if constexpr (PACK) _mm256_store_si256(reinterpret_cast<__m256i*>(pk + k * 16), x);
      b0 = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));  // columns 0, 2, ..., 14
      b1 = _mm256_castsi256_ps(_mm256_and_si256(x, odd_mask));  // columns 1, 3, ..., 15
    } else {
      if constexpr (FULL) {
        b0 = _mm256_loadu_ps(reinterpret_cast<const float*>(b));
        b1 = _mm256_loadu_ps(reinterpret_cast<const float*>(b) + 8);
      } else {
        b0 = _mm256_maskload_ps(reinterpret_cast<const float*>(b), mask0);
        b1 = _mm256_maskload_ps(reinterpret_cast<const float*>(b) + 8, mask1);
      }
      in_register(b0);
      in_register(b1);
      if constexpr (PACK) {
        _mm256_store_ps(reinterpret_cast<float*>(pk + k * 16), b0);
        _mm256_store_ps(reinterpret_cast<float*>(pk + k * 16) + 8, b1);
      }
    }
    PRISM_CPU_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a[r] + k);
      acc[u][r][0] = _mm256_fmadd_ps(av, b0, acc[u][r][0]);
      acc[u][r][1] = _mm256_fmadd_ps(av, b1, acc[u][r][1]);
    }
  };

  std::int64_t k = 0;
  for (; k + KU <= kc; k += KU) {
    PRISM_CPU_UNROLL
    for (int u = 0; u < KU; ++u) step(u, k + u);
  }
  if constexpr (KU == 2) {
    if (k < kc) step(0, k);
    PRISM_CPU_UNROLL
    for (int r = 0; r < MR; ++r) {
      acc[0][r][0] = _mm256_add_ps(acc[0][r][0], acc[1][r][0]);
      acc[0][r][1] = _mm256_add_ps(acc[0][r][1], acc[1][r][1]);
    }
  }

  // C += acc: every row of C is read before any is written (the rows are
  // often a multiple of 4 KiB apart, and a load after a store to an address
  // with the same low 12 bits can wait for that store: 4K aliasing).
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    __m256 c0 = acc[0][r][0], c1 = acc[0][r][1];
    if constexpr (kBf16) {
      // (even, odd) -> natural order: unpack interleaves within 128-bit lanes,
      // giving columns {0-3, 8-11} and {4-7, 12-15}.
      const __m256 lo = _mm256_unpacklo_ps(c0, c1);
      const __m256 hi = _mm256_unpackhi_ps(c0, c1);
      c0 = _mm256_permute2f128_ps(lo, hi, 0x20);
      c1 = _mm256_permute2f128_ps(lo, hi, 0x31);
    }
    const float* c = C + r * ldc;
    if constexpr (FULL) {
      acc[0][r][0] = _mm256_add_ps(_mm256_loadu_ps(c), c0);
      acc[0][r][1] = _mm256_add_ps(_mm256_loadu_ps(c + 8), c1);
    } else {
      acc[0][r][0] = _mm256_add_ps(_mm256_maskload_ps(c, mask0), c0);
      acc[0][r][1] = _mm256_add_ps(_mm256_maskload_ps(c + 8, mask1), c1);
    }
  }
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    float* c = C + r * ldc;
    if constexpr (FULL) {
      _mm256_storeu_ps(c, acc[0][r][0]);
      _mm256_storeu_ps(c + 8, acc[0][r][1]);
    } else {
      _mm256_maskstore_ps(c, mask0, acc[0][r][0]);
      _mm256_maskstore_ps(c + 8, mask1, acc[0][r][1]);
    }
  }
}

template <bool FULL, bool PACK, typename Src>
inline void micro_kernel_rows(std::int64_t rows, const float* A, std::int64_t lda, const Src* B,
                              std::int64_t ldb, float* C, std::int64_t ldc, std::int64_t kc,
                              std::int64_t ncols, Src* pk, const Src* next) {
  switch (rows) {
    case 1: micro_kernel<1, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 2: micro_kernel<2, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 3: micro_kernel<3, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 4: micro_kernel<4, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 5: micro_kernel<5, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 6: micro_kernel<6, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
#if defined(__AVX512VL__)
    case 7: micro_kernel<7, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 8: micro_kernel<8, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 9: micro_kernel<9, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 10: micro_kernel<10, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 11: micro_kernel<11, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
    case 12: micro_kernel<12, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next); break;
#endif
    default: break;
  }
}

// One (K block, strip): every row block of A against the strip S (row k at
// B + k * ldb).  Rows go in blocks of at most kMaxMr, sizes balanced (with
// kMaxMr = 6: 8 -> 4 + 4, 16 -> 6 + 5 + 5; with 12: 16 -> 8 + 8).  With one
// block S is read once from B; with more the first block copies it to `pk`
// and the others read the copy.
// ROWS > 0: M == ROWS <= kMaxMr, known at compile time, so the micro-kernel
// is inlined into the strip loop (see matmul_acc_avx2).
template <bool FULL, int ROWS, typename Src>
inline void strip_all_rows(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                           std::int64_t ldc, std::int64_t M, std::int64_t kc, std::int64_t ncols,
                           Src* pk, const Src* next) {
  if constexpr (ROWS > 0) {
    micro_kernel<ROWS, FULL, false>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next);
    return;
  }
  const std::int64_t blocks = (M + kMaxMr - 1) / kMaxMr;
  if (blocks == 1) {
    micro_kernel_rows<FULL, false>(M, A, lda, B, ldb, C, ldc, kc, ncols, pk, next);
    return;
  }
  std::int64_t i = 0;
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t rows = row_block(M, blocks, blk, i);
    if (blk == 0)
      micro_kernel_rows<FULL, true>(rows, A, lda, B, ldb, C, ldc, kc, ncols, pk, next);
    else  // from the copy: nothing to prefetch
      micro_kernel_rows<FULL, false>(rows, A + i * lda, lda, pk, 16, C + i * ldc, ldc, kc, ncols, pk,
                                     static_cast<const Src*>(nullptr));
    i += rows;
  }
}

// The rows of B that a K block of kc rows at k0 prefetches: the same rows
// kPrefetchBlocks blocks (of kc_max rows) on, while whole blocks remain.
template <typename Src>
inline const Src* rows_ahead(const Src* B, std::int64_t ldb, std::int64_t K, std::int64_t k0, std::int64_t kc,
                             std::int64_t kc_max) {
  const std::int64_t ahead = kPrefetchBlocks * kc_max;
  return k0 + ahead + kc <= K ? B + (k0 + ahead) * ldb : nullptr;
}

// At the start of each kKa columns of A (k0 % kKa == 0): those columns of its
// M rows copied to apk (leading dimension kApkLd).
inline void copy_a_columns(const float* A, std::int64_t lda, std::int64_t M, std::int64_t K, std::int64_t k0,
                           float* apk) {
  if (k0 % kKa != 0) return;
  const std::int64_t ka = K - k0 < kKa ? K - k0 : kKa;
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t k = 0; k < ka; ++k) apk[i * kApkLd + k] = A[i * lda + k0 + k];
}

// C += A @ B for at most kRowGroup rows: K blocks outermost, 16-column strips
// of B inside, the row blocks of A innermost.  The strips start where B's
// rows are aligned to a strip (64 bytes of float32, 32 of bfloat16) when
// ldb allows it -- so that no strip shares a cache line with the next --
// with a partial strip before them if B is not aligned, and one after them.
// A is read from `apk`, a copy of kKa of its columns at a time.
template <int ROWS, typename Src>
inline void row_group(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                      std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K, float* apk,
                      Src* pk) {
  constexpr bool kBf16 = sizeof(Src) == 2;
  constexpr std::uintptr_t kStripBytes = 16 * sizeof(Src);
  const std::int64_t kc_max = M <= kMaxMr ? kKc : kKcMany;
  std::int64_t head = 0;
  if ((ldb * static_cast<std::int64_t>(sizeof(Src))) % kStripBytes == 0) {
    const std::uintptr_t mis = reinterpret_cast<std::uintptr_t>(B) % kStripBytes;
    head = mis == 0 ? 0 : static_cast<std::int64_t>((kStripBytes - mis) / sizeof(Src));
    head = head < N ? head : N;
  }
  const std::int64_t n_full_end = head + (N - head) / 16 * 16;
  const bool short_rows = N * static_cast<std::int64_t>(sizeof(Src)) <= kShortRowBytes;
  for (std::int64_t k0 = 0; k0 < K; k0 += kc_max) {
    const std::int64_t kc = K - k0 < kc_max ? K - k0 : kc_max;
    const Src* next = short_rows ? rows_ahead(B, ldb, K, k0, kc, kc_max) : nullptr;
    copy_a_columns(A, lda, M, K, k0, apk);
    const float* a = apk + k0 % kKa;
    const Src* b = B + k0 * ldb;
    // columns [j, j + ncols) of the K block, ncols < 16
    auto partial_strip = [&](std::int64_t j, std::int64_t ncols) {
      if constexpr (kBf16) {
        // zero-padded copy of the partial strip; every row block reads it
        for (std::int64_t k = 0; k < kc; ++k) {
          for (std::int64_t jj = 0; jj < ncols; ++jj) pk[k * 16 + jj] = b[k * ldb + j + jj];
          for (std::int64_t jj = ncols; jj < 16; ++jj) pk[k * 16 + jj] = 0;
        }
        for (std::int64_t i = 0; i < M; i += kMaxMr) {
          const std::int64_t rows = M - i < kMaxMr ? M - i : kMaxMr;
          micro_kernel_rows<false, false>(rows, a + i * kApkLd, kApkLd, pk, 16, C + i * ldc + j, ldc, kc,
                                          ncols, pk, static_cast<const Src*>(nullptr));
        }
      } else {
        strip_all_rows<false, ROWS>(a, kApkLd, b + j, ldb, C + j, ldc, M, kc, ncols, pk,
                                    next != nullptr ? next + j : nullptr);
      }
    };
    if (head > 0) partial_strip(0, head);
    for (std::int64_t j = head; j < n_full_end; j += 16)
      strip_all_rows<true, ROWS>(a, kApkLd, b + j, ldb, C + j, ldc, M, kc, 16, pk,
                                 next != nullptr ? next + j : nullptr);
    if (n_full_end < N) partial_strip(n_full_end, N - n_full_end);
  }
}

// Seven or eight rows with AVX2's 16 ymm registers: one row block of MR x 8
// (one accumulator per row, an 8-column strip of B per k: one load, MR
// broadcasts of A, MR FMAs) instead of two blocks of 4 x 16, the second of
// which reads a copy of the strip that the first one writes.  Bfloat16 B is
// widened 8 at a time (vpmovzxwd and a shift), so the columns stay in order.
// Measured on a 2-core AMD EPYC (Zen 3), one thread, B in cache, M = 8,
// K = 1024, 15 interleaved rounds on a noisy host (median us, narrow vs two
// blocks): N = 128 float32 41-60 vs 46-77, bfloat16 36-54 vs 54-99; N = 512
// float32 209 vs 240, bfloat16 194 vs 243.  Two threads, K = N = 1024 in
// tiles of 128 or 512 columns, 400 calls alternating the two builds (median
// us, narrow vs two blocks): B from DRAM, float32 313-466 vs 369-639,
// bfloat16 170-371 vs 232-330 (no clear order); B in cache (L3) 223-313
// vs 239-289 and 228-296 vs 189-276 (no gain).  Rows of at most kShortRowBytes
// are prefetched as in row_group, but once per 64 bytes of a row (every
// strip's prefetch made the kernel 1.6x slower with B in cache; once per
// line: as fast as none in cache, and from DRAM, two threads, 128-column
// tiles: float32 ~360-450 us against ~500 without, bfloat16 ~330-360
// against ~390-430 and ~285 prefetching every strip).
inline constexpr std::int64_t kKcNarrow = 16;
static_assert(kKa % kKcNarrow == 0, "K blocks tile the copies of A");

template <typename Src>
inline __m256 load_widened8(const Src* b) {
  if constexpr (sizeof(Src) == 2) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(b));
  }
}

// C[0:MR, 0:8] += A[0:MR, 0:kc] @ S[0:kc, 0:8] (S: row k at B + k * ldb, 8
// real columns); row k of the strip at `next` is prefetched (kShortRowBytes).
template <int MR, typename Src>
inline void micro_kernel_narrow(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                                std::int64_t ldc, std::int64_t kc, const Src* next) {
  __m256 acc[MR];
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_ps();
  for (std::int64_t k = 0; k < kc; ++k) {
    if (next != nullptr) _mm_prefetch(reinterpret_cast<const char*>(next + k * ldb), _MM_HINT_T1);
    __m256 b = load_widened8(B + k * ldb);
    in_register(b);
    PRISM_CPU_UNROLL
    for (int r = 0; r < MR; ++r) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(A + r * lda + k), b, acc[r]);
  }
  // every row of C read before any is written (4K aliasing, as micro_kernel)
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) acc[r] = _mm256_add_ps(_mm256_loadu_ps(C + r * ldc), acc[r]);
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) _mm256_storeu_ps(C + r * ldc, acc[r]);
}

// C += A @ B for MR (7 or 8) rows into a local buffer C (at least 8 columns
// past N writable): K blocks outermost, 8-column strips inside; a partial
// last strip reads a zero-padded copy of itself (`pk`, kc rows of 8).
template <int MR, typename Src>
inline void narrow_rows(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                        std::int64_t ldc, std::int64_t N, std::int64_t K, float* apk, Src* pk) {
  const bool short_rows = N * static_cast<std::int64_t>(sizeof(Src)) <= kShortRowBytes;
  for (std::int64_t k0 = 0; k0 < K; k0 += kKcNarrow) {
    const std::int64_t kc = K - k0 < kKcNarrow ? K - k0 : kKcNarrow;
    const Src* next = short_rows ? rows_ahead(B, ldb, K, k0, kc, kKcNarrow) : nullptr;
    copy_a_columns(A, lda, MR, K, k0, apk);
    const float* a = apk + k0 % kKa;
    const Src* b = B + k0 * ldb;
    std::int64_t j = 0;
    // one prefetch per 64 bytes of a row: a strip is 32 (float32) or 16 (bfloat16) bytes of it
    constexpr std::int64_t kStripsPerLine = 64 / (8 * static_cast<std::int64_t>(sizeof(Src)));
    for (; j + 8 <= N; j += 8) {
      const bool fetch = next != nullptr && (j / 8) % kStripsPerLine == 0;
      micro_kernel_narrow<MR>(a, kApkLd, b + j, ldb, C + j, ldc, kc, fetch ? next + j : nullptr);
    }
    if (j < N) {
      for (std::int64_t k = 0; k < kc; ++k)
        for (std::int64_t jj = 0; jj < 8; ++jj) pk[k * 8 + jj] = j + jj < N ? b[k * ldb + j + jj] : Src(0);
      micro_kernel_narrow<MR>(a, kApkLd, pk, 8, C + j, ldc, kc, static_cast<const Src*>(nullptr));
    }
  }
}

// C += A @ B.  Up to kBufferedMinRows - 1 rows: straight into C.  More: per
// group of kRowGroup rows and chunk of kNch columns, into a zeroed local
// buffer (66 KiB of stack) added to C at the end; B is read once per group of
// rows (a chunk of kNch = 1024 columns is 4 KiB of a float32 row of B, long
// enough for the prefetchers).
template <typename Src>
inline void matmul_acc_avx2(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                            std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  alignas(64) float apk[kRowGroup * kApkLd];
  alignas(64) Src pk[kKcMany * 16];
  if (M < kBufferedMinRows) {
    switch (M) {  // one row block: its micro-kernel inlined (M = 4, N = 128 from L2: 9-13 -> 6-9 us)
      case 1: row_group<1>(A, lda, B, ldb, C, ldc, M, N, K, apk, pk); return;
      case 2: row_group<2>(A, lda, B, ldb, C, ldc, M, N, K, apk, pk); return;
      case 3: row_group<3>(A, lda, B, ldb, C, ldc, M, N, K, apk, pk); return;
      case 4: row_group<4>(A, lda, B, ldb, C, ldc, M, N, K, apk, pk); return;
      case 5: row_group<5>(A, lda, B, ldb, C, ldc, M, N, K, apk, pk); return;
      case 6: row_group<6>(A, lda, B, ldb, C, ldc, M, N, K, apk, pk); return;
      default: row_group<0>(A, lda, B, ldb, C, ldc, M, N, K, apk, pk); return;
    }
  }
  alignas(64) float cbuf[kRowGroup * kCbufLd];
  for (std::int64_t i0 = 0; i0 < M; i0 += kRowGroup) {
    const std::int64_t mg = M - i0 < kRowGroup ? M - i0 : kRowGroup;
    for (std::int64_t j0 = 0; j0 < N; j0 += kNch) {
      const std::int64_t nch = N - j0 < kNch ? N - j0 : kNch;
      for (std::int64_t i = 0; i < mg; ++i) std::memset(cbuf + i * kCbufLd, 0, nch * sizeof(float));
      if (kMaxMr < 8 && mg == 8)
        narrow_rows<8>(A + i0 * lda, lda, B + j0, ldb, cbuf, kCbufLd, nch, K, apk, pk);
      else if (kMaxMr < 7 && mg == 7)
        narrow_rows<7>(A + i0 * lda, lda, B + j0, ldb, cbuf, kCbufLd, nch, K, apk, pk);
      else
        row_group<0>(A + i0 * lda, lda, B + j0, ldb, cbuf, kCbufLd, mg, nch, K, apk, pk);
      for (std::int64_t i = 0; i < mg; ++i) {
        float* c = C + (i0 + i) * ldc + j0;
        const float* t = cbuf + i * kCbufLd;
        std::int64_t j = 0;
        for (; j + 8 <= nch; j += 8)
          _mm256_storeu_ps(c + j, _mm256_add_ps(_mm256_loadu_ps(c + j), _mm256_load_ps(t + j)));
        for (; j < nch; ++j) c[j] += t[j];
      }
    }
  }
}

#endif  // PRISM_CPU_AVX2

#if PRISM_CPU_AVX512

// The AVX-512 path: the design of the AVX2 one on zmm registers, re-tuned
// (see the comment block at the top for what was measured).
namespace z {

// zmm registers per row of a strip, and the strip's columns.
inline constexpr int kNv = 2;
inline constexpr std::int64_t kNr = 16 * kNv;
// Most rows of C one micro-kernel keeps in registers: MR x 2 accumulators
// + 2 B vectors (+ the odd-column mask for bfloat16) + 1 broadcast of A fit
// the 32 zmm registers for MR <= 14.
inline constexpr int kMaxMr = 14;
// Rows of B per K block: one micro-kernel call per K block and strip, so
// every kKc rows the MR x 32 block of C is read and written once.  Sized in
// bytes: 16 float32 rows or 32 bfloat16 rows, 2 KiB of B per (K block,
// strip) -- fewer rows (more passes over C) measured slower, more (more
// rows of B read side by side) no better or slower, on the Intel Xeon; on
// AMD Zen 5 128 rows (PRISM_CPU_LONG_K_BLOCKS).
template <typename Src>
inline constexpr std::int64_t kKc = PRISM_CPU_LONG_K_BLOCKS ? 128 : sizeof(Src) == 2 ? 32 : 16;
// A is handled in groups of at most kRowGroup rows (B is read once per
// group), with kKa of its columns at a time copied to a contiguous buffer
// (leading dimension kApkLd).  Unlike the AVX2 path, C is always updated in
// place: the local buffer of C measured slower at every M tried (8 to 64)
// on the 12-way, 48 KiB L1 of the machine this was tuned on (and a chunk of
// 512 columns, which fits that L1 with its strip of B, slower still: the
// short pieces of B's rows seem to cost more than C's power-of-two stride).
inline constexpr std::int64_t kRowGroup = 16;
inline constexpr std::int64_t kKa = 128;
inline constexpr std::int64_t kApkLd = kKa + 8;
// How many strips ahead B is prefetched (PRISM_CPU_PREFETCH_B): one (two
// measured no better for float32, slower for the widened bfloat16).
inline constexpr std::int64_t kPrefetchStrips = 1;
static_assert(kKa % kKc<float> == 0 && kKa % kKc<std::uint16_t> == 0, "K blocks tile the copies of A");

// See detail::in_register (the "v" constraint reaches all 32 zmm registers).
inline void in_register(__m512& v) {
#if defined(__GNUC__)
  __asm__("" : "+v"(v));
#else
  (void)v;
#endif
}

// x << 16 in every 32-bit lane.  (GCC 12's _mm512_slli_epi32 trips
// -Wuninitialized through _mm512_undefined_epi32; with an all-ones mask this
// compiles to the same single vpslld.)
inline __m512i shl16(__m512i x) { return _mm512_maskz_slli_epi32(static_cast<__mmask16>(0xFFFF), x, 16); }


// The micro-kernel: C[0:MR, 0:32] += A[0:MR, 0:kc] @ S[0:kc, 0:32], where S
// is a 32-column strip of B (row k at B + k * ldb), the MR x 32 block of C in
// 2 * MR zmm accumulators over the whole K loop.
//   FULL:  all 32 columns are real; otherwise only the first `ncols`: B and
//          C are read and written with masks (masked-off lanes read as 0),
//          bfloat16 B with 16-bit masked loads (AVX-512BW), so no copy.
//   PACK:  also copy the strip, as read, to `pk` (kc rows of 32 elements) for
//          the next row blocks.
// Float32 B is read as two vectors per row.  Bfloat16 B is read 32 per
// 512-bit load and widened in registers: the even columns by a shift, the
// odd ones by a mask; the accumulators hold (even, odd) columns and are put
// back in order at the end (two vpermt2ps per row).  For MR <= 3 the K loop
// keeps two sets of accumulators (even and odd k) to hide the FMA latency.
//   NV:    zmm registers per row (the strip has 16 * NV columns); wider
//          than kNv only for the few-row kernel (few_rows below).
template <int MR, bool FULL, bool PACK, typename Src, int NV = kNv>
inline void micro_kernel(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                         std::int64_t ldc, std::int64_t kc, std::int64_t ncols, Src* pk,
                         const Src* next = nullptr) {
  static_assert(MR >= 1 && MR <= kMaxMr, "micro-kernel rows");
  static_assert(NV % 2 == 0, "bfloat16 strips are whole 32-column loads");
  static_assert(!PACK || NV == kNv, "the copy of a strip is kNr columns wide");
  constexpr bool kBf16 = sizeof(Src) == 2;
  constexpr int KU = MR * NV < 8 ? 2 : 1;

  __mmask16 m[NV];
  PRISM_CPU_UNROLL
  for (int v = 0; v < NV; ++v) m[v] = FULL ? static_cast<__mmask16>(0xFFFFu) : mask16(ncols - 16 * v);
  const __m512i odd_mask = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));

  __m512 acc[KU][MR][NV];
  PRISM_CPU_UNROLL
  for (int u = 0; u < KU; ++u) {
    PRISM_CPU_UNROLL
    for (int r = 0; r < MR; ++r) {
      PRISM_CPU_UNROLL
      for (int v = 0; v < NV; ++v) acc[u][r][v] = _mm512_setzero_ps();
    }
  }
  const float* a[MR];
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) a[r] = A + r * lda;

  // acc[u] += A[:, k] (x) S[k, :]; row k of the strip read after this one
  // (`next`, see PRISM_CPU_PREFETCH_B) is prefetched
  auto step = [&](int u, std::int64_t k) {
    const Src* b = B + k * ldb;
    if (PRISM_CPU_PREFETCH_B && next != nullptr) {
      const char* ahead = reinterpret_cast<const char*>(next + k * ldb);
      _mm_prefetch(ahead, _MM_HINT_T0);
      if constexpr (!kBf16) _mm_prefetch(ahead + 64, _MM_HINT_T0);  // float32: two lines a row
    }
    __m512 bv[NV];
    if constexpr (kBf16) {
      PRISM_CPU_UNROLL
      for (int p = 0; p < NV / 2; ++p) {
        const __m512i x = FULL ? _mm512_loadu_si512(b + 32 * p)
                               : _mm512_maskz_loadu_epi16(mask32(ncols - 32 * p), b + 32 * p);
        if constexpr (PACK) _mm512_storeu_si512(pk + k * kNr + 32 * p, x);
        bv[2 * p] = _mm512_castsi512_ps(shl16(x));                            // columns 0, 2, ..., 30
        bv[2 * p + 1] = _mm512_castsi512_ps(_mm512_and_si512(x, odd_mask));  // columns 1, 3, ..., 31
      }
    } else {
      PRISM_CPU_UNROLL
      for (int v = 0; v < NV; ++v) {
        const float* bf = reinterpret_cast<const float*>(b) + 16 * v;
        __m512 x = FULL ? _mm512_loadu_ps(bf) : _mm512_maskz_loadu_ps(m[v], bf);
        in_register(x);  // a named variable: an array element would live on the stack
        bv[v] = x;
        if constexpr (PACK) _mm512_storeu_ps(reinterpret_cast<float*>(pk + k * kNr) + 16 * v, x);
      }
    }
    PRISM_CPU_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r][k]);
      PRISM_CPU_UNROLL
      for (int v = 0; v < NV; ++v) acc[u][r][v] = _mm512_fmadd_ps(av, bv[v], acc[u][r][v]);
    }
  };

  std::int64_t k = 0;
  for (; k + KU <= kc; k += KU) {
    PRISM_CPU_UNROLL
    for (int u = 0; u < KU; ++u) step(u, k + u);
  }
  if constexpr (KU == 2) {
    if (k < kc) step(0, k);
    PRISM_CPU_UNROLL
    for (int r = 0; r < MR; ++r) {
      PRISM_CPU_UNROLL
      for (int v = 0; v < NV; ++v) acc[0][r][v] = _mm512_add_ps(acc[0][r][v], acc[1][r][v]);
    }
  }

  // C += acc: every row of C is read before any is written (4K aliasing, see
  // the AVX2 micro-kernel).
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    if constexpr (kBf16) {
      PRISM_CPU_UNROLL
      for (int p = 0; p < NV / 2; ++p) {  // (even, odd) -> natural order
        const __m512 e = acc[0][r][2 * p], o = acc[0][r][2 * p + 1];
        acc[0][r][2 * p] = _mm512_permutex2var_ps(e, lo_idx, o);
        acc[0][r][2 * p + 1] = _mm512_permutex2var_ps(e, hi_idx, o);
      }
    }
    const float* c = C + r * ldc;
    PRISM_CPU_UNROLL
    for (int v = 0; v < NV; ++v) {
      const __m512 cv = FULL ? _mm512_loadu_ps(c + 16 * v) : _mm512_maskz_loadu_ps(m[v], c + 16 * v);
      acc[0][r][v] = _mm512_add_ps(cv, acc[0][r][v]);
    }
  }
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    float* c = C + r * ldc;
    PRISM_CPU_UNROLL
    for (int v = 0; v < NV; ++v) {
      if constexpr (FULL)
        _mm512_storeu_ps(c + 16 * v, acc[0][r][v]);
      else
        _mm512_mask_storeu_ps(c + 16 * v, m[v], acc[0][r][v]);
    }
  }
}

// micro_kernel<rows, ...> for a run-time rows in [1, kMaxMr].
template <bool FULL, bool PACK, typename Src, int MR = 1>
inline void micro_kernel_rows(std::int64_t rows, const float* A, std::int64_t lda, const Src* B,
                              std::int64_t ldb, float* C, std::int64_t ldc, std::int64_t kc,
                              std::int64_t ncols, Src* pk, const Src* next) {
  if constexpr (MR <= kMaxMr) {
    if (rows == MR)
      micro_kernel<MR, FULL, PACK>(A, lda, B, ldb, C, ldc, kc, ncols, pk, next);
    else
      micro_kernel_rows<FULL, PACK, Src, MR + 1>(rows, A, lda, B, ldb, C, ldc, kc, ncols, pk, next);
  }
}

// One (K block, strip): every row block of A against the strip S (row k at
// B + k * ldb), in blocks of at most kMaxMr rows, sizes balanced (16 -> 8 +
// 8).  With one block S is read once from B; with more the first block
// copies it to `pk` and the others read the copy from L1.
template <bool FULL, typename Src>
inline void strip_all_rows(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                           std::int64_t ldc, std::int64_t M, std::int64_t kc, std::int64_t ncols,
                           Src* pk, const Src* next) {
  const std::int64_t blocks = (M + kMaxMr - 1) / kMaxMr;
  if (blocks == 1) {
    micro_kernel_rows<FULL, false>(M, A, lda, B, ldb, C, ldc, kc, ncols, pk, next);
    return;
  }
  std::int64_t i = 0;
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t rows = row_block(M, blocks, blk, i);
    if (blk == 0)
      micro_kernel_rows<FULL, true>(rows, A, lda, B, ldb, C, ldc, kc, ncols, pk, next);
    else  // from the copy in L1: nothing to prefetch
      micro_kernel_rows<FULL, false>(rows, A + i * lda, lda, pk, kNr, C + i * ldc, ldc, kc, ncols, pk,
                                     static_cast<const Src*>(nullptr));
    i += rows;
  }
}

// C += A @ B for at most kRowGroup rows: K blocks outermost, 32-column strips
// of B inside, the row blocks of A innermost.  The strips start where B's
// rows are 64-byte aligned when ldb allows it (no strip shares a cache line
// with the next), with a partial strip before them if B is not aligned, and
// one after them.  A is read from `apk`, a copy of kKa of its columns at a
// time.
template <typename Src>
inline void row_group(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                      std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K, float* apk,
                      Src* pk) {
  constexpr std::uintptr_t kLine = 64;
  constexpr std::int64_t kc_max = kKc<Src>;
  std::int64_t head = 0;
  if ((ldb * static_cast<std::int64_t>(sizeof(Src))) % kLine == 0) {
    const std::uintptr_t mis = reinterpret_cast<std::uintptr_t>(B) % kLine;
    head = mis == 0 ? 0 : static_cast<std::int64_t>((kLine - mis) / sizeof(Src));
    head = head < N ? head : N;
  }
  const StripOrder<Src> order(B, ldb, K, kc_max, N, head, kNr);
  const std::int64_t strips = order.count();
  for (std::int64_t k0 = 0; k0 < K; k0 += kc_max) {
    const std::int64_t kc = K - k0 < kc_max ? K - k0 : kc_max;
    if (k0 % kKa == 0) {
      const std::int64_t ka = K - k0 < kKa ? K - k0 : kKa;
      for (std::int64_t i = 0; i < M; ++i)
        for (std::int64_t k = 0; k < ka; ++k) apk[i * kApkLd + k] = A[i * lda + k0 + k];
    }
    const float* a = apk + k0 % kKa;
    const Src* b = B + k0 * ldb;
    for (std::int64_t s = 0; s < strips; ++s) {
      const std::int64_t j = order.start(s), ncols = order.columns(s);
      const Src* next = order.ahead(k0, s, kPrefetchStrips);
      if (ncols == kNr)
        strip_all_rows<true>(a, kApkLd, b + j, ldb, C + j, ldc, M, kc, kNr, pk, next);
      else
        strip_all_rows<false>(a, kApkLd, b + j, ldb, C + j, ldc, M, kc, ncols, pk, next);
    }
  }
}

// Few rows of A against few columns of B (attention's p @ V for one query:
// M = 1, N = 128): the whole row of C in registers over the whole K loop,
// each row of B read in one piece.  The strips of row_group read 64 bytes of
// each row of B per pass, which measured ~25% slower than reading B in
// order here (one thread, bfloat16 V of 16 heads x 1024 x 128 from L3:
// 176 -> 139 us, the speed of a plain sum over the same bytes).
inline constexpr std::int64_t kFewRowsMax = 3;
inline constexpr int kFewRowsRegisters = 16;  // accumulators: rows x zmm per row

// Columns of B the few-row kernel takes for M rows (0: not that kernel).
// (few_rows doubles the registers per row from 2 while they fit: M = 1 up to
// 256 columns, M = 2 up to 128, M = 3 up to 64).
inline std::int64_t few_rows_columns(std::int64_t M) {
  if (M < 1 || M > kFewRowsMax) return 0;
  std::int64_t nv = 2;
  while (M * nv * 2 <= kFewRowsRegisters) nv *= 2;
  return 16 * nv;
}

template <typename Src, int MR, int NV = 2>
inline void few_rows(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                     std::int64_t ldc, std::int64_t N, std::int64_t K) {
  if constexpr (MR * NV <= kFewRowsRegisters) {
    if (N > 16 * NV) {
      few_rows<Src, MR, NV * 2>(A, lda, B, ldb, C, ldc, N, K);
    } else if (N == 16 * NV) {
      micro_kernel<MR, true, false, Src, NV>(A, lda, B, ldb, C, ldc, K, N, nullptr);
    } else {
      micro_kernel<MR, false, false, Src, NV>(A, lda, B, ldb, C, ldc, K, N, nullptr);
    }
  }
}

// More rows against as few columns (GQA's p @ V: 4 query rows per KV head,
// N = 128): the few-row kernel on pairs of rows, K in blocks that stay in L2
// while each pair reads them, so B streams from memory once, in order.  The
// strips of row_group read 4 interleaved 128-byte pieces of each 512-byte
// row there, which the hardware prefetchers follow badly from DRAM.  One
// thread, float32 V of 16 heads x 4096 x 128 (32 MiB, mostly from DRAM), per
// head: M = 4 200-240 -> 110-130 us, M = 5 240 -> 128, M = 8 190-240 -> 140;
// two threads, M = 4: 115-150 -> 68-73 (one run of three no better); one
// head from L3 about the same.  Mixed at M = 16, so up to kNarrowRowsMax.
inline constexpr std::int64_t kNarrowRowsKc = 512;  // 256 KiB of float32 B per block
inline constexpr std::int64_t kNarrowRowsMax = 8;

inline bool narrow_rows_fit(std::int64_t M, std::int64_t N) {
  return M > kFewRowsMax && M <= kNarrowRowsMax && N <= few_rows_columns(2);
}

template <typename Src>
inline void narrow_rows(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                        std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  for (std::int64_t k0 = 0; k0 < K; k0 += kNarrowRowsKc) {
    const std::int64_t kc = K - k0 < kNarrowRowsKc ? K - k0 : kNarrowRowsKc;
    std::int64_t i = 0;
    for (; i + 2 <= M; i += 2) few_rows<Src, 2>(A + i * lda + k0, lda, B + k0 * ldb, ldb, C + i * ldc, ldc, N, kc);
    if (i < M) few_rows<Src, 1>(A + i * lda + k0, lda, B + k0 * ldb, ldb, C + i * ldc, ldc, N, kc);
  }
}

// C += A @ B, row group by row group, straight into C (about 11 KiB of
// stack).
template <typename Src>
inline void matmul_acc(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                       std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  if (N <= few_rows_columns(M)) {
    if (M == 1) few_rows<Src, 1>(A, lda, B, ldb, C, ldc, N, K);
    if (M == 2) few_rows<Src, 2>(A, lda, B, ldb, C, ldc, N, K);
    if (M == 3) few_rows<Src, 3>(A, lda, B, ldb, C, ldc, N, K);
    return;
  }
  if (narrow_rows_fit(M, N)) {
    narrow_rows(A, lda, B, ldb, C, ldc, M, N, K);
    return;
  }
  alignas(64) float apk[kRowGroup * kApkLd];
  alignas(64) Src pk[kKc<Src> * kNr];
  for (std::int64_t i0 = 0; i0 < M; i0 += kRowGroup) {
    const std::int64_t mg = M - i0 < kRowGroup ? M - i0 : kRowGroup;
    row_group(A + i0 * lda, lda, B, ldb, C + i0 * ldc, ldc, mg, N, K, apk, pk);
  }
}

}  // namespace z

#endif  // PRISM_CPU_AVX512

// Portable path: per row of C, the K loop over a block of columns held in a
// local accumulator (the compiler vectorizes the inner loops).
template <typename Src>
inline void matmul_acc_scalar(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb,
                              float* C, std::int64_t ldc, std::int64_t M, std::int64_t N,
                              std::int64_t K) {
  constexpr std::int64_t kCols = 256;
  float acc[kCols];
  for (std::int64_t j0 = 0; j0 < N; j0 += kCols) {
    const std::int64_t nc = N - j0 < kCols ? N - j0 : kCols;
    for (std::int64_t i = 0; i < M; ++i) {
      for (std::int64_t j = 0; j < nc; ++j) acc[j] = 0.0f;
      const float* a = A + i * lda;
      for (std::int64_t k = 0; k < K; ++k) {
        const float av = a[k];
        const Src* b = B + k * ldb + j0;
        if constexpr (sizeof(Src) == 2) {
          for (std::int64_t j = 0; j < nc; ++j) acc[j] += av * bf16_to_f32(b[j]);
        } else {
          for (std::int64_t j = 0; j < nc; ++j) acc[j] += av * b[j];
        }
      }
      float* c = C + i * ldc + j0;
      for (std::int64_t j = 0; j < nc; ++j) c[j] += acc[j];
    }
  }
}

}  // namespace detail

// C[M,N] += A[M,K] @ B[K,N], float32.
inline void matmul_acc(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                       std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) return;
#if PRISM_CPU_AVX512
  detail::z::matmul_acc(A, lda, B, ldb, C, ldc, M, N, K);
#elif PRISM_CPU_AVX2
  detail::matmul_acc_avx2(A, lda, B, ldb, C, ldc, M, N, K);
#else
  detail::matmul_acc_scalar(A, lda, B, ldb, C, ldc, M, N, K);
#endif
}

// C[M,N] += A[M,K] @ B[K,N], B given as bfloat16 bits.
inline void matmul_acc_bf16(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb,
                            float* C, std::int64_t ldc, std::int64_t M, std::int64_t N,
                            std::int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) return;
#if PRISM_CPU_AVX512
  detail::z::matmul_acc(A, lda, B, ldb, C, ldc, M, N, K);
#elif PRISM_CPU_AVX2
  detail::matmul_acc_avx2(A, lda, B, ldb, C, ldc, M, N, K);
#else
  detail::matmul_acc_scalar(A, lda, B, ldb, C, ldc, M, N, K);
#endif
}

// C[M,N] += bf16(A) @ B with A rounded to bfloat16 (to nearest even) and B
// given as bfloat16 bits: the product of two bfloat16 matrices, for programs
// whose left operand is bfloat16 too.  On AMX tiles where the CPU, the
// compiler flags and the OS allow (prism_cpu_amx.h); elsewhere the rounded A
// goes through matmul_acc_bf16 (the same products, summed in another order).
inline void matmul_acc_bf16_dot(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb,
                                float* C, std::int64_t ldc, std::int64_t M, std::int64_t N,
                                std::int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) return;
#if PRISM_CPU_AMX
  if (M >= amx::kMinRows && amx::available()) {
    amx::matmul_acc(A, lda, B, ldb, C, ldc, M, N, K);
    return;
  }
#endif
#if PRISM_CPU_DP
  // One to three rows against few columns (attention's p @ V for one query):
  // the widening few-row kernel reads B's rows in order, and from DRAM that
  // beats VDPBF16PS's strips (V of 32 heads x 4096 x 128, one thread, per
  // head: M = 1 110-150 -> 43-45 us, M = 2 103-114 -> 44-51; from L3 no
  // slower).  At M = 4 it was twice as fast from DRAM but 1.6x slower from
  // L3 (its FMAs at their peak), at M = 8 no faster: VDPBF16PS there.
  if (N <= detail::z::few_rows_columns(M)) {
    matmul_acc_bf16(rounded_to_bf16(A, lda, M, K), K, B, ldb, C, ldc, M, N, K);
    return;
  }
  detail::dp::matmul_acc(A, lda, B, ldb, C, ldc, M, N, K);
#else
  matmul_acc_bf16(rounded_to_bf16(A, lda, M, K), K, B, ldb, C, ldc, M, N, K);
#endif
}
#endif  // PRISM_CPU_EXTERN_MATMUL

// ---------------------------------------------------------------------------
// Grid blocks over the runtime's worker threads
// ---------------------------------------------------------------------------

// The runtime library's (prism_cpu_runtime.cc, prism_cpu_pool.h): fn(ctx, b)
// for every b in [0, blocks), on the calling thread and up to workers - 1
// worker threads, which stay awake between kernel calls that come close
// together; returns when every block is done.
extern "C" void prism_cpu_parallel_for(std::int64_t workers, std::int64_t blocks,
                                       void (*fn)(void*, std::int64_t), void* ctx);

// Calls body(b) once for every b in [0, blocks) on up to `workers` threads
// (the caller's included): generated kernels' grid blocks.
template <class Body>
void parallel_blocks(std::int64_t workers, std::int64_t blocks, Body& body) {
  if (blocks <= 1 || workers <= 1) {
    for (std::int64_t b = 0; b < blocks; ++b) body(b);
    return;
  }
  auto call = [](void* ctx, std::int64_t b) { (*static_cast<Body*>(ctx))(b); };
  prism_cpu_parallel_for(workers, blocks, call, &body);
}

}  // namespace cpu
}  // namespace prism_jax
