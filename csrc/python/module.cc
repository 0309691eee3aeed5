// pybind11 bindings: argument unpacking and error mapping only. Validation that needs
// Python types lives in pyruntime/ops.py; the arithmetic lives in the core library.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../cpu/peak_probe.h"
#include "../runtime/thread_pool.h"
#include "pyruntime/errors.h"
#include "pyruntime/isa.h"
#include "pyruntime/qgemm.h"

namespace py = pybind11;
using namespace pyrt;

namespace {

py::handle error_class(const char* name) {
  static py::handle errors = py::module_::import("pyruntime.errors").release();
  return errors.attr(name);
}

// a: 2-D uint8/int8 with unit inner stride (ops.py makes it so).
template <typename T>
py::array run_qgemm(const PackedWeights& w, const py::array& a, int32_t a_zp, const py::object& bias,
                    const py::object& multiplier, int out_kind, int32_t out_zp, int32_t lo, int32_t hi,
                    int threads, int isa) {
  QgemmArgs args;
  args.a = a.data();
  args.a_signed = a.dtype().kind() == 'i';
  args.M = int(a.shape(0));
  args.lda = a.strides(0);
  args.a_zero_point = a_zp;
  py::array_t<int32_t, py::array::c_style> bias_arr;
  if (!bias.is_none()) {
    bias_arr = py::reinterpret_borrow<py::array_t<int32_t, py::array::c_style>>(bias);
    args.bias = bias_arr.data();
  }
  py::array_t<float, py::array::c_style> mult_arr;
  if (!multiplier.is_none()) {
    mult_arr = py::reinterpret_borrow<py::array_t<float, py::array::c_style>>(multiplier);
    args.multiplier = mult_arr.data();
    args.n_multiplier = int(mult_arr.size());
  }
  args.out = OutKind(out_kind);
  args.out_zero_point = out_zp;
  args.lo = lo;
  args.hi = hi;
  args.threads = threads;
  args.isa = Isa(isa);
  py::array_t<T> c({py::ssize_t(args.M), py::ssize_t(w.N())});
  args.c = c.mutable_data();
  args.ldc = w.N();
  {
    py::gil_scoped_release release;
    qgemm(w, args);
  }
  return std::move(c);
}

}  // namespace

void bind_program(py::module_& m);  // program_bindings.cc

PYBIND11_MODULE(_native, m) {
  m.doc() = "pyruntime native core";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const InputError& e) {
      PyErr_SetString(error_class("InputError").ptr(), e.what());
    } catch (const UnsupportedError& e) {
      PyErr_SetString(error_class("UnsupportedError").ptr(), e.what());
    } catch (const ModelError& e) {
      PyErr_SetString(error_class("ModelError").ptr(), e.what());
    } catch (const Error& e) {
      PyErr_SetString(error_class("PyRuntimeError").ptr(), e.what());
    }
  });

  m.def("cpu_info", [] {
    const CpuInfo& info = cpu_info();
    py::list available;
    for (Isa i : info.available) available.append(isa_name(i));
    py::dict d;
    d["isa"] = isa_name(process_isa());
    d["available"] = available;
    d["vendor"] = info.vendor;
    d["model"] = info.model;
    d["cores"] = info.cores;
    d["flags"] = info.flags;
    return d;
  });
  bind_program(m);
  m.def("process_isa", [] { return isa_name(process_isa()); });
  m.def("resolve_isa", [](const std::string& name) { return int(resolve_isa(name)); },
        "ISA name ('' = process path) -> index; raises UnsupportedError when unusable");
  m.def("isa_name", [](int i) { return isa_name(Isa(i)); });
  m.def("max_threads", &max_threads);
  m.def("peak_probe", [](const std::string& kind, double seconds) {
    py::gil_scoped_release release;
    return peak_probe(kind, seconds);
  }, py::arg("kind"), py::arg("seconds") = 0.2);
  m.def("set_spin_microseconds", &set_spin_microseconds);
  m.def("spin_microseconds", &spin_microseconds);
  m.def("default_spin_microseconds", &default_spin_microseconds);

  py::class_<PackedWeights, std::shared_ptr<PackedWeights>>(m, "PackedWeights")
      .def(py::init([](const py::array& b, const py::array_t<int32_t, py::array::c_style>& zp) {
             // b: 2-D uint8/int8 with unit inner stride (ops.py makes it so).
             const bool is_u8 = b.dtype().kind() == 'u';
             return std::make_shared<PackedWeights>(b.data(), is_u8, int(b.shape(0)), int(b.shape(1)),
                                                    b.strides(0), zp.data(), int(zp.size()));
           }),
           py::arg("b"), py::arg("zero_points"))
      .def_property_readonly("K", &PackedWeights::K)
      .def_property_readonly("N", &PackedWeights::N)
      .def_property_readonly("b_is_u8", &PackedWeights::b_is_u8)
      .def_property_readonly("max_abs_weight", &PackedWeights::max_abs_weight)
      .def("layout", [](const PackedWeights& w, int isa) {
        const PackedPanels& p = w.packed(Isa(isa));
        py::dict d;
        d["variant"] = p.variant;
        d["nr"] = p.nr;
        d["k_padded"] = p.k_padded;
        d["bytes"] = p.data.size();
        return d;
      }, "Packs for the ISA (cached) and describes the layout.")
      .def("worst_case", [](const PackedWeights& w, bool a_signed, int32_t a_zp, int64_t max_abs_bias) {
        return qgemm_worst_case(w, a_signed, a_zp, max_abs_bias);
      });

  m.def(
      "qgemm",
      [](const PackedWeights& w, const py::array& a, int32_t a_zp, const py::object& bias,
         const py::object& multiplier, int out_kind, int32_t out_zp, int32_t lo, int32_t hi, int threads,
         int isa) -> py::array {
        switch (OutKind(out_kind)) {
          case OutKind::i32: return run_qgemm<int32_t>(w, a, a_zp, bias, multiplier, out_kind, out_zp, lo, hi, threads, isa);
          case OutKind::f32: return run_qgemm<float>(w, a, a_zp, bias, multiplier, out_kind, out_zp, lo, hi, threads, isa);
          case OutKind::u8: return run_qgemm<uint8_t>(w, a, a_zp, bias, multiplier, out_kind, out_zp, lo, hi, threads, isa);
          case OutKind::s8: return run_qgemm<int8_t>(w, a, a_zp, bias, multiplier, out_kind, out_zp, lo, hi, threads, isa);
        }
        throw InputError("unknown output kind");
      },
      py::arg("packed"), py::arg("a"), py::arg("a_zero_point"), py::arg("bias"), py::arg("multiplier"),
      py::arg("out_kind"), py::arg("out_zero_point"), py::arg("lo"), py::arg("hi"), py::arg("threads"),
      py::arg("isa"));
}
