// Step op codes shared by the lowering (pyruntime/onnx_import/lower.py keeps the same
// numbers in OPCODES) and the executor. Each comment lists the step's ints / floats.
#pragma once

namespace pyrt {

enum OpCode : int {
  kCopy = 0,           // reshape-like: output bytes = input bytes
  kBinary = 1,         // ints: op(0 add, 1 sub, 2 mul, 3 div), rank R, out_shape[R], a_strides[R], b_strides[R]
  kUnary = 2,          // ints: op(0 relu, 1 clip, 2 sigmoid, 3 tanh); floats: lo, hi (clip)
  kSoftmax = 3,        // ints: outer, axis_len, inner
  kReduceMean = 4,     // ints: outer, reduce_len, inner
  kTranspose = 5,      // ints: rank R, in_shape[R], perm[R]
  kConcat = 6,         // ints: outer, then per input its inner byte count
  kGather = 7,         // ints: outer, axis_len, inner_bytes, n_indices
  kSgemm = 8,          // fweights; ints: M; floats: lo, hi; f32: bias (N or empty)
  kQgemm = 9,          // qweights; ints: M, a_zp, out_kind, out_zp, lo, hi[, add_in_zp, add_out_zp, add_lo,
                       // add_hi]; f32: multiplier (1 or N)[, the fused Add's N-value row]; floats: [add_mult];
                       // i32: bias
  kQuantize = 10,      // inputs x, scale, zp?; ints: outer, axis_len, inner, per_axis, out dtype
  kDequantize = 11,    // inputs x, scale, zp?; ints: outer, axis_len, inner, per_axis
  kDynQuantize = 12,   // x -> y (u8), scale, zero point
  kMatMulF32 = 13,     // general batched fp32: ints: batches, M, K, N, then (a_off, b_off) per batch
  kMatMulInt = 14,     // general batched int8: inputs a, b, a_zp?, b_zp? [, a_scale, b_scale, y_scale, y_zp]
                       // ints: batches, M, K, N, requant(0/1), then (a_off, b_off) per batch
  kQAdd = 15,          // quantized Add: ints: rank R, out_shape[R], a_strides[R], b_strides[R], a_zp, b_zp, y_zp
                       // [, lo, hi] (a fused Relu)
                       // floats: m_a = s_a / s_y, m_b = s_b / s_y (rounded to f32 by the lowering)
  kBatchNorm = 16,
  kConvF32 = 17,       // inputs x[, w, b when not packed]; ints: ConvGeometry(16); floats: lo, hi; f32: bias
  kConvQ = 18,         // qweights; ints: ConvGeometry(16), a_zp, out_kind, out_zp, lo, hi; f32 mult; i32 bias
  kMaxPool = 19,       // ints: ConvGeometry(16)
  kAvgPool = 20,       // ints: ConvGeometry(16), count_include_pad, pad_bottom, pad_right
  kPoolNd = 21,        // ints: see PoolNd in kernels/qconv/conv.cc
  kDepthwiseQ = 22,    // see depthwise_q_op in kernels/qconv/conv.h
  kDepthwiseF32 = 23,     // inputs x, scale, bias, mean, var; ints: N, C, inner; floats: epsilon
  kQAvgPool = 24,      // see qavg_pool_op in kernels/qconv/pool.h
};

}  // namespace pyrt
