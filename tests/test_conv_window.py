"""The direct small-window int8 convolutions (csrc/kernels/qconv/conv_window_*.cc): a
first layer's K = kh*kw*C <= 32 window gathered per pixel, no im2col. Every case must equal
pyruntime.reference bit for bit on every ISA path and thread count, and each case states
whether the window kernel takes it (checked against the native predicate on the emitted
step, so a case meant for the kernel cannot silently fall back to im2col)."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import _native
from pyruntime import reference as ref
from pyruntime.onnx_import import lower
from pyrt_testlib import REAL_PATHS, path_params

PATHS = path_params(REAL_PATHS)  # capped or missing paths skip with the reason
T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32}

CASES = [  # C, M, H, W, kernel, strides, pads (t, l, b, r), dilations, window kernel?
    (1, 16, 28, 28, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True),
    (1, 5, 9, 11, (5, 5), (2, 2), (0, 1, 2, 2), (2, 1), True),
    (1, 33, 7, 7, (1, 7), (1, 1), (0, 3, 0, 3), (1, 1), True),
    (1, 72, 9, 10, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True),  # 5 panels: 4 at once, then a partial one
    (3, 17, 10, 10, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True),   # K = 27: both halves
    (2, 8, 8, 8, (2, 4), (1, 3), (1, 0, 0, 2), (1, 1), True),     # K = 16 exactly
    (16, 20, 5, 6, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), True),   # pointwise, one 16-byte row
    (1, 8, 9, 9, (3, 3), (1, 1), (2, 2, 2, 2), (1, 2), False),    # x dilation: window rows not contiguous
    (4, 8, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),    # kw*C = 12 but K = 36 > 32
]


def conv_q_ints(emitted) -> list:
    return [ints for op, ints in emitted if op == lower.OP["conv_q"]]


def _model(x, consts, nodes, out_dtype):
    g = helper.make_graph(nodes, "w", [helper.make_tensor_value_info("x", T[x.dtype], x.shape)],
                          [helper.make_tensor_value_info("y", T[np.dtype(out_dtype)], ["n", "c", "h", "w"])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _to_nhwc(x, xs, xz, consts):
    """An exact identity 1x1 QLinearConv in front, so the conv under test reads NHWC data
    (a model's multi-channel NCHW input would take im2col instead)."""
    C = x.shape[1]
    consts.update(iw=np.eye(C, dtype=np.int8).reshape(C, C, 1, 1), iws=np.float32(1), iwz=np.int8(0))
    return [helper.make_node("QLinearConv", ["x", "xs", "xz", "iw", "iws", "iwz", "xs", "xz"], ["xn"])], "xn"


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", CASES, ids=[f"C{c[0]}M{c[1]}k{c[4][0]}x{c[4][1]}s{c[5][1]}d{c[7][1]}" for c in CASES])
@pytest.mark.parametrize("xdt,wdt,per_channel", [(np.uint8, np.int8, True), (np.int8, np.int8, False),
                                                 (np.uint8, np.uint8, True), (np.int8, np.uint8, False)])
def test_window_conv_matches_reference(emitted, isa, threads, case, xdt, wdt, per_channel):
    C, M, H, W, kernel, strides, pads, dil, window = case
    rng = np.random.default_rng(C * 131 + M * 7 + kernel[1])
    xi, wi = np.iinfo(xdt), np.iinfo(wdt)
    x = rng.integers(xi.min, xi.max + 1, (3, C, H, W)).astype(xdt)
    x[0] = xi.max  # every activation at the far end from the zero point
    w = rng.integers(wi.min, wi.max + 1, (M, C) + kernel).astype(wdt)
    w[0] = wi.min
    xz = np.array(xi.min + 1 if xdt == np.uint8 else xi.max - 2, xdt)
    wz = (rng.integers(wi.min, wi.max + 1, M) if wdt == np.uint8 else np.zeros(M)).astype(wdt)
    ws = rng.uniform(1e-3, 1e-2, M).astype(np.float32)
    if not per_channel:  # u8 weights at zero point 128: s8 weights with zero point 0 once shifted
        wz, ws = (np.array(128, wdt) if wdt == np.uint8 else wz[:1].reshape(())), ws[:1].reshape(())
    b = rng.integers(-5000, 5000, M).astype(np.int32)
    ys, yz = np.float32(0.3), np.array(-3 if xdt == np.int8 else 100, xdt)
    consts = dict(xs=np.float32(0.02), xz=xz, w=w, ws=ws, wz=wz, ys=ys, yz=yz, b=b)
    nodes, src = _to_nhwc(x, 0.02, xz, consts) if C > 1 else ([], "x")
    nodes.append(helper.make_node("QLinearConv", [src, "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                                  kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                                  dilations=list(dil)))
    y = pyruntime.load(_model(x, consts, nodes, xdt), isa=isa, threads=threads).run(None, {"x": x})[0]
    want = ref.qlinear_conv(x, consts["xs"], int(xz), w, ws, wz, ys, yz, b, strides=strides, pads=pads,
                            dilations=dil)
    np.testing.assert_array_equal(y, want)
    assert _native.conv_window_applies(conv_q_ints(emitted)[-1]) == window


@pytest.mark.parametrize("isa", PATHS)
def test_window_conv_int32_and_relu_outputs(emitted, isa):
    """ConvInteger (raw int32 out) and a clamped u8 output through the same kernel."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (2, 1, 12, 12)).astype(np.uint8)
    w = rng.integers(-128, 128, (24, 1, 3, 3)).astype(np.int8)
    consts = dict(w=w, xz=np.uint8(200))
    node = helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1])
    y = pyruntime.load(_model(x, consts, [node], np.int32), isa=isa).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, ref.conv_int(x, 200, w, pads=(1, 1, 1, 1)))
    assert conv_q_ints(emitted) and _native.conv_window_applies(conv_q_ints(emitted)[-1])


@pytest.mark.parametrize("isa", path_params(REAL_PATHS[1:]))  # the window kernel is AVX2 code
def test_window_conv_refuses_an_accumulator_that_could_wrap(isa):
    """A bias next to 2^31 could wrap int32 with the window's sums: refused, not wrapped."""
    x = np.zeros((1, 1, 4, 4), np.uint8)
    consts = dict(xs=np.float32(1), xz=np.uint8(0), w=np.full((2, 1, 3, 3), -128, np.int8), ws=np.float32(1),
                  wz=np.int8(0), ys=np.float32(1), yz=np.uint8(0), b=np.array([-2**31 + 5, 0], np.int32))
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], pads=[1] * 4)
    with pytest.raises(pyruntime.UnsupportedError, match="2\\^31-1"):
        pyruntime.load(_model(x, consts, [node], np.uint8), isa=isa).run(None, {"x": x})


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("xdt", [np.uint8, np.int8])
def test_im2col_conv_splits_pixels_across_threads(emitted, isa, threads, xdt):
    """The window kernel's companion: a K = 144 NHWC conv at batch 1 takes im2col + GEMM,
    with each thread gathering and multiplying its own band of output pixels. Every thread
    count gives the reference's bits."""
    rng = np.random.default_rng(21)
    xi = np.iinfo(xdt)
    x = rng.integers(xi.min, xi.max + 1, (1, 16, 20, 20)).astype(xdt)
    w = rng.integers(-128, 128, (48, 16, 3, 3)).astype(np.int8)
    ws = rng.uniform(1e-3, 1e-2, 48).astype(np.float32)
    xz, yz = np.array(3, xdt), np.array(-7 if xdt == np.int8 else 90, xdt)
    b = rng.integers(-5000, 5000, 48).astype(np.int32)
    consts = dict(xs=np.float32(0.02), xz=xz, w=w, ws=ws, wz=np.zeros(48, np.int8), ys=np.float32(0.4), yz=yz, b=b)
    nodes, src = _to_nhwc(x, 0.02, xz, consts)
    nodes.append(helper.make_node("QLinearConv", [src, "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                                  kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    model = _model(x, consts, nodes, xdt)
    # A band no thread writes would keep what the per-thread arena held, often the right
    # answer from an earlier run: one thread first writes every pixel for another input.
    pyruntime.load(model, isa=isa, threads=1).run(None, {"x": (x ^ 0x5A).astype(xdt)})
    y = pyruntime.load(model, isa=isa, threads=threads).run(None, {"x": x})[0]
    want = ref.qlinear_conv(x, consts["xs"], int(xz), w, ws, consts["wz"], consts["ys"], yz, b, pads=(1, 1, 1, 1))
    np.testing.assert_array_equal(y, want)
    assert not _native.conv_window_applies(conv_q_ints(emitted)[-1])
