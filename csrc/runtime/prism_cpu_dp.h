// prism_cpu_dp.h -- C[M,N] += bf16(A)[M,K] @ B[K,N] with both operands
// bfloat16 on AVX512_BF16's VDPBF16PS (float32 accumulation of exact
// bfloat16 products, two K values per lane and instruction), included by
// prism_cpu.h: the bfloat16 x bfloat16 matmul where the CPU has AVX512_BF16
// but no AMX (AMD Zen 4, Intel Cooper Lake).
//
// Why: there the widening kernel of prism_cpu.h (detail::z: bfloat16 B
// widened to float32 in registers, float32 FMAs) is bound by its FMAs at
// decode sizes.  Measured on a 2-core AMD EPYC VM (AVX-512 with BF16, no
// AMX; one core): zmm FMAs 114 GFLOP/s, VDPBF16PS 222 GFLOP/s (twelve
// independent accumulators held in registers; an earlier loop that kept
// them in memory measured 39.5 and 88); M = 8, K = N = 1024 (B from L3) took
// ~500-630 us widening, against ~64 us to read B.
//
// The layout VDPBF16PS wants pairs rows k, k+1 of B lane by lane.  The
// micro-kernel reads two rows of a 32-column strip and interleaves them in
// registers (vpunpck{l,h}wd, within 128-bit lanes), so B is read in place,
// once, with no rearranged copy; the accumulators then hold the columns in
// the order {0-3, 8-11, 16-19, 24-27} and {4-7, 12-15, 20-23, 28-31}, put
// back in order before C is updated (two vpermt2ps per row).  A is rounded
// to bfloat16 (VCVTNEPS2BF16: to nearest even, as AMX's packing of A) kKa
// columns at a time; read as 32-bit words its rows are the pairs (A[i,k],
// A[i,k+1]); an odd K's last pair is (A[i,K-1], 0) against a zero row of B.
// VDPBF16PS treats denormal inputs as zero and flushes denormal results (as
// AMX's TDPBF16PS does); the products are exact.
//
// More rows than one micro-kernel holds (M > kMaxMr) take a second path:
// panels of B, kNc columns by a K block, are packed (rows read 512 bytes at
// a time, pairs interleaved once) and every row block multiplies the packed
// strips.  In place, each extra row block reads the strip again, and 64
// bytes of rows a power-of-two stride apart miss L1 (they share its sets)
// and stream badly from L3.  Measured on a 2-core AMD EPYC Zen 5 (two
// threads, /tmp harness, median of interleaved runs): M = 16, K = 256, N =
// 4096 (LoRA's base product) from L3 110-116 -> 68-78 us, from DRAM 139 ->
// 120; M = 16, K = N = 4096 from DRAM 1927 -> 1380; M = 32, K = 4096, N =
// 2048 1558 -> 1202.  At M <= kMaxMr the packing, which the multiplication
// waits for, measured slower from DRAM (M = 8: 86 -> 98 us for 2 MiB, 978
// -> 1197 for 32 MiB) for no gain from L3 (56 -> 55): those stay in place.
//
// What limits the in-place path: weights' rows a power-of-two number of
// bytes apart put every row of a strip in one L1 set.  Measured on the 2-core
// Zen 5 (one core, M = 8, K = 128, N = 2048, B 64-byte aligned and in L2):
// 4.6-5.0 G VDPBF16PS/s with rows 4 or 8 KiB apart in 128-row K blocks,
// 7.6-7.9 with 4 KiB + 64 bytes (the core's peak: 8.2, as many as zmm FMAs);
// from DRAM (gated_mlp's two 4096 x 4096 products, two threads) 29-31 GB/s
// against 40 with padded rows and 45-51 for a plain read of the same bytes.
// So a large B is read in K blocks of as many rows as an L1 set has ways,
// the strips' accumulators kept in memory between them (row_group_streamed,
// kStreamKc): 36-43 GB/s there.  Tried before and slower or no better:
// 16-64-row blocks with the accumulators in registers, prefetching 1-3 strips
// ahead or the next K block row by row, loading B pairs ahead in registers,
// copying each K block to a padded buffer (the copy costs as much as the
// multiplication), and the packed path.
//
// Included by prism_cpu.h only, inside its AVX-512 section.
#pragma once

