// prism_cpu_runtime.cc -- the matmuls of prism_cpu.h compiled once per machine
// (-O3 -march=native) into a shared library that generated kernels link
// against (they include prism_cpu.h with PRISM_CPU_EXTERN_MATMUL defined).
#include "prism_cpu.h"
#include "prism_cpu_pool.h"

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
