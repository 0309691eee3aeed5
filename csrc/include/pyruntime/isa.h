// Instruction-set paths, lowest first. The order is the capping order: a cap of `avx2`
// allows `scalar` and `avx2`.
#pragma once
#include <string>
#include <vector>

namespace pyrt {

enum class Isa : int {
  scalar = 0,
  avx2 = 1,
  avx512vnni = 2,
  // The avx512vnni kernels' exact source, compiled against a portable model of the
  // intrinsics: it proves their logic on CPUs that cannot run them. Never auto-selected.
  avx512vnni_emulated = 3,
};
constexpr int kIsaCount = 4;

const char* isa_name(Isa isa);
// Throws InputError naming the known paths when `name` is not one of them.
Isa isa_from_name(const std::string& name);

struct CpuInfo {
  std::string vendor;
  std::string model;
  int cores = 1;                   // CPUs this process may use: affinity and cgroup quota
  std::vector<std::string> flags;  // usable features (CPUID and OS-saved register state)
  std::vector<Isa> available;      // paths this CPU and OS can run, lowest first
};

const CpuInfo& cpu_info();

// The process-wide path: the best available, capped by PYRUNTIME_ISA (read once).
Isa process_isa();

// Resolves a per-call request: empty means the process path. Throws UnsupportedError
// when the CPU lacks the path or it lies above the PYRUNTIME_ISA cap.
Isa resolve_isa(const std::string& requested);

}  // namespace pyrt