// Not where the compiler targets AMX: on those Intel CPUs VDPBF16PS measured
// one per 2 cycles, half the multiply-adds of two zmm FMAs (prism_cpu_amx.h),
// and the matmuls below AMX's row count stay on the widening kernel there.
#if PRISM_CPU_AVX512 && defined(__AVX512BF16__) && !defined(__AMX_BF16__) && !defined(PRISM_CPU_NO_DP)
#define PRISM_CPU_DP 1
#else
#define PRISM_CPU_DP 0
#endif

#if PRISM_CPU_DP
namespace prism_jax {
namespace cpu {
namespace detail {
namespace dp {

inline constexpr int kMaxMr = 14;            // MR x 2 accumulators + 2 B pairs + 1 A pair: 31 zmm
inline constexpr std::int64_t kNr = 32;      // columns of a strip (two zmm of 16 pairs)
// rows of B per K block (16 pairs, 2 KiB per strip; 128 on AMD Zen 5: PRISM_CPU_LONG_K_BLOCKS)
inline constexpr std::int64_t kKc = PRISM_CPU_LONG_K_BLOCKS ? 128 : 32;
inline constexpr std::int64_t kKa = 128;     // columns of A rounded into pairs at a time
inline constexpr std::int64_t kApkLd = kKa / 2 + 8;  // 32-bit pairs per row of that copy
// Strips ahead that B is prefetched by row_group_in_registers
// (PRISM_CPU_PREFETCH_B): two (M = 8, K = N = 1024, B in DRAM, one thread:
// 150-165 us; one strip 250-365 us, four 180-200, eight 240-285; 360-380
// without).
inline constexpr std::int64_t kPrefetchStrips = 2;
// The streamed in-place path (M <= kMaxMr, row_group_streamed): rows of B
// per K block, so one strip's rows -- a power-of-two stride apart in weights, so in one L1 set --
// fit the set's ways: 12 on Zen 5 (48 KiB, 12-way L1d), 8 elsewhere (the
// 8-way L1d of Zen 4 and Cooper Lake; not measured there).  The strips'
// accumulators live in memory between K blocks, at most kStreamAccBytes of
// them (a chunk of columns).  Measured on the 2-core Zen 5 (gated_mlp's two
// [8, 4096] @ [4096, 4096] products, two threads, B from DRAM, /tmp harness):
// 128-row K blocks with the accumulators in registers and B prefetched two
// strips ahead 2170-2300 us (29-31 GB/s); this way, 12 rows 1550-1625 us
// (41-43 GB/s), 8 rows 1820-1960, 10 or 14 rows 1700, 16 rows 1990-2060.
inline constexpr std::int64_t kStreamKc = PRISM_CPU_LONG_K_BLOCKS ? 12 : 8;
inline constexpr std::int64_t kStreamAccBytes = 64 << 10;
// The streamed path is for B of at least this many values; for smaller B (in
// L1/L2, attention's tiles) row_group_in_registers keeps the accumulators in
// registers over K blocks of kKc rows: there the memory round trips cost more
// than they save (K = 128, N = 32: 0.17 -> 0.23 us a call; K = N = 1024, ldb
// 1024: 47.6 -> 49.6).
inline constexpr std::int64_t kStreamMinElements = 1 << 18;
static_assert(kStreamKc % 2 == 0, "K blocks of whole pairs");
static_assert(kKa % kKc == 0 && kKc % 2 == 0, "K blocks tile the copies of A in whole pairs");
// The packed path (M > kMaxMr): columns of B packed at a time, so each row of
// B is read kNc * 2 = 512 bytes in one piece.  Reading 2 MiB of bfloat16 B
// from L3 on one Zen 5 core (/tmp harness, median of 300): 32-column strips
// in place (64 bytes of each row per pass) 12-25 GB/s, panels 128 columns
// wide 58-60, 256 wide 77-82, 512 wide 89-93 (but the multiplication after
// them slower: a 128 KiB panel no longer fits L2 beside the rest), whole
// rows in order 93-101.
inline constexpr std::int64_t kNc = 256;
inline constexpr std::int64_t kPairWords = 2 * kNr;  // bfloat16 values of one packed pair of rows of a strip
// Rows of A multiplied by one packing of B (the row blocks of the packed path).
inline constexpr std::int64_t kPackedRowGroup = 64;
static_assert(kNc % kNr == 0, "panels are whole strips");

// The first `width` (a multiple of 16) values of a row: src[0:n] rounded to
// bfloat16 (VCVTNEPS2BF16: to nearest even), zeros past n.
inline void round_row_to_bf16(const float* src, std::int64_t n, std::uint16_t* dst, std::int64_t width) {
  for (std::int64_t k = 0; k < width; k += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask16(n - k), src + k));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), (__m256i)h);
  }
}

