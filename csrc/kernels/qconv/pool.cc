// Pooling steps: max and average pools on NCHW or NHWC data, pools of any rank, and the
// quantized average pools (pool.h).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../../runtime/thread_pool.h"
#include "conv.h"
#include "pool.h"
#include "pyruntime/errors.h"

namespace pyrt {

namespace {

template <typename T>
void max_pool_typed(const Step& s, const StepIO& io) {
  const ConvGeometry g = ConvGeometry::from(s.ints);
  const T* x = static_cast<const T*>(io.in[0]);
  T* y = static_cast<T*>(io.out[0]);
  for (int64_t nc = 0; nc < g.N * g.C; ++nc) {
    const T* plane = x + nc * g.H * g.W;
    T* out = y + nc * g.OH * g.OW;
    for (int64_t oy = 0; oy < g.OH; ++oy)
      for (int64_t ox = 0; ox < g.OW; ++ox) {
        const int64_t iy0 = oy * g.sh - g.pt, ix0 = ox * g.sw - g.pl;
        if (iy0 >= 0 && iy0 + (g.kh - 1) * g.dh < g.H && ix0 >= 0 && ix0 + (g.kw - 1) * g.dw < g.W) {
          const T* src = plane + iy0 * g.W + ix0;
          T best = src[0];
          for (int64_t ky = 0; ky < g.kh; ++ky)
            for (int64_t kx = 0; kx < g.kw; ++kx) {
              const T v = src[ky * g.dh * g.W + kx * g.dw];
              if (v > best || v != v) best = v;
            }
          out[oy * g.OW + ox] = best;
          continue;
        }
        T best = std::numeric_limits<T>::lowest();
        bool any = false;
        for_each_tap_inside(g, oy, ox, [&](int64_t iy, int64_t ix, int64_t, int64_t) {
          const T v = plane[iy * g.W + ix];
          if (!any || v > best || v != v) best = v;
          any = true;
        });
        out[oy * g.OW + ox] = best;
      }
  }
}

}  // namespace

namespace {

// NHWC: every window position is a run of C channels, so the max is a vector loop.
template <typename T>
void max_pool_nhwc(const Step& s, const StepIO& io) {
  const ConvGeometry g = ConvGeometry::from(s.ints);
  const T* x = static_cast<const T*>(io.in[0]);
  T* y = static_cast<T*>(io.out[0]);
  const int64_t C = g.C;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oy = 0; oy < g.OH; ++oy)
      for (int64_t ox = 0; ox < g.OW; ++ox) {
        T* out = y + ((n * g.OH + oy) * g.OW + ox) * C;
        bool first = true;
        for_each_tap_inside(g, oy, ox, [&](int64_t iy, int64_t ix, int64_t, int64_t) {
          const T* in = x + ((n * g.H + iy) * g.W + ix) * C;
          if (first) {
            std::memcpy(out, in, size_t(C) * sizeof(T));
            first = false;
          } else {
            for (int64_t c = 0; c < C; ++c) out[c] = (in[c] > out[c] || in[c] != in[c]) ? in[c] : out[c];
          }
        });
        if (first) std::fill(out, out + C, std::numeric_limits<T>::lowest());
      }
}

}  // namespace

void max_pool_op(const Step& s, const StepIO& io, const RunContext& ctx) {
  if (s.ints.size() > 16 && s.ints[16]) {
    const bool has_avx2 = ctx.isa == Isa::avx2 || ctx.isa == Isa::avx512vnni;
    if (has_avx2 && max_pool_nhwc_avx2_fits(ConvGeometry::from(s.ints))) return max_pool_nhwc_avx2(s, io, ctx.threads);
    switch (io.in_v[0]->dtype) {
      case DType::f32: return max_pool_nhwc<float>(s, io);
      case DType::u8: return max_pool_nhwc<uint8_t>(s, io);
      case DType::s8: return max_pool_nhwc<int8_t>(s, io);
      default: throw UnsupportedError("MaxPool on this dtype");
    }
  }
  switch (io.in_v[0]->dtype) {
    case DType::f32: return max_pool_typed<float>(s, io);
    case DType::u8: return max_pool_typed<uint8_t>(s, io);
    case DType::s8: return max_pool_typed<int8_t>(s, io);
    default: throw UnsupportedError("MaxPool on this dtype");
  }
}

