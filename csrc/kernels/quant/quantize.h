// Quantization ops of the executor, following DESIGN.md's rules exactly (reference.py).
#pragma once
#include "../../runtime/program.h"

namespace pyrt {

// avx2: the CPU may run AVX2 (bit-identical results either way).
void quantize_op(const Step& s, const StepIO& io, bool avx2);
void dequantize_op(const Step& s, const StepIO& io, bool avx2);
void dynamic_quantize_op(const Step& s, const StepIO& io);
// Quantized Add with broadcasting (QLinearAdd, DQ -> Add -> Q).
void qadd_op(const Step& s, const StepIO& io, bool avx2);
// MatMulInteger / QLinearMatMul with any operand a runtime tensor, batched.
void matmul_int_op(const Step& s, const StepIO& io);

}  // namespace pyrt
