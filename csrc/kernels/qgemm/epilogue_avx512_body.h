// The AVX-512 epilogue, shared by the VNNI GEMM and the direct convolution: 16 int32
// accumulators corrected, then stored as int32, dequantized f32 or requantized u8/s8, bit
// for bit as requant.h states it. Compiled in the real and in the emulated environment
// (see qgemm_avx512vnni_body.h): the including file opens the namespace and defines
// PYRT_AVX512.

PYRT_AVX512 inline int32_t load_u32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

PYRT_AVX512 inline __m512i load(const void* p) { return _mm512_loadu_si512(p); }

// Columns n0..n0+min(cols,16)-1 of row m.
PYRT_AVX512 inline void store16(__m512i acc, int m, int n0, int cols, const Epilogue& ep) {
  acc = _mm512_add_epi32(acc, load(ep.col_corr + n0));
  if (ep.row_sums) acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(ep.row_sums[m]), load(ep.b_zp + n0)));
  const __mmask16 mask = __mmask16(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
  const ptrdiff_t at = ptrdiff_t(m) * ep.ldc + n0;
  if (ep.out == OutKind::i32) return _mm512_mask_storeu_epi32(static_cast<int32_t*>(ep.c) + at, mask, acc);
  const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_loadu_ps(ep.mult + n0));
  if (ep.out == OutKind::f32) return _mm512_mask_storeu_ps(static_cast<float*>(ep.c) + at, mask, v);
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512 clamped = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(ep.lo_f)), _mm512_set1_ps(ep.hi_f));
  const __m512i q = _mm512_add_epi32(_mm512_cvt_roundps_epi32(clamped, kRne), _mm512_set1_epi32(ep.out_zp));
  // q is inside the output range, so truncating to bytes (vpmovdb) is exact for u8 and s8.
  _mm512_mask_cvtepi32_storeu_epi8(static_cast<uint8_t*>(ep.c) + at, mask, q);
}
