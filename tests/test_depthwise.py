"""Depthwise convolutions (group == C == M on NHWC data) on every ISA path and thread count.

A depthwise conv takes the per-channel kernels only when its input is NHWC, so each model
first runs an identity 1x1 QLinearConv (weights 1, scales equal: an exact copy into NHWC),
and every test checks that a depthwise step was really emitted. int8 results must equal
pyruntime.reference bit for bit; fp32 is compared with onnxruntime.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import reference as ref
from pyrt_testlib import path_params

PATHS = path_params()  # the emulated model too: never auto-selected, but accepted on request
THREADS = (1, 2, 3)
T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8, np.dtype(np.float32): TensorProto.FLOAT,
     np.dtype(np.int32): TensorProto.INT32}
OP_DEPTHWISE_Q, OP_DEPTHWISE_F32 = 22, 23
OUT_KIND = {np.dtype(np.int32): 0, np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3}


def _model(nodes, x, out_dtype, consts):
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", T[x.dtype], x.shape)],
                          [helper.make_tensor_value_info("y", T[np.dtype(out_dtype)], ["n", "c", "h", "w"])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _nhwc_copy(x, xs, xz):
    """Nodes and constants of an exact identity 1x1 QLinearConv: x -> "xn", stored NHWC."""
    C = x.shape[1]
    consts = dict(xs=np.float32(xs), xz=xz, iw=np.eye(C, dtype=np.int8).reshape(C, C, 1, 1), iws=np.float32(1),
                  iwz=np.int8(0))
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "iw", "iws", "iwz", "xs", "xz"], ["xn"])
    return [node], consts


def _ran_depthwise(steps, op, kind=None):
    dw = [ints for code, ints in steps if code == op]
    assert dw, "the depthwise kernel was not used"
    if kind is not None:
        assert dw[0][17] == OUT_KIND[np.dtype(kind)]


# C, H, W, k, stride, pads (t, l, b, r), dilation: channel counts cover the 32- and
# 16-channel blocks, the 8-channel block and the scalar tail; pads include asymmetric ones.
GEOMS = [
    (2, 7, 6, 3, 1, (1, 1, 1, 1), 1),
    (8, 9, 9, 3, 1, (1, 1, 1, 1), 1),
    (16, 8, 11, 5, 2, (2, 2, 2, 2), 1),
    (24, 10, 9, 3, 2, (0, 1, 2, 0), 1),
    (27, 9, 10, 3, 1, (2, 0, 1, 3), 2),
    (40, 12, 12, 5, 1, (2, 2, 2, 2), 2),
    (64, 6, 7, 3, 2, (1, 0, 1, 1), 1),
    (3, 5, 5, 5, 1, (0, 0, 0, 0), 1),
]
# x dtype, x zero point, out dtype, per-channel weights: zero points at both extremes.
QUANT = [(np.uint8, 0, np.uint8, True), (np.uint8, 255, np.int8, False), (np.int8, -128, np.int8, True),
         (np.int8, 127, np.uint8, False), (np.uint8, 131, np.uint8, False), (np.int8, -5, np.int8, True)]


def _case(i):
    C, H, W, k, s, pads, d = GEOMS[i % len(GEOMS)]
    xdt, xz, ydt, per_channel = QUANT[i % len(QUANT)]
    rng = np.random.default_rng(100 + i)
    info = np.iinfo(xdt)
    x = rng.integers(info.min, info.max + 1, (2, C, H, W)).astype(xdt)
    w = rng.integers(-128, 128, (C, 1, k, k)).astype(np.int8)
    if per_channel:
        ws = rng.uniform(0.002, 0.02, C).astype(np.float32)
        wz = rng.integers(-20, 21, C).astype(np.int8)
    else:
        ws, wz = np.float32(0.01), np.int8(3)
    b = rng.integers(-5000, 5000, C).astype(np.int32)
    ys, yz = np.float32(rng.uniform(0.5, 2.0)), np.array(rng.integers(-10, 10) + (128 if ydt == np.uint8 else 0), ydt)
    return x, np.asarray(xz, xdt), w, ws, wz, b, ys, yz, (k, s, pads, d)


def _run_qlinear_depthwise(x, xz, w, ws, wz, b, ys, yz, geom, isa, threads, xs=np.float32(0.05)):
    k, s, pads, d = geom
    C = x.shape[1]
    nodes, consts = _nhwc_copy(x, xs, xz)
    consts.update(w=w, ws=ws, wz=wz, ys=ys, yz=yz, b=b)
    nodes.append(helper.make_node("QLinearConv", ["xn", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                                  group=C, kernel_shape=[k, k], strides=[s, s], pads=list(pads), dilations=[d, d]))
    y = pyruntime.load(_model(nodes, x, yz.dtype, consts), isa=isa, threads=threads).run(None, {"x": x})[0]
    want = ref.qlinear_conv(x, xs, xz, w, ws, wz, ys, yz, b, strides=(s, s), pads=pads, dilations=(d, d), group=C)
    return y, want


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("i", range(12))
def test_int8_depthwise_matches_the_reference(emitted, i, isa, threads):
    x, xz, w, ws, wz, b, ys, yz, geom = _case(i)
    y, want = _run_qlinear_depthwise(x, xz, w, ws, wz, b, ys, yz, geom, isa, threads)
    _ran_depthwise(emitted, OP_DEPTHWISE_Q, yz.dtype)
    assert want.min() != want.max()  # a constant output would prove little
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("xdt", [np.uint8, np.int8])
def test_int8_depthwise_at_the_extremes(emitted, xdt, isa, threads):
    """Every |x - x_zp| and |w - w_zp| at 255, 5x5: the largest pair sums and accumulators."""
    C, k = 40, 5
    info = np.iinfo(xdt)
    x = np.full((1, C, 9, 9), info.max, xdt)
    x[:, ::3] = info.min  # channels at the other extreme flip the sign of the products
    xz = np.asarray(info.min, xdt)
    w = np.full((C, 1, k, k), -128, np.int8)
    w[1::2] = 127
    wz = np.where(np.arange(C) % 2 == 0, 127, -128).astype(np.int8)
    b = np.full(C, -(2 ** 20), np.int32)
    for ys, yz in ((np.float32(3e4), np.asarray(0, np.int8)), (np.float32(1e3), np.asarray(128, np.uint8))):
        y, want = _run_qlinear_depthwise(x, xz, w, np.full(C, 0.5, np.float32), wz, b, ys, yz, (k, 1, (2, 1, 2, 3), 1), isa,
                                         threads, xs=np.float32(1.0))
        _ran_depthwise(emitted, OP_DEPTHWISE_Q)
        np.testing.assert_array_equal(y, want)
    assert len(np.unique(want)) > 2


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", PATHS)
def test_convinteger_depthwise_returns_the_exact_int32_sums(emitted, isa, threads):
    rng = np.random.default_rng(7)
    C = 27
    x = rng.integers(0, 256, (2, C, 8, 9)).astype(np.uint8)
    w = rng.integers(-128, 128, (C, 1, 3, 3)).astype(np.int8)
    xz, wz = np.uint8(200), np.int8(-7)
    nodes, consts = _nhwc_copy(x, 0.1, xz)
    consts.update(w=w, wz=wz)
    nodes.append(helper.make_node("ConvInteger", ["xn", "w", "xz", "wz"], ["y"], group=C, pads=[1, 2, 0, 1],
                                  strides=[1, 2]))
    y = pyruntime.load(_model(nodes, x, np.int32, consts), isa=isa, threads=threads).run(None, {"x": x})[0]
    _ran_depthwise(emitted, OP_DEPTHWISE_Q, np.int32)
    want = ref.conv_int(x, xz, w, wz, strides=(1, 2), pads=(1, 2, 0, 1), group=C)
    np.testing.assert_array_equal(y, want.astype(np.int32))


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("C,k,s,pads,d", [(8, 3, 1, (1, 1, 1, 1), 1), (27, 3, 2, (0, 1, 2, 0), 1),
                                          (40, 5, 1, (2, 2, 2, 2), 2), (64, 3, 1, (1, 1, 1, 1), 1)])
def test_fp32_depthwise_matches_onnxruntime(emitted, C, k, s, pads, d, isa, threads):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(C * 10 + k)
    x = rng.standard_normal((2, C, 11, 10)).astype(np.float32)
    w0 = rng.standard_normal((C, C, 1, 1)).astype(np.float32) * 0.3
    w = rng.standard_normal((C, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["xn"]),  # its output is NHWC
             helper.make_node("Conv", ["xn", "w", "b"], ["y"], group=C, kernel_shape=[k, k], strides=[s, s],
                              pads=list(pads), dilations=[d, d])]
    m = _model(nodes, x, np.float32, dict(w0=w0, w=w, b=b))
    y = pyruntime.load(m, isa=isa, threads=threads).run(None, {"x": x})[0]
    _ran_depthwise(emitted, OP_DEPTHWISE_F32)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
