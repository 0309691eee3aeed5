"""Transpose steps against numpy: the tiled 2-D path (batched [rows x cols] swaps, as the
NHWC -> NCHW copy before a Flatten), the general path, size-1 and merged axes, every
element size the executor stores, and the channels-last copy a QDQ CNN makes."""
import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper

import pyruntime

ONNX_TYPE = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
             np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32,
             np.dtype(np.int64): TensorProto.INT64}


def _transpose_model(shape, dtype, perm):
    node = helper.make_node("Transpose", ["x"], ["y"], perm=list(perm))
    g = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", ONNX_TYPE[np.dtype(dtype)], shape)],
                          [helper.make_tensor_value_info("y", ONNX_TYPE[np.dtype(dtype)], [shape[p] for p in perm])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _values(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, shape).astype(dtype)


CASES = [  # shape, perm
    ((1, 7, 7, 32), (0, 3, 1, 2)),    # small_cnn's NHWC -> NCHW before its Flatten
    ((3, 13, 17, 5), (0, 3, 1, 2)),   # ragged tiles on both sides, batch > 1
    ((2, 1, 1, 40), (0, 3, 1, 2)),    # 1x1 spatial: a pure copy
    ((8, 16), (1, 0)),                # whole tiles only
    ((9, 1), (1, 0)),
    ((33, 65), (1, 0)),
    ((4, 6, 5), (0, 2, 1)),
    ((2, 3, 4, 5), (3, 2, 1, 0)),     # general path
    ((2, 3, 4, 5), (1, 0, 3, 2)),
    ((5, 1, 4, 1, 3), (4, 1, 2, 0, 3)),
    ((2, 3, 4), (0, 1, 2)),           # identity
    ((0, 3, 4), (0, 2, 1)),           # empty
]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.float32, np.int32, np.int64],
                         ids=["u8", "s8", "f32", "i32", "i64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}p{''.join(map(str, c[1]))}")
def test_transpose_matches_numpy(dtype, case):
    shape, perm = case
    x = _values(shape, dtype, seed=len(shape) * 31 + sum(shape))
    got = pyruntime.load(_transpose_model(shape, dtype, perm), threads=1).run(None, {"x": x})[0]
    want = np.transpose(x, perm)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_every_rank4_perm_matches_numpy():
    x = _values((2, 3, 4, 5), np.int8, seed=3)
    for perm in itertools.permutations(range(4)):
        got = pyruntime.load(_transpose_model(x.shape, np.int8, perm), threads=1).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, np.transpose(x, perm), err_msg=str(perm))


def test_channels_last_copy_before_flatten():
    """Conv (NHWC inside the plan) -> Flatten: the plan's NHWC -> NCHW copy must reproduce
    onnx's NCHW flattening order (the 2-D tiled path at rows = H*W, cols = C)."""
    from onnx import numpy_helper
    rng = np.random.default_rng(4)
    w = rng.standard_normal((24, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Flatten", ["c"], ["y"])]
    g = helper.make_graph(nodes, "cf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 11])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 24 * 99])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    ort = pytest.importorskip("onnxruntime")
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = pyruntime.load(m, threads=1).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
