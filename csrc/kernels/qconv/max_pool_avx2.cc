// Max pooling on NHWC data with AVX2: each output pixel is the element-wise max of the
// window's channel runs, 32 bytes (or 8 floats) at a time, then 16 (or 4). The portable loop in pool.cc
// costs ~17 instructions per output for a 2x2 int8 pool; this one under one.
#include <immintrin.h>

#include <algorithm>
#include <limits>

#include "../../runtime/thread_pool.h"
#include "conv.h"
#include "pyruntime/errors.h"

#define PYRT_AVX2 __attribute__((target("avx2")))

namespace pyrt {
namespace {

constexpr int64_t kMinBytesPerThread = 1 << 16;  // below this, waking a thread costs more

// Bytes: a 32-lane max, and a 16-lane one for the rest (16 channels are common), unsigned
// or signed.
template <typename Byte, __m256i (*Max)(__m256i, __m256i), __m128i (*Max16)(__m128i, __m128i)>
struct MaxBytes {
  using T = Byte;
  static constexpr int kLanes = 32, kHalfLanes = 16;
  PYRT_AVX2 static __m256i load(const T* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  PYRT_AVX2 static void store(T* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  PYRT_AVX2 static __m256i max(__m256i a, __m256i b) { return Max(a, b); }
  PYRT_AVX2 static __m128i load_half(const T* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  PYRT_AVX2 static void store_half(T* p, __m128i v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
  PYRT_AVX2 static __m128i max_half(__m128i a, __m128i b) { return Max16(a, b); }
  static T max1(T a, T b) { return std::max(a, b); }
};
PYRT_AVX2 __m256i max_u8(__m256i a, __m256i b) { return _mm256_max_epu8(a, b); }
PYRT_AVX2 __m256i max_s8(__m256i a, __m256i b) { return _mm256_max_epi8(a, b); }
PYRT_AVX2 __m128i max_u8_16(__m128i a, __m128i b) { return _mm_max_epu8(a, b); }
PYRT_AVX2 __m128i max_s8_16(__m128i a, __m128i b) { return _mm_max_epi8(a, b); }
using MaxU8 = MaxBytes<uint8_t, max_u8, max_u8_16>;
using MaxS8 = MaxBytes<int8_t, max_s8, max_s8_16>;

// NaN wins, as in the portable loop (ONNX leaves it open; onnxruntime propagates it).
struct MaxF32 {
  using T = float;
  static constexpr int kLanes = 8, kHalfLanes = 4;
  PYRT_AVX2 static __m256 load(const T* p) { return _mm256_loadu_ps(p); }
  PYRT_AVX2 static void store(T* p, __m256 v) { _mm256_storeu_ps(p, v); }
  PYRT_AVX2 static __m256 max(__m256 best, __m256 v) {
    // max_ps returns its second operand when either is NaN: v's NaN comes through, and a
    // NaN already in best is put back.
    return _mm256_blendv_ps(_mm256_max_ps(best, v), best, _mm256_cmp_ps(best, best, _CMP_UNORD_Q));
  }
  PYRT_AVX2 static __m128 load_half(const T* p) { return _mm_loadu_ps(p); }
  PYRT_AVX2 static void store_half(T* p, __m128 v) { _mm_storeu_ps(p, v); }
  PYRT_AVX2 static __m128 max_half(__m128 best, __m128 v) {
    return _mm_blendv_ps(_mm_max_ps(best, v), best, _mm_cmp_ps(best, best, _CMP_UNORD_Q));
  }
  static T max1(T best, T v) { return (v > best || v != v) ? v : best; }
};

// Output rows [r0, r1) of the (image, row) sequence.
template <typename Ops>
PYRT_AVX2 void max_pool_nhwc_rows(const Step& s, const StepIO& io, int64_t r0, int64_t r1) {
  using T = typename Ops::T;
  const ConvGeometry g = ConvGeometry::from(s.ints);
  const T* x = static_cast<const T*>(io.in[0]);
  T* y = static_cast<T*>(io.out[0]);
  const int64_t C = g.C, vec_end = C / Ops::kLanes * Ops::kLanes;
  const int64_t half_end = vec_end + (C - vec_end) / Ops::kHalfLanes * Ops::kHalfLanes;
  const T* taps[64];
  // A window wholly inside the image (most of them) takes its taps from fixed offsets.
  int64_t offsets[64];
  const int window = int(g.kh * g.kw);
  for (int64_t ky = 0; ky < g.kh; ++ky)
    for (int64_t kx = 0; kx < g.kw; ++kx) offsets[ky * g.kw + kx] = (ky * g.dh * g.W + kx * g.dw) * C;
  const int64_t span_y = (g.kh - 1) * g.dh, span_x = (g.kw - 1) * g.dw;
  // A 2x2 window over 16 byte channels (a first layer's pool): one 32-byte load per window
  // row holds both of its taps, so a pixel is two loads and two maxes.
  const bool pair16 = sizeof(T) == 1 && C == 16 && g.kh == 2 && g.kw == 2 && g.dh == 1 && g.dw == 1;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.OH, oy = r % g.OH;
    for (int64_t ox = 0; ox < g.OW; ++ox) {
      T* out = y + ((n * g.OH + oy) * g.OW + ox) * C;
      const int64_t iy0 = oy * g.sh - g.pt, ix0 = ox * g.sw - g.pl;
      int count = 0;
      if (iy0 >= 0 && iy0 + span_y < g.H && ix0 >= 0 && ix0 + span_x < g.W) {
        const T* origin = x + ((n * g.H + iy0) * g.W + ix0) * C;
        if constexpr (sizeof(T) == 1) {
          if (pair16) {
            const __m256i both = Ops::max(Ops::load(origin), Ops::load(origin + g.W * C));
            Ops::store_half(out, Ops::max_half(_mm256_castsi256_si128(both), _mm256_extracti128_si256(both, 1)));
            continue;
          }
        }
        for (; count < window; ++count) taps[count] = origin + offsets[count];
      } else {
        for_each_tap_inside(g, oy, ox, [&](int64_t iy, int64_t ix, int64_t, int64_t) {
          taps[count++] = x + ((n * g.H + iy) * g.W + ix) * C;
        });
      }
      if (count == 0) {
        std::fill(out, out + C, std::numeric_limits<T>::lowest());
        continue;
      }
      for (int64_t c = 0; c < vec_end; c += Ops::kLanes) {
        auto best = Ops::load(taps[0] + c);
        for (int t = 1; t < count; ++t) best = Ops::max(best, Ops::load(taps[t] + c));
        Ops::store(out + c, best);
      }
      for (int64_t c = vec_end; c < half_end; c += Ops::kHalfLanes) {
        auto best = Ops::load_half(taps[0] + c);
        for (int t = 1; t < count; ++t) best = Ops::max_half(best, Ops::load_half(taps[t] + c));
        Ops::store_half(out + c, best);
      }
      for (int64_t c = half_end; c < C; ++c) {
        T best = taps[0][c];
        for (int t = 1; t < count; ++t) best = Ops::max1(best, taps[t][c]);
        out[c] = best;
      }
    }
  }
}

// A batch's rows split across threads: at batch 64 a pool is milliseconds of one thread.
template <typename Ops>
void max_pool_nhwc_typed(const Step& s, const StepIO& io, int threads) {
  const ConvGeometry g = ConvGeometry::from(s.ints);
  const int64_t rows = g.N * g.OH, bytes = io.out_v[0]->elements() * int64_t(sizeof(typename Ops::T));
  const int par = int(std::max<int64_t>(1, std::min<int64_t>({threads, max_threads(), rows, bytes / kMinBytesPerThread})));
  parallel_run(par, [&](int tid) { max_pool_nhwc_rows<Ops>(s, io, rows * tid / par, rows * (tid + 1) / par); });
}

}  // namespace

bool max_pool_nhwc_avx2_fits(const ConvGeometry& g) { return g.kh * g.kw <= 64; }

void max_pool_nhwc_avx2(const Step& s, const StepIO& io, int threads) {
  switch (io.in_v[0]->dtype) {
    case DType::f32: return max_pool_nhwc_typed<MaxF32>(s, io, threads);
    case DType::u8: return max_pool_nhwc_typed<MaxU8>(s, io, threads);
    case DType::s8: return max_pool_nhwc_typed<MaxS8>(s, io, threads);
    default: throw UnsupportedError("MaxPool on this dtype");
  }
}

}  // namespace pyrt
