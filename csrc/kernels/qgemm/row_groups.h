// Which rows of A share a micro-tile. A tile skips the k steps that are zero in all its
// rows (compact_nonzero_steps), and rows in arrival order rarely agree on many: a batch of
// images has its background in different places. Grouping rows that do agree makes more
// steps skippable (Fashion-MNIST, 64 images, 12-row tiles: 96% of the steps kept in
// arrival order, 80% grouped).
#pragma once
#include <cstddef>
#include <cstdint>

namespace pyrt {

// Fills order[0, rows) with a permutation of the rows of A (rows x K, row stride lda, A'
// = a ^ 0x80 when a_signed), consecutive runs of mr rows forming the tiles, chosen
// greedily: each tile starts from the row with the fewest nonzero steps left, then takes
// the row that adds the fewest steps to the tile's union. Returns false (order then holds
// nothing) where that keeps no fewer steps than arrival order, or where the rows have too
// few zero steps to be worth the search (a block whose first mr rows have none is taken
// for dense without reading the rest). use_avx512: search with AVX-512 (vpopcntq) where
// the CPU has it; otherwise, and for the emulated VNNI path, so that its tests cover them,
// SSE2 masks and a scalar search, which choose the same rows.
bool group_rows_by_zero_steps(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K, int mr,
                              bool use_avx512, int32_t* order);

}  // namespace pyrt
