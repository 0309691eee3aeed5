"""int8 convs that read their windows straight from the padded NHWC band (no im2col).

A conv after a conv reads channels-last data; where a window row is whole quads (kw*C a
multiple of 4), the weights have no zero points and there is one group, the VNNI GEMM
micro-kernel takes each pixel's window from the zero-point-padded band
(QgemmKernels::tile_band). Every geometry here is checked bit for bit against the int64
reference on every path: strides, y dilation, asymmetric pads, s8 and u8 activations,
bias, per-channel scales, several images and threads, and output channels that end
mid-panel.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import reference as ref
from pyrt_testlib import ALL_PATHS, path_params

T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


def chained(rng, dt, c_mid, m_out, k, strides, pads, dilations, hw=(9, 11)):
    """QLinearConv (4 -> c_mid, NCHW input) then QLinearConv (c_mid -> m_out) reading NHWC."""
    lo, hi = (0, 256) if dt == np.uint8 else (-128, 128)
    c = dict(xs=np.float32(0.04), xz=np.array(lo + 90, dt), w1=rng.integers(-127, 128, (c_mid, 4, 3, 3)).astype(np.int8),
             w1s=np.float32(0.01), w1z=np.int8(0), ys=np.float32(0.25), yz=np.array(lo + 100, dt),
             w2=rng.integers(-127, 128, (m_out, c_mid, *k)).astype(np.int8),
             w2s=rng.uniform(0.002, 0.01, m_out).astype(np.float32), w2z=np.zeros(m_out, np.int8),
             zs=np.float32(0.5), zz=np.array(lo + 60, dt), b2=rng.integers(-3000, 3000, m_out).astype(np.int32))
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w1", "w1s", "w1z", "ys", "yz"], ["y"],
                              pads=[1, 1, 1, 1]),
             helper.make_node("QLinearConv", ["y", "ys", "yz", "w2", "w2s", "w2z", "zs", "zz", "b2"], ["z"],
                              kernel_shape=list(k), strides=list(strides), pads=list(pads), dilations=list(dilations))]
    g = helper.make_graph(nodes, "band", [helper.make_tensor_value_info("x", T[np.dtype(dt)], ["N", 4, *hw])],
                          [helper.make_tensor_value_info("z", T[np.dtype(dt)], ["N", m_out, "OH", "OW"])],
                          [numpy_helper.from_array(v, n) for n, v in c.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    return m, c, (lo, hi)


def expected(x, c, strides, pads, dilations):
    y = ref.qlinear_conv(x, c["xs"], c["xz"], c["w1"], c["w1s"], 0, c["ys"], c["yz"], pads=(1, 1, 1, 1))
    return ref.qlinear_conv(y, c["ys"], c["yz"], c["w2"], c["w2s"], 0, c["zs"], c["zz"], bias=c["b2"],
                            strides=strides, pads=pads, dilations=dilations)


GEOMETRIES = [  # c_mid, m_out, kernel, strides, pads (t, l, b, r), dilations
    (8, 40, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (16, 32, (3, 3), (2, 2), (1, 0, 0, 1), (1, 1)),
    (4, 7, (3, 1), (1, 2), (2, 0, 1, 0), (2, 1)),
    (12, 70, (2, 2), (1, 1), (0, 0, 1, 1), (1, 1)),
]


@pytest.mark.parametrize("isa", path_params(ALL_PATHS))
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: f"c{g[0]}m{g[1]}k{g[2][0]}x{g[2][1]}s{g[3][0]}{g[3][1]}")
@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_band_conv_matches_reference(isa, geom, dt):
    c_mid, m_out, k, strides, pads, dilations = geom
    rng = np.random.default_rng(31)
    model, c, (lo, hi) = chained(rng, dt, c_mid, m_out, k, strides, pads, dilations)
    # (4, 2): whole images per thread, each padded by its thread; (3, 2): an uneven split,
    # the batch padded first and the output rows split.
    for batch, threads in ((1, 1), (4, 2), (3, 2)):
        x = rng.integers(lo, hi, (batch, 4, 9, 11)).astype(dt)
        got = pyruntime.load(model, isa=isa, threads=threads).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, expected(x, c, strides, pads, dilations))


@pytest.mark.parametrize("isa", path_params(("avx512vnni", "avx512vnni_emulated")))
@pytest.mark.parametrize("batch", [2, 3])
def test_band_conv_large_images_on_two_threads(isa, batch):
    """Large images (> 2 x 256 KB of padded band per batch): with 2 images each thread pads
    and convolves its own; with 3 the batch is padded by both threads, then rows split."""
    rng = np.random.default_rng(32)
    geom = ((1, 1), (1, 1, 1, 1), (1, 1))
    model, c, (lo, hi) = chained(rng, np.uint8, 16, 24, (3, 3), *geom, hw=(64, 256))
    x = rng.integers(lo, hi, (batch, 4, 64, 256)).astype(np.uint8)
    got = pyruntime.load(model, isa=isa, threads=2).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, expected(x, c, *geom))
