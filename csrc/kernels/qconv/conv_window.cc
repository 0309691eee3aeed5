// What the direct small-window convolutions share: when they apply, the wrap check, the
// epilogue arrays, and the zero-point-padded band of input rows each output row reads.
#include <algorithm>
#include <cstring>
#include <string>

#include "../../runtime/thread_pool.h"
#include "../qgemm/requant.h"
#include "conv_window.h"
#include "pyruntime/errors.h"

namespace pyrt {

namespace {

constexpr int kMaxK = 32;
constexpr int64_t kMinMacsPerThread = 1 << 16;
constexpr int64_t kMinPadBytesPerThread = 1 << 18;

}  // namespace

bool window_conv_applies(const std::vector<int64_t>& ints) {
  // ints: geometry[16], a_zp, out_kind, out_zp, lo, hi, mode (0: constant weights), in_nhwc, out_nhwc
  const ConvGeometry g = ConvGeometry::from(ints);
  const bool layouts = ints.size() > 23 && ints[21] == 0 && (ints[22] || g.C == 1) && ints[23];
  return layouts && g.group == 1 && g.dw == 1 && g.kw * g.C <= 16 && g.kh * g.kw * g.C <= kMaxK && g.kh <= 8;
}

void window_check_no_wrap(const WindowConvArgs& a) {
  int64_t max_bias = 0;
  if (a.bias)
    for (int64_t n = 0; n < a.g.M; ++n) max_bias = std::max(max_bias, std::abs(int64_t(a.bias[n])));
  const int64_t worst = qgemm_worst_case(*a.w, a.a_signed, a.a_zp, max_bias);
  if (worst > INT32_MAX)
    throw UnsupportedError("int8 convolution with K=" + std::to_string(a.w->K()) + " could reach |acc + bias| = " +
                           std::to_string(worst) + " > 2^31-1 and wrap int32");
}

Epilogue window_epilogue(const WindowConvArgs& a, int32_t a_zp) {
  thread_local AlignedBuffer array_buf;
  const int K = a.w->K(), M = a.w->N(), m_pad = (M + 63) / 64 * 64;
  if (array_buf.size() < size_t(m_pad) * 3 * 4) array_buf = AlignedBuffer(size_t(m_pad) * 3 * 4);
  int32_t* arrays = reinterpret_cast<int32_t*>(array_buf.data());
  std::memset(arrays, 0, size_t(m_pad) * 3 * 4);
  int32_t* corr = arrays;
  float* mult = reinterpret_cast<float*>(arrays + m_pad);
  const int8_t* w = a.w->shifted();  // K x M, in the s8 domain with its zero points
  const int32_t* zp = a.w->zero_points();
  for (int n = 0; n < M; ++n) {
    int32_t sum = 0;
    for (int k = 0; k < K; ++k) sum += int(w[size_t(k) * M + n]) - zp[n];
    corr[n] = wrap_add(a.bias ? a.bias[n] : 0, -wrap_mul(a_zp, sum));
    mult[n] = a.out == OutKind::i32 ? 1.0f : a.mult[a.n_mult == 1 ? 0 : n];
  }
  Epilogue ep;
  ep.out = a.out;
  ep.col_corr = corr;
  ep.row_sums = nullptr;
  ep.b_zp = arrays + 2 * m_pad;
  ep.mult = mult;
  ep.lo_f = float(a.lo - a.out_zp);
  ep.hi_f = float(a.hi - a.out_zp);
  ep.out_zp = a.out_zp;
  ep.c = a.y;
  ep.ldc = M;
  return ep;
}

size_t window_band_stride(const ConvGeometry& g) { return size_t(((g.OW - 1) * g.sw + g.kw) * g.C + 16); }

namespace {

// Padded row r of image n: input row r - pad_top between zero-point padding, xor flip,
// written once (pad, copy and flip in one pass).
void fill_padded_row(const WindowConvArgs& a, int64_t n, int64_t r, uint8_t flip, uint8_t* dst, size_t stride) {
  const ConvGeometry& g = a.g;
  const int64_t C = g.C, padded_w = (g.OW - 1) * g.sw + g.kw;
  const uint8_t pad = uint8_t(a.a_zp) ^ flip;
  const int64_t iy = r - g.pt;
  const int64_t ix0 = std::max<int64_t>(0, -g.pl), ix1 = std::min<int64_t>(g.W, padded_w - g.pl);
  if (iy < 0 || iy >= g.H || ix1 <= ix0) {
    std::memset(dst, pad, stride);
    return;
  }
  const size_t begin = size_t((ix0 + g.pl) * C), count = size_t((ix1 - ix0) * C);
  std::memset(dst, pad, begin);
  const uint8_t* src = a.x + ((n * g.H + iy) * g.W + ix0) * C;
  if (flip)
    for (size_t i = 0; i < count; ++i) dst[begin + i] = src[i] ^ flip;
  else
    std::memcpy(dst + begin, src, count);
  std::memset(dst + begin + count, pad, stride - begin - count);
}

}  // namespace

void window_for_each_output_row(const WindowConvArgs& a, uint8_t flip,
                                const std::function<void(int64_t, int64_t, const uint8_t*, size_t)>& row) {
  const ConvGeometry& g = a.g;
  const size_t stride = window_band_stride(g);
  // Each padded input row is prepared once, not once per output row that reads it.
  const int64_t padded_rows = (g.OH - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  const size_t image_bytes = size_t(padded_rows) * stride;
  const int64_t rows_per_image = g.OH / a.pool_h, out_rows = g.N * rows_per_image;
  const int64_t macs = out_rows * a.pool_h * g.OW * g.M * g.kh * g.kw * g.C;
  const int par = int(std::max<int64_t>(1, std::min<int64_t>({a.threads, max_threads(), out_rows,
                                                              macs / kMinMacsPerThread})));
  auto image_rows = [&](const uint8_t* padded_image, int64_t n, int64_t r0, int64_t r1) {
    for (int64_t oy = r0; oy < r1; ++oy) row(n, oy, padded_image + oy * a.pool_h * g.sh * stride, size_t(g.dh) * stride);
  };
  if (g.N % par == 0) {
    // Whole images per thread, each padded into a buffer of that thread just before its
    // rows: the band is then read from cache, where padding the whole batch first wrote
    // the ~3 MB of a mid-resnet layer at batch 64 past the caches and read it back.
    parallel_run(par, [&](int tid) {
      thread_local AlignedBuffer image_buf;
      if (image_buf.size() < image_bytes) image_buf = AlignedBuffer(image_bytes);
      uint8_t* padded = image_buf.data();
      for (int64_t n = g.N * tid / par; n < g.N * (tid + 1) / par; ++n) {
        for (int64_t r = 0; r < padded_rows; ++r) fill_padded_row(a, n, r, flip, padded + r * stride, stride);
        image_rows(padded, n, 0, rows_per_image);
      }
    });
    return;
  }
  // Fewer images than threads (or an uneven split): the batch is padded once, by every
  // thread, and the output rows are split.
  thread_local AlignedBuffer padded_buf;
  const size_t bytes = size_t(g.N) * image_bytes;
  if (padded_buf.size() < bytes) padded_buf = AlignedBuffer(std::max(bytes, padded_buf.size() * 2));
  uint8_t* padded = padded_buf.data();
  const int64_t padded_total = g.N * padded_rows;
  const int pad_par = int(std::max<int64_t>(1, std::min<int64_t>({a.threads, max_threads(), padded_total,
                                                                  int64_t(bytes) / kMinPadBytesPerThread})));
  parallel_run(pad_par, [&](int tid) {
    for (int64_t r = padded_total * tid / pad_par; r < padded_total * (tid + 1) / pad_par; ++r)
      fill_padded_row(a, r / padded_rows, r % padded_rows, flip, padded + r * stride, stride);
  });
  parallel_run(par, [&](int tid) {
    for (int64_t r = out_rows * tid / par; r < out_rows * (tid + 1) / par; ++r) {
      const int64_t n = r / rows_per_image, oy = r % rows_per_image;
      image_rows(padded + n * image_bytes, n, oy, oy + 1);
    }
  });
}

}  // namespace pyrt
