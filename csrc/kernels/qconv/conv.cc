#include "conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../../runtime/thread_pool.h"
#include "../copy_bytes.h"
#include "../fp32/conv_f32.h"
#include "../fp32/sgemm.h"
#include "../qgemm/qgemm_kernels.h"
#include "conv_window.h"
#include "pyruntime/errors.h"
#include "pyruntime/qgemm.h"

namespace pyrt {

ConvGeometry ConvGeometry::from(const std::vector<int64_t>& v) {
  return ConvGeometry{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
}

namespace {

// One image, one group: rows = output pixels, columns = (channel, ky, kx).
template <typename T>
void im2col(const T* x, const ConvGeometry& g, int64_t c0, int64_t cg, T pad, T* col) {
  const int64_t kcols = cg * g.kh * g.kw;
  for (int64_t oy = 0; oy < g.OH; ++oy)
    for (int64_t ox = 0; ox < g.OW; ++ox) {
      T* row = col + (oy * g.OW + ox) * kcols;
      const int64_t iy0 = oy * g.sh - g.pt, ix0 = ox * g.sw - g.pl;
      if (iy0 >= 0 && iy0 + (g.kh - 1) * g.dh < g.H && ix0 >= 0 && ix0 + (g.kw - 1) * g.dw < g.W) {
        // The whole window is inside: no bounds checks.
        for (int64_t c = 0; c < cg; ++c) {
          const T* src = x + (c0 + c) * g.H * g.W + iy0 * g.W + ix0;
          for (int64_t ky = 0; ky < g.kh; ++ky, src += g.dh * g.W)
            for (int64_t kx = 0; kx < g.kw; ++kx) *row++ = src[kx * g.dw];
        }
        continue;
      }
      for (int64_t c = 0; c < cg; ++c) {
        const T* plane = x + (c0 + c) * g.H * g.W;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
            *row++ = (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) ? plane[iy * g.W + ix] : pad;
          }
        }
      }
    }
}

template <typename T>
inline void copy_elems(T* dst, const T* src, int64_t n) {
  copy_bytes(reinterpret_cast<uint8_t*>(dst), reinterpret_cast<const uint8_t*>(src), size_t(n) * sizeof(T));
}

// NHWC input: a row holds, per (ky, kx), the group's cg contiguous channels. With one
// group and no x dilation, a window row that lies inside the image is kw*C contiguous
// elements, copied at once.
// Rows for output pixels [p0, p1) go to col from its start.
template <typename T>
void im2col_nhwc_rows(const T* x, const ConvGeometry& g, int64_t c0, int64_t cg, T pad, int64_t p0, int64_t p1,
                      T* col) {
  const bool runs = cg == g.C && g.dw == 1;
  int64_t oy = p0 / g.OW, ox = p0 % g.OW;  // stepped below: no division per pixel
  for (int64_t p = p0; p < p1; ++p, ox = ox + 1 == g.OW ? (++oy, 0) : ox + 1) {
    T* row = col + (p - p0) * cg * g.kh * g.kw;
    const int64_t ix0 = ox * g.sw - g.pl;
    const bool x_inside = ix0 >= 0 && ix0 + (g.kw - 1) * g.dw < g.W;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
      if (runs && x_inside && iy >= 0 && iy < g.H) {
        copy_elems(row, x + (iy * g.W + ix0) * g.C, g.kw * cg);
        row += g.kw * cg;
        continue;
      }
      for (int64_t kx = 0; kx < g.kw; ++kx, row += cg) {
        const int64_t ix = ix0 + kx * g.dw;
        if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W)
          copy_elems(row, x + (iy * g.W + ix) * g.C + c0, cg);
        else
          std::fill(row, row + cg, pad);
      }
    }
  }
}

template <typename T>
void im2col_nhwc(const T* x, const ConvGeometry& g, int64_t c0, int64_t cg, T pad, T* col) {
  im2col_nhwc_rows(x, g, c0, cg, pad, 0, g.OH * g.OW, col);
}

// [pixels x mg] -> channel-major y[m0 + m][pixel].
template <typename T>
void scatter_channels(const T* tile, int64_t pixels, int64_t mg, T* y_image, int64_t m0) {
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t m = 0; m < mg; ++m) y_image[(m0 + m) * pixels + p] = tile[p * mg + m];
}

