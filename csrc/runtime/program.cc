#include "program.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "../kernels/fp32/elementwise.h"
#include "../kernels/fp32/sgemm.h"
#include "../kernels/qconv/conv.h"
#include "../kernels/qconv/pool.h"
#include "../kernels/quant/quantize.h"
#include "ops.h"
#include "pyruntime/errors.h"

namespace pyrt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::s32: return 4;
    case DType::s64: return 8;
    default: return 1;
  }
}

int64_t Value::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// A GEMM step's arguments that do not change from call to call.
QgemmArgs qgemm_step_args(const Step& s, DType a_dtype) {
  QgemmArgs args;
  args.a_signed = a_dtype == DType::s8;
  args.M = int(s.ints[0]);
  args.lda = s.qweights->K();
  args.a_zero_point = int32_t(s.ints[1]);
  args.out = OutKind(s.ints[2]);
  args.out_zero_point = int32_t(s.ints[3]);
  args.lo = int32_t(s.ints[4]);
  args.hi = int32_t(s.ints[5]);
  args.bias = s.i32.empty() ? nullptr : s.i32.data();
  const int N = s.qweights->N();
  // A fused Add of a constant row: its N values follow the multipliers in f32.
  const bool add = s.ints.size() >= 10;
  args.multiplier = s.f32.empty() ? nullptr : s.f32.data();
  args.n_multiplier = int(s.f32.size()) - (add ? N : 0);
  if (add) {
    args.add_col = s.f32.data() + args.n_multiplier;
    args.add_in_zp = int32_t(s.ints[6]);
    args.add_out_zp = int32_t(s.ints[7]);
    args.add_lo = int32_t(s.ints[8]);
    args.add_hi = int32_t(s.ints[9]);
    args.add_mult = float(s.floats.at(0));
  }
  args.ldc = N;
  return args;
}

void qgemm_step(const Step& s, const StepIO& io, const RunContext& ctx) {
  QgemmArgs args = qgemm_step_args(s, io.in_v[0]->dtype);
  args.a = io.in[0];
  args.c = io.out[0];
  args.threads = ctx.threads;
  args.isa = ctx.isa;
  qgemm(*s.qweights, args, s.qterms.at(0).get());
}

void sgemm_step(const Step& s, const StepIO& io, const RunContext& ctx) {
  const PackedSgemm& w = *s.fweights;
  sgemm(static_cast<const float*>(io.in[0]), w.K(), int(s.ints[0]), w, s.f32.empty() ? nullptr : s.f32.data(),
        float(s.floats[0]), float(s.floats[1]), static_cast<float*>(io.out[0]), w.N(), ctx.threads, ctx.isa);
}

}  // namespace

void run_step(const Step& s, const StepIO& io, const RunContext& ctx) {
  switch (s.op) {
    case kCopy: return copy_op(s, io);
    case kBinary: return binary_op(s, io);
    case kUnary: return unary_op(s, io);
    case kSoftmax: return softmax_op(s, io);
    case kReduceMean: return reduce_mean_op(s, io);
    case kTranspose: return transpose_op(s, io);
    case kConcat: return concat_op(s, io);
    case kGather: return gather_op(s, io);
    case kSgemm: return sgemm_step(s, io, ctx);
    case kQgemm: return qgemm_step(s, io, ctx);
    case kQuantize: return quantize_op(s, io, ctx);
    case kDequantize: return dequantize_op(s, io, ctx.isa == Isa::avx2 || ctx.isa == Isa::avx512vnni);
    case kDynQuantize: return dynamic_quantize_op(s, io);
    case kMatMulF32: return matmul_f32_op(s, io);
    case kMatMulInt: return matmul_int_op(s, io);
    case kQAdd: return qadd_op(s, io, ctx);
    case kBatchNorm: return batch_norm_op(s, io);
    case kConvF32: return conv_f32_op(s, io, ctx);
    case kConvQ: return conv_q_op(s, io, ctx);
    case kMaxPool: return max_pool_op(s, io, ctx);
    case kAvgPool: return avg_pool_op(s, io);
    case kPoolNd: return pool_nd_op(s, io);
    case kDepthwiseQ: return depthwise_q_op(s, io, ctx);
    case kDepthwiseF32: return depthwise_f32_op(s, io, ctx);
    case kQAvgPool: return qavg_pool_op(s, io, ctx);
  }
  throw UnsupportedError("executor has no kernel for op code " + std::to_string(s.op));
}

void Program::add_step(Step s) {
  // GEMM column terms are constant: computed (and the int32 range checked) at plan time.
  const DType a_dtype = s.inputs.empty() || s.inputs[0] < 0 ? DType::u8 : values_.at(s.inputs[0]).dtype;
  if (s.op == kQgemm) s.qterms = {std::make_shared<QgemmColumnTerms>(*s.qweights, qgemm_step_args(s, a_dtype))};
  if (s.op == kConvQ) s.qterms = conv_q_column_terms(s, a_dtype);
  steps_.push_back(std::move(s));
}

void Program::run(const std::vector<const void*>& ins, const std::vector<void*>& outs, int threads, Isa isa) const {
  // Each thread keeps its own arena: concurrent calls share nothing mutable.
  thread_local AlignedBuffer arena;
  if (arena.size() < arena_bytes_) arena = AlignedBuffer(std::max(arena_bytes_, arena.size() * 2));
  uint8_t* base = arena.data();
  auto resolve = [&](int id) -> void* {
    if (id < 0) return nullptr;
    const Value& v = values_[id];
    switch (v.home) {
      case Home::arena: return base + v.index;
      case Home::constant: return constants_[v.index].get();
      case Home::input: return const_cast<void*>(ins[v.index]);
      case Home::output: return outs[v.index];
    }
    return nullptr;
  };
  const RunContext ctx{threads, isa};
  // PYRUNTIME_PROFILE=1 prints each step's op code and time to stderr (read once).
  static const bool profile = [] {
    const char* e = std::getenv("PYRUNTIME_PROFILE");
    return e && *e && *e != '0';
  }();
  thread_local StepIO io;  // reused: no allocation per call once warm
  for (const Step& s : steps_) {
    io.in.clear();
    io.in_v.clear();
    io.out.clear();
    io.out_v.clear();
    for (int id : s.inputs) {
      io.in.push_back(resolve(id));
      io.in_v.push_back(id < 0 ? nullptr : &values_[id]);
    }
    for (int id : s.outputs) {
      io.out.push_back(resolve(id));
      io.out_v.push_back(&values_[id]);
    }
    if (!profile) {
      run_step(s, io, ctx);
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    run_step(s, io, ctx);
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "pyruntime step op=%d out=%lld elems: %.1f us\n", s.op,
                 static_cast<long long>(io.out_v[0]->elements()), us);
  }
}

}  // namespace pyrt
