// Portable reference path: plain C++, no intrinsics. Panels hold columns contiguously in k
// so each output is one dot product.
#include <cstring>

#include "qgemm_kernels.h"
#include "requant.h"

namespace pyrt {
namespace {

constexpr int kMr = 4;
constexpr int kNr = 8;

void pack_b(const int8_t* b, int K, int N, PackedPanels& out) {
  const int panels = (N + kNr - 1) / kNr;
  out.variant = 0;
  out.nr = kNr;
  out.k_padded = K;
  out.panel_bytes = size_t(K) * kNr;
  out.data = AlignedBuffer(out.panel_bytes * panels);
  std::memset(out.data.data(), 0, out.data.size());
  for (int p = 0; p < panels; ++p) {
    int8_t* dst = reinterpret_cast<int8_t*>(out.data.data() + p * out.panel_bytes);
    for (int j = 0; j < kNr && p * kNr + j < N; ++j)
      for (int k = 0; k < K; ++k) dst[j * K + k] = b[size_t(k) * N + p * kNr + j];
  }
}

size_t a_tile_bytes(const PackedPanels& b) { return size_t(kMr) * b.k_padded; }

void pack_a(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, const PackedPanels&,
            uint8_t* tile) {
  const uint8_t flip = a_signed ? 0x80 : 0;
  std::memset(tile, 0, size_t(kMr) * K);
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < K; ++k) tile[r * K + k] = a[r * lda + k] ^ flip;
}

int32_t dot(const uint8_t* a, uint8_t flip, const int8_t* b, int K) {
  uint32_t sum = 0;
  for (int k = 0; k < K; ++k) sum += uint32_t(int32_t(uint8_t(a[k] ^ flip)) * int32_t(b[k]));
  return int32_t(sum);
}

void tile(const uint8_t* a_tile, const PackedPanels& b, int panel, int rows, int cols, int m0, int n0,
          const Epilogue& ep) {
  const int K = b.k_padded;
  const int8_t* bp = reinterpret_cast<const int8_t*>(b.panel(panel));
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < cols; ++j) {
      const int32_t acc = dot(a_tile + r * K, 0, bp + j * K, K);
      store_one(corrected_acc(acc, m0 + r, n0 + j, ep), m0 + r, n0 + j, ep);
    }
}

void gemv(const uint8_t* a, bool a_signed, int K, int N, const PackedPanels& b, int p0, int p1,
          const Epilogue& ep) {
  const uint8_t flip = a_signed ? 0x80 : 0;
  for (int p = p0; p < p1; ++p) {
    const int8_t* bp = reinterpret_cast<const int8_t*>(b.panel(p));
    for (int j = 0; j < kNr && p * kNr + j < N; ++j) {
      const int n = p * kNr + j;
      store_one(corrected_acc(dot(a, flip, bp + j * K, K), 0, n, ep), 0, n, ep);
    }
  }
}

}  // namespace

QgemmKernels qgemm_kernels_scalar() { return QgemmKernels{kMr, kNr, pack_b, a_tile_bytes, pack_a, tile, gemv}; }

}  // namespace pyrt
