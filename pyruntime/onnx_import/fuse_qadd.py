"""DequantizeLinear -> Add [-> Relu] -> QuantizeLinear into one quantized Add (pyrt.QAdd).

onnxruntime's QDQ quantizer writes a bias or a residual as exactly this chain; run as
float it costs two dequantizations, a float Add and a quantization per element. The fused
op computes reference.qlinear_add, with Relu narrowing the output clamp.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .graph import Graph, Node
from .lower import LOWER, Lowering, _broadcast_ints
from .passes import const_scalar as _scalar_const


def _dq_scalar(g: Graph, name: str, prod):
    n = prod.get(name)
    if n is None or n.domain != "" or n.op != "DequantizeLinear":
        return None
    scale = _scalar_const(g, n.inputs[1])
    zp_name = n.inputs[2] if len(n.inputs) > 2 else ""
    zp = _scalar_const(g, zp_name) if zp_name else 0
    if scale is None or zp is None:
        return None
    return n.inputs[0], float(scale), int(zp)


def _only_user(g: Graph, name: str, uses):
    users = uses.get(name, [])
    return users[0] if len(users) == 1 and name not in g.output_names() else None


def fuse_qdq_add(g: Graph) -> Graph:
    prod, uses = g.producers(), g.consumers()
    replaced = {}
    for n in g.nodes:
        if n.domain != "" or n.op != "Add":
            continue
        a, b = (_dq_scalar(g, i, prod) for i in n.inputs[:2])
        if a is None or b is None:
            continue
        nxt, acts, tail = _only_user(g, n.outputs[0], uses), [], n.outputs[0]
        while nxt is not None and nxt.domain == "" and nxt.op == "Relu":
            acts.append(nxt)
            tail = nxt.outputs[0]
            nxt = _only_user(g, tail, uses)
        if nxt is None or nxt.domain != "" or nxt.op != "QuantizeLinear":
            continue
        y_s = _scalar_const(g, nxt.inputs[1])
        y_zp_name = nxt.inputs[2] if len(nxt.inputs) > 2 else ""
        if y_s is None or (y_zp_name and _scalar_const(g, y_zp_name) is None):
            continue
        out_dtype = g.consts[y_zp_name].dtype if y_zp_name else np.dtype(np.uint8)
        y_zp = int(_scalar_const(g, y_zp_name)) if y_zp_name else 0
        lo, hi = (0, 255) if out_dtype == np.uint8 else (-128, 127)
        if acts:
            lo = max(lo, y_zp)
        fused = Node("QAdd", "pyrt", [a[0], b[0]], [nxt.outputs[0]],
                     dict(a_scale=a[1], a_zp=a[2], b_scale=b[1], b_zp=b[2], y_scale=float(y_s), y_zp=y_zp,
                          out_dtype=np.dtype(out_dtype), lo=lo, hi=hi),
                     n.name, n.opset, ["DequantizeLinear(A)", "DequantizeLinear(B)", "Add"] +
                     [x.op for x in acts] + ["QuantizeLinear"])
        replaced[id(n)] = fused
        for gone in acts + [nxt]:
            replaced[id(gone)] = None
    if replaced:
        g.nodes = [replaced.get(id(x), x) for x in g.nodes if replaced.get(id(x), x) is not None]
    return g


def lower_pyrt_qadd(low: Lowering, n: Node) -> None:
    at = n.attrs
    a, b = n.inputs
    for name in (a, b):
        if low.dtype(name) not in (np.uint8, np.int8):
            raise ModelError(f"{n.label()}: quantized Add input '{name}' has dtype {low.dtype(name)}")
    for what in ("a_scale", "b_scale", "y_scale"):
        if not np.isfinite(at[what]) or at[what] <= 0:
            raise ModelError(f"{n.label()}: {what} is {at[what]}; scales must be finite and > 0")
    out = tuple(np.broadcast_shapes(low.shape(a), low.shape(b)))
    low.define(n.outputs[0], at["out_dtype"], out)
    ints = _broadcast_ints(n, [low.shape(a), low.shape(b)], out) + [at["a_zp"], at["b_zp"], at["y_zp"], at["lo"],
                                                                    at["hi"]]
    m_a = float(np.float32(np.float64(at["a_scale"]) / np.float64(at["y_scale"])))
    m_b = float(np.float32(np.float64(at["b_scale"]) / np.float64(at["y_scale"])))
    low.emit("qadd", [a, b], [n.outputs[0]], ints, [m_a, m_b])


LOWER[("pyrt", "QAdd")] = lower_pyrt_qadd  # lower_conv wraps it to keep NHWC operands
