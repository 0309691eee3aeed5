"""Lowering of convolutions and pools (1-D and 2-D, NCHW at the step boundary).

Geometry follows the ONNX spec: explicit pads or auto_pad (SAME_UPPER, SAME_LOWER, VALID),
strides, dilations, groups, and ceil_mode for pools. Hostile attributes (a zero stride,
channels that do not match, a group that does not divide them, a kernel larger than the
padded input) are refused with a ModelError naming the node.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _native
from ..errors import ModelError, UnsupportedError
from .graph import Node
from . import fuse_qadd, lower_gemm  # noqa: F401 (register pyrt.QAdd and the quantize ops, wrapped below)
from .lower import LAYOUT_AWARE, LOWER, OP, OUT_KIND, Lowering, _prod

OP.update(conv_f32=17, conv_q=18, max_pool=19, avg_pool=20, pool_nd=21, depthwise_q=22,
          depthwise_f32=23)  # csrc/runtime/ops.h


def _is_depthwise(low: Lowering, x: str, w_shape, group: int) -> bool:
    """group == channels == outputs on an NHWC input: the per-channel vector kernel applies."""
    return x in low.nhwc and group > 1 and group == low.shape(x)[1] == w_shape[0] and w_shape[1] == 1


def _spatial(shape, n: Node) -> tuple[int, int]:
    if len(shape) == 3:
        return 1, shape[2]
    if len(shape) == 4:
        return shape[2], shape[3]
    raise UnsupportedError(f"{n.label()}: only 1-D and 2-D (rank 3 or 4) inputs are supported, got {shape}")


def spatial_dims(n: Node, ins: list, kernel: list, ceil_mode: bool = False):
    """Per spatial dimension, following the ONNX spec: (outs, pads_begin, pads_end, strides,
    dilations), for explicit pads or any auto_pad mode, and ceil_mode for pools."""
    rank = len(ins)
    strides = list(n.attrs.get("strides", [1] * rank))
    dil = list(n.attrs.get("dilations", [1] * rank))
    pads = list(n.attrs.get("pads", [0] * (2 * rank)))
    auto_pad = n.attrs.get("auto_pad", "NOTSET")
    if len(kernel) != rank or len(strides) != rank or len(dil) != rank or len(pads) != 2 * rank:
        raise ModelError(f"{n.label()}: kernel {kernel}, strides {strides}, dilations {dil}, pads {pads} do not "
                         f"match {rank} spatial dimensions {ins}")
    if any(s < 1 for s in strides) or any(d < 1 for d in dil) or any(k < 1 for k in kernel) or any(p < 0 for p in pads):
        raise ModelError(f"{n.label()}: strides {strides}, dilations {dil}, kernel {kernel} must be >= 1 and pads "
                         f"{pads} >= 0")
    outs, begins, ends = [], [], []
    for i in range(rank):
        eff = (kernel[i] - 1) * dil[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-ins[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + eff - ins[i])
            b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            e = total - b
        else:
            b, e = (0, 0) if auto_pad == "VALID" else (pads[i], pads[i + rank])
            span = ins[i] + b + e - eff
            if span < 0:
                raise ModelError(f"{n.label()}: kernel extent {eff} exceeds the padded input {ins[i] + b + e}")
            out = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
            if ceil_mode and (out - 1) * strides[i] >= ins[i] + b:
                out -= 1
        outs.append(out)
        begins.append(b)
        ends.append(e)
    return outs, begins, ends, strides, dil


def geometry(n: Node, x_shape, kernel, out_channels: int, ceil_mode: bool = False) -> tuple[list, tuple]:
    """(ConvGeometry ints without the group, (pad_bottom, pad_right), output shape) of a
    1-D or 2-D convolution or pool."""
    N, C = x_shape[0], x_shape[1]
    H, W = _spatial(x_shape, n)
    outs, begins, ends, strides, dil = spatial_dims(n, list(x_shape[2:]), list(kernel), ceil_mode)
    kernel = list(kernel)
    if len(x_shape) == 3:
        kernel, strides, dil, outs, begins, ends = [1] + kernel, [1] + strides, [1] + dil, [1] + outs, [0] + begins, \
            [0] + ends
    OH, OW = outs
    ints = [N, C, H, W, out_channels, OH, OW, kernel[0], kernel[1], strides[0], strides[1], dil[0], dil[1],
            begins[0], begins[1]]
    out_shape = (N, out_channels, OH, OW) if len(x_shape) == 4 else (N, out_channels, OW)
    return ints, (ends[0], ends[1]), out_shape


def _pool_nd(low: Lowering, n: Node, avg: bool) -> None:
    """Pools of any spatial rank, and MaxPool with its Indices output."""
    x = n.inputs[0]
    xs = low.shape(x)
    kernel = _pool_kernel(n)
    outs, begins, ends, strides, dil = spatial_dims(n, list(xs[2:]), kernel, bool(n.attrs.get("ceil_mode", 0)))
    out_shape = tuple(xs[:2]) + tuple(outs)
    low.define(n.outputs[0], low.dtype(x), out_shape)
    outputs = [n.outputs[0]]
    if len(n.outputs) > 1 and n.outputs[1]:
        low.define(n.outputs[1], np.int64, out_shape)
        outputs.append(n.outputs[1])
    R = len(xs) - 2
    ints = [R, xs[0] * xs[1], *xs[2:], *outs, *kernel, *strides, *dil, *begins, *ends, int(avg),
            int(n.attrs.get("count_include_pad", 0)), int(n.attrs.get("storage_order", 0))]
    low.emit("pool_nd", [x], outputs, ints)


def _conv_checks(n: Node, x_shape, w_shape, group: int):
    if len(w_shape) != len(x_shape):
        raise ModelError(f"{n.label()}: weights {tuple(w_shape)} and input {tuple(x_shape)} differ in rank")
    if group < 1 or x_shape[1] % group or w_shape[0] % group:
        raise ModelError(f"{n.label()}: group {group} must divide input channels {x_shape[1]} and output "
                         f"channels {w_shape[0]}")
    if w_shape[1] * group != x_shape[1]:
        raise ModelError(f"{n.label()}: weights expect {w_shape[1] * group} input channels, the input has "
                         f"{x_shape[1]}")
    ks = list(n.attrs.get("kernel_shape", w_shape[2:]))
    if ks != list(w_shape[2:]):
        raise ModelError(f"{n.label()}: kernel_shape {ks} differs from the weights' {list(w_shape[2:])}")


def lower_conv(low: Lowering, n: Node) -> None:
    x, w = n.inputs[:2]
    b = n.inputs[2] if len(n.inputs) > 2 else ""
    if low.dtype(x) != np.float32 or low.dtype(w) != np.float32:
        raise UnsupportedError(f"{n.label()}: Conv on {low.dtype(x)}; only float32 (int8 runs via QDQ, "
                               "QLinearConv or ConvInteger)")
    xs, ws = low.shape(x), low.shape(w)
    group = int(n.attrs.get("group", 1))
    _conv_checks(n, xs, ws, group)
    ints, _, out = geometry(n, xs, ws[2:], ws[0])
    at = n.attrs
    clamp = [at.get("lo", -np.inf), at.get("hi", np.inf)]
    out_nhwc = len(out) == 4
    low.define(n.outputs[0], np.float32, out)
    if low.is_const(w) and (not b or low.is_const(b)) and _is_depthwise(low, x, ws, group):
        if "_dw" not in at:  # bias, then w as [ky][kx][C]
            bias = low.consts[b].astype(np.float32) if b else np.zeros(ws[0], np.float32)
            at["_dw"] = np.concatenate([bias, low.consts[w][:, 0].transpose(1, 2, 0).reshape(-1)]).astype(np.float32)
        low.emit("depthwise_f32", [x], [n.outputs[0]], ints + [group], clamp, f32=at["_dw"])
        low.nhwc.add(n.outputs[0])
        return
    if low.is_const(w) and group == 1 and (not b or low.is_const(b)):
        in_nhwc = _reads_nhwc(low, x)
        key = "_packed_nhwc" if in_nhwc else "_packed"
        if key not in at:  # K in the order the im2col of that layout writes: (ky, kx, c) or (c, ky, kx)
            wk = low.consts[w].transpose(0, 2, 3, 1) if in_nhwc else low.consts[w]
            at[key] = _native.PackedSgemm(np.ascontiguousarray(wk.reshape(ws[0], -1).T))
        bias = low.consts[b].astype(np.float32) if b else ()
        low.emit("conv_f32", [x], [n.outputs[0]], ints + [group, int(in_nhwc), int(out_nhwc)], clamp,
                 fweights=at[key], f32=bias)
    else:  # runtime or grouped weights are packed per call, in NCHW order
        low.emit("conv_f32", [low.nchw(x), w, b], [n.outputs[0]], ints + [group, 0, int(out_nhwc)], clamp)
    if out_nhwc:
        low.nhwc.add(n.outputs[0])


def _reads_nhwc(low: Lowering, x: str) -> bool:
    """Whether the conv reads x channels-last. A one-channel NCHW image has the same memory
    order, and the channels-last im2col copies whole window rows."""
    shape = low.shape(x)
    return x in low.nhwc or (len(shape) == 4 and shape[1] == 1)


def _depthwise_q_constants(w, w_zp, bias, a_zp) -> np.ndarray:
    """bias, (w - w_zp) as [ky][kx][C], then the tap-pair layout (csrc/kernels/qconv/conv.h):
    the bias with a_zp * sum(w - w_zp) taken off, so kernels multiply raw activations
    (padding reads a_zp, which cancels), and taps 2p, 2p+1 as one int16 pair per int32."""
    M = w.shape[0]
    wz = w.astype(np.int32) - np.broadcast_to(w_zp.reshape(-1), (M,)).reshape(M, 1, 1, 1)
    taps = wz[:, 0].transpose(1, 2, 0).reshape(-1, M)  # [ky*kx][C]
    bias = (bias if bias is not None else np.zeros(M, np.int32)).astype(np.int64)
    folded = (bias - int(a_zp) * taps.sum(0, dtype=np.int64)).astype(np.int32)  # wraps as the int32 sums do
    pairs = np.zeros((-(-taps.shape[0] // 2) * 2, M), np.int16)
    pairs[:taps.shape[0]] = taps  # |w - w_zp| <= 255
    pairs = np.ascontiguousarray(pairs.reshape(-1, 2, M).transpose(0, 2, 1)).view(np.int32).reshape(-1)
    return np.concatenate([bias.astype(np.int32), taps.reshape(-1), folded, pairs])


def _nhwc_packs(at: dict, group: int) -> list:
    """Per-group weights with K in (ky, kx, c) order, for NHWC inputs; packed on first use."""
    if "native_nhwc" not in at:
        w, zp = at["w"], at["w_zp"]
        mg = w.shape[0] // group
        at["native_nhwc"] = [
            _native.PackedWeights(np.ascontiguousarray(w[g * mg:(g + 1) * mg].transpose(0, 2, 3, 1).reshape(mg, -1).T),
                                  np.ascontiguousarray(zp if zp.size == 1 else zp[g * mg:(g + 1) * mg]))
            for g in range(group)]
    return at["native_nhwc"]


def lower_qconv(low: Lowering, n: Node) -> None:
    """pyrt.QConv (fused at load), or QLinearConv / ConvInteger with runtime operands."""
    x = n.inputs[0]
    if n.domain == "pyrt":
        at = n.attrs
        w = at["w"]
        group = int(at.get("group", 1))
        _conv_checks(n, low.shape(x), w.shape, group)
        ints, _, out = geometry(n, low.shape(x), w.shape[2:], w.shape[0])
        pool = at.get("pool", [])  # a MaxPool fused at load (fuse_conv.fuse_qconv_max_pool)
        y_shape = out
        if pool:
            if out[2] < pool[0] or out[3] < pool[1]:
                raise ModelError(f"{at['pool_label']}: kernel {pool} is larger than its input {list(out[2:])}")
            y_shape = (*out[:2], out[2] // pool[0], out[3] // pool[1])
        low.define(n.outputs[0], at["out_dtype"], y_shape)
        in_nhwc, out_nhwc = _reads_nhwc(low, x), len(out) == 4
        if _is_depthwise(low, x, w.shape, group):
            if "_dw" not in at:
                at["_dw"] = _depthwise_q_constants(w, at["w_zp"], at["bias"], at["a_zp"])
            low.emit("depthwise_q", [x], [n.outputs[0]],
                     ints + [group, at["a_zp"], OUT_KIND[at["out_dtype"]], at["out_zp"], at["lo"], at["hi"]],
                     i32=at["_dw"], f32=at["mult"] if at["mult"] is not None else ())
            low.nhwc.add(n.outputs[0])
            return
        packs = _nhwc_packs(at, group) if in_nhwc else at["native"]  # one PackedWeights per group
        low.emit("conv_q", [x], [n.outputs[0]],
                 ints + [group, at["a_zp"], OUT_KIND[at["out_dtype"]], at["out_zp"], at["lo"], at["hi"], 0,
                         int(in_nhwc), int(out_nhwc)] + pool,
                 qweights=packs[0], qgroups=packs if group > 1 else (),
                 i32=at["bias"] if at["bias"] is not None else (), f32=at["mult"] if at["mult"] is not None else ())
        if out_nhwc:
            low.nhwc.add(n.outputs[0])
        return
    if n.op == "ConvInteger":
        ins = (n.inputs + [""] * 4)[:4]
        w, mode, out_dtype = ins[1], 1, np.dtype(np.int32)
    else:
        ins = (n.inputs + [""] * 9)[:9]
        w, mode = ins[3], 2
        out_dtype = low.dtype(ins[7]) if ins[7] else np.dtype(np.uint8)
    group = int(n.attrs.get("group", 1))
    _conv_checks(n, low.shape(x), low.shape(w), group)
    for name in (x, w):
        if low.dtype(name) not in (np.uint8, np.int8):
            raise ModelError(f"{n.label()}: '{name}' has dtype {low.dtype(name)}; expected uint8 or int8")
    ints, _, out = geometry(n, low.shape(x), low.shape(w)[2:], low.shape(w)[0])
    low.define(n.outputs[0], out_dtype, out)
    low.emit("conv_q", [low.nchw(i) if i == x else i for i in ins], [n.outputs[0]],
             ints + [group, 0, 0, 0, 0, 0, mode, 0, 0])


def _pool_kernel(n: Node):
    if "kernel_shape" not in n.attrs:
        raise ModelError(f"{n.label()}: kernel_shape is required")
    return list(n.attrs["kernel_shape"])


def lower_max_pool(low: Lowering, n: Node) -> None:
    x = n.inputs[0]
    if low.dtype(x) not in (np.float32, np.uint8, np.int8):
        raise UnsupportedError(f"{n.label()}: MaxPool on {low.dtype(x)}")
    xs = low.shape(x)
    if len(xs) not in (3, 4) or len([o for o in n.outputs if o]) > 1:
        return _pool_nd(low, low.with_nchw_inputs(n), avg=False)
    ints, _, out = geometry(n, xs, _pool_kernel(n), xs[1], bool(n.attrs.get("ceil_mode", 0)))
    low.define(n.outputs[0], low.dtype(x), out)
    nhwc = x in low.nhwc
    low.emit("max_pool", [x], [n.outputs[0]], ints + [1, int(nhwc)])
    if nhwc:
        low.nhwc.add(n.outputs[0])


def lower_avg_pool(low: Lowering, n: Node) -> None:
    x = n.inputs[0]
    if low.dtype(x) != np.float32:
        raise UnsupportedError(f"{n.label()}: AveragePool on {low.dtype(x)}; float32 only")
    xs = low.shape(x)
    if len(xs) not in (3, 4):
        return _pool_nd(low, n, avg=True)
    ints, ends, out = geometry(n, xs, _pool_kernel(n), xs[1], bool(n.attrs.get("ceil_mode", 0)))
    low.define(n.outputs[0], np.float32, out)
    low.emit("avg_pool", [x], [n.outputs[0]], ints + [1, int(n.attrs.get("count_include_pad", 0)), *ends])


def lower_global_pool(low: Lowering, n: Node) -> None:
    x = n.inputs[0]
    xs = low.shape(x)
    if low.dtype(x) != np.float32 and not (n.op == "GlobalMaxPool" and low.dtype(x) in (np.uint8, np.int8)):
        raise UnsupportedError(f"{n.label()}: {n.op} on {low.dtype(x)}")
    if n.op == "GlobalAveragePool":
        low.define(n.outputs[0], np.float32, tuple(xs[:2]) + (1,) * (len(xs) - 2))
        if x in low.nhwc:  # mean over H*W of each channel run; [N, C, 1, 1] is the same memory either way
            low.emit("reduce_mean", [x], [n.outputs[0]], [xs[0], _prod(xs[2:]), xs[1]])
        else:
            low.emit("reduce_mean", [x], [n.outputs[0]], [_prod(xs[:2]), _prod(xs[2:]), 1])
        return
    x = low.nchw(x)
    fake = Node(n.op, n.domain, [x], n.outputs, {"kernel_shape": list(xs[2:])}, n.name, n.opset)
    ints, _, out = geometry(fake, xs, list(xs[2:]), xs[1])
    low.define(n.outputs[0], low.dtype(x), out)
    low.emit("max_pool", [x], [n.outputs[0]], ints + [1])


def _keeps_layout(fn, same_layout):
    """Wraps an element-wise lowering: when `same_layout(low, n)` holds, the op reads its
    NHWC inputs as they are (element order does not matter to it) and its output stays NHWC."""
    def lower(low: Lowering, n: Node) -> None:
        if n.inputs and n.inputs[0] in low.nhwc and same_layout(low, n):
            fn(low, n)
            low.nhwc.update(o for o in n.outputs[:1] if o)
        else:
            fn(low, low.with_nchw_inputs(n))
    return lower


_FLAT_READERS = {("pyrt", "QGemm"), ("pyrt", "FGemm")}


def lower_flatten_nhwc(low: Lowering, n: Node) -> None:
    """Flatten(axis=1) of an NHWC value read only as a GEMM's A: the bytes stay in NHWC order
    (no transpose) and the GEMM takes its weight rows in the same order (lower_gemm.packed_for)."""
    x = n.inputs[0]
    shape = low.shape(x)
    axis = int(n.attrs.get("axis", 1))
    users = low.g.consumers().get(n.outputs[0], [])
    if (x not in low.nhwc or len(shape) != 4 or axis not in (1, -3) or not users
            or n.outputs[0] in low.g.output_names()
            or any((u.domain, u.op) not in _FLAT_READERS or u.inputs[0] != n.outputs[0] for u in users)):
        return LOWER_FLATTEN(low, low.with_nchw_inputs(n))
    LOWER_FLATTEN(low, n)
    low.flat_nhwc[n.outputs[0]] = tuple(shape[1:])


def _scalar_or_same(low: Lowering, n: Node) -> bool:
    a, b = n.inputs[:2]
    if b in low.nhwc:
        return low.shape(a) == low.shape(b)
    return low.is_const(b) and low.consts[b].size == 1


def _per_tensor(low: Lowering, n: Node) -> bool:
    return len(n.inputs) > 1 and _prod(low.shape(n.inputs[1])) == 1


for _key, _test in ((("", "Relu"), lambda low, n: True), (("", "Clip"), lambda low, n: True),
                    (("", "Sigmoid"), lambda low, n: True), (("", "Tanh"), lambda low, n: True),
                    (("", "Add"), _scalar_or_same), (("", "Sub"), _scalar_or_same), (("", "Mul"), _scalar_or_same),
                    (("", "Div"), _scalar_or_same), (("", "QuantizeLinear"), _per_tensor),
                    (("", "DequantizeLinear"), _per_tensor), (("pyrt", "QAdd"), _scalar_or_same)):
    LOWER[_key] = _keeps_layout(LOWER[_key], _test)
    LAYOUT_AWARE.add(_key)
LOWER_FLATTEN = LOWER[("", "Flatten")]
LOWER[("", "Flatten")] = lower_flatten_nhwc
LAYOUT_AWARE.update({("", "Conv"), ("pyrt", "QConv"), ("", "MaxPool"), ("", "GlobalAveragePool"),
                     ("", "GlobalMaxPool"), ("", "Flatten")})

LOWER.update({
    ("", "Conv"): lower_conv, ("", "ConvInteger"): lower_qconv, ("", "QLinearConv"): lower_qconv,
    ("pyrt", "QConv"): lower_qconv, ("", "MaxPool"): lower_max_pool, ("", "AveragePool"): lower_avg_pool,
    ("", "GlobalAveragePool"): lower_global_pool, ("", "GlobalMaxPool"): lower_global_pool,
})
