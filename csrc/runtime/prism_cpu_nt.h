// prism_cpu_nt.h -- C += A @ B^T with B's rows read in place (dot products), for
// q @ k^T in attention: K's rows are contiguous, so no transposed copy is made.
#pragma once

#include <cstdint>
#include <cstring>

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

// C += A @ B^T; where sumsq is given also sumsq[n] = dot(B[n, :], B[n, :])
// (taken on the first pass over B).
template <typename Src>
inline void matmul_nt(const float* A, std::int64_t lda, const Src* B, std::int64_t ldb, float* C,
                      std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K, float* sumsq = nullptr) {
  constexpr int kRows = 4;  // rows of A per pass over B: each row of B is read once per pass
  float out[kRows];
  std::int64_t m = 0;
  for (; m + kRows <= M; m += kRows) {
    for (std::int64_t n = 0; n < N; ++n) {
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
  nt_detail::matmul_nt(rounded_to_bf16(A, lda, M, K), K, B, ldb, C, ldc, M, N, K);
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
