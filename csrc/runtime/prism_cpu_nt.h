// prism_cpu_nt.h -- C += A @ B^T with B's rows read in place (dot products), for
// q @ k^T in attention: K's rows are contiguous, so no transposed copy is made.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "prism_cpu.h"

#if defined(__AVX2__) && defined(__FMA__) && !defined(PRISM_CPU_NO_SIMD)
#include <immintrin.h>
#define PRISM_CPU_NT_AVX2 1
#else
#define PRISM_CPU_NT_AVX2 0
#endif

namespace prism_jax {
namespace cpu {
namespace nt_detail {

inline float widen(float x) { return x; }
inline float widen(std::uint16_t bits) {
  std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

#if PRISM_CPU_NT_AVX2
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const std::uint16_t* p) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(x), 16));
}
inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}
#endif

// Up to MR rows of A against one row b of B: out[r] = dot(A[r, :K], b); with
// SUMSQ also *sumsq = dot(b, b) (from the same loads).
template <int MR, bool SUMSQ, typename Src>
inline void dots(const float* A, std::int64_t lda, const Src* b, std::int64_t K, float* out, float* sumsq) {
  std::int64_t k = 0;
  float squares = 0.0f;
#if PRISM_CPU_NT_AVX2
  __m256 acc[MR][2];
  __m256 sq[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (; k + 16 <= K; k += 16) {
    const __m256 b0 = load8(b + k), b1 = load8(b + k + 8);
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(A + r * lda + k), b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(A + r * lda + k + 8), b1, acc[r][1]);
    }
    if constexpr (SUMSQ) {
      sq[0] = _mm256_fmadd_ps(b0, b0, sq[0]);
      sq[1] = _mm256_fmadd_ps(b1, b1, sq[1]);
    }
  }
  for (int r = 0; r < MR; ++r) out[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
  if constexpr (SUMSQ) squares = hsum(_mm256_add_ps(sq[0], sq[1]));
#else
  for (int r = 0; r < MR; ++r) out[r] = 0.0f;
#endif
  for (; k < K; ++k) {
    const float bk = widen(b[k]);
    for (int r = 0; r < MR; ++r) out[r] += A[r * lda + k] * bk;
    if constexpr (SUMSQ) squares += bk * bk;
  }
  if constexpr (SUMSQ) *sumsq = squares;
}

// dots for 1 <= rows <= 3 rows of A (the rows a pass of four leaves).
template <bool SUMSQ, typename Src>
inline void few_dots(std::int64_t rows, const float* A, std::int64_t lda, const Src* b, std::int64_t K, float* out,
                     float* sumsq) {
  if (rows == 3)
    dots<3, SUMSQ>(A, lda, b, K, out, sumsq);
  else if (rows == 2)
    dots<2, SUMSQ>(A, lda, b, K, out, sumsq);
  else
    dots<1, SUMSQ>(A, lda, b, K, out, sumsq);
}

// Short rows of B (attention's K: 128 values, 256-512 bytes) are prefetched
// this many bytes ahead: a key's dot product is over before the hardware
// prefetchers get going.  Measured on an AMD EPYC (Zen 3, 2 cores, AVX2), 4
// query rows against float32 K of 16 heads x 4096 x 128 from DRAM: one
// thread 8-10 -> 11-13 GB/s, two threads 13-17 -> 15-22 GB/s (a noisy host;
// 2, 4 and 8 KiB ahead alike).
inline constexpr std::int64_t kPrefetchBytes = 4096;

