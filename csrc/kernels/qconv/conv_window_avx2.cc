// Direct int8 convolution for small windows (a network's first layer: 1 or 3 input
// channels, K = kh*kw*C <= 32). im2col + GEMM spends ~200 instructions per output pixel
// there on gathering 9 or 27 bytes and re-reading them to widen, against ~60 for the
// multiplies. Here each pixel's window goes straight from a zero-point-padded band of
// input rows into one row of int16: one 16-byte load and one pshufb per window row, one
// widening. The channels then accumulate in registers, 16 per panel, with vpmaddwd on
// (k, k+1) pairs, and leave through the GEMM epilogue (same bits as every other path).
//
// Exactness: activations stay raw (u8 0..255 or s8 -128..127) and weights are w - w_zp
// (|.| <= 255), so each pair sum is < 2^17 and the int32 accumulator holds the exact sum;
// the activation zero point folds into a per-channel correction, and padding reads the
// zero point itself, so it contributes nothing.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "../qgemm/epilogue_avx2.h"
#include "../qgemm/packing.h"
#include "conv_window.h"

namespace pyrt {
namespace {

constexpr int kRowInts = 32;       // int16 per widened window row: K <= 32
constexpr int kPixelsPerTile = 6;  // pixels sharing each weight load
constexpr int kPanel = 16;         // output channels per register pair

template <typename T>
T* grow(AlignedBuffer& b, size_t count) {
  if (b.size() < count * sizeof(T)) b = AlignedBuffer(std::max(count * sizeof(T), b.size() * 2));
  return reinterpret_cast<T*>(b.data());
}

// Weights as int16 (w - w_zp) pairs in panels of 16 channels, zero past K and M, and the
// epilogue.
struct WindowWeights {
  const int16_t* pairs;
  int pair_steps;
  Epilogue ep;
};

WindowWeights prepare_weights(const WindowConvArgs& a, int K, int M) {
  thread_local AlignedBuffer pair_buf;
  const int steps = (K + 1) / 2, panels = (M + kPanel - 1) / kPanel;
  int16_t* pairs = grow<int16_t>(pair_buf, size_t(panels) * steps * kPanel * 2);
  std::memset(pairs, 0, size_t(panels) * steps * kPanel * 2 * sizeof(int16_t));
  const int8_t* w = a.w->shifted();  // K x M, in the s8 domain with its zero points
  const int32_t* zp = a.w->zero_points();
  for (int n = 0; n < M; ++n)
    for (int k = 0; k < K; ++k)
      pairs[((size_t(n / kPanel) * steps + k / 2) * kPanel + n % kPanel) * 2 + k % 2] =
          int16_t(int(w[size_t(k) * M + n]) - zp[n]);
  return WindowWeights{pairs, steps, window_epilogue(a, a.a_zp)};
}

PYRT_AVX2 inline void pixel_step(__m256i& acc0, __m256i& acc1, const int16_t* pixel_row, int s, __m256i b0, __m256i b1) {
  int32_t pair;
  std::memcpy(&pair, pixel_row + 2 * s, 4);
  const __m256i av = _mm256_set1_epi32(pair);
  acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(av, b0));
  acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(av, b1));
}

// The accumulators of R pixels x one panel of 16 channels, from widened window rows. They
// are named variables while the k loop runs (an array of them is kept on the stack, and a
// fused pool's second set of 12 then spilled inside the loop); acc gets them at the end.
template <int R>
PYRT_AVX2 inline void accumulate(const int16_t* rows, const WindowWeights& ww, int panel, __m256i (&acc)[R][2]) {
  static_assert(R <= kPixelsPerTile, "six named pixels");
  const __m256i z = _mm256_setzero_si256();
  __m256i c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z,
          c51 = z;
  const int16_t* wp = ww.pairs + size_t(panel) * ww.pair_steps * kPanel * 2;
  for (int s = 0; s < ww.pair_steps; ++s) {
    const __m256i b0 = avx2::load(wp + s * 32), b1 = avx2::load(wp + s * 32 + 16);
    pixel_step(c00, c01, rows, s, b0, b1);
    if constexpr (R > 1) pixel_step(c10, c11, rows + kRowInts, s, b0, b1);
    if constexpr (R > 2) pixel_step(c20, c21, rows + 2 * kRowInts, s, b0, b1);
    if constexpr (R > 3) pixel_step(c30, c31, rows + 3 * kRowInts, s, b0, b1);
    if constexpr (R > 4) pixel_step(c40, c41, rows + 4 * kRowInts, s, b0, b1);
    if constexpr (R > 5) pixel_step(c50, c51, rows + 5 * kRowInts, s, b0, b1);
  }
  const __m256i all[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r][0] = all[r][0], acc[r][1] = all[r][1];
}

