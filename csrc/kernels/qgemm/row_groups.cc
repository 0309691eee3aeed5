#include "row_groups.h"

#include <immintrin.h>

#include "pyruntime/qgemm.h"

namespace pyrt {
namespace {

#define PYRT_AVX512_POPCNT __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,popcnt")))
// The search counts bits in its inner loop; without the instruction each count is a
// libgcc call, ten times slower. Where the CPU lacks it the rows keep arrival order.
#define PYRT_POPCNT __attribute__((target("popcnt")))

// The rows still to be placed, word-major: bit j of word w of candidate i (mask[w * pad +
// i]) says that step 64w + j (k = 4j..4j+3) holds a nonzero byte of A'; row[i] is its
// row. A placed row's slot takes the last candidate's, so a scan covers only rows left.
// Slots past `left` up to a multiple of 8 have a zero mask and penalty kTaken, which no
// real cost reaches: the vector scan needs no tail.
constexpr uint64_t kTaken = uint64_t(1) << 40;

struct Candidates {
  uint64_t* mask;
  uint64_t* penalty;
  int32_t* row;
  int pad, words, left;
  uint64_t at(int w, int i) const { return mask[size_t(w) * pad + i]; }
  int scan_end() const { return (left + 7) / 8 * 8; }
  // Removes candidate i; returns its row.
  int take(int i) {
    const int r = row[i], last = --left;
    for (int w = 0; w < words; ++w) {
      mask[size_t(w) * pad + i] = mask[size_t(w) * pad + last];
      mask[size_t(w) * pad + last] = 0;
    }
    row[i] = row[last];
    penalty[last] = kTaken;
    return r;
  }
};

// Rows [r0, r1).
void fill_masks_sse2(const uint8_t* a, ptrdiff_t lda, bool a_signed, int r0, int r1, int K, const Candidates& m) {
  const __m128i flip = _mm_set1_epi8(a_signed ? char(0x80) : 0), zero = _mm_setzero_si128();
  const uint8_t flip1 = a_signed ? 0x80 : 0;
  for (int r = r0; r < r1; ++r) {
    const uint8_t* row = a + r * lda;
    auto zero_quads = [&](int k) {
      return _mm_cmpeq_epi32(_mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k)), flip), zero);
    };
    for (int w = 0; w < m.words; ++w) {
      uint64_t bits = 0;
      int k = w * 256;
      const int end = K < k + 256 ? K : k + 256;
      for (; k + 64 <= end; k += 64) {  // four compares narrowed to a byte each, one movemask
        const __m128i zeros = _mm_packs_epi16(_mm_packs_epi32(zero_quads(k), zero_quads(k + 16)),
                                              _mm_packs_epi32(zero_quads(k + 32), zero_quads(k + 48)));
        bits |= uint64_t(~_mm_movemask_epi8(zeros) & 0xFFFF) << (k / 4 % 64);
      }
      for (; k < end; ++k) bits |= uint64_t((row[k] ^ flip1) != 0) << (k / 4 % 64);
      m.mask[size_t(w) * m.pad + r] = bits;
    }
  }
}

// One vptestmd per 64 bytes; the ragged end is a masked load, its missing bytes zero.
PYRT_AVX512_POPCNT void fill_masks_avx512(const uint8_t* a, ptrdiff_t lda, bool a_signed, int r0, int r1, int K,
                                          const Candidates& m) {
  const __m512i flip = _mm512_set1_epi8(a_signed ? char(0x80) : 0);
  for (int r = r0; r < r1; ++r) {
    const uint8_t* row = a + r * lda;
    for (int w = 0; w < m.words; ++w) {
      uint64_t bits = 0;
      int k = w * 256;
      const int end = K < k + 256 ? K : k + 256;
      for (; k + 64 <= end; k += 64) {
        const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(row + k), flip);
        bits |= uint64_t(_mm512_test_epi32_mask(v, v)) << (k / 4 % 64);
      }
      if (k < end) {
        const __mmask64 real = (__mmask64(1) << (end - k)) - 1;
        const __m512i v = _mm512_maskz_mov_epi8(real, _mm512_xor_si512(_mm512_maskz_loadu_epi8(real, row + k), flip));
        bits |= uint64_t(_mm512_test_epi32_mask(v, v)) << (k / 4 % 64);
      }
      m.mask[size_t(w) * m.pad + r] = bits;
    }
  }
}

// The candidate whose steps add fewest to `tile` (popcount(tile | mask)), the first on ties.
PYRT_POPCNT int best_candidate_scalar(const Candidates& c, const uint64_t* tile) {
  int best = 0;
  uint64_t best_cost = ~uint64_t(0);
  for (int i = 0; i < c.left; ++i) {
    uint64_t cost = 0;
    for (int w = 0; w < c.words; ++w) cost += uint64_t(__builtin_popcountll(tile[w] | c.at(w, i)));
    if (cost < best_cost) best = i, best_cost = cost;
  }
  return best;
}

