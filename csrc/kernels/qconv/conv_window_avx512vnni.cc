// Direct int8 convolution for small windows on AVX-512 VNNI (see conv_window_avx2.cc for
// why a first layer skips im2col). vpdpbusd multiplies u8 by s8 four at a time without
// saturating, so nothing is widened or gathered: window row ky of a pixel is the run of
// kw*C consecutive bytes of band row ky, read as ceil(kw*C/4) plain 4-byte broadcasts.
// The weights carry zeros past kw*C in each row's last quad, so the bytes read past the
// window (the next pixel's) add nothing. 16 output channels share one zmm.
//
// Exactness: the band holds activations in the u8 domain (s8 xor 0x80) and its padding is
// the zero point in that domain; the weights are raw s8 with zero point 0 (the caller
// checks), so acc = sum a'*w exactly, and the zero point folds into the correction
// bias - a_zp' * sum w.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "../qgemm/packing.h"
#include "../qgemm/vnni_real.h"
#include "conv_window.h"
#include "pyruntime/errors.h"

namespace pyrt {
namespace {

#include "../qgemm/epilogue_avx512_body.h"

constexpr int kPanel = 16;  // output channels per zmm

// Weights per panel as [kh][quads][16 channels][4 taps] s8, zero past each row's kw*C taps
// and past M.
struct QuadWeights {
  const int8_t* w;
  int quads;  // per window row
  size_t panel_bytes;
};

QuadWeights prepare_quads(const WindowConvArgs& a) {
  thread_local AlignedBuffer buf;
  const ConvGeometry& g = a.g;
  const int run = int(g.kw * g.C), quads = (run + 3) / 4, M = int(g.M), panels = (M + kPanel - 1) / kPanel;
  const size_t panel_bytes = size_t(g.kh) * quads * kPanel * 4;
  if (buf.size() < panel_bytes * panels) buf = AlignedBuffer(panel_bytes * panels);
  int8_t* out = reinterpret_cast<int8_t*>(buf.data());
  std::memset(out, 0, panel_bytes * panels);
  const int8_t* w = a.w->shifted();  // K x M, rows in (ky, kx, c) order
  for (int n = 0; n < M; ++n)
    for (int ky = 0; ky < g.kh; ++ky)
      for (int t = 0; t < run; ++t)
        out[(n / kPanel) * panel_bytes + ((size_t(ky) * quads + t / 4) * kPanel + n % kPanel) * 4 + t % 4] =
            w[size_t(ky * run + t) * M + n];
  return QuadWeights{out, quads, panel_bytes};
}

// The int32 accumulators of R pixels from ox0 on, P panels of 16 channels from panel0 on:
// each window quad is broadcast once for all P panels (a 64-channel first layer loaded it 4
// times).
template <int R, int P>
PYRT_AVX512 inline void accumulate(const ConvGeometry& g, const uint8_t* band, size_t band_stride,
                                   const QuadWeights& qw, int panel0, int64_t ox0, __m512i (&acc)[R][P]) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) acc[r][p] = _mm512_setzero_si512();
  const int8_t* wp = qw.w + panel0 * qw.panel_bytes;
  const int64_t step = g.sw * g.C;
  for (int ky = 0; ky < g.kh; ++ky) {
    const uint8_t* row = band + ky * band_stride + ox0 * step;
    for (int q = 0; q < qw.quads; ++q) {
      __m512i w[P];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) w[p] = load(wp + p * qw.panel_bytes + (ky * qw.quads + q) * kPanel * 4);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512i a = _mm512_set1_epi32(load_u32(row + r * step + 4 * q));
#pragma GCC unroll 4
        for (int p = 0; p < P; ++p) acc[r][p] = dpbusd(acc[r][p], a, w[p]);
      }
    }
  }
}

template <int R, int P>
PYRT_AVX512 void tile_pixels(const ConvGeometry& g, const uint8_t* band, size_t band_stride, const QuadWeights& qw,
                             int panel0, int64_t ox0, int64_t m0, const Epilogue& ep) {
  __m512i acc[R][P];
  accumulate<R, P>(g, band, band_stride, qw, panel0, ox0, acc);
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    const int n0 = (panel0 + p) * kPanel;
    const Store16 store(ep, n0, int(std::min<int64_t>(kPanel, g.M - n0)));
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) store(acc[r][p], int(m0 + r));
  }
}

// Pooled output: R conv pixels of pool_h conv rows (bands conv_row_stride apart), the
// elementwise max of their accumulators over each pool window, then one requantization
// per pooled pixel, R / pool_w of them from m0 on. The max may come before the epilogue
// because the epilogue is monotone: a per-channel constant is added (no wrap: checked),
// then the float multiplier (> 0, checked at load), clamp and round only keep order.
template <int R, int P>
PYRT_AVX512 void tile_pooled(const ConvGeometry& g, const uint8_t* band, size_t band_stride, size_t conv_row_stride,
                             int pool_h, int pool_w, const QuadWeights& qw, int panel0, int64_t ox0, int64_t m0,
                             const Epilogue& ep) {
  __m512i best[R][P], acc[R][P];
  accumulate<R, P>(g, band, band_stride, qw, panel0, ox0, best);
  for (int j = 1; j < pool_h; ++j) {
    accumulate<R, P>(g, band + j * conv_row_stride, band_stride, qw, panel0, ox0, acc);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) best[r][p] = _mm512_max_epi32(best[r][p], acc[r][p]);
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    const int n0 = (panel0 + p) * kPanel;
    const Store16 store(ep, n0, int(std::min<int64_t>(kPanel, g.M - n0)));
    __m512i v = best[0][p];
    int in_window = 0, q = 0;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {  // R is whole windows
      v = in_window == 0 ? best[r][p] : _mm512_max_epi32(v, best[r][p]);
      if (++in_window == pool_w) {
        store(v, int(m0 + q++));
        in_window = 0;
      }
    }
  }
}

