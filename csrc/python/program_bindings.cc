// Bindings of the executor: building Programs from the Python lowering, and running them.
#include <atomic>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../kernels/fp32/sgemm.h"
#include "../kernels/qconv/conv_window.h"
#include "../runtime/exit_runner.h"
#include "../runtime/program.h"
#include "pyruntime/errors.h"

namespace py = pybind11;
using namespace pyrt;

namespace {

const char* dtype_str(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::u8: return "uint8";
    case DType::s8: return "int8";
    case DType::s32: return "int32";
    case DType::s64: return "int64";
    case DType::boolean: return "bool";
  }
  return "?";
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

int numpy_type_num(DType t) {
  switch (t) {
    case DType::f32: return py::detail::npy_api::NPY_FLOAT_;
    case DType::u8: return py::detail::npy_api::NPY_UBYTE_;
    case DType::s8: return py::detail::npy_api::NPY_BYTE_;
    case DType::s32: return py::detail::npy_api::NPY_INT_;
    case DType::s64: return py::detail::npy_api::NPY_LONGLONG_;
    case DType::boolean: return py::detail::npy_api::NPY_BOOL_;
  }
  return -1;
}

// Whether a numpy dtype is this DType in native byte order (int64 may be numpy's long or
// long long, both 8-byte signed).
bool numpy_is(const py::dtype& dt, DType t) {
  return (dt.num() == numpy_type_num(t) || (t == DType::s64 && dt.kind() == 'i' && dt.itemsize() == 8)) &&
         dt.byteorder() != '>';
}

// Rows answered by each exit of a model's predict (the final head last), counted here
// because a Python lock around the counts would cost a third of the per-call floor.
class ExitCounter {
 public:
  explicit ExitCounter(int exits) : counts_(size_t(std::max(exits, 1))) {}
  void add(size_t exit, int64_t rows) { counts_.at(exit).fetch_add(rows, std::memory_order_relaxed); }
  size_t exits() const { return counts_.size(); }
  std::vector<int64_t> counts() const {
    std::vector<int64_t> r;
    for (const auto& c : counts_) r.push_back(c.load());
    return r;
  }
  void reset() {
    for (auto& c : counts_) c.store(0);
  }

 private:
  std::vector<std::atomic<int64_t>> counts_;
};

// The per-call path: checks each feed against the plan (dtype and exact shape), allocates
// the outputs, then runs every step with the GIL released. A counter, when given, counts
// input 0's rows as answered by the final head.
py::list run_program(const Program& p, const py::list& feeds, int threads, int isa, ExitCounter* counter) {
  const auto& in_ids = p.inputs();
  if (py::len(feeds) != in_ids.size()) throw InputError("expected " + std::to_string(in_ids.size()) + " inputs");
  thread_local std::vector<const void*> ins;
  thread_local std::vector<void*> outs;
  ins.clear();
  outs.clear();
  std::vector<py::array> keep;
  for (size_t i = 0; i < in_ids.size(); ++i) {
    const Value& v = p.value(in_ids[i]);
    py::handle h = feeds[i];
    if (!py::isinstance<py::array>(h))
      throw InputError("input '" + p.input_name(i) + "' must be a numpy array, got " +
                       std::string(py::str(py::type::of(h).attr("__name__"))));
    py::array a = py::reinterpret_borrow<py::array>(h);
    const py::dtype dt = a.dtype();
    if (!numpy_is(dt, v.dtype))
      throw InputError("input '" + p.input_name(i) + "' has dtype " + std::string(py::str(py::repr(dt))) +
                       ", expected " + dtype_str(v.dtype) + " in native byte order (no silent casts: convert it "
                       "with .astype(np." + dtype_str(v.dtype) + "))");
    bool same = size_t(a.ndim()) == v.shape.size();
    for (size_t d = 0; same && d < v.shape.size(); ++d) same = a.shape(d) == v.shape[d];
    if (!same)
      throw InputError("input '" + p.input_name(i) + "' has shape " +
                       shape_str(std::vector<int64_t>(a.shape(), a.shape() + a.ndim())) + ", expected " +
                       shape_str(v.shape));
    if (!(a.flags() & py::array::c_style)) {
      a = py::array::ensure(a, py::array::c_style);
      keep.push_back(a);
    }
    ins.push_back(a.data());
  }
  py::list results(p.outputs().size());
  size_t k = 0;
  for (int id : p.outputs()) {
    const Value& v = p.value(id);
    py::array arr(py::dtype(numpy_type_num(v.dtype)), std::vector<py::ssize_t>(v.shape.begin(), v.shape.end()));
    outs.push_back(arr.mutable_data());
    results[k++] = arr;
  }
  {
    py::gil_scoped_release release;
    p.run(ins, outs, threads, Isa(isa));
  }
  if (counter) {
    const auto& first = p.value(in_ids.at(0));
    counter->add(counter->exits() - 1, first.shape.empty() ? 1 : first.shape[0]);
  }
  return results;
}

// Early exit: x is the model's validated input (checked by Model.predict); rows come back
// in input order with their exit index. The whole segment loop runs without the GIL.
py::tuple run_exits(const ExitRunner& r, const py::array& x, const std::vector<double>& thresholds, int threads,
                    int isa, ExitCounter& counter) {
  py::array xc = py::array::ensure(x, py::array::c_style);
  const int64_t n = xc.ndim() ? xc.shape(0) : 1;
  py::array out(py::dtype(numpy_type_num(r.score_dtype())),
                std::vector<py::ssize_t>{py::ssize_t(n), py::ssize_t(r.classes())});
  py::array_t<int64_t> exit_index(n);
  void* out_data = out.mutable_data();
  int64_t* idx = exit_index.mutable_data();
  const void* xd = xc.data();
  {
    py::gil_scoped_release release;
    r.run(xd, n, thresholds, out_data, idx, threads, Isa(isa));
  }
  if (n == 1) {
    counter.add(size_t(idx[0]), 1);
  } else {
    std::vector<int64_t> hist(counter.exits(), 0);
    for (int64_t i = 0; i < n; ++i) ++hist.at(size_t(idx[i]));
    for (size_t k = 0; k < hist.size(); ++k)
      if (hist[k]) counter.add(k, hist[k]);
  }
  return py::make_tuple(out, exit_index);
}

}  // namespace

