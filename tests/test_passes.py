"""Each graph pass on its own, on small hand-built graphs: the node list and attributes it
leaves, and the model's outputs through pyruntime.load against the model's own semantics
(onnx's reference evaluator, or onnxruntime for the com.microsoft and QOperator ops).

int8 outputs of a fused GEMM may differ from a float reference by one quantization step
(the reference rounds a float32 product sum, the runtime an exact int32 accumulator);
everything else is compared closely.
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import pyruntime  # noqa: E402
from pyruntime.onnx_import import graph as graph_mod  # noqa: E402
from pyruntime.onnx_import import passes  # noqa: E402

F, U8, S8, I32, I64 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, TensorProto.INT64
NP = {F: np.float32, U8: np.uint8, S8: np.int8, I32: np.int32, I64: np.int64}


# ---------------------------------------------------------------------------------------
# helpers


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def make_model(nodes, inputs, outputs, inits=(), opset=13, ms=False):
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)), opset_imports=opsets)
    m.ir_version = 8
    if not ms:
        onnx.checker.check_model(m, full_check=True)
    return m


def to_graph(model) -> graph_mod.Graph:
    """The importer's graph, with the inferred shapes load() would give it."""
    return graph_mod.from_model(onnx.shape_inference.infer_shapes(model))


def ops(g) -> list[tuple[str, str]]:
    return [(n.domain, n.op) for n in g.nodes]


def node(g, op, domain=""):
    found = [n for n in g.nodes if n.op == op and n.domain == domain]
    assert len(found) == 1, ops(g)
    return found[0]


def feed_for(model, rng):
    feed = {}
    for i in model.graph.input:
        t = i.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        dt = NP[t.elem_type]
        if dt == np.float32:
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            info = np.iinfo(dt)
            feed[i.name] = rng.integers(info.min, int(info.max) + 1, shape).astype(dt)
    return feed


def reference(model, feed):
    return ReferenceEvaluator(model).run(None, feed)


def onnxruntime_run(model, feed):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def check_outputs(model, expected_fn=reference, seed=0, int_steps=0, rtol=1e-5, atol=1e-5):
    """pyruntime.load(model) against expected_fn(model, feed) on random inputs."""
    rng = np.random.default_rng(seed)
    feed = feed_for(model, rng)
    got = pyruntime.load(model, threads=1).run(None, feed)
    want = expected_fn(model, feed)
    assert len(got) == len(want)
    for g_, w_ in zip(got, want):
        w_ = np.asarray(w_)
        assert g_.dtype == w_.dtype and g_.shape == w_.shape, (g_.dtype, g_.shape, w_.dtype, w_.shape)
        if np.issubdtype(g_.dtype, np.integer):
            diff = np.abs(g_.astype(np.int64) - w_.astype(np.int64))
            assert diff.max(initial=0) <= int_steps, f"max difference {diff.max()} > {int_steps}"
        else:
            np.testing.assert_allclose(g_, w_, rtol=rtol, atol=atol)
    return feed


def summary_of(model) -> str:
    return pyruntime.load(model, threads=1).summary()


# ---------------------------------------------------------------------------------------
# fold_constants


