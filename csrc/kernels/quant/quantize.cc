#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include <immintrin.h>

#include "../broadcast.h"
#include "../qgemm/requant.h"
#include "../../runtime/thread_pool.h"
#include "quant_runs.h"
#include "pyruntime/errors.h"

namespace pyrt {
namespace {

int32_t read_int(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::u8: return static_cast<const uint8_t*>(p)[i];
    case DType::s8: return static_cast<const int8_t*>(p)[i];
    case DType::s32: return static_cast<const int32_t*>(p)[i];
    default: return int32_t(static_cast<const int64_t*>(p)[i]);
  }
}

// Round half to even for |v| < 2^22 without a libm call: adding 1.5 * 2^23 leaves no
// fraction bits, so the FPU's default rounding (RNE) does the work; -ffp-contract=off
// keeps the two operations separate.
inline float round_half_even_small(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  const float t = v + kMagic;
  return t - kMagic;
}

void check_scale(float s, const char* op) {
  if (!(s > 0.0f) || !std::isfinite(s))
    throw InputError(std::string(op) + " received scale " + std::to_string(s) +
                     " at run time; scales must be finite and > 0");
}

// saturate(round_half_even(x / s) + zp); NaN -> zp; +-inf saturates.
inline int32_t quantize_one(float x, float s, int32_t zp, int32_t lo, int32_t hi) {
  const float q = x / s;
  if (q != q) return std::min(std::max(zp, lo), hi);
  const float r = __builtin_roundevenf(q) + float(zp);
  return int32_t(std::min(std::max(r, float(lo)), float(hi)));
}

}  // namespace

namespace {

#define PYRT_AVX2 __attribute__((target("avx2,fma")))

// One channel's run of `n` values; the vector runs (quant_runs.h) compute the same f32
// division, RNE rounding (explicit, not MXCSR) and clamp as quantize_one, lane by lane.
template <typename TY>
void quantize_run(const float* x, int64_t n, float s, int32_t zp, TY* y, Isa isa) {
  const int32_t lo = std::is_same_v<TY, uint8_t> ? 0 : -128, hi = std::is_same_v<TY, uint8_t> ? 255 : 127;
  int64_t i = 0;
  if (isa == Isa::avx512vnni)
    i = quantize_run_avx512(x, n, s, zp, y);
  else if (isa == Isa::avx2)
    i = quantize_run_avx2(x, n, s, zp, y);
  for (; i < n; ++i) y[i] = TY(quantize_one(x[i], s, zp, lo, hi));
}

// Element-wise work splits anywhere with the same bits; below this many outputs per
// thread, waking one costs more than it saves.
constexpr int64_t kMinElementsPerThread = 1 << 14;

int split_for(int64_t elements, int threads) {
  return int(std::max<int64_t>(1, std::min<int64_t>({threads, max_threads(), elements / kMinElementsPerThread})));
}

template <typename TX>
PYRT_AVX2 void dequantize_run_avx2(const TX* x, int64_t n, float s, int32_t zp, float* y) {
  const __m256 vs = _mm256_set1_ps(s);
  const __m256i vzp = _mm256_set1_epi32(zp);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i v;
    if constexpr (std::is_same_v<TX, uint8_t>)
      v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + i)));
    else if constexpr (std::is_same_v<TX, int8_t>)
      v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + i)));
    else
      v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(v, vzp)), vs));
  }
  for (; i < n; ++i) y[i] = float(int32_t(x[i]) - zp) * s;
}

template <typename TX>
void dequantize_run(const TX* x, int64_t n, float s, int32_t zp, float* y, bool avx2) {
  if (avx2) return dequantize_run_avx2(x, n, s, zp, y);
  for (int64_t i = 0; i < n; ++i) y[i] = float(int32_t(x[i]) - zp) * s;
}

}  // namespace

