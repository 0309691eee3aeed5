// fp32 convolution of one image and group, NHWC in and out, as im2col + sgemm.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../qconv/conv.h"
#include "sgemm.h"

namespace pyrt {

// x: the image (NHWC, g.C channels); the group reads channels [c0, c0 + cg). y: the first
// output channel of the group in the NHWC output image, ldy = g.M. w: [cg*kh*kw x M/g]
// with K ordered (ky, kx, channel).
void conv_f32_nhwc(const float* x, const ConvGeometry& g, int64_t c0, int64_t cg, const PackedSgemm& w,
                   const float* bias, float lo, float hi, float* y, ptrdiff_t ldy, int threads, Isa isa);

}  // namespace pyrt
