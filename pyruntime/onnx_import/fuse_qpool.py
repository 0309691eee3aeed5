"""Quantized average pools: DequantizeLinear -> GlobalAveragePool / AveragePool ->
QuantizeLinear fused into pyrt.QAvgPool, and com.microsoft QLinearGlobalAveragePool /
QLinearAveragePool, all run by one int8 step (csrc/kernels/qconv/pool.h).

onnxruntime's QDQ quantizer writes a classifier's global pool as that chain; in float it
costs a dequantization of the whole feature map, a float mean and a quantization. The
int8 step computes reference.qlinear_avg_pool: an exact integer window sum, one f32
multiply per output. Where it can differ from the float chain by one step is documented
at reference.qlinear_global_avg_pool.
"""
from __future__ import annotations

import numpy as np

from .. import reference
from ..errors import ModelError, UnsupportedError
from .fuse_qadd import _dq_scalar, _only_user
from .graph import Graph, Node
from .lower import LAYOUT_AWARE, LOWER, OP, Lowering, _const_scalar, _prod
from .lower_conv import geometry
from .passes import _q_params

OP.update(qavg_pool=24)  # csrc/runtime/ops.h

# int32 window sums stay exact while count * 255 <= 2^31 - 1 (DESIGN.md "Integer exactness").
_MAX_WINDOW = (2**31 - 1) // 255


def fuse_qdq_avg_pool(g: Graph) -> Graph:
    prod, uses = g.producers(), g.consumers()
    replaced = {}
    for n in g.nodes:
        if n.domain != "" or n.op not in ("GlobalAveragePool", "AveragePool"):
            continue
        if n.op == "AveragePool" and (len(n.attrs.get("kernel_shape", [])) not in (1, 2)
                                      or any(d != 1 for d in n.attrs.get("dilations", []))):
            continue
        dq = _dq_scalar(g, n.inputs[0], prod)
        dq_node = prod.get(n.inputs[0])
        zp_name = dq_node.inputs[2] if dq is not None and len(dq_node.inputs) > 2 else ""
        if dq is None or not zp_name or g.consts[zp_name].dtype not in (np.uint8, np.int8):
            continue  # the zero point's dtype is what proves the input 8-bit
        q = _only_user(g, n.outputs[0], uses)
        if q is None or q.domain != "" or q.op != "QuantizeLinear" or q.inputs[0] != n.outputs[0]:
            continue
        q_params = _q_params(g, q)
        if q_params is None or q_params[2] != g.consts[zp_name].dtype:
            continue
        attrs = dict(n.attrs, x_scale=dq[1], x_zp=dq[2], y_scale=q_params[0], y_zp=q_params[1],
                     is_global=n.op == "GlobalAveragePool")
        replaced[id(n)] = Node("QAvgPool", "pyrt", [dq[0]], [q.outputs[0]], attrs, n.name, n.opset,
                               ["DequantizeLinear", n.op, "QuantizeLinear"])
        replaced[id(q)] = None
    if replaced:
        g.nodes = [replaced.get(id(x), x) for x in g.nodes if replaced.get(id(x), x) is not None]
    return g


