// AVX-512 fp32 GEMM tiles: R rows of A (read in place) by P 16-column panels of B, one zmm
// accumulator per (row, panel). Zen 4 issues one zmm FMA per cycle with a 4-cycle latency,
// so a tile needs several independent accumulators (the main ones hold 14 to 24) and as
// many FMAs per B load as it can; small M trades rows for panels (1 x 128 at M = 1) so
// that a batch-1 layer still has enough FMA chains in flight.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "sgemm_kernels.h"

// gcc 12 warns inside its own _mm512_max_ps / _mm512_min_ps (_mm512_undefined_ps), not in
// this file's code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define PYRT_AVX512 __attribute__((target("avx512f,avx512vl,fma")))

namespace pyrt {

namespace {

constexpr int kNr = PackedSgemm::kNr;
constexpr int kMaxRows = 12, kMaxPanels = 8;

// R*P accumulators, P panel rows and one broadcast must fit the 32 zmm registers.
constexpr bool fits(int R, int P) { return R * P + P + 1 <= 32 && R <= kMaxRows && P <= kMaxPanels; }

// gcc 12 keeps big __m512 accumulator arrays on the stack and reloads them every k step
// when they go through _mm512_fmadd_ps; the asm operand pins each one to a register.
// Operand order gives acc = a * b + acc, the same single rounding as the intrinsic.
PYRT_AVX512 inline void fma_acc(__m512& acc, __m512 a, __m512 b) {
  asm("vfmadd231ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
}

// koff: column k of A at a + koff[k] (an implicit im2col), else at a + k.
using TileFn = void (*)(const float* a, ptrdiff_t lda, const int32_t* koff, const float* b, size_t panel_stride,
                        int K, int cols, const float* bias, float lo, float hi, float* c, ptrdiff_t ldc);

template <int R, int P, bool kOff>
PYRT_AVX512 void tile(const float* a, ptrdiff_t lda, const int32_t* koff, const float* b, size_t panel_stride, int K,
                      int cols, const float* bias, float lo, float hi, float* c, ptrdiff_t ldc) {
  __m512 acc[R][P];
#pragma GCC unroll 128
  for (int i = 0; i < R * P; ++i) acc[i / P][i % P] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k, b += kNr) {
    __m512 bv[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) bv[p] = _mm512_load_ps(b + p * panel_stride);
    const float* ak = kOff ? a + koff[k] : a + k;
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(ak[r * lda]);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) fma_acc(acc[r][p], av, bv[p]);
    }
  }
  __mmask16 mask[P];
  __m512 bb[P];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    const int n = std::min(kNr, std::max(0, cols - p * kNr));
    mask[p] = __mmask16((1u << n) - 1);
    // No bias adds +0.0, as the AVX2 kernel does: -0.0 sums come out +0.0 on both paths.
    bb[p] = bias ? _mm512_maskz_loadu_ps(mask[p], bias + p * kNr) : _mm512_setzero_ps();
  }
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      // maxps/minps return their second operand when one is NaN: the value goes second,
      // so NaN propagates like the scalar and AVX2 paths.
      const __m512 v = _mm512_min_ps(vhi, _mm512_max_ps(vlo, _mm512_add_ps(acc[r][p], bb[p])));
      _mm512_mask_storeu_ps(c + r * ldc + p * kNr, mask[p], v);
    }
}

template <int R, int P, bool kOff>
constexpr TileFn pick() {
  if constexpr (fits(R, P)) return &tile<R, P, kOff>;
  else return nullptr;
}

template <bool kOff, int P, int... I>
constexpr std::array<TileFn, kMaxRows> row_tiles(std::integer_sequence<int, I...>) {
  return {pick<I + 1, P, kOff>()...};
}

template <bool kOff, int... J>
constexpr std::array<std::array<TileFn, kMaxRows>, kMaxPanels> all_tiles(std::integer_sequence<int, J...>) {
  return {row_tiles<kOff, J + 1>(std::make_integer_sequence<int, kMaxRows>())...};
}

// kTiles[P - 1][R - 1]: every shape that fits, so any ragged edge of a fitting main tile
// has its own kernel.
constexpr auto kTiles = all_tiles<false>(std::make_integer_sequence<int, kMaxPanels>());
constexpr auto kOffsetTiles = all_tiles<true>(std::make_integer_sequence<int, kMaxPanels>());

}  // namespace

SgemmTileShape sgemm_tile_shape_avx512(int M, int N) {
  const int panels = (N + kNr - 1) / kNr;
  // Rows balanced over the tiles a column needs: a conv row of 14 pixels runs as 7 + 7,
  // not 12 + 2 (a 2-row tile has too few FMA chains and reuses each B load twice).
  const auto balanced = [M](int max_rows) {
    const int tiles = (M + max_rows - 1) / max_rows;
    return (M + tiles - 1) / tiles;
  };
  // Measured on Zen 4 (K = 144..1568): 6 x 64 runs at 100-105% of 12 x 32 or 14 x 32 (A
  // broadcasts are shared by four panels); all reach 95-100% of the FMA peak.
  if (M >= 6 && panels >= 4) return {balanced(6), 4};
  const int rows = balanced(kMaxRows);
  int p = 1;
  while (p < panels && fits(rows, p + 1)) ++p;
  return {rows, p};
}

void sgemm_f32_block_avx512(const float* a, ptrdiff_t lda, int m0, int m1, const PackedSgemm& w, int p0, int p1,
                            SgemmTileShape shape, const float* bias, float lo, float hi, float* c, ptrdiff_t ldc) {
  const int N = w.N(), K = w.K();
  const size_t panel_stride = size_t(K) * kNr;
  for (int m = m0; m < m1; m += shape.rows) {
    const int rows = std::min(shape.rows, m1 - m);
    for (int p = p0; p < p1; p += shape.panels) {
      const int np = std::min(shape.panels, p1 - p), n0 = p * kNr;
      kTiles[np - 1][rows - 1](a + m * lda, lda, nullptr, w.panel(p), panel_stride, K, std::min(np * kNr, N - n0),
                               bias ? bias + n0 : nullptr, lo, hi, c + m * ldc + n0, ldc);
    }
  }
}

void sgemm_f32_offsets_avx512(const float* a, ptrdiff_t lda, const int32_t* koff, int M, const PackedSgemm& w,
                              const float* bias, float lo, float hi, float* c, ptrdiff_t ldc) {
  const int N = w.N(), K = w.K(), panels = (N + kNr - 1) / kNr;
  const size_t panel_stride = size_t(K) * kNr;
  const SgemmTileShape shape = sgemm_tile_shape_avx512(M, N);
  for (int m = 0; m < M; m += shape.rows) {
    const int rows = std::min(shape.rows, M - m);
    for (int p = 0; p < panels; p += shape.panels) {
      const int np = std::min(shape.panels, panels - p), n0 = p * kNr;
      kOffsetTiles[np - 1][rows - 1](a + m * lda, lda, koff, w.panel(p), panel_stride, K,
                                     std::min(np * kNr, N - n0), bias ? bias + n0 : nullptr, lo, hi,
                                     c + m * ldc + n0, ldc);
    }
  }
}

}  // namespace pyrt