void avg_pool_op(const Step& s, const StepIO& io) {
  // ints: geometry[16], count_include_pad, pad_bottom, pad_right (the padded extent that
  // counts when count_include_pad is set).
  const ConvGeometry g = ConvGeometry::from(s.ints);
  const bool include_pad = s.ints[16] != 0;
  const int64_t pb = s.ints[17], pr = s.ints[18];
  const float* x = static_cast<const float*>(io.in[0]);
  float* y = static_cast<float*>(io.out[0]);
  for (int64_t nc = 0; nc < g.N * g.C; ++nc) {
    const float* plane = x + nc * g.H * g.W;
    float* out = y + nc * g.OH * g.OW;
    for (int64_t oy = 0; oy < g.OH; ++oy)
      for (int64_t ox = 0; ox < g.OW; ++ox) {
        float sum = 0;
        int64_t count = 0;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
            const bool inside = iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
            if (inside) {
              sum += plane[iy * g.W + ix];
              ++count;
            } else if (include_pad && iy >= -g.pt && iy < g.H + pb && ix >= -g.pl && ix < g.W + pr) {
              ++count;
            }
          }
        }
        out[oy * g.OW + ox] = count ? sum / float(count) : 0.0f;
      }
  }
}

}  // namespace pyrt

namespace pyrt {
namespace {

// Any spatial rank: ints: R, planes (N*C), then in[R], out[R], kernel[R], strides[R],
// dilations[R], pads_begin[R], pads_end[R], avg(0/1), count_include_pad, storage_order.
struct PoolNd {
  int R;
  int64_t planes;
  const int64_t *in, *out, *k, *st, *dil, *pb, *pe;
  bool avg, include_pad, column_major;
  explicit PoolNd(const std::vector<int64_t>& v)
      : R(int(v[0])), planes(v[1]), in(&v[2]), out(in + R), k(out + R), st(k + R), dil(st + R), pb(dil + R),
        pe(pb + R), avg(v[2 + 7 * R] != 0), include_pad(v[3 + 7 * R] != 0), column_major(v[4 + 7 * R] != 0) {}
};

template <typename T>
void pool_nd_typed(const PoolNd& p, const StepIO& io) {
  int64_t in_size = 1, out_size = 1, win = 1;
  for (int d = 0; d < p.R; ++d) {
    in_size *= p.in[d];
    out_size *= p.out[d];
    win *= p.k[d];
  }
  const T* x = static_cast<const T*>(io.in[0]);
  T* y = static_cast<T*>(io.out[0]);
  int64_t* idx_out = io.out.size() > 1 && io.out[1] ? static_cast<int64_t*>(io.out[1]) : nullptr;
  int64_t o[8], kk[8], pos[8];
  for (int64_t plane = 0; plane < p.planes; ++plane) {
    const T* xp = x + plane * in_size;
    for (int64_t oi = 0; oi < out_size; ++oi) {
      for (int64_t r = oi, d = p.R - 1; d >= 0; --d) {
        o[d] = r % p.out[d];
        r /= p.out[d];
      }
      double sum = 0;
      int64_t count = 0, best_at = -1;
      T best = std::numeric_limits<T>::lowest();
      for (int64_t wi = 0; wi < win; ++wi) {
        for (int64_t r = wi, d = p.R - 1; d >= 0; --d) {
          kk[d] = r % p.k[d];
          r /= p.k[d];
        }
        bool inside = true, in_padded = true;
        int64_t flat = 0;
        for (int d = 0; d < p.R; ++d) {
          pos[d] = o[d] * p.st[d] - p.pb[d] + kk[d] * p.dil[d];
          inside &= pos[d] >= 0 && pos[d] < p.in[d];
          in_padded &= pos[d] >= -p.pb[d] && pos[d] < p.in[d] + p.pe[d];
          flat = flat * p.in[d] + pos[d];
        }
        if (!inside) {
          count += p.include_pad && in_padded;
          continue;
        }
        const T v = xp[flat];
        ++count;
        sum += double(v);
        if (best_at < 0 || v > best) {
          best = v;
          best_at = flat;
        }
      }
      if (p.avg) {
        y[plane * out_size + oi] = count ? T(float(sum) / float(count)) : T(0);
      } else {
        y[plane * out_size + oi] = best;
        if (idx_out) {
          int64_t index = best_at;
          if (p.column_major && best_at >= 0) {
            int64_t rem = best_at, cm = 0, stride = 1;
            for (int d = p.R - 1; d >= 0; --d) pos[d] = rem % p.in[d], rem /= p.in[d];
            for (int d = 0; d < p.R; ++d) cm += pos[d] * stride, stride *= p.in[d];
            index = cm;
          }
          idx_out[plane * out_size + oi] = plane * in_size + index;
        }
      }
    }
  }
}

}  // namespace

void pool_nd_op(const Step& s, const StepIO& io) {
  const PoolNd p(s.ints);
  switch (io.in_v[0]->dtype) {
    case DType::f32: return pool_nd_typed<float>(p, io);
    case DType::u8: return pool_nd_typed<uint8_t>(p, io);
    case DType::s8: return pool_nd_typed<int8_t>(p, io);
    default: throw UnsupportedError("pooling on this dtype");
  }
}

}  // namespace pyrt

#define PYRT_AVX2 __attribute__((target("avx2")))

