"""A quantized Add of a constant row fused into the int8 GEMM before it (fuse_qadd.fuse_qgemm_row_add).

onnxruntime's QDQ quantizer leaves a MatMul's bias as MatMul -> Q -> DQ -> Add(DQ(row)) -> Q,
and its QOperator form as QLinearMatMul -> QLinearAdd. The fused epilogue must give the
bits of the two reference steps, on every path, for either operand order, a Relu, a
dtype change between the GEMM and the Add, rows of one (the GEMV) and many, and column
counts that end mid-vector.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import reference as ref
from pyrt_testlib import ALL_PATHS, path_params

PATHS = path_params(ALL_PATHS)
ONNX_T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}
K, N = 300, 50  # 50 columns: one full 32-column panel and a partial one
SX, ZX = np.float32(0.05), 3
S1, SROW, SY = np.float32(0.2), np.float32(0.01), np.float32(0.15)


def _consts(rng, mid_dt, out_dt):
    w = rng.integers(-127, 128, (K, N)).astype(np.int8)
    w_s = rng.uniform(0.002, 0.01, N).astype(np.float32)  # per column
    row_dt = np.dtype(np.uint8)
    row = rng.integers(0, 256, N).astype(row_dt)
    z1 = 120 if mid_dt == np.uint8 else -7
    zrow, zy = 130, (9 if out_dt == np.uint8 else -4)
    return dict(w=w, w_s=w_s, row=row, z1=z1, zrow=zrow, zy=zy)


def qdq_model(c, mid_dt, out_dt, row_first, relu, row_shape=(N,), extra_output=False):
    init = [numpy_helper.from_array(v, k) for k, v in dict(
        sx=SX, zx=np.array(ZX, np.uint8), w=c["w"], w_s=c["w_s"], w_z=np.zeros(N, np.int8),
        s1=S1, z1=np.array(c["z1"], mid_dt), row=c["row"].reshape(row_shape), srow=SROW,
        zrow=np.array(c["zrow"], np.uint8), sy=SY, zy=np.array(c["zy"], out_dt)).items()]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["mm"]),
             helper.make_node("QuantizeLinear", ["mm", "s1", "z1"], ["mmq"]),
             helper.make_node("DequantizeLinear", ["mmq", "s1", "z1"], ["mmd"]),
             helper.make_node("DequantizeLinear", ["row", "srow", "zrow"], ["rowd"]),
             helper.make_node("Add", ["rowd", "mmd"] if row_first else ["mmd", "rowd"], ["sum"])]
    last = "sum"
    if relu:
        nodes.append(helper.make_node("Relu", ["sum"], ["act"]))
        last = "act"
    nodes.append(helper.make_node("QuantizeLinear", [last, "sy", "zy"], ["y"]))
    outs = [helper.make_tensor_value_info("y", ONNX_T[np.dtype(out_dt)], ["M", N])]
    if extra_output:  # the GEMM's own output is wanted too: the Add must stay a step
        outs.append(helper.make_tensor_value_info("mmq", ONNX_T[np.dtype(mid_dt)], ["M", N]))
    g = helper.make_graph(nodes, "row_add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", K])],
                          outs, init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    return m


def reference(x, c, mid_dt, out_dt, row_first, relu):
    xq = ref.quantize_linear(x, SX, ZX, np.uint8)
    mid = ref.qgemm(xq, c["w"], a_zero_point=ZX, multiplier=ref.requant_multiplier(SX, c["w_s"], S1),
                    out_zero_point=c["z1"], out_dtype=mid_dt)
    row = c["row"].reshape(1, N)
    if row_first:
        y = ref.qlinear_add(row, SROW, c["zrow"], mid, S1, c["z1"], SY, c["zy"], out_dt)
    else:
        y = ref.qlinear_add(mid, S1, c["z1"], row, SROW, c["zrow"], SY, c["zy"], out_dt)
    return np.maximum(y, np.asarray(c["zy"], out_dt)) if relu else y


CASES = [  # mid dtype, out dtype, row first, relu
    (np.uint8, np.uint8, False, True),
    (np.uint8, np.int8, True, False),
    (np.int8, np.uint8, True, True),
    (np.int8, np.int8, False, False),
]


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("rows", [1, 37])
@pytest.mark.parametrize("mid_dt,out_dt,row_first,relu", CASES)
def test_qdq_row_add_fused_matches_reference(isa, rows, mid_dt, out_dt, row_first, relu):
    rng = np.random.default_rng(11)
    c = _consts(rng, mid_dt, out_dt)
    m = pyruntime.load(qdq_model(c, mid_dt, out_dt, row_first, relu), isa=isa, threads=2)
    assert "Add(row)" in m.summary() and "QAdd" not in m.summary()  # one step, no separate Add
    x = rng.normal(0, 2.5, (rows, K)).astype(np.float32)
    y = m.run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, reference(x, c, mid_dt, out_dt, row_first, relu))


@pytest.mark.parametrize("isa", path_params(("scalar", "avx512vnni")))
def test_row_add_stays_a_step_where_the_gemm_output_is_wanted(isa):
    rng = np.random.default_rng(12)
    c = _consts(rng, np.uint8, np.uint8)
    m = pyruntime.load(qdq_model(c, np.uint8, np.uint8, False, True, extra_output=True), isa=isa)
    assert "Add(row)" not in m.summary()
    x = rng.normal(0, 2.5, (5, K)).astype(np.float32)
    y, mid = m.run(None, {"x": x})
    np.testing.assert_array_equal(y, reference(x, c, np.uint8, np.uint8, False, True))
    np.testing.assert_array_equal(mid, ref.qgemm(ref.quantize_linear(x, SX, ZX, np.uint8), c["w"], a_zero_point=ZX,
                                                 multiplier=ref.requant_multiplier(SX, c["w_s"], S1),
                                                 out_zero_point=c["z1"], out_dtype=np.uint8))


@pytest.mark.parametrize("isa", path_params(("scalar", "avx2", "avx512vnni")))
def test_row_of_shape_1xn_is_fused(isa):
    rng = np.random.default_rng(13)
    c = _consts(rng, np.uint8, np.int8)
    m = pyruntime.load(qdq_model(c, np.uint8, np.int8, True, False, row_shape=(1, N)), isa=isa)
    assert "Add(row)" in m.summary()
    x = rng.normal(0, 2.5, (3, K)).astype(np.float32)
    np.testing.assert_array_equal(m.run(None, {"x": x})[0], reference(x, c, np.uint8, np.int8, True, False))


@pytest.mark.parametrize("isa", path_params(("scalar", "avx2", "avx512vnni")))
@pytest.mark.parametrize("rows", [1, 20])
def test_qlinear_matmul_then_qlinear_add_fused(isa, rows):
    rng = np.random.default_rng(14)
    w = rng.integers(-127, 128, (K, N)).astype(np.int8)
    row = rng.integers(-128, 128, N).astype(np.int8)
    sa, sw, s1, sr, sy = (np.float32(v) for v in (0.05, 0.004, 0.3, 0.02, 0.25))
    init = [numpy_helper.from_array(v, k) for k, v in dict(
        sa=sa, za=np.array(128, np.uint8), w=w, sw=sw, zw=np.array(0, np.int8), s1=s1, z1=np.array(100, np.uint8),
        row=row, sr=sr, zr=np.array(-3, np.int8), sy=sy, zy=np.array(110, np.uint8)).items()]
    nodes = [helper.make_node("QLinearMatMul", ["a", "sa", "za", "w", "sw", "zw", "s1", "z1"], ["mm"]),
             helper.make_node("QLinearAdd", ["mm", "s1", "z1", "row", "sr", "zr", "sy", "zy"], ["y"],
                              domain="com.microsoft")]
    g = helper.make_graph(nodes, "qop", [helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", K])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, ["M", N])], init)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    m = pyruntime.load(model, isa=isa)
    assert "QLinearAdd(row)" in m.summary()
    a = rng.integers(0, 256, (rows, K)).astype(np.uint8)
    mid = ref.qlinear_matmul(a, sa, 128, w, sw, 0, s1, np.uint8(100))
    want = ref.qlinear_add(mid, s1, 100, row.reshape(1, N), sr, -3, sy, 110, np.uint8)
    np.testing.assert_array_equal(m.run(None, {"a": a})[0], want)
