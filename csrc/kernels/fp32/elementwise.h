// Element-wise, normalisation and reduction kernels of the executor. Shapes arrive
// pre-digested by the lowering (broadcast strides, outer/axis/inner splits).
#pragma once
#include <cstdint>

#include "../../runtime/program.h"

namespace pyrt {

void binary_op(const Step& s, const StepIO& io);
void unary_op(const Step& s, const StepIO& io);
void softmax_op(const Step& s, const StepIO& io);
void reduce_mean_op(const Step& s, const StepIO& io);
void batch_norm_op(const Step& s, const StepIO& io);

void copy_op(const Step& s, const StepIO& io);
void transpose_op(const Step& s, const StepIO& io);
void concat_op(const Step& s, const StepIO& io);
void gather_op(const Step& s, const StepIO& io);
void matmul_f32_op(const Step& s, const StepIO& io);

}  // namespace pyrt