namespace pyrt {
namespace {

struct QAvgPool {
  int64_t N, C, H, W, OH, OW, kh, kw, sh, sw, pt, pl, pb, pr;
  bool include_pad, channels_last;
  int32_t x_zp, y_zp, lo, hi;
  const float* mult;  // by window count, or the single multiplier of a global pool
  bool single_mult;
  explicit QAvgPool(const Step& s)
      : N(s.ints[0]), C(s.ints[1]), H(s.ints[2]), W(s.ints[3]), OH(s.ints[4]), OW(s.ints[5]), kh(s.ints[6]),
        kw(s.ints[7]), sh(s.ints[8]), sw(s.ints[9]), pt(s.ints[10]), pl(s.ints[11]), pb(s.ints[12]),
        pr(s.ints[13]), include_pad(s.ints[14] != 0), channels_last(s.ints[15] != 0), x_zp(int32_t(s.ints[16])),
        y_zp(int32_t(s.ints[17])), lo(int32_t(s.ints[18])), hi(int32_t(s.ints[19])), mult(s.f32.data()),
        single_mult(s.f32.size() == 1) {}
  bool global() const { return kh == H && kw == W && OH == 1 && OW == 1 && !(pt | pl | pb | pr); }
  // The requantization of DESIGN.md: one f32 product, clamp in float, round half to even.
  template <typename T>
  T requant(int32_t acc, int64_t count) const {
    float v = float(acc) * mult[single_mult ? 0 : count];
    v = std::min(std::max(v, float(lo - y_zp)), float(hi - y_zp));
    return T(int32_t(std::nearbyint(v)) + y_zp);
  }
};

// Any window, either layout, one output at a time: the portable definition.
template <typename T>
void qavg_pool_window(const QAvgPool& p, const T* x, T* y) {
  const int64_t sc = p.channels_last ? 1 : p.H * p.W, sx = p.channels_last ? p.C : 1, sy = sx * p.W;
  const int64_t osc = p.channels_last ? 1 : p.OH * p.OW, osx = p.channels_last ? p.C : 1, osy = osx * p.OW;
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t c = 0; c < p.C; ++c) {
      const T* plane = x + n * p.C * p.H * p.W + c * sc;
      T* out = y + n * p.C * p.OH * p.OW + c * osc;
      for (int64_t oy = 0; oy < p.OH; ++oy)
        for (int64_t ox = 0; ox < p.OW; ++ox) {
          const int64_t y0 = oy * p.sh - p.pt, x0 = ox * p.sw - p.pl;
          const int64_t ya = std::max<int64_t>(y0, 0), yb = std::min(y0 + p.kh, p.H);
          const int64_t xa = std::max<int64_t>(x0, 0), xb = std::min(x0 + p.kw, p.W);
          int32_t acc = 0;
          for (int64_t iy = ya; iy < yb; ++iy)
            for (int64_t ix = xa; ix < xb; ++ix) acc += int32_t(plane[iy * sy + ix * sx]) - p.x_zp;
          int64_t count = std::max<int64_t>(yb - ya, 0) * std::max<int64_t>(xb - xa, 0);
          if (p.include_pad)
            count = (std::min(y0 + p.kh, p.H + p.pb) - std::max(y0, -p.pt)) *
                    (std::min(x0 + p.kw, p.W + p.pr) - std::max(x0, -p.pl));
          out[oy * osy + ox * osx] = p.requant<T>(acc, count);
        }
    }
}

// Global pool of channels-last images: each pixel is a run of C channels added to C sums.
template <typename T>
void qavg_pool_global_nhwc(const QAvgPool& p, const T* x, T* y) {
  constexpr int64_t kBlock = 64;
  const int64_t HW = p.H * p.W;
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t c0 = 0; c0 < p.C; c0 += kBlock) {
      const int64_t width = std::min(kBlock, p.C - c0);
      int32_t acc[kBlock] = {0};
      for (const T* px = x + n * HW * p.C + c0; px < x + (n + 1) * HW * p.C; px += p.C)
        for (int64_t c = 0; c < width; ++c) acc[c] += px[c];
      for (int64_t c = 0; c < width; ++c)
        y[n * p.C + c0 + c] = p.requant<T>(acc[c] - int32_t(HW) * p.x_zp, HW);
    }
}

// Global pool of channels-first planes: each plane is one contiguous run.
template <typename T>
void qavg_pool_global_nchw(const QAvgPool& p, const T* x, T* y) {
  const int64_t HW = p.H * p.W;
  for (int64_t plane = 0; plane < p.N * p.C; ++plane) {
    int32_t acc = 0;
    for (const T* px = x + plane * HW; px < x + (plane + 1) * HW; ++px) acc += *px;
    y[plane] = p.requant<T>(acc - int32_t(HW) * p.x_zp, HW);
  }
}

