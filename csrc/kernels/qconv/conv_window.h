// The direct small-window int8 convolution (conv_window_avx2.cc): NHWC in and out, one
// group, constant weights, K = kh*kw*C <= 32 with each window row kw*C <= 16 bytes.
#pragma once
#include <functional>

#include "../qgemm/qgemm_kernels.h"
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
  // A MaxPool fused after the conv (kernel == strides, no pads): y holds the pooled output.
  int pool_h = 1, pool_w = 1;
  // The epilogue from the step's plan-time GEMM column terms: the VNNI kernel's (required
  // there; the AVX2 kernel builds its own in its signed domain).
  const Epilogue* planned = nullptr;
};

// Whether a conv_q step (its ints) takes a direct window kernel on the AVX2 and VNNI paths.
bool window_conv_applies(const std::vector<int64_t>& conv_q_ints);
// Need AVX2 / AVX-512 VNNI: callers dispatch on the ISA. The VNNI kernel multiplies raw
// weights, so it takes only weights whose zero points are 0 in the s8 domain, and it needs
// `planned`.
void conv_q8_window_6x16_avx2(const WindowConvArgs& a);
void conv_q8_window_8x16_avx512vnni(const WindowConvArgs& a);

// Shared by the kernels (conv_window.cc). The wrap check and the epilogue serve the AVX2
// kernel, whose correction is in its own (raw activation) domain; VNNI uses `planned`.
// Refuses (UnsupportedError) a conv whose int32 accumulator could wrap.
void window_check_no_wrap(const WindowConvArgs& a);
// The epilogue over per-thread arrays sized for M padded to 64: correction
// bias - a_zp * sum_k (w - w_zp), with a_zp in the kernel's activation domain.
Epilogue window_epilogue(const WindowConvArgs& a, int32_t a_zp);
// Bytes per band row: the zero-point-padded input row plus 16 bytes of over-read slack.
size_t window_band_stride(const ConvGeometry& g);
// Output rows (n, oy) split across threads; row(n, oy, band, band_stride) gets kh rows,
// band + ky * band_stride holding the input row that window row ky reads, padded with the
// zero point (window_band_stride bytes with the slack) and xor `flip` on every byte (0x80
// turns s8 into the u8 domain). With a.pool_h > 1, oy counts pooled rows: the call covers
// conv rows oy * pool_h + j, whose bands start j * sh * window_band_stride(g) further on
// (conv rows past the last whole pool window are not visited).
void window_for_each_output_row(const WindowConvArgs& a, uint8_t flip,
                                const std::function<void(int64_t, int64_t, const uint8_t*, size_t)>& row);

}  // namespace pyrt
