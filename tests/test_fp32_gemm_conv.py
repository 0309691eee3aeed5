"""fp32 GEMM and convolution on every ISA path and thread count.

The vector paths (the AVX2 6x16 tile, the AVX-512 tiles from 1x128 to 12x32) compute every
output the same way: one FMA chain from 0, k ascending, then + bias and the clamp. So they
must agree bit for bit with each other and across thread counts, whatever tile the shape
picks; the scalar path (no FMA) and onnxruntime are compared with a tolerance.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyrt_testlib import REAL_PATHS, path_params, usable_paths

PATHS = path_params(REAL_PATHS)
VECTOR = [p for p in usable_paths(REAL_PATHS) if p != "scalar"]
OP_SGEMM, OP_CONV_F32, OP_DEPTHWISE_F32 = 8, 17, 23


def _model(nodes, inputs, consts, out_shape):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _gemm_model(w, b, lo, hi):
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"]), helper.make_node("Clip", ["g", "lo", "hi"], ["y"])]
    return _model(nodes, [("x", ["m", w.shape[0]])], dict(w=w, b=b, lo=lo, hi=hi), ["m", w.shape[1]])


# (M, N, K): tile edges of both vector paths (M around 6 and 12, N around 16/32/64/128),
# K = 1, N = 1, and batch-1 rows (M = 1, 2: the wide AVX-512 tiles).
SHAPES = [(1, 1, 1), (1, 10, 1568), (1, 128, 64), (1, 129, 7), (2, 100, 33), (3, 65, 16), (5, 64, 5), (6, 64, 64),
          (7, 17, 1), (11, 48, 9), (12, 32, 144), (13, 33, 100), (17, 1, 31), (25, 130, 3), (64, 128, 257),
          (97, 16, 9), (200, 80, 70)]


def _gemm_case(M, N, K):
    rng = np.random.default_rng(M * 10007 + N * 101 + K)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_sgemm_paths_threads_and_reference(emitted, M, N, K):
    x, w, b = _gemm_case(M, N, K)
    lo, hi = np.float32(-0.5), np.float32(1.25)
    m = _gemm_model(w, b, lo, hi)
    want = np.clip(x.astype(np.float64) @ w + b, lo, hi)
    got = {}
    for isa in usable_paths(REAL_PATHS):
        for threads in (1, 2):
            got[isa, threads] = pyruntime.load(m, isa=isa, threads=threads).run(None, {"x": x})[0]
            np.testing.assert_allclose(got[isa, threads], want, rtol=1e-5, atol=1e-5, err_msg=f"{isa} {threads}")
    assert [c for c, _ in emitted].count(OP_SGEMM) >= 1
    for (isa, threads), y in got.items():
        np.testing.assert_array_equal(y, got[isa, 1], err_msg=f"{isa}: threads change the bits")
        if isa in VECTOR:
            np.testing.assert_array_equal(y, got[VECTOR[0], 1], err_msg=f"{isa} vs {VECTOR[0]}")


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("M,N,K", [(1, 130, 20), (9, 40, 7), (30, 70, 300)])
def test_sgemm_nan_and_inf_propagate(M, N, K, isa):
    """NaN in a row of x makes that row NaN through the clamp; inf * 0 is NaN; +-inf sums
    clamp to the bounds, like numpy's clip."""
    x, w, b = _gemm_case(M, N, K)
    x[0, K // 2] = np.nan
    if M > 2:
        x[2, 0] = np.inf
        w[0, : N // 2] = 0.0  # inf * 0 -> NaN in those columns, inf in the rest
    lo, hi = np.float32(-1.0), np.float32(2.0)
    y = pyruntime.load(_gemm_model(w, b, lo, hi), isa=isa).run(None, {"x": x})[0]
    with np.errstate(invalid="ignore", over="ignore"):
        want = np.clip(x.astype(np.float64) @ w + b, lo, hi)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    assert np.isnan(y[0]).all()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5, equal_nan=True)


# (C, M, H, W, k, stride, pads, dilation): first layers (C = 1), 1x1 (GEMM on the image
# itself), strided and dilated windows, odd channel counts, a 14-row image in several chunks,
# a stride that leaves input columns unread, pads wider than the window's reach.
CONVS = [
    (1, 16, 28, 28, 3, 1, (1, 1, 1, 1), 1),
    (1, 7, 9, 11, 5, 2, (2, 1, 0, 2), 1),
    (3, 33, 10, 9, 3, 1, (0, 0, 0, 0), 2),
    (16, 32, 14, 14, 3, 1, (1, 1, 1, 1), 1),
    (32, 64, 12, 12, 1, 1, (0, 0, 0, 0), 1),
    (5, 9, 7, 7, 1, 2, (0, 0, 0, 0), 1),
    (64, 70, 14, 14, 3, 1, (1, 1, 1, 1), 1),
    (20, 130, 6, 5, 3, 2, (1, 0, 1, 1), 1),
    (4, 8, 11, 11, 3, 3, (0, 0, 0, 0), 1),
    (2, 24, 5, 6, 3, 1, (2, 3, 2, 3), 1),
]


def _conv_model(C, M, k, s, pads, d, relu):
    rng = np.random.default_rng(C * 31 + M * 7 + k)
    w0 = (rng.standard_normal((C, C, 1, 1)) * 0.5).astype(np.float32)  # makes the conv's input NHWC
    w = (rng.standard_normal((M, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["xn"]),
             helper.make_node("Conv", ["xn", "w", "b"], ["c" if relu else "y"], kernel_shape=[k, k], strides=[s, s],
                              pads=list(pads), dilations=[d, d])]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    return _model(nodes, [("x", ["n", C, "h", "w"])], dict(w0=w0, w=w, b=b), ["n", M, "oh", "ow"])


@pytest.mark.parametrize("geom", CONVS, ids=[str(i) for i in range(len(CONVS))])
def test_conv_f32_paths_threads_and_onnxruntime(emitted, geom):
    ort = pytest.importorskip("onnxruntime")
    C, M, H, W, k, s, pads, d = geom
    m = _conv_model(C, M, k, s, pads, d, relu=bool(C % 2))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(H * W + C)
    for n in (1, 3):
        x = rng.standard_normal((n, C, H, W)).astype(np.float32)
        x[-1, 0, H // 2, W // 2] = np.nan  # the last image's NaN reaches only its own window
        want = sess.run(None, {"x": x})[0]
        got = {}
        for isa in usable_paths(REAL_PATHS):
            for threads in (1, 2, 3):
                y = pyruntime.load(m, isa=isa, threads=threads).run(None, {"x": x})[0]
                np.testing.assert_array_equal(np.isnan(y), np.isnan(want), err_msg=f"{isa} {threads}")
                np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=f"{isa} {threads}")
                got[isa, threads] = y
        for (isa, threads), y in got.items():
            np.testing.assert_array_equal(y, got[isa, 1], err_msg=f"{isa}: threads change the bits")
            if isa in VECTOR:
                np.testing.assert_array_equal(y, got[VECTOR[0], 1], err_msg=f"{isa} vs {VECTOR[0]}")
    convs = [ints for c, ints in emitted if c == OP_CONV_F32]
    assert any(ints[16] == 1 and ints[17] == 1 for ints in convs), "the NHWC conv path was not taken"


# (C, k, stride, pads, dilation): channel counts around the 16-channel vector (tail masks),
# windows where four neighbouring outputs lie inside the image and where none do.
DEPTHWISE = [(7, 3, 1, (1, 1, 1, 1), 1), (16, 3, 1, (0, 0, 0, 0), 1), (32, 3, 2, (1, 1, 1, 1), 1),
             (40, 5, 1, (2, 1, 2, 3), 2), (64, 3, 1, (1, 1, 1, 1), 1), (3, 7, 1, (3, 3, 3, 3), 1)]


@pytest.mark.parametrize("C,k,s,pads,d", DEPTHWISE)
def test_fp32_depthwise_vector_paths_agree_bit_for_bit(emitted, C, k, s, pads, d):
    """The AVX-512 depthwise kernel (four pixels at a time) and the AVX2 one do the same
    arithmetic per output; both stay within tolerance of the scalar path, NaN included."""
    rng = np.random.default_rng(C * 100 + k * 10 + s)
    w0 = (rng.standard_normal((C, C, 1, 1)) * 0.3).astype(np.float32)  # makes the depthwise input NHWC
    w = rng.standard_normal((C, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["xn"]),
             helper.make_node("Conv", ["xn", "w", "b"], ["c"], group=C, kernel_shape=[k, k], strides=[s, s],
                              pads=list(pads), dilations=[d, d]),
             helper.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [("x", ["n", C, "h", "w"])], dict(w0=w0, w=w, b=b), ["n", C, "oh", "ow"])
    x = rng.standard_normal((2, C, 13, 17)).astype(np.float32)
    x[1, 0, 6, 8] = np.nan
    got = {(isa, t): pyruntime.load(m, isa=isa, threads=t).run(None, {"x": x})[0]
           for isa in usable_paths(REAL_PATHS) for t in (1, 2)}
    assert any(c == OP_DEPTHWISE_F32 for c, _ in emitted), "the fp32 depthwise kernel was not used"
    ref = got["scalar", 1]
    assert np.isnan(ref).any()
    for (isa, t), y in got.items():
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ref), err_msg=f"{isa} {t}")
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=f"{isa} {t}")
        np.testing.assert_array_equal(y, got[isa, 1], err_msg=f"{isa}: threads change the bits")
        if isa in VECTOR:
            np.testing.assert_array_equal(y, got[VECTOR[0], 1], err_msg=f"{isa} vs {VECTOR[0]}")
