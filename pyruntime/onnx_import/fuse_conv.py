"""Convolution fusion.

fp32: Conv with constant weights absorbs a following per-channel Mul and Add (a folded
BatchNorm) into its weights and bias, and Relu/Clip into its clamp.
int8: DQ -> Conv [-> Relu/Clip] [-> Q] with constant weights, and QLinearConv /
ConvInteger whose weights and quantization parameters are constants, become pyrt.QConv.
Weights are quantized per tensor or per output channel (axis 0)."""
from __future__ import annotations

import numpy as np

from .graph import Graph, Node
from .passes import _quantize_bound, clip_bounds, const_scalar as _const_scalar

_CONV_ATTRS = ("strides", "pads", "dilations", "auto_pad", "group", "kernel_shape")


def _qconv(n: Node, x: str, out: str, w: np.ndarray, w_zp, a_zp: int, bias, mult, out_dtype, out_zp: int, lo: int,
           hi: int, fusions) -> Node:
    attrs = {k: n.attrs[k] for k in _CONV_ATTRS if k in n.attrs}
    attrs.update(w=np.ascontiguousarray(w), w_zp=np.asarray(w_zp, np.int32).reshape(-1), a_zp=int(a_zp),
                 bias=None if bias is None else np.asarray(bias, np.int32).reshape(-1),
                 mult=None if mult is None else np.asarray(mult, np.float32).reshape(-1),
                 out_dtype=np.dtype(out_dtype), out_zp=int(out_zp), lo=int(lo), hi=int(hi))
    return Node("QConv", "pyrt", [x], [out], attrs, n.name, n.opset, fusions)


def _range(dtype) -> tuple[int, int]:
    return (0, 255) if np.dtype(dtype) == np.uint8 else (-128, 127)


def fuse_qoperator_conv(g: Graph) -> Graph:
    for i, n in enumerate(g.nodes):
        if n.domain != "":
            continue
        if n.op == "QLinearConv":
            x, xs, xz, w, ws, wz, ys, yz, b = (n.inputs + [""] * 9)[:9]
            needed = [xs, w, ws, ys] + [v for v in (xz, wz, yz, b) if v]
            if not all(v in g.consts for v in needed) or g.consts[xs].size != 1 or g.consts[ys].size != 1:
                continue
            wq = g.consts[w]
            M = wq.shape[0]
            w_s = g.consts[ws].astype(np.float64).reshape(-1)
            if w_s.size not in (1, M):
                continue
            y_zp = g.consts[yz] if yz else np.zeros(1, np.uint8)
            mult = float(g.consts[xs].reshape(-1)[0]) * w_s / float(g.consts[ys].reshape(-1)[0])
            lo, hi = _range(y_zp.dtype)
            g.nodes[i] = _qconv(n, x, n.outputs[0], wq, g.consts[wz] if wz else 0,
                                int(_const_scalar(g, xz) or 0), g.consts[b] if b else None, mult.astype(np.float32),
                                y_zp.dtype, int(y_zp.reshape(-1)[0]), lo, hi, ["QLinearConv"])
        elif n.op == "ConvInteger":
            x, w, xz, wz = (n.inputs + [""] * 4)[:4]
            if w not in g.consts or (xz and _const_scalar(g, xz) is None) or (wz and wz not in g.consts):
                continue
            g.nodes[i] = _qconv(n, x, n.outputs[0], g.consts[w], g.consts[wz] if wz else 0,
                                int(_const_scalar(g, xz) or 0), None, None, np.int32, 0, 0, 0, ["ConvInteger"])
    return g


def _dq(g: Graph, name: str, prod):
    n = prod.get(name)
    if n is None or n.domain != "" or n.op != "DequantizeLinear" or n.inputs[1] not in g.consts:
        return None
    zp_name = n.inputs[2] if len(n.inputs) > 2 else ""
    if zp_name and zp_name not in g.consts:
        return None
    return n.inputs[0], g.consts[n.inputs[1]], (g.consts[zp_name] if zp_name else None), int(n.attrs.get("axis", 1))


def _only_user(g: Graph, name: str, uses):
    users = uses.get(name, [])
    return users[0] if len(users) == 1 and name not in g.output_names() else None


