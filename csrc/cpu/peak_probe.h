#pragma once
#include <string>

namespace pyrt {

// Gop/s (2 ops per multiply-add) of one core running `kind` for about `seconds`:
// vpdpbusd_zmm, vpmaddubsw_ymm (with its vpmaddwd + vpaddd), vpmaddwd_ymm (+ vpaddd),
// fma_ymm (GFLOP/s). Throws UnsupportedError when the CPU cannot run it.
double peak_probe(const std::string& kind, double seconds);

}  // namespace pyrt
