"""Load-time validation accepts the models users feed us: a float MLP, onnxruntime's own
quantize_static output (QDQ and QOperator, U8S8 and S8S8, per-channel on and off), old
opsets, com.microsoft ops, subgraphs, and external data inside the model's directory.
Paths, bytes and ModelProtos all work; the caller's ModelProto is never modified."""
from __future__ import annotations

import logging
import os
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from pyruntime import ModelError
from pyruntime.onnx_import.validate import (MAX_OPSET, infer_shapes_strict, load_model_proto,
                                            validate_quantization)

SEED = 20240611
F32 = np.float32


def _vi(name, dt, shape):
    return h.make_tensor_value_info(name, dt, shape)


def float_mlp(seed=SEED, din=16, dh=32, dout=10, opset=13):
    """Gemm + Relu + MatMul + Add, like a torch-exported 2-layer student."""
    rng = np.random.default_rng(seed)
    inits = [nh.from_array((rng.standard_normal((din, dh)) * 0.3).astype(F32), "W1"),
             nh.from_array((rng.standard_normal(dh) * 0.1).astype(F32), "B1"),
             nh.from_array((rng.standard_normal((dh, dout)) * 0.3).astype(F32), "W2"),
             nh.from_array((rng.standard_normal(dout) * 0.1).astype(F32), "B2")]
    nodes = [h.make_node("Gemm", ["x", "W1", "B1"], ["h1"], name="fc1"),
             h.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             h.make_node("MatMul", ["r1", "W2"], ["m2"], name="fc2_mm"),
             h.make_node("Add", ["m2", "B2"], ["y"], name="fc2_add")]
    g = h.make_graph(nodes, "mlp", [_vi("x", T.FLOAT, ["batch", din])],
                     [_vi("y", T.FLOAT, ["batch", dout])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], producer_name="test")


# --------------------------------------------------------------------------------------
# float models, argument kinds
# --------------------------------------------------------------------------------------

def test_float_mlp_from_proto_bytes_and_path(tmp_path):
    m = float_mlp()
    before = m.SerializeToString()
    p = tmp_path / "mlp.onnx"
    onnx.save_model(m, str(p))
    for arg, want_dir in ((m, None), (before, None), (bytearray(before), None),
                          (memoryview(before), None), (str(p), str(tmp_path)), (p, str(tmp_path))):
        proto, d = load_model_proto(arg)
        assert isinstance(proto, onnx.ModelProto)
        assert d == want_dir
        assert [t.name for t in proto.graph.initializer] == ["W1", "B1", "W2", "B2"]
        for a, b in zip(proto.graph.initializer, m.graph.initializer):
            np.testing.assert_array_equal(nh.to_array(a), nh.to_array(b))
        # shape inference filled in the intermediate values
        inferred = {vi.name for vi in proto.graph.value_info}
        assert {"h1", "r1", "m2"} <= inferred
        assert proto is not m
    assert m.SerializeToString() == before, "the caller's ModelProto was modified"


def test_relative_path_gives_absolute_dir(tmp_path, monkeypatch):
    onnx.save_model(float_mlp(), str(tmp_path / "m.onnx"))
    monkeypatch.chdir(tmp_path)
    _, d = load_model_proto("m.onnx")
    assert d == str(tmp_path) and os.path.isabs(d)


@pytest.mark.parametrize("opset", [10, 11, 12, 13, 17, MAX_OPSET])
def test_opset_range_accepted(opset):
    load_model_proto(float_mlp(opset=opset))


