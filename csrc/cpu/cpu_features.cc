// CPU detection: CPUID for what the silicon has, XGETBV for what the OS saves on a context
// switch. A feature counts only when both agree: a hypervisor may expose AVX-512 in CPUID
// while leaving the ZMM state disabled, and running such code would then fault.
#include <cpuid.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

#include "pyruntime/errors.h"
#include "pyruntime/isa.h"

namespace pyrt {
namespace {

struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
  return r;
}

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

bool bit(unsigned v, int i) { return (v >> i) & 1u; }

// cgroup v2 cpu.max ("max 100000" or "150000 100000"), else v1 cfs quota; 0 = no limit.
int cgroup_cpu_limit() {
  auto ceil_ratio = [](double q, double p) { return int(std::ceil(q / p)); };
  std::ifstream v2("/sys/fs/cgroup/cpu.max");
  if (v2) {
    std::string quota;
    double period = 0;
    v2 >> quota >> period;
    if (quota != "max" && period > 0) return std::max(1, ceil_ratio(std::atof(quota.c_str()), period));
    return 0;
  }
  std::ifstream q1("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), p1("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  double q = -1, p = 0;
  if (q1 && p1 && (q1 >> q) && (p1 >> p) && q > 0 && p > 0) return std::max(1, ceil_ratio(q, p));
  return 0;
}

int usable_cores() {
  int n = 0;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
  if (n <= 0) n = int(sysconf(_SC_NPROCESSORS_ONLN));
  int quota = cgroup_cpu_limit();
  if (quota > 0) n = std::min(n, quota);
  return std::max(1, n);
}

std::string trim(std::string s) {
  auto not_space = [](unsigned char ch) { return !std::isspace(ch) && ch != 0; };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

CpuInfo detect() {
  CpuInfo info;
  Regs v = cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &v.b, 4);
  std::memcpy(vendor + 4, &v.d, 4);
  std::memcpy(vendor + 8, &v.c, 4);
  info.vendor = vendor;
  const unsigned max_leaf = v.a;

  if (cpuid(0x80000000).a >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      Regs r = cpuid(0x80000002 + i);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    info.model = trim(brand);
  }
  info.cores = usable_cores();

  Regs l1 = cpuid(1);
  Regs l7 = max_leaf >= 7 ? cpuid(7, 0) : Regs{};
  Regs l71 = (max_leaf >= 7 && l7.a >= 1) ? cpuid(7, 1) : Regs{};
  const bool osxsave = bit(l1.c, 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;            // XMM + YMM state
  const bool os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0;  // opmask + ZMM_Hi256 + Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;      // XTILECFG + XTILEDATA

  auto add = [&](const char* name, bool ok) {
    if (ok) info.flags.emplace_back(name);
  };
  add("sse4_1", bit(l1.c, 19));
  add("sse4_2", bit(l1.c, 20));
  add("popcnt", bit(l1.c, 23));
  add("avx", os_ymm && bit(l1.c, 28));
  add("f16c", os_ymm && bit(l1.c, 29));
  add("fma", os_ymm && bit(l1.c, 12));
  add("bmi1", bit(l7.b, 3));
  add("bmi2", bit(l7.b, 8));
  add("avx2", os_ymm && bit(l7.b, 5));
  add("avx512f", os_zmm && bit(l7.b, 16));
  add("avx512dq", os_zmm && bit(l7.b, 17));
  add("avx512cd", os_zmm && bit(l7.b, 28));
  add("avx512bw", os_zmm && bit(l7.b, 30));
  add("avx512vl", os_zmm && bit(l7.b, 31));
  add("avx512vnni", os_zmm && bit(l7.c, 11));
  add("avx512_bf16", os_zmm && bit(l71.a, 5));
  add("avxvnni", os_ymm && bit(l71.a, 4));
  add("amx_tile", os_amx && bit(l7.d, 24));
  add("amx_int8", os_amx && bit(l7.d, 25));

  auto has = [&](const char* f) {
    return std::find(info.flags.begin(), info.flags.end(), f) != info.flags.end();
  };
  info.available.push_back(Isa::scalar);
  if (has("avx2") && has("fma") && has("f16c") && has("bmi2")) info.available.push_back(Isa::avx2);
  if (has("avx512f") && has("avx512bw") && has("avx512vl") && has("avx512vnni"))
    info.available.push_back(Isa::avx512vnni);
  return info;
}

bool is_available(Isa isa) {
  if (isa == Isa::avx512vnni_emulated) return true;  // portable code
  const auto& av = cpu_info().available;
  return std::find(av.begin(), av.end(), isa) != av.end();
}

std::string available_list() {
  std::string s;
  for (Isa i : cpu_info().available) s += std::string(s.empty() ? "" : ", ") + isa_name(i);
  return s;
}

Isa compute_process_isa() {
  const char* env = std::getenv("PYRUNTIME_ISA");
  if (env == nullptr || *env == 0) return cpu_info().available.back();
  Isa cap = isa_from_name(env);
  if (cap == Isa::avx512vnni_emulated)
    throw InputError("PYRUNTIME_ISA=avx512vnni_emulated: the emulated path is for tests, one call at a "
                     "time (isa=...); as a process cap choose scalar, avx2 or avx512vnni.");
  if (!is_available(cap))
    throw UnsupportedError(std::string("PYRUNTIME_ISA=") + env +
                           " asks for a path this CPU or OS cannot run; available paths: " +
                           available_list() + ". Unset PYRUNTIME_ISA or choose one of those.");
  return cap;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512vnni: return "avx512vnni";
    case Isa::avx512vnni_emulated: return "avx512vnni_emulated";
  }
  return "unknown";
}

Isa isa_from_name(const std::string& name) {
  for (int i = 0; i < kIsaCount; ++i)
    if (name == isa_name(Isa(i))) return Isa(i);
  throw InputError("unknown ISA path '" + name +
                         "'; expected one of: scalar, avx2, avx512vnni (or avx512vnni_emulated "
                         "for the portable model of the VNNI kernels)");
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

Isa process_isa() {
  // Read once: a later change of the environment does not move a running process.
  static const Isa isa = compute_process_isa();
  return isa;
}

Isa resolve_isa(const std::string& requested) {
  const Isa cap = process_isa();
  if (requested.empty()) return cap;
  Isa isa = isa_from_name(requested);
  if (!is_available(isa))
    throw UnsupportedError("ISA path '" + requested + "' is not available on this CPU (" +
                           cpu_info().model + "); available paths: " + available_list() +
                           ". Pass isa=None to use the best one.");
  if (isa != Isa::avx512vnni_emulated && int(isa) > int(cap))
    throw UnsupportedError("ISA path '" + requested + "' lies above the process cap PYRUNTIME_ISA=" +
                           isa_name(cap) + "; ask for " + isa_name(cap) + " or lower.");
  return isa;
}

}  // namespace pyrt