// A batch splits by image across threads (each image's GEMMs then run single-threaded, on
// that thread's own scratch); a single image gives its GEMMs every thread.
template <typename Image>
void for_each_image(int64_t N, int threads, Image image) {
  const int par = int(std::max<int64_t>(1, std::min<int64_t>({threads, N, max_threads()})));
  if (N == 1 || par == 1) {
    for (int64_t n = 0; n < N; ++n) image(n, threads);
    return;
  }
  parallel_run(par, [&](int tid) {
    for (int64_t n = N * tid / par; n < N * (tid + 1) / par; ++n) image(n, 1);
  });
}

constexpr int64_t kMinConvMacsPerThread = 1 << 18;

template <typename T>
T* scratch_of(int slot, size_t count) {
  thread_local AlignedBuffer buffers[2];
  AlignedBuffer& b = buffers[slot];
  const size_t bytes = count * sizeof(T);
  if (b.size() < bytes) b = AlignedBuffer(std::max(bytes, b.size() * 2));
  return reinterpret_cast<T*>(b.data());
}

}  // namespace

void conv_f32_op(const Step& s, const StepIO& io, const RunContext& ctx) {
  const ConvGeometry g = ConvGeometry::from(s.ints);
  const int64_t cg = g.C / g.group, mg = g.M / g.group, pixels = g.OH * g.OW, kcols = cg * g.kh * g.kw;
  const float* x = static_cast<const float*>(io.in[0]);
  float* y = static_cast<float*>(io.out[0]);
  const float lo = float(s.floats[0]), hi = float(s.floats[1]);
  // Constant weights arrive packed per group; runtime weights (inputs 1 and 2) are packed
  // here, per call: the general path.
  std::vector<std::shared_ptr<PackedSgemm>> runtime_packs;
  std::vector<float> runtime_bias;
  const float* bias = s.f32.empty() ? nullptr : s.f32.data();
  if (!s.fweights) {
    const float* w = static_cast<const float*>(io.in[1]);  // [M, C/g, kh, kw]
    std::vector<float> wt(size_t(kcols) * mg);
    for (int64_t gi = 0; gi < g.group; ++gi) {
      for (int64_t m = 0; m < mg; ++m)
        for (int64_t k = 0; k < kcols; ++k) wt[k * mg + m] = w[(gi * mg + m) * kcols + k];
      runtime_packs.push_back(std::make_shared<PackedSgemm>(wt.data(), int(kcols), int(mg), mg));
    }
    if (io.in.size() > 2 && io.in[2]) {
      runtime_bias.assign(static_cast<const float*>(io.in[2]), static_cast<const float*>(io.in[2]) + g.M);
      bias = runtime_bias.data();
    }
  }
  const bool in_nhwc = s.ints.size() > 17 && s.ints[16], out_nhwc = s.ints.size() > 17 && s.ints[17];
  // NHWC in and out, one group: kernels/fp32/conv_f32.cc, without an image-sized im2col.
  const bool nhwc = in_nhwc && out_nhwc && s.fweights && g.group == 1;
  auto image = [&](int64_t n, int threads) {
    if (nhwc)
      return conv_f32_nhwc(x + n * g.C * g.H * g.W, g, *s.fweights, bias, lo, hi, y + n * g.M * pixels, threads,
                           ctx.isa);
    float* col = scratch_of<float>(0, size_t(pixels) * kcols);
    float* tile = scratch_of<float>(1, size_t(pixels) * mg);
    const float* xi = x + n * g.C * g.H * g.W;
    float* yi = y + n * g.M * pixels;
    for (int64_t gi = 0; gi < g.group; ++gi) {
      if (in_nhwc)
        im2col_nhwc<float>(xi, g, gi * cg, cg, 0.0f, col);
      else
        im2col<float>(xi, g, gi * cg, cg, 0.0f, col);
      if (s.fweights && g.group > 1) throw UnsupportedError("grouped fp32 conv needs per-group packing");
      const PackedSgemm* wp = s.fweights ? s.fweights.get() : runtime_packs[gi].get();
      const float* b = bias ? bias + gi * mg : nullptr;
      if (out_nhwc) {  // the GEMM writes straight into its channels of the NHWC output
        sgemm(col, kcols, int(pixels), *wp, b, lo, hi, yi + gi * mg, g.M, threads, ctx.isa);
      } else {
        sgemm(col, kcols, int(pixels), *wp, b, lo, hi, tile, mg, threads, ctx.isa);
        scatter_channels<float>(tile, pixels, mg, yi, gi * mg);
      }
    }
  };
  for_each_image(g.N, ctx.threads, image);
}