def fuse_qdq_conv(g: Graph) -> Graph:
    prod, uses = g.producers(), g.consumers()
    replace: dict[int, Node | None] = {}
    for n in g.nodes:
        if n.domain != "" or n.op != "Conv":
            continue
        a = _dq(g, n.inputs[0], prod)
        wdq = _dq(g, n.inputs[1], prod)
        if a is None or wdq is None or wdq[0] not in g.consts or a[1].size != 1 or \
                (a[2] is not None and a[2].size != 1):
            continue
        wq = g.consts[wdq[0]]
        M = wq.shape[0]
        w_s = np.asarray(wdq[1], np.float64).reshape(-1)
        if wq.dtype not in (np.int8, np.uint8) or w_s.size not in (1, M) or (w_s.size > 1 and wdq[3] != 0):
            continue
        s_a = float(a[1].reshape(-1)[0])
        a_zp = 0 if a[2] is None else int(a[2].reshape(-1)[0])
        acc_scale = s_a * w_s
        fusions = ["DequantizeLinear(X)", "DequantizeLinear(W)", "Conv"]
        bias = None
        if len(n.inputs) > 2 and n.inputs[2]:
            bdq = _dq(g, n.inputs[2], prod)
            if bdq is not None and bdq[0] in g.consts and g.consts[bdq[0]].dtype == np.int32:
                bias = g.consts[bdq[0]].reshape(-1)
            elif n.inputs[2] in g.consts:
                bias = np.rint(g.consts[n.inputs[2]].astype(np.float64).reshape(-1) / acc_scale).astype(np.int32)
            else:
                continue
            fusions.append("bias")
        tail, acts = n.outputs[0], []
        nxt = _only_user(g, tail, uses)
        while nxt is not None and nxt.domain == "" and nxt.op in ("Relu", "Clip"):
            acts.append(nxt)
            tail = nxt.outputs[0]
            nxt = _only_user(g, tail, uses)
        w_zp = wdq[2] if wdq[2] is not None else 0
        if nxt is not None and nxt.domain == "" and nxt.op == "QuantizeLinear" and \
                _const_scalar(g, nxt.inputs[1]) is not None and \
                (len(nxt.inputs) < 3 or not nxt.inputs[2] or _const_scalar(g, nxt.inputs[2]) is not None):
            y_s = float(_const_scalar(g, nxt.inputs[1]))
            yz_name = nxt.inputs[2] if len(nxt.inputs) > 2 else ""
            out_dtype = g.consts[yz_name].dtype if yz_name else np.dtype(np.uint8)
            y_zp = int(_const_scalar(g, yz_name)) if yz_name else 0
            lo, hi = _range(out_dtype)
            ok = True
            for act in acts:
                if act.op == "Relu":
                    lo = max(lo, y_zp)
                    continue
                bounds = clip_bounds(g, act)
                if bounds is None:
                    ok = False
                    break
                if bounds[0] is not None:
                    lo = max(lo, _quantize_bound(bounds[0], y_s, y_zp, lo, hi))
                if bounds[1] is not None:
                    hi = min(hi, _quantize_bound(bounds[1], y_s, y_zp, lo, hi))
            if not ok:
                continue
            fused = _qconv(n, a[0], nxt.outputs[0], wq, w_zp, a_zp, bias, (acc_scale / y_s).astype(np.float32),
                           out_dtype, y_zp, lo, hi, fusions + [x.op for x in acts] + ["QuantizeLinear"])
            gone = acts + [nxt]
        else:
            fused = _qconv(n, a[0], n.outputs[0], wq, w_zp, a_zp, bias, acc_scale.astype(np.float32), np.float32,
                           0, 0, 0, fusions)
            gone = []
        replace[id(n)] = fused
        for x in gone:
            replace[id(x)] = None
    if replace:
        g.nodes = [replace.get(id(x), x) for x in g.nodes if replace.get(id(x), x) is not None]
    return g


def _per_channel(g: Graph, name: str, M: int, rank: int):
    """A constant that broadcasts per output channel of a rank-`rank` NCHW tensor, as [M]."""
    v = g.consts.get(name)
    if v is None or v.dtype != np.float32:
        return None
    if v.size == 1 and v.ndim <= rank:
        return np.full(M, v.reshape(-1)[0], np.float32)
    shape = (1,) * (rank - v.ndim) + tuple(v.shape)
    if len(shape) == rank and shape[1] == M and all(d == 1 for i, d in enumerate(shape) if i != 1):
        return v.reshape(M)
    return None


