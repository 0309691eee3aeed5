// AVX2 depthwise kernels. int8: vpmaddwd on the pair (tap 2p, tap 2p+1) of one channel,
// both operands int16, so every product and pair sum is exact in int32 (DESIGN.md: no
// vpmaddubsw saturation). The activation zero point is folded into the bias at load, so
// activations enter raw; taps outside the image read a row of zero points, which the fold
// cancels, so border pixels run the same branch-free tap loop as interior ones.
#include <immintrin.h>

#include <type_traits>
#include <vector>

#include "depthwise.h"

#define PYRT_AVX2 __attribute__((target("avx2,fma")))

namespace pyrt {
namespace {

template <typename T>
PYRT_AVX2 inline __m256i widen(__m128i v) {
  return std::is_same<T, int8_t>::value ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v);
}

// The scalar path's arithmetic, lane by lane: f32 product (unfused), clamp, round half to
// even (vroundps with the rounding mode in the instruction, not MXCSR), + zero point.
PYRT_AVX2 inline __m256i requant8(__m256i acc, __m256 m, __m256 lo, __m256 hi, __m256i zp) {
  __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), m);
  v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
  return _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)), zp);
}

// The output kind is a template argument: the epilogue runs per 8 channels of every pixel,
// too often to decide it there.
template <OutKind kKind>
struct QOut {
  const DepthwiseQ& p;
  __m256 m, lo, hi;  // m: the per-tensor multiplier, broadcast
  __m256i zp;

  PYRT_AVX2 __m256 mult(int64_t c) const { return p.per_channel ? _mm256_loadu_ps(p.mult + c) : m; }

  // Eight channels starting at c of the output pixel at element offset `at`. Requantized
  // values already lie in the output type's range, so the saturating packs never clip.
  PYRT_AVX2 void store8(__m256i acc, int64_t at, int64_t c) const {
    if constexpr (kKind == OutKind::i32) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<int32_t*>(p.y) + at + c), acc);
    } else if constexpr (kKind == OutKind::f32) {
      _mm256_storeu_ps(static_cast<float*>(p.y) + at + c, _mm256_mul_ps(_mm256_cvtepi32_ps(acc), mult(c)));
    } else {
      const __m256i r = requant8(acc, mult(c), lo, hi, zp);
      const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
      const __m128i b = kKind == OutKind::u8 ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(p.y) + at + c), b);
    }
  }

  void store1(int32_t acc, int64_t at, int64_t c) const {
    const float m1 = p.mult ? p.mult[p.per_channel ? c : 0] : 0.0f;
    if constexpr (kKind == OutKind::i32) {
      static_cast<int32_t*>(p.y)[at + c] = acc;
    } else if constexpr (kKind == OutKind::f32) {
      static_cast<float*>(p.y)[at + c] = float(acc) * m1;
    } else {
      float v = float(acc) * m1;
      v = std::min(std::max(v, p.lo), p.hi);
      const int32_t q = int32_t(__builtin_roundevenf(v)) + p.out_zp;
      if constexpr (kKind == OutKind::u8) static_cast<uint8_t*>(p.y)[at + c] = uint8_t(q);
      else static_cast<int8_t*>(p.y)[at + c] = int8_t(q);
    }
  }
};

// G groups of 16 channels from c: more independent sums per tap pointer loaded.
template <typename T, int G, typename Out>
PYRT_AVX2 inline void q8_block(const DepthwiseQ& p, const T* const* tp, int64_t P, int64_t c, int64_t at,
                               const Out& out) {
  __m256i a[2 * G];
  for (int i = 0; i < 2 * G; ++i) a[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.bias_folded + c + 8 * i));
  const int32_t* wp = p.pairs + c;
  for (int64_t q = 0; q < P; ++q, wp += p.g.C) {
    const T* t0 = tp[2 * q] + c;
    const T* t1 = tp[2 * q + 1] + c;
    for (int i = 0; i < G; ++i) {
      const __m128i u = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t0 + 16 * i));
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t1 + 16 * i));
      a[2 * i] = _mm256_add_epi32(a[2 * i], _mm256_madd_epi16(widen<T>(_mm_unpacklo_epi8(u, v)),
                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 16 * i))));
      a[2 * i + 1] = _mm256_add_epi32(a[2 * i + 1], _mm256_madd_epi16(widen<T>(_mm_unpackhi_epi8(u, v)),
                                      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 16 * i + 8))));
    }
  }
  for (int i = 0; i < 2 * G; ++i) out.store8(a[i], at, c + 8 * i);
}