namespace {

int32_t int_at(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::u8: return static_cast<const uint8_t*>(p)[i];
    case DType::s8: return static_cast<const int8_t*>(p)[i];
    default: return static_cast<const int32_t*>(p)[i];
  }
}

// The general path: weights, zero points or scales are runtime tensors. Builds what the
// constant path gets at load (packed weights, multipliers, bias), for this call only.
struct RuntimeQConv {
  std::vector<std::shared_ptr<PackedWeights>> w;  // one per group
  std::vector<float> mult;
  std::vector<int32_t> bias;
  int32_t a_zp = 0, out_zp = 0, lo = 0, hi = 0;
  OutKind kind = OutKind::i32;
};

RuntimeQConv runtime_qconv(const Step& s, const StepIO& io, const ConvGeometry& g) {
  // mode 1: ConvInteger(x, w, x_zp, w_zp); mode 2: QLinearConv(x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp, B)
  const int mode = int(s.ints[21]);
  const size_t iw = mode == 1 ? 1 : 3, ixz = mode == 1 ? 2 : 2, iwz = mode == 1 ? 3 : 5;
  const auto present = [&](size_t i) { return io.in.size() > i && io.in[i] != nullptr; };
  const int64_t K = (g.C / g.group) * g.kh * g.kw, M = g.M, mg = M / g.group;
  const DType wt = io.in_v[iw]->dtype;
  const uint8_t* w = static_cast<const uint8_t*>(io.in[iw]);
  std::vector<int32_t> wzp(1, 0);
  if (present(iwz)) {
    const int64_t n = io.in_v[iwz]->elements();
    wzp.resize(n);
    for (int64_t i = 0; i < n; ++i) wzp[i] = int_at(io.in[iwz], io.in_v[iwz]->dtype, i);
  }
  RuntimeQConv r;
  std::vector<uint8_t> wkm(size_t(K) * mg);  // K x M/g, transposed from [M/g, K]
  for (int64_t gi = 0; gi < g.group; ++gi) {
    for (int64_t m = 0; m < mg; ++m)
      for (int64_t k = 0; k < K; ++k) wkm[k * mg + m] = w[(gi * mg + m) * K + k];
    const int32_t* zp = wzp.size() == 1 ? wzp.data() : wzp.data() + gi * mg;
    r.w.push_back(std::make_shared<PackedWeights>(wkm.data(), wt == DType::u8, int(K), int(mg), mg, zp,
                                                  wzp.size() == 1 ? 1 : int(mg)));
  }
  r.a_zp = present(ixz) ? int_at(io.in[ixz], io.in_v[ixz]->dtype, 0) : 0;
  if (mode == 1) return r;
  const float sx = *static_cast<const float*>(io.in[1]);
  const float* sw = static_cast<const float*>(io.in[4]);
  const int64_t n_sw = io.in_v[4]->elements();
  const float sy = *static_cast<const float*>(io.in[6]);
  r.mult.resize(M);
  for (int64_t m = 0; m < M; ++m) {
    const float swm = sw[n_sw == 1 ? 0 : m];
    if (!(sx > 0) || !(swm > 0) || !(sy > 0) || !std::isfinite(sx) || !std::isfinite(swm) || !std::isfinite(sy))
      throw InputError("QLinearConv received a scale that is not finite and > 0 at run time");
    r.mult[m] = float(double(sx) * double(swm) / double(sy));
  }
  const DType yt = present(7) ? io.in_v[7]->dtype : DType::u8;
  r.out_zp = present(7) ? int_at(io.in[7], yt, 0) : 0;
  r.kind = yt == DType::u8 ? OutKind::u8 : OutKind::s8;
  r.lo = yt == DType::u8 ? 0 : -128;
  r.hi = yt == DType::u8 ? 255 : 127;
  if (present(8)) r.bias.assign(static_cast<const int32_t*>(io.in[8]), static_cast<const int32_t*>(io.in[8]) + M);
  return r;
}

