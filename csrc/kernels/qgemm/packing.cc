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

// One A row into 32-bit slots at stride mr (slot j holds k = 4j..4j+3). Slots past K are zero.
void pack_a_row_quads(const uint8_t* src, uint32_t flip4, int K, int slots, int mr, uint32_t* dst) {
  const int full = K / 4;
  for (int j = 0; j < full; ++j) {
    uint32_t v;
    std::memcpy(&v, src + 4 * j, 4);
    dst[size_t(j) * mr] = v ^ flip4;
  }
  for (int j = full; j < slots; ++j) {
    uint8_t tail[4] = {0, 0, 0, 0};
    for (int i = 0; j * 4 + i < K; ++i) tail[i] = src[j * 4 + i] ^ uint8_t(flip4);
    uint32_t v;
    std::memcpy(&v, tail, 4);
    dst[size_t(j) * mr] = v;
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
  const uint32_t flip4 = a_signed ? 0x80808080u : 0u;
  const int slots = k_padded / 4;
  uint32_t* dst = reinterpret_cast<uint32_t*>(tile);
  for (int r = 0; r < rows; ++r) pack_a_row_quads(a + r * lda, flip4, K, slots, mr, dst + r);
  for (int r = rows; r < mr; ++r)
    for (int j = 0; j < slots; ++j) dst[size_t(j) * mr + r] = 0;
}

}  // namespace pyrt