void quantize_op(const Step& s, const StepIO& io, const RunContext& ctx) {
  const bool per_axis = s.ints[3] != 0;
  // Per tensor, the whole tensor is one run whatever split the lowering described.
  const int64_t outer = per_axis ? s.ints[0] : 1, axis_len = per_axis ? s.ints[1] : 1;
  const int64_t inner = per_axis ? s.ints[2] : s.ints[0] * s.ints[1] * s.ints[2];
  const DType out = io.out_v[0]->dtype;
  const float* x = static_cast<const float*>(io.in[0]);
  const float* scale = static_cast<const float*>(io.in[1]);
  const bool has_zp = io.in.size() > 2 && io.in[2];
  for (int64_t c = 0; c < (per_axis ? axis_len : 1); ++c) check_scale(scale[c], "QuantizeLinear");
  // Flat elements [begin, end), all of channel ch.
  auto run = [&](int64_t ch, int64_t begin, int64_t end) {
    const int32_t zp = has_zp ? read_int(io.in[2], io.in_v[2]->dtype, ch) : 0;
    if (out == DType::u8)
      quantize_run(x + begin, end - begin, scale[ch], zp, static_cast<uint8_t*>(io.out[0]) + begin, ctx.isa);
    else
      quantize_run(x + begin, end - begin, scale[ch], zp, static_cast<int8_t*>(io.out[0]) + begin, ctx.isa);
  };
  if (!per_axis) {
    const int par = split_for(inner, ctx.threads);
    // Thread shares start on 64-value boundaries: whole cache lines of output each.
    const auto share_start = [&](int tid) { return tid == par ? inner : (inner * tid / par) & ~int64_t(63); };
    parallel_run(par, [&](int tid) { run(0, share_start(tid), share_start(tid + 1)); });
    return;
  }
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < axis_len; ++c) run(c, (o * axis_len + c) * inner, (o * axis_len + c + 1) * inner);
}

void dequantize_op(const Step& s, const StepIO& io, bool avx2) {
  const bool per_axis = s.ints[3] != 0;
  // Per tensor, the whole tensor is one run whatever split the lowering described.
  const int64_t outer = per_axis ? s.ints[0] : 1, axis_len = per_axis ? s.ints[1] : 1;
  const int64_t inner = per_axis ? s.ints[2] : s.ints[0] * s.ints[1] * s.ints[2];
  const DType in = io.in_v[0]->dtype;
  const float* scale = static_cast<const float*>(io.in[1]);
  const bool has_zp = io.in.size() > 2 && io.in[2];
  float* y = static_cast<float*>(io.out[0]);
  for (int64_t c = 0; c < (per_axis ? axis_len : 1); ++c) check_scale(scale[c], "DequantizeLinear");
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < axis_len; ++c) {
      const int64_t ch = per_axis ? c : 0;
      const int32_t zp = has_zp ? read_int(io.in[2], io.in_v[2]->dtype, ch) : 0;
      const int64_t base = (o * axis_len + c) * inner;
      switch (in) {
        case DType::u8: dequantize_run(static_cast<const uint8_t*>(io.in[0]) + base, inner, scale[ch], zp, y + base, avx2); break;
        case DType::s8: dequantize_run(static_cast<const int8_t*>(io.in[0]) + base, inner, scale[ch], zp, y + base, avx2); break;
        default: dequantize_run(static_cast<const int32_t*>(io.in[0]) + base, inner, scale[ch], zp, y + base, avx2);
      }
    }
}