def test_fold_constants_constant_nodes_and_constant_subgraphs():
    nodes = [
        helper.make_node("Constant", [], ["c1"], value=init("v", np.arange(6, dtype=np.float32).reshape(2, 3))),
        helper.make_node("Constant", [], ["c2"], value_float=2.0),
        helper.make_node("Constant", [], ["shape"], value_ints=[3, 2]),
        helper.make_node("Mul", ["c1", "c2"], ["c3"]),
        helper.make_node("Reshape", ["c3", "shape"], ["c4"]),
        helper.make_node("Add", ["x", "c4"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", F, [3, 2])], [vi("y", F, [3, 2])])
    g = passes.fold_constants(to_graph(m))
    assert ops(g) == [("", "Add")]
    add = g.nodes[0]
    np.testing.assert_array_equal(g.consts[add.inputs[1]], (np.arange(6, dtype=np.float32) * 2).reshape(3, 2))
    assert g.consts["c2"].dtype == np.float32 and g.consts["shape"].dtype == np.int64
    check_outputs(m)


def test_fold_constants_bypasses_identity_and_inference_dropout():
    nodes = [
        helper.make_node("Identity", ["x"], ["i1"]),
        helper.make_node("Dropout", ["i1"], ["d1"]),
        helper.make_node("Relu", ["d1"], ["r"]),
        helper.make_node("Identity", ["r"], ["y"]),  # a graph output: kept
    ]
    m = make_model(nodes, [vi("x", F, [4, 5])], [vi("y", F, [4, 5])])
    g = passes.fold_constants(to_graph(m))
    assert ops(g) == [("", "Relu"), ("", "Identity")]
    assert g.nodes[0].inputs == ["x"]
    check_outputs(m)


def test_fold_constants_identity_of_a_constant_then_folding_its_consumer():
    """The consumer is folded with the name the bypass gave it (not its original input)."""
    nodes = [helper.make_node("Identity", ["w"], ["wi"]), helper.make_node("Reshape", ["wi", "shape"], ["wr"]),
             helper.make_node("Add", ["x", "wr"], ["y"])]
    m = make_model(nodes, [vi("x", F, [3, 2])], [vi("y", F, [3, 2])],
                   [init("w", np.arange(6, dtype=np.float32).reshape(2, 3)), init("shape", np.array([3, 2]))])
    g = passes.fold_constants(to_graph(m))
    assert ops(g) == [("", "Add")]
    check_outputs(m)


def test_fold_constants_keeps_training_dropout_masks_and_quantize_nodes():
    nodes = [
        helper.make_node("Dropout", ["x", "", "train"], ["d"]),  # training_mode constant true: kept
        helper.make_node("Dropout", ["x"], ["e", "mask"]),  # mask wanted: kept
        helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["q"]),  # constant, but Q stays for fusion
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
        helper.make_node("Add", ["e", "dq"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", F, [2, 3])],
                   [vi("d", F, [2, 3]), vi("y", F, [2, 3]), vi("mask", TensorProto.BOOL, [2, 3])],
                   [init("train", np.array(True)), init("c", np.ones((2, 3), np.float32)),
                    init("s", np.float32(0.1)), init("zp", np.uint8(3))])
    g = passes.fold_constants(to_graph(m))
    assert ops(g) == [("", "Dropout"), ("", "Dropout"), ("", "QuantizeLinear"), ("", "DequantizeLinear"), ("", "Add")]
    with pytest.raises(pyruntime.UnsupportedError, match="training_mode"):
        pyruntime.load(m).run(None, {"x": np.ones((2, 3), np.float32)})
    m.graph.initializer[0].CopyFrom(init("train", np.array(False)))
    got = pyruntime.load(m).run(None, {"x": np.ones((2, 3), np.float32)})
    np.testing.assert_array_equal(got[0], np.ones((2, 3), np.float32))
    np.testing.assert_allclose(got[1], np.full((2, 3), 2.0, np.float32))
    assert got[2].dtype == np.bool_ and got[2].all()


# ---------------------------------------------------------------------------------------
# fold_batchnorm


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3)])
def test_fold_batchnorm_constant_parameters(shape):
    rng = np.random.default_rng(1)
    C = shape[1]
    scale, bias = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    mean, var = rng.standard_normal(C).astype(np.float32), rng.uniform(0.5, 2, C).astype(np.float32)
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)]
    m = make_model(nodes, [vi("x", F, list(shape))], [vi("y", F, list(shape))],
                   [init("s", scale), init("b", bias), init("m", mean), init("v", var)], opset=15)
    g = passes.fold_batchnorm(to_graph(m))
    assert ops(g) == [("", "Mul"), ("", "Add")]
    mul, add = g.nodes
    a = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-3)
    bshape = (C,) + (1,) * (len(shape) - 2)
    np.testing.assert_allclose(g.consts[mul.inputs[1]], a.reshape(bshape), rtol=1e-6)
    np.testing.assert_allclose(g.consts[add.inputs[1]], (bias - mean * a).reshape(bshape), rtol=1e-5, atol=1e-6)
    assert add.outputs == ["y"] and mul.inputs[0] == "x"
    assert mul.fusions == ["BatchNormalization"]
    check_outputs(m, rtol=1e-4, atol=1e-5)