template <typename T>
PYRT_AVX2 __m256i widen8_epi32_avx2(const T* src) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
  return std::is_signed<T>::value ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
}

// 32 channels at a time in four int32 vectors; the last C % 32 channels take the portable loop.
template <typename T>
PYRT_AVX2 void s8u8_gavgpool_nhwc_c32_avx2(const QAvgPool& p, const T* x, T* y) {
  const int64_t HW = p.H * p.W, C = p.C, C32 = C / 32 * 32;
  alignas(32) int32_t acc[32];
  for (int64_t n = 0; n < p.N; ++n) {
    const T* image = x + n * HW * C;
    for (int64_t c0 = 0; c0 < C32; c0 += 32) {
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
      for (const T* px = image + c0; px < image + HW * C; px += C) {
        a0 = _mm256_add_epi32(a0, widen8_epi32_avx2(px));
        a1 = _mm256_add_epi32(a1, widen8_epi32_avx2(px + 8));
        a2 = _mm256_add_epi32(a2, widen8_epi32_avx2(px + 16));
        a3 = _mm256_add_epi32(a3, widen8_epi32_avx2(px + 24));
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc), a0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc + 8), a1);
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc + 16), a2);
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc + 24), a3);
      for (int c = 0; c < 32; ++c) y[n * C + c0 + c] = p.requant<T>(acc[c] - int32_t(HW) * p.x_zp, HW);
    }
    for (int64_t c = C32; c < C; ++c) {
      int32_t sum = 0;
      for (const T* px = image + c; px < image + HW * C; px += C) sum += *px;
      y[n * C + c] = p.requant<T>(sum - int32_t(HW) * p.x_zp, HW);
    }
  }
}

// vpsadbw sums 8 unsigned bytes per 64-bit lane exactly; int8 is biased by 128 to use it.
template <typename T>
PYRT_AVX2 void s8u8_gavgpool_nchw_b32_avx2(const QAvgPool& p, const T* x, T* y) {
  const int64_t HW = p.H * p.W, HW32 = HW / 32 * 32;
  const int32_t bias = std::is_signed<T>::value ? 128 : 0;
  const __m256i flip = _mm256_set1_epi8(char(bias)), zero = _mm256_setzero_si256();
  for (int64_t plane = 0; plane < p.N * p.C; ++plane) {
    const T* src = x + plane * HW;
    __m256i sums = zero;
    for (int64_t i = 0; i < HW32; i += 32) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
      sums = _mm256_add_epi64(sums, _mm256_sad_epu8(_mm256_xor_si256(v, flip), zero));
    }
    const __m128i half = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    int32_t acc = int32_t(_mm_cvtsi128_si64(half) + _mm_extract_epi64(half, 1)) - int32_t(HW32) * bias;
    for (int64_t i = HW32; i < HW; ++i) acc += src[i];
    y[plane] = p.requant<T>(acc - int32_t(HW) * p.x_zp, HW);
  }
}

constexpr int64_t kMinPoolBytesPerThread = 1 << 18;

template <typename T>
void qavg_pool_typed(const QAvgPool& p, const StepIO& io, bool avx2, int threads) {
  const T* x = static_cast<const T*>(io.in[0]);
  T* y = static_cast<T*>(io.out[0]);
  if (!p.global()) return qavg_pool_window(p, x, y);
  // A global pool reads each image once and writes its C outputs: images split over threads.
  const int64_t image = p.C * p.H * p.W;
  const int par = int(std::max<int64_t>(1, std::min<int64_t>({threads, max_threads(), p.N,
                                                              p.N * image / kMinPoolBytesPerThread})));
  parallel_run(par, [&](int tid) {
    QAvgPool share = p;
    const int64_t n0 = p.N * tid / par;
    share.N = p.N * (tid + 1) / par - n0;
    const T* xs = x + n0 * image;
    T* ys = y + n0 * p.C;
    if (p.channels_last)
      return avx2 ? s8u8_gavgpool_nhwc_c32_avx2(share, xs, ys) : qavg_pool_global_nhwc(share, xs, ys);
    return avx2 ? s8u8_gavgpool_nchw_b32_avx2(share, xs, ys) : qavg_pool_global_nchw(share, xs, ys);
  });
}

}  // namespace

void qavg_pool_op(const Step& s, const StepIO& io, const RunContext& ctx) {
  const QAvgPool p(s);
  const bool avx2 = ctx.isa == Isa::avx2 || ctx.isa == Isa::avx512vnni;
  switch (io.in_v[0]->dtype) {
    case DType::u8: return qavg_pool_typed<uint8_t>(p, io, avx2, ctx.threads);
    case DType::s8: return qavg_pool_typed<int8_t>(p, io, avx2, ctx.threads);
    default: throw UnsupportedError("quantized average pooling needs uint8 or int8 data");
  }
}

}  // namespace pyrt
