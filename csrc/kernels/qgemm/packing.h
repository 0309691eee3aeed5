// Packing layouts shared by the SIMD paths (plain C++: packing runs once per weight
// matrix and once per A tile, far from the inner loop).
#pragma once
#include <cstddef>
#include <cstdint>

#include <emmintrin.h>

#include "pyruntime/qgemm.h"

namespace pyrt {

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }

// B' as panels of nr columns, [k/4][nr][4] int8: one int32 lane holds 4 consecutive k of
// one column (the vpdpbusd / vpmaddubsw operand). Padding is zero.
void pack_b_quads(const int8_t* b, int K, int N, int nr, PackedPanels& out);
// B' as [k/2][nr][2] int8: sign-extended to int16 on load, one int32 lane then holds 2
// consecutive k (the vpmaddwd operand) while memory holds one byte per weight.
void pack_b_pairs(const int8_t* b, int K, int N, int nr, PackedPanels& out);

// A' tile of mr rows in the quad layout, [k/4][mr][4] u8. Missing rows and k past K are
// zero. (The AVX2 pair layout widens A with its own vector code.)
void pack_a_quads(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, int k_padded,
                  int mr, uint8_t* tile);

// Drops the steps of a packed quad tile (pack_a_quads; a step is Mr quads) that are zero
// in every row: such a step adds nothing to any column, so the kernel skips it and its B
// rows (an image's background runs through many images at once). The kept steps move to
// the front in k order; step_of[i] (room for `slots`) is the step slot i came from.
// Returns how many were kept.
template <int Mr>
int compact_nonzero_steps(uint8_t* tile, int slots, int32_t* step_of) {
  static_assert(Mr % 4 == 0, "a step is a whole number of 16-byte vectors");
  constexpr int kVectors = Mr / 4;
  auto* steps = reinterpret_cast<__m128i*>(tile);
  auto is_zero = [](const __m128i* v) {
    __m128i any = v[0];
    for (int i = 1; i < kVectors; ++i) any = _mm_or_si128(any, v[i]);
    return _mm_movemask_epi8(_mm_cmpeq_epi8(any, _mm_setzero_si128())) == 0xFFFF;
  };
  // Up to the first zero step nothing moves: the common case, and the whole of a dense tile.
  int s = 0;
  for (; s < slots && !is_zero(steps + s * kVectors); ++s) step_of[s] = s;
  int kept = s;
  for (; s < slots; ++s) {
    __m128i v[kVectors];
    for (int i = 0; i < kVectors; ++i) v[i] = _mm_loadu_si128(steps + s * kVectors + i);
    for (int i = 0; i < kVectors; ++i) _mm_storeu_si128(steps + kept * kVectors + i, v[i]);
    step_of[kept] = s;
    kept += !is_zero(v);
  }
  return kept;
}

// The k steps of a GEMV that do any work. A step whose 32-bit A word (a quad, or an int16
// pair) is zero adds nothing to any column, so the kernel skips its B rows: an M = 1 GEMV
// is bound by reading B from L2, and rows with zeros (an image's background, ReLU outputs)
// then read that much less.
struct NonzeroSteps {
  const uint32_t* words;  // the nonzero A words, in k order
  const int32_t* steps;   // the step each came from
  int count;
};
// Thread-local room for the listing of `steps` steps, plus 16 entries of slack in each
// array (a vector store may write past the kept count). Valid until this thread's next call.
struct ListingRoom {
  uint32_t* words;
  int32_t* steps;
};
ListingRoom listing_room(int steps);
// Appends steps [first, steps) of one A row as quads (xor 0x80 first when a_signed; zero
// past K) to room after its `kept` entries, the nonzero ones only; returns the new count.
int append_nonzero_quads(const uint8_t* a, bool a_signed, int K, int first, int steps, ListingRoom room, int kept);
// One row's nonzero quads, all steps listed by append_nonzero_quads.
NonzeroSteps nonzero_quads(const uint8_t* a, bool a_signed, int K, int k_padded);
// Words already laid out one per step (the AVX2 path's row widened to int16 pairs).
NonzeroSteps nonzero_words(const uint32_t* words, int steps);

}  // namespace pyrt
