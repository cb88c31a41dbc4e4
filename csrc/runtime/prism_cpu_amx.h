// prism_cpu_amx.h -- C[M,N] += A[M,K] @ B[K,N] with both operands bfloat16 on
// Intel AMX tiles (TDPBF16PS: float32 accumulation of exact bfloat16
// products), included by prism_cpu.h.
//
// Why: at decode sizes (M <= 16) the AVX-512 micro-kernel of prism_cpu.h is
// bound by its FMAs, not by reading B -- 2 * MR FMAs per row of a 32-column
// strip, ~100-120 GFLOP/s on the machine below -- and AVX512_BF16's
// VDPBF16PS does not help there (measured: one per 2 cycles, half the
// multiply-adds per cycle of two zmm FMAs).  One TDPBF16PS multiplies a
// 16 x 32 tile of A by a 32 x 16 tile of B; the matmul then costs little
// more than reading B once and rearranging it for the tiles.
//
// The layout AMX wants for B pairs rows k, k+1 ("VNNI"): row p of a B tile
// holds (B[2p, j], B[2p+1, j]) for 16 columns j.  Each block of B (128 rows
// of a 64-column strip) is rearranged once per call into a buffer that the
// row groups of A read, two rows of 32 columns per step: the rows' 64-bit quarters are reordered (vpermq)
// so that vpunpck{l,h}wd, which works within 128-bit lanes, yields columns
// 0-15 and 16-31 in order.  A is rounded to bfloat16 (to nearest even) into
// a zero-padded copy with K a multiple of 32; rows past M and columns past
// N or K are zeros, never read from the caller.  C is accumulated in tiles
// and a per-thread buffer, added to the caller's C at the end (masked at
// N's tail).
//
// Measured on the machine of prism_cpu.h's notes, one thread, best of 200
// (us, AVX-512 kernel -> AMX): M = 8, K = 1024, N = 512 with B in L2
// 62 -> 31; the same in 128-row calls on a 1024-column B 79 -> 45; K = N =
// 4096 (B in L3) M = 8 2700 -> 1640, M = 16 4540 -> 2370; but M = 1
// 1300 -> 1560 and M = 2 1480 -> 1680, so fewer than kMinRows rows stay on
// the AVX-512 kernel.  Of the AMX time, rearranging B is most: one MiB of B
// costs ~20 us to rearrange (vpermt2w instead of vpermq + vpunpck: no
// faster) and ~5.4 us of TDPBF16PS at MR = 8 or 16.
//
// Tiles: 0-3 accumulate a MR x 64 block of C (MR = min(M, 16) rows), 4 holds
// A (MR x 32), 5 and 6 B (16 pairs x 16 columns).  The tile configuration is
// per thread and loaded by every call (TILERELEASE at the end, so a thread
// that is switched out does not carry the tile state).
//
// Linux hands out the AMX tile state only on request (arch_prctl
// ARCH_REQ_XCOMP_PERM, once per process); where that is refused, or the
// compiler was not asked for AMX, `available()` is false and prism_cpu.h
// uses its AVX-512/AVX2 kernels on the rounded A instead.
//
// Included by prism_cpu.h only (after its ISA macros and detail::mask16/32).
#pragma once

#include <cstdint>

#if PRISM_CPU_AVX512 && defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && \
    defined(__linux__) && !defined(PRISM_CPU_NO_AMX)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>
#define PRISM_CPU_AMX 1
#else
#define PRISM_CPU_AMX 0
#endif

