// Depthwise convolution (group == C == M) on NHWC data. The portable kernels here keep the
// reference's shape (skip taps outside the image, (x - x_zp) * (w - w_zp) per tap); the
// AVX2 kernels (depthwise_avx2.cc) must reproduce their int8 bits exactly.
#include <algorithm>
#include <cstring>
#include <vector>

#include "../../runtime/thread_pool.h"
#include "../fp32/depthwise_f32.h"
#include "depthwise.h"

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
void depthwise_q_scalar(const DepthwiseQ& p, int64_t r0, int64_t r1) {
  const ConvGeometry& g = p.g;
  const int32_t a_zp = p.a_zp, out_zp = p.out_zp;
  const OutKind kind = p.kind;
  const float lo = p.lo, hi = p.hi;
  const int64_t C = g.C;
  const int32_t* bias = p.bias;
  const int32_t* w = p.w;
  const float* mult = p.mult;
  const bool per_channel = p.per_channel;
  const T* x = static_cast<const T*>(p.x);
  thread_local std::vector<int32_t> acc_buf;
  acc_buf.resize(size_t(C));
  int32_t* __restrict acc = acc_buf.data();
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.OH, oy = r % g.OH;
    for (int64_t ox = 0; ox < g.OW; ++ox) {
      for (int64_t c = 0; c < C; ++c) acc[c] = bias[c];
      for_each_tap_inside(g, oy, ox, [&](int64_t iy, int64_t ix, int64_t ky, int64_t kx) {
        const T* __restrict src = x + ((n * g.H + iy) * g.W + ix) * C;
        const int32_t* __restrict wk = w + (ky * g.kw + kx) * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += (int32_t(src[c]) - a_zp) * wk[c];
      });
      const int64_t at = ((n * g.OH + oy) * g.OW + ox) * C;
      switch (kind) {
        case OutKind::i32:
          std::memcpy(static_cast<int32_t*>(p.y) + at, acc, size_t(C) * 4);
          break;
        case OutKind::f32: {
          float* __restrict y = static_cast<float*>(p.y) + at;
          for (int64_t c = 0; c < C; ++c) y[c] = float(acc[c]) * mult[per_channel ? c : 0];
          break;
        }
        case OutKind::u8: {
          uint8_t* __restrict y = static_cast<uint8_t*>(p.y) + at;
          for (int64_t c = 0; c < C; ++c)
            y[c] = uint8_t(int32_t(clamp_round_even(float(acc[c]) * mult[per_channel ? c : 0], lo, hi)) + out_zp);
          break;
        }
        case OutKind::s8: {
          int8_t* __restrict y = static_cast<int8_t*>(p.y) + at;
          for (int64_t c = 0; c < C; ++c)
            y[c] = int8_t(int32_t(clamp_round_even(float(acc[c]) * mult[per_channel ? c : 0], lo, hi)) + out_zp);
          break;
        }
      }
    }
  }
}

void depthwise_f32_scalar(const DepthwiseF32& p, int64_t r0, int64_t r1) {
  const ConvGeometry& g = p.g;
  const int64_t C = g.C;
  const float lo = p.lo, hi = p.hi;
  const float* bias = p.bias;
  const float* w = p.w;
  const float* x = p.x;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.OH, oy = r % g.OH;
    for (int64_t ox = 0; ox < g.OW; ++ox) {
      float* __restrict out = p.y + (r * g.OW + ox) * C;
      for (int64_t c = 0; c < C; ++c) out[c] = bias[c];
      for_each_tap_inside(g, oy, ox, [&](int64_t iy, int64_t ix, int64_t ky, int64_t kx) {
        const float* __restrict src = x + ((n * g.H + iy) * g.W + ix) * C;
        const float* __restrict wk = w + (ky * g.kw + kx) * C;
        for (int64_t c = 0; c < C; ++c) out[c] += src[c] * wk[c];
      });
      for (int64_t c = 0; c < C; ++c) out[c] = out[c] != out[c] ? out[c] : std::min(std::max(out[c], lo), hi);
    }
  }
}

// Output rows split statically across threads: every row is computed the same way
// whatever the split, so every thread count gives the same bits.
template <typename Rows>
void split_rows(int64_t rows, int threads, const Rows& run) {
  const int par = int(std::max<int64_t>(1, std::min<int64_t>({threads, rows, max_threads()})));
  if (par == 1) return run(0, rows);
  parallel_run(par, [&](int tid) { run(rows * tid / par, rows * (tid + 1) / par); });
}

bool has_avx2(Isa isa) { return isa == Isa::avx2 || isa == Isa::avx512vnni; }

}  // namespace

void depthwise_q_op(const Step& s, const StepIO& io, const RunContext& ctx) {
  DepthwiseQ p;
  p.g = ConvGeometry::from(s.ints);
  const int64_t C = p.g.C, K = p.g.kh * p.g.kw;
  p.x_signed = io.in_v[0]->dtype == DType::s8;
  p.a_zp = int32_t(s.ints[16]);
  p.kind = OutKind(s.ints[17]);
  p.out_zp = int32_t(s.ints[18]);
  p.lo = float(s.ints[19] - p.out_zp);
  p.hi = float(s.ints[20] - p.out_zp);
  p.bias = s.i32.data();
  p.w = p.bias + C;
  p.bias_folded = p.w + K * C;
  p.pairs = p.bias_folded + C;
  p.mult = s.f32.empty() ? nullptr : s.f32.data();
  p.per_channel = int64_t(s.f32.size()) == C;
  p.x = io.in[0];
  p.y = io.out[0];
  const bool vec = has_avx2(ctx.isa);
  split_rows(p.g.N * p.g.OH, ctx.threads, [&](int64_t r0, int64_t r1) {
    if (vec) depthwise_q8_16c_avx2(p, r0, r1);
    else if (p.x_signed) depthwise_q_scalar<int8_t>(p, r0, r1);
    else depthwise_q_scalar<uint8_t>(p, r0, r1);
  });
}

void depthwise_f32_op(const Step& s, const StepIO& io, const RunContext& ctx) {
  DepthwiseF32 p;
  p.g = ConvGeometry::from(s.ints);
  p.lo = float(s.floats[0]);
  p.hi = float(s.floats[1]);
  p.bias = s.f32.data();
  p.w = p.bias + p.g.C;
  p.x = static_cast<const float*>(io.in[0]);
  p.y = static_cast<float*>(io.out[0]);
  const bool vec = has_avx2(ctx.isa);
  split_rows(p.g.N * p.g.OH, ctx.threads, [&](int64_t r0, int64_t r1) {
    if (ctx.isa == Isa::avx512vnni) depthwise_f32_16c_avx512(p, r0, r1);
    else if (vec) depthwise_f32_8c_avx2(p, r0, r1);
    else depthwise_f32_scalar(p, r0, r1);
  });
}

}  // namespace pyrt