// Columns k0 .. k0 + kKa of A's M rows rounded into apk (row i at apk + i *
// kApkLd); as 32-bit words, pairs (zeros past K).
inline void round_a_columns(const float* A, std::int64_t lda, std::int64_t M, std::int64_t K, std::int64_t k0,
                            std::uint32_t* apk) {
  const std::int64_t ka = K - k0 < kKa ? K - k0 : kKa;
  for (std::int64_t i = 0; i < M; ++i)
    round_row_to_bf16(A + i * lda + k0, ka, reinterpret_cast<std::uint16_t*>(apk + i * kApkLd), (ka + 15) / 16 * 16);
}

// C[0:MR, 0:32] += the accumulators (columns {0-3, 8-11, ...} and {4-7,
// 12-15, ...}), put back in column order; every row of C read before any is
// written.  FULL: all 32 columns are real; otherwise the first `ncols`.
template <int MR, bool FULL>
inline void store_accumulators(__m512 (&acc)[MR][2], float* C, std::int64_t ldc, std::int64_t ncols) {
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const __mmask16 m0 = FULL ? static_cast<__mmask16>(0xFFFFu) : mask16(ncols);
  const __mmask16 m1 = FULL ? static_cast<__mmask16>(0xFFFFu) : mask16(ncols - 16);
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    const __m512 lo = acc[r][0], hi = acc[r][1];
    const float* c = C + r * ldc;
    acc[r][0] = _mm512_add_ps(_mm512_permutex2var_ps(lo, first, hi), _mm512_maskz_loadu_ps(m0, c));
    acc[r][1] = _mm512_add_ps(_mm512_permutex2var_ps(lo, second, hi), _mm512_maskz_loadu_ps(m1, c + 16));
  }
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    float* c = C + r * ldc;
    _mm512_mask_storeu_ps(c, m0, acc[r][0]);
    _mm512_mask_storeu_ps(c + 16, m1, acc[r][1]);
  }
}

// acc[r] += A[r, 2p:2p+2] . S[k:k+2, 0:32] for r < MR: rows k and k + 1 of a
// 32-column strip (row k at b; with !pair only row k, row k + 1 taken as
// zeros) interleaved into pairs in registers; A's pair p of row r at
// apk[r * ld + p].  FULL: all 32 columns are real, else those in `mb`.
template <int MR, bool FULL>
__attribute__((always_inline)) inline void pair_step(__m512 (&acc)[MR][2], const std::uint32_t* apk, std::int64_t ld,
                                                     std::int64_t p, const std::uint16_t* b, std::int64_t ldb,
                                                     __mmask32 mb, bool pair) {
  const __m512i x0 = FULL ? _mm512_loadu_si512(b) : _mm512_maskz_loadu_epi16(mb, b);
  const __m512i x1 = !pair ? _mm512_setzero_si512()
                           : FULL ? _mm512_loadu_si512(b + ldb) : _mm512_maskz_loadu_epi16(mb, b + ldb);
  const __m512bh lo = (__m512bh)_mm512_unpacklo_epi16(x0, x1);  // columns 0-3, 8-11, 16-19, 24-27
  const __m512bh hi = (__m512bh)_mm512_unpackhi_epi16(x0, x1);  // columns 4-7, 12-15, 20-23, 28-31
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(apk[r * ld + p]));
    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, lo);
    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, hi);
  }
}

