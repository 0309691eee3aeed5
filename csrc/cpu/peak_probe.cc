// Measures this CPU's peak for the instruction chains the kernels are built from, so the
// benchmarks can state "% of peak" from a figure taken on the same machine in the same
// run. Each loop keeps 12 independent accumulators (enough to cover latency on current
// x86 cores). Each chain multiplies its own accumulator, so the compiler cannot share one
// product between chains or hoist it out of the loop.
#include "peak_probe.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include "pyruntime/errors.h"
#include "pyruntime/isa.h"

namespace pyrt {
namespace {

constexpr int kChains = 12;
constexpr long kIters = 20000;

template <typename T>
inline void opaque(T& v) {
  __asm__ volatile("" : "+x"(v));
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) double vpdpbusd_zmm_ops() {
  __m512i acc[kChains];
  for (auto& x : acc) x = _mm512_setzero_si512();
  __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(1);
  for (long i = 0; i < kIters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], a, b);
  }
  for (auto& x : acc) opaque(x);
  return double(kIters) * kChains * 64 * 2;
}

__attribute__((target("avx2"))) double vpmaddubsw_ymm_ops() {
  __m256i acc[kChains];
  for (auto& x : acc) x = _mm256_setzero_si256();
  const __m256i b = _mm256_set1_epi8(1), ones = _mm256_set1_epi16(1);
  for (long i = 0; i < kIters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c)
      acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(_mm256_maddubs_epi16(acc[c], b), ones));
  }
  for (auto& x : acc) opaque(x);
  return double(kIters) * kChains * 32 * 2;
}

__attribute__((target("avx2"))) double vpmaddwd_ymm_ops() {
  __m256i acc[kChains];
  for (auto& x : acc) x = _mm256_setzero_si256();
  const __m256i b = _mm256_set1_epi16(1);
  for (long i = 0; i < kIters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(acc[c], b));
  }
  for (auto& x : acc) opaque(x);
  return double(kIters) * kChains * 16 * 2;
}

__attribute__((target("avx2,fma"))) double fma_ymm_ops() {
  __m256 acc[kChains];
  for (auto& x : acc) x = _mm256_setzero_ps();
  __m256 a = _mm256_set1_ps(1e-8f), b = _mm256_set1_ps(1.0f);
  for (long i = 0; i < kIters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(a, b, acc[c]);
  }
  for (auto& x : acc) opaque(x);
  return double(kIters) * kChains * 8 * 2;
}

bool has_flag(const char* f) {
  const auto& flags = cpu_info().flags;
  return std::find(flags.begin(), flags.end(), f) != flags.end();
}

}  // namespace

double peak_probe(const std::string& kind, double seconds) {
  double (*loop)() = nullptr;
  bool ok = false;
  if (kind == "vpdpbusd_zmm") {
    loop = vpdpbusd_zmm_ops;
    ok = has_flag("avx512vnni") && has_flag("avx512bw");
  } else if (kind == "vpmaddubsw_ymm") {
    loop = vpmaddubsw_ymm_ops;
    ok = has_flag("avx2");
  } else if (kind == "vpmaddwd_ymm") {
    loop = vpmaddwd_ymm_ops;
    ok = has_flag("avx2");
  } else if (kind == "fma_ymm") {
    loop = fma_ymm_ops;
    ok = has_flag("avx2") && has_flag("fma");
  } else {
    throw InputError("unknown peak probe '" + kind +
                     "'; expected vpdpbusd_zmm, vpmaddubsw_ymm, vpmaddwd_ymm or fma_ymm");
  }
  if (!ok) throw UnsupportedError("peak probe '" + kind + "' needs instructions this CPU or OS lacks");
  // The best short burst: the machine is shared, and a peak is what the core can do.
  double best = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  do {
    const auto t0 = std::chrono::steady_clock::now();
    const double ops = loop();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, ops / dt / 1e9);
  } while (std::chrono::steady_clock::now() < end);
  return best;
}

}  // namespace pyrt
