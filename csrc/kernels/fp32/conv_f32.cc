// At batch 1 the threads split the output rows, each preparing its own input (so that part
// runs in parallel too) and running its own GEMMs. AVX-512 reads the windows in place from
// a zero-padded copy of the rows; the other paths im2col chunks of rows small enough to
// stay in L2 between the im2col and the GEMM. Each output is computed by the same sgemm
// tile arithmetic whatever the chunking or thread count, so the bits never depend on them.
#include "conv_f32.h"

#include <algorithm>
#include <vector>

#include "../../runtime/thread_pool.h"
#include "../copy_bytes.h"
#include "pyruntime/qgemm.h"
#include "sgemm_kernels.h"

namespace pyrt {

namespace {

// im2col bytes per chunk: leaves most of a Zen 4 / Skylake-SP 1 MB L2 to the weights.
constexpr int64_t kChunkBytes = 128 << 10;

inline void copy_floats(float* dst, const float* src, int64_t n) {
  copy_bytes(reinterpret_cast<uint8_t*>(dst), reinterpret_cast<const uint8_t*>(src), size_t(n) * sizeof(float));
}

// im2col rows of output pixels [ox0, ox1) of output row oy: columns (ky, kx, channel).
void im2col_span(const float* x, const ConvGeometry& g, int64_t oy, int64_t ox0, int64_t ox1, float* col) {
  // Without x dilation, a window row inside the image is one run.
  const bool runs = g.dw == 1;
  const int64_t C = g.C, run = g.kw * C;
  for (int64_t ox = ox0; ox < ox1; ++ox) {
    const int64_t ix0 = ox * g.sw - g.pl;
    const bool x_inside = ix0 >= 0 && ix0 + (g.kw - 1) * g.dw < g.W;
    for (int64_t ky = 0; ky < g.kh; ++ky, col += run) {
      const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
      if (iy < 0 || iy >= g.H) {
        std::fill(col, col + run, 0.0f);
      } else if (runs && x_inside) {
        copy_floats(col, x + (iy * g.W + ix0) * g.C, run);
      } else {
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          const int64_t ix = ix0 + kx * g.dw;
          if (ix >= 0 && ix < g.W)
            copy_floats(col + kx * C, x + (iy * g.W + ix) * C, C);
          else
            std::fill(col + kx * C, col + (kx + 1) * C, 0.0f);
        }
      }
    }
  }
}

float* scratch(size_t count) {
  thread_local AlignedBuffer buffer;
  if (buffer.size() < count * sizeof(float)) buffer = AlignedBuffer(count * sizeof(float));
  return reinterpret_cast<float*>(buffer.data());
}

}  // namespace

void conv_f32_nhwc(const float* x, const ConvGeometry& g, const PackedSgemm& w, const float* bias, float lo, float hi,
                   float* y, int threads, Isa isa) {
  const int64_t C = g.C, kcols = C * g.kh * g.kw, pixels = g.OH * g.OW;
  const ptrdiff_t ldy = g.M;
  if (pixels == 0) return;
  // A 1x1 stride-1 unpadded conv is a GEMM on the image itself.
  if (g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.OH == g.H && g.OW == g.W) {
    sgemm(x, C, int(pixels), w, bias, lo, hi, y, ldy, threads, isa);
    return;
  }
  const int64_t row_floats = g.OW * kcols;
  const int64_t chunk_rows = std::max<int64_t>(1, kChunkBytes / int64_t(sizeof(float) * row_floats));
  // Same threshold as sgemm: below ~2^17 multiply-adds a thread costs more than it saves.
  const int64_t macs = pixels * kcols * w.N();
  const int par = int(std::max<int64_t>(1, std::min<int64_t>({threads, max_threads(), g.OH, macs >> 17})));
  // AVX-512: no im2col. Each thread copies the input rows its output rows need, zero-padded
  // (a slab about the size of its share of the image), and the GEMM reads every window in
  // place through per-column offsets.
  // A one-row output with threads to spare goes to the column-splitting GEMM instead.
  const bool implicit = isa == Isa::avx512vnni && (g.OH > 1 || threads == 1);
  const int64_t wp = (g.OW - 1) * g.sw + (g.kw - 1) * g.dw + 1;  // padded row width used
  thread_local std::vector<int32_t> koff;
  if (implicit) {
    koff.clear();
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx)
        for (int64_t c = 0; c < C; ++c) koff.push_back(int32_t((ky * g.dh * wp + kx * g.dw) * C + c));
  }
  const int32_t* offsets = koff.data();
  auto implicit_rows = [&](int64_t r0, int64_t r1) {
    const int64_t py0 = r0 * g.sh, py1 = (r1 - 1) * g.sh + (g.kh - 1) * g.dh + 1;  // padded input rows
    float* slab = scratch(size_t((py1 - py0) * wp * C));
    const int64_t copy_w = std::max<int64_t>(0, std::min(g.W, wp - g.pl));  // input columns used
    for (int64_t py = py0; py < py1; ++py) {
      float* dst = slab + (py - py0) * wp * C;
      const int64_t iy = py - g.pt;
      if (iy < 0 || iy >= g.H) {
        std::fill(dst, dst + wp * C, 0.0f);
        continue;
      }
      std::fill(dst, dst + g.pl * C, 0.0f);
      copy_floats(dst + g.pl * C, x + iy * g.W * C, copy_w * C);
      std::fill(dst + (g.pl + copy_w) * C, dst + wp * C, 0.0f);
    }
    for (int64_t oy = r0; oy < r1; ++oy)
      sgemm_f32_offsets_avx512(slab + (oy * g.sh - py0) * wp * C, g.sw * C, offsets, int(g.OW), w, bias, lo, hi,
                               y + oy * g.OW * ldy, ldy);
  };
  auto rows = [&](int64_t r0, int64_t r1, int gemm_threads) {
    if (implicit) return implicit_rows(r0, r1);
    float* col = scratch(size_t(std::min(chunk_rows, r1 - r0) * row_floats));
    for (int64_t oy = r0; oy < r1; oy += chunk_rows) {
      const int64_t oy1 = std::min(r1, oy + chunk_rows);
      for (int64_t r = oy; r < oy1; ++r) im2col_span(x, g, r, 0, g.OW, col + (r - oy) * row_floats);
      sgemm(col, kcols, int((oy1 - oy) * g.OW), w, bias, lo, hi, y + oy * g.OW * ldy, ldy, gemm_threads, isa);
    }
  };
  // One thread's worth of work (or one output row): the GEMM may still split its columns.
  if (par == 1) return rows(0, g.OH, threads);
  parallel_run(par, [&](int tid) { rows(g.OH * tid / par, g.OH * (tid + 1) / par, 1); });
}

}  // namespace pyrt