// C[0:MR, 0:32] += A[0:MR, 0:kc] @ S[0:kc, 0:32] for a 32-column strip S of B
// (row k at B + k * ldb); A given as pairs (apk: row r at apk + r * kApkLd,
// pair p = columns 2p, 2p+1).  FULL: all 32 columns are real; otherwise the
// first `ncols` (16-bit masked loads of B, masked loads/stores of C).
template <int MR, bool FULL>
inline void micro_kernel(const std::uint32_t* apk, const std::uint16_t* B, std::int64_t ldb, float* C,
                         std::int64_t ldc, std::int64_t kc, std::int64_t ncols, const std::uint16_t* next) {
  static_assert(MR >= 1 && MR <= kMaxMr, "micro-kernel rows");
  const __mmask32 mb = FULL ? static_cast<__mmask32>(0xFFFFFFFFu) : mask32(ncols);
  __m512 acc[MR][2];
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();

  auto step = [&](std::int64_t k, bool pair) {
    const std::uint16_t* b = B + k * ldb;
    if (PRISM_CPU_PREFETCH_B && next != nullptr) {  // both rows of the strip read kPrefetchStrips later
      const std::uint16_t* ahead = next + k * ldb;
      _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
      if (pair) _mm_prefetch(reinterpret_cast<const char*>(ahead + ldb), _MM_HINT_T0);
    }
    pair_step<MR, FULL>(acc, apk, kApkLd, k / 2, b, ldb, mb, pair);
  };
  std::int64_t k = 0;
  for (; k + 2 <= kc; k += 2) step(k, true);
  if (k < kc) step(k, false);

  store_accumulators<MR, FULL>(acc, C, ldc, ncols);
}

template <bool FULL, int MR = 1>
inline void micro_kernel_rows(std::int64_t rows, const std::uint32_t* apk, const std::uint16_t* B,
                              std::int64_t ldb, float* C, std::int64_t ldc, std::int64_t kc,
                              std::int64_t ncols, const std::uint16_t* next) {
  if constexpr (MR <= kMaxMr) {
    if (rows == MR)
      micro_kernel<MR, FULL>(apk, B, ldb, C, ldc, kc, ncols, next);
    else
      micro_kernel_rows<FULL, MR + 1>(rows, apk, B, ldb, C, ldc, kc, ncols, next);
  }
}

// At most kMaxMr rows of A, B read in place and small (under
// kStreamMinElements): K blocks of kKc rows outermost, 32-column strips
// inside, the accumulators in registers over a K block.
inline void row_group_in_registers(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb, float* C,
                      std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K, std::uint32_t* apk) {
  const StripOrder<std::uint16_t> order(B, ldb, K, kKc, N, 0, kNr);
  const std::int64_t strips = order.count();
  for (std::int64_t k0 = 0; k0 < K; k0 += kKc) {
    const std::int64_t kc = K - k0 < kKc ? K - k0 : kKc;
    if (k0 % kKa == 0) round_a_columns(A, lda, M, K, k0, apk);
    const std::uint32_t* a = apk + (k0 % kKa) / 2;
    const std::uint16_t* b = B + k0 * ldb;
    for (std::int64_t s = 0; s < strips; ++s) {
      const std::int64_t j = order.start(s), ncols = order.columns(s);
      const std::uint16_t* next = order.ahead(k0, s, kPrefetchStrips);
      if (ncols == kNr)
        micro_kernel_rows<true>(M, a, b + j, ldb, C + j, ldc, kc, kNr, next);
      else
        micro_kernel_rows<false>(M, a, b + j, ldb, C + j, ldc, kc, ncols, next);
    }
  }
}

// ---- the in-place path (M <= kMaxMr) ----

// acc[0:MR, 0:32] += A[0:MR, k0:k0+kc] @ S[0:kc, 0:32] for a 32-column strip
// S of B (row k at B + k * ldb), the accumulators in memory (`acc`: row r's
// two vectors at acc + 32 r, columns in the order the pairs give them, see
// store_accumulators); A given as pairs (row r at apk + r * ld, pair p =
// columns 2p, 2p+1, apk already at k0).  FULL: all 32 columns are real;
// otherwise the first `ncols` (16-bit masked loads of B).
template <int MR, bool FULL, int KC = 0>
inline void stream_kernel(const std::uint32_t* apk, std::int64_t ld, const std::uint16_t* B, std::int64_t ldb,
                          float* acc, std::int64_t kc, std::int64_t ncols) {
  if constexpr (KC > 0) kc = KC;  // a whole K block: the loop below unrolled
  static_assert(MR >= 1 && MR <= kMaxMr, "micro-kernel rows");
  const __mmask32 mb = FULL ? static_cast<__mmask32>(0xFFFFFFFFu) : mask32(ncols);
  __m512 a[MR][2];
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    a[r][0] = _mm512_loadu_ps(acc + 32 * r);
    a[r][1] = _mm512_loadu_ps(acc + 32 * r + 16);
  }
  std::int64_t k = 0;
  PRISM_CPU_UNROLL
  for (; k + 2 <= kc; k += 2) pair_step<MR, FULL>(a, apk, ld, k / 2, B + k * ldb, ldb, mb, true);
  if (k < kc) pair_step<MR, FULL>(a, apk, ld, k / 2, B + k * ldb, ldb, mb, false);
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_ps(acc + 32 * r, a[r][0]);
    _mm512_storeu_ps(acc + 32 * r + 16, a[r][1]);
  }
}

