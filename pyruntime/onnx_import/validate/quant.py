"""6. quantization (`validate_quantization`)."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from ...errors import InputError, ModelError
from .common import (MS_DOMAIN, _FLOAT_TYPES, _INT8_TYPES, _QDQ_ZP_TYPES, _REEXPORT,
                     _graph_attrs, _opset_of, _Scope, _scopes, _type_name)


# --------------------------------------------------------------------------------------
# 6. quantization
# --------------------------------------------------------------------------------------

# One quantized operand: (data ref, scale input index or None, zero-point input index or None,
# role). Data ref: ("i", k) input k or ("o", k) output k. Role drives per-axis length checks:
#   "qdq"      QuantizeLinear/DequantizeLinear: 1-D scale of length L>1 runs along `axis`
#   "scalar"   per-tensor only: one element
#   "rows"     1-D per row of a matrix: L == shape[-2]
#   "cols"     1-D per column: L == shape[-1]
#   "out_ch"   1-D per output channel of a conv weight: L == shape[0]
#   "gemm_b"   QGemm B: per column of op(B): L == N
#   None       no length rule beyond scale/zero-point agreement
_QUANT_OPS: dict[tuple[str, str], list] = {
    ("", "QuantizeLinear"): [(("o", 0), 1, 2, "qdq")],
    ("", "DequantizeLinear"): [(("i", 0), 1, 2, "qdq")],
    ("", "QLinearMatMul"): [(("i", 0), 1, 2, "rows"), (("i", 3), 4, 5, "cols"),
                            (("o", 0), 6, 7, "rows")],
    ("", "QLinearConv"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "out_ch"),
                          (("o", 0), 6, 7, "scalar")],
    ("", "MatMulInteger"): [(("i", 0), None, 2, "rows"), (("i", 1), None, 3, "cols")],
    ("", "ConvInteger"): [(("i", 0), None, 2, "scalar"), (("i", 1), None, 3, "out_ch")],
    ("", "DynamicQuantizeLinear"): [],
    (MS_DOMAIN, "QuantizeLinear"): [(("o", 0), 1, 2, "qdq")],
    (MS_DOMAIN, "DequantizeLinear"): [(("i", 0), 1, 2, "qdq")],
    (MS_DOMAIN, "QGemm"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "gemm_b"),
                           (("o", 0), 7, 8, "scalar")],
    (MS_DOMAIN, "QLinearConv"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "out_ch"),
                                 (("o", 0), 6, 7, "scalar")],
    (MS_DOMAIN, "QLinearAdd"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "scalar"),
                                (("o", 0), 6, 7, "scalar")],
    (MS_DOMAIN, "QLinearMul"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "scalar"),
                                (("o", 0), 6, 7, "scalar")],
    (MS_DOMAIN, "QLinearWhere"): [(("i", 1), 2, 3, "scalar"), (("i", 4), 5, 6, "scalar"),
                                  (("o", 0), 7, 8, "scalar")],
    (MS_DOMAIN, "DynamicQuantizeMatMul"): [(("i", 1), 2, 3, "cols")],
    (MS_DOMAIN, "MatMulIntegerToFloat"): [(("i", 0), 2, 4, None), (("i", 1), 3, 5, "cols")],
    (MS_DOMAIN, "QAttention"): [(("i", 0), 3, 6, "scalar"), (("i", 1), 4, 7, None)],
}
for _op in ("QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearLeakyRelu",
            "QLinearSigmoid", "QLinearSoftmax", "QLinearReduceMean"):
    _QUANT_OPS[(MS_DOMAIN, _op)] = [(("i", 0), 1, 2, "scalar"), (("o", 0), 3, 4, "scalar")]
_QLINEAR_CONCAT = (MS_DOMAIN, "QLinearConcat")  # Y_scale, Y_zp, then (X, X_scale, X_zp)...
# ops whose zero points must be uint8 / int8 (onnx's T1/T2/T3 and the contrib schemas)
_INT8_ZP_OPS = {k for k in _QUANT_OPS if k[1] not in ("QuantizeLinear", "DequantizeLinear")}
_INT8_ZP_OPS.add(_QLINEAR_CONCAT)


class _Info:
    """What is known about the values of one graph scope: types, shapes, constants."""

    def __init__(self, parent: "_Info | None" = None):
        self.types: dict[str, int] = dict(parent.types) if parent else {}
        self.shapes: dict[str, tuple | None] = dict(parent.shapes) if parent else {}
        self.consts: dict[str, object] = dict(parent.consts) if parent else {}  # name -> proto

    def add_vi(self, vi) -> None:
        tp = vi.type
        if tp.WhichOneof("value") != "tensor_type":
            return
        tt = tp.tensor_type
        if tt.elem_type:
            self.types.setdefault(vi.name, tt.elem_type)
        if tt.HasField("shape"):
            self.shapes.setdefault(vi.name, tuple(
                d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim))

    def add_tensor(self, name: str, t: TensorProto) -> None:
        self.types[name] = t.data_type
        self.shapes[name] = tuple(int(d) for d in t.dims)
        self.consts[name] = t


def _const_array(proto) -> np.ndarray | None:
    """A constant's value (TensorProto or Constant's AttributeProto), or None if unreadable."""
    try:
        if isinstance(proto, TensorProto):
            if proto.data_location == TensorProto.EXTERNAL:
                return None
            return numpy_helper.to_array(proto)
        a = proto
        if a.type == AttributeProto.FLOAT:
            return np.array(a.f, np.float32)
        if a.type == AttributeProto.FLOATS:
            return np.array(list(a.floats), np.float32)
        if a.type == AttributeProto.INT:
            return np.array(a.i, np.int64)
        if a.type == AttributeProto.INTS:
            return np.array(list(a.ints), np.int64)
    except Exception:
        return None
    return None


_CONST_ATTR_TYPES = {"value_float": (TensorProto.FLOAT, False),
                     "value_floats": (TensorProto.FLOAT, True),
                     "value_int": (TensorProto.INT64, False),
                     "value_ints": (TensorProto.INT64, True)}


def _add_constant_node(info: _Info, node) -> None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return
    out = node.output[0]
    for a in node.attribute:
        if a.name == "value" and a.HasField("t"):
            info.add_tensor(out, a.t)
        elif a.name in _CONST_ATTR_TYPES:
            dt, vec = _CONST_ATTR_TYPES[a.name]
            info.types[out] = dt
            n = len(a.floats) if a.name == "value_floats" else len(a.ints)
            info.shapes[out] = (n,) if vec else ()
            info.consts[out] = a


def _attr_int(node, name: str, default, desc: str):
    for a in node.attribute:
        if a.name == name:
            if a.type != AttributeProto.INT:
                raise ModelError(f"{desc} has attribute '{name}' of type "
                                 f"{AttributeProto.AttributeType.Name(a.type)}, expected INT; "
                                 f"{_REEXPORT}")
            return a.i
    return default


def _numel(shape) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return math.prod(shape)


def _check_scale(node, desc, info: _Info, sname: str, role_desc: str) -> None:
    t = info.types.get(sname)
    if t is not None and t not in _FLOAT_TYPES:
        raise ModelError(f"{desc}: scale '{sname}' (of {role_desc}) has type {_type_name(t)}; "
                         f"a scale must be a float tensor (float, float16 or bfloat16); {_REEXPORT}")
    if sname not in info.consts:
        return
    arr = _const_array(info.consts[sname])
    if arr is None:
        return
    vals = np.asarray(arr, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(vals) | (vals <= 0)
    if bad.any():
        k = int(np.argmax(bad))
        v = vals[k]
        what = "NaN" if np.isnan(v) else ("infinite" if np.isinf(v) else
                                          ("zero" if v == 0 else "negative"))
        at = f" at index {k}" if vals.size > 1 else ""
        raise ModelError(f"{desc}: scale '{sname}' (of {role_desc}) is {what} ({float(v)!r}{at}); "
                         "every quantization scale must be finite and > 0; fix the scale (recalibrate "
                         "and re-quantize the model)")


def _check_zp_type(node, key, desc, info: _Info, zname: str, dname: str | None,
                   data_is_output: bool, opset: int, role_desc: str) -> int | None:
    zt = info.types.get(zname)
    dt = info.types.get(dname) if dname else None
    if zt is not None:
        allowed = _INT8_TYPES if key in _INT8_ZP_OPS else _QDQ_ZP_TYPES
        if key[1] == "QuantizeLinear" and zt == TensorProto.INT32:
            allowed = allowed - {TensorProto.INT32}
        if zt not in allowed:
            exp = " or ".join(sorted(_type_name(x) for x in allowed)) if len(allowed) < 4 else \
                "uint8 or int8 (or, from newer opsets, int16/uint16/int4/uint4/float8)"
            raise ModelError(f"{desc}: zero point '{zname}' (of {role_desc}) has type "
                             f"{_type_name(zt)}, expected {exp}; {_REEXPORT}")
    if zt is not None and dt is not None and zt != dt:
        if data_is_output:
            why = (f"the zero point's type decides the output type, but output '{dname}' is "
                   f"declared {_type_name(dt)}")
        else:
            why = f"it must have the type of input '{dname}', which is {_type_name(dt)}"
        raise ModelError(f"{desc}: zero point '{zname}' (of {role_desc}) is {_type_name(zt)}; "
                         f"{why}; "
                         f"make the two types agree; {_REEXPORT}")
    if (key[1] == "DequantizeLinear" and (zt or dt) == TensorProto.INT32 and zname in info.consts):
        arr = _const_array(info.consts[zname])
        if arr is not None and np.any(arr != 0):
            raise ModelError(f"{desc}: zero point '{zname}' of an int32 input must be 0, got "
                             f"{arr.reshape(-1)[np.flatnonzero(arr)[0]]}; {_REEXPORT}")
    return zt


def _check_q_output_type(node, desc, info: _Info, zname: str | None, opset: int) -> None:
    out = node.output[0] if len(node.output) else ""
    ot = info.types.get(out)
    od = _attr_int(node, "output_dtype", 0, desc)
    zt = info.types.get(zname) if zname else None
    if od and zt is not None and od != zt:
        raise ModelError(f"{desc}: attribute output_dtype={_type_name(od)} disagrees with the zero "
                         f"point '{zname}' of type {_type_name(zt)}; they must match; "
                         f"{_REEXPORT}")
    if not zname and not od and ot is not None and ot != TensorProto.UINT8:
        raise ModelError(f"{desc}: without a zero point or output_dtype the output is uint8, but "
                         f"'{out}' is declared {_type_name(ot)}; add a zero point of the wanted "
                         f"type; {_REEXPORT}")
    if od and ot is not None and od != ot:
        raise ModelError(f"{desc}: attribute output_dtype={_type_name(od)} but output '{out}' is "
                         f"declared {_type_name(ot)}; {_REEXPORT}")


def _check_lengths(node, key, desc, info: _Info, sname, zname, dname, role, opset) -> None:
    sshape = info.shapes.get(sname) if sname else None
    zshape = info.shapes.get(zname) if zname else None
    sn, zn = _numel(sshape), _numel(zshape)
    if sn is not None and zn is not None and sn != zn:
        raise ModelError(f"{desc}: scale '{sname}' has {sn} element(s) (shape {list(sshape)}) but "
                         f"zero point '{zname}' has {zn} (shape {list(zshape)}); they must have "
                         f"the same shape; {_REEXPORT}")
    shape = sshape if sshape is not None else zshape
    name = sname if sshape is not None else zname
    if shape is None:
        return
    n = _numel(shape)
    what = "scale" if name == sname else "zero point"
    dshape = info.shapes.get(dname) if dname else None
    if role == "qdq":
        rank = len(shape)
        block = _attr_int(node, "block_size", 0, desc)
        if rank == 0 or (rank == 1 and n == 1 and not block):
            return  # per tensor
        std = key[0] == ""
        if std and opset < 13:
            raise ModelError(f"{desc}: {what} '{name}' has shape {list(shape)}, but before opset "
                             "13 QuantizeLinear/DequantizeLinear take a scalar scale only "
                             "(per-axis needs opset >= 13); convert the model to opset 13 or "
                             f"higher; {_REEXPORT}")
        axis = _attr_int(node, "axis", 1, desc)
        if dshape is None:
            return
        r = len(dshape)
        if not -r <= axis < r:
            raise ModelError(f"{desc}: axis={axis} is out of range for input of rank {r} (shape "
                             f"{list(dshape)}); expected -{r} <= axis < {r}; {_REEXPORT}")
        ax = axis % r
        dim = dshape[ax]
        if block:
            if rank != r:
                raise ModelError(f"{desc}: blocked {what} '{name}' has rank {rank}, expected the "
                                 f"input's rank {r}; {_REEXPORT}")
            for i, (s, d) in enumerate(zip(shape, dshape)):
                if s is None or d is None:
                    continue
                want = -(-d // block) if i == ax else d
                if s != want:
                    raise ModelError(f"{desc}: blocked {what} '{name}' has shape {list(shape)}, "
                                     f"expected {want} at axis {i} for input shape {list(dshape)} "
                                     f"and block_size={block}; {_REEXPORT}")
            return
        if rank != 1:
            raise ModelError(f"{desc}: {what} '{name}' has shape {list(shape)}; expected a scalar "
                             f"(per tensor) or a 1-D tensor (per axis); {_REEXPORT}")
        if dim is not None and n is not None and n != dim:
            raise ModelError(f"{desc}: per-axis {what} '{name}' has {n} elements, but input "
                             f"'{dname}' has {dim} along axis {axis} (shape {list(dshape)}); the "
                             "lengths must match; re-quantize with the right axis, or fix the "
                             "axis attribute")
        return
    if n is None or n == 1:
        return
    if role == "scalar":
        raise ModelError(f"{desc}: {what} '{name}' has {n} elements (shape {list(shape)}), but "
                         f"this operand is quantized per tensor: expected a scalar; {_REEXPORT}")
    if role is None:
        return
    if len(shape) != 1:
        if role in ("out_ch", "gemm_b"):
            raise ModelError(f"{desc}: {what} '{name}' has shape {list(shape)}; expected a scalar "
                             f"or a 1-D tensor; {_REEXPORT}")
        return  # MatMulInteger allows N-D zero points ([D1, D2, M, 1]); not checked here
    if dshape is None:
        return
    want, axis_name = None, ""
    if role == "rows" and len(dshape) >= 2:
        want, axis_name = dshape[-2], "rows"
    elif role == "cols" and len(dshape) >= 2:
        want, axis_name = dshape[-1], "columns"
    elif role == "out_ch" and len(dshape) >= 1:
        want, axis_name = dshape[0], "output channels"
    elif role == "gemm_b" and len(dshape) == 2:
        tb = _attr_int(node, "transB", 0, desc)
        want, axis_name = (dshape[0] if tb else dshape[1]), "columns of op(B)"
    if want is not None and n != want:
        raise ModelError(f"{desc}: {what} '{name}' has {n} elements but '{dname}' has {want} "
                         f"{axis_name} (shape {list(dshape)}); a 1-D {what} must have one entry "
                         f"per {'column' if role in ('cols', 'gemm_b') else axis_name.rstrip('s')}"
                         f"; {_REEXPORT}")


def _check_quant_node(sc: _Scope, i: int, node, info: _Info) -> None:
    d = "" if node.domain == "ai.onnx" else node.domain
    key = (d, node.op_type)
    if key == _QLINEAR_CONCAT:
        groups = [(("o", 0), 0, 1, "scalar")]
        groups += [(("i", k), k + 1, k + 2, "scalar") for k in range(2, len(node.input), 3)]
    else:
        groups = _QUANT_OPS.get(key)
        if groups is None:
            return
    opset = _opset_of(sc.opsets, node.domain)
    opset = opset if isinstance(opset, int) else 0
    desc = sc.node_desc(i, node)

    def name_at(ref):
        lst = node.input if ref[0] == "i" else node.output
        return lst[ref[1]] if ref[1] < len(lst) and lst[ref[1]] else None

    for ref, s_idx, z_idx, role in groups:
        dname = name_at(ref)
        sname = node.input[s_idx] if s_idx is not None and s_idx < len(node.input) else ""
        zname = node.input[z_idx] if z_idx is not None and z_idx < len(node.input) else ""
        role_desc = f"{'output' if ref[0] == 'o' else 'input'} {ref[1]}"
        if dname:
            role_desc += f" '{dname}'"
        if sname:
            _check_scale(node, desc, info, sname, role_desc)
        if zname:
            _check_zp_type(node, key, desc, info, zname, dname, ref[0] == "o", opset, role_desc)
        if key[1] == "QuantizeLinear":
            _check_q_output_type(node, desc, info, zname or None, opset)
        # the per-axis rules of Q/DQ look at the quantized operand's shape: x for both
        shape_ref = node.input[0] if role == "qdq" and len(node.input) else dname
        _check_lengths(node, key, desc, info, sname or None, zname or None, shape_ref, role, opset)


def _quant_scope(sc: _Scope, info: _Info, by_graph: dict) -> None:
    g = sc.graph
    if g is not None:
        for vis in (g.input, g.output, g.value_info):
            for vi in vis:
                info.add_vi(vi)
        for t in g.initializer:
            info.add_tensor(t.name, t)
    for node in sc.nodes:
        _add_constant_node(info, node)
    for i, node in enumerate(sc.nodes):
        _check_quant_node(sc, i, node, info)
        for _, sub in _graph_attrs(node):
            child = by_graph.get(id(sub))
            if child is not None:
                _quant_scope(child, _Info(info), by_graph)


def validate_quantization(model: onnx.ModelProto) -> None:
    """Checks every quantized op's scales and zero points (see the module docstring).

    Constant scales (initializers or Constant nodes) must be finite and > 0; zero points must
    have the dtype the op requires and match the quantized tensor's type; scale and zero point
    must have the same length; a 1-D (per-axis) scale must have one entry per element of the
    quantized axis where that dimension is known (from declared or inferred shapes). Raises
    ModelError naming the node, op, domain, opset and the bad value."""
    if not isinstance(model, onnx.ModelProto):
        raise InputError(f"validate_quantization expects an onnx.ModelProto, got "
                         f"{type(model).__name__}")
    scopes = _scopes(model)
    by_graph = {id(sc.graph): sc for sc in scopes if sc.graph is not None}
    try:
        _quant_scope(scopes[0], _Info(), by_graph)
        for sc in scopes:
            if sc.graph is None and sc.function is not None:
                _quant_scope(sc, _Info(), by_graph)
    except RecursionError:
        raise ModelError("the model's graphs are nested too deeply to validate; "
                         f"{_REEXPORT}") from None