def fuse_float_conv(g: Graph) -> Graph:
    uses = g.consumers()
    replace: dict[int, Node | None] = {}
    for n in g.nodes:
        if n.domain != "" or n.op != "Conv" or n.inputs[1] not in g.consts or id(n) in replace:
            continue
        w = g.consts[n.inputs[1]]
        if w.dtype != np.float32:
            continue
        b_name = n.inputs[2] if len(n.inputs) > 2 else ""
        if b_name and b_name not in g.consts:
            continue
        M, rank = w.shape[0], w.ndim
        w = w.astype(np.float32).copy()
        b = g.consts[b_name].astype(np.float32).copy() if b_name else np.zeros(M, np.float32)
        fusions, gone, tail = ["Conv"], [], n.outputs[0]
        lo, hi = -np.inf, np.inf
        nxt = _only_user(g, tail, uses)
        while nxt is not None and nxt.domain == "":
            other = (nxt.inputs[1] if nxt.inputs[0] == tail else nxt.inputs[0]) if len(nxt.inputs) > 1 else ""
            if nxt.op in ("Mul", "Add") and np.isinf([lo, hi]).all():
                c = _per_channel(g, other, M, rank)
                if c is None:
                    break
                if nxt.op == "Mul":
                    w *= c.reshape((M,) + (1,) * (rank - 1))
                    b *= c
                else:
                    b += c
            elif nxt.op == "Relu":
                lo = max(lo, 0.0)
            elif nxt.op == "Clip":
                bounds = clip_bounds(g, nxt)
                if bounds is None:
                    break
                lo = max(lo, bounds[0]) if bounds[0] is not None else lo
                hi = min(hi, bounds[1]) if bounds[1] is not None else hi
            else:
                break
            fusions.append(nxt.fusions[0] if nxt.fusions else nxt.op)
            gone.append(nxt)
            tail = nxt.outputs[0]
            nxt = _only_user(g, tail, uses)
        if not gone:
            continue
        w_name, b_name2 = f"{n.name}__w_fused", f"{n.name}__b_fused"
        g.consts[w_name], g.consts[b_name2] = w, b
        attrs = dict(n.attrs, lo=lo, hi=hi)
        replace[id(n)] = Node("Conv", "", [n.inputs[0], w_name, b_name2], [tail], attrs, n.name, n.opset,
                              list(dict.fromkeys(fusions)), proto=None)
        for x in gone:
            replace[id(x)] = None
    if replace:
        g.nodes = [replace.get(id(x), x) for x in g.nodes if replace.get(id(x), x) is not None]
    return g


def fuse_qconv_max_pool(g: Graph) -> Graph:
    """pyrt.QConv -> MaxPool whose windows tile the conv output (kernel == strides, no pads,
    no dilation, no ceil_mode, no Indices) becomes one QConv with a `pool` attribute: the
    pool takes the max of the int32 accumulators and requantizes once per window, which is
    exact because the requantization is monotone (multipliers > 0) and a max commutes with
    a monotone map. One group, a u8 or s8 output, and the MaxPool the conv output's only
    user."""
    uses = g.consumers()
    prod = g.producers()
    drop = set()
    for n in g.nodes:
        if n.domain != "" or n.op != "MaxPool" or len(n.outputs) != 1:  # a second output: Indices
            continue
        k = list(n.attrs.get("kernel_shape", []))
        if (len(k) != 2 or list(n.attrs.get("strides", [1, 1])) != k or any(n.attrs.get("pads", [0] * 4))
                or list(n.attrs.get("dilations", [1, 1])) != [1, 1] or n.attrs.get("ceil_mode", 0)
                or n.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or k == [1, 1]):
            continue
        conv = prod.get(n.inputs[0])
        if (conv is None or conv.domain != "pyrt" or conv.op != "QConv" or "pool" in conv.attrs
                or _only_user(g, n.inputs[0], uses) is not n):
            continue
        at = conv.attrs
        mult = at["mult"]
        if (int(at.get("group", 1)) != 1 or at["w"].ndim != 4 or at["out_dtype"] not in (np.uint8, np.int8)
                or mult is None or not np.all(np.isfinite(mult)) or not np.all(mult > 0)):
            continue
        at["pool"] = [int(k[0]), int(k[1])]
        at["pool_label"] = n.label()
        conv.outputs = [n.outputs[0]]
        conv.fusions = conv.fusions + ["MaxPool"]
        drop.add(id(n))
    g.nodes = [n for n in g.nodes if id(n) not in drop]
    return g