// ONNX DynamicQuantizeLinear: range widened to include 0, scale = range / 255,
// zero point = saturate(round_half_even(-min / scale)), then QuantizeLinear.
void dynamic_quantize_op(const Step&, const StepIO& io) {
  const float* x = static_cast<const float*>(io.in[0]);
  const int64_t n = io.in_v[0]->elements();
  float mn = 0, mx = 0;
  for (int64_t i = 0; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  // An all-zero input has no range: scale 1 and zero point 0 (onnxruntime's answer), so a
  // following DequantizeLinear sees a valid scale.
  const float scale = mx > mn ? (mx - mn) / 255.0f : 1.0f;
  const int32_t zp = mx > mn ? int32_t(std::min(std::max(__builtin_roundevenf(-mn / scale), 0.0f), 255.0f)) : 0;
  uint8_t* y = static_cast<uint8_t*>(io.out[0]);
  for (int64_t i = 0; i < n; ++i) y[i] = uint8_t(quantize_one(x[i], scale, zp, 0, 255));
  *static_cast<float*>(io.out[1]) = scale;
  *static_cast<uint8_t*>(io.out[2]) = uint8_t(zp);
}

namespace {

// y = saturate(round_half_even(f32(a - a_zp) * m_a + f32(b - b_zp) * m_b) + y_zp): two f32
// products and one f32 sum, no FMA (reference.qlinear_add).
template <typename TA, typename TB, typename TY>
void qadd_typed(const Step& s, const StepIO& io, const RunContext& ctx) {
  const int R = int(s.ints[0]);
  if (R > 8) throw UnsupportedError("quantized Add on a tensor of rank " + std::to_string(R) + "; at most 8");
  const int64_t* shape = &s.ints[1];
  const int64_t* sa = shape + R;
  const int64_t* sb = sa + R;
  const int32_t a_zp = int32_t(sb[R]), b_zp = int32_t(sb[R + 1]), y_zp = int32_t(sb[R + 2]);
  const float ma = float(s.floats[0]), mb = float(s.floats[1]);
  // An optional clamp (a fused Relu) follows the zero points; else the dtype's range.
  const bool clamp = s.ints.size() >= size_t(1 + 3 * R + 5);
  const float lo = clamp ? float(sb[R + 3]) : (std::is_same_v<TY, uint8_t> ? 0.0f : -128.0f);
  const float hi = clamp ? float(sb[R + 4]) : (std::is_same_v<TY, uint8_t> ? 255.0f : 127.0f);
  const TA* a = static_cast<const TA*>(io.in[0]);
  const TB* b = static_cast<const TB*>(io.in[1]);
  TY* y = static_cast<TY*>(io.out[0]);
  const int64_t total = io.out_v[0]->elements();
  if (total == 0) return;
  // Clamping before rounding is the same as after (the bounds are integers), and keeps
  // |v| small enough for the exact add-and-subtract rounding of round_half_even_small.
  const float lo_v = lo - float(y_zp), hi_v = hi - float(y_zp);
  auto one = [&](TA av, TB bv) {
    const float pa = float(int32_t(av) - a_zp) * ma;
    const float pb = float(int32_t(bv) - b_zp) * mb;
    const float v = std::min(std::max(pa + pb, lo_v), hi_v);
    return TY(int32_t(round_half_even_small(v)) + y_zp);
  };
  if (R == 0) {
    y[0] = one(a[0], b[0]);
    return;
  }
  auto run = [&](int64_t oa, int64_t ob, int64_t at, int64_t n, int64_t ia, int64_t ib) {
    int64_t j = 0;
    if (ia == 1 && ib == 1) {  // both contiguous (a residual Add, a bias row)
      if (ctx.isa == Isa::avx512vnni)
        j = qadd_run_avx512(a + oa, b + ob, y + at, n, a_zp, b_zp, y_zp, ma, mb, lo_v, hi_v);
      else if (ctx.isa == Isa::avx2)
        j = qadd_run_avx2(a + oa, b + ob, y + at, n, a_zp, b_zp, y_zp, ma, mb, lo_v, hi_v);
    }
    for (; j < n; ++j) y[at + j] = one(a[oa + j * ia], b[ob + j * ib]);
  };
  const int par = split_for(total, ctx.threads);
  if (R == 1) {  // one row (same shapes merge into it, e.g. a residual Add): split the row itself
    parallel_run(par, [&](int tid) {
      const int64_t e0 = total * tid / par, e1 = total * (tid + 1) / par;
      run(e0 * sa[0], e0 * sb[0], e0, e1 - e0, sa[0], sb[0]);
    });
    return;
  }
  const int64_t inner = shape[R - 1], rows = inner ? total / inner : 0;
  const int row_par = int(std::min<int64_t>(par, rows));
  parallel_run(row_par, [&](int tid) {
    for_each_broadcast_row(R, shape, sa, sb, rows * tid / row_par, rows * (tid + 1) / row_par, run);
  });
}

template <typename TA, typename TB>
void qadd_out(const Step& s, const StepIO& io, const RunContext& ctx) {
  if (io.out_v[0]->dtype == DType::u8) return qadd_typed<TA, TB, uint8_t>(s, io, ctx);
  return qadd_typed<TA, TB, int8_t>(s, io, ctx);
}

template <typename TA>
void qadd_b(const Step& s, const StepIO& io, const RunContext& ctx) {
  if (io.in_v[1]->dtype == DType::u8) return qadd_out<TA, uint8_t>(s, io, ctx);
  return qadd_out<TA, int8_t>(s, io, ctx);
}

}  // namespace

void qadd_op(const Step& s, const StepIO& io, const RunContext& ctx) {
  if (io.in_v[0]->dtype == DType::u8) return qadd_b<uint8_t>(s, io, ctx);
  return qadd_b<int8_t>(s, io, ctx);
}

void matmul_int_op(const Step& s, const StepIO& io) {
  const int64_t batches = s.ints[0], M = s.ints[1], K = s.ints[2], N = s.ints[3];
  const bool requant = s.ints[4] != 0;
  const DType ta = io.in_v[0]->dtype, tb = io.in_v[1]->dtype;
  const auto opt = [&](size_t i) { return io.in.size() > i && io.in[i] ? i : size_t(0); };
  const size_t i_azp = opt(2), i_bzp = opt(3);
  const int64_t n_bzp = i_bzp ? io.in_v[i_bzp]->elements() : 0;
  const int32_t a_zp = i_azp ? read_int(io.in[i_azp], io.in_v[i_azp]->dtype, 0) : 0;
  std::vector<float> mult;
  Epilogue ep{};
  if (requant) {
    // QLinearMatMul: m = f32(s_a * s_b[n] / s_y), computed in double.
    const float sa = *static_cast<const float*>(io.in[4]);
    const float* sb = static_cast<const float*>(io.in[5]);
    const float sy = *static_cast<const float*>(io.in[6]);
    const int64_t n_sb = io.in_v[5]->elements();
    check_scale(sa, "QLinearMatMul a_scale");
    check_scale(sy, "QLinearMatMul y_scale");
    mult.resize(N);
    for (int64_t n = 0; n < N; ++n) {
      check_scale(sb[n_sb == 1 ? 0 : n], "QLinearMatMul b_scale");
      mult[n] = float(double(sa) * double(sb[n_sb == 1 ? 0 : n]) / double(sy));
    }
    const DType ty = io.out_v[0]->dtype;
    ep.out_zp = io.in.size() > 7 && io.in[7] ? read_int(io.in[7], io.in_v[7]->dtype, 0) : 0;
    ep.lo_f = float((ty == DType::u8 ? 0 : -128) - ep.out_zp);
    ep.hi_f = float((ty == DType::u8 ? 255 : 127) - ep.out_zp);
  }
  for (int64_t bi = 0; bi < batches; ++bi) {
    const int64_t ao = s.ints[5 + 2 * bi], bo = s.ints[6 + 2 * bi];
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        const int32_t bz = n_bzp ? read_int(io.in[i_bzp], io.in_v[i_bzp]->dtype, n_bzp == 1 ? 0 : n) : 0;
        uint32_t acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += uint32_t((read_int(io.in[0], ta, ao + m * K + k) - a_zp) * (read_int(io.in[1], tb, bo + k * N + n) - bz));
        const int64_t at = (bi * M + m) * N + n;
        if (!requant) {
          static_cast<int32_t*>(io.out[0])[at] = int32_t(acc);
        } else {
          const int32_t q = requantize_one(int32_t(acc), mult[n], ep);
          if (io.out_v[0]->dtype == DType::u8)
            static_cast<uint8_t*>(io.out[0])[at] = uint8_t(q);
          else
            static_cast<int8_t*>(io.out[0])[at] = int8_t(q);
        }
      }
  }
}

}  // namespace pyrt
