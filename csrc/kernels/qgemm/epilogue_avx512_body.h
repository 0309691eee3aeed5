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

// The epilogue of one group of 16 columns (n0..n0+min(cols,16)-1), its per-column vectors
// loaded once for every row it stores: the output is bytes, which may alias anything, so
// the compiler would otherwise reload them after each row's store.
struct Store16 {
  const Epilogue* ep;
  int n0;
  __mmask16 mask;
  __m512i corr, b_zp, out_zp;
  __m512 mult, lo, hi;
  __m512 add_col;  // the fused Add's row (zeros where there is none)

  PYRT_AVX512 Store16(const Epilogue& e, int n0_, int cols)
      : ep(&e),
        n0(n0_),
        mask(__mmask16(cols >= 16 ? 0xFFFF : (1u << cols) - 1)),
        corr(load(e.col_corr + n0_)),
        b_zp(load(e.b_zp + n0_)),
        out_zp(_mm512_set1_epi32(e.out_zp)),
        mult(_mm512_loadu_ps(e.mult + n0_)),
        lo(_mm512_set1_ps(e.lo_f)),
        hi(_mm512_set1_ps(e.hi_f)),
        add_col(e.add_col ? _mm512_loadu_ps(e.add_col + n0_) : _mm512_set1_ps(0.0f)) {}

  // Row m.
  PYRT_AVX512 void operator()(__m512i acc, int m) const {
    const int row = ep->row_of ? ep->row_of[m] : m;
    acc = _mm512_add_epi32(acc, corr);
    if (ep->row_sums) acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(ep->row_sums[row]), b_zp));
    const ptrdiff_t at = ptrdiff_t(row) * ep->ldc + n0;
    if (ep->out == OutKind::i32) return _mm512_mask_storeu_epi32(static_cast<int32_t*>(ep->c) + at, mask, acc);
    const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), mult);
    if (ep->out == OutKind::f32) return _mm512_mask_storeu_ps(static_cast<float*>(ep->c) + at, mask, v);
    constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m512i q = _mm512_add_epi32(_mm512_cvt_roundps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi), kRne), out_zp);
    if (ep->add_col) {
      const __m512 w = _mm512_add_ps(
          _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, _mm512_set1_epi32(ep->add_in_zp))),
                        _mm512_set1_ps(ep->add_mult)),
          add_col);
      const __m512 w_clamped = _mm512_min_ps(_mm512_max_ps(w, _mm512_set1_ps(ep->add_lo_f)), _mm512_set1_ps(ep->add_hi_f));
      q = _mm512_add_epi32(_mm512_cvt_roundps_epi32(w_clamped, kRne), _mm512_set1_epi32(ep->add_out_zp));
    }
    // q is inside the output range, so truncating to bytes (vpmovdb) is exact for u8 and s8.
    _mm512_mask_cvtepi32_storeu_epi8(static_cast<uint8_t*>(ep->c) + at, mask, q);
  }
};