// Group gi's slice of the bias and the multipliers (one for all, or one per output channel).
void use_group_epilogue(QgemmArgs& args, const std::vector<int32_t>& bias, const std::vector<float>& mult,
                        const ConvGeometry& g, int64_t gi) {
  const int64_t mg = g.M / g.group;
  const bool per_channel = int64_t(mult.size()) == g.M;
  args.bias = bias.empty() ? nullptr : bias.data() + gi * mg;
  args.multiplier = mult.empty() ? nullptr : mult.data() + (per_channel ? gi * mg : 0);
  args.n_multiplier = mult.empty() ? 0 : (per_channel ? int(mg) : 1);
}

// The GEMM epilogue of a conv_q step whose operands are constants (mode 0): a zero point,
// output kind, output zero point and clamp from its ints.
QgemmArgs constant_epilogue_args(const Step& s, DType a_dtype) {
  QgemmArgs args;
  args.a_signed = a_dtype == DType::s8;
  args.a_zero_point = int32_t(s.ints[16]);
  args.out = OutKind(s.ints[17]);
  args.out_zero_point = int32_t(s.ints[18]);
  args.lo = int32_t(s.ints[19]);
  args.hi = int32_t(s.ints[20]);
  return args;
}

}  // namespace

std::vector<std::shared_ptr<const QgemmColumnTerms>> conv_q_column_terms(const Step& s, DType a_dtype) {
  if (s.ints[21] != 0) return {};
  const ConvGeometry g = ConvGeometry::from(s.ints);
  QgemmArgs args = constant_epilogue_args(s, a_dtype);
  std::vector<std::shared_ptr<const QgemmColumnTerms>> terms;
  for (int64_t gi = 0; gi < g.group; ++gi) {
    use_group_epilogue(args, s.i32, s.f32, g, gi);
    terms.push_back(std::make_shared<QgemmColumnTerms>(s.qgroups.empty() ? *s.qweights : *s.qgroups[gi], args));
  }
  return terms;
}

