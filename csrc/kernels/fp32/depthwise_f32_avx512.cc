// fp32 depthwise convolution, AVX-512: 16 channels per zmm. Where four neighbouring output
// pixels have their whole window inside the image, they are computed together: each
// weight vector is loaded once for the four, and the four FMA chains per channel block
// hide the FMA latency when C is small (32 channels are only two vectors). Every output
// is bias, then one FMA per tap in tap order, then the clamp: the AVX2 kernel's
// arithmetic, so the two paths give the same bits.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "depthwise_f32.h"

// gcc 12 warns inside its own _mm512_max_ps / _mm512_min_ps (_mm512_undefined_ps), not in
// this file's code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define PYRT_AVX512 __attribute__((target("avx512f,avx512vl,fma")))

namespace pyrt {

namespace {

constexpr int kPix = 4;

PYRT_AVX512 inline __m512 clamp(__m512 v, __m512 lo, __m512 hi) {
  // max/min return their second operand when one is NaN: NaN passes through.
  return _mm512_min_ps(hi, _mm512_max_ps(lo, v));
}

// One output pixel, every channel; tp[t] points at the tap's input pixel (or a zero row).
PYRT_AVX512 void pixel1(const DepthwiseF32& p, const float* const* tp, int64_t K, float* y, __m512 lo, __m512 hi) {
  const int64_t C = p.g.C;
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 m = C - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (C - c)) - 1);
    __m512 acc = _mm512_maskz_loadu_ps(m, p.bias + c);
    const float* wp = p.w + c;
    for (int64_t t = 0; t < K; ++t, wp += C)
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, tp[t] + c), _mm512_maskz_loadu_ps(m, wp), acc);
    _mm512_mask_storeu_ps(y + c, m, clamp(acc, lo, hi));
  }
}

// kPix pixels along the row, `step` floats apart in the input, windows all inside.
PYRT_AVX512 void pixels4(const DepthwiseF32& p, const float* const* tp, int64_t K, int64_t step, float* y, __m512 lo,
                         __m512 hi) {
  const int64_t C = p.g.C;
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 m = C - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (C - c)) - 1);
    __m512 acc[kPix];
    acc[0] = _mm512_maskz_loadu_ps(m, p.bias + c);
    for (int j = 1; j < kPix; ++j) acc[j] = acc[0];
    const float* wp = p.w + c;
    for (int64_t t = 0; t < K; ++t, wp += C) {
      const __m512 w = _mm512_maskz_loadu_ps(m, wp);
      const float* src = tp[t] + c;
      for (int j = 0; j < kPix; ++j) acc[j] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, src + j * step), w, acc[j]);
    }
    for (int j = 0; j < kPix; ++j) _mm512_mask_storeu_ps(y + j * C + c, m, clamp(acc[j], lo, hi));
  }
}

}  // namespace

PYRT_AVX512 void depthwise_f32_16c_avx512(const DepthwiseF32& p, int64_t r0, int64_t r1) {
  const ConvGeometry& g = p.g;
  const int64_t C = g.C, K = g.kh * g.kw;
  const float** tp = nullptr;
  DepthwiseTaps<float> taps = f32_depthwise_taps(p, tp);
  // Output columns whose window lies inside the image across x (as DepthwiseTaps finds them).
  const int64_t ox_lo = std::min(g.OW, (g.pl + g.sw - 1) / g.sw);
  const int64_t last = g.W - 1 + g.pl - (g.kw - 1) * g.dw;
  const int64_t ox_hi = last < 0 ? ox_lo : std::max(ox_lo, std::min(g.OW, last / g.sw + 1));
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  for (int64_t r = r0; r < r1; ++r) {
    taps.start_row(r);
    const int64_t oy = r % g.OH;
    const bool row_inside = oy * g.sh - g.pt >= 0 && oy * g.sh - g.pt + (g.kh - 1) * g.dh < g.H;
    float* y = p.y + r * g.OW * C;
    for (int64_t ox = 0; ox < g.OW;) {
      taps.pixel(ox);
      if (row_inside && ox >= ox_lo && ox + kPix <= ox_hi) {
        pixels4(p, tp, K, g.sw * C, y + ox * C, lo, hi);
        for (int j = 1; j < kPix; ++j) taps.pixel(ox + j);  // the taps walk on from the last of the four
        ox += kPix;
        continue;
      }
      pixel1(p, tp, K, y + ox * C, lo, hi);
      ++ox;
    }
  }
}

}  // namespace pyrt