template <typename Src>
inline void prefetch_row(const Src* row, std::int64_t bytes) {
#if PRISM_CPU_NT_AVX2
  const char* p = reinterpret_cast<const char*>(row);
  for (std::int64_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
#else
  (void)row;
  (void)bytes;
#endif
}

// C += A @ B^T; where sumsq is given also sumsq[n] = dot(B[n, :], B[n, :])
// (taken on the first pass over B).
template <typename Src>
inline void matmul_nt(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                      std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K, float* sumsq = nullptr) {
  constexpr int kRows = 4;  // rows of A per pass over B: each row of B is read once per pass
  float out[kRows];
  std::int64_t m = 0;
  const std::int64_t row_bytes = K * static_cast<std::int64_t>(sizeof(Src));
  const std::int64_t ahead = row_bytes <= detail::kShortRowBytes ? (kPrefetchBytes + row_bytes - 1) / row_bytes : 0;
  for (; m + kRows <= M; m += kRows) {
    for (std::int64_t n = 0; n < N; ++n) {
      if (ahead > 0 && n + ahead < N) prefetch_row(B + (n + ahead) * ldb, row_bytes);
      if (sumsq != nullptr && m == 0)
        dots<kRows, true>(A + m * lda, lda, B + n * ldb, K, out, sumsq + n);
      else
        dots<kRows, false>(A + m * lda, lda, B + n * ldb, K, out, nullptr);
      for (int r = 0; r < kRows; ++r) C[(m + r) * ldc + n] += out[r];
    }
  }
  if (m < M) {  // the last 1-3 rows in one pass over B
    const std::int64_t rows = M - m;
    for (std::int64_t n = 0; n < N; ++n) {
      if (sumsq != nullptr && m == 0)
        few_dots<true>(rows, A + m * lda, lda, B + n * ldb, K, out, sumsq + n);
      else
        few_dots<false>(rows, A + m * lda, lda, B + n * ldb, K, out, nullptr);
      for (std::int64_t r = 0; r < rows; ++r) C[(m + r) * ldc + n] += out[r];
    }
  }
  if (sumsq != nullptr && M <= 0) {
    for (std::int64_t n = 0; n < N; ++n) {
      float s = 0.0f;
      for (std::int64_t k = 0; k < K; ++k) s += widen(B[n * ldb + k]) * widen(B[n * ldb + k]);
      sumsq[n] = s;
    }
  }
}

}  // namespace nt_detail

#if PRISM_CPU_DP
// C += bf16(A) @ B^T on VDPBF16PS (AVX512_BF16 without AMX, as prism_cpu_dp.h):
// B's rows are bfloat16 pairs along K as they lie, so they are read in place,
// 32 values per load; A is rounded to bfloat16 once per call (to nearest
// even, zero-padded to whole 32-value chunks).  Four rows of B at a time
// against up to four rows of A: 16 accumulators, summed across lanes four at
// a time (folds and two horizontal adds).  The ymm dot products above widen
// B and need 4x the instructions: GQA's q @ k^T (4 query rows per KV head,
// K = 128) was bound by them.
namespace nt_dp {

// 16 lanes -> 4 partial sums.  (Masked extracts: GCC 12's unmasked one, also
// behind _mm512_castps512_ps256 and _mm512_reduce_add_ps, trips
// -Wuninitialized through _mm256_undefined_pd.)
inline __m128 fold(__m512 v) {
  const __m512d d = _mm512_castps_pd(v);
  const __m256d lower = _mm512_maskz_extractf64x4_pd(static_cast<__mmask8>(0xFF), d, 0);
  const __m256d upper = _mm512_maskz_extractf64x4_pd(static_cast<__mmask8>(0xFF), d, 1);
  const __m256 h = _mm256_add_ps(_mm256_castpd_ps(lower), _mm256_castpd_ps(upper));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {  // {sum a, sum b, sum c, sum d}
  return _mm_hadd_ps(_mm_hadd_ps(fold(a), fold(b)), _mm_hadd_ps(fold(c), fold(d)));
}
inline float sum1(__m512 v) {
  __m128 s = fold(v);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}

// C[0:MR, 0:NB] += the MR rows of the rounded A (row r at a + r * lda,
// zero-padded to whole 32-value chunks) against NB rows of B.
template <int MR, int NB>
inline void block(const std::uint16_t* a, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb, float* C,
                  std::int64_t ldc, std::int64_t K) {
  const std::int64_t chunks = (K + 31) / 32;
  const __mmask32 tail = detail::mask32(K - (chunks - 1) * 32);
  __m512 acc[MR][NB];
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    PRISM_CPU_UNROLL
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  for (std::int64_t c = 0; c < chunks; ++c) {
    const __mmask32 m = c + 1 < chunks ? static_cast<__mmask32>(0xFFFFFFFFu) : tail;
    __m512bh b[NB];
    PRISM_CPU_UNROLL
    for (int j = 0; j < NB; ++j) b[j] = (__m512bh)_mm512_maskz_loadu_epi16(m, B + j * ldb + c * 32);
    PRISM_CPU_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_loadu_si512(a + r * lda + c * 32);
      PRISM_CPU_UNROLL
      for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], av, b[j]);
    }
  }
  PRISM_CPU_UNROLL
  for (int r = 0; r < MR; ++r) {
    float* c = C + r * ldc;
    if constexpr (NB == 4)
      _mm_storeu_ps(c, _mm_add_ps(_mm_loadu_ps(c), sum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3])));
    else
      PRISM_CPU_UNROLL
      for (int j = 0; j < NB; ++j) c[j] += sum1(acc[r][j]);
  }
}

