// The direct small-window int8 convolution (conv_window_avx2.cc): NHWC in and out, one
// group, constant weights, K = kh*kw*C <= 32 with each window row kw*C <= 16 bytes.
#pragma once
#include "conv.h"
#include "pyruntime/qgemm.h"

namespace pyrt {

struct WindowConvArgs {
  ConvGeometry g;
  const uint8_t* x;          // NHWC (C == 1: NCHW is the same)
  bool a_signed;
  int32_t a_zp;
  const PackedWeights* w;    // K x M, rows in (ky, kx, c) order
  const int32_t* bias;       // M or null
  const float* mult;         // 1 or M (n_mult); unused for i32 output
  int n_mult;
  OutKind out;
  int32_t out_zp, lo, hi;
  void* y;                   // NHWC
  int threads;
};

// Whether a conv_q step (its ints) takes this kernel on the AVX2 paths.
bool window_conv_applies(const std::vector<int64_t>& conv_q_ints);
// Needs AVX2: callers dispatch on the ISA.
void conv_q8_window_6x16_avx2(const WindowConvArgs& a);

}  // namespace pyrt
