// AVX2 runs of QuantizeLinear and quantized Add (contract: quant_runs.h).
#include <immintrin.h>

#include <type_traits>

#include "quant_runs.h"

// The whole file targets this ISA: its functions run only where dispatch found it.
#pragma GCC target("avx2,fma")

namespace pyrt {
namespace {

// Eight int32 lanes already inside TY's range, to eight bytes.
template <typename TY>
inline void store8(TY* y, __m256i q) {
  const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  const __m128i bytes = std::is_same_v<TY, uint8_t> ? _mm_packus_epi16(w16, w16) : _mm_packs_epi16(w16, w16);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(y), bytes);
}

template <typename T>
inline __m256 widen8_minus(const T* p, __m256i zp) {
  const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m256i w = std::is_same_v<T, uint8_t> ? _mm256_cvtepu8_epi32(v) : _mm256_cvtepi8_epi32(v);
  return _mm256_cvtepi32_ps(_mm256_sub_epi32(w, zp));
}

}  // namespace

template <typename TY>
int64_t quantize_run_avx2(const float* x, int64_t n, float s, int32_t zp, TY* y) {
  const float lo = std::is_same_v<TY, uint8_t> ? 0.0f : -128.0f, hi = std::is_same_v<TY, uint8_t> ? 255.0f : 127.0f;
  const __m256 vs = _mm256_set1_ps(s), vzp = _mm256_set1_ps(float(zp));
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  const __m256 vnan_to = _mm256_set1_ps(zp < lo ? lo : zp > hi ? hi : float(zp));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 q = _mm256_div_ps(_mm256_loadu_ps(x + i), vs);
    const __m256 nan = _mm256_cmp_ps(q, q, _CMP_UNORD_Q);
    __m256 r = _mm256_add_ps(_mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vzp);
    r = _mm256_min_ps(_mm256_max_ps(r, vlo), vhi);
    store8(y + i, _mm256_cvttps_epi32(_mm256_blendv_ps(r, vnan_to, nan)));
  }
  return i;
}

template <typename TA, typename TB, typename TY>
int64_t qadd_run_avx2(const TA* a, const TB* b, TY* y, int64_t n, int32_t a_zp, int32_t b_zp, int32_t y_zp,
                                float ma, float mb, float lo_v, float hi_v) {
  const __m256i va_zp = _mm256_set1_epi32(a_zp), vb_zp = _mm256_set1_epi32(b_zp), vy_zp = _mm256_set1_epi32(y_zp);
  const __m256 vma = _mm256_set1_ps(ma), vmb = _mm256_set1_ps(mb), vlo = _mm256_set1_ps(lo_v), vhi = _mm256_set1_ps(hi_v);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_add_ps(_mm256_mul_ps(widen8_minus(a + i, va_zp), vma),
                                   _mm256_mul_ps(widen8_minus(b + i, vb_zp), vmb));
    const __m256 c = _mm256_min_ps(_mm256_max_ps(v, vlo), vhi);
    store8(y + i, _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_round_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)),
                                   vy_zp));
  }
  return i;
}

template int64_t quantize_run_avx2(const float*, int64_t, float, int32_t, uint8_t*);
template int64_t quantize_run_avx2(const float*, int64_t, float, int32_t, int8_t*);
#define PYRT_QADD(TA, TB, TY)                                                                                    \
  template int64_t qadd_run_avx2(const TA*, const TB*, TY*, int64_t, int32_t, int32_t, int32_t, float, float, float, \
                                 float);
#include "qadd_types.inc"
#undef PYRT_QADD

}  // namespace pyrt
