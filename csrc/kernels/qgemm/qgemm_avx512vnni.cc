#include <immintrin.h>

#include <cstring>

#include "packing.h"
#include "qgemm_kernels.h"

#define PYRT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

namespace pyrt {
namespace {
#include "qgemm_avx512vnni_body.h"
}  // namespace

QgemmKernels qgemm_kernels_avx512vnni() { return kernels(); }

}  // namespace pyrt