def test_fold_batchnorm_leaves_runtime_parameters_to_the_runtime_op():
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])]
    m = make_model(nodes, [vi("x", F, [2, 3, 4]), vi("s", F, [3])], [vi("y", F, [2, 3, 4])],
                   [init("b", np.zeros(3, np.float32)), init("m", np.ones(3, np.float32)),
                    init("v", np.full(3, 2.0, np.float32))], opset=15)
    g = passes.fold_batchnorm(to_graph(m))
    assert ops(g) == [("", "BatchNormalization")]
    check_outputs(m, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------
# fuse_qdq

S_A, S_W, S_Y = np.float32(0.02), np.float32(0.01), np.float32(0.05)


QDQ_OPSET = 21  # onnx's reference evaluator implements QuantizeLinear / DequantizeLinear from 19 on


def _qdq_matmul_model(*, tail=(), q=True, w_dtype=S8, y_dtype=U8, y_zp=7, K=16, N=8, M=5, bias=None, extra=()):
    """x_q (uint8) -> DQ -> MatMul(DQ(W)) [-> Add(bias)] [-> tail activations] [-> Q]."""
    rng = np.random.default_rng(2)
    W = rng.integers(-127, 128, (K, N)).astype(NP[w_dtype]) if w_dtype == S8 else \
        rng.integers(0, 256, (K, N)).astype(np.uint8)
    inits = [init("a_s", S_A), init("a_zp", np.uint8(120)), init("W", W), init("w_s", S_W),
             init("w_zp", np.zeros((), NP[w_dtype]) if w_dtype == S8 else np.uint8(128))] + list(extra)
    nodes = [helper.make_node("DequantizeLinear", ["x", "a_s", "a_zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["W", "w_s", "w_zp"], ["Wf"]),
             helper.make_node("MatMul", ["xf", "Wf"], ["mm"])]
    last = "mm"
    if bias is not None:
        inits.append(init("bias", bias))
        nodes.append(helper.make_node("Add", [last, "bias"], ["mmb"]))
        last = "mmb"
    for i, (op, extra) in enumerate(tail):
        nodes.append(helper.make_node(op, [last] + list(extra), [f"act{i}"]))
        last = f"act{i}"
    if q:
        inits += [init("y_s", S_Y), init("y_zp", np.array(y_zp, NP[y_dtype]))]
        nodes.append(helper.make_node("QuantizeLinear", [last, "y_s", "y_zp"], ["y"]))
        out = vi("y", y_dtype, [M, N])
    else:
        nodes[-1].output[0] = "y"
        out = vi("y", F, [M, N])
    return make_model(nodes, [vi("x", U8, [M, K])], [out], inits, opset=QDQ_OPSET), W


def _mult(*scales_over):
    s_a, s_w, s_y = scales_over
    return np.float32(np.float64(s_a) * np.float64(s_w) / np.float64(s_y))


def test_fuse_qdq_matmul_quantize_becomes_one_qgemm():
    m, W = _qdq_matmul_model()
    g = passes.fuse_qdq(to_graph(m))
    assert ops(g) == [("pyrt", "QGemm")]
    q = g.nodes[0]
    assert q.inputs == ["x"] and q.outputs == ["y"]
    np.testing.assert_array_equal(q.attrs["w"], W)
    np.testing.assert_array_equal(q.attrs["w_zp"], [0])
    assert q.attrs["a_zp"] == 120 and q.attrs["out_zp"] == 7 and q.attrs["out_dtype"] == np.uint8
    assert (q.attrs["lo"], q.attrs["hi"]) == (0, 255) and q.attrs["bias"] is None
    np.testing.assert_array_equal(q.attrs["mult"], [_mult(S_A, S_W, S_Y)])
    assert q.fusions == ["DequantizeLinear(A)", "DequantizeLinear(W)", "MatMul", "QuantizeLinear"]
    check_outputs(m, int_steps=1)


@pytest.mark.parametrize("tail,lo_hi", [
    ((("Relu", ()),), (7, 255)),
    ((("Clip", ("lo", "hi")),), None),
    ((("Relu", ()), ("Clip", ("lo", "hi"))), None),
])
def test_fuse_qdq_absorbs_bias_relu_and_clip(tail, lo_hi):
    bias = np.linspace(-1, 1, 8).astype(np.float32)
    m, _ = _qdq_matmul_model(tail=tail, bias=bias, extra=[init("lo", np.float32(-0.3)), init("hi", np.float32(2.0))])
    g = passes.fuse_qdq(to_graph(m))
    assert ops(g) == [("pyrt", "QGemm")]
    q = g.nodes[0]
    expected_lo_hi = lo_hi or (max(0 if tail[0][0] == "Clip" else 7, int(np.rint(np.float32(-0.3) / S_Y)) + 7),
                               int(np.rint(np.float32(2.0) / S_Y)) + 7)
    assert (q.attrs["lo"], q.attrs["hi"]) == expected_lo_hi
    np.testing.assert_array_equal(q.attrs["bias"], np.rint(bias / (np.float64(S_A) * np.float64(S_W))).astype(np.int32))
    assert q.fusions == ["DequantizeLinear(A)", "DequantizeLinear(W)", "MatMul", "bias"] + \
        [op for op, _ in tail] + ["QuantizeLinear"]
    check_outputs(m, int_steps=1)


def test_fuse_qdq_int8_output_and_uint8_weights():
    m, W = _qdq_matmul_model(w_dtype=U8, y_dtype=S8, y_zp=-3, tail=(("Relu", ()),))
    g = passes.fuse_qdq(to_graph(m))
    q = node(g, "QGemm", "pyrt")
    assert q.attrs["out_dtype"] == np.int8 and (q.attrs["lo"], q.attrs["hi"]) == (-3, 127)
    np.testing.assert_array_equal(q.attrs["w_zp"], [128])
    check_outputs(m, int_steps=1)


def test_fuse_qdq_without_quantize_gives_fp32_output_and_keeps_the_activation():
    m, _ = _qdq_matmul_model(q=False, tail=(("Relu", ()),))
    g = passes.fuse_qdq(to_graph(m))
    assert ops(g) == [("pyrt", "QGemm"), ("", "Relu")]
    q = g.nodes[0]
    assert q.attrs["out_dtype"] == np.float32 and q.outputs == [g.nodes[1].inputs[0]]
    np.testing.assert_array_equal(q.attrs["mult"], [np.float32(np.float64(S_A) * np.float64(S_W))])
    assert "QuantizeLinear" not in q.fusions
    check_outputs(m, rtol=1e-5, atol=1e-5)
    assert "qgemm int8" in summary_of(m)


def _qdq_gemm_model(*, bias_scale=None, beta=1.0, c_shape=None, per_channel=True, M=4, K=12, N=6):
    """DQ(x) -> Gemm(transB=1, DQ(W [N, K]) per channel on axis 0, DQ(int32 bias)) -> Q."""
    rng = np.random.default_rng(3)
    W = rng.integers(-127, 128, (N, K)).astype(np.int8)
    w_s = (rng.uniform(0.005, 0.02, N) if per_channel else np.array(0.01)).astype(np.float32)
    b_s = (np.float32(S_A) * w_s).astype(np.float32) if bias_scale is None else np.asarray(bias_scale, np.float32)
    c_shape = c_shape or [N]
    B = rng.integers(-2000, 2000, c_shape).astype(np.int32)
    inits = [init("a_s", S_A), init("a_zp", np.uint8(100)), init("W", W), init("w_s", w_s),
             init("w_zp", np.zeros(w_s.shape, np.int8)), init("B", B), init("b_s", b_s),
             init("b_zp", np.zeros(b_s.shape, np.int32)), init("y_s", S_Y), init("y_zp", np.uint8(128))]
    nodes = [helper.make_node("DequantizeLinear", ["x", "a_s", "a_zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["W", "w_s", "w_zp"], ["Wf"], axis=0),
             helper.make_node("DequantizeLinear", ["B", "b_s", "b_zp"], ["Bf"], axis=0),
             helper.make_node("Gemm", ["xf", "Wf", "Bf"], ["g"], transB=1, beta=beta),
             helper.make_node("QuantizeLinear", ["g", "y_s", "y_zp"], ["y"])]
    return make_model(nodes, [vi("x", U8, [M, K])], [vi("y", U8, [M, N])], inits, opset=QDQ_OPSET), W, w_s, B


def test_fuse_qdq_gemm_transb_per_channel_with_int32_bias():
    m, W, w_s, B = _qdq_gemm_model()
    g = passes.fuse_qdq(to_graph(m))
    assert ops(g) == [("pyrt", "QGemm")]
    q = g.nodes[0]
    np.testing.assert_array_equal(q.attrs["w"], W.T)
    np.testing.assert_array_equal(q.attrs["bias"], B)
    np.testing.assert_array_equal(q.attrs["mult"], [_mult(S_A, s, S_Y) for s in w_s])
    assert q.fusions == ["DequantizeLinear(A)", "DequantizeLinear(W)", "Gemm", "bias", "QuantizeLinear"]
    check_outputs(m, int_steps=1)


def test_fuse_qdq_int32_bias_in_another_scale_is_rescaled():
    m, W, w_s, B = _qdq_gemm_model(per_channel=False, bias_scale=np.float32(S_A * 0.01 * 2))
    q = node(passes.fuse_qdq(to_graph(m)), "QGemm", "pyrt")
    np.testing.assert_array_equal(q.attrs["bias"], B * 2)
    check_outputs(m, int_steps=1)


@pytest.mark.parametrize("case", ["beta", "column_bias"])
def test_fuse_qdq_leaves_what_it_cannot_fuse(case):
    if case == "beta":
        m, *_ = _qdq_gemm_model(beta=0.5)
    else:  # C of shape [M, 1] broadcasts down the rows, not along the columns: not a bias
        m, *_ = _qdq_gemm_model(per_channel=False, c_shape=[4, 1], M=4)
    g = passes.fuse_qdq(to_graph(m))
    assert ("", "Gemm") in ops(g) and ("pyrt", "QGemm") not in ops(g)
    check_outputs(m, int_steps=1)


# ---------------------------------------------------------------------------------------
# drop_qdq_around_shape_ops


@pytest.mark.parametrize("same_params", [True, False])
def test_drop_qdq_around_shape_ops(same_params):
    rng = np.random.default_rng(11)
    W = rng.integers(-127, 128, (12, 4)).astype(np.int8)
    inits = [init("s", np.float32(0.05)), init("zp", np.uint8(128)),
             init("s2", np.float32(0.05 if same_params else 0.1)),
             init("W", W), init("w_s", S_W), init("y_s", S_Y), init("y_zp", np.uint8(128))]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["xf"]),
             helper.make_node("Flatten", ["xf"], ["flat"]),
             helper.make_node("QuantizeLinear", ["flat", "s2", "zp"], ["fq"]),
             helper.make_node("DequantizeLinear", ["fq", "s2", "zp"], ["ff"]),
             helper.make_node("DequantizeLinear", ["W", "w_s"], ["Wf"]),
             helper.make_node("MatMul", ["ff", "Wf"], ["mm"]),
             helper.make_node("QuantizeLinear", ["mm", "y_s", "y_zp"], ["y"]),
             helper.make_node("Transpose", ["xf"], ["t"], perm=[0, 2, 1]),  # the DQ has a second consumer
             helper.make_node("QuantizeLinear", ["t", "s", "zp"], ["tq"])]
    m = make_model(nodes, [vi("x", U8, [2, 3, 4])], [vi("y", U8, [2, 4]), vi("tq", U8, [2, 4, 3])], inits,
                   opset=QDQ_OPSET)
    g = passes.drop_qdq_around_shape_ops(to_graph(m))
    if same_params:
        assert ops(g) == [("", "Flatten"), ("", "DequantizeLinear"), ("", "DequantizeLinear"), ("", "MatMul"),
                          ("", "QuantizeLinear"), ("", "Transpose")]
        flat, tr = node(g, "Flatten"), node(g, "Transpose")
        assert flat.inputs == ["x"] and flat.outputs == ["fq"] and tr.inputs == ["x"] and tr.outputs == ["tq"]
        assert flat.fusions == ["DequantizeLinear", "QuantizeLinear"]
        assert ops(passes.run_all(to_graph(m))) == [("", "Flatten"), ("pyrt", "QGemm"), ("", "Transpose")]
    else:  # the Flatten keeps its DQ/Q (different scales); the Transpose still loses them
        assert ("", "Flatten") in ops(g) and node(g, "Flatten").inputs == ["xf"]
        assert node(g, "Transpose").inputs == ["x"]
    check_outputs(m, int_steps=1)


# ---------------------------------------------------------------------------------------
# fuse_qoperator


def _qlinear_matmul_model(const_b=True, M=5, K=16, N=8):
    rng = np.random.default_rng(4)
    B = rng.integers(0, 256, (K, N)).astype(np.uint8)
    b_s = rng.uniform(0.005, 0.02, N).astype(np.float32)
    b_zp = rng.integers(100, 156, N).astype(np.uint8)
    params = [init("a_s", S_A), init("a_zp", np.uint8(120)), init("b_s", b_s), init("b_zp", b_zp),
              init("y_s", S_Y), init("y_zp", np.uint8(128))]
    nodes = [helper.make_node("QLinearMatMul", ["x", "a_s", "a_zp", "B", "b_s", "b_zp", "y_s", "y_zp"], ["y"])]
    inputs = [vi("x", U8, [M, K])] + ([] if const_b else [vi("B", U8, [K, N])])
    inits = params + ([init("B", B)] if const_b else [])
    return make_model(nodes, inputs, [vi("y", U8, [M, N])], inits), B, b_s, b_zp


def test_fuse_qoperator_qlinear_matmul():
    m, B, b_s, b_zp = _qlinear_matmul_model()
    g = passes.fuse_qoperator(to_graph(m))
    assert ops(g) == [("pyrt", "QGemm")]
    q = g.nodes[0]
    np.testing.assert_array_equal(q.attrs["w"], B)
    np.testing.assert_array_equal(q.attrs["w_zp"], b_zp.astype(np.int32))
    np.testing.assert_array_equal(q.attrs["mult"], [_mult(S_A, s, S_Y) for s in b_s])
    assert (q.attrs["a_zp"], q.attrs["out_zp"], q.attrs["out_dtype"]) == (120, 128, np.uint8)
    assert q.fusions == ["QLinearMatMul"]
    check_outputs(m, onnxruntime_run, int_steps=1)


def test_fuse_qoperator_leaves_runtime_weights_to_the_general_kernel():
    m, *_ = _qlinear_matmul_model(const_b=False)
    g = passes.fuse_qoperator(to_graph(m))
    assert ops(g) == [("", "QLinearMatMul")]
    check_outputs(m, onnxruntime_run, int_steps=1)


def test_fuse_qoperator_matmul_integer_per_column_zero_point():
    rng = np.random.default_rng(5)
    B = rng.integers(-128, 128, (16, 8)).astype(np.int8)
    b_zp = rng.integers(-5, 5, 8).astype(np.int8)
    nodes = [helper.make_node("MatMulInteger", ["x", "B", "a_zp", "b_zp"], ["y"])]
    m = make_model(nodes, [vi("x", S8, [3, 16])], [vi("y", I32, [3, 8])],
                   [init("B", B), init("a_zp", np.int8(-2)), init("b_zp", b_zp)], opset=10)
    g = passes.fuse_qoperator(to_graph(m))
    assert ops(g) == [("pyrt", "QGemm")]
    q = g.nodes[0]
    assert q.attrs["out_dtype"] == np.int32 and q.attrs["a_zp"] == -2 and q.attrs["mult"] is None
    np.testing.assert_array_equal(q.attrs["w_zp"], b_zp.astype(np.int32))
    check_outputs(m, onnxruntime_run, int_steps=0)  # exact


@pytest.mark.parametrize("quantized_output", [True, False])
def test_fuse_qoperator_com_microsoft_qgemm(quantized_output):
    rng = np.random.default_rng(6)
    M, K, N = 4, 16, 8
    # |w| <= 63: onnxruntime's u8 x s8 kernel sums pairs of products in int16 (vpmaddubsw) and
    # saturates with full-range weights; pyruntime is exact either way
    B = rng.integers(-63, 64, (N, K)).astype(np.int8)
    C = rng.integers(-3000, 3000, N).astype(np.int32)
    b_s = rng.uniform(0.005, 0.02, N).astype(np.float32)
    inits = [init("a_s", S_A), init("a_zp", np.uint8(110)), init("B", B), init("b_s", b_s),
             init("b_zp", np.zeros(N, np.int8)), init("C", C)]
    ins = ["x", "a_s", "a_zp", "B", "b_s", "b_zp", "C"]
    if quantized_output:
        inits += [init("y_s", S_Y), init("y_zp", np.uint8(128))]
        ins += ["y_s", "y_zp"]
    nodes = [helper.make_node("QGemm", ins, ["y"], domain="com.microsoft", transB=1, alpha=0.5)]
    m = make_model(nodes, [vi("x", U8, [M, K])], [vi("y", U8 if quantized_output else F, [M, N])], inits, ms=True)
    g = passes.fuse_qoperator(to_graph(m))
    assert ops(g) == [("pyrt", "QGemm")]
    q = g.nodes[0]
    np.testing.assert_array_equal(q.attrs["w"], B.T)
    np.testing.assert_array_equal(q.attrs["bias"], C)
    acc = np.float64(S_A) * 0.5 * b_s.astype(np.float64)
    mult = (acc / np.float64(S_Y) if quantized_output else acc).astype(np.float32)
    np.testing.assert_array_equal(q.attrs["mult"], mult)
    assert q.attrs["out_dtype"] == (np.uint8 if quantized_output else np.float32)
    check_outputs(m, onnxruntime_run, int_steps=1, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------
# fuse_float_gemm


def test_fuse_float_gemm_matmul_add_relu():
    rng = np.random.default_rng(7)
    W, b = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["b", "mm"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    m = make_model(nodes, [vi("x", F, [2, 3, 16])], [vi("y", F, [2, 3, 8])], [init("W", W), init("b", b)])
    g = passes.fuse_float_gemm(to_graph(m))
    assert ops(g) == [("pyrt", "FGemm")]
    f = g.nodes[0]
    assert f.inputs == ["x"] and f.outputs == ["y"] and f.fusions == ["MatMul", "bias", "Relu"]
    np.testing.assert_array_equal(f.attrs["w"], W)
    np.testing.assert_array_equal(f.attrs["bias"], b)
    assert (f.attrs["lo"], f.attrs["hi"]) == (0.0, np.inf)
    check_outputs(m, onnxruntime_run, rtol=1e-5, atol=1e-5)


def test_fuse_float_gemm_gemm_transb_alpha_beta_clip():
    rng = np.random.default_rng(8)
    W, c = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal((1, 8)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W", "c"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Clip", ["g", "lo", "hi"], ["y"])]
    m = make_model(nodes, [vi("x", F, [3, 16])], [vi("y", F, [3, 8])],
                   [init("W", W), init("c", c), init("lo", np.float32(-1)), init("hi", np.float32(1.5))])
    g = passes.fuse_float_gemm(to_graph(m))
    assert ops(g) == [("pyrt", "FGemm")]
    f = g.nodes[0]
    assert f.fusions == ["Gemm", "bias", "Clip"]
    np.testing.assert_array_equal(f.attrs["w"], W.T * np.float32(0.5))
    np.testing.assert_array_equal(f.attrs["bias"], c.reshape(-1) * np.float32(2))
    assert (f.attrs["lo"], f.attrs["hi"]) == (-1.0, 1.5)
    check_outputs(m, onnxruntime_run, rtol=1e-5, atol=1e-5)


def test_fuse_float_gemm_leaves_full_matrix_addends_and_runtime_weights():
    rng = np.random.default_rng(9)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "full"], ["a"]),
             helper.make_node("MatMul", ["a", "w2"], ["y"])]
    m = make_model(nodes, [vi("x", F, [3, 4]), vi("w2", F, [5, 2])], [vi("y", F, [3, 2])],
                   [init("W", rng.standard_normal((4, 5)).astype(np.float32)),
                    init("full", rng.standard_normal((3, 5)).astype(np.float32))])
    g = passes.fuse_float_gemm(to_graph(m))
    assert ops(g) == [("pyrt", "FGemm"), ("", "Add"), ("", "MatMul")]
    assert g.nodes[0].attrs["bias"] is None
    check_outputs(m, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# remove_dead


def test_remove_dead():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["r"], ["unused"]),
             helper.make_node("Tanh", ["x"], ["unused2"]), helper.make_node("Relu", ["r"], ["y"])]
    m = make_model(nodes, [vi("x", F, [2, 2])], [vi("y", F, [2, 2])])
    g = passes.remove_dead(to_graph(m))
    assert ops(g) == [("", "Relu"), ("", "Relu")]
    check_outputs(m)


