// The AVX2 epilogue, shared by the GEMM micro-kernels and the direct convolution: one row
// of 16 int32 accumulators corrected, then stored as int32, dequantized f32 or requantized
// u8/s8, bit for bit as requant.h states it.
#pragma once
#include <immintrin.h>

#include <cstring>

#include "qgemm_kernels.h"

#define PYRT_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))

namespace pyrt {
namespace avx2 {

PYRT_AVX2 inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// The fused Add's stage (Epilogue::add_col) on 8 requantized values.
PYRT_AVX2 inline __m256i add_row8(__m256i q, const float* col, const Epilogue& ep) {
  __m256 w = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(ep.add_in_zp))),
                                         _mm256_set1_ps(ep.add_mult)),
                           _mm256_loadu_ps(col));
  w = _mm256_min_ps(_mm256_max_ps(w, _mm256_set1_ps(ep.add_lo_f)), _mm256_set1_ps(ep.add_hi_f));
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  return _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_round_ps(w, kRne)), _mm256_set1_epi32(ep.add_out_zp));
}

// Epilogue for one row of 16 columns (acc0: n0..n0+7, acc1: n0+8..n0+15).
PYRT_AVX2 inline void store_row(__m256i acc0, __m256i acc1, int m, int n0, int cols, const Epilogue& ep) {
  acc0 = _mm256_add_epi32(acc0, load(ep.col_corr + n0));
  acc1 = _mm256_add_epi32(acc1, load(ep.col_corr + n0 + 8));
  if (ep.row_sums) {
    const __m256i rs = _mm256_set1_epi32(ep.row_sums[m]);
    acc0 = _mm256_sub_epi32(acc0, _mm256_mullo_epi32(rs, load(ep.b_zp + n0)));
    acc1 = _mm256_sub_epi32(acc1, _mm256_mullo_epi32(rs, load(ep.b_zp + n0 + 8)));
  }
  alignas(32) uint8_t tmp[64];
  const ptrdiff_t at = ptrdiff_t(m) * ep.ldc + n0;
  size_t elem = 4;
  void* dst = nullptr;
  if (ep.out == OutKind::i32) {
    dst = static_cast<int32_t*>(ep.c) + at;
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), acc0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 32), acc1);
  } else {
    __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc0), _mm256_loadu_ps(ep.mult + n0));
    __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc1), _mm256_loadu_ps(ep.mult + n0 + 8));
    if (ep.out == OutKind::f32) {
      dst = static_cast<float*>(ep.c) + at;
      _mm256_store_ps(reinterpret_cast<float*>(tmp), v0);
      _mm256_store_ps(reinterpret_cast<float*>(tmp + 32), v1);
    } else {
      const __m256 lo = _mm256_set1_ps(ep.lo_f), hi = _mm256_set1_ps(ep.hi_f);
      constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
      v0 = _mm256_round_ps(_mm256_min_ps(_mm256_max_ps(v0, lo), hi), kRne);
      v1 = _mm256_round_ps(_mm256_min_ps(_mm256_max_ps(v1, lo), hi), kRne);
      const __m256i zp = _mm256_set1_epi32(ep.out_zp);
      __m256i q0 = _mm256_add_epi32(_mm256_cvttps_epi32(v0), zp);
      __m256i q1 = _mm256_add_epi32(_mm256_cvttps_epi32(v1), zp);
      if (ep.add_col) {
        q0 = add_row8(q0, ep.add_col + n0, ep);
        q1 = add_row8(q1, ep.add_col + n0 + 8, ep);
      }
      // Values are already inside the output range, so the saturating packs only narrow.
      const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
      const __m128i lo16 = _mm256_castsi256_si128(w), hi16 = _mm256_extracti128_si256(w, 1);
      const __m128i bytes =
          ep.out == OutKind::u8 ? _mm_packus_epi16(lo16, hi16) : _mm_packs_epi16(lo16, hi16);
      elem = 1;
      dst = static_cast<uint8_t*>(ep.c) + at;
      if (cols == 16) {
        _mm_storeu_si128(static_cast<__m128i*>(dst), bytes);
        return;
      }
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
    }
  }
  if (cols == 16 && elem == 4) {
    _mm256_storeu_si256(static_cast<__m256i*>(dst), load(tmp));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint8_t*>(dst) + 32), load(tmp + 32));
  } else {
    std::memcpy(dst, tmp, cols * elem);
  }
}

}  // namespace avx2
}  // namespace pyrt