// The tile call for `count` (<= R) pixels: Tile<count, P>::run(args...).
template <template <int, int> class Tile, int R, int P, typename... Args>
void tile_upto(int count, const Args&... args) {
  if (count == R) return Tile<R, P>::run(args...);
  if constexpr (R > 1) tile_upto<Tile, R - 1, P>(count, args...);
}

template <int R, int P>
struct PixelTile {
  static void run(const ConvGeometry& g, const uint8_t* band, size_t band_stride, const QuadWeights& qw, int panel0,
                  int64_t ox0, int64_t m0, const Epilogue& ep) {
    tile_pixels<R, P>(g, band, band_stride, qw, panel0, ox0, m0, ep);
  }
};

template <int R, int P>
struct PooledTile {
  static void run(const ConvGeometry& g, const uint8_t* band, size_t band_stride, size_t conv_row_stride, int pool_h,
                  int pool_w, const QuadWeights& qw, int panel0, int64_t ox0, int64_t m0, const Epilogue& ep) {
    tile_pooled<R, P>(g, band, band_stride, conv_row_stride, pool_h, pool_w, qw, panel0, ox0, m0, ep);
  }
};

// Up to 24 accumulators: 8 pixels x 1-2 panels, 6 x 3-4.
constexpr int pixels_for(int panels) { return panels <= 2 ? 8 : 6; }

template <int P>
void row_tiles(const ConvGeometry& g, const uint8_t* band, size_t band_stride, const QuadWeights& qw, int panel0,
               int64_t row_base, const Epilogue& ep) {
  constexpr int R = pixels_for(P);
  for (int64_t ox0 = 0; ox0 < g.OW; ox0 += R)
    tile_upto<PixelTile, R, P>(int(std::min<int64_t>(R, g.OW - ox0)), g, band, band_stride, qw, panel0, ox0,
                               row_base + ox0, ep);
}

// One pooled output row: tiles of whole pool windows, as many as fit in R pixels.
template <int P>
void pooled_row_tiles(const ConvGeometry& g, const uint8_t* band, size_t band_stride, size_t conv_row_stride,
                      int pool_h, int pool_w, const QuadWeights& qw, int panel0, int64_t row_base, const Epilogue& ep) {
  constexpr int R = pixels_for(P);
  const int64_t per_tile = R / pool_w, pooled_w = g.OW / pool_w;
  for (int64_t px0 = 0; px0 < pooled_w; px0 += per_tile) {
    const int count = int(std::min<int64_t>(per_tile, pooled_w - px0) * pool_w);
    tile_upto<PooledTile, R, P>(count, g, band, band_stride, conv_row_stride, pool_h, pool_w, qw, panel0,
                                px0 * pool_w, row_base + px0, ep);
  }
}

// f(std::integral_constant<int, P>(), p) for each group of up to 4 panels from panel p on.
template <typename F>
void for_panel_groups(int panels, const F& f) {
  for (int p = 0; p < panels; p += 4) {
    switch (std::min(4, panels - p)) {
      case 1: f(std::integral_constant<int, 1>(), p); break;
      case 2: f(std::integral_constant<int, 2>(), p); break;
      case 3: f(std::integral_constant<int, 3>(), p); break;
      default: f(std::integral_constant<int, 4>(), p); break;
    }
  }
}

}  // namespace

void conv_q8_window_8x16_avx512vnni(const WindowConvArgs& a) {
  const ConvGeometry& g = a.g;
  if (!a.planned) throw UnsupportedError("the VNNI window conv needs its step's plan-time epilogue");
  const uint8_t flip = a.a_signed ? 0x80 : 0;
  // The plan-time GEMM terms hold the correction bias - a_zp' * sum w with a_zp' in this
  // kernel's u8 domain (the GEMM's A is in it too), and their int32 range was checked.
  const Epilogue& ep = *a.planned;
  const QuadWeights qw = prepare_quads(a);
  const int panels = int((g.M + kPanel - 1) / kPanel);
  if (a.pool_h > 1 || a.pool_w > 1) {
    const size_t conv_row_stride = window_band_stride(g) * size_t(g.sh);
    const int64_t pooled_h = g.OH / a.pool_h, pooled_w = g.OW / a.pool_w;
    window_for_each_output_row(a, flip, [&](int64_t n, int64_t py, const uint8_t* band, size_t band_stride) {
      const int64_t row_base = (n * pooled_h + py) * pooled_w;
      for_panel_groups(panels, [&](auto group, int p) {
        pooled_row_tiles<group()>(g, band, band_stride, conv_row_stride, a.pool_h, a.pool_w, qw, p, row_base, ep);
      });
    });
    return;
  }
  window_for_each_output_row(a, flip, [&](int64_t n, int64_t oy, const uint8_t* band, size_t band_stride) {
    const int64_t row_base = (n * g.OH + oy) * g.OW;
    for_panel_groups(panels, [&](auto group, int p) { row_tiles<group()>(g, band, band_stride, qw, p, row_base, ep); });
  });
}

}  // namespace pyrt
