// Pooling steps: max and average pools on NCHW or NHWC data, and pools of any rank.
#include <algorithm>
#include <cstring>
#include <limits>

#include "conv.h"
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
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
          if (iy < 0 || iy >= g.H) continue;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
            if (ix < 0 || ix >= g.W) continue;
            const T v = plane[iy * g.W + ix];
            if (!any || v > best || v != v) best = v;
            any = true;
          }
        }
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
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
          if (iy < 0 || iy >= g.H) continue;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
            if (ix < 0 || ix >= g.W) continue;
            const T* in = x + ((n * g.H + iy) * g.W + ix) * C;
            if (first) {
              std::memcpy(out, in, size_t(C) * sizeof(T));
              first = false;
            } else {
              for (int64_t c = 0; c < C; ++c) out[c] = (in[c] > out[c] || in[c] != in[c]) ? in[c] : out[c];
            }
          }
        }
        if (first) std::fill(out, out + C, std::numeric_limits<T>::lowest());
      }
}

}  // namespace

void max_pool_op(const Step& s, const StepIO& io, const RunContext& ctx) {
  if (s.ints.size() > 16 && s.ints[16]) {
    const bool has_avx2 = ctx.isa == Isa::avx2 || ctx.isa == Isa::avx512vnni;
    if (has_avx2 && max_pool_nhwc_avx2_fits(ConvGeometry::from(s.ints))) return max_pool_nhwc_avx2(s, io);
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
