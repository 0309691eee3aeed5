"""int8 convolutions on every ISA path against the int64 reference (reference.qlinear_conv),
bit for bit: strides, dilations, asymmetric pads, groups and depthwise, u8 and s8 data,
per-tensor and per-channel weights; plus hostile conv attributes refused at load."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import ModelError
from pyruntime import reference as ref
from pyrt_testlib import REAL_PATHS, path_params

PATHS = path_params(REAL_PATHS)  # capped or missing paths skip with the reason
T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}

CASES = [  # C, M, H, W, kernel, strides, pads (t, l, b, r), dilations, group
    (3, 8, 9, 9, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (4, 6, 10, 7, (3, 2), (2, 1), (0, 1, 2, 0), (1, 1), 1),
    (2, 5, 11, 11, (3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 1),
    (8, 8, 8, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),   # depthwise 3x3
    (8, 8, 9, 9, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 8),   # depthwise 5x5 stride 2
    (6, 4, 7, 7, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2),   # grouped pointwise
    (16, 32, 5, 5, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # pointwise
]


def qlinear_conv_model(x, xs, xz, w, ws, wz, ys, yz, b, kernel, strides, pads, dilations, group):
    consts = dict(xs=xs, xz=xz, w=w, ws=ws, wz=wz, ys=ys, yz=yz, b=b)
    node = helper.make_node("QLinearConv", list(consts.keys())[:0] + ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                            ["y"], kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                            dilations=list(dilations), group=group)
    g = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", T[x.dtype], x.shape)],
                          [helper.make_tensor_value_info("y", T[np.asarray(yz).dtype], ["n", "m", "h", "w"])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("case", CASES, ids=[f"C{c[0]}M{c[1]}k{c[4][0]}s{c[5][0]}g{c[8]}" for c in CASES])
@pytest.mark.parametrize("xdt,per_channel", [(np.uint8, True), (np.int8, False)])
def test_qlinear_conv_matches_reference(isa, case, xdt, per_channel):
    C, M, H, W, kernel, strides, pads, dil, group = case
    rng = np.random.default_rng(C * 31 + M)
    info = np.iinfo(xdt)
    x = rng.integers(info.min, info.max + 1, (2, C, H, W)).astype(xdt)
    w = rng.integers(-128, 128, (M, C // group) + kernel).astype(np.int8)
    b = rng.integers(-2000, 2000, M).astype(np.int32)
    xz = np.array(3 if xdt == np.uint8 else -5, xdt)
    ws = rng.uniform(1e-3, 1e-2, M).astype(np.float32) if per_channel else np.float32(4e-3)
    wz = np.zeros(M if per_channel else (), np.int8)
    ys, yz = np.float32(0.07), np.array(10, xdt)
    m = qlinear_conv_model(x, np.float32(0.02), xz, w, ws, wz, ys, yz, b, kernel, strides, pads, dil, group)
    y = pyruntime.load(m, isa=isa).run(None, {"x": x})[0]
    want = ref.qlinear_conv(x, np.float32(0.02), int(xz), w, ws, wz, ys, yz, b, strides=strides, pads=pads,
                            dilations=dil, group=group)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("attrs,fragment", [
    (dict(strides=[0, 1]), "strides"),
    (dict(group=3), "group"),
    (dict(kernel_shape=[5, 5]), "kernel_shape"),
    (dict(pads=[0, 0, 0, 0], dilations=[9, 9]), "exceeds the padded input"),
])
def test_hostile_conv_attributes_are_refused(attrs, fragment):
    x = np.zeros((1, 4, 6, 6), np.float32)
    w = numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    g = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "m", "h", "w"])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises((ModelError, pyruntime.UnsupportedError), match=fragment):
        pyruntime.load(m).run(None, {"x": x})


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (5, 2, 2, 1), (3, 1, 2, 2)])
def test_depthwise_after_a_conv_runs_the_channel_vector_kernel_exactly(isa, k, s, p, d):
    """A depthwise conv fed by a conv sees NHWC data and takes the per-channel kernel."""
    rng = np.random.default_rng(k * 7 + s)
    x = rng.integers(0, 256, (2, 3, 9, 9)).astype(np.uint8)
    w1 = rng.integers(-128, 128, (8, 3, 3, 3)).astype(np.int8)
    w2 = rng.integers(-128, 128, (8, 1, k, k)).astype(np.int8)
    b2 = rng.integers(-300, 300, 8).astype(np.int32)
    c = dict(s1=np.float32(0.02), z1=np.uint8(10), w1=w1, ws1=np.float32(0.003), wz1=np.int8(0), s2=np.float32(0.05),
             z2=np.uint8(7), w2=w2, ws2=rng.uniform(0.001, 0.01, 8).astype(np.float32), wz2=np.zeros(8, np.int8),
             s3=np.float32(0.04), z3=np.uint8(120), b2=b2)
    nodes = [helper.make_node("QLinearConv", ["x", "s1", "z1", "w1", "ws1", "wz1", "s2", "z2"], ["q1"], pads=[1] * 4),
             helper.make_node("QLinearConv", ["q1", "s2", "z2", "w2", "ws2", "wz2", "s3", "z3", "b2"], ["y"], group=8,
                              strides=[s, s], pads=[p] * 4, dilations=[d, d])]
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, ["n", "c", "h", "w"])],
                          [numpy_helper.from_array(np.asarray(v), name) for name, v in c.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    y = pyruntime.load(m, isa=isa).run(None, {"x": x})[0]
    q1 = ref.qlinear_conv(x, c["s1"], 10, w1, c["ws1"], 0, c["s2"], c["z2"], None, pads=(1, 1, 1, 1))
    want = ref.qlinear_conv(q1, c["s2"], 7, w2, c["ws2"], c["wz2"], c["s3"], c["z3"], b2, strides=(s, s),
                            pads=(p,) * 4, dilations=(d, d), group=8)
    np.testing.assert_array_equal(y, want)
