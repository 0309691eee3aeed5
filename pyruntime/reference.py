"""The normative NumPy reference for every int8 op (DESIGN.md "Integer exactness").

Each function computes in int64 and float32 exactly as the spec states, with no
shortcuts: every native path is compared with these bit for bit. Keep it obvious rather
than fast.
"""
from __future__ import annotations

import numpy as np

_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def dtype_range(dtype) -> tuple[int, int]:
    return _RANGE[np.dtype(dtype)]


def matmul_int(a, b, a_zero_point=0, b_zero_point=0) -> np.ndarray:
    """(A - a_zp) @ (B - b_zp) in int64; b_zero_point may be per column."""
    a64 = np.asarray(a, dtype=np.int64) - np.int64(a_zero_point)
    b64 = np.asarray(b, dtype=np.int64) - np.asarray(b_zero_point, dtype=np.int64).reshape(1, -1)
    return a64 @ b64


def requant_multiplier(a_scale, b_scale, y_scale) -> np.ndarray:
    """m = f32(s_a * s_w[n] / s_y), computed in double and rounded once to float32."""
    return (np.float64(a_scale) * np.asarray(b_scale, dtype=np.float64) / np.float64(y_scale)).astype(np.float32)


def requantize(acc, multiplier, zero_point, lo, hi, dtype) -> np.ndarray:
    """cvt(clamp(f32(acc) * m, lo - zp, hi - zp)) + zp, rounding half to even.

    acc is the exact accumulator plus bias (it must fit int32); the product is one f32
    rounding (no FMA) and the clamp happens in float before conversion.
    """
    acc = np.asarray(acc, dtype=np.int64)
    assert np.all(np.abs(acc) <= 2**31 - 1), "accumulator outside int32: the layer must be refused"
    v = acc.astype(np.float32) * np.asarray(multiplier, dtype=np.float32)
    v = np.clip(v, np.float32(lo - zero_point), np.float32(hi - zero_point))
    return (np.rint(v).astype(np.int64) + zero_point).astype(dtype)


def dequantize_acc(acc, multiplier) -> np.ndarray:
    """f32(acc + bias) * f32(s_a * s_w[n]): the fp32 output of an int8 GEMM."""
    return np.asarray(acc, dtype=np.int64).astype(np.float32) * np.asarray(multiplier, dtype=np.float32)


def qgemm(a, b, *, a_zero_point=0, b_zero_point=0, bias=None, multiplier=None, out_zero_point=0,
          lo=None, hi=None, out_dtype=np.int32) -> np.ndarray:
    """The int8 GEMM with its epilogue, as pyruntime.ops.qgemm defines it."""
    acc = matmul_int(a, b, a_zero_point, b_zero_point)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64).reshape(1, -1)
    out_dtype = np.dtype(out_dtype)
    if out_dtype == np.int32:
        return acc.astype(np.int32)
    if out_dtype == np.float32:
        return dequantize_acc(acc, multiplier)
    dlo, dhi = dtype_range(out_dtype)
    return requantize(acc, multiplier, out_zero_point, dlo if lo is None else lo, dhi if hi is None else hi,
                      out_dtype)


def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point) -> np.ndarray:
    y_zp = np.asarray(y_zero_point)
    lo, hi = dtype_range(y_zp.dtype)
    acc = matmul_int(a, b, a_zero_point, b_zero_point)
    return requantize(acc, requant_multiplier(a_scale, b_scale, y_scale), int(y_zp), lo, hi, y_zp.dtype)


def conv_int(x, x_zero_point, w, w_zero_point=0, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
             group=1) -> np.ndarray:
    """Exact 2-D convolution of NCHW int8 data in int64: sum (x - x_zp) * (w - w_zp[m]).
    Padding reads the input zero point (so it contributes nothing); w is [M, C/group, kh, kw]."""
    x64 = np.asarray(x, np.int64) - np.int64(x_zero_point)
    w64 = np.asarray(w, np.int64) - np.asarray(w_zero_point, np.int64).reshape(-1, 1, 1, 1)
    N, C, H, W = x64.shape
    M, cg, kh, kw = w64.shape
    (sh, sw), (dh, dw) = strides, dilations
    pt, pl, pb, pr = pads
    xp = np.pad(x64, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    OH = (H + pt + pb - (kh - 1) * dh - 1) // sh + 1
    OW = (W + pl + pr - (kw - 1) * dw - 1) // sw + 1
    mg = M // group
    y = np.zeros((N, M, OH, OW), np.int64)
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[:, :, ky * dh: ky * dh + (OH - 1) * sh + 1: sh, kx * dw: kx * dw + (OW - 1) * sw + 1: sw]
                y[:, g * mg:(g + 1) * mg] += np.einsum("nchw,mc->nmhw", patch, w64[g * mg:(g + 1) * mg, :, ky, kx])
    return y


def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias=None,
                 **geometry) -> np.ndarray:
    """QLinearConv with DESIGN.md's requantization (per-channel w_scale allowed)."""
    y_zp = np.asarray(y_zero_point)
    lo, hi = dtype_range(y_zp.dtype)
    acc = conv_int(x, x_zero_point, w, w_zero_point, **geometry)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64).reshape(1, -1, 1, 1)
    m = requant_multiplier(x_scale, w_scale, y_scale).reshape(1, -1, 1, 1)
    return requantize(acc, m, int(y_zp), lo, hi, y_zp.dtype)


