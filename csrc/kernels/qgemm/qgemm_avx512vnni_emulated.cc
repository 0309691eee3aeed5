// The avx512vnni kernels' own source over a portable model of the intrinsics: see the
// body's header comment.
#include <cstring>

#include "packing.h"
#include "qgemm_kernels.h"

#define PYRT_AVX512

namespace pyrt {
namespace {
#include "emulated_avx512.h"
inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) { return _mm512_dpbusd_epi32(acc, a, b); }
#include "epilogue_avx512_body.h"
#include "qgemm_avx512vnni_body.h"
}  // namespace

QgemmKernels qgemm_kernels_avx512vnni_emulated() { return kernels(); }

}  // namespace pyrt