template <int R>
PYRT_AVX2 void tile_pixels(const int16_t* rows, const WindowWeights& ww, int panel, int cols, int64_t m0) {
  __m256i acc[R][2];
  accumulate<R>(rows, ww, panel, acc);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) avx2::store_row(acc[r][0], acc[r][1], int(m0 + r), panel * kPanel, cols, ww.ep);
}

// A fused MaxPool: R conv pixels (whole pool windows) of pool_h conv rows, whose widened
// windows lie kPixelsPerTile * kRowInts apart; the max of the accumulators per window,
// then one requantization per pooled pixel from m0 on (exact: see the VNNI kernel).
template <int R>
PYRT_AVX2 void tile_pooled(const int16_t* rows, int pool_h, int pool_w, const WindowWeights& ww, int panel, int cols,
                           int64_t m0) {
  __m256i best[R][2], acc[R][2];
  accumulate<R>(rows, ww, panel, best);
  for (int j = 1; j < pool_h; ++j) {
    accumulate<R>(rows + size_t(j) * kPixelsPerTile * kRowInts, ww, panel, acc);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      best[r][0] = _mm256_max_epi32(best[r][0], acc[r][0]);
      best[r][1] = _mm256_max_epi32(best[r][1], acc[r][1]);
    }
  }
  __m256i v0 = best[0][0], v1 = best[0][1];
  int in_window = 0, q = 0;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {  // R is whole windows
    v0 = in_window == 0 ? best[r][0] : _mm256_max_epi32(v0, best[r][0]);
    v1 = in_window == 0 ? best[r][1] : _mm256_max_epi32(v1, best[r][1]);
    if (++in_window == pool_w) {
      avx2::store_row(v0, v1, int(m0 + q++), panel * kPanel, cols, ww.ep);
      in_window = 0;
    }
  }
}

// f(std::integral_constant<int, R>()) for a tile of R = pixels (1..kPixelsPerTile) pixels.
template <typename F>
void with_pixels(int pixels, const F& f) {
  switch (pixels) {
    case 1: return f(std::integral_constant<int, 1>());
    case 2: return f(std::integral_constant<int, 2>());
    case 3: return f(std::integral_constant<int, 3>());
    case 4: return f(std::integral_constant<int, 4>());
    case 5: return f(std::integral_constant<int, 5>());
    default: return f(std::integral_constant<int, 6>());
  }
}

// One pshufb "move" per (window row ky, half h of the window) that share bytes: it takes
// run = kw*C bytes from the start of a load at row ky and puts them at ky*run in half h
// (bytes 16h..16h+15), zeroing the rest.
struct Gather {
  struct Move {
    alignas(16) int8_t mask[16];
    int ky;
  };
  Move moves[16];  // half 0's moves, then half 1's (from first_of_half1 on)
  int count, halves, first_of_half1;
};

Gather make_gather(int kh, int run) {
  Gather gt{};
  gt.halves = kh * run > 16 ? 2 : 1;
  for (int h = 0; h < gt.halves; ++h) {
    for (int ky = 0; ky < kh; ++ky) {
      if (ky * run >= 16 * (h + 1) || (ky + 1) * run <= 16 * h) continue;
      Gather::Move& mv = gt.moves[gt.count++];
      mv.ky = ky;
      for (int p = 0; p < 16; ++p) {
        const int j = 16 * h + p - ky * run;
        mv.mask[p] = j >= 0 && j < run ? int8_t(j) : int8_t(-128);
      }
    }
    if (h == 0) gt.first_of_half1 = gt.count;
  }
  return gt;
}

PYRT_AVX2 inline __m128i apply_move(__m128i half, const Gather::Move& mv, const uint8_t* src, size_t band_stride) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + mv.ky * band_stride));
  return _mm_or_si128(half, _mm_shuffle_epi8(v, _mm_load_si128(reinterpret_cast<const __m128i*>(mv.mask))));
}

