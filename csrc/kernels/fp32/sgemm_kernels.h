// Per-ISA fp32 GEMM blocks behind sgemm() (sgemm.cc holds the driver and thread split).
// Every kernel computes each output the same way: one accumulator, k ascending, one FMA
// per k starting from 0, then + bias and the clamp. So the tile shape, the path (AVX2 or
// AVX-512) and the thread split never change a bit of the result.
#pragma once
#include <cstddef>
#include <cstdint>

#include "sgemm.h"

namespace pyrt {

// The AVX-512 tile shape for an M x N problem: `rows` of A by `panels` 16-column panels
// of B. Depends on M and N only, never on the thread count.
struct SgemmTileShape {
  int rows, panels;
};
SgemmTileShape sgemm_tile_shape_avx512(int M, int N);

// Rows [m0, m1) x panels [p0, p1) of C in tiles of `shape` (ragged edges included), rows
// outermost so a row block of A stays in cache while it meets every panel.
void sgemm_f32_block_avx512(const float* a, ptrdiff_t lda, int m0, int m1, const PackedSgemm& w, int p0, int p1,
                            SgemmTileShape shape, const float* bias, float lo, float hi, float* c, ptrdiff_t ldc);

// C[M x N] = A x B with A's element (m, k) at a[m * lda + koff[k]]: a convolution's
// window read straight from the image (an implicit im2col), one thread.
void sgemm_f32_offsets_avx512(const float* a, ptrdiff_t lda, const int32_t* koff, int M, const PackedSgemm& w,
                              const float* bias, float lo, float hi, float* c, ptrdiff_t ldc);

}  // namespace pyrt
