// The one dispatch table: filled once, on first use, from every ISA file's kernels.
#include "../kernels/qgemm/qgemm_kernels.h"

namespace pyrt {

const QgemmKernels& qgemm_kernels(Isa isa) {
  static const QgemmKernels table[kIsaCount] = {
      qgemm_kernels_scalar(),
      qgemm_kernels_avx2(),
      qgemm_kernels_avx512vnni(),
      qgemm_kernels_avx512vnni_emulated(),
  };
  return table[int(isa)];
}

}  // namespace pyrt