// Widens the windows of `count` pixels from ox0 on into rows (kRowInts int16 each).
PYRT_AVX2 void widen_windows(const WindowConvArgs& a, const Gather& gt, const uint8_t* band, size_t band_stride,
                             int64_t ox0, int count, int16_t* rows) {
  const int64_t C = a.g.C;
  for (int r = 0; r < count; ++r) {
    const uint8_t* src = band + (ox0 + r) * a.g.sw * C;
    // Two named halves, not an array indexed by the move: that array lived on the stack,
    // and each move's or went through a store and a reload (40% of the AVX2 student).
    __m128i half0 = _mm_setzero_si128(), half1 = _mm_setzero_si128();
    int i = 0;
    for (; i < gt.first_of_half1; ++i) half0 = apply_move(half0, gt.moves[i], src, band_stride);
    for (; i < gt.count; ++i) half1 = apply_move(half1, gt.moves[i], src, band_stride);
    // Bytes past K are zero before widening, so they stay zero as s8 too.
    auto widen = [&](__m128i v) PYRT_AVX2 { return a.a_signed ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v); };
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(rows + r * kRowInts), widen(half0));
    if (gt.halves == 2) _mm256_storeu_si256(reinterpret_cast<__m256i*>(rows + r * kRowInts + 16), widen(half1));
  }
}

// One output row (image n, row oy) from its band: widens every pixel's window, runs the
// tiles.
PYRT_AVX2 void output_row(const WindowConvArgs& a, const WindowWeights& ww, const Gather& gt, int64_t n, int64_t oy,
                          const uint8_t* band, size_t band_stride, int16_t* rows) {
  const ConvGeometry& g = a.g;
  const int panels = int((g.M + kPanel - 1) / kPanel);
  const int64_t row_base = (n * g.OH + oy) * g.OW;
  for (int64_t ox0 = 0; ox0 < g.OW; ox0 += kPixelsPerTile) {
    const int count = int(std::min<int64_t>(kPixelsPerTile, g.OW - ox0));
    widen_windows(a, gt, band, band_stride, ox0, count, rows);
    for (int p = 0; p < panels; ++p)
      with_pixels(count, [&](auto r) {
        tile_pixels<r()>(rows, ww, p, int(std::min<int64_t>(kPanel, g.M - p * kPanel)), row_base + ox0);
      });
  }
}

// One pooled output row (image n, pooled row py): the pool_h conv rows' windows of each
// tile of whole pool windows, then the pooled tiles.
PYRT_AVX2 void pooled_output_row(const WindowConvArgs& a, const WindowWeights& ww, const Gather& gt, int64_t n,
                                 int64_t py, const uint8_t* band, size_t band_stride, int16_t* rows) {
  const ConvGeometry& g = a.g;
  const int panels = int((g.M + kPanel - 1) / kPanel);
  const size_t conv_row_stride = window_band_stride(g) * size_t(g.sh);
  const int64_t pooled_w = g.OW / a.pool_w, per_tile = kPixelsPerTile / a.pool_w;
  const int64_t row_base = (n * (g.OH / a.pool_h) + py) * pooled_w;
  for (int64_t px0 = 0; px0 < pooled_w; px0 += per_tile) {
    const int count = int(std::min<int64_t>(per_tile, pooled_w - px0) * a.pool_w);
    for (int j = 0; j < a.pool_h; ++j)
      widen_windows(a, gt, band + j * conv_row_stride, band_stride, px0 * a.pool_w, count,
                    rows + size_t(j) * kPixelsPerTile * kRowInts);
    for (int p = 0; p < panels; ++p)
      with_pixels(count, [&](auto r) {
        tile_pooled<r()>(rows, a.pool_h, a.pool_w, ww, p, int(std::min<int64_t>(kPanel, g.M - p * kPanel)),
                         row_base + px0);
      });
  }
}

}  // namespace

void conv_q8_window_6x16_avx2(const WindowConvArgs& a) {
  const ConvGeometry& g = a.g;
  window_check_no_wrap(a);
  const WindowWeights ww = prepare_weights(a, int(g.kh * g.kw * g.C), int(g.M));
  const Gather gt = make_gather(int(g.kh), int(g.kw * g.C));
  window_for_each_output_row(a, 0, [&](int64_t n, int64_t oy, const uint8_t* band, size_t band_stride) {
    thread_local AlignedBuffer rows_buf;
    int16_t* rows = grow<int16_t>(rows_buf, size_t(a.pool_h) * kPixelsPerTile * kRowInts);
    if (a.pool_h > 1 || a.pool_w > 1)
      pooled_output_row(a, ww, gt, n, oy, band, band_stride, rows);
    else
      output_row(a, ww, gt, n, oy, band, band_stride, rows);
  });
}

}  // namespace pyrt