template <typename T, OutKind kKind>
PYRT_AVX2 void depthwise_q8_rows(const DepthwiseQ& p, int64_t r0, int64_t r1) {
  const ConvGeometry& g = p.g;
  const int64_t C = g.C, K = g.kh * g.kw, P = (K + 1) / 2;
  thread_local std::vector<T> zp_row;
  thread_local std::vector<const T*> ptrs;
  zp_row.assign(size_t(C), T(p.a_zp));
  ptrs.resize(size_t(K + 1 + g.kh));
  const T** tp = ptrs.data();
  tp[K] = zp_row.data();  // partner of an odd last tap; its weight in the pair is 0
  DepthwiseTaps<T> taps(g, static_cast<const T*>(p.x), zp_row.data(), tp, tp + K + 1);
  const QOut<kKind> out{p, _mm256_set1_ps(p.mult ? p.mult[0] : 0.0f), _mm256_set1_ps(p.lo), _mm256_set1_ps(p.hi),
                 _mm256_set1_epi32(p.out_zp)};
  for (int64_t r = r0; r < r1; ++r) {
    taps.start_row(r);
    for (int64_t ox = 0; ox < g.OW; ++ox) {
      taps.pixel(ox);
      const int64_t at = (r * g.OW + ox) * C;
      int64_t c = 0;
      for (; c + 32 <= C; c += 32) q8_block<T, 2>(p, tp, P, c, at, out);
      for (; c + 16 <= C; c += 16) q8_block<T, 1>(p, tp, P, c, at, out);
      if (c + 8 <= C) {
        __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.bias_folded + c));
        const int32_t* wp = p.pairs + c;
        for (int64_t q = 0; q < P; ++q, wp += C) {
          const __m128i u = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(tp[2 * q] + c));
          const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(tp[2 * q + 1] + c));
          a = _mm256_add_epi32(a, _mm256_madd_epi16(widen<T>(_mm_unpacklo_epi8(u, v)),
                                                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp))));
        }
        out.store8(a, at, c);
        c += 8;
      }
      for (; c < C; ++c) {  // fewer than 8 channels left; uint32 sums wrap like the vector adds
        uint32_t a = uint32_t(p.bias_folded[c]);
        for (int64_t t = 0; t < K; ++t) a += uint32_t(int32_t(tp[t][c]) * p.w[t * C + c]);
        out.store1(int32_t(a), at, c);
      }
    }
  }
}

template <typename T>
void depthwise_q8_typed(const DepthwiseQ& p, int64_t r0, int64_t r1) {
  switch (p.kind) {
    case OutKind::i32: return depthwise_q8_rows<T, OutKind::i32>(p, r0, r1);
    case OutKind::f32: return depthwise_q8_rows<T, OutKind::f32>(p, r0, r1);
    case OutKind::u8: return depthwise_q8_rows<T, OutKind::u8>(p, r0, r1);
    case OutKind::s8: return depthwise_q8_rows<T, OutKind::s8>(p, r0, r1);
  }
}

}  // namespace

void depthwise_q8_16c_avx2(const DepthwiseQ& p, int64_t r0, int64_t r1) {
  if (p.x_signed) return depthwise_q8_typed<int8_t>(p, r0, r1);
  depthwise_q8_typed<uint8_t>(p, r0, r1);
}

// fp32: FMA, as the fp32 GEMM; checked against onnxruntime with a tolerance. Taps outside
// the image read a row of zeros (what an im2col would hold), and the channel tail is masked.
PYRT_AVX2 void depthwise_f32_8c_avx2(const DepthwiseF32& p, int64_t r0, int64_t r1) {
  const ConvGeometry& g = p.g;
  const int64_t C = g.C, K = g.kh * g.kw;
  const float** tp = nullptr;
  DepthwiseTaps<float> taps = f32_depthwise_taps(p, tp);
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  // max/min return their second operand when one is NaN: NaN passes through.
  const auto clamp = [lo, hi](__m256 v) PYRT_AVX2 { return _mm256_min_ps(hi, _mm256_max_ps(lo, v)); };
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(C % 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int64_t r = r0; r < r1; ++r) {
    taps.start_row(r);
    for (int64_t ox = 0; ox < g.OW; ++ox) {
      taps.pixel(ox);
      float* y = p.y + (r * g.OW + ox) * C;
      int64_t c = 0;
      for (; c + 32 <= C; c += 32) {  // four independent FMA chains hide the FMA latency
        __m256 a[4];
        for (int i = 0; i < 4; ++i) a[i] = _mm256_loadu_ps(p.bias + c + 8 * i);
        const float* wp = p.w + c;
        for (int64_t t = 0; t < K; ++t, wp += C)
          for (int i = 0; i < 4; ++i)
            a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(tp[t] + c + 8 * i), _mm256_loadu_ps(wp + 8 * i), a[i]);
        for (int i = 0; i < 4; ++i) _mm256_storeu_ps(y + c + 8 * i, clamp(a[i]));
      }
      for (; c + 8 <= C; c += 8) {
        __m256 acc = _mm256_loadu_ps(p.bias + c);
        const float* wp = p.w + c;
        for (int64_t t = 0; t < K; ++t, wp += C)
          acc = _mm256_fmadd_ps(_mm256_loadu_ps(tp[t] + c), _mm256_loadu_ps(wp), acc);
        _mm256_storeu_ps(y + c, clamp(acc));
      }
      if (c < C) {
        __m256 acc = _mm256_maskload_ps(p.bias + c, tail);
        const float* wp = p.w + c;
        for (int64_t t = 0; t < K; ++t, wp += C)
          acc = _mm256_fmadd_ps(_mm256_maskload_ps(tp[t] + c, tail), _mm256_maskload_ps(wp, tail), acc);
        _mm256_maskstore_ps(y + c, tail, clamp(acc));
      }
    }
  }
}

}  // namespace pyrt