def test_run_all_on_a_qdq_mlp():
    """The whole pipeline: two fused int8 layers, the last with fp32 output, then Softmax."""
    rng = np.random.default_rng(10)
    W1 = rng.integers(-127, 128, (16, 12)).astype(np.int8)
    W2 = rng.integers(-127, 128, (12, 4)).astype(np.int8)
    b1 = rng.standard_normal(12).astype(np.float32)
    inits = [init("a_s", S_A), init("a_zp", np.uint8(128)), init("W1", W1), init("W2", W2), init("w_s", S_W),
             init("b1", b1), init("h_s", np.float32(0.1)), init("h_zp", np.uint8(0))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "a_s", "a_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "a_s", "a_zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["W1", "w_s"], ["W1f"]),
             helper.make_node("MatMul", ["xf", "W1f"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["hr"]),
             helper.make_node("QuantizeLinear", ["hr", "h_s", "h_zp"], ["hq"]),
             helper.make_node("DequantizeLinear", ["hq", "h_s", "h_zp"], ["hf"]),
             helper.make_node("DequantizeLinear", ["W2", "w_s"], ["W2f"]),
             helper.make_node("MatMul", ["hf", "W2f"], ["logits"]), helper.make_node("Softmax", ["logits"], ["y"])]
    m = make_model(nodes, [vi("x", F, [6, 16])], [vi("y", F, [6, 4])], inits, opset=QDQ_OPSET)
    g = passes.run_all(to_graph(m))
    assert ops(g) == [("", "QuantizeLinear"), ("pyrt", "QGemm"), ("pyrt", "QGemm"), ("", "Softmax")]
    assert g.nodes[1].attrs["out_dtype"] == np.uint8 and g.nodes[2].attrs["out_dtype"] == np.float32
    # a one-step difference in the hidden layer moves the probabilities a little
    check_outputs(m, rtol=0, atol=0.05)