namespace prism_jax {
namespace cpu {
namespace amx {

// Fewer rows of A than this: the AVX-512 kernel is as fast or faster.
inline constexpr std::int64_t kMinRows = 4;

#if PRISM_CPU_AMX

// Asks Linux for the tile data state once per process; false where refused.
inline bool available() {
  static const bool granted = [] {
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

inline constexpr std::int64_t kTileRows = 16;   // rows of A and C per tile
inline constexpr std::int64_t kKStep = 32;      // bfloat16 K values per A tile row (64 bytes)
inline constexpr std::int64_t kStrip = 64;      // columns of C per pass: four 16-column tiles
inline constexpr std::int64_t kKBlock = 32;     // rows of B per pass over the strips (4 KiB per strip)
inline constexpr std::int64_t kBTile = 16 * 32;  // bfloat16 elements of one B tile (16 pairs x 16 cols)

struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

// ldtilecfg on the whole configuration: GCC's _tile_loadconfig tells the compiler it reads only a
// pointer's worth of it, and with the configuring function inlined and specialized the stores of
// the rest were dropped as dead (the instruction then faulted on a half-written configuration).
inline void load_config(const TileConfig& cfg) { __asm__ volatile("ldtilecfg %0" : : "m"(cfg)); }

inline void configure(int mr) {
  TileConfig cfg;
  for (int t = 0; t < 5; ++t) {  // C tiles and the A tile: mr rows of 64 bytes
    cfg.rows[t] = static_cast<std::uint8_t>(mr);
    cfg.colsb[t] = 64;
  }
  for (int t = 5; t < 7; ++t) {  // B tiles: 16 pairs of rows
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  load_config(cfg);
}

// A (float32, M x K) rounded to bfloat16 into `pack`: rows_padded x kp, zeros outside.
inline void pack_a(const float* A, std::int64_t lda, std::int64_t M, std::int64_t K, std::int64_t rows_padded,
                   std::int64_t kp, std::uint16_t* pack) {
  for (std::int64_t i = 0; i < rows_padded; ++i) {
    std::uint16_t* dst = pack + i * kp;
    std::int64_t k = 0;
    if (i < M) {
      const float* src = A + i * lda;
      for (; k + 16 <= K; k += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + k)));
      if (k < K) {
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(detail::mask16(K - k), src + k));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), h);
        k += 16;
      }
    }
    for (; k < kp; k += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), _mm256_setzero_si256());
  }
}

// Rows [k0, k0 + kc) (kc a multiple of 32, rows past K read as zeros) of the strip of B
// starting at column j (ncols <= 64 real columns) into B tiles: tile (c, t)
// holds pairs [16c, 16c + 16) of the chunk and columns [16t, 16t + 16).
inline void pack_b(const std::uint16_t* B, std::int64_t ldb, std::int64_t K, std::int64_t k0, std::int64_t kc,
                   std::int64_t ncols, std::uint16_t* pack) {
  const __m512i order = _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
  for (std::int64_t p = 0; p < kc / 2; ++p) {
    const std::int64_t k = k0 + 2 * p;
    std::uint16_t* tiles = pack + (p / 16) * 4 * kBTile + (p % 16) * 32;
    for (int half = 0; half < 2; ++half) {
      const __mmask32 m = detail::mask32(ncols - 32 * half);
      const std::uint16_t* r0 = B + k * ldb + 32 * half;
      const __m512i x = k < K ? _mm512_maskz_loadu_epi16(m, r0) : _mm512_setzero_si512();
      const __m512i y = k + 1 < K ? _mm512_maskz_loadu_epi16(m, r0 + ldb) : _mm512_setzero_si512();
      const __m512i xs = _mm512_maskz_permutexvar_epi64(0xFF, order, x), ys = _mm512_maskz_permutexvar_epi64(0xFF, order, y);
      _mm512_store_si512(tiles + (2 * half) * kBTile, _mm512_unpacklo_epi16(xs, ys));
      _mm512_store_si512(tiles + (2 * half + 1) * kBTile, _mm512_unpackhi_epi16(xs, ys));
    }
  }
}