// C[0:MR, 0:32] += the accumulators in memory (as stream_kernel keeps them).
template <int MR, bool FULL>
inline void flush_accumulators(const float* acc, float* C, std::int64_t ldc, std::int64_t ncols) {
  __m512 a[MR][2];
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    a[r][0] = _mm512_loadu_ps(acc + 32 * r);
    a[r][1] = _mm512_loadu_ps(acc + 32 * r + 16);
  }
  store_accumulators<MR, FULL>(a, C, ldc, ncols);
}

template <bool FULL, int MR = 1>
inline void stream_kernel_rows(std::int64_t rows, const std::uint32_t* apk, std::int64_t ld, const std::uint16_t* B,
                               std::int64_t ldb, float* acc, std::int64_t kc, std::int64_t ncols) {
  if constexpr (MR <= kMaxMr) {
    if (rows != MR)
      stream_kernel_rows<FULL, MR + 1>(rows, apk, ld, B, ldb, acc, kc, ncols);
    else if (kc == kStreamKc)
      stream_kernel<MR, FULL, kStreamKc>(apk, ld, B, ldb, acc, kc, ncols);
    else
      stream_kernel<MR, FULL>(apk, ld, B, ldb, acc, kc, ncols);
  }
}

template <bool FULL, int MR = 1>
inline void flush_rows(std::int64_t rows, const float* acc, float* C, std::int64_t ldc, std::int64_t ncols) {
  if constexpr (MR <= kMaxMr) {
    if (rows == MR)
      flush_accumulators<MR, FULL>(acc, C, ldc, ncols);
    else
      flush_rows<FULL, MR + 1>(rows, acc, C, ldc, ncols);
  }
}

// At most kMaxMr rows of A, B read in place: chunks of columns whose
// accumulators fit kStreamAccBytes; in each, K blocks of kStreamKc rows
// outermost and the chunk's strips inside, every strip's accumulators loaded
// from and stored to memory once per K block; C updated once per chunk.  A is
// rounded to pairs once, whole (rows kept a non-power-of-two apart).
inline void row_group_streamed(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb, float* C,
                      std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  const std::int64_t ld = (K + 31) / 32 * 16 + 16;  // pairs per row of the rounded A (+ 64 bytes)
  static thread_local std::vector<std::uint32_t> rounded;
  rounded.resize(static_cast<std::size_t>(M * ld));
  for (std::int64_t i = 0; i < M; ++i)
    round_row_to_bf16(A + i * lda, K, reinterpret_cast<std::uint16_t*>(rounded.data() + i * ld), 2 * ld);
  const std::int64_t per_strip = M * kNr;  // accumulator floats of one strip
  const std::int64_t fit = kStreamAccBytes / (per_strip * 4);
  const std::int64_t chunk = (fit > 1 ? fit : 1) * kNr;
  static thread_local std::vector<float> accumulators;  // 64-byte aligned below: no load splits a line
  accumulators.resize(static_cast<std::size_t>((chunk / kNr) * per_strip + 16));
  float* acc = accumulators.data() + (16 - reinterpret_cast<std::uintptr_t>(accumulators.data()) / 4 % 16) % 16;
  for (std::int64_t j0 = 0; j0 < N; j0 += chunk) {
    const std::int64_t nc = N - j0 < chunk ? N - j0 : chunk, strips = (nc + kNr - 1) / kNr;
    std::fill(acc, acc + strips * per_strip, 0.0f);
    for (std::int64_t k0 = 0; k0 < K; k0 += kStreamKc) {
      const std::int64_t kc = K - k0 < kStreamKc ? K - k0 : kStreamKc;
      const std::uint32_t* a = rounded.data() + k0 / 2;
      const std::uint16_t* b = B + k0 * ldb + j0;
      for (std::int64_t s = 0; s < strips; ++s) {
        const std::int64_t ncols = nc - s * kNr < kNr ? nc - s * kNr : kNr;
        if (ncols == kNr)
          stream_kernel_rows<true>(M, a, ld, b + s * kNr, ldb, acc + s * per_strip, kc, kNr);
        else
          stream_kernel_rows<false>(M, a, ld, b + s * kNr, ldb, acc + s * per_strip, kc, ncols);
      }
    }
    for (std::int64_t s = 0; s < strips; ++s) {
      const std::int64_t ncols = nc - s * kNr < kNr ? nc - s * kNr : kNr;
      if (ncols == kNr)
        flush_rows<true>(M, acc + s * per_strip, C + j0 + s * kNr, ldc, kNr);
      else
        flush_rows<false>(M, acc + s * per_strip, C + j0 + s * kNr, ldc, ncols);
    }
  }
}

