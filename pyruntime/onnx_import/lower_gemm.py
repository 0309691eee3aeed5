"""Lowering of the matrix products (MatMul, Gemm, the integer and fused int8 GEMMs) and
the quantization ops (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearAdd)
to native steps; registered into lower.LOWER on import.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .. import _native
from ..errors import ModelError, UnsupportedError
from .graph import Node
from .lower import (LOWER, OUT_KIND, Lowering, _axis, _broadcast_ints, _const_scalar, _emit_transpose, _float_input,
                    _fused_only, _prod, lower_binary)

# ---------------------------------------------------------------------------------------
# matrix products


def _batched(low, n, a_shape, b_shape):
    """numpy matmul broadcasting: (batches, M, K, N, offsets, out_shape)."""
    a2 = (1,) + tuple(a_shape) if len(a_shape) == 1 else tuple(a_shape)
    b2 = tuple(b_shape) + (1,) if len(b_shape) == 1 else tuple(b_shape)
    M, K = a2[-2], a2[-1]
    K2, N = b2[-2], b2[-1]
    if K != K2:
        raise ModelError(f"{n.label()}: inner dimensions differ, {tuple(a_shape)} x {tuple(b_shape)}")
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    a_idx = np.broadcast_to(np.arange(_prod(a2[:-2])).reshape(a2[:-2] or (1,)) if a2[:-2] else np.zeros(()), batch)
    b_idx = np.broadcast_to(np.arange(_prod(b2[:-2])).reshape(b2[:-2] or (1,)) if b2[:-2] else np.zeros(()), batch)
    offs = []
    for ai, bi in zip(a_idx.reshape(-1), b_idx.reshape(-1)):
        offs += [int(ai) * M * K, int(bi) * K * N]
    out = list(batch) + ([M] if len(a_shape) > 1 else []) + ([N] if len(b_shape) > 1 else [])
    return _prod(batch), M, K, N, offs, out


def lower_matmul(low: Lowering, n: Node) -> None:
    a, b = n.inputs[:2]
    if low.dtype(a) != np.float32 or low.dtype(b) != np.float32:
        raise UnsupportedError(f"{n.label()}: MatMul on {low.dtype(a)} x {low.dtype(b)}; only float32 here "
                               "(int8 runs through QDQ, QLinearMatMul or MatMulInteger)")
    batches, M, K, N, offs, out = _batched(low, n, low.shape(a), low.shape(b))
    low.define(n.outputs[0], np.float32, out)
    low.emit("matmul_f32", [a, b], [n.outputs[0]], [batches, M, K, N, *offs])


def lower_gemm(low: Lowering, n: Node) -> None:
    a, b = n.inputs[:2]
    c = n.inputs[2] if len(n.inputs) > 2 else ""
    for name, flag in ((a, "transA"), (b, "transB")):
        if low.dtype(name) != np.float32:
            raise UnsupportedError(f"{n.label()}: Gemm on {low.dtype(name)}; only float32")
    srcs = []
    for name, flag in ((a, "transA"), (b, "transB")):
        if int(n.attrs.get(flag, 0)):
            s = low.shape(name)
            t = f"{n.outputs[0]}__{flag}"
            if len(s) != 2:
                raise ModelError(f"{n.label()}: {flag} needs a 2-D operand, got shape {tuple(s)}")
            _emit_transpose(low, n, name, t, s, [1, 0])
            name = t
        srcs.append(name)
    batches, M, K, N, offs, out = _batched(low, n, low.shape(srcs[0]), low.shape(srcs[1]))
    prod_name = n.outputs[0] + "__ab"
    alpha, beta = float(n.attrs.get("alpha", 1.0)), float(n.attrs.get("beta", 1.0))
    last = n.outputs[0] if not c and alpha == 1.0 else prod_name
    low.define(last, np.float32, out)
    low.emit("matmul_f32", srcs, [last], [batches, M, K, N, *offs])
    if alpha != 1.0:
        alpha_c = n.outputs[0] + "__alpha"
        low.consts[alpha_c] = np.array(alpha, np.float32)
        scaled = n.outputs[0] if not c else n.outputs[0] + "__scaled"
        lower_binary(low, Node("Mul", "", [last, alpha_c], [scaled], {}, n.name, n.opset))
        last = scaled
    if c:
        if beta != 1.0:
            beta_c = n.outputs[0] + "__beta"
            low.consts[beta_c] = np.array(beta, np.float32)
            c_scaled = n.outputs[0] + "__c"
            lower_binary(low, Node("Mul", "", [c, beta_c], [c_scaled], {}, n.name, n.opset)) \
                if not low.is_const(c) else low.consts.__setitem__(c_scaled, low.consts[c] * np.float32(beta))
            c = c_scaled
        lower_binary(low, Node("Add", "", [last, c], [n.outputs[0]], {}, n.name, n.opset))


def lower_matmul_int(low: Lowering, n: Node) -> None:
    requant = n.op == "QLinearMatMul"
    if requant:
        a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = (n.inputs + [""] * 8)[:8]
        ins = [a, b, a_zp, b_zp, a_s, b_s, y_s, y_zp]
        out_dtype = low.dtype(y_zp) if y_zp else np.dtype(np.uint8)
    else:
        a, b, a_zp, b_zp = (n.inputs + [""] * 4)[:4]
        ins = [a, b, a_zp, b_zp]
        out_dtype = np.dtype(np.int32)
    for name in (a, b):
        if low.dtype(name) not in (np.uint8, np.int8):
            raise ModelError(f"{n.label()}: '{name}' has dtype {low.dtype(name)}; expected uint8 or int8")
    if a_zp and _prod(low.shape(a_zp)) != 1:
        raise UnsupportedError(f"{n.label()}: a per-row a_zero_point is not supported; quantize A per tensor")
    batches, M, K, N, offs, out = _batched(low, n, low.shape(a), low.shape(b))
    for name, what, dt in ((a_zp, "a_zero_point", low.dtype(a)), (b_zp, "b_zero_point", low.dtype(b))):
        if name and low.dtype(name) != dt:
            raise ModelError(f"{n.label()}: {what} has dtype {low.dtype(name)}; it must match its input's {dt}")
    if b_zp and _prod(low.shape(b_zp)) not in (1, N):
        raise UnsupportedError(f"{n.label()}: b_zero_point has shape {low.shape(b_zp)}; one value or one per "
                               f"column ({N}) is supported")
    if requant:
        for name, what in ((a_s, "a_scale"), (y_s, "y_scale"), (y_zp, "y_zero_point")):
            if name and _prod(low.shape(name)) != 1:
                raise UnsupportedError(f"{n.label()}: {what} has shape {low.shape(name)}; only a single value "
                                       "(per tensor) is supported")
        for name in (a_s, b_s, y_s):
            if low.dtype(name) != np.float32:
                raise UnsupportedError(f"{n.label()}: scale '{name}' has dtype {low.dtype(name)}; float32 only")
        if _prod(low.shape(b_s)) not in (1, N):
            raise UnsupportedError(f"{n.label()}: b_scale has shape {low.shape(b_s)}; one value or one per "
                                   f"column ({N}) is supported")
        if out_dtype not in (np.uint8, np.int8):
            raise UnsupportedError(f"{n.label()}: output dtype {out_dtype}; uint8 or int8 only")
    low.define(n.outputs[0], out_dtype, out)
    low.emit("matmul_int", ins, [n.outputs[0]], [batches, M, K, N, int(requant), *offs])


def _gemm_rows(low, n, a, K):
    shape = low.shape(a)
    if not shape or shape[-1] != K:
        raise ModelError(f"{n.label()}: input {shape} does not end in K={K}")
    return _prod(shape[:-1]), list(shape[:-1])


def pack_qgemm_weights(w: np.ndarray, w_zp) -> "_native.PackedWeights":
    zp = np.zeros(1, np.int32) if w_zp is None else np.asarray(w_zp).astype(np.int32)
    return _native.PackedWeights(np.ascontiguousarray(w), np.ascontiguousarray(zp))


def packed_for(low: Lowering, n: Node, pack):
    """The packed weights of a pyrt.QGemm/FGemm for its input: as loaded, or, where the input
    is an NHWC value flattened in place (Lowering.flat_nhwc), with the rows of W reordered
    from (c, h, w) to (h, w, c) once per (C, H, W) and kept on the node. Reordering K
    leaves every dot product the same sum."""
    chw = low.flat_nhwc.get(n.inputs[0])
    if chw is None:
        return n.attrs["native"]
    cache = n.attrs.setdefault("native_flat_nhwc", {})
    if chw not in cache:
        c, h, w = chw
        rows = n.attrs["w"].reshape(c, h * w, -1).transpose(1, 0, 2).reshape(c * h * w, -1)
        cache[chw] = pack(np.ascontiguousarray(rows))
    return cache[chw]


def lower_qgemm(low: Lowering, n: Node) -> None:
    at = n.attrs
    a = n.inputs[0]
    K, N = at["w"].shape
    if low.dtype(a) not in (np.uint8, np.int8):
        raise ModelError(f"{n.label()}: quantized input has dtype {low.dtype(a)}")
    M, lead = _gemm_rows(low, n, a, K)
    low.define(n.outputs[0], at["out_dtype"], lead + [N])
    bias = at["bias"] if at["bias"] is not None else ()
    mult = at["mult"] if at["mult"] is not None else np.zeros(0, np.float32)
    ints = [M, at["a_zp"], OUT_KIND[at["out_dtype"]], at["out_zp"], at["lo"], at["hi"]]
    floats = []
    add = at.get("add")
    if add is not None:  # fuse_qadd.fuse_qgemm_row_add; the native step reads it after the multipliers
        ints += [add["in_zp"], add["out_zp"], add["lo"], add["hi"]]
        floats = [add["mult"]]
        mult = np.concatenate([mult, add["col"]])
    native = packed_for(low, n, lambda w: pack_qgemm_weights(w, at["w_zp"]))
    low.emit("qgemm", [a], [n.outputs[0]], ints, floats, qweights=native, i32=bias, f32=mult)


def lower_fgemm(low: Lowering, n: Node) -> None:
    at = n.attrs
    a = n.inputs[0]
    _float_input(low, n)
    K, N = at["w"].shape
    M, lead = _gemm_rows(low, n, a, K)
    low.define(n.outputs[0], np.float32, lead + [N])
    low.emit("sgemm", [a], [n.outputs[0]], [M], [at["lo"], at["hi"]], fweights=packed_for(low, n, _native.PackedSgemm),
             f32=at["bias"] if at["bias"] is not None else ())


# ---------------------------------------------------------------------------------------
# quantization


def _per_axis(low, n, x, scale, zp=""):
    shape = low.shape(x)
    ssize = _prod(low.shape(scale))
    if int(n.attrs.get("block_size", 0)):
        raise UnsupportedError(f"{n.label()}: blocked quantization is not supported")
    if len(low.shape(scale)) > 1:
        raise UnsupportedError(f"{n.label()}: a {len(low.shape(scale))}-D scale (blocked quantization) is not "
                               "supported; per tensor or per axis only")
    if zp and (low.shape(zp) != low.shape(scale)) and not (_prod(low.shape(zp)) == 1 and ssize == 1):
        raise ModelError(f"{n.label()}: zero point shape {low.shape(zp)} differs from scale shape "
                         f"{low.shape(scale)}")
    if ssize == 1 or not shape:
        return [_prod(shape), 1, 1, 0]
    axis = _axis(int(n.attrs.get("axis", 1)), len(shape), n)
    if shape[axis] != ssize:
        raise ModelError(f"{n.label()}: {ssize} scales for axis {axis} of length {shape[axis]}")
    return [_prod(shape[:axis]), shape[axis], _prod(shape[axis + 1:]), 1]


def lower_quantize(low: Lowering, n: Node) -> None:
    x, scale = n.inputs[:2]
    zp = n.inputs[2] if len(n.inputs) > 2 else ""
    if zp:
        out_dtype = low.dtype(zp)
    elif n.attrs.get("output_dtype"):
        out_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(n.attrs["output_dtype"])))
    else:
        out_dtype = np.dtype(np.uint8)
    if out_dtype not in (np.uint8, np.int8) or low.dtype(x) != np.float32 or low.dtype(scale) != np.float32:
        raise UnsupportedError(f"{n.label()}: QuantizeLinear float32 -> uint8/int8 only, got {low.dtype(x)} -> "
                               f"{out_dtype} with {low.dtype(scale)} scale")
    low.define(n.outputs[0], out_dtype, low.shape(x))
    low.emit("quantize", [x, scale, zp], [n.outputs[0]], _per_axis(low, n, x, scale, zp))


def lower_dequantize(low: Lowering, n: Node) -> None:
    x, scale = n.inputs[:2]
    zp = n.inputs[2] if len(n.inputs) > 2 else ""
    if low.dtype(x) not in (np.uint8, np.int8, np.int32) or low.dtype(scale) != np.float32:
        raise UnsupportedError(f"{n.label()}: DequantizeLinear from uint8/int8/int32 with float32 scale only, "
                               f"got {low.dtype(x)} with {low.dtype(scale)}")
    if zp and low.dtype(zp) != low.dtype(x):
        raise ModelError(f"{n.label()}: zero point dtype {low.dtype(zp)} differs from input dtype {low.dtype(x)}")
    if int(n.attrs.get("output_dtype", 0)) not in (0, onnx.TensorProto.FLOAT):
        raise UnsupportedError(f"{n.label()}: output_dtype {int(n.attrs['output_dtype'])}; float32 only")
    low.define(n.outputs[0], np.float32, low.shape(x))
    low.emit("dequantize", [x, scale, zp], [n.outputs[0]], _per_axis(low, n, x, scale, zp))


def lower_qlinear_add(low: Lowering, n: Node) -> None:
    """com.microsoft QLinearAdd(A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp)."""
    a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = (n.inputs + [""] * 8)[:8]
    sa, sb, sy = (float(_const_scalar(low, x, n, "a scale")) for x in (a_s, b_s, y_s))
    zps = [int(_const_scalar(low, x, n, "a zero point") or 0) for x in (a_zp, b_zp, y_zp)]
    for v, what in ((sa, "A_scale"), (sb, "B_scale"), (sy, "C_scale")):
        if not np.isfinite(v) or v <= 0:
            raise ModelError(f"{n.label()}: {what} is {v}; scales must be finite and > 0")
    out_dtype = low.dtype(y_zp) if y_zp else low.dtype(a)
    for name in (a, b):
        if low.dtype(name) not in (np.uint8, np.int8):
            raise ModelError(f"{n.label()}: '{name}' has dtype {low.dtype(name)}; expected uint8 or int8")
    if out_dtype not in (np.uint8, np.int8):
        raise ModelError(f"{n.label()}: output dtype {out_dtype}; expected uint8 or int8")
    out = tuple(np.broadcast_shapes(low.shape(a), low.shape(b)))
    low.define(n.outputs[0], out_dtype, out)
    ints = [*_broadcast_ints(n, [low.shape(a), low.shape(b)], out), *zps]
    low.emit("qadd", [a, b], [n.outputs[0]], ints,
             [float(np.float32(np.float64(sa) / np.float64(sy))), float(np.float32(np.float64(sb) / np.float64(sy)))])


def lower_dynamic_quantize(low: Lowering, n: Node) -> None:
    _float_input(low, n)
    y, ys, yzp = n.outputs[:3]
    low.define(y, np.uint8, low.shape(n.inputs[0]))
    low.define(ys, np.float32, ())
    low.define(yzp, np.uint8, ())
    low.emit("dynq", [n.inputs[0]], [y, ys, yzp])


LOWER.update({
    ("", "MatMul"): lower_matmul, ("", "Gemm"): lower_gemm,
    ("", "MatMulInteger"): lower_matmul_int, ("", "QLinearMatMul"): lower_matmul_int,
    ("", "QuantizeLinear"): lower_quantize, ("", "DequantizeLinear"): lower_dequantize,
    ("", "DynamicQuantizeLinear"): lower_dynamic_quantize,
    ("com.microsoft", "QGemm"): _fused_only, ("com.microsoft", "QLinearAdd"): lower_qlinear_add,
    ("pyrt", "QGemm"): lower_qgemm, ("pyrt", "FGemm"): lower_fgemm,
})
