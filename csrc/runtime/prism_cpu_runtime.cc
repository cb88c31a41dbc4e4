// prism_cpu_runtime.cc -- the matmuls of prism_cpu.h compiled once per machine
// (-O3 -march=native) into a shared library that generated kernels link
// against (they include prism_cpu.h with PRISM_CPU_EXTERN_MATMUL defined).
#include "prism_cpu.h"
#include "prism_cpu_pool.h"

#include <chrono>

#define PRISM_CPU_EXPORT extern "C" __attribute__((visibility("default")))

PRISM_CPU_EXPORT void prism_cpu_matmul_acc(const float* A, std::int64_t lda, const float* B, std::int64_t ldb,
                                           float* C, std::int64_t ldc, std::int64_t M, std::int64_t N,
                                           std::int64_t K) {
  prism_jax::cpu::matmul_acc(A, lda, B, ldb, C, ldc, M, N, K);
}

PRISM_CPU_EXPORT void prism_cpu_matmul_acc_bf16(const float* A, std::int64_t lda, const std::uint16_t* B,
                                                std::int64_t ldb, float* C, std::int64_t ldc, std::int64_t M,
                                                std::int64_t N, std::int64_t K) {
  prism_jax::cpu::matmul_acc_bf16(A, lda, B, ldb, C, ldc, M, N, K);
}

PRISM_CPU_EXPORT void prism_cpu_matmul_acc_bf16_dot(const float* A, std::int64_t lda, const std::uint16_t* B,
                                                    std::int64_t ldb, float* C, std::int64_t ldc, std::int64_t M,
                                                    std::int64_t N, std::int64_t K) {
  prism_jax::cpu::matmul_acc_bf16_dot(A, lda, B, ldb, C, ldc, M, N, K);
}

PRISM_CPU_EXPORT void prism_cpu_parallel_for(std::int64_t workers, std::int64_t blocks,
                                             void (*fn)(void*, std::int64_t), void* ctx) {
  prism_jax::cpu::pool::shared_pool().run(workers, blocks, fn, ctx);
}

// The float32 multiply-add throughput of the calling thread (FLOP/s), for the
// benchmarks' roofline: independent FMA chains held in registers (zmm with
// AVX-512, else ymm with AVX2 + FMA, else scalar), enough of them to cover
// the FMA latency on every port, run for about `seconds`.
PRISM_CPU_EXPORT double prism_cpu_fma_peak(double seconds) {
  using clock = std::chrono::steady_clock;
#if PRISM_CPU_AVX512
  using Vec = __m512;
  constexpr int kLanes = 16, kChains = 16;
  const Vec x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-6f);
  auto fma = [](Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); };
  auto first = [](Vec v) { return _mm512_cvtss_f32(v); };
  Vec acc[kChains];
  for (auto& a : acc) a = _mm512_set1_ps(1.0f);
#elif PRISM_CPU_AVX2
  using Vec = __m256;
  constexpr int kLanes = 8, kChains = 12;
  const Vec x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-6f);
  auto fma = [](Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); };
  auto first = [](Vec v) { return _mm256_cvtss_f32(v); };
  Vec acc[kChains];
  for (auto& a : acc) a = _mm256_set1_ps(1.0f);
#else
  using Vec = float;
  constexpr int kLanes = 1, kChains = 8;
  const Vec x = 0.999999f, y = 1e-6f;
  auto fma = [](Vec a, Vec b, Vec c) { return a * b + c; };
  auto first = [](Vec v) { return v; };
  Vec acc[kChains];
  for (auto& a : acc) a = 1.0f;
#endif
  constexpr std::int64_t kSteps = 4096;  // per timed batch
  std::int64_t batches = 0;
  const auto start = clock::now();
  double elapsed = 0.0;
  do {
    for (std::int64_t s = 0; s < kSteps; ++s) {
      PRISM_CPU_UNROLL
      for (int c = 0; c < kChains; ++c) acc[c] = fma(acc[c], x, y);
    }
    ++batches;
    elapsed = std::chrono::duration<double>(clock::now() - start).count();
  } while (elapsed < seconds);
  float sum = 0.0f;  // used, so the chains are computed
  for (int c = 0; c < kChains; ++c) sum += first(acc[c]);
  volatile float sink = sum;
  (void)sink;
  return static_cast<double>(batches) * kSteps * kChains * kLanes * 2 / elapsed;
}