def _emit(low: Lowering, n: Node, x: str, y: str, logical, scales, zps, channels_last: bool) -> tuple:
    """One qavg_pool step reading x, whose [N, C, spatial...] shape is `logical`, channels-first
    or (channels_last) channels-last in memory; y is written in the same order. Returns y's
    [N, C, spatial...] shape."""
    x_scale, y_scale = scales
    for v, what in ((x_scale, "x_scale"), (y_scale, "y_scale")):
        if not np.isfinite(v) or v <= 0:
            raise ModelError(f"{n.label()}: {what} is {v}; scales must be finite and > 0")
    dt = low.dtype(x)
    if dt not in (np.uint8, np.int8):
        raise ModelError(f"{n.label()}: input '{x}' has dtype {dt}; expected uint8 or int8")
    if len(logical) < 3:
        raise ModelError(f"{n.label()}: input '{x}' of shape {tuple(logical)} has no spatial dimensions")
    lo, hi = reference.dtype_range(dt)
    if n.attrs.get("is_global", n.op == "QLinearGlobalAveragePool"):
        HW = _prod(logical[2:])
        ints = [logical[0], logical[1], HW, 1, 1, 1, HW, 1, 1, 1, 0, 0, 0, 0, 0]
        out_logical = tuple(logical[:2]) + (1,) * (len(logical) - 2)
        mult = [reference.avg_pool_multiplier(x_scale, y_scale, max(HW, 1))]
    else:
        if len(logical) not in (3, 4) or any(d != 1 for d in n.attrs.get("dilations", [])):
            raise UnsupportedError(f"{n.label()}: quantized average pools run on 1-D and 2-D inputs without "
                                   "dilations")
        if "kernel_shape" not in n.attrs:
            raise ModelError(f"{n.label()}: kernel_shape is required")
        g_ints, ends, out_logical = geometry(n, logical, n.attrs["kernel_shape"], logical[1],
                                             bool(n.attrs.get("ceil_mode", 0)))
        N, C, H, W, _, OH, OW, kh, kw, sh, sw, _, _, pt, pl = g_ints
        ints = [N, C, H, W, OH, OW, kh, kw, sh, sw, pt, pl, *ends, int(n.attrs.get("count_include_pad", 0))]
        HW = kh * kw
        mult = [reference.avg_pool_multiplier(x_scale, y_scale, c) if c else 0.0 for c in range(HW + 1)]
    if HW > _MAX_WINDOW:
        raise UnsupportedError(f"{n.label()}: a window of {HW} values could overflow the exact int32 sum; "
                               f"at most {_MAX_WINDOW} are supported")
    low.emit("qavg_pool", [x], [y], ints + [int(channels_last), *zps, lo, hi], f32=mult)
    return tuple(out_logical)


def lower_pyrt_qavg_pool(low: Lowering, n: Node) -> None:
    """The fused chain: NCHW by meaning, read channels-last where the producer left it so."""
    x, at, y = n.inputs[0], n.attrs, n.outputs[0]
    nhwc = x in low.nhwc
    out = _emit(low, n, x, y, low.shape(x), (at["x_scale"], at["y_scale"]), (at["x_zp"], at["y_zp"]), nhwc)
    low.define(y, low.dtype(x), out)
    if nhwc and any(d != 1 for d in out[2:]):  # [N, C, 1, 1] is the same memory in both orders
        low.nhwc.add(y)


def lower_qlinear_avg_pool(low: Lowering, n: Node) -> None:
    """com.microsoft QLinearGlobalAveragePool / QLinearAveragePool(X, x_scale, x_zero_point,
    y_scale, y_zero_point) with their channels_last attribute (X is [N, spatial..., C])."""
    x, x_s, x_zp, y_s, y_zp = (n.inputs + [""] * 5)[:5]
    scales = tuple(float(_const_scalar(low, s, n, what)) for s, what in ((x_s, "x_scale"), (y_s, "y_scale")))
    zps = tuple(int(_const_scalar(low, z, n, "zero point") or 0) for z in (x_zp, y_zp))
    if not n.attrs.get("channels_last", 0):
        attrs = dict(n.attrs, x_scale=scales[0], y_scale=scales[1], x_zp=zps[0], y_zp=zps[1])
        return lower_pyrt_qavg_pool(low, Node(n.op, n.domain, [x], n.outputs[:1], attrs, n.name, n.opset))
    x = low.nchw(x)
    xs = low.shape(x)
    out = _emit(low, n, x, n.outputs[0], (xs[0], xs[-1], *xs[1:-1]), scales, zps, True)
    low.define(n.outputs[0], low.dtype(x), (out[0], *out[2:], out[1]))


LOWER.update({("pyrt", "QAvgPool"): lower_pyrt_qavg_pool,
              ("com.microsoft", "QLinearGlobalAveragePool"): lower_qlinear_avg_pool,
              ("com.microsoft", "QLinearAveragePool"): lower_qlinear_avg_pool})
LAYOUT_AWARE.update({("pyrt", "QAvgPool"), ("com.microsoft", "QLinearGlobalAveragePool"),
                     ("com.microsoft", "QLinearAveragePool")})
