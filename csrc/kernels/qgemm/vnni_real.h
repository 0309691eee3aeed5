// The real AVX-512 VNNI environment for code written against the intrinsics that
// emulated_avx512.h models: the target attribute and vpdpbusd.
#pragma once
#include <immintrin.h>

#define PYRT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

namespace pyrt {

// Through inline asm rather than _mm512_dpbusd_epi32: with the intrinsic, gcc 12 spills
// a 12x32 tile's 24 accumulators to the stack on every k step (half the peak lost).
PYRT_AVX512 inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

}  // namespace pyrt
