"""Flatten of a channels-last conv output read by a GEMM: no transpose, reordered weight rows.

Convs keep activations NHWC; a Flatten after them used to cost a transpose to NCHW order
(0.4 us of small-cnn's 15 at batch 1). Where the flattened tensor is only a constant-weight
GEMM's A, the bytes stay in NHWC order and the GEMM's weight rows are permuted to match
(lower_gemm.packed_for). The answers must not change: int8 bit for bit against the
reference, fp32 against onnxruntime.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import reference as ref
from pyruntime.onnx_import.lower import OP, Lowering
from pyrt_testlib import REAL_PATHS, path_params

C_IN, C, H, W, N_OUT = 3, 8, 6, 5, 7


def _model(nodes, inputs, outputs, init, opset=19):
    g = helper.make_graph(nodes, "flat", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in init.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def int8_model(rng, flat_is_output=False):
    init = dict(xs=np.float32(0.05), xz=np.uint8(100), w=rng.integers(-127, 128, (C, C_IN, 3, 3)).astype(np.int8),
                ws=np.float32(0.01), wz=np.int8(0), ys=np.float32(0.3), yz=np.uint8(7),
                b=rng.integers(-127, 128, (C * H * W, N_OUT)).astype(np.int8), bs=np.float32(0.02), bz=np.int8(0),
                zs=np.float32(0.7), zz=np.uint8(128))
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["y"], ["f"], axis=1),
             helper.make_node("QLinearMatMul", ["f", "ys", "yz", "b", "bs", "bz", "zs", "zz"], ["z"])]
    outs = [helper.make_tensor_value_info("z", TensorProto.UINT8, ["N", N_OUT])]
    if flat_is_output:
        outs.append(helper.make_tensor_value_info("f", TensorProto.UINT8, ["N", C * H * W]))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", C_IN, H, W])], outs, init), init


def transposes_planned(model, x):
    m = pyruntime.load(model)
    low = Lowering(m._g, [x.shape], {})
    low.run()
    return sum(s["op"] == OP["transpose"] for s in low.steps)


@pytest.mark.parametrize("isa", path_params(REAL_PATHS))
@pytest.mark.parametrize("batch", [1, 4])
def test_int8_flatten_of_nhwc_conv_output_matches_reference(isa, batch):
    rng = np.random.default_rng(21)
    model, c = int8_model(rng)
    x = rng.integers(0, 256, (batch, C_IN, H, W)).astype(np.uint8)
    assert transposes_planned(model, x) == 0
    y = ref.qlinear_conv(x, c["xs"], 100, c["w"], c["ws"], 0, c["ys"], np.uint8(7), pads=(1, 1, 1, 1))
    want = ref.qlinear_matmul(y.reshape(batch, -1), c["ys"], 7, c["b"], c["bs"], 0, c["zs"], np.uint8(128))
    np.testing.assert_array_equal(pyruntime.load(model, isa=isa).run(None, {"x": x})[0], want)


def test_flatten_wanted_as_an_output_keeps_nchw_order():
    rng = np.random.default_rng(22)
    model, c = int8_model(rng, flat_is_output=True)
    x = rng.integers(0, 256, (2, C_IN, H, W)).astype(np.uint8)
    assert transposes_planned(model, x) == 1
    z, f = pyruntime.load(model).run(None, {"x": x})
    y = ref.qlinear_conv(x, c["xs"], 100, c["w"], c["ws"], 0, c["ys"], np.uint8(7), pads=(1, 1, 1, 1))
    np.testing.assert_array_equal(f, y.reshape(2, -1))
    np.testing.assert_array_equal(z, ref.qlinear_matmul(y.reshape(2, -1), c["ys"], 7, c["b"], c["bs"], 0, c["zs"],
                                                        np.uint8(128)))


@pytest.mark.parametrize("isa", path_params(REAL_PATHS))
def test_fp32_flatten_of_nhwc_conv_output_matches_onnxruntime(isa):
    import onnxruntime as ort
    rng = np.random.default_rng(23)
    init = dict(w=rng.normal(0, 0.3, (C, C_IN, 3, 3)).astype(np.float32), cb=rng.normal(0, 0.1, C).astype(np.float32),
                b=rng.normal(0, 0.1, (N_OUT, C * H * W)).astype(np.float32), gb=rng.normal(0, 0.1, N_OUT).astype(np.float32))
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "b", "gb"], ["z"], transB=1)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C_IN, H, W])],
                   [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", N_OUT])], init)
    x = rng.normal(0, 1, (3, C_IN, H, W)).astype(np.float32)
    assert transposes_planned(model, x) == 0
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(pyruntime.load(model, isa=isa).run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-4)