def test_ir3_opset10_qlinear_matmul():
    """Old-style quantized models (IR 3 wants initializers listed as graph inputs)."""
    rng = np.random.default_rng(SEED)
    inits = [nh.from_array(np.array(0.05, F32), "as"), nh.from_array(np.array(128, np.uint8), "az"),
             nh.from_array(rng.integers(-127, 128, (4, 3)).astype(np.int8), "B"),
             nh.from_array(np.array([0.01, 0.02, 0.03], F32), "bs"),
             nh.from_array(np.zeros(3, np.int8), "bz"),
             nh.from_array(np.array(0.2, F32), "ys"), nh.from_array(np.array(120, np.uint8), "yz")]
    node = h.make_node("QLinearMatMul", ["a", "as", "az", "B", "bs", "bz", "ys", "yz"], ["y"],
                       name="qmm")
    inputs = [_vi("a", T.UINT8, [2, 4])] + [
        h.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    g = h.make_graph([node], "g", inputs, [_vi("y", T.UINT8, [2, 3])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 10)])
    m.ir_version = 3
    proto, _ = load_model_proto(m)
    assert proto.ir_version == 3


def test_unused_foreign_domain_import_is_ignored():
    """Exporters add imports they never use ('ai.onnx.ml'); only a node in a foreign domain
    is refused."""
    m = float_mlp()
    m.opset_import.append(h.make_opsetid("ai.onnx.ml", 3))
    load_model_proto(m)


def test_subgraph_reads_outer_scope():
    then_g = h.make_graph([h.make_node("Relu", ["x"], ["t"], name="t_relu")], "then", [],
                          [_vi("t", T.FLOAT, [2])])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"], name="e_neg")], "else", [],
                          [_vi("e", T.FLOAT, [2])])
    nodes = [h.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g,
                         else_branch=else_g)]
    g = h.make_graph(nodes, "g", [_vi("c", T.BOOL, []), _vi("x", T.FLOAT, [2])],
                     [_vi("y", T.FLOAT, [2])])
    load_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]))


def test_constant_nodes_and_typed_fields():
    """Constants in value / value_float / value_floats form, typed-field tensors, int4."""
    w = h.make_tensor("w", T.FLOAT, [2], [1.5, -2.0])  # float_data, not raw_data
    i4 = h.make_tensor("i4", T.INT4, [3], [1, -2, 7])  # packed: 2 int32_data entries
    nodes = [h.make_node("Constant", [], ["c1"], name="c1", value=w),
             h.make_node("Constant", [], ["c2"], name="c2", value_float=0.5),
             h.make_node("Constant", [], ["c3"], name="c3", value_floats=[1.0, 2.0]),
             h.make_node("Add", ["x", "c1"], ["a"], name="add1"),
             h.make_node("Mul", ["a", "c2"], ["b"], name="mul"),
             h.make_node("Add", ["b", "c3"], ["y"], name="add2"),
             h.make_node("Cast", ["i4"], ["i4f"], name="cast", to=T.FLOAT)]
    g = h.make_graph(nodes, "g", [_vi("x", T.FLOAT, [2])],
                     [_vi("y", T.FLOAT, [2]), _vi("i4f", T.FLOAT, [3])], [i4])
    load_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", 21)]))


def test_dims_zero_and_symbolic_accepted():
    nodes = [h.make_node("Identity", ["x"], ["y"], name="id")]
    g = h.make_graph(nodes, "g", [_vi("x", T.FLOAT, [0, "n", 3])], [_vi("y", T.FLOAT, [0, "n", 3])],
                     [onnx.TensorProto(name="empty", data_type=T.FLOAT, dims=[0, 5])])
    load_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]))


def test_cap_is_configurable():
    m = float_mlp()  # W1 has 16 * 32 = 512 elements
    with pytest.raises(ModelError, match="max_tensor_elements=511"):
        load_model_proto(m, max_tensor_elements=511)
    load_model_proto(m, max_tensor_elements=512)


# --------------------------------------------------------------------------------------
# onnxruntime's quantizer output: the models users will feed us
# --------------------------------------------------------------------------------------

ort_quant = pytest.importorskip("onnxruntime.quantization")


class _Reader(ort_quant.CalibrationDataReader):
    def __init__(self, din=16, batches=4, seed=SEED):
        rng = np.random.default_rng(seed)
        self._it = iter([{"x": rng.standard_normal((8, din)).astype(F32)} for _ in range(batches)])

    def get_next(self):
        return next(self._it, None)