// ---- the packed path (M > kMaxMr) ----

// B[0:kc, 0:ncols] (ncols <= kNc) packed into `pk` strip by strip (32
// columns each; strip s at pk + s * pairs * kPairWords, pairs = ceil(kc / 2)):
// for every pair of rows (2p, 2p+1) the two vectors VDPBF16PS multiplies,
// lo then hi as micro_kernel makes them.  Columns past ncols and a missing
// last row of an odd kc are zeros.  Rows 2p and 2p+1 are read side by side,
// each in one piece.
inline void pack_panel(const std::uint16_t* B, std::int64_t ldb, std::int64_t kc, std::int64_t ncols,
                       std::uint16_t* pk) {
  const std::int64_t pairs = (kc + 1) / 2, strips = (ncols + kNr - 1) / kNr;
  for (std::int64_t p = 0; p < pairs; ++p) {
    const std::uint16_t* b0 = B + 2 * p * ldb;
    const std::uint16_t* b1 = b0 + ldb;
    const bool second = 2 * p + 1 < kc;
    std::uint16_t* out = pk + p * kPairWords;
    for (std::int64_t s = 0; s < strips; ++s, out += pairs * kPairWords) {
      const __mmask32 mb = mask32(ncols - s * kNr);
      const __m512i x0 = _mm512_maskz_loadu_epi16(mb, b0 + s * kNr);
      const __m512i x1 = second ? _mm512_maskz_loadu_epi16(mb, b1 + s * kNr) : _mm512_setzero_si512();
      _mm512_store_si512(out, _mm512_unpacklo_epi16(x0, x1));
      _mm512_store_si512(out + kNr, _mm512_unpackhi_epi16(x0, x1));
    }
  }
}

// Rows of B prefetched by a packed micro-kernel, 128 bytes per pair it
// multiplies: `rows` rows of `row_bytes` from `next`, `stride` bytes apart.
// Spread over the pairs: the same prefetches in a burst before each strip
// measured slower from DRAM (this path at M = 8, K = N = 4096, two threads:
// 1059-1197 us spread, 1263-1344 burst, 1512-1572 none).
struct Ahead {
  const char* next = nullptr;
  std::int64_t stride = 0, row_bytes = 0, rows = 0;
};

// C[0:MR, 0:32] += A[0:MR, 0:2 pairs] @ S for a packed strip S (pack_panel)
// of `pairs` pairs of rows; A as in micro_kernel.  FULL: all 32 columns of C
// are real; otherwise the first `ncols`.
template <int MR, bool FULL>
inline void packed_kernel(const std::uint32_t* apk, const std::uint16_t* S, float* C, std::int64_t ldc,
                          std::int64_t pairs, std::int64_t ncols, Ahead ahead) {
  static_assert(MR >= 1 && MR <= kMaxMr, "micro-kernel rows");
  __m512 acc[MR][2];
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();

  std::int64_t offset = 0;
  for (std::int64_t p = 0; p < pairs; ++p, S += kPairWords) {
    if (ahead.rows > 0) {
      _mm_prefetch(ahead.next + offset, _MM_HINT_T0);
      _mm_prefetch(ahead.next + offset + 64, _MM_HINT_T0);
      if ((offset += 128) >= ahead.row_bytes) {
        offset = 0;
        ahead.next += ahead.stride;
        --ahead.rows;
      }
    }
    const __m512bh lo = (__m512bh)_mm512_load_si512(S);
    const __m512bh hi = (__m512bh)_mm512_load_si512(S + kNr);
    PRISM_CPU_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(apk[r * kApkLd + p]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, lo);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, hi);
    }
  }
  store_accumulators<MR, FULL>(acc, C, ldc, ncols);
}

