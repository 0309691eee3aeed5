// Packing layouts shared by the SIMD paths (plain C++: packing runs once per weight
// matrix and once per A tile, far from the inner loop).
#pragma once
#include <cstddef>
#include <cstdint>

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

}  // namespace pyrt
