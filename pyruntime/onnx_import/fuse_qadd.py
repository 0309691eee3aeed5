"""DequantizeLinear -> Add [-> Relu] -> QuantizeLinear into one quantized Add (pyrt.QAdd),
and a quantized Add of a constant row into the int8 GEMM that feeds it.

onnxruntime's QDQ quantizer writes a bias or a residual as exactly this chain; run as
float it costs two dequantizations, a float Add and a quantization per element. The fused
op computes reference.qlinear_add, with Relu narrowing the output clamp.

A MatMul's bias stays such an Add after quantization (MatMul -> Q -> DQ -> Add -> Q, or
QLinearMatMul -> QLinearAdd). Its per-element cost is another pass over the GEMM's output
(about 5% of the int8 MLP at batch 64), so the GEMM's epilogue applies it instead, with
the same f32 arithmetic, bit for bit.
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


def _add_of_row(g: Graph, n: Node):
    """A quantized Add as (a, b, a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, out_dtype, lo, hi),
    for pyrt.QAdd and com.microsoft QLinearAdd with constant quantization parameters; else None."""
    if n.domain == "pyrt" and n.op == "QAdd":
        at = n.attrs
        return (*n.inputs[:2], at["a_scale"], at["a_zp"], at["b_scale"], at["b_zp"], at["y_scale"], at["y_zp"],
                at["out_dtype"], at["lo"], at["hi"])
    if n.domain == "com.microsoft" and n.op == "QLinearAdd":
        a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = (n.inputs + [""] * 8)[:8]
        scales = [_scalar_const(g, x) for x in (a_s, b_s, y_s)]
        zps = [_scalar_const(g, x) if x else 0 for x in (a_zp, b_zp, y_zp)]
        if any(v is None for v in scales + zps):
            return None
        out_dtype = g.consts[y_zp].dtype if y_zp else None
        return (a, b, float(scales[0]), int(zps[0]), float(scales[1]), int(zps[1]), float(scales[2]), int(zps[2]),
                out_dtype, None, None)
    return None


def fuse_qgemm_row_add(g: Graph) -> Graph:
    """pyrt.QGemm (u8/s8 out) -> quantized Add of a constant row into one pyrt.QGemm whose
    epilogue also does the Add (its attribute `add`)."""
    prod, uses = g.producers(), g.consumers()
    gone = set()
    for n in g.nodes:
        add = _add_of_row(g, n)
        if add is None:
            continue
        a, b, sa, za, sb, zb, sy, zy, out_dtype, lo, hi = add
        gemm_side = 0 if prod.get(a) is not None and prod[a].op == "QGemm" and prod[a].domain == "pyrt" else 1
        x, row = (a, b) if gemm_side == 0 else (b, a)
        q = prod.get(x)
        if q is None or q.domain != "pyrt" or q.op != "QGemm" or "add" in q.attrs or id(q) in gone:
            continue
        if q.attrs["out_dtype"] not in (np.uint8, np.int8) or _only_user(g, x, uses) is not n:
            continue
        N = q.attrs["w"].shape[1]
        c = g.consts.get(row)
        if c is None or c.dtype not in (np.uint8, np.int8) or c.size != N or any(d != 1 for d in c.shape[:-1]):
            continue
        if c.ndim > 1 and c.ndim > len(g.value_shapes.get(x) or ()):
            continue  # the row may add leading dimensions to the output
        if not all(np.isfinite(v) and v > 0 for v in (sa, sb, sy)):
            continue  # the Add's own lowering refuses it
        if out_dtype is None:  # QLinearAdd without C_zero_point: A's dtype
            out_dtype = q.attrs["out_dtype"] if gemm_side == 0 else c.dtype
        out_dtype = np.dtype(out_dtype)
        if out_dtype not in (np.uint8, np.int8):
            continue  # the Add's own lowering refuses it
        if lo is None:
            lo, hi = (0, 255) if out_dtype == np.uint8 else (-128, 127)
        m_x, m_row = (sa, sb) if gemm_side == 0 else (sb, sa)
        z_x, z_row = (za, zb) if gemm_side == 0 else (zb, za)
        m_x = np.float32(np.float64(m_x) / np.float64(sy))
        m_row = np.float32(np.float64(m_row) / np.float64(sy))
        # The QAdd op's f32 product for the row's operand, rounded as it rounds it.
        col = (c.reshape(-1).astype(np.int32) - np.int32(z_row)).astype(np.float32) * m_row
        q.attrs.update(add=dict(col=np.ascontiguousarray(col, np.float32), in_zp=int(z_x), mult=float(m_x),
                                out_zp=int(zy), lo=int(lo), hi=int(hi)), out_dtype=out_dtype)
        q.outputs = [n.outputs[0]]
        # pyrt.QAdd's fusions: DequantizeLinear(A), DequantizeLinear(B), Add, [Relu,] QuantizeLinear
        q.fusions = q.fusions + (["DequantizeLinear", "Add(row)", *n.fusions[3:]] if n.domain == "pyrt"
                                 else ["QLinearAdd(row)"])
        gone.add(id(n))
    if gone:
        g.nodes = [x for x in g.nodes if id(x) not in gone]
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
