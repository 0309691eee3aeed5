"""Executor int8 ops against the normative NumPy reference, bit for bit, on every path."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import reference as ref
from pyrt_testlib import REAL_PATHS, path_params

PATHS = path_params(REAL_PATHS)  # capped or missing paths skip with the reason
NP2ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8,
           np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32}


def one_node(op, inputs, consts, out_dtype, out_shape, domain="", opset=19, **attrs):
    """A model with one node; `inputs` are (name, array) fed at run time."""
    node = helper.make_node(op, [n for n, _ in inputs] + [n for n, _ in consts], ["y"], domain=domain, **attrs)
    g = helper.make_graph([node], "t", [helper.make_tensor_value_info(n, NP2ONNX[a.dtype], a.shape) for n, a in inputs],
                          [helper.make_tensor_value_info("y", NP2ONNX[np.dtype(out_dtype)], out_shape)],
                          [numpy_helper.from_array(np.asarray(a), n) for n, a in consts])
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 9
    return m


def quantize_inputs(rng, n=1000):
    x = rng.normal(0, 3, n).astype(np.float32)
    # exact ties (k + 0.5) * s, NaN and the infinities
    x[:8] = (np.arange(-4, 4) + 0.5).astype(np.float32) * np.float32(0.25)
    x[8:11] = [np.nan, np.inf, -np.inf]
    # ties at and beside every clamp bound less the zero points used below, huge, tiny
    # (subnormal) and negative zero: the kernels may clamp before or after rounding
    edges = [-256.5, -255.5, -131.5, -130.5, -129.5, -128.5, -127.5, -125.5, 124.5, 126.5, 127.5, 128.5,
             129.5, 254.5, 255.5, 256.5, 1e30, -1e30, 1e-40, -0.0]
    x[11:11 + len(edges)] = np.array(edges, np.float32) * np.float32(0.25)
    return x


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("dtype,zp", [(np.uint8, 128), (np.int8, -3), (np.uint8, 0), (np.int8, 127)])
def test_quantize_linear_matches_reference(isa, dtype, zp):
    rng = np.random.default_rng(7)
    x = quantize_inputs(rng).reshape(10, 100)
    m = one_node("QuantizeLinear", [("x", x)], [("s", np.float32(0.25)), ("z", np.array(zp, dtype))], dtype, x.shape)
    y = pyruntime.load(m, isa=isa).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, ref.quantize_linear(x, np.float32(0.25), zp, dtype))


@pytest.mark.parametrize("isa", PATHS)
def test_quantize_linear_per_axis(isa):
    rng = np.random.default_rng(8)
    x = rng.normal(0, 2, (4, 3, 5)).astype(np.float32)
    s = np.array([0.1, 0.02, 0.5], np.float32)
    z = np.array([0, 7, -9], np.int8)
    m = one_node("QuantizeLinear", [("x", x)], [("s", s), ("z", z)], np.int8, x.shape, axis=1)
    y = pyruntime.load(m, isa=isa).run(None, {"x": x})[0]
    want = np.stack([ref.quantize_linear(x[:, c], s[c], int(z[c]), np.int8) for c in range(3)], axis=1)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32])
def test_dequantize_linear_matches_reference(isa, dtype):
    rng = np.random.default_rng(9)
    info = np.iinfo(dtype)
    q = rng.integers(max(info.min, -10**6), min(info.max, 10**6) + 1, (7, 33)).astype(dtype)
    zp = np.array(3 if dtype != np.int32 else 0, dtype)
    m = one_node("DequantizeLinear", [("q", q)], [("s", np.float32(0.037)), ("z", zp)], np.float32, q.shape)
    y = pyruntime.load(m, isa=isa).run(None, {"q": q})[0]
    np.testing.assert_array_equal(y, ref.dequantize_linear(q, np.float32(0.037), int(zp)))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("da,db,dy", [(np.uint8, np.uint8, np.uint8), (np.int8, np.int8, np.int8),
                                      (np.uint8, np.int8, np.uint8), (np.int8, np.uint8, np.int8)])
@pytest.mark.parametrize("b_shape", [(17,), (6, 17)], ids=["broadcast", "residual"])
def test_qlinear_add_matches_reference(isa, da, db, dy, b_shape):
    rng = np.random.default_rng(10)
    a = rng.integers(np.iinfo(da).min, np.iinfo(da).max + 1, (6, 17)).astype(da)
    b = rng.integers(np.iinfo(db).min, np.iinfo(db).max + 1, b_shape).astype(db)
    a[0], b[..., :8] = np.iinfo(da).max, np.iinfo(db).max  # saturating sums in the vector lanes
    sa, sb, sy = np.float32(0.02), np.float32(0.005), np.float32(0.03)
    za, zb, zy = np.array(5, da), np.array(-2 if db == np.int8 else 9, db), np.array(1, dy)
    m = one_node("QLinearAdd", [("a", a)], [("sa", sa), ("za", za), ("b", b), ("sb", sb), ("zb", zb), ("sy", sy),
                                            ("zy", zy)], dy, a.shape, domain="com.microsoft")
    # QLinearAdd's input order interleaves constants: rebuild the node inputs in order.
    m.graph.node[0].ClearField("input")
    m.graph.node[0].input.extend(["a", "sa", "za", "b", "sb", "zb", "sy", "zy"])
    y = pyruntime.load(m, isa=isa).run(None, {"a": a})[0]
    np.testing.assert_array_equal(y, ref.qlinear_add(a, sa, int(za), b, sb, int(zb), sy, int(zy), dy))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("dtype,zp", [(np.uint8, 3), (np.int8, -5)])
def test_quantize_linear_split_over_threads(isa, dtype, zp):
    """A tensor large enough to be split over threads, with a ragged end: each thread
    count gives the reference's bits. Each count quantizes different values, so a share
    no thread wrote cannot pass on an earlier call's output."""
    rng = np.random.default_rng(12)
    m = None
    for threads in (1, 2, 3):
        x = quantize_inputs(rng, 37 * 1001).reshape(37, 1001) * np.float32(threads)
        if m is None:
            m = one_node("QuantizeLinear", [("x", x)], [("s", np.float32(0.05)), ("z", np.array(zp, dtype))], dtype,
                         x.shape)
        y = pyruntime.load(m, isa=isa, threads=threads).run(None, {"x": x})[0]
        np.testing.assert_array_equal(y, ref.quantize_linear(x, np.float32(0.05), zp, dtype), err_msg=f"{threads=}")


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("b_shape", [(1, 7, 1003), (5, 1, 1003), (5, 7, 1), (5, 7, 1003), (1,)],
                         ids=["rows", "planes", "columns", "same", "scalar"])
