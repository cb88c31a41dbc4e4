// prism_runtime.h -- header-only helpers shared by kernels that prism_jax
// generates (host C++17 and CUDA).  Keep this dependency-free.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define PRISM_RT_HD __host__ __device__ __forceinline__
#else
#define PRISM_RT_HD inline
#endif

namespace prism_jax {
namespace rt {

// ceil(a / b) for non-negative integers, b > 0.
template <typename T>
PRISM_RT_HD constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

// Smallest multiple of b that is >= a (b > 0).
template <typename T>
PRISM_RT_HD constexpr T round_up(T a, T b) {
  return ceil_div(a, b) * b;
}

template <typename T>
PRISM_RT_HD constexpr T min_of(T a, T b) {
  return a < b ? a : b;
}

// A non-owning view of a row-major 2-D tile: element (r, c) lives at
// ptr[r * ld + c].  `ld` (leading dimension) is >= cols for a sub-tile of a
// bigger matrix.
template <typename T>
struct TileView {
  T* ptr;
  std::int64_t rows;
  std::int64_t cols;
  std::int64_t ld;

  PRISM_RT_HD T& at(std::int64_t r, std::int64_t c) const { return ptr[r * ld + c]; }
  PRISM_RT_HD T& operator()(std::int64_t r, std::int64_t c) const { return at(r, c); }

  // Sub-tile starting at (r0, c0), clipped to the bounds of this view.
  PRISM_RT_HD TileView sub(std::int64_t r0, std::int64_t c0, std::int64_t nr,
                           std::int64_t nc) const {
    return TileView{ptr + r0 * ld + c0, min_of(nr, rows - r0), min_of(nc, cols - c0), ld};
  }
};

template <typename T>
PRISM_RT_HD TileView<T> make_tile(T* ptr, std::int64_t rows, std::int64_t cols,
                                  std::int64_t ld) {
  return TileView<T>{ptr, rows, cols, ld};
}

template <typename T>
PRISM_RT_HD TileView<T> make_tile(T* ptr, std::int64_t rows, std::int64_t cols) {
  return TileView<T>{ptr, rows, cols, cols};
}

}  // namespace rt
}  // namespace prism_jax
