// Depthwise kernels shared between the portable file and the per-ISA files: the decoded
// step operands and the walk over the input pixels under each output pixel.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "conv.h"
#include "pyruntime/qgemm.h"

namespace pyrt {

struct DepthwiseQ {
  ConvGeometry g;
  bool x_signed;
  int32_t a_zp, out_zp;
  OutKind kind;
  float lo, hi;                // clamp bounds minus out_zp
  const int32_t* bias;         // C
  const int32_t* w;            // (w - w_zp)[ky][kx][C]
  const int32_t* bias_folded;  // C: bias - a_zp * sum over taps of (w - w_zp)
  const int32_t* pairs;        // [(kh*kw+1)/2][C]: int16 (w - w_zp) of taps 2p (low) and 2p+1 (high)
  const float* mult;
  bool per_channel;
  const void* x;
  void* y;
};

struct DepthwiseF32 {
  ConvGeometry g;
  float lo, hi;
  const float* bias;  // C
  const float* w;     // [ky][kx][C]
  const float* x;
  float* y;
};

// Output rows [r0, r1) of the flattened (N, OH) range.
void depthwise_q8_16c_avx2(const DepthwiseQ& p, int64_t r0, int64_t r1);
void depthwise_f32_8c_avx2(const DepthwiseF32& p, int64_t r0, int64_t r1);

// Fills tp[0, kh*kw) with the input pixel under each tap of one output pixel, `pad` for
// taps outside the image. Along a row, a pixel whose window and its left neighbour's both
// lie inside the image only shifts the previous pointers by one stride.
template <typename T>
class DepthwiseTaps {
 public:
  // rows: scratch for kh pointers.
  DepthwiseTaps(const ConvGeometry& g, const T* x, const T* pad, const T** tp, const T** rows)
      : g_(g), x_(x), pad_(pad), tp_(tp), rows_(rows) {
    ox_lo_ = std::min(g.OW, (g.pl + g.sw - 1) / g.sw);
    const int64_t last = g.W - 1 + g.pl - (g.kw - 1) * g.dw;  // ox * sw must not pass it
    ox_hi_ = last < 0 ? ox_lo_ : std::max(ox_lo_, std::min(g.OW, last / g.sw + 1));
  }

  void start_row(int64_t r) {
    const int64_t n = r / g_.OH, oy = r % g_.OH;
    row_inside_ = true;
    for (int64_t ky = 0; ky < g_.kh; ++ky) {
      const int64_t iy = oy * g_.sh - g_.pt + ky * g_.dh;
      const bool in = iy >= 0 && iy < g_.H;
      rows_[ky] = in ? x_ + (n * g_.H + iy) * g_.W * g_.C : nullptr;
      row_inside_ = row_inside_ && in;
    }
  }

  void pixel(int64_t ox) {
    const int64_t K = g_.kh * g_.kw;
    if (row_inside_ && ox > ox_lo_ && ox < ox_hi_) {
      const int64_t step = g_.sw * g_.C;
      for (int64_t t = 0; t < K; ++t) tp_[t] += step;
      return;
    }
    for (int64_t ky = 0; ky < g_.kh; ++ky)
      for (int64_t kx = 0; kx < g_.kw; ++kx) {
        const int64_t ix = ox * g_.sw - g_.pl + kx * g_.dw;
        tp_[ky * g_.kw + kx] = rows_[ky] && ix >= 0 && ix < g_.W ? rows_[ky] + ix * g_.C : pad_;
      }
  }

 private:
  const ConvGeometry& g_;
  const T* x_;
  const T* pad_;
  const T** tp_;
  const T** rows_;
  int64_t ox_lo_, ox_hi_;
  bool row_inside_ = false;
};

// The taps of a float depthwise kernel over per-thread scratch: tp gets the kh*kw tap
// pointers of the current pixel; taps outside the image read a row of zeros (what an
// im2col would hold).
inline DepthwiseTaps<float> f32_depthwise_taps(const DepthwiseF32& p, const float**& tp) {
  thread_local std::vector<float> zero_row;
  thread_local std::vector<const float*> ptrs;
  const int64_t K = p.g.kh * p.g.kw;
  zero_row.assign(size_t(p.g.C), 0.0f);
  ptrs.resize(size_t(K + p.g.kh));
  tp = ptrs.data();
  return DepthwiseTaps<float>(p.g, p.x, zero_row.data(), tp, tp + K);
}

}  // namespace pyrt
