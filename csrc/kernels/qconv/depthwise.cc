// Depthwise convolution (group == C == M) on NHWC data: every tap is a vector loop over
// the channel run, accumulating exact int32 (or fp32) sums per channel.
#include <algorithm>
#include <cstring>
#include <vector>

#include "conv.h"
#include "pyruntime/qgemm.h"

namespace pyrt {

namespace {

// clamp-then-round: the clamp bounds are integers, so this equals rounding first; |v| is
// then small enough for exact add-and-subtract rounding (RNE, no libm call).
inline float clamp_round_even(float v, float lo, float hi) {
  v = std::min(std::max(v, lo), hi);
  const float t = v + 12582912.0f;  // 1.5 * 2^23
  return t - 12582912.0f;
}

template <typename T>
void depthwise_q_typed(const Step& s, const StepIO& io) {
  const ConvGeometry g = ConvGeometry::from(s.ints);
  const int32_t a_zp = int32_t(s.ints[16]);
  const OutKind kind = OutKind(s.ints[17]);
  const int32_t out_zp = int32_t(s.ints[18]);
  const float lo = float(s.ints[19] - out_zp), hi = float(s.ints[20] - out_zp);
  const int64_t C = g.C;
  const int32_t* bias = s.i32.data();          // C
  const int32_t* w = s.i32.data() + C;         // [ky][kx][C], zero point already subtracted
  const float* mult = s.f32.data();
  const bool per_channel = int64_t(s.f32.size()) == C;
  const T* x = static_cast<const T*>(io.in[0]);
  thread_local std::vector<int32_t> acc_buf;
  acc_buf.resize(size_t(C));
  int32_t* __restrict acc = acc_buf.data();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oy = 0; oy < g.OH; ++oy)
      for (int64_t ox = 0; ox < g.OW; ++ox) {
        for (int64_t c = 0; c < C; ++c) acc[c] = bias[c];
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
          if (iy < 0 || iy >= g.H) continue;  // padding reads the zero point: contributes 0
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
            if (ix < 0 || ix >= g.W) continue;
            const T* __restrict src = x + ((n * g.H + iy) * g.W + ix) * C;
            const int32_t* __restrict wk = w + (ky * g.kw + kx) * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += (int32_t(src[c]) - a_zp) * wk[c];
          }
        }
        const int64_t at = ((n * g.OH + oy) * g.OW + ox) * C;
        switch (kind) {
          case OutKind::i32:
            std::memcpy(static_cast<int32_t*>(io.out[0]) + at, acc, size_t(C) * 4);
            break;
          case OutKind::f32: {
            float* __restrict y = static_cast<float*>(io.out[0]) + at;
            for (int64_t c = 0; c < C; ++c) y[c] = float(acc[c]) * mult[per_channel ? c : 0];
            break;
          }
          case OutKind::u8: {
            uint8_t* __restrict y = static_cast<uint8_t*>(io.out[0]) + at;
            for (int64_t c = 0; c < C; ++c)
              y[c] = uint8_t(int32_t(clamp_round_even(float(acc[c]) * mult[per_channel ? c : 0], lo, hi)) + out_zp);
            break;
          }
          case OutKind::s8: {
            int8_t* __restrict y = static_cast<int8_t*>(io.out[0]) + at;
            for (int64_t c = 0; c < C; ++c)
              y[c] = int8_t(int32_t(clamp_round_even(float(acc[c]) * mult[per_channel ? c : 0], lo, hi)) + out_zp);
            break;
          }
        }
      }
}

}  // namespace

void depthwise_q_op(const Step& s, const StepIO& io) {
  if (io.in_v[0]->dtype == DType::u8) return depthwise_q_typed<uint8_t>(s, io);
  return depthwise_q_typed<int8_t>(s, io);
}

void depthwise_f32_op(const Step& s, const StepIO& io) {
  const ConvGeometry g = ConvGeometry::from(s.ints);
  const int64_t C = g.C;
  const float lo = float(s.floats[0]), hi = float(s.floats[1]);
  const float* bias = s.f32.data();      // C
  const float* w = s.f32.data() + C;     // [ky][kx][C]
  const float* x = static_cast<const float*>(io.in[0]);
  float* y = static_cast<float*>(io.out[0]);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oy = 0; oy < g.OH; ++oy)
      for (int64_t ox = 0; ox < g.OW; ++ox) {
        float* __restrict out = y + ((n * g.OH + oy) * g.OW + ox) * C;
        for (int64_t c = 0; c < C; ++c) out[c] = bias[c];
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
          if (iy < 0 || iy >= g.H) continue;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
            if (ix < 0 || ix >= g.W) continue;
            const float* __restrict src = x + ((n * g.H + iy) * g.W + ix) * C;
            const float* __restrict wk = w + (ky * g.kw + kx) * C;
            for (int64_t c = 0; c < C; ++c) out[c] += src[c] * wk[c];
          }
        }
        for (int64_t c = 0; c < C; ++c) out[c] = out[c] != out[c] ? out[c] : std::min(std::max(out[c], lo), hi);
      }
}

}  // namespace pyrt