template <bool FULL, int MR = 1>
inline void packed_kernel_rows(std::int64_t rows, const std::uint32_t* apk, const std::uint16_t* S, float* C,
                               std::int64_t ldc, std::int64_t pairs, std::int64_t ncols, Ahead ahead) {
  if constexpr (MR <= kMaxMr) {
    if (rows == MR)
      packed_kernel<MR, FULL>(apk, S, C, ldc, pairs, ncols, ahead);
    else
      packed_kernel_rows<FULL, MR + 1>(rows, apk, S, C, ldc, pairs, ncols, ahead);
  }
}

// At most kPackedRowGroup rows of A: K blocks outermost, panels of kNc
// columns (packed into pk) inside, their strips, then the row blocks; the
// next panel prefetched by the first row block, a share per strip.
inline void packed_row_group(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb,
                             float* C, std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K,
                             std::uint32_t* apk, std::uint16_t* pk) {
  const std::int64_t blocks = (M + kMaxMr - 1) / kMaxMr;
  for (std::int64_t k0 = 0; k0 < K; k0 += kKc) {
    const std::int64_t kc = K - k0 < kKc ? K - k0 : kKc, pairs = (kc + 1) / 2;
    if (k0 % kKa == 0) round_a_columns(A, lda, M, K, k0, apk);
    const std::uint32_t* a = apk + (k0 % kKa) / 2;
    for (std::int64_t j0 = 0; j0 < N; j0 += kNc) {
      const std::int64_t nc = N - j0 < kNc ? N - j0 : kNc, strips = (nc + kNr - 1) / kNr;
      pack_panel(B + k0 * ldb + j0, ldb, kc, nc, pk);
      // the next panel: this K block's, else the next K block's first
      const std::int64_t nj = j0 + kNc < N ? j0 + kNc : 0, nk = j0 + kNc < N ? k0 : k0 + kKc;
      const std::int64_t nrows = nk < K ? (K - nk < kKc ? K - nk : kKc) : 0;
      const std::int64_t rows_per_strip = (nrows + strips - 1) / strips;
      Ahead ahead{nrows > 0 ? reinterpret_cast<const char*>(B + nk * ldb + nj) : nullptr, ldb * 2,
                  (N - nj < kNc ? N - nj : kNc) * 2, 0};
      for (std::int64_t s = 0; s < strips; ++s) {
        const std::int64_t r0 = s * rows_per_strip, j = s * kNr;
        ahead.rows = !PRISM_CPU_PREFETCH_B || r0 >= nrows ? 0
                     : nrows - r0 < rows_per_strip ? nrows - r0 : rows_per_strip;
        const std::uint16_t* strip = pk + s * pairs * kPairWords;
        for (std::int64_t blk = 0, i = 0; blk < blocks; ++blk) {
          const std::int64_t rows = row_block(M, blocks, blk, i);
          const Ahead pf = blk == 0 ? ahead : Ahead{};
          if (nc - j >= kNr)
            packed_kernel_rows<true>(rows, a + i * kApkLd, strip, C + i * ldc + j0 + j, ldc, pairs, kNr, pf);
          else
            packed_kernel_rows<false>(rows, a + i * kApkLd, strip, C + i * ldc + j0 + j, ldc, pairs, nc - j, pf);
          i += rows;
        }
        ahead.next += ahead.rows * ahead.stride;
      }
    }
  }
}

inline void matmul_acc(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb, float* C,
                       std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  if (M <= kMaxMr && K * N >= kStreamMinElements) {
    row_group_streamed(A, lda, B, ldb, C, ldc, M, N, K);
    return;
  }
  if (M <= kMaxMr) {
    alignas(64) std::uint32_t apk[kMaxMr * kApkLd];
    row_group_in_registers(A, lda, B, ldb, C, ldc, M, N, K, apk);
    return;
  }
  // 18 KiB of A and a 64 KiB panel of B, off the stack of whichever thread runs this
  alignas(64) static thread_local std::uint32_t apk[kPackedRowGroup * kApkLd];
  alignas(64) static thread_local std::uint16_t pk[kKc * kNc];
  for (std::int64_t i0 = 0; i0 < M; i0 += kPackedRowGroup) {
    const std::int64_t mg = M - i0 < kPackedRowGroup ? M - i0 : kPackedRowGroup;
    packed_row_group(A + i0 * lda, lda, B, ldb, C + i0 * ldc, ldc, mg, N, K, apk, pk);
  }
}

}  // namespace dp
}  // namespace detail
}  // namespace cpu
}  // namespace prism_jax
#endif  // PRISM_CPU_DP