QUANT_CASES = [(fmt, act, pc) for fmt in ("QDQ", "QOperator") for act in ("U8S8", "S8S8")
               for pc in (False, True)]


@pytest.fixture(scope="module")
def quantized_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ortq")
    fp = d / "mlp_f32.onnx"
    onnx.save_model(float_mlp(), str(fp))
    out = {}
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing"
    for fmt, act, pc in QUANT_CASES:
        path = d / f"mlp_{fmt}_{act}_{'pc' if pc else 'pt'}.onnx"
        ort_quant.quantize_static(
            str(fp), str(path), _Reader(),
            quant_format=getattr(ort_quant.QuantFormat, fmt),
            activation_type=ort_quant.QuantType.QUInt8 if act == "U8S8" else ort_quant.QuantType.QInt8,
            weight_type=ort_quant.QuantType.QInt8, per_channel=pc)
        out[(fmt, act, pc)] = path
    return out


@pytest.mark.parametrize("case", QUANT_CASES, ids=[f"{f}-{a}-{'pc' if p else 'pt'}"
                                                  for f, a, p in QUANT_CASES])
def test_ort_quantized_models_pass(case, quantized_models):
    fmt, act, pc = case
    path = quantized_models[case]
    proto, d = load_model_proto(str(path))
    assert d == str(path.parent)
    ops = {(n.domain, n.op_type) for n in proto.graph.node}
    if fmt == "QDQ":
        assert ("", "QuantizeLinear") in ops and ("", "DequantizeLinear") in ops
    else:
        assert ("", "QLinearMatMul") in ops and ("com.microsoft", "QGemm") in ops
    validate_quantization(proto)
    # bytes and ModelProto give the same model back
    raw = path.read_bytes()
    p2, d2 = load_model_proto(raw)
    assert d2 is None and p2.SerializeToString() == proto.SerializeToString()
    if pc:  # per-channel: some 1-D weight scale with one entry per output column
        lens = [len(t.dims) == 1 and t.dims[0] > 1 for t in proto.graph.initializer
                if t.data_type == T.FLOAT and "scale" in t.name]
        assert any(lens)


@pytest.mark.parametrize("case", QUANT_CASES[:1] + QUANT_CASES[5:6],
                         ids=["QDQ-U8S8-pt", "QOperator-U8S8-pc"])
def test_ort_quantized_bad_scale_is_refused(case, quantized_models, tmp_path):
    """onnxruntime runs a QuantizeLinear with a zero scale; we refuse it at load."""
    m = onnx.load(str(quantized_models[case]))
    scales = [t for t in m.graph.initializer if t.data_type == T.FLOAT and "scale" in t.name]
    assert scales
    t = scales[-1]
    arr = nh.to_array(t).copy()
    arr.reshape(-1)[0] = 0.0
    t.CopyFrom(nh.from_array(arr, t.name))
    with pytest.raises(ModelError, match=rf"scale '{t.name}'.*zero"):
        load_model_proto(m)


