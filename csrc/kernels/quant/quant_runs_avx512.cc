// AVX-512 runs of QuantizeLinear and quantized Add (contract: quant_runs.h). Sixteen lanes
// at a time with a masked tail, so they finish the whole run; vpmovdb narrows lanes that
// are already inside the byte range.
#include <immintrin.h>

#include <type_traits>

#include "quant_runs.h"

// The whole file targets this ISA: its functions run only where dispatch found it.
#pragma GCC target("avx512f,avx512bw,avx512vl")

namespace pyrt {
namespace {

template <typename T>
inline __m512 widen16_minus(const T* p, __mmask16 m, __m512i zp) {
  const __m128i v = _mm_maskz_loadu_epi8(m, p);
  const __m512i w = std::is_same_v<T, uint8_t> ? _mm512_cvtepu8_epi32(v) : _mm512_cvtepi8_epi32(v);
  return _mm512_cvtepi32_ps(_mm512_sub_epi32(w, zp));
}

inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

}  // namespace

// Clamping x / s to the integer bounds less zp and then rounding gives the same integer as
// rounding, adding zp and clamping (rounding is monotone and keeps integers), with two
// fewer float-add-pipe ops per vector: with x in L2 those pipes, not the divider, bound
// this loop on Zen 4 (50176 values: 7.0 -> 6.0 us; the MLP's batch-64 input, read from
// further out, 7.1 -> 6.8 us).
template <typename TY>
int64_t quantize_run_avx512(const float* x, int64_t n, float s, int32_t zp, TY* y) {
  const float lo = std::is_same_v<TY, uint8_t> ? 0.0f : -128.0f, hi = std::is_same_v<TY, uint8_t> ? 255.0f : 127.0f;
  const __m512 vs = _mm512_set1_ps(s);
  const __m512 vlo = _mm512_set1_ps(lo - float(zp)), vhi = _mm512_set1_ps(hi - float(zp));
  const __m512i vzp = _mm512_set1_epi32(zp);  // zp has the output's type, so NaN -> zp is in range
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), vs);
    const __mmask16 nan = _mm512_cmp_ps_mask(q, q, _CMP_UNORD_Q);
    const __m512 c = _mm512_mask_mov_ps(_mm512_min_ps(_mm512_max_ps(q, vlo), vhi), nan, _mm512_setzero_ps());
    const __m512i r = _mm512_cvt_roundps_epi32(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm512_mask_cvtepi32_storeu_epi8(y + i, m, _mm512_add_epi32(r, vzp));
  }
  return n;
}

template <typename TA, typename TB, typename TY>
int64_t qadd_run_avx512(const TA* a, const TB* b, TY* y, int64_t n, int32_t a_zp, int32_t b_zp,
                                    int32_t y_zp, float ma, float mb, float lo_v, float hi_v) {
  const __m512i va_zp = _mm512_set1_epi32(a_zp), vb_zp = _mm512_set1_epi32(b_zp), vy_zp = _mm512_set1_epi32(y_zp);
  const __m512 vma = _mm512_set1_ps(ma), vmb = _mm512_set1_ps(mb), vlo = _mm512_set1_ps(lo_v), vhi = _mm512_set1_ps(hi_v);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = _mm512_add_ps(_mm512_mul_ps(widen16_minus(a + i, m, va_zp), vma),
                                   _mm512_mul_ps(widen16_minus(b + i, m, vb_zp), vmb));
    const __m512 c = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
    const __m512i q = _mm512_add_epi32(
        _mm512_cvtps_epi32(_mm512_roundscale_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)), vy_zp);
    _mm512_mask_cvtepi32_storeu_epi8(y + i, m, q);
  }
  return n;
}

template int64_t quantize_run_avx512(const float*, int64_t, float, int32_t, uint8_t*);
template int64_t quantize_run_avx512(const float*, int64_t, float, int32_t, int8_t*);
#define PYRT_QADD(TA, TB, TY)                                                                                      \
  template int64_t qadd_run_avx512(const TA*, const TB*, TY*, int64_t, int32_t, int32_t, int32_t, float, float, float, \
                                   float);
#include "qadd_types.inc"
#undef PYRT_QADD

}  // namespace pyrt
