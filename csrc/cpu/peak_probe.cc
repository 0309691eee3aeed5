// Measures this CPU's peak for the instruction chains the kernels are built from, so the
// benchmarks can state "% of peak" from a figure taken on the same machine in the same
// run. The loops are inline assembly: a compiler would merge identical chains, hoist
// loop-invariant products or spill accumulators, and the probe must measure the core, not
// the compiler. Each loop keeps 12 independent accumulators, enough to hide latency.
#include "peak_probe.h"

#include <algorithm>
#include <chrono>

#include "pyruntime/errors.h"
#include "pyruntime/isa.h"

namespace pyrt {
namespace {

constexpr long kIters = 20000;

#define PYRT_X12(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)
#define PYRT_STR(x) #x
#define PYRT_XSTR(x) PYRT_STR(x)

// zmm0-11 += u8 zmm14 . s8 zmm15 (64 MACs each).
double vpdpbusd_zmm_ops() {
#define DP(c) "vpdpbusd %%zmm15, %%zmm14, %%zmm" PYRT_XSTR(c) "\n\t"
  long n = kIters;
  __asm__ volatile(
      "vpxord %%zmm14, %%zmm14, %%zmm14\n\tvpxord %%zmm15, %%zmm15, %%zmm15\n\t"
      "1:\n\t" PYRT_X12(DP) "dec %0\n\tjnz 1b\n\tvzeroupper"
      : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm14", "xmm15", "cc");
#undef DP
  return double(kIters) * 12 * 64 * 2;
}

// The AVX2 quad chain: t = maddubs(u8, s8); t = madd(t, ones); acc += t (32 MACs each).
// Temporaries ymm0-5 (each reused twice), accumulators ymm6-11.
double vpmaddubsw_ymm_ops() {
#define MB(c) "vpmaddubsw %%ymm15, %%ymm14, %%ymm" PYRT_XSTR(c) "\n\t" \
              "vpmaddwd %%ymm13, %%ymm" PYRT_XSTR(c) ", %%ymm" PYRT_XSTR(c) "\n\t"
#define ADD(c, a) "vpaddd %%ymm" PYRT_XSTR(c) ", %%ymm" PYRT_XSTR(a) ", %%ymm" PYRT_XSTR(a) "\n\t"
#define HALF MB(0) MB(1) MB(2) MB(3) MB(4) MB(5) ADD(0, 6) ADD(1, 7) ADD(2, 8) ADD(3, 9) ADD(4, 10) ADD(5, 11)
  long n = kIters;
  __asm__ volatile(
      "vpxor %%ymm14, %%ymm14, %%ymm14\n\tvpxor %%ymm15, %%ymm15, %%ymm15\n\tvpxor %%ymm13, %%ymm13, %%ymm13\n\t"
      "1:\n\t" HALF HALF "dec %0\n\tjnz 1b\n\tvzeroupper"
      : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm13", "xmm14", "xmm15", "cc");
#undef HALF
#undef MB
  return double(kIters) * 12 * 32 * 2;
}

// The exact widened chain: t = madd(s16, s16); acc += t (16 MACs each).
double vpmaddwd_ymm_ops() {
#define MW(c) "vpmaddwd %%ymm15, %%ymm14, %%ymm" PYRT_XSTR(c) "\n\t"
#define HALF MW(0) MW(1) MW(2) MW(3) MW(4) MW(5) ADD(0, 6) ADD(1, 7) ADD(2, 8) ADD(3, 9) ADD(4, 10) ADD(5, 11)
  long n = kIters;
  __asm__ volatile(
      "vpxor %%ymm14, %%ymm14, %%ymm14\n\tvpxor %%ymm15, %%ymm15, %%ymm15\n\t"
      "1:\n\t" HALF HALF "dec %0\n\tjnz 1b\n\tvzeroupper"
      : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm14", "xmm15", "cc");
#undef HALF
#undef MW
#undef ADD
  return double(kIters) * 12 * 16 * 2;
}

// ymm0-11 += ymm14 * ymm15 (8 FMAs, 16 flops each).
double fma_ymm_ops() {
#define FM(c) "vfmadd231ps %%ymm15, %%ymm14, %%ymm" PYRT_XSTR(c) "\n\t"
  long n = kIters;
  __asm__ volatile(
      "vxorps %%ymm14, %%ymm14, %%ymm14\n\tvxorps %%ymm15, %%ymm15, %%ymm15\n\t"
      "1:\n\t" PYRT_X12(FM) "dec %0\n\tjnz 1b\n\tvzeroupper"
      : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm14", "xmm15", "cc");
#undef FM
  return double(kIters) * 12 * 8 * 2;
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
