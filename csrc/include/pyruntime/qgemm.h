// int8 GEMM with a fused requantizing epilogue: C = epilogue((A - a_zp) x (B - b_zp) + bias).
// A is u8 or s8 (M x K, row-major), B is s8 or u8 (K x N, the weights). Accumulation is
// exact int32 on every path; see DESIGN.md "Integer exactness".
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "pyruntime/isa.h"

namespace pyrt {

// Heap block aligned for full-width vector loads.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes);
  uint8_t* data() const { return ptr_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> ptr_;
  size_t size_ = 0;
};

// B packed for one ISA's micro-kernel: panels of `nr` columns, K padded to `k_step`.
struct PackedPanels {
  int variant = 0;  // ISA-specific layout (e.g. AVX2: maddubs-safe quads vs widened pairs)
  int nr = 0;
  int k_padded = 0;
  size_t panel_bytes = 0;
  bool reads_a_in_place = true;  // false where the kernel's A layout needs a packing pass
  AlignedBuffer data;
  const uint8_t* panel(int p) const { return data.data() + size_t(p) * panel_bytes; }
};

// Weights prepared once: shifted to s8 (B' = B xor 0x80 for u8), with per-column sums and
// zero points, and packed lazily per ISA (cached; packing is thread-safe).
class PackedWeights {
 public:
  // b: K x N with row stride ldb (elements); b_zp: 1 or N values in B's own domain.
  PackedWeights(const void* b, bool b_is_u8, int K, int N, ptrdiff_t ldb, const int32_t* b_zp,
                int n_zp);
  int K() const { return K_; }
  int N() const { return N_; }
  bool b_is_u8() const { return b_is_u8_; }
  // Largest |B - b_zp| over the matrix: bounds the accumulator (DESIGN.md).
  int max_abs_weight() const { return max_abs_weight_; }
  bool has_zero_points() const { return has_zero_points_; }
  const int32_t* zero_points() const { return zp_shifted_.data(); }  // in B' domain, N values
  const int32_t* column_sums() const { return col_sums_.data(); }    // sum_k B'[k, n]
  const int8_t* shifted() const { return shifted_.data(); }           // B', K x N row-major
  const PackedPanels& packed(Isa isa) const;

 private:
  int K_, N_;
  bool b_is_u8_;
  int max_abs_weight_ = 0;
  bool has_zero_points_ = false;
  std::vector<int8_t> shifted_;
  std::vector<int32_t> zp_shifted_, col_sums_;
  mutable std::mutex pack_mutex_;
  mutable std::unique_ptr<PackedPanels> packs_[kIsaCount];
};

enum class OutKind : int { i32 = 0, f32 = 1, u8 = 2, s8 = 3 };

struct QgemmArgs {
  const void* a = nullptr;
  bool a_signed = false;
  int M = 0;
  ptrdiff_t lda = 0;  // elements
  int32_t a_zero_point = 0;
  const int32_t* bias = nullptr;   // N values or null
  const float* multiplier = nullptr;  // 1 or N values; unused for i32 output
  int n_multiplier = 0;
  OutKind out = OutKind::i32;
  int32_t out_zero_point = 0;
  int32_t lo = 0, hi = 0;  // clamp, in the output's quantized domain
  void* c = nullptr;
  ptrdiff_t ldc = 0;  // elements
  // Optional, u8/s8 output only: a quantized Add of a constant row fused after the
  // requantization. onnxruntime's QDQ quantizer keeps a MatMul's bias as such an Add; the
  // epilogue computes it exactly as the QAdd op would (qgemm_kernels.h, Epilogue).
  const float* add_col = nullptr;  // N values, f32(bias_q - bias_zp) * bias_mult; null: no Add
  float add_mult = 0;              // the GEMM output's multiplier in the Add
  int32_t add_in_zp = 0, add_out_zp = 0;
  int32_t add_lo = 0, add_hi = 0;  // the Add's clamp, in its output's quantized domain
  int threads = 1;
  Isa isa = Isa::scalar;
};

// The per-column epilogue terms of one (weights, bias, a zero point, a signedness, output
// kind, multiplier) combination: bias and zero-point corrections, zero points, multipliers.
// Where these are constant (an executor step) they are computed once instead of per call.
// Throws UnsupportedError where the accumulator could wrap int32 (qgemm_worst_case).
class QgemmColumnTerms {
 public:
  // The four per-column arrays, each padded to a multiple of 64 columns (zero past N) so
  // kernels may load whole vectors, laid out one after another in `storage_bytes(N)`.
  struct Arrays {
    int32_t* col_corr;
    int32_t* b_zp;
    float* mult;
    float* add_col;  // the fused Add's row (QgemmArgs::add_col), zeros where there is none
  };
  static size_t storage_bytes(int N) { return size_t(padded_columns(N)) * 4 * 4; }
  static Arrays arrays_in(void* storage, int N);
  static void fill(const PackedWeights& w, const QgemmArgs& args, const Arrays& out);

  QgemmColumnTerms(const PackedWeights& w, const QgemmArgs& args);
  Arrays arrays() const { return arrays_in(buf_.data(), n_); }

 private:
  static int padded_columns(int N) { return (N + 63) / 64 * 64; }
  int n_;
  AlignedBuffer buf_;
};

// Runs on the calling thread plus up to args.threads - 1 pool workers. `terms`, when given,
// must have been built from the same weights and epilogue arguments.
void qgemm(const PackedWeights& w, const QgemmArgs& args, const QgemmColumnTerms* terms = nullptr);

// Worst-case |accumulator + bias| for these operands, as DESIGN.md defines it.
int64_t qgemm_worst_case(const PackedWeights& w, bool a_signed, int32_t a_zero_point,
                         int64_t max_abs_bias);

}  // namespace pyrt
