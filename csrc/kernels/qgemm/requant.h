// The scalar form of the epilogue: the normative arithmetic every SIMD path reproduces.
// Integer sums wrap in uint32 on purpose: when the true result fits int32 (guaranteed by
// the load-time bound) modular arithmetic yields it exactly, whatever the intermediates.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "qgemm_kernels.h"

namespace pyrt {

inline int32_t wrap_add(int32_t a, int32_t b) { return int32_t(uint32_t(a) + uint32_t(b)); }
inline int32_t wrap_mul(int32_t a, int32_t b) { return int32_t(uint32_t(a) * uint32_t(b)); }

inline int32_t corrected_acc(int32_t acc, int m, int n, const Epilogue& ep) {
  int32_t v = wrap_add(acc, ep.col_corr[n]);
  if (ep.row_sums) v = wrap_add(v, -wrap_mul(ep.row_sums[m], ep.b_zp[n]));
  return v;
}

inline int32_t requantize_one(int32_t acc, float mult, const Epilogue& ep) {
  float v = float(acc) * mult;  // one f32 rounding; -ffp-contract=off keeps it unfused
  v = std::min(std::max(v, ep.lo_f), ep.hi_f);
  return int32_t(__builtin_roundevenf(v)) + ep.out_zp;
}

// The fused Add's stage (Epilogue::add_col): reference.qlinear_add with a constant row.
inline int32_t add_row_one(int32_t q, int n, const Epilogue& ep) {
  float v = float(q - ep.add_in_zp) * ep.add_mult + ep.add_col[n];
  v = std::min(std::max(v, ep.add_lo_f), ep.add_hi_f);
  return int32_t(__builtin_roundevenf(v)) + ep.add_out_zp;
}

inline int32_t requantize_column(int32_t acc, int n, const Epilogue& ep) {
  const int32_t q = requantize_one(acc, ep.mult[n], ep);
  return ep.add_col ? add_row_one(q, n, ep) : q;
}

// Writes one corrected accumulator to C[m][n].
inline void store_one(int32_t acc, int m, int n, const Epilogue& ep) {
  const ptrdiff_t at = ptrdiff_t(m) * ep.ldc + n;
  switch (ep.out) {
    case OutKind::i32: static_cast<int32_t*>(ep.c)[at] = acc; break;
    case OutKind::f32: static_cast<float*>(ep.c)[at] = float(acc) * ep.mult[n]; break;
    case OutKind::u8: static_cast<uint8_t*>(ep.c)[at] = uint8_t(requantize_column(acc, n, ep)); break;
    case OutKind::s8: static_cast<int8_t*>(ep.c)[at] = int8_t(requantize_column(acc, n, ep)); break;
  }
}

}  // namespace pyrt