def qlinear_add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point, dtype) -> np.ndarray:
    """Quantized Add (QLinearAdd, DQ -> Add -> Q), with numpy broadcasting:
    saturate(round_half_even(f32(a - a_zp) * m_a + f32(b - b_zp) * m_b) + y_zp), where
    m_a = f32(s_a / s_y) and m_b = f32(s_b / s_y) are computed in double; two f32 products,
    one f32 sum, no FMA."""
    lo, hi = dtype_range(dtype)
    m_a = np.float32(np.float64(a_scale) / np.float64(y_scale))
    m_b = np.float32(np.float64(b_scale) / np.float64(y_scale))
    pa = (np.asarray(a, np.int32) - np.int32(a_zero_point)).astype(np.float32) * m_a
    pb = (np.asarray(b, np.int32) - np.int32(b_zero_point)).astype(np.float32) * m_b
    v = np.rint((pa + pb).astype(np.float32)) + np.float32(y_zero_point)
    return np.clip(v, lo, hi).astype(dtype)


def quantize_linear(x, scale, zero_point, dtype) -> np.ndarray:
    """saturate(round_half_even(x / s) + zp); NaN quantizes to zp, +-inf saturates."""
    lo, hi = dtype_range(dtype)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale))
    q = np.where(np.isnan(q), 0, q)
    return np.clip(q + zero_point, lo, hi).astype(dtype)


def dequantize_linear(q, scale, zero_point) -> np.ndarray:
    return (np.asarray(q, dtype=np.int32) - np.int32(zero_point)).astype(np.float32) * np.float32(scale)


def avg_pool_multiplier(x_scale, y_scale, count) -> np.float32:
    """m = f32(s_x / (s_y * count)), computed in double and rounded once to float32."""
    return np.float32(np.float64(x_scale) / (np.float64(y_scale) * np.float64(count)))


def qlinear_avg_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, *, kernel, strides=(1, 1),
                     pads=(0, 0, 0, 0), count_include_pad=False, ceil_mode=False) -> np.ndarray:
    """Quantized 2-D average pool of NCHW data (QLinearAveragePool, DQ -> AveragePool -> Q):
    per window, acc = sum over in-image taps of (x - x_zp) in int64, count = the taps inside
    the image (or inside the padded image with count_include_pad), then
    requantize(acc, avg_pool_multiplier(s_x, s_y, count), y_zp) over the full range of
    y_zp's dtype. Padding contributes nothing to acc, as x_zp dequantizes to zero; ceil_mode
    windows may reach past the end pads, which count only up to the padded extent (ONNX)."""
    y_zp = np.asarray(y_zero_point)
    lo, hi = dtype_range(y_zp.dtype)
    x64 = np.asarray(x, np.int64) - np.int64(x_zero_point)
    N, C, H, W = x64.shape
    kh, kw = kernel
    sh, sw = strides
    pt, pl, pb, pr = pads
    def extent(size, k, s, begin, end):
        span = size + begin + end - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        return out - 1 if ceil_mode and (out - 1) * s >= size + begin else out

    OH, OW = extent(H, kh, sh, pt, pb), extent(W, kw, sw, pl, pr)
    acc = np.zeros((N, C, OH, OW), np.int64)
    mult = np.zeros((OH, OW), np.float32)
    for oy in range(OH):
        for ox in range(OW):
            y0, x0 = oy * sh - pt, ox * sw - pl
            ys, xs = slice(max(y0, 0), min(y0 + kh, H)), slice(max(x0, 0), min(x0 + kw, W))
            acc[:, :, oy, ox] = x64[:, :, ys, xs].sum(axis=(2, 3))
            if count_include_pad:
                count = (min(y0 + kh, H + pb) - max(y0, -pt)) * (min(x0 + kw, W + pr) - max(x0, -pl))
            else:
                count = (ys.stop - ys.start) * (xs.stop - xs.start)
            mult[oy, ox] = avg_pool_multiplier(x_scale, y_scale, count)
    return requantize(acc, mult, int(y_zp), lo, hi, y_zp.dtype)


def qlinear_global_avg_pool(x, x_scale, x_zero_point, y_scale, y_zero_point) -> np.ndarray:
    """QLinearGlobalAveragePool of channels-first data of any spatial rank, as
    qlinear_avg_pool with one window over every spatial position: the exact int64 sum of
    (x - x_zp), times avg_pool_multiplier(s_x, s_y, H*W), rounded half to even. The
    float DQ -> GlobalAveragePool -> Q chain rounds each dequantized value and the running
    float sum, so the two can differ by one step where the exact mean lies within that
    rounding of a half-way point between two output steps."""
    x = np.asarray(x)
    N, C = x.shape[:2]
    flat = x.reshape(N, C, 1, -1)
    y = qlinear_avg_pool(flat, x_scale, x_zero_point, y_scale, y_zero_point, kernel=(1, flat.shape[3]))
    return y.reshape((N, C) + (1,) * (x.ndim - 2))
