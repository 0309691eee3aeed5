// A Program is one model lowered for one set of input shapes: every value has a fixed
// dtype, shape and home (arena offset, constant, graph input or graph output), and the
// steps run in order in one native call. Programs are immutable once built, so any number
// of threads may run one at the same time; each call uses its thread's own arena.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pyruntime/isa.h"
#include "pyruntime/qgemm.h"

namespace pyrt {

enum class DType : int { f32 = 0, u8 = 1, s8 = 2, s32 = 3, s64 = 4, boolean = 5 };
size_t dtype_size(DType t);

enum class Home : int { arena = 0, constant = 1, input = 2, output = 3 };

struct Value {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  Home home = Home::arena;
  int64_t index = 0;  // arena byte offset, or input / output position, or constant slot
  int64_t elements() const;
};

class PackedSgemm;  // fp32 weights packed for the sgemm kernels (kernels/fp32/sgemm.h)

struct Step {
  int op = 0;                   // an OpCode (ops.h)
  std::vector<int> inputs;      // value ids; -1 = absent optional input
  std::vector<int> outputs;
  std::vector<int64_t> ints;    // op-specific integers
  std::vector<double> floats;   // op-specific reals
  std::shared_ptr<PackedWeights> qweights;
  std::vector<std::shared_ptr<PackedWeights>> qgroups;  // grouped int8 convolution: one per group
  std::shared_ptr<PackedSgemm> fweights;
  std::vector<int32_t> i32;     // e.g. int32 bias
  std::vector<float> f32;       // e.g. per-channel multipliers, fp32 bias
  // Epilogue terms built once at plan time: an int8 GEMM's, or a constant int8 conv's per group.
  std::vector<std::shared_ptr<const QgemmColumnTerms>> qterms;
};

// Pointers and shapes of one step's operands for one call.
struct StepIO {
  std::vector<const void*> in;
  std::vector<void*> out;
  std::vector<const Value*> in_v, out_v;
};

class Program {
 public:
  int add_value(const Value& v) {
    values_.push_back(v);
    return int(values_.size()) - 1;
  }
  int add_constant(std::shared_ptr<void> data) {
    constants_.push_back(std::move(data));
    return int(constants_.size()) - 1;
  }
  void add_step(Step s);
  void set_arena_bytes(size_t b) { arena_bytes_ = b; }
  void set_io(std::vector<int> inputs, std::vector<int> outputs, std::vector<std::string> input_names) {
    inputs_ = std::move(inputs);
    outputs_ = std::move(outputs);
    input_names_ = std::move(input_names);
  }
  const std::string& input_name(size_t i) const { return input_names_[i]; }
  const Value& value(int id) const { return values_[id]; }
  const std::vector<int>& inputs() const { return inputs_; }
  const std::vector<int>& outputs() const { return outputs_; }
  size_t arena_bytes() const { return arena_bytes_; }
  size_t step_count() const { return steps_.size(); }

  // ins: one pointer per graph input (in inputs() order); outs: one per graph output.
  void run(const std::vector<const void*>& ins, const std::vector<void*>& outs, int threads, Isa isa) const;

 private:
  std::vector<Value> values_;
  std::vector<std::shared_ptr<void>> constants_;
  std::vector<Step> steps_;
  std::vector<int> inputs_, outputs_;
  std::vector<std::string> input_names_;  // for error messages
  size_t arena_bytes_ = 0;
};

struct RunContext {
  int threads;
  Isa isa;
};

// Every op kernel: reads io.in, writes io.out.
void run_step(const Step& s, const StepIO& io, const RunContext& ctx);

}  // namespace pyrt
