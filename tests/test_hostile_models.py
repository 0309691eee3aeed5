"""Hostile-model corpus: every case is refused at load, in-process, with a typed error whose
message names the culprit. Models are built here with onnx.helper (no binary fixtures).

Each CORPUS entry: (id, build(tmp_path) -> (model argument, kwargs), error class, fragments
that must all appear in the message). The whole corpus also runs once in a fresh interpreter
to show that no case crashes or hangs the process.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from pyruntime import InputError, ModelError, PyRuntimeError, UnsupportedError
from pyruntime.onnx_import.validate import (MAX_IR_VERSION, MAX_OPSET, load_model_proto,
                                            validate_quantization)

SEED = 1234
F32 = np.float32


# --------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------

def _model(nodes, inputs, outputs, inits=(), opset=13, ir=None, extra_opsets=(), value_info=()):
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits), value_info=list(value_info))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)] + list(extra_opsets),
                     producer_name="hostile-corpus")
    if ir is not None:
        m.ir_version = ir
    return m


def _vi(name, dt, shape):
    return h.make_tensor_value_info(name, dt, shape)


def mlp(opset=13, ir=None):
    rng = np.random.default_rng(SEED)
    w1 = nh.from_array(rng.standard_normal((4, 8)).astype(F32), "W1")
    w2 = nh.from_array(rng.standard_normal((8, 3)).astype(F32), "W2")
    nodes = [h.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
             h.make_node("Relu", ["h"], ["r"], name="relu"),
             h.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    return _model(nodes, [_vi("x", T.FLOAT, ["N", 4])], [_vi("y", T.FLOAT, ["N", 3])],
                  [w1, w2], opset=opset, ir=ir)


def _scalar(name, value, dt=F32):
    return nh.from_array(np.array(value, dtype=dt), name)


def qdq(y_scale=0.05, x_scale=0.05, zp_dtype=np.uint8, out_type=None, opset=13):
    """x -> QuantizeLinear(y_scale, zp) -> DequantizeLinear(x_scale, zp) -> y."""
    qt = T.UINT8 if zp_dtype == np.uint8 else T.INT8
    out_type = qt if out_type is None else out_type
    nodes = [h.make_node("QuantizeLinear", ["x", "ys", "zp"], ["q"], name="quant"),
             h.make_node("DequantizeLinear", ["q", "xs", "zp"], ["y"], name="dequant")]
    inits = [_scalar("ys", y_scale), _scalar("xs", x_scale), _scalar("zp", 0, zp_dtype)]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 4])], [_vi("y", T.FLOAT, [2, 4])], inits,
                  opset=opset, value_info=[_vi("q", out_type, [2, 4])])


def qlinear_matmul(a_scale=0.1, b_scale=0.02, y_scale=0.3, a_zp_dtype=np.uint8):
    rng = np.random.default_rng(SEED)
    b = nh.from_array(rng.integers(-127, 128, (4, 3)).astype(np.int8), "B")
    inits = [_scalar("as", a_scale), _scalar("az", 128, np.uint8) if a_zp_dtype == np.uint8
             else _scalar("az", 0, a_zp_dtype), b, _scalar("bs", b_scale), _scalar("bz", 0, np.int8),
             _scalar("ys", y_scale), _scalar("yz", 128, np.uint8)]
    node = h.make_node("QLinearMatMul", ["a", "as", "az", "B", "bs", "bz", "ys", "yz"], ["y"],
                       name="qmm")
    return _model([node], [_vi("a", T.UINT8, [2, 4])], [_vi("y", T.UINT8, [2, 3])], inits)


def dq_per_axis(scale_len=8, zp_len=None, axis=1):
    """A constant int8 weight [4, 8] dequantized per axis, then MatMul."""
    rng = np.random.default_rng(SEED)
    w = nh.from_array(rng.integers(-127, 128, (4, 8)).astype(np.int8), "Wq")
    s = nh.from_array(np.full(scale_len, 0.01, F32), "Ws")
    z = nh.from_array(np.zeros(scale_len if zp_len is None else zp_len, np.int8), "Wz")
    nodes = [h.make_node("DequantizeLinear", ["Wq", "Ws", "Wz"], ["W"], name="dq_w", axis=axis),
             h.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    return _model(nodes, [_vi("x", T.FLOAT, ["N", 4])], [_vi("y", T.FLOAT, ["N", 8])], [w, s, z])


def _bytes(m):
    return m.SerializeToString()


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# -- parse -------------------------------------------------------------------------------

def c_truncated_bytes(tmp_path):
    b = _bytes(mlp())
    return b[: len(b) // 2], {}


def c_truncated_file(tmp_path):
    b = _bytes(mlp())
    return _write(tmp_path, "trunc.onnx", b[: len(b) - 7]), {}


def c_random_bytes(tmp_path):
    return np.random.default_rng(SEED).integers(0, 256, 4096, dtype=np.uint8).tobytes(), {}


def c_random_file(tmp_path):
    data = np.random.default_rng(SEED + 1).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    return _write(tmp_path, "random.onnx", data), {}


def c_empty_file(tmp_path):
    return _write(tmp_path, "empty.onnx", b""), {}


def c_text_file(tmp_path):
    return _write(tmp_path, "notes.onnx", b"this is not an onnx model\n" * 10), {}


def c_tensor_file(tmp_path):
    # a serialized TensorProto is a protobuf, but not a model
    t = nh.from_array(np.arange(16, dtype=F32), "t")
    return _write(tmp_path, "tensor.onnx", t.SerializeToString()), {}


def c_model_bytes_cap(tmp_path):
    return _bytes(mlp()), {"max_model_bytes": 64}


# -- tensors -------------------------------------------------------------------------------

def c_raw_data_mismatch(tmp_path):
    m = mlp()
    m.graph.initializer[0].raw_data = b"\0" * 12  # W1 is 4x8 float32 = 128 bytes
    return m, {}


def c_raw_data_too_long(tmp_path):
    m = mlp()
    m.graph.initializer[1].raw_data = m.graph.initializer[1].raw_data + b"\0" * 4
    return m, {}


def c_typed_data_mismatch(tmp_path):
    m = mlp()
    t = onnx.TensorProto(name="W1", data_type=T.FLOAT, dims=[4, 8], float_data=[1.0, 2.0, 3.0])
    m.graph.initializer[0].CopyFrom(t)  # 3 floats for 32 elements
    return m, {}


def c_constant_raw_mismatch(tmp_path):
    bad = onnx.TensorProto(name="c", data_type=T.FLOAT, dims=[3], raw_data=b"\0" * 5)
    nodes = [h.make_node("Constant", [], ["c"], name="const_c", value=bad),
             h.make_node("Add", ["x", "c"], ["y"], name="add")]
    return _model(nodes, [_vi("x", T.FLOAT, [3])], [_vi("y", T.FLOAT, [3])]), {}


def c_subgraph_raw_mismatch(tmp_path):
    bad = onnx.TensorProto(name="k", data_type=T.FLOAT, dims=[2], raw_data=b"\0" * 3)
    then_g = h.make_graph([h.make_node("Identity", ["k"], ["t_out"], name="then_id")], "then",
                          [], [_vi("t_out", T.FLOAT, [2])], [bad])
    else_g = h.make_graph([h.make_node("Identity", ["x"], ["e_out"], name="else_id")], "else",
                          [], [_vi("e_out", T.FLOAT, [2])])
    node = h.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)
    return _model([node], [_vi("cond", T.BOOL, []), _vi("x", T.FLOAT, [2])],
                  [_vi("y", T.FLOAT, [2])]), {}


def c_huge_initializer(tmp_path):
    m = mlp()
    t = onnx.TensorProto(name="W1", data_type=T.FLOAT, dims=[1 << 40], raw_data=b"\0" * 8)
    m.graph.initializer[0].CopyFrom(t)
    return m, {}


def c_huge_initializer_2d(tmp_path):
    m = mlp()
    t = onnx.TensorProto(name="W1", data_type=T.FLOAT, dims=[1 << 20, 1 << 20], raw_data=b"\0" * 4)
    m.graph.initializer[0].CopyFrom(t)
    return m, {}


def c_over_cap_initializer(tmp_path):
    return mlp(), {"max_tensor_elements": 16}  # W1 has 32 elements


def c_negative_dim_initializer(tmp_path):
    m = mlp()
    t = onnx.TensorProto(name="W1", data_type=T.FLOAT, dims=[-4, 8], raw_data=b"")
    m.graph.initializer[0].CopyFrom(t)
    return m, {}


def c_huge_dims_input(tmp_path):
    m = mlp()
    m.graph.input[0].CopyFrom(_vi("x", T.FLOAT, [1 << 40, 1 << 40]))
    return m, {}


def c_negative_dim_input(tmp_path):
    m = mlp()
    m.graph.input[0].CopyFrom(_vi("x", T.FLOAT, [-1, 4]))
    return m, {}


def c_huge_dims_output(tmp_path):
    m = mlp()
    m.graph.output[0].CopyFrom(_vi("y", T.FLOAT, [1 << 31, 1 << 31]))
    return m, {}


def c_undefined_dtype(tmp_path):
    m = mlp()
    m.graph.initializer[0].data_type = 999
    return m, {}


def c_inferred_huge(tmp_path):
    # a tiny shape constant that asks ConstantOfShape for 2^40 elements
    shape = nh.from_array(np.array([1 << 20, 1 << 20], np.int64), "shape")
    nodes = [h.make_node("ConstantOfShape", ["shape"], ["big"], name="make_big"),
             h.make_node("ReduceSum", ["big"], ["y"], name="sum", keepdims=0)]
    return _model(nodes, [], [_vi("y", T.FLOAT, [])], [shape]), {}


# -- external data ---------------------------------------------------------------------------

def _ext_model(tmp_path, location, offset=None, length=None, model_name="model.onnx"):
    """mlp() with W1 (128 bytes) stored externally at `location`; written to tmp_path."""
    m = mlp()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = T.EXTERNAL
    entries = [("location", location)]
    if offset is not None:
        entries.append(("offset", str(offset)))
    if length is not None:
        entries.append(("length", str(length)))
    for k, v in entries:
        e = t.external_data.add()
        e.key, e.value = k, v
    path = tmp_path / model_name
    path.write_bytes(m.SerializeToString())
    return str(path)


def c_external_not_allowed(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 128)
    return _ext_model(tmp_path, "w.bin", 0, 128), {}


def c_external_dotdot(tmp_path):
    (tmp_path / "secret").write_bytes(b"\0" * 128)
    sub = tmp_path / "models"
    sub.mkdir()
    return _ext_model(sub, "../secret", 0, 128), {"allow_external_data": True}


def c_external_dotdot_inner(tmp_path):
    (tmp_path / "secret").write_bytes(b"\0" * 128)
    sub = tmp_path / "models"
    (sub / "d").mkdir(parents=True)
    return _ext_model(sub, "d/../../secret", 0, 128), {"allow_external_data": True}


def c_external_absolute(tmp_path):
    target = tmp_path / "abs.bin"
    target.write_bytes(b"\0" * 128)
    return _ext_model(tmp_path, str(target), 0, 128), {"allow_external_data": True}


def c_external_etc_passwd(tmp_path):
    return _ext_model(tmp_path, "/etc/passwd"), {"allow_external_data": True}


def c_external_symlink_file(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"\0" * 128)
    mdir = tmp_path / "m"
    mdir.mkdir()
    os.symlink(outside / "secret.bin", mdir / "w.bin")
    return _ext_model(mdir, "w.bin", 0, 128), {"allow_external_data": True}


def c_external_symlink_dir(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "w.bin").write_bytes(b"\0" * 128)
    mdir = tmp_path / "m"
    mdir.mkdir()
    os.symlink(outside, mdir / "data")
    return _ext_model(mdir, "data/w.bin", 0, 128), {"allow_external_data": True}


def c_external_symlink_inside(tmp_path):
    # even a link that stays inside the directory is refused: no symlinks at all
    (tmp_path / "real.bin").write_bytes(b"\0" * 128)
    os.symlink("real.bin", tmp_path / "w.bin")
    return _ext_model(tmp_path, "w.bin", 0, 128), {"allow_external_data": True}


def c_external_missing(tmp_path):
    return _ext_model(tmp_path, "nowhere.bin", 0, 128), {"allow_external_data": True}


def c_external_offset_past_end(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 128)
    return _ext_model(tmp_path, "w.bin", 4096, 128), {"allow_external_data": True}


def c_external_length_past_end(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 100)
    return _ext_model(tmp_path, "w.bin", 0, 128), {"allow_external_data": True}


def c_external_length_mismatch(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 4096)
    return _ext_model(tmp_path, "w.bin", 0, 1024), {"allow_external_data": True}


def c_external_negative_offset(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 256)
    return _ext_model(tmp_path, "w.bin", -128, 128), {"allow_external_data": True}


def c_external_fifo(tmp_path):
    os.mkfifo(tmp_path / "w.bin")  # reading it would block forever
    return _ext_model(tmp_path, "w.bin", 0, 128), {"allow_external_data": True}


def c_external_directory(tmp_path):
    (tmp_path / "w.bin").mkdir()
    return _ext_model(tmp_path, "w.bin", 0, 128), {"allow_external_data": True}


def c_external_basepath_key(tmp_path):
    # old onnx honoured a 'basepath' key from the file (a traversal route): refused
    (tmp_path / "w.bin").write_bytes(b"\0" * 128)
    path = _ext_model(tmp_path, "w.bin", 0, 128)
    m = onnx.load(path, load_external_data=False)
    e = m.graph.initializer[0].external_data.add()
    e.key, e.value = "basepath", "/etc"
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return path, {"allow_external_data": True}


def c_external_from_bytes(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 128)
    with open(_ext_model(tmp_path, "w.bin", 0, 128), "rb") as f:
        return f.read(), {"allow_external_data": True}


def c_external_total_cap(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 128)
    path = _ext_model(tmp_path, "w.bin", 0, 128)
    return path, {"allow_external_data": True, "max_model_bytes": os.path.getsize(path) + 64}


# -- structure -------------------------------------------------------------------------------

def c_cycle(tmp_path):
    nodes = [h.make_node("Add", ["x", "b_out"], ["a_out"], name="node_a"),
             h.make_node("Relu", ["a_out"], ["b_out"], name="node_b"),
             h.make_node("Identity", ["a_out"], ["y"], name="out")]
    return _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("y", T.FLOAT, [2])]), {}


def c_self_loop(tmp_path):
    nodes = [h.make_node("Add", ["x", "loop"], ["loop"], name="selfie"),
             h.make_node("Identity", ["loop"], ["y"], name="out")]
    return _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("y", T.FLOAT, [2])]), {}


def c_undefined_input(tmp_path):
    nodes = [h.make_node("Add", ["x", "ghost"], ["y"], name="adder")]
    return _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("y", T.FLOAT, [2])]), {}


def c_unsorted(tmp_path):
    nodes = [h.make_node("Relu", ["h"], ["y"], name="second"),
             h.make_node("Neg", ["x"], ["h"], name="first")]
    return _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("y", T.FLOAT, [2])]), {}


def c_double_assignment(tmp_path):
    nodes = [h.make_node("Relu", ["x"], ["h"], name="one"),
             h.make_node("Neg", ["x"], ["h"], name="two"),
             h.make_node("Identity", ["h"], ["y"], name="out")]
    return _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("y", T.FLOAT, [2])]), {}


def c_undefined_output(tmp_path):
    nodes = [h.make_node("Relu", ["x"], ["h"], name="relu")]
    return _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("nothing", T.FLOAT, [2])]), {}


def c_inconsistent_shapes(tmp_path):
    nodes = [h.make_node("MatMul", ["a", "b"], ["y"], name="bad_mm")]
    return _model(nodes, [_vi("a", T.FLOAT, [2, 3]), _vi("b", T.FLOAT, [4, 5])],
                  [_vi("y", T.FLOAT, [2, 5])]), {}


def c_wrong_declared_output(tmp_path):
    m = mlp()
    m.graph.output[0].CopyFrom(_vi("y", T.FLOAT, ["N", 7]))  # the MatMul gives [N, 3]
    return m, {}


def c_wrong_type(tmp_path):
    nodes = [h.make_node("Add", ["x", "i"], ["y"], name="mixed_add")]
    return _model(nodes, [_vi("x", T.FLOAT, [2]), _vi("i", T.INT64, [2])],
                  [_vi("y", T.FLOAT, [2])]), {}


def c_unknown_op(tmp_path):
    nodes = [h.make_node("NoSuchOp", ["x"], ["y"], name="mystery")]
    return _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("y", T.FLOAT, [2])]), {}


# -- versions and domains --------------------------------------------------------------------

def c_ir_2(tmp_path):
    return mlp(ir=2), {}


def c_ir_99(tmp_path):
    return mlp(ir=99), {}


def c_opset_9(tmp_path):
    return mlp(opset=9), {}


def c_opset_1000(tmp_path):
    return mlp(opset=1000), {}


def c_no_default_opset(tmp_path):
    m = mlp()
    del m.opset_import[:]
    m.opset_import.append(h.make_opsetid("com.microsoft", 1))
    return m, {}


def c_unknown_domain(tmp_path):
    nodes = [h.make_node("Exfiltrate", ["x"], ["y"], name="evil", domain="evil.domain")]
    return _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("y", T.FLOAT, [2])],
                  extra_opsets=[h.make_opsetid("evil.domain", 1)]), {}


def c_domain_not_imported(tmp_path):
    inits = [_scalar("s", 0.1), _scalar("z", 0, np.uint8)]
    nodes = [h.make_node("QLinearSigmoid", ["x", "s", "z", "s", "z"], ["y"], name="qsig",
                         domain="com.microsoft")]
    return _model(nodes, [_vi("x", T.UINT8, [2])], [_vi("y", T.UINT8, [2])], inits), {}


def c_ms_version_2(tmp_path):
    return _model([h.make_node("Relu", ["x"], ["y"])], [_vi("x", T.FLOAT, [2])],
                  [_vi("y", T.FLOAT, [2])], extra_opsets=[h.make_opsetid("com.microsoft", 2)]), {}


# -- quantization ----------------------------------------------------------------------------

BAD_SCALES = {"nan": float("nan"), "inf": float("inf"), "zero": 0.0, "negative": -0.5}


def _bad_q(kind):
    return lambda tmp_path: (qdq(y_scale=BAD_SCALES[kind]), {})


def _bad_dq(kind):
    return lambda tmp_path: (qdq(x_scale=BAD_SCALES[kind]), {})


def _bad_qmm(which, kind):
    return lambda tmp_path: (qlinear_matmul(**{which: BAD_SCALES[kind]}), {})


def c_bad_scale_constant_node(tmp_path):
    nodes = [h.make_node("Constant", [], ["ys"], name="scale_const", value_float=0.0),
             h.make_node("QuantizeLinear", ["x", "ys"], ["y"], name="quant")]
    return _model(nodes, [_vi("x", T.FLOAT, [2])], [_vi("y", T.UINT8, [2])]), {}


def c_bad_scale_per_channel(tmp_path):
    m = dq_per_axis()
    s = np.full(8, 0.01, F32)
    s[5] = -1.0
    m.graph.initializer[1].CopyFrom(nh.from_array(s, "Ws"))
    return m, {}


def c_bad_scale_in_subgraph(tmp_path):
    then_g = h.make_graph([h.make_node("QuantizeLinear", ["x", "bad_s"], ["t_out"], name="q_in_then")],
                          "then", [], [_vi("t_out", T.UINT8, [2])], [_scalar("bad_s", float("nan"))])
    else_g = h.make_graph([h.make_node("QuantizeLinear", ["x", "ok_s"], ["e_out"], name="q_in_else")],
                          "else", [], [_vi("e_out", T.UINT8, [2])])
    node = h.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)
    return _model([node], [_vi("cond", T.BOOL, []), _vi("x", T.FLOAT, [2])],
                  [_vi("y", T.UINT8, [2])], [_scalar("ok_s", 0.1)]), {}


def c_bad_scale_qgemm(tmp_path):
    rng = np.random.default_rng(SEED)
    inits = [_scalar("as", 0.1), _scalar("az", 128, np.uint8),
             nh.from_array(rng.integers(-127, 128, (4, 3)).astype(np.int8), "B"),
             _scalar("bs", float("inf")), _scalar("bz", 0, np.int8),
             _scalar("ys", 0.2), _scalar("yz", 128, np.uint8)]
    node = h.make_node("QGemm", ["a", "as", "az", "B", "bs", "bz", "", "ys", "yz"], ["y"],
                       name="qgemm", domain="com.microsoft")
    return _model([node], [_vi("a", T.UINT8, [2, 4])], [_vi("y", T.UINT8, [2, 3])], inits,
                  extra_opsets=[h.make_opsetid("com.microsoft", 1)]), {}


def c_scale_int_type(tmp_path):
    m = qdq()
    m.graph.initializer[0].CopyFrom(_scalar("ys", 1, np.int32))
    return m, {}


def c_zp_dtype_dq_mismatch(tmp_path):
    # DequantizeLinear: x is int8 but its zero point is uint8
    w = nh.from_array(np.ones((4, 8), np.int8), "Wq")
    nodes = [h.make_node("DequantizeLinear", ["Wq", "s", "z"], ["W"], name="dq_w"),
             h.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 4])], [_vi("y", T.FLOAT, [2, 8])],
                  [w, _scalar("s", 0.1), _scalar("z", 3, np.uint8)]), {}


def c_zp_dtype_q_output(tmp_path):
    # QuantizeLinear: a uint8 zero point makes a uint8 output, but the model declares int8
    return qdq(zp_dtype=np.uint8, out_type=T.INT8), {}


def c_zp_float(tmp_path):
    m = qdq()
    m.graph.initializer[2].CopyFrom(_scalar("zp", 0.0))
    return m, {}


def c_zp_qlinear_matmul(tmp_path):
    return qlinear_matmul(a_zp_dtype=np.int8), {}  # input a is uint8


def c_zp_int32_nonzero(tmp_path):
    nodes = [h.make_node("DequantizeLinear", ["b", "s", "z"], ["y"], name="dq_bias")]
    return _model(nodes, [], [_vi("y", T.FLOAT, [3])],
                  [nh.from_array(np.array([1, 2, 3], np.int32), "b"), _scalar("s", 0.01),
                   _scalar("z", 7, np.int32)]), {}


def c_per_axis_length(tmp_path):
    return dq_per_axis(scale_len=5), {}


def c_per_axis_zp_length(tmp_path):
    return dq_per_axis(scale_len=8, zp_len=4), {}


def c_per_axis_bad_axis(tmp_path):
    return dq_per_axis(axis=2), {}


def c_per_axis_opset10(tmp_path):
    m = dq_per_axis()
    for n in m.graph.node:
        del n.attribute[:]
    m.opset_import[0].version = 10
    return m, {}


def c_per_channel_qlinear_matmul(tmp_path):
    m = qlinear_matmul()
    m.graph.initializer[3].CopyFrom(nh.from_array(np.full(5, 0.02, F32), "bs"))  # B has 3 columns
    m.graph.initializer[4].CopyFrom(nh.from_array(np.zeros(5, np.int8), "bz"))
    return m, {}


def c_per_tensor_only(tmp_path):
    m = qdq()
    inits = [_scalar("s", 0.1), nh.from_array(np.full(2, 0.1, F32), "s2"),
             _scalar("z", 128, np.uint8), nh.from_array(np.full(2, 128, np.uint8), "z2")]
    nodes = [h.make_node("QLinearAdd", ["a", "s2", "z2", "a", "s", "z", "s", "z"], ["y"],
                         name="qadd", domain="com.microsoft")]
    m = _model(nodes, [_vi("a", T.UINT8, [2])], [_vi("y", T.UINT8, [2])], inits,
               extra_opsets=[h.make_opsetid("com.microsoft", 1)])
    return m, {}


# --------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------

M, U = ModelError, UnsupportedError
CORPUS = [
    ("truncated_bytes", c_truncated_bytes, M, ["not a valid ONNX ModelProto", "could not parse"]),
    ("truncated_file", c_truncated_file, M, ["not a valid ONNX ModelProto", "trunc.onnx"]),
    ("random_bytes", c_random_bytes, M, ["not a valid ONNX ModelProto"]),
    ("random_file", c_random_file, M, ["not a valid ONNX ModelProto", "random.onnx"]),
    ("empty_file", c_empty_file, M, ["not a valid ONNX ModelProto", "empty"]),
    ("text_file", c_text_file, M, ["not a valid ONNX ModelProto", "notes.onnx"]),
    ("tensor_file", c_tensor_file, M, ["not a valid ONNX ModelProto", "tensor.onnx"]),
    ("model_bytes_cap", c_model_bytes_cap, M, ["max_model_bytes=64"]),
    ("raw_data_mismatch", c_raw_data_mismatch, M, ["'W1'", "raw_data of 12 bytes", "128 bytes"]),
    ("raw_data_too_long", c_raw_data_too_long, M, ["'W2'", "raw_data of 100 bytes", "96 bytes"]),
    ("typed_data_mismatch", c_typed_data_mismatch, M, ["'W1'", "3 entries in float_data",
                                                       "expected 32"]),
    ("constant_raw_mismatch", c_constant_raw_mismatch, M, ["node 'const_c'", "op Constant",
                                                           "raw_data of 5 bytes"]),
    ("subgraph_raw_mismatch", c_subgraph_raw_mismatch, M, ["'k'", "then_branch", "node 'branch'",
                                                           "raw_data of 3 bytes"]),
    ("huge_initializer", c_huge_initializer, M, ["'W1'", str(1 << 40), "max_tensor_elements"]),
    ("huge_initializer_2d", c_huge_initializer_2d, M, ["'W1'", str(1 << 40),
                                                       "max_tensor_elements="]),
    ("over_cap_initializer", c_over_cap_initializer, M, ["'W1'", "32 elements",
                                                         "max_tensor_elements=16"]),
    ("negative_dim_initializer", c_negative_dim_initializer, M, ["'W1'", "negative dimension -4"]),
    ("huge_dims_input", c_huge_dims_input, M, ["graph input 'x'", str(1 << 80),
                                               "max_tensor_elements"]),
    ("negative_dim_input", c_negative_dim_input, M, ["graph input 'x'", "negative dimension -1"]),
    ("huge_dims_output", c_huge_dims_output, M, ["graph output 'y'", "max_tensor_elements"]),
    ("undefined_dtype", c_undefined_dtype, M, ["'W1'", "data type", "999"]),
    ("inferred_huge", c_inferred_huge, M, ["'big'", "node 'make_big'", "max_tensor_elements"]),
    ("external_not_allowed", c_external_not_allowed, M, ["'W1'", "external data is not allowed",
                                                         "allow_external_data=True"]),
    ("external_dotdot", c_external_dotdot, M, ["'W1'", "'../secret'", "'..'"]),
    ("external_dotdot_inner", c_external_dotdot_inner, M, ["'d/../../secret'", "'..'"]),
    ("external_absolute", c_external_absolute, M, ["'W1'", "absolute path"]),
    ("external_etc_passwd", c_external_etc_passwd, M, ["'/etc/passwd'", "absolute path"]),
    ("external_symlink_file", c_external_symlink_file, M, ["'w.bin'", "symbolic link"]),
    ("external_symlink_dir", c_external_symlink_dir, M, ["'data/w.bin'", "symbolic link"]),
    ("external_symlink_inside", c_external_symlink_inside, M, ["symbolic link"]),
    ("external_missing", c_external_missing, M, ["'nowhere.bin'", "does not exist"]),
    ("external_offset_past_end", c_external_offset_past_end, M, ["offset=4096", "outside the file"]),
    ("external_length_past_end", c_external_length_past_end, M, ["length=128",
                                                                 "outside the file (100 bytes)"]),
    ("external_length_mismatch", c_external_length_mismatch, M, ["'W1'", "length 1024",
                                                                 "128 bytes"]),
    ("external_negative_offset", c_external_negative_offset, M, ["offset='-128'"]),
    ("external_fifo", c_external_fifo, M, ["'w.bin'", "not a regular file"]),
    ("external_directory", c_external_directory, M, ["'w.bin'", "not a regular file"]),
    ("external_basepath_key", c_external_basepath_key, M, ["'basepath'"]),
    ("external_from_bytes", c_external_from_bytes, M, ["'W1'", "no directory"]),
    ("external_total_cap", c_external_total_cap, M, ["max_model_bytes"]),
    ("cycle", c_cycle, M, ["node 'node_a'", "op Add", "reads 'b_out'", "cycle",
                           "'node_a' -> 'node_b'"]),
    ("self_loop", c_self_loop, M, ["node 'selfie'", "reads 'loop'", "cycle"]),
    ("undefined_input", c_undefined_input, M, ["node 'adder'", "op Add", "domain 'ai.onnx'",
                                               "opset 13", "reads 'ghost'",
                                               "no earlier node, graph input or initializer"]),
    ("unsorted", c_unsorted, M, ["node 'second'", "reads 'h'", "topological order"]),
    ("double_assignment", c_double_assignment, M, ["node 'two'", "writes 'h'", "node 'one'"]),
    ("undefined_output", c_undefined_output, M, ["graph output 'nothing'"]),
    ("inconsistent_shapes", c_inconsistent_shapes, M, ["shape inference", "MatMul", "bad_mm"]),
    ("wrong_declared_output", c_wrong_declared_output, M, ["shape inference", "mm2"]),
    ("wrong_type", c_wrong_type, M, ["mixed_add"]),
    ("unknown_op", c_unknown_op, M, ["NoSuchOp"]),
    ("ir_2", c_ir_2, U, ["IR version 2", f"3..{MAX_IR_VERSION}"]),
    ("ir_99", c_ir_99, U, ["IR version 99", f"3..{MAX_IR_VERSION}"]),
    ("opset_9", c_opset_9, U, ["opset 9", f"10..{MAX_OPSET}", "convert_version"]),
    ("opset_1000", c_opset_1000, U, ["opset 1000", f"10..{MAX_OPSET}"]),
    ("no_default_opset", c_no_default_opset, M, ["node 'mm1'", "'ai.onnx'",
                                                 "imports no opset"]),
    ("unknown_domain", c_unknown_domain, U, ["'evil.domain'", "node 'evil'", "op Exfiltrate"]),
    ("domain_not_imported", c_domain_not_imported, M, ["node 'qsig'", "'com.microsoft'",
                                                       "imports no opset"]),
    ("ms_version_2", c_ms_version_2, U, ["'com.microsoft' version 2"]),
]
for _kind in BAD_SCALES:
    CORPUS += [
        (f"quantize_scale_{_kind}", _bad_q(_kind), M, ["node 'quant'", "op QuantizeLinear",
                                                        "opset 13", "'ys'", _kind if _kind != "inf"
                                                        else "infinite", "finite and > 0"]),
        (f"dequantize_scale_{_kind}", _bad_dq(_kind), M, ["node 'dequant'", "op DequantizeLinear",
                                                           "'xs'", "finite and > 0"]),
    ]
    for _which, _name in (("a_scale", "'as'"), ("b_scale", "'bs'"), ("y_scale", "'ys'")):
        CORPUS.append((f"qlinear_matmul_{_which}_{_kind}", _bad_qmm(_which, _kind), M,
                       ["node 'qmm'", "op QLinearMatMul", _name, "finite and > 0"]))
CORPUS += [
    ("scale_constant_node", c_bad_scale_constant_node, M, ["node 'quant'", "'ys'", "zero"]),
    ("scale_per_channel_entry", c_bad_scale_per_channel, M, ["node 'dq_w'", "'Ws'",
                                                             "negative", "index 5"]),
    ("scale_in_subgraph", c_bad_scale_in_subgraph, M, ["node 'q_in_then'", "then_branch",
                                                       "node 'branch'", "NaN"]),
    ("scale_qgemm", c_bad_scale_qgemm, M, ["node 'qgemm'", "op QGemm", "domain 'com.microsoft'",
                                           "opset 1", "'bs'", "infinite"]),
    ("scale_int_type", c_scale_int_type, M, ["node 'quant'", "'ys'", "int32", "float"]),
    ("zp_dtype_dq_mismatch", c_zp_dtype_dq_mismatch, M, ["node 'dq_w'", "'z'", "uint8", "int8"]),
    ("zp_dtype_q_output", c_zp_dtype_q_output, M, ["node 'quant'", "'zp'", "uint8", "'q'",
                                                   "int8"]),
    ("zp_float", c_zp_float, M, ["node 'quant'", "'zp'", "float"]),
    ("zp_qlinear_matmul", c_zp_qlinear_matmul, M, ["node 'qmm'", "'az'", "int8", "'a'", "uint8"]),
    ("zp_int32_nonzero", c_zp_int32_nonzero, M, ["node 'dq_bias'", "'z'", "must be 0"]),
    ("per_axis_length", c_per_axis_length, M, ["node 'dq_w'", "'Ws'", "5 elements",
                                               "8 along axis 1"]),
    ("per_axis_zp_length", c_per_axis_zp_length, M, ["node 'dq_w'", "'Ws'", "'Wz'",
                                                      "same shape"]),
    ("per_axis_bad_axis", c_per_axis_bad_axis, M, ["node 'dq_w'", "axis=2", "rank 2"]),
    ("per_axis_opset10", c_per_axis_opset10, M, ["node 'dq_w'", "opset 10", "per-axis"]),
    ("per_channel_qlinear_matmul", c_per_channel_qlinear_matmul, M, ["node 'qmm'", "'bs'",
                                                                     "5 elements", "3 columns"]),
    ("per_tensor_only", c_per_tensor_only, M, ["node 'qadd'", "op QLinearAdd", "'s2'",
                                               "expected a scalar"]),
]
IDS = [c[0] for c in CORPUS]
assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("case", CORPUS, ids=IDS)
def test_refused_with_typed_error(case, tmp_path):
    _, build, cls, fragments = case
    model, kwargs = build(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(PyRuntimeError) as ei:
        load_model_proto(model, **kwargs)
    elapsed = time.perf_counter() - t0
    err = ei.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    msg = str(err)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in message: {msg}"
    assert elapsed < 2.0, f"refusing took {elapsed:.2f} s"


def test_every_truncation_is_refused():
    """Every prefix of a small model (and of a quantized one) is refused, none accepted."""
    for m in (mlp(), qlinear_matmul()):
        b = _bytes(m)
        for cut in range(len(b)):
            with pytest.raises((ModelError, UnsupportedError)):
                load_model_proto(b[:cut])


def test_random_bytes_many_seeds():
    rng = np.random.default_rng(SEED)
    for n in (1, 2, 3, 7, 64, 1000, 65536):
        for _ in range(5):
            with pytest.raises(ModelError, match="not a valid ONNX ModelProto"):
                load_model_proto(rng.integers(0, 256, n, dtype=np.uint8).tobytes())


def test_bit_flips_never_crash():
    """Single-byte corruptions of a valid quantized model: accepted or refused with a typed
    error, never anything else."""
    b = bytearray(_bytes(qlinear_matmul()))
    rng = np.random.default_rng(SEED)
    for pos in rng.integers(0, len(b), 200):
        c = bytearray(b)
        c[pos] ^= int(rng.integers(1, 256))
        try:
            load_model_proto(bytes(c))
        except (ModelError, UnsupportedError):
            pass


def test_validate_quantization_directly():
    validate_quantization(qdq())
    with pytest.raises(ModelError, match="finite and > 0"):
        validate_quantization(qdq(y_scale=0.0))
    with pytest.raises(InputError):
        validate_quantization(b"not a proto")


def test_argument_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model_proto(str(tmp_path / "missing.onnx"))
    with pytest.raises(InputError, match="directory"):
        load_model_proto(tmp_path)
    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(InputError, match="not a regular file"):
        load_model_proto(tmp_path / "pipe.onnx")
    for bad in (42, None, 3.5, ["model.onnx"], {"a": 1}):
        with pytest.raises(InputError, match="path .* bytes or onnx.ModelProto"):
            load_model_proto(bad)
    with pytest.raises(InputError, match="max_tensor_elements"):
        load_model_proto(mlp(), max_tensor_elements=0)
    with pytest.raises(InputError, match="max_model_bytes"):
        load_model_proto(mlp(), max_model_bytes=True)
    with pytest.raises(InputError, match="allow_external_data"):
        load_model_proto(mlp(), allow_external_data="yes")


def test_input_proto_is_not_modified():
    m = qdq(y_scale=float("nan"))
    before = m.SerializeToString()
    with pytest.raises(ModelError):
        load_model_proto(m)
    assert m.SerializeToString() == before


_SUBPROCESS = r"""
import importlib.util, sys, tempfile, pathlib
spec = importlib.util.spec_from_file_location("corpus", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
from pyruntime import PyRuntimeError
bad = []
for name, build, cls, frags in mod.CORPUS:
    with tempfile.TemporaryDirectory() as d:
        model, kwargs = build(pathlib.Path(d))
        try:
            mod.load_model_proto(model, **kwargs)
            bad.append(name + ": accepted")
        except PyRuntimeError as e:
            if type(e) is not cls:
                bad.append(f"{name}: {type(e).__name__}")
print("BAD", bad)
print("DONE", len(mod.CORPUS))
"""


def test_corpus_in_fresh_interpreter(run_python):
    """The whole corpus in a separate process: exit code 0, no signal, no hang."""
    r = run_python("", args=["-c", _SUBPROCESS, __file__], timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert f"DONE {len(CORPUS)}" in r.stdout, r.stdout[-2000:]
    assert "BAD []" in r.stdout, r.stdout[-2000:]