namespace {

// The conv into `out`; pool_h x pool_w > 1 only where a window kernel pools.
void conv_q_into(const Step& s, const StepIO& io, const RunContext& ctx, void* out, int pool_h, int pool_w) {
  const ConvGeometry g = ConvGeometry::from(s.ints);
  const int64_t cg = g.C / g.group, mg = g.M / g.group, pixels = g.OH * g.OW, kcols = cg * g.kh * g.kw;
  RuntimeQConv rt;
  if (s.ints[21] != 0) rt = runtime_qconv(s, io, g);
  const bool general = s.ints[21] != 0;
  const auto& groups = general ? rt.w : s.qgroups;
  QgemmArgs base = constant_epilogue_args(s, io.in_v[0]->dtype);
  if (general) {
    base.a_zero_point = rt.a_zp;
    base.out = rt.kind;
    base.out_zero_point = rt.out_zp;
    base.lo = rt.lo;
    base.hi = rt.hi;
  }
  base.M = int(pixels);
  base.lda = kcols;
  base.isa = ctx.isa;
  const int32_t a_zp = base.a_zero_point;
  const OutKind kind = base.out;
  const bool a_signed = base.a_signed;
  const size_t out_size = kind == OutKind::i32 || kind == OutKind::f32 ? 4 : 1;
  const uint8_t* x = static_cast<const uint8_t*>(io.in[0]);
  uint8_t* y = static_cast<uint8_t*>(out);
  const std::vector<int32_t>& bias = general ? rt.bias : s.i32;
  const std::vector<float>& mult = general ? rt.mult : s.f32;
  const bool in_nhwc = s.ints.size() > 23 && s.ints[22], out_nhwc = s.ints.size() > 23 && s.ints[23];
  auto group_weights = [&](int64_t gi) -> const PackedWeights& { return groups.empty() ? *s.qweights : *groups[gi]; };
  const PackedWeights& w0 = group_weights(0);
  // A first layer's small window skips im2col: it is gathered and widened per pixel.
  const bool has_avx2 = ctx.isa == Isa::avx2 || ctx.isa == Isa::avx512vnni;
  if (has_avx2 && window_conv_applies(s.ints)) {
    WindowConvArgs wa{g, x, a_signed, a_zp, &w0, bias.empty() ? nullptr : bias.data(),
                      mult.data(), int(mult.size()), kind, base.out_zero_point, base.lo, base.hi, y,
                      ctx.threads, pool_h, pool_w};
    if (ctx.isa == Isa::avx512vnni && !wa.w->has_zero_points()) {
      QgemmArgs args = base;
      use_group_epilogue(args, bias, mult, g, 0);
      args.c = y;
      args.ldc = g.M;
      const Epilogue planned = gemm_epilogue(args, s.qterms.at(0)->arrays(), nullptr);
      wa.planned = &planned;
      return conv_q8_window_8x16_avx512vnni(wa);
    }
    return conv_q8_window_6x16_avx2(wa);
  }
  // Constant weights, one group, NHWC in and out, whole quads per window row: the GEMM
  // micro-kernel reads each pixel's window straight from the padded input band, so no
  // im2col copy is made (it was 15% of small-cnn at batch 1).
  const QgemmKernels& kern = qgemm_kernels(ctx.isa);
  if (!general && kern.tile_band && g.group == 1 && g.dw == 1 && (in_nhwc || g.C == 1) && out_nhwc &&
      (g.kw * g.C) % 4 == 0 && !w0.has_zero_points()) {
    const PackedPanels& pb = w0.packed(ctx.isa);
    QgemmArgs args = base;
    use_group_epilogue(args, bias, mult, g, 0);
    args.c = y;
    args.ldc = g.M;
    const Epilogue ep = gemm_epilogue(args, s.qterms.at(0)->arrays(), nullptr);
    // Quad k of a pixel's window: window row k / quads, bytes 4 * (k % quads) of it.
    const int64_t quads = g.kw * g.C / 4;
    const ptrdiff_t row_stride = ptrdiff_t(window_band_stride(g) * g.dh);
    thread_local std::vector<int32_t> quad_offset;
    quad_offset.assign(size_t(pb.k_padded / 4), 0);
    for (int64_t k = 0; k < g.kh * quads; ++k) quad_offset[k] = int32_t((k / quads) * row_stride + 4 * (k % quads));
    const int32_t* offsets = quad_offset.data();
    const WindowConvArgs wa{g, x, a_signed, a_zp, &w0, nullptr, nullptr, 0, kind, 0, 0, 0, y, ctx.threads};
    const ptrdiff_t step = ptrdiff_t(g.sw * g.C);
    const int panels = (int(g.M) + pb.nr - 1) / pb.nr;
    // The row's pixels in tiles of near-equal size: 28 as 10+9+9, not 12+12+4, because a
    // tile of a few rows has too few accumulators to hide vpdpbusd's latency (the 4- and
    // 2-row tiles took 10% of a mid-resnet call for 14% of its MACs).
    const int64_t row_tiles = (g.OW + kern.mr - 1) / kern.mr;
    window_for_each_output_row(wa, a_signed ? 0x80 : 0, [&](int64_t n, int64_t oy, const uint8_t* band, size_t) {
      const int64_t row_base = (n * g.OH + oy) * g.OW;
      for (int64_t t = 0; t < row_tiles; ++t) {
        const int64_t ox0 = g.OW * t / row_tiles;
        const int rows = int(g.OW * (t + 1) / row_tiles - ox0);
        for (int p = 0; p < panels; ++p)
          kern.tile_band(band + ox0 * step, offsets, step, pb, p, rows, std::min(pb.nr, int(g.M) - p * pb.nr),
                         int(row_base + ox0), p * pb.nr, ep);
      }
    });
    return;
  }
  // One image, one group, NHWC in and out, several threads: each thread gathers and
  // multiplies its own band of output pixels, so the gather runs in parallel too.
  const int64_t macs = pixels * kcols * g.M;
  const int pixel_par = int(std::max<int64_t>(1, std::min<int64_t>({ctx.threads, max_threads(), pixels / 16,
                                                                    macs / kMinConvMacsPerThread})));
  if (g.N == 1 && g.group == 1 && in_nhwc && out_nhwc && pixel_par > 1) {
    parallel_run(pixel_par, [&](int tid) {
      const int64_t p0 = pixels * tid / pixel_par, p1 = pixels * (tid + 1) / pixel_par;
      uint8_t* col = scratch_of<uint8_t>(0, size_t(p1 - p0) * kcols);
      im2col_nhwc_rows<uint8_t>(x, g, 0, g.C, uint8_t(a_zp), p0, p1, col);
      QgemmArgs args = base;
      args.a = col;
      args.M = int(p1 - p0);
      args.threads = 1;
      use_group_epilogue(args, bias, mult, g, 0);
      args.c = y + p0 * g.M * out_size;
      args.ldc = g.M;
      qgemm(w0, args, general ? nullptr : s.qterms.at(0).get());
    });
    return;
  }
  // One image at a time; `threads` goes to that image's GEMMs.
  auto image = [&](int64_t n, int threads) {
    uint8_t* col = scratch_of<uint8_t>(0, size_t(pixels) * kcols);
    uint8_t* tile = scratch_of<uint8_t>(1, size_t(pixels) * mg * out_size);
    QgemmArgs args = base;
    args.a = col;
    args.threads = threads;
    const uint8_t* xi = x + n * g.C * g.H * g.W;
    uint8_t* yi = y + n * g.M * pixels * out_size;
    for (int64_t gi = 0; gi < g.group; ++gi) {
      // Group gi: its input channels, its weights, its slice of bias and multipliers.
      if (in_nhwc)
        im2col_nhwc<uint8_t>(xi, g, gi * cg, cg, uint8_t(a_zp), col);
      else
        im2col<uint8_t>(xi, g, gi * cg, cg, uint8_t(a_zp), col);
      use_group_epilogue(args, bias, mult, g, gi);
      args.c = out_nhwc ? yi + gi * mg * out_size : tile;  // NHWC: straight into this group's channels
      args.ldc = out_nhwc ? g.M : mg;
      qgemm(group_weights(gi), args, general ? nullptr : s.qterms.at(gi).get());
      if (out_nhwc) continue;
      if (out_size == 1)
        scatter_channels<uint8_t>(tile, pixels, mg, yi, gi * mg);
      else
        scatter_channels<uint32_t>(reinterpret_cast<uint32_t*>(tile), pixels, mg, reinterpret_cast<uint32_t*>(yi),
                                   gi * mg);
    }
  };
  for_each_image(g.N, ctx.threads, image);
}

}  // namespace

