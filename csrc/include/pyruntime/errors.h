// Typed errors of the C++ core. The Python bindings map each to the class of the same
// name in pyruntime.errors, so a caller can tell a bad input from an unsupported case.
#pragma once
#include <stdexcept>
#include <string>

namespace pyrt {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct InputError : Error {
  using Error::Error;
};
struct UnsupportedError : Error {
  using Error::Error;
};
struct ModelError : Error {
  using Error::Error;
};

}  // namespace pyrt