// The same, eight candidates per vector (vpopcntq): a quarter of the time.
PYRT_AVX512_POPCNT int best_candidate_avx512(const Candidates& c, const uint64_t* tile) {
  __m512i best_cost = _mm512_set1_epi64(-1), best = _mm512_setzero_si512();
  __m512i index = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  for (int i = 0; i < c.scan_end(); i += 8) {
    __m512i cost = _mm512_loadu_si512(c.penalty + i);
    for (int w = 0; w < c.words; ++w)
      cost = _mm512_add_epi64(cost, _mm512_popcnt_epi64(_mm512_or_si512(_mm512_loadu_si512(c.mask + size_t(w) * c.pad + i),
                                                                         _mm512_set1_epi64(int64_t(tile[w])))));
    const __mmask8 lower = _mm512_cmplt_epu64_mask(cost, best_cost);  // strict: each lane keeps its first
    best_cost = _mm512_mask_mov_epi64(best_cost, lower, cost);
    best = _mm512_mask_mov_epi64(best, lower, index);
    index = _mm512_add_epi64(index, _mm512_set1_epi64(8));
  }
  alignas(64) uint64_t lane_cost[8], lane_index[8];
  _mm512_store_si512(lane_cost, best_cost);
  _mm512_store_si512(lane_index, best);
  int lane = 0;
  for (int i = 1; i < 8; ++i)
    if (lane_cost[i] < lane_cost[lane] || (lane_cost[i] == lane_cost[lane] && lane_index[i] < lane_index[lane]))
      lane = i;
  return int(lane_index[lane]);
}

PYRT_POPCNT int64_t popcount(const uint64_t* v, int words) {
  int64_t n = 0;
  for (int w = 0; w < words; ++w) n += __builtin_popcountll(v[w]);
  return n;
}

PYRT_POPCNT bool group_rows(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, int mr, bool vector,
                            int32_t* order) {
  const int steps = (K + 3) / 4, words = (steps + 63) / 64;

  const int pad = (rows + 7) / 8 * 8;
  thread_local AlignedBuffer room;
  const size_t bytes = (size_t(pad) * (words + 1) + words) * 8 + size_t(pad) * 4;
  if (room.size() < bytes) room = AlignedBuffer(bytes);
  auto* base = reinterpret_cast<uint64_t*>(room.data());
  Candidates c{base, base + size_t(pad) * words, reinterpret_cast<int32_t*>(base + size_t(pad) * (words + 1) + words),
               pad, words, rows};
  uint64_t* tile = c.penalty + pad;  // the union of a tile's masks
  for (int i = 0; i < pad; ++i) {
    c.penalty[i] = i < rows ? 0 : kTaken;
    c.row[i] = i;
    for (int w = 0; w < words; ++w) c.mask[size_t(w) * pad + i] = 0;
  }
  auto fill = [&](int r0, int r1) {
    if (vector)
      fill_masks_avx512(a, lda, a_signed, r0, r1, K, c);
    else
      fill_masks_sse2(a, lda, a_signed, r0, r1, K, c);
  };
  // The first tile's rows first: where none of them has a zero step the block is taken for
  // dense, and the rest is not read (a dense GEMM then pays for mr rows' masks).
  fill(0, mr);
  int64_t first_rows_steps = 0;
  for (int w = 0; w < words; ++w)
    for (int r = 0; r < mr; ++r) first_rows_steps += __builtin_popcountll(c.at(w, r));
  if (first_rows_steps == int64_t(mr) * steps) return false;
  fill(mr, rows);

  // Kept steps x rows: each row's own steps bound any grouping from below.
  auto tile_cost = [&](int n) { return popcount(tile, words) * n; };
  int64_t bound = 0, arrival = 0;
  for (int first = 0; first < rows; first += mr) {
    const int n = rows - first < mr ? rows - first : mr;
    for (int w = 0; w < words; ++w) {
      tile[w] = 0;
      for (int r = first; r < first + n; ++r) tile[w] |= c.at(w, r), bound += __builtin_popcountll(c.at(w, r));
    }
    arrival += tile_cost(n);
  }
  // Few zero steps, or arrival order already within 1/32 of the bound: nothing to win.
  if ((int64_t(rows) * steps - bound) * 8 < int64_t(rows) * steps || arrival - arrival / 32 <= bound) return false;

  int64_t grouped = 0;
  for (int placed = 0; placed < rows;) {
    const int first = placed;
    for (int w = 0; w < words; ++w) tile[w] = 0;
    // A tile starts from the row with the fewest steps, then grows by the cheapest row.
    while (placed - first < mr && placed < rows) {
      const int i = vector ? best_candidate_avx512(c, tile) : best_candidate_scalar(c, tile);
      for (int w = 0; w < words; ++w) tile[w] |= c.at(w, i);
      order[placed++] = c.take(i);
    }
    grouped += tile_cost(placed - first);
  }
  return grouped < arrival;
}

}  // namespace

bool group_rows_by_zero_steps(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, int mr,
                              bool use_avx512, int32_t* order) {
  static const bool has_popcnt = __builtin_cpu_supports("popcnt");
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512vpopcntdq");
  if (rows <= mr || K <= 0 || !has_popcnt) return false;
  return group_rows(a, lda, a_signed, rows, K, mr, use_avx512 && has_avx512, order);
}

}  // namespace pyrt