def test_qlinear_add_split_over_threads(isa, b_shape):
    """A quantized Add large enough to be split over threads: a thread's rows start
    mid-tensor, so its operand offsets come from the row index (rank 3 here); same shapes
    or a scalar merge into one row, which is split itself."""
    rng = np.random.default_rng(13)
    sa, sb, sy = np.float32(0.02), np.float32(0.005), np.float32(0.03)
    for threads in (1, 2, 3):
        a = rng.integers(0, 256, (5, 7, 1003)).astype(np.uint8)
        b = rng.integers(-128, 128, b_shape).astype(np.int8)
        m = one_node("QLinearAdd", [("a", a)], [("sa", sa), ("za", np.uint8(5)), ("b", b), ("sb", sb),
                                                ("zb", np.int8(-2)), ("sy", sy), ("zy", np.uint8(1))],
                     np.uint8, a.shape, domain="com.microsoft")
        m.graph.node[0].ClearField("input")
        m.graph.node[0].input.extend(["a", "sa", "za", "b", "sb", "zb", "sy", "zy"])
        y = pyruntime.load(m, isa=isa, threads=threads).run(None, {"a": a})[0]
        np.testing.assert_array_equal(y, ref.qlinear_add(a, sa, 5, b, sb, -2, sy, 1, np.uint8), err_msg=f"{threads=}")


def test_qdq_add_relu_fuses_and_matches_reference():
    """DQ -> Add -> Relu -> Q (onnxruntime's QDQ residual form) runs as one quantized Add."""
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, (5, 9)).astype(np.uint8)
    b = rng.integers(0, 256, (5, 9)).astype(np.uint8)
    nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
             helper.make_node("Add", ["fa", "fb"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["y"])]
    consts = [("sa", np.float32(0.1)), ("za", np.uint8(128)), ("sb", np.float32(0.05)), ("zb", np.uint8(100)),
              ("sy", np.float32(0.07)), ("zy", np.uint8(20))]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, TensorProto.UINT8, [5, 9]) for n in "ab"],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [5, 9])],
                          [numpy_helper.from_array(np.asarray(v), n) for n, v in consts])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    model = pyruntime.load(m)
    assert "QAdd" in model.summary() and "Relu" in model.summary()
    y = model.run(None, {"a": a, "b": b})[0]
    want = ref.qlinear_add(a, 0.1, 128, b, 0.05, 100, 0.07, 20, np.uint8)
    np.testing.assert_array_equal(y, np.maximum(want, 20))
