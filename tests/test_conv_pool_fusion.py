"""An int8 conv followed by a MaxPool whose windows tile its output runs as one step
(fuse_conv.fuse_qconv_max_pool). The small-window kernels (AVX2 and VNNI) take the max of the
int32 accumulators and requantize once per window; every other case pools the conv's output.
Either way the result must equal, bit for bit, the int64 reference conv then a max pool.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import reference as ref
from pyrt_testlib import ALL_PATHS, path_params

T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


def conv_pool(rng, dt, C, M, k, pads, pool, conv_out_too=False, pool_attrs=None, w_zp=0):
    """QLinearConv (C -> M, per-channel scales, bias) -> MaxPool, QOperator form."""
    lo, hi = (0, 256) if dt == np.uint8 else (-128, 128)
    c = dict(xs=np.float32(0.03), xz=np.array(lo + 70, dt), w=rng.integers(-127, 128, (M, C, *k)).astype(np.int8),
             ws=rng.uniform(0.002, 0.01, M).astype(np.float32), wz=np.full(M, w_zp, np.int8),
             ys=np.float32(0.2), yz=np.array(lo + 40, dt), b=rng.integers(-2000, 2000, M).astype(np.int32))
    attrs = pool_attrs if pool_attrs is not None else dict(kernel_shape=list(pool), strides=list(pool))
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                              kernel_shape=list(k), pads=list(pads)),
             helper.make_node("MaxPool", ["y"], ["z"], **attrs)]
    outs = [helper.make_tensor_value_info("z", T[np.dtype(dt)], ["N", M, "PH", "PW"])]
    if conv_out_too:
        outs.append(helper.make_tensor_value_info("y", T[np.dtype(dt)], ["N", M, "OH", "OW"]))
    g = helper.make_graph(nodes, "conv_pool", [helper.make_tensor_value_info("x", T[np.dtype(dt)], ["N", C, "H", "W"])],
                          outs, [numpy_helper.from_array(v, n) for n, v in c.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    return m, c, (lo, hi)


def expected(x, c, pads, pool):
    y = ref.qlinear_conv(x, c["xs"], c["xz"], c["w"], c["ws"], c["wz"], c["ys"], c["yz"], bias=c["b"], pads=pads)
    ph, pw = pool
    N, M, OH, OW = y.shape
    y = y[:, :, :OH // ph * ph, :OW // pw * pw].reshape(N, M, OH // ph, ph, OW // pw, pw)
    return y.max(axis=(3, 5))


CASES = [  # C, M, conv kernel, conv pads, pool, H x W
    (1, 16, (3, 3), (1, 1, 1, 1), (2, 2), (28, 28)),  # the shipped student's first layer
    (1, 24, (3, 3), (1, 1, 1, 1), (2, 2), (9, 11)),   # odd conv output: the last row and column drop
    (3, 40, (3, 3), (0, 1, 1, 0), (2, 3), (10, 13)),  # 3 panels, a non-square pool
    (4, 64, (3, 3), (1, 1, 1, 1), (3, 3), (12, 12)),  # 4 panels: 6-pixel tiles, two windows each
    (2, 16, (5, 5), (2, 2, 2, 2), (2, 2), (8, 8)),    # a 5x5 window
    (8, 32, (3, 3), (1, 1, 1, 1), (2, 2), (8, 10)),   # kw*C = 24: no window kernel, pooled after the conv
]


@pytest.mark.parametrize("isa", path_params(ALL_PATHS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"c{c[0]}m{c[1]}k{c[2][0]}p{c[4][0]}x{c[4][1]}")
@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_fused_conv_pool_matches_reference(isa, case, dt):
    C, M, k, pads, pool, hw = case
    rng = np.random.default_rng(41)
    model, c, (lo, hi) = conv_pool(rng, dt, C, M, k, pads, pool)
    for batch, threads in ((1, 1), (3, 2)):
        m = pyruntime.load(model, isa=isa, threads=threads)
        assert "+ MaxPool]" in m.summary()  # fused: no separate pool step
        x = rng.integers(lo, hi, (batch, C, *hw)).astype(dt)
        got = m.run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, expected(x, c, pads, pool))


@pytest.mark.parametrize("isa", path_params(ALL_PATHS))
def test_fused_conv_pool_with_weight_zero_points(isa):
    """Weights with a zero point: VNNI hands the window to the AVX2 kernel, which pools too."""
    rng = np.random.default_rng(45)
    model, c, (lo, hi) = conv_pool(rng, np.uint8, 1, 16, (3, 3), (1, 1, 1, 1), (2, 2), w_zp=3)
    m = pyruntime.load(model, isa=isa, threads=1)
    assert "+ MaxPool]" in m.summary()
    x = rng.integers(lo, hi, (2, 1, 14, 14)).astype(np.uint8)
    np.testing.assert_array_equal(m.run(None, {"x": x})[0], expected(x, c, (1, 1, 1, 1), (2, 2)))


@pytest.mark.parametrize("pool_attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2]),               # overlapping windows
    dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
    dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2]),
], ids=["overlap", "pads", "ceil", "dilated"])
def test_other_max_pools_stay_separate_and_exact(pool_attrs):
    rng = np.random.default_rng(42)
    model, c, (lo, hi) = conv_pool(rng, np.uint8, 1, 16, (3, 3), (1, 1, 1, 1), None, pool_attrs=pool_attrs)
    m = pyruntime.load(model)
    assert "MaxPool" in m.summary()  # its own node (the conv's fusions do not name it)
    assert "+ MaxPool" not in m.summary()
    x = rng.integers(lo, hi, (2, 1, 11, 11)).astype(np.uint8)
    import onnxruntime as ort
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(m.run(None, {"x": x})[0], want)


def test_conv_output_used_elsewhere_is_not_fused():
    rng = np.random.default_rng(43)
    model, c, (lo, hi) = conv_pool(rng, np.uint8, 1, 16, (3, 3), (1, 1, 1, 1), (2, 2), conv_out_too=True)
    m = pyruntime.load(model)
    assert "+ MaxPool" not in m.summary()
    x = rng.integers(lo, hi, (1, 1, 12, 12)).astype(np.uint8)
    z, y = m.run(None, {"x": x})
    np.testing.assert_array_equal(z, expected(x, c, (1, 1, 1, 1), (2, 2)))
    np.testing.assert_array_equal(y, ref.qlinear_conv(x, c["xs"], c["xz"], c["w"], c["ws"], c["wz"], c["ys"], c["yz"],
                                                      bias=c["b"], pads=(1, 1, 1, 1)))


def test_pool_larger_than_the_conv_output_is_a_model_error():
    rng = np.random.default_rng(44)
    model, c, (lo, hi) = conv_pool(rng, np.uint8, 1, 16, (3, 3), (0, 0, 0, 0), (4, 4))
    m = pyruntime.load(model)
    with pytest.raises(pyruntime.ModelError, match="MaxPool.*larger than its input"):
        m.run(None, {"x": rng.integers(lo, hi, (1, 1, 5, 5)).astype(np.uint8)})
