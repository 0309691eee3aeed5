// Quantized average pooling (QLinearAveragePool, QLinearGlobalAveragePool, and the
// DQ -> AveragePool / GlobalAveragePool -> Q chains fused at load): the exact int32 sum of
// (x - x_zp) over the window, requantized with a multiplier chosen by the window's count
// (pyruntime/reference.py qlinear_avg_pool is the normative text).
#pragma once
#include "../../runtime/program.h"

namespace pyrt {

// ints: N, C, H, W, OH, OW, kh, kw, sh, sw, pad_top, pad_left, pad_bottom, pad_right,
// count_include_pad, channels_last (input and output), x_zp, y_zp, lo, hi;
// f32: the multiplier f32(s_x / (s_y * count)) for each count 0..kh*kw, or only the one for
// H*W where one window covers the whole unpadded image (a global pool).
void qavg_pool_op(const Step& s, const StepIO& io, const RunContext& ctx);

}  // namespace pyrt
