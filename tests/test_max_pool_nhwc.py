"""MaxPool on channels-last data (the layout inside conv plans) on every ISA path: the AVX2
kernel (csrc/kernels/qconv/max_pool_avx2.cc) against a NumPy max pool, for u8, s8 and f32,
channel counts around the 32-byte vector, padding, strides, dilations and ceil mode; NaN
handling equal to the portable path."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime.onnx_import import lower
from pyrt_testlib import REAL_PATHS, path_params

PATHS = path_params(REAL_PATHS)  # capped or missing paths skip with the reason
T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8, np.dtype(np.float32): TensorProto.FLOAT}

POOLS = [  # kernel, strides, pads (t, l, b, r), dilations, ceil_mode
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0),
    ((3, 2), (1, 2), (0, 1, 2, 0), (2, 1), 1),
]


def numpy_max_pool(x, kernel, strides, pads, dilations, ceil_mode):
    N, C, H, W = x.shape
    out = []
    for axis, (size, k, s, p0, p1, d) in enumerate(zip((H, W), kernel, strides, pads[:2], pads[2:], dilations)):
        span = size + p0 + p1 - ((k - 1) * d + 1)
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= size + p0:
            o -= 1
        out.append(o)
    y = np.empty((N, C, *out), x.dtype)
    for oy in range(out[0]):
        for ox in range(out[1]):
            ys = [oy * strides[0] - pads[0] + i * dilations[0] for i in range(kernel[0])]
            xs = [ox * strides[1] - pads[1] + j * dilations[1] for j in range(kernel[1])]
            win = x[:, :, [v for v in ys if 0 <= v < H]][:, :, :, [v for v in xs if 0 <= v < W]]
            y[:, :, oy, ox] = win.reshape(N, C, -1).max(-1)
    return y


def _nhwc_then_pool(x, pool):
    """An identity 1x1 conv (so the pool reads channels-last), then MaxPool. The conv's output
    is a graph output too, so an int8 conv does not take a 2x2/2 pool into itself
    (fuse_conv.fuse_qconv_max_pool) and the pool kernel runs."""
    kernel, strides, pads, dil, ceil = pool
    C = x.shape[1]
    if x.dtype == np.float32:
        consts = dict(w=np.eye(C, dtype=np.float32).reshape(C, C, 1, 1))
        first = helper.make_node("Conv", ["x", "w"], ["xn"])
    else:
        consts = dict(s=np.float32(0.5), z=np.zeros((), x.dtype), w=np.eye(C, dtype=np.int8).reshape(C, C, 1, 1),
                      ws=np.float32(1), wz=np.int8(0))
        first = helper.make_node("QLinearConv", ["x", "s", "z", "w", "ws", "wz", "s", "z"], ["xn"])
    pool_node = helper.make_node("MaxPool", ["xn"], ["y"], kernel_shape=list(kernel), strides=list(strides),
                                 pads=list(pads), dilations=list(dil), ceil_mode=ceil)
    g = helper.make_graph([first, pool_node], "p", [helper.make_tensor_value_info("x", T[x.dtype], x.shape)],
                          [helper.make_tensor_value_info("y", T[x.dtype], ["n", "c", "h", "w"]),
                           helper.make_tensor_value_info("xn", T[x.dtype], ["n", "c", "H", "W"])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def nhwc_pools(emitted) -> list:
    """The NHWC flag of every max_pool step lowered."""
    return [len(ints) > 16 and ints[16] for op, ints in emitted if op == lower.OP["max_pool"]]


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("pool", POOLS, ids=["2x2s2", "3x3s2p1", "3x2dil-ceil"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.float32])
@pytest.mark.parametrize("C", [1, 16, 20, 33, 52, 64])  # every full, half and scalar remainder
def test_nhwc_max_pool_matches_numpy(emitted, isa, pool, dtype, C):
    rng = np.random.default_rng(C * 3)
    shape = (2, C, 9, 8)
    if dtype == np.float32:
        x = rng.standard_normal(shape).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        x[0, :, 0, 0] = info.max  # the extremes, where a signed/unsigned mix-up shows
        x[0, :, 0, 1] = info.min
    y = pyruntime.load(_nhwc_then_pool(x, pool), isa=isa).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, numpy_max_pool(x, *pool))
    assert nhwc_pools(emitted) == [1], "the pool did not read channels-last data"


@pytest.mark.parametrize("isa", path_params(REAL_PATHS[1:]))
def test_nhwc_max_pool_nan_matches_the_portable_path(isa):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 40, 6, 6)).astype(np.float32)
    x[0, ::3, ::2, 1::2] = np.nan
    m = _nhwc_then_pool(x, POOLS[1])
    want = pyruntime.load(m, isa="scalar").run(None, {"x": x})[0]
    got = pyruntime.load(m, isa=isa).run(None, {"x": x})[0]
    assert np.isnan(want).any()
    np.testing.assert_array_equal(got, want)  # NaN positions included


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_nhwc_max_pool_of_a_batch_splits_rows_across_threads(isa, threads):
    """A batch big enough to split (output over 2 x 64 KiB): every thread count gives numpy's answer."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (8, 64, 34, 34)).astype(np.uint8)
    pool = POOLS[1]  # 3x3 stride 2 pad 1: border windows on every thread's share
    model = _nhwc_then_pool(x, pool)
    # A row that no thread writes would keep what the per-thread arena held, often the same
    # answer from an earlier run: one thread first writes every row for another input.
    pyruntime.load(model, isa=isa, threads=1).run(None, {"x": 255 - x})
    y = pyruntime.load(model, isa=isa, threads=threads).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, numpy_max_pool(x, *pool))
