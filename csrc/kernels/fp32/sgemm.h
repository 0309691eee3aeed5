// fp32 GEMM for the float parts of a model: C = clamp(A x B + bias, lo, hi), B constant
// and packed once. A is read in place (row stride lda), so no per-call packing.
#pragma once
#include <cstddef>
#include <vector>

#include "pyruntime/isa.h"
#include "pyruntime/qgemm.h"

namespace pyrt {

class PackedSgemm {
 public:
  PackedSgemm(const float* b, int K, int N, ptrdiff_t ldb);
  int K() const { return K_; }
  int N() const { return N_; }
  const float* panel(int p) const { return reinterpret_cast<const float*>(panels_.data()) + size_t(p) * K_ * kNr; }
  static constexpr int kNr = 16;

 private:
  int K_, N_;
  AlignedBuffer panels_;  // [N/16][K][16], zero-padded columns
};

void sgemm(const float* a, ptrdiff_t lda, int M, const PackedSgemm& w, const float* bias, float lo, float hi,
           float* c, ptrdiff_t ldc, int threads, Isa isa);

}  // namespace pyrt
