// fp32 depthwise kernels that live with the fp32 code; depthwise.cc dispatches to them.
#pragma once
#include <cstdint>

#include "../qconv/depthwise.h"

namespace pyrt {

// Output rows [r0, r1) of the flattened (N, OH) range; the AVX2 kernel's bits.
void depthwise_f32_16c_avx512(const DepthwiseF32& p, int64_t r0, int64_t r1);

}  // namespace pyrt
