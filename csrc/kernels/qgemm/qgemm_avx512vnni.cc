#include <cstring>

#include "packing.h"
#include "qgemm_kernels.h"
#include "vnni_real.h"

namespace pyrt {
namespace {
#include "epilogue_avx512_body.h"
#include "qgemm_avx512vnni_body.h"
}  // namespace

QgemmKernels qgemm_kernels_avx512vnni() { return kernels(); }

}  // namespace pyrt