void bind_program(py::module_& m) {
  m.def("conv_window_applies", [](const std::vector<int64_t>& ints) { return window_conv_applies(ints); },
        "Whether a conv_q step with these ints runs the direct small-window kernel on AVX2 paths.");
  py::class_<ExitRunner, std::shared_ptr<ExitRunner>>(m, "ExitRunner")
      .def(py::init([](const py::list& segments, std::vector<int64_t> slot_row_bytes, std::vector<int> slot_last_use,
                       int64_t classes, int score_dtype) {
             // segments: (programs by bucket, input slots, output slots, rule: -1 none, 0 margin, 1 max)
             std::vector<ExitSegment> segs;
             for (py::handle h : segments) {
               auto t = h.cast<py::tuple>();
               ExitSegment s;
               for (py::handle p : t[0].cast<py::list>()) s.by_bucket.push_back(p.cast<std::shared_ptr<Program>>());
               s.in_slots = t[1].cast<std::vector<int>>();
               s.out_slots = t[2].cast<std::vector<int>>();
               s.rule = ExitRule(t[3].cast<int>());
               segs.push_back(std::move(s));
             }
             return std::make_shared<ExitRunner>(std::move(segs), std::move(slot_row_bytes), std::move(slot_last_use),
                                                 classes, DType(score_dtype));
           }))
      .def_property_readonly("max_bucket", &ExitRunner::max_bucket)
      .def_static("rule_fires",  // the native rule on each row of a 2-D array (for tests)
                  [](int rule, const py::array& scores, double threshold) {
                    py::array c = py::array::ensure(scores, py::array::c_style);
                    if (c.ndim() != 2) throw InputError("scores must be 2-D");
                    DType dt = DType::f32;
                    bool known = false;
                    for (DType t : {DType::f32, DType::u8, DType::s8, DType::s32, DType::s64})
                      if (numpy_is(c.dtype(), t)) dt = t, known = true;
                    if (!known) throw InputError("scores dtype must be float32, uint8, int8, int32 or int64");
                    const int64_t rows = c.shape(0), classes = c.shape(1);
                    py::array_t<bool> fired(rows);
                    const auto* base = static_cast<const uint8_t*>(c.data());
                    for (int64_t i = 0; i < rows; ++i)
                      fired.mutable_data()[i] = exit_rule_fires(ExitRule(rule), base + i * classes * dtype_size(dt), dt,
                                                                classes, threshold);
                    return fired;
                  })
      .def("run", &run_exits, py::arg("x"), py::arg("thresholds"), py::arg("threads"), py::arg("isa"),
           py::arg("counter"));

  py::class_<PackedSgemm, std::shared_ptr<PackedSgemm>>(m, "PackedSgemm")
      .def(py::init([](const py::array_t<float, py::array::c_style | py::array::forcecast>& b) {
        if (b.ndim() != 2) throw InputError("PackedSgemm needs a 2-D float32 matrix");
        return std::make_shared<PackedSgemm>(b.data(), int(b.shape(0)), int(b.shape(1)), b.shape(1));
      }))
      .def_property_readonly("K", &PackedSgemm::K)
      .def_property_readonly("N", &PackedSgemm::N);

  py::class_<ExitCounter>(m, "ExitCounter")
      .def(py::init<int>(), py::arg("exits"))
      .def("add", &ExitCounter::add, py::arg("exit"), py::arg("rows"))
      .def("counts", &ExitCounter::counts)
      .def("reset", &ExitCounter::reset);

  py::class_<Program, std::shared_ptr<Program>>(m, "Program")
      .def(py::init<>())
      .def("add_value",
           [](Program& p, int dtype, std::vector<int64_t> shape, int home, int64_t index) {
             Value v;
             v.dtype = DType(dtype);
             v.shape = std::move(shape);
             v.home = Home(home);
             v.index = index;
             return p.add_value(v);
           })
      .def("add_constant",
           [](Program& p, const py::array& a) {
             py::array c = py::array::ensure(a, py::array::c_style);
             const size_t bytes = size_t(c.nbytes());
             auto buf = std::shared_ptr<uint8_t>(new uint8_t[std::max<size_t>(bytes, 8) + 64](),
                                                 std::default_delete<uint8_t[]>());
             std::memcpy(buf.get(), c.data(), bytes);
             return p.add_constant(std::static_pointer_cast<void>(buf));
           })
      .def("add_step",
           [](Program& p, int op, std::vector<int> inputs, std::vector<int> outputs, std::vector<int64_t> ints,
              std::vector<double> floats, std::shared_ptr<PackedWeights> qw, std::shared_ptr<PackedSgemm> fw,
              std::vector<int32_t> i32, std::vector<float> f32, std::vector<std::shared_ptr<PackedWeights>> qgroups) {
             Step s;
             s.op = op;
             s.inputs = std::move(inputs);
             s.outputs = std::move(outputs);
             s.ints = std::move(ints);
             s.floats = std::move(floats);
             s.qweights = std::move(qw);
             s.fweights = std::move(fw);
             s.i32 = std::move(i32);
             s.f32 = std::move(f32);
             s.qgroups = std::move(qgroups);
             p.add_step(std::move(s));
           },
           py::arg("op"), py::arg("inputs"), py::arg("outputs"), py::arg("ints") = std::vector<int64_t>{},
           py::arg("floats") = std::vector<double>{}, py::arg("qweights") = nullptr, py::arg("fweights") = nullptr,
           py::arg("i32") = std::vector<int32_t>{}, py::arg("f32") = std::vector<float>{},
           py::arg("qgroups") = std::vector<std::shared_ptr<PackedWeights>>{})
      .def("set_arena_bytes", &Program::set_arena_bytes)
      .def("set_io", &Program::set_io)
      .def_property_readonly("arena_bytes", &Program::arena_bytes)
      .def_property_readonly("step_count", &Program::step_count)
      .def("output_layouts",  // (numpy dtype name, buffer shape) per output, as run() returns them
           [](const Program& p) {
             py::list r;
             for (int id : p.outputs()) r.append(py::make_tuple(dtype_str(p.value(id).dtype), p.value(id).shape));
             return r;
           })
      // Two entry points rather than an optional counter: pybind11 accepts None for a
      // pointer only in its second, converting pass, which doubles the per-call cost.
      .def("run",
           [](const Program& p, const py::list& feeds, int threads, int isa) {
             return run_program(p, feeds, threads, isa, nullptr);
           },
           py::arg("feeds"), py::arg("threads"), py::arg("isa"))
      .def("run_counted", &run_program, py::arg("feeds"), py::arg("threads"), py::arg("isa"), py::arg("counter"));

}
