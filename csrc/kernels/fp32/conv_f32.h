// fp32 convolution of one image, one group, NHWC in and out, as a GEMM.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../qconv/conv.h"
#include "sgemm.h"

namespace pyrt {

// x: the NHWC image, y: the NHWC output image; w: [C*kh*kw x M] with K ordered (ky, kx,
// channel); y = clamp(conv + bias, lo, hi).
void conv_f32_nhwc(const float* x, const ConvGeometry& g, const PackedSgemm& w, const float* bias, float lo, float hi,
                   float* y, int threads, Isa isa);

}  // namespace pyrt
