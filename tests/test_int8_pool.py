"""int8 average pools (pyruntime/onnx_import/fuse_qpool.py, csrc/kernels/qconv/pool.h):
com.microsoft QLinearGlobalAveragePool / QLinearAveragePool in both layouts on every ISA
path against reference.qlinear_avg_pool bit for bit, against onnxruntime within one step,
and the DQ -> GlobalAveragePool -> Q fusion (it fires, reads channels-last conv outputs,
and stays within one step of the float chain)."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import reference as ref
from pyrt_testlib import path_params

PATHS = path_params()
T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}
MS = "com.microsoft"

GLOBAL_SHAPES = [(1, 1, 7, 7), (2, 3, 1, 1), (1, 16, 13, 17), (3, 40, 7, 7), (1, 3, 13, 17), (2, 16, 1, 1),
                 (1, 40, 5, 3), (2, 1, 33, 2)]  # N, C, H, W; 13*17 and 33*2 leave vector tails


def _params(rng, dtype):
    zp = lambda: np.array(rng.integers(*((0, 256) if dtype == np.uint8 else (-128, 128))), dtype)
    return np.float32(rng.uniform(0.01, 0.1)), zp(), np.float32(rng.uniform(0.002, 0.05)), zp()


def _contrib_model(op, x_shape, dtype, xs, xz, ys, yz, **attrs):
    consts = [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(xs=xs, xz=xz, ys=ys, yz=yz).items()]
    node = helper.make_node(op, ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS, **attrs)
    g = helper.make_graph([node], "p", [helper.make_tensor_value_info("x", T[np.dtype(dtype)], x_shape)],
                          [helper.make_tensor_value_info("y", T[np.dtype(dtype)], ["n", "a", "b", "c"])], consts)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    return m


def _case(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    lo, hi = ref.dtype_range(dtype)
    return rng.integers(lo, hi + 1, shape).astype(dtype), _params(rng, dtype)


def _to_last(a):
    return np.moveaxis(a, 1, -1)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8], ids=["u8", "s8"])
@pytest.mark.parametrize("channels_last", [0, 1], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", GLOBAL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_global_avg_pool_matches_reference(isa, dtype, channels_last, shape):
    x, (xs, xz, ys, yz) = _case(sum(shape) * 7 + channels_last, shape, dtype)
    expected = ref.qlinear_global_avg_pool(x, xs, xz, ys, yz)
    feed = _to_last(x) if channels_last else x
    m = pyruntime.load(_contrib_model("QLinearGlobalAveragePool", feed.shape, dtype, xs, xz, ys, yz,
                                      channels_last=channels_last), isa=isa, threads=1)
    got = m.run(None, {"x": np.ascontiguousarray(feed)})[0]
    np.testing.assert_array_equal(got, _to_last(expected) if channels_last else expected)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("channels_last", [0, 1], ids=["nchw", "nhwc"])
def test_global_avg_pool_split_over_threads(isa, channels_last):
    """A batch large enough (> 2 x 256 KB) that its images are split over two threads; odd
    batch and channel counts so the shares differ in size and the vectors have tails."""
    x, (xs, xz, ys, yz) = _case(91 + channels_last, (9, 70, 31, 29), np.uint8)
    expected = ref.qlinear_global_avg_pool(x, xs, xz, ys, yz)
    feed = np.ascontiguousarray(_to_last(x) if channels_last else x)
    model = _contrib_model("QLinearGlobalAveragePool", feed.shape, np.uint8, xs, xz, ys, yz,
                           channels_last=channels_last)
    for threads in (1, 2):
        got = pyruntime.load(model, isa=isa, threads=threads).run(None, {"x": feed})[0]
        np.testing.assert_array_equal(got, _to_last(expected) if channels_last else expected, err_msg=f"{threads=}")


def test_global_avg_pool_extremes_saturate():
    """All-max and all-min inputs with a narrow output scale hit both clamps exactly."""
    for dtype in (np.uint8, np.int8):
        lo, hi = ref.dtype_range(dtype)
        x = np.concatenate([np.full((1, 8, 5, 5), hi), np.full((1, 8, 5, 5), lo)], axis=1).astype(dtype)
        args = (np.float32(0.5), np.array(0, dtype), np.float32(0.01), np.array(0, dtype))
        m = pyruntime.load(_contrib_model("QLinearGlobalAveragePool", x.shape, dtype, *args), threads=1)
        got = m.run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, ref.qlinear_global_avg_pool(x, *args))
        assert got.min() == lo and got.max() == hi


POOL_CASES = [  # shape, kernel, strides, pads, count_include_pad, ceil_mode
    ((1, 3, 7, 7), (3, 3), (2, 2), (1, 1, 1, 1), 0, 0),
    ((2, 16, 9, 8), (3, 3), (2, 2), (1, 1, 1, 1), 1, 0),
    ((1, 40, 13, 17), (2, 3), (1, 2), (0, 1, 1, 0), 0, 1),
    ((1, 1, 6, 6), (2, 2), (2, 2), (0, 0, 0, 0), 0, 0),
    ((2, 5, 8, 5), (5, 5), (3, 3), (2, 2, 2, 2), 1, 1),
]


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8], ids=["u8", "s8"])
@pytest.mark.parametrize("channels_last", [0, 1], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}k{c[1][0]}{c[1][1]}")
def test_avg_pool_matches_reference(isa, dtype, channels_last, case):
    shape, kernel, strides, pads, include_pad, ceil_mode = case
    x, (xs, xz, ys, yz) = _case(sum(shape) + 3 * channels_last, shape, dtype)
    m = pyruntime.load(_contrib_model("QLinearAveragePool", (_to_last(x) if channels_last else x).shape, dtype, xs,
                                      xz, ys, yz, kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                                      count_include_pad=include_pad, ceil_mode=ceil_mode,
                                      channels_last=channels_last), isa=isa, threads=1)
    got = m.run(None, {"x": np.ascontiguousarray(_to_last(x) if channels_last else x)})[0]
    expected = ref.qlinear_avg_pool(x, xs, xz, ys, yz, kernel=kernel, strides=strides, pads=pads,
                                    count_include_pad=bool(include_pad), ceil_mode=bool(ceil_mode))
    np.testing.assert_array_equal(got, _to_last(expected) if channels_last else expected)


def _ort_run(model, x):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8], ids=["u8", "s8"])
@pytest.mark.parametrize("channels_last", [0, 1], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("op,attrs", [
    ("QLinearGlobalAveragePool", {}),
    ("QLinearAveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("QLinearAveragePool", dict(kernel_shape=[2, 2], strides=[1, 1], count_include_pad=1, pads=[1, 0, 0, 1])),
], ids=["global", "k3s2", "k2pad"])
def test_contrib_pools_match_onnxruntime(dtype, channels_last, op, attrs):
    x, (xs, xz, ys, yz) = _case(11 + channels_last, (2, 40, 13, 17), dtype)
    if channels_last:
        x = np.ascontiguousarray(_to_last(x))
    model = _contrib_model(op, x.shape, dtype, xs, xz, ys, yz, channels_last=channels_last, **attrs)
    got = pyruntime.load(model, threads=1).run(None, {"x": x})[0]
    want = _ort_run(model, x)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1


def _qdq_gap_model(dtype, c_in, c_out, hw, seed, with_conv=True, pool="GlobalAveragePool", **pool_attrs):
    """x (float) -> Q -> DQ -> [Conv (DQ weights) + bias -> Relu -> Q -> DQ] -> GlobalAveragePool
    (or `pool`) -> Q -> DQ -> y, the chain onnxruntime's quantize_static writes."""
    rng = np.random.default_rng(seed)
    zp = lambda v: np.array(v, dtype)
    c = dict(xs=np.float32(0.03), xz=zp(3 if dtype == np.uint8 else -2), hs=np.float32(0.02),
             hz=zp(0 if dtype == np.uint8 else -128), gs=np.float32(0.011), gz=zp(7 if dtype == np.uint8 else -5))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"])]
    feat = "xd"
    if with_conv:
        # Small weights: onnxruntime's AVX2 int8 conv saturates int16 pair sums on wide ones
        # (DESIGN.md "Integer exactness"), which would swamp the pool's one-step parity.
        c.update(w=rng.integers(-30, 31, (c_out, c_in, 3, 3)).astype(np.int8),
                 ws=np.float32(0.004), wz=np.array(0, np.int8),
                 b=rng.integers(-300, 300, c_out).astype(np.int32), bs=np.float32(0.03 * 0.004),
                 bz=np.array(0, np.int32))
        nodes += [helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"]),
                  helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"]),
                  helper.make_node("Conv", ["xd", "wd", "bd"], ["conv"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["conv"], ["relu"]),
                  helper.make_node("QuantizeLinear", ["relu", "hs", "hz"], ["hq"]),
                  helper.make_node("DequantizeLinear", ["hq", "hs", "hz"], ["hd"])]
        feat = "hd"
    nodes += [helper.make_node(pool, [feat], ["gap"], **pool_attrs),
              helper.make_node("QuantizeLinear", ["gap", "gs", "gz"], ["gq"]),
              helper.make_node("DequantizeLinear", ["gq", "gs", "gz"], ["y"])]
    g = helper.make_graph(nodes, "qgap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c_in, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in c.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("dtype", [np.uint8, np.int8], ids=["u8", "s8"])
def test_qdq_gap_fuses_and_matches_onnxruntime(dtype):
    model = _qdq_gap_model(dtype, 3, 40, 7, seed=5)
    x = np.random.default_rng(6).standard_normal((2, 3, 7, 7)).astype(np.float32) * 2
    m = pyruntime.load(model, threads=1)
    assert "QAvgPool fused[DequantizeLinear + GlobalAveragePool + QuantizeLinear]" in m.summary()
    assert "GlobalAveragePool:" not in m.summary() and "DequantizeLinear: DequantizeLinear" not in m.summary()
    got, want = m.run(None, {"x": x})[0], _ort_run(model, x)
    assert got.shape == want.shape == (2, 40, 1, 1)
    assert np.abs(got - want).max() <= 0.011 * 1.0001  # one output step


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8], ids=["u8", "s8"])
def test_qdq_gap_is_the_reference_and_near_the_float_chain(isa, dtype):
    """Without a conv the pool reads the quantized input itself: the fused output is the
    reference bit for bit, and at most one step from float DQ -> mean -> Q."""
    model = _qdq_gap_model(dtype, 16, 0, 13, seed=8, with_conv=False)
    x = np.random.default_rng(9).standard_normal((2, 16, 13, 13)).astype(np.float32) * 3
    m = pyruntime.load(model, isa=isa, threads=1)
    assert "QAvgPool" in m.summary()
    c = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    xq = ref.quantize_linear(x, c["xs"], int(c["xz"]), dtype)
    exact = ref.qlinear_global_avg_pool(xq, c["xs"], c["xz"], c["gs"], c["gz"])
    float_chain = ref.quantize_linear(ref.dequantize_linear(xq, c["xs"], int(c["xz"])).mean(axis=(2, 3), keepdims=True,
                                                                                              dtype=np.float32),
                                      c["gs"], int(c["gz"]), dtype)
    got = m.run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, ref.dequantize_linear(exact, c["gs"], int(c["gz"])))
    assert np.abs(exact.astype(np.int32) - float_chain.astype(np.int32)).max() <= 1


@pytest.mark.parametrize("dtype", [np.uint8, np.int8], ids=["u8", "s8"])
def test_qdq_average_pool_fuses_on_channels_last_input(dtype):
    """A windowed pool after a conv reads and writes channels-last; the graph output
    still leaves NCHW, within one step of onnxruntime's float pool."""
    model = _qdq_gap_model(dtype, 3, 16, 9, seed=12, pool="AveragePool", kernel_shape=[3, 3], strides=[2, 2],
                           pads=[1, 1, 1, 1])
    x = np.random.default_rng(13).standard_normal((2, 3, 9, 9)).astype(np.float32) * 2
    m = pyruntime.load(model, threads=1)
    assert "QAvgPool fused[DequantizeLinear + AveragePool + QuantizeLinear]" in m.summary()
    got, want = m.run(None, {"x": x})[0], _ort_run(model, x)
    assert got.shape == want.shape == (2, 16, 5, 5)
    assert np.abs(got - want).max() <= 0.011 * 1.0001  # one output step
