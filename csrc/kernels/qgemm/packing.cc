#include "packing.h"

#include <cstring>

namespace pyrt {

namespace {

template <typename T, int KPer>
void pack_b_grouped(const int8_t* b, int K, int N, int nr, PackedPanels& out) {
  const int panels = (N + nr - 1) / nr;
  out.nr = nr;
  out.k_padded = round_up(K, KPer);
  out.panel_bytes = size_t(out.k_padded) * nr * sizeof(T);
  out.data = AlignedBuffer(out.panel_bytes * panels);
  std::memset(out.data.data(), 0, out.data.size());
  for (int p = 0; p < panels; ++p) {
    T* dst = reinterpret_cast<T*>(out.data.data() + p * out.panel_bytes);
    const int cols = N - p * nr < nr ? N - p * nr : nr;
    for (int k = 0; k < K; ++k) {
      const int8_t* src = b + size_t(k) * N + size_t(p) * nr;
      T* row = dst + (k / KPer) * nr * KPer + k % KPer;
      for (int j = 0; j < cols; ++j) row[j * KPer] = T(src[j]);
    }
  }
}

template <typename T, int KPer>
void pack_a_grouped(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, int k_padded,
                    int mr, uint8_t* tile) {
  const uint8_t flip = a_signed ? 0x80 : 0;
  T* dst = reinterpret_cast<T*>(tile);
  std::memset(tile, 0, size_t(k_padded) * mr * sizeof(T));
  for (int r = 0; r < rows; ++r) {
    const uint8_t* src = a + r * lda;
    for (int k = 0; k < K; ++k) dst[(k / KPer) * mr * KPer + r * KPer + k % KPer] = T(uint8_t(src[k] ^ flip));
  }
}

}  // namespace

void pack_b_quads(const int8_t* b, int K, int N, int nr, PackedPanels& out) {
  pack_b_grouped<int8_t, 4>(b, K, N, nr, out);
}
void pack_b_pairs(const int8_t* b, int K, int N, int nr, PackedPanels& out) {
  pack_b_grouped<int8_t, 2>(b, K, N, nr, out);
}
void pack_a_quads(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, int k_padded, int mr,
                  uint8_t* tile) {
  pack_a_grouped<uint8_t, 4>(a, lda, a_signed, rows, K, k_padded, mr, tile);
}
void pack_a_pairs16(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, int k_padded, int mr,
                    uint8_t* tile) {
  pack_a_grouped<int16_t, 2>(a, lda, a_signed, rows, K, k_padded, mr, tile);
}

}  // namespace pyrt
