#include "packing.h"

#include <emmintrin.h>

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

// Appends step s's word, keeping it only when nonzero: branch-free, since zeros come in
// runs of any length.
inline int keep_nonzero(ListingRoom room, int kept, uint32_t w, int s) {
  room.words[kept] = w;
  room.steps[kept] = s;
  return kept + (w != 0);
}

}  // namespace

ListingRoom listing_room(int steps) {
  thread_local AlignedBuffer storage;
  const size_t entries = size_t(steps) + 16;
  if (storage.size() < entries * 8) storage = AlignedBuffer(entries * 8);
  return ListingRoom{reinterpret_cast<uint32_t*>(storage.data()),
                     reinterpret_cast<int32_t*>(storage.data() + entries * 4)};
}

int append_nonzero_quads(const uint8_t* a, bool a_signed, int K, int first, int steps, ListingRoom room, int kept) {
  const uint32_t flip4 = a_signed ? 0x80808080u : 0u;
  const int full = K / 4;
  for (int s = first; s < steps; ++s) {
    uint32_t w;
    if (s < full) {
      std::memcpy(&w, a + 4 * s, 4);
      w ^= flip4;
    } else {
      uint8_t quad[4] = {0, 0, 0, 0};  // zero past K, where B is zero-padded too
      for (int i = 0; 4 * s + i < K; ++i) quad[i] = a[4 * s + i] ^ uint8_t(flip4);
      std::memcpy(&w, quad, 4);
    }
    kept = keep_nonzero(room, kept, w, s);
  }
  return kept;
}

NonzeroSteps nonzero_quads(const uint8_t* a, bool a_signed, int K, int k_padded) {
  const ListingRoom room = listing_room(k_padded / 4);
  return NonzeroSteps{room.words, room.steps, append_nonzero_quads(a, a_signed, K, 0, k_padded / 4, room, 0)};
}

NonzeroSteps nonzero_words(const uint32_t* words, int steps) {
  const ListingRoom room = listing_room(steps);
  int kept = 0;
  for (int s = 0; s < steps; ++s) kept = keep_nonzero(room, kept, words[s], s);
  return NonzeroSteps{room.words, room.steps, kept};
}

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
  // Four rows by four quads at a time, transposed in registers (SSE2, every x86-64): the
  // quad-by-quad loop was 2-3% of a 64x784x512 GEMM.
  const __m128i flip = _mm_set1_epi32(int32_t(flip4));
  const int full4 = K / 16 * 4;  // quads in whole 16-byte runs
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    const uint8_t* row0 = a + r * lda;
    for (int j = 0; j < full4; j += 4) {
      auto load = [&](int i) {
        return _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row0 + i * lda + 4 * j)), flip);
      };
      const __m128i x0 = load(0), x1 = load(1), x2 = load(2), x3 = load(3);
      const __m128i t0 = _mm_unpacklo_epi32(x0, x1), t1 = _mm_unpacklo_epi32(x2, x3);
      const __m128i t2 = _mm_unpackhi_epi32(x0, x1), t3 = _mm_unpackhi_epi32(x2, x3);
      auto store = [&](int q, __m128i v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + size_t(j + q) * mr + r), v); };
      store(0, _mm_unpacklo_epi64(t0, t1));
      store(1, _mm_unpackhi_epi64(t0, t1));
      store(2, _mm_unpacklo_epi64(t2, t3));
      store(3, _mm_unpackhi_epi64(t2, t3));
    }
    for (int i = 0; i < 4; ++i)
      pack_a_row_quads(a + (r + i) * lda + 4 * full4, flip4, K - 4 * full4, slots - full4, mr,
                       dst + size_t(full4) * mr + r + i);
  }
  for (; r < rows; ++r) pack_a_row_quads(a + r * lda, flip4, K, slots, mr, dst + r);
  for (; r < mr; ++r)
    for (int j = 0; j < slots; ++j) dst[size_t(j) * mr + r] = 0;
}

}  // namespace pyrt
