// Quantization ops of the executor, following DESIGN.md's rules exactly (reference.py).
#pragma once
#include "../../runtime/program.h"

namespace pyrt {

// Every ISA path and thread count gives the same bits. avx2: the CPU may run AVX2.
void quantize_op(const Step& s, const StepIO& io, const RunContext& ctx);
void dequantize_op(const Step& s, const StepIO& io, bool avx2);
void dynamic_quantize_op(const Step& s, const StepIO& io);
// Quantized Add with broadcasting (QLinearAdd, DQ -> Add -> Q).
void qadd_op(const Step& s, const StepIO& io, const RunContext& ctx);
// MatMulInteger / QLinearMatMul with any operand a runtime tensor, batched.
void matmul_int_op(const Step& s, const StepIO& io);

}  // namespace pyrt