// Every group of four rows of A (and the last 1-3) against NB rows of B,
// which stay in L1 while they do.
template <int NB>
inline void all_rows(const std::uint16_t* a, std::int64_t lda, std::int64_t M, const std::uint16_t* B,
                     std::int64_t ldb, float* C, std::int64_t ldc, std::int64_t K) {
  std::int64_t i = 0;
  for (; i + 4 <= M; i += 4) block<4, NB>(a + i * lda, lda, B, ldb, C + i * ldc, ldc, K);
  if (M - i == 3) block<3, NB>(a + i * lda, lda, B, ldb, C + i * ldc, ldc, K);
  if (M - i == 2) block<2, NB>(a + i * lda, lda, B, ldb, C + i * ldc, ldc, K);
  if (M - i == 1) block<1, NB>(a + i * lda, lda, B, ldb, C + i * ldc, ldc, K);
}

inline void matmul_nt(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb, float* C,
                      std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  const std::int64_t padded = (K + 31) / 32 * 32;
  static thread_local std::vector<std::uint16_t> rounded;
  if (static_cast<std::int64_t>(rounded.size()) < M * padded) rounded.resize(M * padded);
  for (std::int64_t i = 0; i < M; ++i)
    detail::dp::round_row_to_bf16(A + i * lda, K, rounded.data() + i * padded, padded);  // zeros past K
  std::int64_t n = 0;
  for (; n + 4 <= N; n += 4) all_rows<4>(rounded.data(), padded, M, B + n * ldb, ldb, C + n, ldc, K);
  for (; n < N; ++n) all_rows<1>(rounded.data(), padded, M, B + n * ldb, ldb, C + n, ldc, K);
}

}  // namespace nt_dp
#endif  // PRISM_CPU_DP

// C[M,N] += A[M,K] @ B^T where B is N x K (row n at B + n * ldb), float32.
inline void matmul_nt_acc(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                          std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  nt_detail::matmul_nt(A, lda, B, ldb, C, ldc, M, N, K);
}

// The same with B given as bfloat16 bits, widened in registers.
inline void matmul_nt_acc_bf16(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb,
                               float* C, std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  nt_detail::matmul_nt(A, lda, B, ldb, C, ldc, M, N, K);
}

// C[M,N] += bf16(A) @ B^T with A rounded to bfloat16 (to nearest even): the
// product of two bfloat16 matrices, for programs whose left operand is
// bfloat16 too (as matmul_acc_bf16_dot).  On AMX tiles where available
// (prism_cpu_amx.h: B's rows are the tiles' left operand, read in place);
// elsewhere the rounded A goes through the dot products above.
inline void matmul_nt_acc_bf16_dot(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb,
                                   float* C, std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) return;
#if PRISM_CPU_AMX
  if (M >= amx::kNtMinRows && amx::available()) {
    amx::matmul_nt_acc(A, lda, B, ldb, C, ldc, M, N, K);
    return;
  }
#endif
#if PRISM_CPU_DP
  nt_dp::matmul_nt(A, lda, B, ldb, C, ldc, M, N, K);
#else
  nt_detail::matmul_nt(rounded_to_bf16(A, lda, M, K), K, B, ldb, C, ldc, M, N, K);
#endif
}

// C += A @ B^T and sumsq[n] = sum_k B[n, k]^2 in one pass over B (a row
// norm of the operand, e.g. QK-norm's K, taken while its rows stream by:
// a second pass over a K tile cost as much as the first, even from L2).
inline void matmul_nt_acc_sumsq(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                                std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K, float* sumsq) {
  nt_detail::matmul_nt(A, lda, B, ldb, C, ldc, M, N, K, sumsq);
}
inline void matmul_nt_acc_bf16_sumsq(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb,
                                     float* C, std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K,
                                     float* sumsq) {
  nt_detail::matmul_nt(A, lda, B, ldb, C, ldc, M, N, K, sumsq);
}

}  // namespace cpu
}  // namespace prism_jax
