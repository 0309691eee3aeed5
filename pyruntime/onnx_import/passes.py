"""Graph passes, each small and separately tested: constant folding, BatchNorm folding,
QDQ and QOperator fusion into int8 GEMMs, fp32 GEMM + activation fusion, dead-node removal.

Fusion follows onnxruntime's QDQ selector rules: a DequantizeLinear -> MatMul/Gemm ->
QuantizeLinear chain with constant weights and per-tensor activation quantization becomes
one int8 GEMM with a requantizing epilogue; without the Q it becomes an int8 GEMM with
fp32 output. Relu/Clip before the Q narrow the clamp.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..errors import UnsupportedError
from .evaluate import evaluate
from .graph import Graph, Node

# Q/DQ stay unfolded so fusion can see them; the rest fold whenever inputs are constant.
_NOT_FOLDED = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_ACTIVATIONS = {"Relu", "Clip"}


def _const_of_constant_node(n: Node) -> np.ndarray:
    a = n.attrs
    if "value" in a:
        return np.asarray(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    raise UnsupportedError(f"{n.label()}: Constant with attributes {sorted(a)} is not supported; "
                           "use 'value' (a tensor) or value_float(s) / value_int(s)")


def _dropout_may_train(g: Graph, n: Node) -> bool:
    """A Dropout whose training_mode input is not a constant false (the lowering decides)."""
    t = n.inputs[2] if n.op == "Dropout" and len(n.inputs) > 2 else ""
    return bool(t) and (t not in g.consts or bool(np.asarray(g.consts[t]).reshape(-1)[0]))


def _rename_uses(g: Graph, old: str, new: str) -> None:
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]


def fold_constants(g: Graph) -> Graph:
    """Constant nodes and nodes with only constant inputs become constants; Identity and
    inference-mode Dropout are bypassed (kept only where they produce a graph output)."""
    outputs = g.output_names()
    kept = []
    for n in g.nodes:
        if n.domain == "" and n.op == "Constant":
            g.consts[n.outputs[0]] = _const_of_constant_node(n)
            continue
        if n.domain == "" and n.op in ("Identity", "Dropout") and n.outputs[0] not in outputs \
                and all(not o for o in n.outputs[1:]) and not _dropout_may_train(g, n):
            _rename_uses(g, n.outputs[0], n.inputs[0])
            continue
        ins = [i for i in n.inputs if i]
        if n.domain == "" and n.op not in _NOT_FOLDED and ins and all(i in g.consts for i in ins) \
                and not any(o in outputs for o in n.outputs):
            values = evaluate(n, [g.consts.get(i) if i else None for i in n.inputs], g.opsets)
            for name, v in zip([o for o in n.outputs if o], values):
                g.consts[name] = v
            continue
        kept.append(n)
    g.nodes = kept
    return g


def fold_batchnorm(g: Graph) -> Graph:
    """BatchNormalization with constant parameters becomes y = x * a + b per channel."""
    for n in list(g.nodes):
        if n.domain != "" or n.op != "BatchNormalization" or len([o for o in n.outputs if o]) != 1 \
                or int(n.attrs.get("training_mode", 0)):
            continue
        x, scale, bias, mean, var = n.inputs[:5]
        if not all(p in g.consts for p in (scale, bias, mean, var)):
            continue
        rank = len(g.value_shapes.get(x, []))
        if rank < 2:
            continue
        eps = float(n.attrs.get("epsilon", 1e-5))
        s = g.consts[scale].astype(np.float64) / np.sqrt(g.consts[var].astype(np.float64) + eps)
        b = g.consts[bias].astype(np.float64) - g.consts[mean].astype(np.float64) * s
        bshape = (-1,) + (1,) * (rank - 2)
        mul_c, add_c, mid = f"{n.outputs[0]}__bn_a", f"{n.outputs[0]}__bn_b", f"{n.outputs[0]}__bn_mul"
        g.consts[mul_c] = s.astype(np.float32).reshape(bshape)
        g.consts[add_c] = b.astype(np.float32).reshape(bshape)
        at = g.nodes.index(n)
        mul = Node("Mul", "", [x, mul_c], [mid], {}, n.name + "/scale", g.opsets.get("", 13), ["BatchNormalization"])
        add = Node("Add", "", [mid, add_c], [n.outputs[0]], {}, n.name + "/shift", g.opsets.get("", 13),
                   ["BatchNormalization"])
        g.nodes[at:at + 1] = [mul, add]
    return g


def remove_dead(g: Graph) -> Graph:
    needed = g.output_names()
    kept = []
    for n in reversed(g.nodes):
        if any(o in needed for o in n.outputs if o):
            kept.append(n)
            needed.update(i for i in n.inputs if i)
    g.nodes = kept[::-1]
    return g


# ---------------------------------------------------------------------------------------
# int8 fusion


def _single_consumer(g: Graph, name: str, uses) -> Node | None:
    users = uses.get(name, [])
    if len(users) != 1 or name in g.output_names():
        return None
    return users[0]


def const_scalar(g: Graph, name: str):
    """The value of a one-element constant, else None."""
    v = g.consts.get(name) if name else None
    return None if v is None or v.size != 1 else v.reshape(-1)[0]



def clip_bounds(g: Graph, clip: Node):
    """(min, max) of a Clip, each None when absent; None when a bound is a runtime tensor
    (opset >= 11 takes them as inputs, older opsets as attributes)."""
    bounds = []
    for i, key in ((1, "min"), (2, "max")):
        if len(clip.inputs) > i and clip.inputs[i]:
            v = const_scalar(g, clip.inputs[i])
            if v is None:
                return None
            bounds.append(float(v))
        else:
            v = clip.attrs.get(key)
            bounds.append(None if v is None else float(v))
    return tuple(bounds)


def _dq(g: Graph, name: str, prod):
    """(x, scale, zp, axis) when `name` is a DequantizeLinear output with constant params."""
    n = prod.get(name)
    if n is None or n.op != "DequantizeLinear" or n.domain != "":
        return None
    if n.inputs[1] not in g.consts or (len(n.inputs) > 2 and n.inputs[2] and n.inputs[2] not in g.consts):
        return None
    zp = g.consts[n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] else None
    return n.inputs[0], g.consts[n.inputs[1]], zp, int(n.attrs.get("axis", 1)), n


def _quantize_bound(v: float, scale: float, zp: int, lo: int, hi: int) -> int:
    q = np.rint(np.float32(v) / np.float32(scale)) + zp
    return int(np.clip(q, lo, hi))


def _weights_per_column(scale: np.ndarray, zp, axis: int, rank: int, n_cols: int, col_axis: int):
    """Scale/zero point of constant weights as per-column vectors, or None if the
    quantization axis is not the output-column axis."""
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    zp_v = np.zeros(1, np.int32) if zp is None else np.asarray(zp).reshape(-1).astype(np.int32)
    if scale.size > 1 and (axis % rank) != col_axis:
        return None
    if scale.size not in (1, n_cols) or zp_v.size not in (1, n_cols):
        return None
    return scale, zp_v


def _make_qgemm(name, a_name, out_name, w, w_zp, a_zp, bias, mult, out_dtype, out_zp, lo, hi, fusions, opset,
                a_scale=None, w_scale=None):
    attrs = dict(w=np.ascontiguousarray(w), w_zp=w_zp, a_zp=int(a_zp), bias=bias,
                 mult=None if mult is None else np.asarray(mult, np.float32),
                 out_dtype=np.dtype(out_dtype), out_zp=int(out_zp), lo=int(lo), hi=int(hi))
    return Node("QGemm", "pyrt", [a_name], [out_name], attrs, name, opset, fusions)


def _int32_bias(bias_f, acc_scale: np.ndarray, n: int) -> np.ndarray | None:
    """A float bias on an int8 GEMM in the accumulator's scale (s_a * alpha * s_w[n]); None
    where a value would not fit int32 (the layer then stays unfused)."""
    acc = np.broadcast_to(np.asarray(acc_scale, np.float64).reshape(-1), (n,))
    q = np.rint(np.broadcast_to(np.asarray(bias_f, np.float64).reshape(-1), (n,)) / acc)
    if not np.all(np.isfinite(q)) or np.abs(q).max(initial=0) > 2**31 - 1:
        return None
    return q.astype(np.int32)


def _row_vector(c: np.ndarray, n: int, out_rank: int | None) -> bool:
    """Whether c broadcasts along the output columns only, without changing the output's
    shape: one value or n values, shaped [n] (or [1, n] on an output of rank >= 2)."""
    if c.size not in (1, n):
        return False
    if c.ndim <= 1:
        return True
    return c.ndim == 2 and c.shape[0] == 1 and out_rank is not None and out_rank >= 2


def _gemm_bias(g: Graph, name: str, prod, n: int, acc_scale: np.ndarray, out_rank: int | None):
    """The int32 bias vector (accumulator scale) for a bias input: a constant float tensor, or
    a DequantizeLinear of a constant int32 tensor (used as is when its scale is the
    accumulator's and its zero point 0, as quantizers emit it; rescaled otherwise). None if
    the input is neither, or not a row vector."""
    c_dq = _dq(g, name, prod)
    if c_dq is not None:
        q = g.consts.get(c_dq[0])
        if q is None or q.dtype != np.int32 or not _row_vector(q, n, out_rank):
            return None
        s_b = np.asarray(c_dq[1], np.float32).reshape(-1)
        zp_b = np.zeros(1, np.int64) if c_dq[2] is None else np.asarray(c_dq[2]).reshape(-1).astype(np.int64)
        if s_b.size not in (1, n) or zp_b.size not in (1, n):
            return None
        vals = np.broadcast_to(q.reshape(-1), (n,)).astype(np.int64)
        acc32 = np.broadcast_to(np.asarray(acc_scale, np.float64).reshape(-1), (n,)).astype(np.float32)
        if not zp_b.any() and np.array_equal(np.broadcast_to(s_b, (n,)), acc32):
            return vals.astype(np.int32)
        bias_f = ((vals - zp_b).astype(np.float32) * s_b).astype(np.float64)
        return _int32_bias(bias_f, acc_scale, n)
    c = g.consts.get(name)
    if c is not None and c.dtype == np.float32 and _row_vector(c, n, out_rank):
        return _int32_bias(c, acc_scale, n)
    return None


def _q_params(g: Graph, q: Node):
    """(scale, zero point, dtype) of a per-tensor QuantizeLinear with constant parameters and
    an 8-bit output, else None."""
    scale = g.consts.get(q.inputs[1])
    if scale is None or scale.size != 1 or scale.dtype != np.float32 or int(q.attrs.get("block_size", 0)):
        return None
    zp_name = q.inputs[2] if len(q.inputs) > 2 else ""
    if zp_name:
        zp = g.consts.get(zp_name)
        if zp is None or zp.size != 1:
            return None
        dt, zp_v = zp.dtype, int(zp.reshape(-1)[0])
    else:
        od = int(q.attrs.get("output_dtype", 0))
        dt = {0: np.dtype(np.uint8), onnx.TensorProto.UINT8: np.dtype(np.uint8),
              onnx.TensorProto.INT8: np.dtype(np.int8)}.get(od)
        zp_v = 0
    if dt not in (np.uint8, np.int8):
        return None
    return float(scale.reshape(-1)[0]), zp_v, np.dtype(dt)


def fuse_qdq(g: Graph) -> Graph:
    """DQ -> MatMul/Gemm [-> Add bias] [-> Relu/Clip] [-> Q] into pyrt.QGemm."""
    changed = True
    while changed:
        changed = False
        prod, uses = g.producers(), g.consumers()
        for n in g.nodes:
            if n.domain != "" or n.op not in ("MatMul", "Gemm"):
                continue
            fused = _try_fuse_qdq_gemm(g, n, prod, uses)
            if fused:
                changed = True
                break
    return remove_dead(g)


def _try_fuse_qdq_gemm(g: Graph, n: Node, prod, uses) -> bool:
    if n.op == "Gemm" and (int(n.attrs.get("transA", 0)) or float(n.attrs.get("beta", 1.0)) != 1.0):
        return False
    a = _dq(g, n.inputs[0], prod)
    b = _dq(g, n.inputs[1], prod)
    if a is None or b is None or b[0] not in g.consts:
        return False
    a_x, a_s, a_zp, _, _ = a
    if a_s.size != 1 or (a_zp is not None and a_zp.size != 1):
        return False
    w = g.consts[b[0]]
    if w.ndim != 2 or w.dtype not in (np.int8, np.uint8):
        return False
    trans_b = n.op == "Gemm" and int(n.attrs.get("transB", 0))
    alpha = float(n.attrs.get("alpha", 1.0)) if n.op == "Gemm" else 1.0
    N = w.shape[0] if trans_b else w.shape[1]
    cols = _weights_per_column(b[1], b[2], b[3], 2, N, 0 if trans_b else 1)
    if cols is None:
        return False
    w_s, w_zp = cols
    if trans_b:
        w = w.T
    s_a = float(a_s.reshape(-1)[0])
    a_zp_v = 0 if a_zp is None else int(a_zp.reshape(-1)[0])
    fusions = ["DequantizeLinear(A)", "DequantizeLinear(W)", n.op]
    mult_acc = np.float64(s_a) * alpha * w_s.astype(np.float64)
    bias = None
    tail = n.outputs[0]
    # a Gemm's output is 2-D; a MatMul's has A's rank (at least 1) when shape inference knows it
    out_rank = 2 if n.op == "Gemm" else (len(g.value_shapes[tail]) if g.value_shapes.get(tail) else None)
    if n.op == "Gemm" and len(n.inputs) > 2 and n.inputs[2]:
        bias = _gemm_bias(g, n.inputs[2], prod, N, mult_acc, out_rank)
        if bias is None:
            return False
        fusions.append("bias")
    nxt = _single_consumer(g, tail, uses)
    bias_add = None
    if bias is None and nxt is not None and nxt.op == "Add" and nxt.domain == "":
        other = nxt.inputs[1] if nxt.inputs[0] == tail else nxt.inputs[0]
        bias = _gemm_bias(g, other, prod, N, mult_acc, out_rank)
        if bias is not None:
            fusions.append("bias")
            bias_add = nxt
            tail = nxt.outputs[0]
            nxt = _single_consumer(g, tail, uses)
    pre_activation = tail
    acts = []
    while nxt is not None and nxt.op in _ACTIVATIONS and nxt.domain == "":
        acts.append(nxt)
        tail = nxt.outputs[0]
        nxt = _single_consumer(g, tail, uses)
    qp = _q_params(g, nxt) if nxt is not None and nxt.op == "QuantizeLinear" and nxt.domain == "" else None
    if qp is not None:
        y_s, y_zp, out_dtype = qp
        lo, hi = (0, 255) if out_dtype == np.uint8 else (-128, 127)
        for act in acts:
            if act.op == "Relu":
                lo = max(lo, y_zp)
            else:
                bounds = clip_bounds(g, act)
                if bounds is None:
                    return False
                mn, mx = bounds
                if mn is not None:
                    lo = max(lo, _quantize_bound(float(mn), y_s, y_zp, lo, hi))
                if mx is not None:
                    hi = min(hi, _quantize_bound(float(mx), y_s, y_zp, lo, hi))
            fusions.append(act.op)
        fusions.append("QuantizeLinear")
        mult = (mult_acc / y_s).astype(np.float32)
        out_name = nxt.outputs[0]
        nodes_gone = {id(x) for x in [n, nxt, bias_add] + acts if x is not None}
    else:
        # fp32 output: activations after it stay separate nodes.
        out_dtype, y_zp, lo, hi = np.float32, 0, 0, 0
        mult = mult_acc.astype(np.float32)
        out_name = pre_activation
        nodes_gone = {id(x) for x in (n, bias_add) if x is not None}
    q = _make_qgemm(n.name, a_x, out_name, w, w_zp, a_zp_v, bias, mult, out_dtype, y_zp, lo, hi, fusions, n.opset)
    at = g.nodes.index(n)
    g.nodes[at] = q
    g.nodes = [x for x in g.nodes if id(x) not in nodes_gone or x is q]
    return True


# Ops that commute with DQ and Q of one per-tensor scale (> 0, checked at load) and zero
# point: they move bytes, or (MaxPool) pick the largest, which both maps preserve.
_SHAPE_OPS = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool"}


def _same_const(g: Graph, a: str, b: str) -> bool:
    if not a or not b or a not in g.consts or b not in g.consts:
        return False
    x, y = g.consts[a], g.consts[b]
    return x.dtype == y.dtype and x.size == 1 and y.size == 1 and x.reshape(-1)[0] == y.reshape(-1)[0]


def drop_qdq_around_shape_ops(g: Graph) -> Graph:
    """DQ -> Reshape/Flatten/Transpose/Squeeze/Unsqueeze/MaxPool -> Q with the same constant
    per-tensor scale and zero point (dtype included) runs the op on the quantized tensor:
    Q(DQ(x)) is x exactly, and the op commutes with both. The DQ stays for its other
    consumers."""
    prod, uses = g.producers(), g.consumers()
    outputs = g.output_names()
    for n in g.nodes:
        if n.domain != "" or n.op not in _SHAPE_OPS or not n.inputs or n.outputs[0] in outputs \
                or len([o for o in n.outputs if o]) != 1:  # MaxPool's Indices would change meaning
            continue
        dq = prod.get(n.inputs[0])
        users = uses.get(n.outputs[0], [])
        if dq is None or dq.domain != "" or dq.op != "DequantizeLinear" or len(users) != 1:
            continue
        q = users[0]
        if q.domain != "" or q.op != "QuantizeLinear" or q.inputs[0] != n.outputs[0]:
            continue
        dq_ins, q_ins = dq.inputs + [""] * (3 - len(dq.inputs)), q.inputs + [""] * (3 - len(q.inputs))
        if not (_same_const(g, dq_ins[1], q_ins[1]) and _same_const(g, dq_ins[2], q_ins[2])) \
                or g.consts[q_ins[1]].dtype != np.float32 or g.consts[q_ins[2]].dtype not in (np.uint8, np.int8) \
                or int(dq.attrs.get("block_size", 0)) or int(q.attrs.get("block_size", 0)):
            continue
        n.inputs = [dq.inputs[0]] + n.inputs[1:]
        n.outputs = [q.outputs[0]] + n.outputs[1:]
        n.fusions = n.fusions + ["DequantizeLinear", "QuantizeLinear"]
        q.outputs = [f"{q.outputs[0]}__dropped"]  # dead now: remove_dead takes it and, if unused, the DQ
        prod, uses = g.producers(), g.consumers()
    return remove_dead(g)


def fuse_qoperator(g: Graph) -> Graph:
    """QLinearMatMul, MatMulInteger and com.microsoft QGemm with constant weights and
    quantization parameters into pyrt.QGemm; otherwise they keep their general kernels."""
    for i, n in enumerate(g.nodes):
        q = None
        if n.domain == "" and n.op == "QLinearMatMul":
            q = _fuse_qlinear(g, n, n.inputs[0], n.inputs[1], n.inputs[2], n.inputs[3], n.inputs[4], n.inputs[5],
                              "", n.inputs[6], n.inputs[7], False, 1.0)
        elif n.domain == "" and n.op == "MatMulInteger":
            q = _fuse_matmul_integer(g, n)
        elif n.domain == "com.microsoft" and n.op == "QGemm" and not int(n.attrs.get("transA", 0)):
            ins = n.inputs + [""] * (9 - len(n.inputs))
            q = _fuse_qlinear(g, n, ins[0], ins[1], ins[2], ins[3], ins[4], ins[5], ins[6], ins[7], ins[8],
                              bool(int(n.attrs.get("transB", 0))), float(n.attrs.get("alpha", 1.0)))
        if q is not None:
            g.nodes[i] = q
    return g


def _fuse_qlinear(g, n, a, a_s, a_zp, b, b_s, b_zp, c, y_s, y_zp, trans_b, alpha):
    consts = g.consts
    needed = [a_s, b, b_s, y_s] + [x for x in (a_zp, b_zp, y_zp, c) if x]
    if not all(x in consts for x in needed if x) or (not y_s and n.op != "QGemm"):
        return None
    w = consts[b]
    if w.ndim != 2 or consts[a_s].size != 1 or (a_zp and consts[a_zp].size != 1):
        return None
    if trans_b:
        w = w.T
    N = w.shape[1]
    w_s = consts[b_s].astype(np.float32).reshape(-1)
    w_zp = consts[b_zp].reshape(-1).astype(np.int32) if b_zp else np.zeros(1, np.int32)
    if w_s.size not in (1, N) or w_zp.size not in (1, N):
        return None
    if y_s and consts[y_s].size != 1:
        return None
    bias = None
    if c:  # int32, scale alpha / beta * a_scale * b_scale: the accumulator's, whatever beta
        if consts[c].dtype != np.int32 or not _row_vector(consts[c], N, 2):
            return None
        bias = np.broadcast_to(consts[c].reshape(-1), (N,)).astype(np.int32)
    s_a = float(consts[a_s].reshape(-1)[0])
    acc = np.float64(s_a) * alpha * w_s.astype(np.float64)
    a_zp_v = int(consts[a_zp].reshape(-1)[0]) if a_zp else 0
    if y_s:
        y_zp_arr = consts[y_zp] if y_zp else np.zeros(1, np.uint8)
        out_dtype = y_zp_arr.dtype
        lo, hi = (0, 255) if out_dtype == np.uint8 else (-128, 127)
        mult = (acc / float(consts[y_s].reshape(-1)[0])).astype(np.float32)
        return _make_qgemm(n.name, a, n.outputs[0], w, w_zp, a_zp_v, bias, mult, out_dtype,
                           int(y_zp_arr.reshape(-1)[0]), lo, hi, [n.op], n.opset)
    return _make_qgemm(n.name, a, n.outputs[0], w, w_zp, a_zp_v, bias, acc.astype(np.float32), np.float32, 0, 0, 0,
                       [n.op], n.opset)


def _fuse_matmul_integer(g, n):
    ins = n.inputs + [""] * (4 - len(n.inputs))
    a, b, a_zp, b_zp = ins[:4]
    if b not in g.consts or g.consts[b].ndim != 2 or (a_zp and (a_zp not in g.consts or g.consts[a_zp].size != 1)):
        return None
    if b_zp and b_zp not in g.consts:
        return None
    w = g.consts[b]
    w_zp = g.consts[b_zp].reshape(-1).astype(np.int32) if b_zp else np.zeros(1, np.int32)
    if w_zp.size not in (1, w.shape[1]):
        return None
    a_zp_v = int(g.consts[a_zp].reshape(-1)[0]) if a_zp else 0
    return _make_qgemm(n.name, a, n.outputs[0], w, w_zp, a_zp_v, None, None, np.int32, 0, 0, 0, [n.op], n.opset)


# ---------------------------------------------------------------------------------------
# fp32 fusion


def fuse_float_gemm(g: Graph) -> Graph:
    """MatMul/Gemm with constant 2-D weights [+ bias Add] [+ Relu/Clip] into pyrt.FGemm."""
    changed = True
    while changed:
        changed = False
        uses = g.consumers()
        for n in g.nodes:
            if n.domain == "" and n.op in ("MatMul", "Gemm") and _try_fuse_float(g, n, uses):
                changed = True
                break
    return g


def _try_fuse_float(g: Graph, n: Node, uses) -> bool:
    if len(n.inputs) < 2 or n.inputs[1] not in g.consts:
        return False
    w = g.consts[n.inputs[1]]
    if w.ndim != 2 or w.dtype != np.float32:
        return False
    fusions = [n.op]
    if n.op == "Gemm":
        if int(n.attrs.get("transA", 0)):
            return False
        if int(n.attrs.get("transB", 0)):
            w = w.T
        w = w * np.float32(n.attrs.get("alpha", 1.0))
    N = w.shape[1]
    bias = None
    if n.op == "Gemm" and len(n.inputs) > 2 and n.inputs[2]:
        c = g.consts.get(n.inputs[2])
        if c is None or c.dtype != np.float32 or not _row_vector(c, N, 2):
            return False
        bias = np.broadcast_to(c.reshape(-1) * np.float32(n.attrs.get("beta", 1.0)), (N,)).astype(np.float32)
        fusions.append("bias")
    tail = n.outputs[0]
    gone = [n]
    nxt = _single_consumer(g, tail, uses)
    out_rank = 2 if n.op == "Gemm" else (len(g.value_shapes[tail]) if g.value_shapes.get(tail) else None)
    if bias is None and nxt is not None and nxt.op == "Add" and nxt.domain == "":
        other = nxt.inputs[1] if nxt.inputs[0] == tail else nxt.inputs[0]
        c = g.consts.get(other)
        if c is not None and c.dtype == np.float32 and _row_vector(c, N, out_rank):
            bias = np.broadcast_to(c.reshape(-1), (N,)).astype(np.float32)
            fusions.append("bias")
            gone.append(nxt)
            tail = nxt.outputs[0]
            nxt = _single_consumer(g, tail, uses)
    lo, hi = -np.inf, np.inf
    while nxt is not None and nxt.op in _ACTIVATIONS and nxt.domain == "":
        if nxt.op == "Relu":
            lo = max(lo, 0.0)
        else:
            bounds = clip_bounds(g, nxt)
            if bounds is None:
                break
            mn, mx = bounds
            lo = max(lo, mn) if mn is not None else lo
            hi = min(hi, mx) if mx is not None else hi
        fusions.append(nxt.op)
        gone.append(nxt)
        tail = nxt.outputs[0]
        nxt = _single_consumer(g, tail, uses)
    f = Node("FGemm", "pyrt", [n.inputs[0]], [tail], dict(w=np.ascontiguousarray(w, np.float32), bias=bias,
                                                          lo=float(lo), hi=float(hi)), n.name, n.opset, fusions)
    at = g.nodes.index(n)
    ids = {id(x) for x in gone}
    g.nodes[at] = f
    g.nodes = [x for x in g.nodes if id(x) not in ids or x is f]
    return True


def run_all(g: Graph) -> Graph:
    for p in (fold_constants, fold_batchnorm, drop_qdq_around_shape_ops, fuse_qoperator, fuse_qdq, fuse_float_gemm,
              remove_dead):
        g = p(g)
    return g