def test_validation_is_fast(quantized_models):
    """Validation of a small model stays well under 50 ms (median of several runs)."""
    for path in (quantized_models[("QDQ", "U8S8", True)],
                 quantized_models[("QOperator", "U8S8", False)]):
        data = path.read_bytes()
        load_model_proto(data)  # warm
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            load_model_proto(data)
            times.append(time.perf_counter() - t0)
        assert sorted(times)[len(times) // 2] < 0.050, times


# --------------------------------------------------------------------------------------
# external data, allowed, inside the directory
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("location", ["weights.bin", "data/weights.bin", "./w.bin"])
def test_external_data_inside_directory_loads(tmp_path, location):
    m = float_mlp()
    ref = {t.name: nh.to_array(t).copy() for t in m.graph.initializer}
    if "/" in location.lstrip("./"):
        (tmp_path / os.path.dirname(location)).mkdir()
    path = tmp_path / "model.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    stored = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == T.EXTERNAL for t in stored.graph.initializer)

    with pytest.raises(ModelError, match="external data is not allowed"):
        load_model_proto(str(path))
    proto, d = load_model_proto(str(path), allow_external_data=True)
    assert d == str(tmp_path)
    for t in proto.graph.initializer:
        assert t.data_location == T.DEFAULT and not len(t.external_data)
        np.testing.assert_array_equal(nh.to_array(t), ref[t.name])


def test_external_data_length_absent_reads_to_end(tmp_path):
    m = float_mlp()
    w1 = m.graph.initializer[0]
    (tmp_path / "w1.bin").write_bytes(b"\xab" * 64 + w1.raw_data)  # W1 after a 64-byte header
    want = nh.to_array(w1).copy()
    w1.ClearField("raw_data")
    w1.data_location = T.EXTERNAL
    for k, v in (("location", "w1.bin"), ("offset", "64")):
        e = w1.external_data.add()
        e.key, e.value = k, v
    onnx.save_model(m, str(tmp_path / "m.onnx"))
    proto, _ = load_model_proto(str(tmp_path / "m.onnx"), allow_external_data=True)
    np.testing.assert_array_equal(nh.to_array(proto.graph.initializer[0]), want)


# --------------------------------------------------------------------------------------
# the pieces on their own
# --------------------------------------------------------------------------------------

def test_infer_shapes_strict_and_validate_quantization_alone():
    inferred = infer_shapes_strict(float_mlp())
    shapes = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in inferred.graph.value_info}
    assert shapes["h1"] == ["batch", 32]
    validate_quantization(float_mlp())  # nothing quantized: nothing to say

    bad = float_mlp()
    bad.graph.output[0].CopyFrom(_vi("y", T.FLOAT, ["batch", 11]))
    with pytest.raises(ModelError, match="shape inference"):
        infer_shapes_strict(bad)


def test_com_microsoft_qlinear_ops_pass():
    inits = [nh.from_array(np.array(0.1, F32), "s"), nh.from_array(np.array(128, np.uint8), "z"),
             nh.from_array(np.array(0.2, F32), "s2"), nh.from_array(np.array(100, np.uint8), "z2")]
    nodes = [h.make_node("QLinearAdd", ["a", "s", "z", "b", "s", "z", "s2", "z2"], ["c"],
                         name="qadd", domain="com.microsoft"),
             h.make_node("QLinearConcat", ["s", "z", "c", "s2", "z2", "a", "s", "z"], ["y"],
                         name="qcat", domain="com.microsoft", axis=1)]
    g = h.make_graph(nodes, "g", [_vi("a", T.UINT8, [2, 3]), _vi("b", T.UINT8, [2, 3])],
                     [_vi("y", T.UINT8, [2, 6])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13), h.make_opsetid("com.microsoft", 1)])
    load_model_proto(m)
    # and a bad scale on one of QLinearConcat's variadic inputs is found
    m.graph.initializer[2].CopyFrom(nh.from_array(np.array(-0.2, F32), "s2"))
    with pytest.raises(ModelError, match="node 'qadd'.*'s2'.*negative"):
        load_model_proto(m)


def test_per_axis_dequantize_matches():
    rng = np.random.default_rng(SEED)
    inits = [nh.from_array(rng.integers(-127, 128, (8, 4)).astype(np.int8), "Wq"),
             nh.from_array(np.full(8, 0.01, F32), "Ws"), nh.from_array(np.zeros(8, np.int8), "Wz")]
    nodes = [h.make_node("DequantizeLinear", ["Wq", "Ws", "Wz"], ["W"], name="dq", axis=0),
             h.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    g = h.make_graph(nodes, "g", [_vi("x", T.FLOAT, ["n", 8])], [_vi("y", T.FLOAT, ["n", 4])],
                     inits)
    load_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]))
