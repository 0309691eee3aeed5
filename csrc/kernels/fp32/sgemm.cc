#include "sgemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "../../runtime/thread_pool.h"
#include "sgemm_kernels.h"

#define PYRT_AVX2 __attribute__((target("avx2,fma")))

namespace pyrt {

PackedSgemm::PackedSgemm(const float* b, int K, int N, ptrdiff_t ldb)
    : K_(K), N_(N), panels_(size_t((N + kNr - 1) / kNr) * std::max(K, 1) * kNr * sizeof(float)) {
  std::memset(panels_.data(), 0, panels_.size());
  float* dst = reinterpret_cast<float*>(panels_.data());
  for (int p = 0; p * kNr < N; ++p)
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < kNr && p * kNr + j < N; ++j) dst[(size_t(p) * K + k) * kNr + j] = b[k * ldb + p * kNr + j];
}

namespace {

constexpr int kMr = 6;
constexpr int kNr = PackedSgemm::kNr;

void tile_scalar(const float* a, ptrdiff_t lda, int rows, const float* panel, int K, int cols, const float* bias,
                 float lo, float hi, float* c, ptrdiff_t ldc) {
  for (int r = 0; r < rows; ++r) {
    float acc[kNr] = {};
    for (int k = 0; k < K; ++k) {
      const float av = a[r * lda + k];
      for (int j = 0; j < kNr; ++j) acc[j] += av * panel[k * kNr + j];
    }
    for (int j = 0; j < cols; ++j) {
      const float v = acc[j] + (bias ? bias[j] : 0.0f);
      c[r * ldc + j] = v != v ? v : std::min(std::max(v, lo), hi);
    }
  }
}

template <int R>
PYRT_AVX2 void tile_avx2(const float* a, ptrdiff_t lda, const float* panel, int K, int cols, const float* bias,
                         float lo, float hi, float* c, ptrdiff_t ldc) {
  __m256 acc[R][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_load_ps(panel + k * kNr), b1 = _mm256_load_ps(panel + k * kNr + 8);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
      acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
    }
  }
  alignas(32) float bias_pad[kNr] = {};
  if (bias) std::memcpy(bias_pad, bias, cols * sizeof(float));
  const __m256 bb0 = _mm256_load_ps(bias_pad), bb1 = _mm256_load_ps(bias_pad + 8);
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    // maxps/minps return their second operand when one is NaN: the value goes second, so
    // NaN propagates like the scalar path and onnxruntime.
    const __m256 v0 = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_add_ps(acc[r][0], bb0)));
    const __m256 v1 = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_add_ps(acc[r][1], bb1)));
    float* dst = c + r * ldc;
    if (cols == kNr) {
      _mm256_storeu_ps(dst, v0);
      _mm256_storeu_ps(dst + 8, v1);
    } else {
      alignas(32) float tmp[kNr];
      _mm256_store_ps(tmp, v0);
      _mm256_store_ps(tmp + 8, v1);
      std::memcpy(dst, tmp, cols * sizeof(float));
    }
  }
}

void tile(const float* a, ptrdiff_t lda, int rows, const float* panel, int K, int cols, const float* bias, float lo,
          float hi, float* c, ptrdiff_t ldc, bool avx2) {
  if (!avx2) return tile_scalar(a, lda, rows, panel, K, cols, bias, lo, hi, c, ldc);
  switch (rows) {
    case 1: return tile_avx2<1>(a, lda, panel, K, cols, bias, lo, hi, c, ldc);
    case 2: return tile_avx2<2>(a, lda, panel, K, cols, bias, lo, hi, c, ldc);
    case 3: return tile_avx2<3>(a, lda, panel, K, cols, bias, lo, hi, c, ldc);
    case 4: return tile_avx2<4>(a, lda, panel, K, cols, bias, lo, hi, c, ldc);
    case 5: return tile_avx2<5>(a, lda, panel, K, cols, bias, lo, hi, c, ldc);
    default: return tile_avx2<6>(a, lda, panel, K, cols, bias, lo, hi, c, ldc);
  }
}

}  // namespace

void sgemm(const float* a, ptrdiff_t lda, int M, const PackedSgemm& w, const float* bias, float lo, float hi,
           float* c, ptrdiff_t ldc, int threads, Isa isa) {
  const int N = w.N(), K = w.K();
  if (M == 0 || N == 0) return;
  const bool avx512 = isa == Isa::avx512vnni;  // the path implies AVX-512F
  const bool avx2 = isa == Isa::avx2 || avx512;
  const SgemmTileShape shape = avx512 ? sgemm_tile_shape_avx512(M, N) : SgemmTileShape{kMr, 1};
  const int panels = (N + kNr - 1) / kNr;
  const int n_groups = (panels + shape.panels - 1) / shape.panels;
  const int m_tiles = (M + shape.rows - 1) / shape.rows;
  // Static split: column groups x row tiles, enough tasks for every thread.
  // A thread that gets less than ~2^17 multiply-adds costs more to wake than it saves.
  const int64_t macs = int64_t(M) * N * K;
  const int max_par = int(std::max<int64_t>(1, std::min<int64_t>({threads, max_threads(), macs >> 17})));
  const int n_chunks = std::max(1, std::min(n_groups, max_par));
  const int m_chunks = std::max(1, std::min(m_tiles, (max_par + n_chunks - 1) / n_chunks * 4));
  const int tasks = n_chunks * m_chunks;
  const int par = std::max(1, std::min(max_par, tasks));
  parallel_run(par, [&](int tid) {
    for (int t = int(int64_t(tasks) * tid / par); t < int(int64_t(tasks) * (tid + 1) / par); ++t) {
      const int nc = t / m_chunks, mc = t % m_chunks;
      const int p0 = n_groups * nc / n_chunks * shape.panels;
      const int p1 = std::min(panels, n_groups * (nc + 1) / n_chunks * shape.panels);
      const int t0 = m_tiles * mc / m_chunks, t1 = m_tiles * (mc + 1) / m_chunks;
      if (avx512) {
        sgemm_f32_block_avx512(a, lda, t0 * shape.rows, std::min(M, t1 * shape.rows), w, p0, p1, shape, bias, lo, hi,
                               c, ldc);
        continue;
      }
      for (int mt = t0; mt < t1; ++mt) {
        const int m0 = mt * kMr, rows = std::min(kMr, M - m0);
        for (int p = p0; p < p1; ++p) {
          const int n0 = p * kNr;
          tile(a + m0 * lda, lda, rows, w.panel(p), K, std::min(kNr, N - n0), bias ? bias + n0 : nullptr, lo, hi,
               c + m0 * ldc + n0, ldc, avx2);
        }
      }
    }
  });
}

}  // namespace pyrt
