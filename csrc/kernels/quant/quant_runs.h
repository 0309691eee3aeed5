// Contiguous runs of the quantization ops, one file per ISA. Each computes, lane by lane,
// exactly what quantize.cc's scalar code computes (the same f32 division or products, RNE
// rounding, clamp and zero point), so every path gives the same bits.
#pragma once
#include <cstdint>

namespace pyrt {

// y[i] = saturate(round_half_even(x[i] / s) + zp); NaN -> zp (clamped); +-inf saturates.
// Returns how many leading values it did (the caller finishes the rest).
template <typename TY>
int64_t quantize_run_avx2(const float* x, int64_t n, float s, int32_t zp, TY* y);
template <typename TY>
int64_t quantize_run_avx512(const float* x, int64_t n, float s, int32_t zp, TY* y);

// y[i] = round_half_even(clamp(f32(a[i] - a_zp) * ma + f32(b[i] - b_zp) * mb, lo_v, hi_v)) + y_zp:
// two f32 products and one f32 sum, no FMA (reference.qlinear_add). Returns how many it did.
template <typename TA, typename TB, typename TY>
int64_t qadd_run_avx2(const TA* a, const TB* b, TY* y, int64_t n, int32_t a_zp, int32_t b_zp, int32_t y_zp, float ma,
                      float mb, float lo_v, float hi_v);
template <typename TA, typename TB, typename TY>
int64_t qadd_run_avx512(const TA* a, const TB* b, TY* y, int64_t n, int32_t a_zp, int32_t b_zp, int32_t y_zp,
                        float ma, float mb, float lo_v, float hi_v);

}  // namespace pyrt
