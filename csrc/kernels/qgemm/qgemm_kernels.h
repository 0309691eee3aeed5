// The per-ISA micro-kernel contract. Each ISA file fills one QgemmKernels; dispatch.cc
// holds the table. Everything here works on the shifted operands: A' is u8 (s8 input
// xor 0x80) and B' is s8 (u8 weights xor 0x80); zero points were moved with them.
#pragma once
#include <cstddef>
#include <cstdint>

#include "pyruntime/qgemm.h"

namespace pyrt {

// What the micro-kernel applies to each accumulator before writing C:
//   acc += col_corr[n] - row_sums[m] * b_zp[n]   (the row term only when row_sums != null)
// then per `out`: i32 store; f32: f32(acc) * mult[n]; u8/s8: round_half_even(clamp(
// f32(acc) * mult[n], lo_f, hi_f)) + out_zp. col_corr already holds the bias and the
// a-zero-point terms. With add_col (u8/s8 only), that q then goes through a quantized Add
// of a constant row, exactly as the QAdd op computes it:
//   round_half_even(clamp(f32(q - add_in_zp) * add_mult + add_col[n], add_lo_f, add_hi_f)) + add_out_zp
struct Epilogue {
  OutKind out = OutKind::i32;
  const int32_t* col_corr = nullptr;  // N
  const int32_t* row_sums = nullptr;  // M (indexed by absolute row), or null
  const int32_t* b_zp = nullptr;      // N
  const float* mult = nullptr;        // N
  float lo_f = 0, hi_f = 0;           // lo - out_zp, hi - out_zp
  int32_t out_zp = 0;
  void* c = nullptr;
  ptrdiff_t ldc = 0;
  const float* add_col = nullptr;  // N (padded like the other columns), or null: no Add
  float add_mult = 0, add_lo_f = 0, add_hi_f = 0;  // the bounds less add_out_zp
  int32_t add_in_zp = 0, add_out_zp = 0;
  // GEMM row m is C row (and row_sums entry) row_of[m], or m where null: the driver's
  // row grouping (row_groups.h), set only for kernels with skips_zero_steps.
  const int32_t* row_of = nullptr;
};

struct QgemmKernels {
  int mr = 1;  // rows per micro-tile
  int nr = 1;  // columns per panel
  // Packs B' (K x N, row-major, ldb = N) into panels.
  void (*pack_b)(const int8_t* b_shifted, int K, int N, PackedPanels& out) = nullptr;
  // Bytes of one packed A tile (mr rows) for this packing.
  size_t (*a_tile_bytes)(const PackedPanels& b) = nullptr;
  // Packs `rows` (<= mr) rows of A into one tile, converting s8 to A' on the way.
  void (*pack_a)(const uint8_t* a, ptrdiff_t lda, bool a_signed, int rows, int K,
                 const PackedPanels& b, uint8_t* tile) = nullptr;
  // One micro-tile: rows x (panel columns, clipped to `cols`), rows m0.., columns n0...
  void (*tile)(const uint8_t* a_tile, const PackedPanels& b, int panel, int rows, int cols,
               int m0, int n0, const Epilogue& ep) = nullptr;
  // One row of A read in place (no packing) against panels [p0, p1).
  void (*gemv)(const uint8_t* a, bool a_signed, int K, int N, const PackedPanels& b, int p0, int p1,
               const Epilogue& ep) = nullptr;
  // Optional: one micro-tile reading `rows` rows of A in place (stride lda), for GEMMs with
  // too few columns to repay packing A. Null where the ISA has none.
  void (*tile_inplace)(const uint8_t* a, ptrdiff_t lda, bool a_signed, int K, const PackedPanels& b, int panel,
                       int rows, int cols, int m0, int n0, const Epilogue& ep) = nullptr;
  // The most panels for which tile_inplace beats packing A (measured per family).
  int inplace_max_panels = 0;
  // Optional: a micro-tile of a direct convolution. Row r of A (output pixel r of a run
  // along one output row) has its k-th quad at band + quad_offset[k] + r * step: the
  // window rows of a zero-point-padded NHWC band, already in the A' domain, so no im2col
  // copy is made. quad_offset covers k_padded / 4 quads (B is zero past K, so the padding
  // quads may point anywhere readable). Null where the ISA has none.
  void (*tile_band)(const uint8_t* band, const int32_t* quad_offset, ptrdiff_t step, const PackedPanels& b,
                    int panel, int rows, int cols, int m0, int n0, const Epilogue& ep) = nullptr;
  // Whether pack_a drops the k steps that are zero in all the tile's rows, so that the
  // driver gains by grouping rows that share zero steps (its epilogue honours row_of).
  bool skips_zero_steps = false;
};

// The epilogue of a GEMM with these arguments and column terms (row_sums: per-row sums of
// A', needed only where the weights have zero points).
Epilogue gemm_epilogue(const QgemmArgs& args, const QgemmColumnTerms::Arrays& terms, const int32_t* row_sums);

const QgemmKernels& qgemm_kernels(Isa isa);

// Filled by each ISA's file.
QgemmKernels qgemm_kernels_scalar();
QgemmKernels qgemm_kernels_avx2();
QgemmKernels qgemm_kernels_avx512vnni();
QgemmKernels qgemm_kernels_avx512vnni_emulated();

}  // namespace pyrt