void conv_q_op(const Step& s, const StepIO& io, const RunContext& ctx) {
  // ints: geometry[16], a_zp, out_kind, out_zp, lo, hi, mode (0: constants packed at load;
  // 1, 2: runtime operands, see runtime_qconv), in_nhwc, out_nhwc, then optionally pool_h,
  // pool_w: a MaxPool fused at load (kernel == strides, no pads, u8 or s8 output, positive
  // multipliers), so the output is pooled.
  const int pool_h = s.ints.size() > 25 ? int(s.ints[24]) : 1, pool_w = s.ints.size() > 25 ? int(s.ints[25]) : 1;
  if (pool_h == 1 && pool_w == 1) return conv_q_into(s, io, ctx, io.out[0], 1, 1);
  // The small-window kernels (AVX2 and VNNI) pool their accumulators before the epilogue;
  // elsewhere the conv output goes to a buffer that is then pooled.
  if ((ctx.isa == Isa::avx2 || ctx.isa == Isa::avx512vnni) && window_conv_applies(s.ints) && pool_w <= 6)
    return conv_q_into(s, io, ctx, io.out[0], pool_h, pool_w);
  const ConvGeometry g = ConvGeometry::from(s.ints);
  thread_local AlignedBuffer conv_out;
  const size_t bytes = size_t(g.N * g.OH * g.OW * g.M);
  if (conv_out.size() < bytes) conv_out = AlignedBuffer(bytes);
  conv_q_into(s, io, ctx, conv_out.data(), 1, 1);
  // The MaxPool step it replaced, on the conv's NHWC output (kept per thread: no allocation
  // per call once the vectors have grown).
  thread_local Step pool;
  thread_local Value pool_in;
  thread_local StepIO pool_io;
  pool.ints = {g.N, g.M, g.OH, g.OW, g.M, g.OH / pool_h, g.OW / pool_w, pool_h, pool_w, pool_h, pool_w, 1, 1, 0, 0, 1,
               1};  // geometry, then channels-last
  pool_in.dtype = OutKind(s.ints[17]) == OutKind::s8 ? DType::s8 : DType::u8;
  pool_io.in.assign(1, conv_out.data());
  pool_io.in_v.assign(1, &pool_in);
  pool_io.out.assign(1, io.out[0]);
  pool_io.out_v.assign(1, io.out_v[0]);
  max_pool_op(pool, pool_io, ctx);
}

}  // namespace pyrt