// C[M,N] += bf16(A)[M,K] @ B[K,N] on AMX tiles; call only when available().
// K blocks of kKBlock rows outermost, 64-column strips inside (B's rows are
// read side by side, front to back, as in prism_cpu.h's kernels: a strip
// walked down all of K reads B at a stride the prefetchers do not follow --
// 2.3x slower than the AVX-512 kernel at M = 1, K = N = 4096; blocks of 64
// or 128 rows measured slower than 32 with B in L3), row groups innermost,
// each reading the strip's rearranged block from L1.  C
// accumulates in a per-thread float32 buffer (tile loads and stores per
// block) that is added to the caller's C at the end.
inline void matmul_acc(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb, float* C,
                       std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  const std::int64_t mr = M < kTileRows ? M : kTileRows;
  const std::int64_t groups = (M + mr - 1) / mr;
  const std::int64_t kp = (K + kKStep - 1) / kKStep * kKStep;
  const std::int64_t np = (N + kStrip - 1) / kStrip * kStrip;
  const std::int64_t kb = kp < kKBlock ? kp : kKBlock;
  // per thread, grown on demand: the rounded A, one block of a strip of B, C's sums
  static thread_local std::vector<std::uint16_t> a_store, b_store;
  static thread_local std::vector<float> c_store;
  auto grow = [](auto& store, std::int64_t n) {
    if (static_cast<std::int64_t>(store.size()) < n + 64) store.resize(n + 64);
    return reinterpret_cast<decltype(store.data())>((reinterpret_cast<std::uintptr_t>(store.data()) + 63) &
                                                    ~std::uintptr_t{63});
  };
  std::uint16_t* a_pack = grow(a_store, groups * mr * kp);
  std::uint16_t* b_pack = grow(b_store, kb * kStrip);
  float* cacc = grow(c_store, groups * mr * np);

  pack_a(A, lda, M, K, groups * mr, kp, a_pack);
  configure(static_cast<int>(mr));
  const std::int64_t a_stride = kp * 2, c_stride = np * 4;  // bytes per row
  for (std::int64_t k0 = 0; k0 < kp; k0 += kb) {
    const std::int64_t kc = kp - k0 < kb ? kp - k0 : kb;
    for (std::int64_t j = 0; j < N; j += kStrip) {
      pack_b(B + j, ldb, K, k0, kc, N - j, b_pack);
      for (std::int64_t g = 0; g < groups; ++g) {
        float* c = cacc + g * mr * np + j;
        if (k0 == 0) {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
        } else {
          _tile_loadd(0, c, c_stride);
          _tile_loadd(1, c + 16, c_stride);
          _tile_loadd(2, c + 32, c_stride);
          _tile_loadd(3, c + 48, c_stride);
        }
        const std::uint16_t* a = a_pack + g * mr * kp + k0;
        for (std::int64_t q = 0; q < kc / kKStep; ++q) {
          const std::uint16_t* b = b_pack + q * 4 * kBTile;
          _tile_loadd(4, a + q * kKStep, a_stride);
          _tile_loadd(5, b, 64);
          _tile_dpbf16ps(0, 4, 5);
          _tile_loadd(6, b + kBTile, 64);
          _tile_dpbf16ps(1, 4, 6);
          _tile_loadd(5, b + 2 * kBTile, 64);
          _tile_dpbf16ps(2, 4, 5);
          _tile_loadd(6, b + 3 * kBTile, 64);
          _tile_dpbf16ps(3, 4, 6);
        }
        _tile_stored(0, c, c_stride);
        _tile_stored(1, c + 16, c_stride);
        _tile_stored(2, c + 32, c_stride);
        _tile_stored(3, c + 48, c_stride);
      }
    }
  }
  _tile_release();
  for (std::int64_t i = 0; i < M; ++i) {
    const float* src = cacc + i * np;
    float* dst = C + i * ldc;
    for (std::int64_t j = 0; j < N; j += 16) {
      const __mmask16 m = detail::mask16(N - j);
      _mm512_mask_storeu_ps(dst + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + j), _mm512_load_ps(src + j)));
    }
  }
}

// --- C += bf16(A) @ B^T with B's rows read in place ---------------------------
//
// For q @ k^T at decode (a few rows of q against thousands of K rows): the
// product is taken transposed, C^T = B @ bf16(A)^T, so B's rows are the AMX
// A operand, loaded straight from the caller's rows (16 rows x 32 values per
// tile, at B's row stride: nothing rearranged), and A (at most 16 rows per
// pass) is rounded and rearranged once per call into B tiles: tile q's row p
// holds, for each row m of A, the pair (A[m, 32q + 2p], A[m, 32q + 2p + 1]).
// Tiles: 0 holds C^T, 1 B's rows (the A operand), 2 A's pairs.  Each 16-row
// block of B gives a 16 x mr tile of C^T, stored, and gathered into C's
// columns after the last block.  Rows of B past N and values past K come from a zero-padded copy of
// that block's chunk (only the tails).  Measured on the machine of
// prism_cpu.h's notes, one thread, 8 heads of 4096 x 128 bfloat16 K rows
// (8 MiB, L3; reading them alone ~290 us): 4 rows of q 570 -> 327 us, the AVX2
// dot products of prism_cpu_nt.h being bound by their FMAs and horizontal
// sums.  (Prefetching the next blocks in software made it slower: 359 us.)

// Fewer rows of A than this: the dot products of prism_cpu_nt.h read B as fast (one row: 298 vs 317 us
// in the measurement above; two rows: 537 vs 324 us).
inline constexpr std::int64_t kNtMinRows = 2;

inline void configure_nt(int mr) {
  TileConfig cfg;
  cfg.rows[0] = 16;
  cfg.colsb[0] = static_cast<std::uint16_t>(4 * mr);
  cfg.rows[1] = 16;
  cfg.colsb[1] = 64;
  cfg.rows[2] = 16;
  cfg.colsb[2] = static_cast<std::uint16_t>(4 * mr);
  load_config(cfg);
}

