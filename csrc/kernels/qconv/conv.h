// Convolution and pooling steps (NCHW at the step boundary). A convolution is an
// im2col of one image and group into a [pixels x (C/g * kernel)] matrix, padded with the
// input's zero point, then the fp32 or int8 GEMM with its fused epilogue; the [pixels x
// M/g] result is written back channel-major.
#pragma once
#include "../../runtime/program.h"

namespace pyrt {

// Geometry shared by conv and pool steps, decoded from a step's ints:
// N, C, H, W, M(out channels; pools: C), OH, OW, kh, kw, sh, sw, dh, dw, pad_top, pad_left, group
struct ConvGeometry {
  int64_t N, C, H, W, M, OH, OW, kh, kw, sh, sw, dh, dw, pt, pl, group;
  static ConvGeometry from(const std::vector<int64_t>& ints);
};

// Calls tap(iy, ix, ky, kx) for every window position of output pixel (oy, ox) that lies
// inside the image. Padding positions are skipped: for max pools they do not compete, and
// for convolutions they read the zero point, which contributes nothing.
template <typename Tap>
inline void for_each_tap_inside(const ConvGeometry& g, int64_t oy, int64_t ox, Tap&& tap) {
  for (int64_t ky = 0; ky < g.kh; ++ky) {
    const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
    if (iy < 0 || iy >= g.H) continue;
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
      if (ix >= 0 && ix < g.W) tap(iy, ix, ky, kx);
    }
  }
}

void conv_f32_op(const Step& s, const StepIO& io, const RunContext& ctx);
void conv_q_op(const Step& s, const StepIO& io, const RunContext& ctx);
// A conv_q step's GEMM column terms per group, where its weights and epilogue are
// constants (none for runtime operands).
std::vector<std::shared_ptr<const QgemmColumnTerms>> conv_q_column_terms(const Step& s, DType a_dtype);
void max_pool_op(const Step& s, const StepIO& io, const RunContext& ctx);
// NHWC max pooling with AVX2 (max_pool_avx2.cc), for windows of up to 64 positions.
bool max_pool_nhwc_avx2_fits(const ConvGeometry& g);
void max_pool_nhwc_avx2(const Step& s, const StepIO& io, int threads);
void avg_pool_op(const Step& s, const StepIO& io);
// Depthwise (group == channels == outputs), NHWC in and out: ints ConvGeometry(16) then,
// for int8, a_zp, out_kind, out_zp, lo, hi; i32 = bias[C] + (w - w_zp)[kh][kw][C], then the
// tap-pair layout of the vector kernels: bias[C] - a_zp * sum over taps of (w - w_zp), and
// [(kh*kw+1)/2][C] int32 holding int16 (w - w_zp) of taps 2p (low half) and 2p+1 (high
// half, 0 past the last tap); f32 = multipliers. fp32: f32 = bias[C] + w[kh][kw][C];
// floats lo, hi. Output rows are split across ctx.threads.
void depthwise_q_op(const Step& s, const StepIO& io, const RunContext& ctx);
void depthwise_f32_op(const Step& s, const StepIO& io, const RunContext& ctx);
// Max or average pooling of any spatial rank, optionally with MaxPool's Indices output.
void pool_nd_op(const Step& s, const StepIO& io);

}  // namespace pyrt
