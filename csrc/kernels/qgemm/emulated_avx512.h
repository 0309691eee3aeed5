// A portable model of the AVX-512 intrinsics the VNNI body uses, with the semantics Intel's
// guide states for each (wrapping integer lanes, RNE conversions, masked stores). Only for
// qgemm_avx512vnni_emulated.cc: it must never meet <immintrin.h> in one translation unit.
#pragma once

struct __m512i {
  int32_t v[16];
};
struct __m512 {
  float v[16];
};
using __mmask16 = uint16_t;
constexpr int _MM_FROUND_TO_NEAREST_INT = 0x00;
constexpr int _MM_FROUND_NO_EXC = 0x08;

inline __m512i _mm512_setzero_si512() { return __m512i{}; }
inline __m512i _mm512_loadu_si512(const void* p) {
  __m512i r;
  std::memcpy(r.v, p, 64);
  return r;
}
inline __m512i _mm512_set1_epi32(int32_t x) {
  __m512i r;
  for (int i = 0; i < 16; ++i) r.v[i] = x;
  return r;
}
inline __m512i _mm512_dpbusd_epi32(__m512i src, __m512i a, __m512i b) {
  uint8_t ab[64], bb[64];
  std::memcpy(ab, a.v, 64);
  std::memcpy(bb, b.v, 64);
  for (int i = 0; i < 16; ++i) {
    uint32_t sum = uint32_t(src.v[i]);
    for (int j = 0; j < 4; ++j) sum += uint32_t(int32_t(ab[4 * i + j]) * int32_t(int8_t(bb[4 * i + j])));
    src.v[i] = int32_t(sum);
  }
  return src;
}
template <typename Op>
inline __m512i lanewise(__m512i a, __m512i b, Op op) {
  for (int i = 0; i < 16; ++i) a.v[i] = int32_t(op(uint32_t(a.v[i]), uint32_t(b.v[i])));
  return a;
}
inline __m512i _mm512_add_epi32(__m512i a, __m512i b) { return lanewise(a, b, [](uint32_t x, uint32_t y) { return x + y; }); }
inline __m512i _mm512_xor_si512(__m512i a, __m512i b) { return lanewise(a, b, [](uint32_t x, uint32_t y) { return x ^ y; }); }
inline __m512i _mm512_sub_epi32(__m512i a, __m512i b) { return lanewise(a, b, [](uint32_t x, uint32_t y) { return x - y; }); }
inline __m512i _mm512_mullo_epi32(__m512i a, __m512i b) { return lanewise(a, b, [](uint32_t x, uint32_t y) { return x * y; }); }
inline __m512i _mm512_setr_epi32(int32_t e0, int32_t e1, int32_t e2, int32_t e3, int32_t e4, int32_t e5,
                                 int32_t e6, int32_t e7, int32_t e8, int32_t e9, int32_t e10, int32_t e11,
                                 int32_t e12, int32_t e13, int32_t e14, int32_t e15) {
  return __m512i{{e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, e11, e12, e13, e14, e15}};
}
inline void _mm512_storeu_si512(void* p, __m512i a) { std::memcpy(p, a.v, 64); }
inline __mmask16 _mm512_test_epi32_mask(__m512i a, __m512i b) {
  __mmask16 k = 0;
  for (int i = 0; i < 16; ++i) k |= __mmask16((a.v[i] & b.v[i]) != 0) << i;
  return k;
}
// The selected lanes packed to the front in order, the rest zero.
inline __m512i _mm512_maskz_compress_epi32(__mmask16 k, __m512i a) {
  __m512i r{};
  int n = 0;
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) r.v[n++] = a.v[i];
  return r;
}
inline void _mm512_mask_storeu_epi32(void* p, __mmask16 k, __m512i a) {
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) std::memcpy(static_cast<int32_t*>(p) + i, &a.v[i], 4);
}
inline __m512 _mm512_cvtepi32_ps(__m512i a) {
  __m512 r;
  for (int i = 0; i < 16; ++i) r.v[i] = float(a.v[i]);
  return r;
}
inline __m512 _mm512_set1_ps(float x) {
  __m512 r;
  for (int i = 0; i < 16; ++i) r.v[i] = x;
  return r;
}
inline __m512 _mm512_loadu_ps(const float* p) {
  __m512 r;
  std::memcpy(r.v, p, 64);
  return r;
}
inline __m512 _mm512_mul_ps(__m512 a, __m512 b) {
  for (int i = 0; i < 16; ++i) a.v[i] = a.v[i] * b.v[i];
  return a;
}
inline __m512 _mm512_add_ps(__m512 a, __m512 b) {
  for (int i = 0; i < 16; ++i) a.v[i] = a.v[i] + b.v[i];
  return a;
}
// vminps/vmaxps return the second operand when the comparison is false (NaN included).
inline __m512 _mm512_min_ps(__m512 a, __m512 b) {
  for (int i = 0; i < 16; ++i) a.v[i] = a.v[i] < b.v[i] ? a.v[i] : b.v[i];
  return a;
}
inline __m512 _mm512_max_ps(__m512 a, __m512 b) {
  for (int i = 0; i < 16; ++i) a.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
  return a;
}
inline void _mm512_mask_storeu_ps(float* p, __mmask16 k, __m512 a) {
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) p[i] = a.v[i];
}
inline __m512i _mm512_cvt_roundps_epi32(__m512 a, int rounding) {
  __m512i r;
  for (int i = 0; i < 16; ++i) {
    const float x = rounding == (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) ? __builtin_roundevenf(a.v[i]) : a.v[i];
    r.v[i] = (x >= -2147483648.0f && x < 2147483648.0f) ? int32_t(x) : INT32_MIN;  // x86 "integer indefinite"
  }
  return r;
}
inline void _mm512_mask_cvtepi32_storeu_epi8(void* p, __mmask16 k, __m512i a) {
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) static_cast<uint8_t*>(p)[i] = uint8_t(a.v[i]);
}