// Rows [0, mr) of A rounded into `chunks` B tiles of 16 pair-rows x 16 dwords (dword m: row m's pair).
inline void pack_a_nt(const float* A, std::int64_t lda, std::int64_t mr, std::int64_t K, std::int64_t chunks,
                      std::uint32_t* tiles) {
  alignas(64) std::uint16_t row[kKStep];
  const std::uint32_t* pairs = reinterpret_cast<const std::uint32_t*>(row);
  std::fill(tiles, tiles + chunks * 256, 0u);
  for (std::int64_t m = 0; m < mr; ++m) {
    for (std::int64_t q = 0; q < chunks; ++q) {
      pack_a(A + m * lda + q * kKStep, lda, 1, K - q * kKStep < kKStep ? K - q * kKStep : kKStep, 1, kKStep, row);
      for (std::int64_t p = 0; p < 16; ++p) tiles[q * 256 + p * 16 + m] = pairs[p];
    }
  }
}

// C[M,N] += bf16(A)[M,K] @ B[N,K]^T (B bfloat16 bits, row n at B + n * ldb) on
// AMX tiles; call only when available().
inline void matmul_nt_acc(const float* A, std::int64_t lda, const std::uint16_t* B, std::int64_t ldb, float* C,
                          std::int64_t ldc, std::int64_t M, std::int64_t N, std::int64_t K) {
  const std::int64_t chunks = (K + kKStep - 1) / kKStep;
  static thread_local std::vector<std::uint32_t> a_store;
  if (static_cast<std::int64_t>(a_store.size()) < chunks * 256 + 16) a_store.resize(chunks * 256 + 16);
  std::uint32_t* a_tiles =
      reinterpret_cast<std::uint32_t*>((reinterpret_cast<std::uintptr_t>(a_store.data()) + 63) & ~std::uintptr_t{63});
  alignas(64) std::uint16_t padded[16 * 32];
  const std::int64_t blocks = (N + 15) / 16;
  static thread_local std::vector<float> c_store;  // the C^T tiles of all blocks, gathered into C at the end
  if (static_cast<std::int64_t>(c_store.size()) < blocks * 256 + 16) c_store.resize(blocks * 256 + 16);
  float* ct = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(c_store.data()) + 63) & ~std::uintptr_t{63});
  const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(16));
  for (std::int64_t m0 = 0; m0 < M; m0 += kTileRows) {
    const std::int64_t mr = M - m0 < kTileRows ? M - m0 : kTileRows;
    pack_a_nt(A + m0 * lda, lda, mr, K, chunks, a_tiles);
    configure_nt(static_cast<int>(mr));
    for (std::int64_t n0 = 0; n0 < N; n0 += 16) {
      const std::int64_t nr = N - n0 < 16 ? N - n0 : 16;
      _tile_zero(0);
      for (std::int64_t q = 0; q < chunks; ++q) {
        const std::int64_t k0 = q * kKStep, kr = K - k0 < kKStep ? K - k0 : kKStep;
        if (nr == 16 && kr == kKStep) {
          _tile_loadd(1, B + n0 * ldb + k0, ldb * 2);
        } else {  // a tail: this chunk's rows and values into zeros
          std::fill(padded, padded + 16 * 32, std::uint16_t{0});
          for (std::int64_t i = 0; i < nr; ++i) std::memcpy(padded + i * 32, B + (n0 + i) * ldb + k0, kr * 2);
          _tile_loadd(1, padded, 64);
        }
        _tile_loadd(2, a_tiles + q * 256, 64);
        _tile_dpbf16ps(0, 1, 2);
      }
      _tile_stored(0, ct + (n0 / 16) * 256, 64);
    }
    for (std::int64_t n0 = 0; n0 < N; n0 += 16) {
      const __mmask16 live = detail::mask16(N - n0);
      for (std::int64_t m = 0; m < mr; ++m) {
        float* c = C + (m0 + m) * ldc + n0;
        const __m512i at = _mm512_add_epi32(rows, _mm512_set1_epi32(static_cast<int>(m)));
        const __m512 column = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, at, ct + (n0 / 16) * 256, 4);
        _mm512_mask_storeu_ps(c, live, _mm512_add_ps(_mm512_maskz_loadu_ps(live, c), column));
      }
    }
  }
  _tile_release();
}

#else

inline bool available() { return false; }

#endif  // PRISM_CPU_AMX

}  // namespace amx
}  // namespace cpu
}  // namespace prism_jax
