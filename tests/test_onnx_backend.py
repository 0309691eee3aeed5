"""ONNX conformance: the backend node tests shipped in the installed onnx package.

`onnx.backend.test.BackendTest` runs every node test of the op set of this issue and the next
through an adapter whose `prepare` is `pyruntime.load(model, threads=1)` and whose `run` is
`Model.run(None, feed)` with the test's inputs in the order of the graph inputs. Expected
outputs are compared with each test's own tolerances (rtol 1e-3, atol 1e-7 by default).

Selection: INCLUDE holds one regex per op (every node test of the op, every dtype variant).
Only variants outside the runtime's dtypes (float32, uint8, int8, int32, int64, bool) or
outside inference (training mode) or function expansions (`_expanded`) are excluded, each
with its reason in EXCLUDED. Ops whose kernels have not landed yet go in XFAIL_OPS (their
tests are then expected failures, not strict: a test that already passes shows as XPASS);
the conv / pool ops of issue 4 were there until it landed.

    pytest tests/test_onnx_backend.py -rsx      # pass / fail / xfail, plus the skip reasons
"""
from __future__ import annotations

import re
import unittest
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
import onnx.backend.test  # noqa: E402
from onnx.backend.base import Backend, BackendRep  # noqa: E402

import pyruntime  # noqa: E402

# One pattern per op; each matches the op's node tests and nothing else (checked by
# test_selection_matches_the_ops below against the ops in each test's graph).
INCLUDE = {
    # this issue
    "Add": r"^test_add(_.+)?_cpu$",
    "Sub": r"^test_sub(_.+)?_cpu$",
    "Mul": r"^test_mul(_.+)?_cpu$",
    "Div": r"^test_div(_.+)?_cpu$",
    "MatMul": r"^test_matmul_\d.*_cpu$|^test_matmul_bcast_cpu$",
    "MatMulInteger": r"^test_matmulinteger(_.+)?_cpu$",
    "QLinearMatMul": r"^test_qlinearmatmul(_.+)?_cpu$",
    "Gemm": r"^test_gemm(_.+)?_cpu$",
    "QuantizeLinear": r"^test_quantizelinear(_.+)?_cpu$",
    "DequantizeLinear": r"^test_dequantizelinear(_.+)?_cpu$",
    "DynamicQuantizeLinear": r"^test_dynamicquantizelinear(_.+)?_cpu$",
    "Relu": r"^test_relu(_.+)?_cpu$",
    "Clip": r"^test_clip(_.+)?_cpu$",
    "Sigmoid": r"^test_sigmoid(_.+)?_cpu$",
    "Tanh": r"^test_tanh(_.+)?_cpu$",
    "Softmax": r"^test_softmax(_.+)?_cpu$",
    "ReduceMean": r"^test_reduce_mean(_.+)?_cpu$",
    "Flatten": r"^test_flatten(_.+)?_cpu$",
    "Reshape": r"^test_reshape(_.+)?_cpu$",
    "Transpose": r"^test_transpose(_.+)?_cpu$",
    "Concat": r"^test_concat(_.+)?_cpu$",
    "Identity": r"^test_identity(_.+)?_cpu$",
    "Dropout": r"^test_(training_)?dropout(_.+)?_cpu$",
    "Constant": r"^test_constant_cpu$",
    "Shape": r"^test_shape(_.+)?_cpu$",
    "Gather": r"^test_gather_(\d+|2d_indices|negative_indices)_cpu$",
    "Unsqueeze": r"^test_unsqueeze(_.+)?_cpu$",
    "Squeeze": r"^test_squeeze(_.+)?_cpu$",
    "BatchNormalization": r"^test_batchnorm(_.+)?_cpu$",
    # the next issue (expected to fail until then)
    "Conv": r"^test_(basic_)?conv_with(out)?_.+_cpu$",
    "ConvInteger": r"^test_convinteger(_.+)?_cpu$",
    "QLinearConv": r"^test_qlinearconv(_.+)?_cpu$",
    "MaxPool": r"^test_maxpool(_.+)?_cpu$",
    "AveragePool": r"^test_averagepool(_.+)?_cpu$",
    "GlobalAveragePool": r"^test_globalaveragepool(_.+)?_cpu$",
}

# Ops whose tests are expected failures until their kernels land. Conv, ConvInteger,
# QLinearConv, MaxPool, AveragePool and GlobalAveragePool were, until issue 4 landed them
# (every one of their node tests passes since commit be01809).
XFAIL_OPS: set[str] = set()
XFAIL_REASON = "conv/pool kernels land with issue 4"

# Excluded variants: pattern (searched in the test name) -> reason. Only dtypes the runtime
# does not have, training mode, blocked quantization and function expansions.
EXCLUDED = {
    r"_expanded(_ver\d+)?_cpu$": "function-expansion test (`_expanded`): exercises the expansion's "
                                 "ops, not this op",
    r"_training_mode_cpu$": "training mode (BatchNormalization updating running statistics); "
                            "inference only",
    r"^test_training_dropout": "training mode (Dropout with training_mode=True draws a random mask); "
                               "inference only",
    r"_blocked(_.+)?_cpu$": "blocked quantization (block_size); per-tensor and per-axis only",
    r"_(int16|uint16)_cpu$": "int16/uint16 tensors; the runtime has float32, uint8, int8, int32, int64, bool",
    r"_(uint32|uint64)_cpu$": "uint32/uint64 tensors; the runtime has float32, uint8, int8, int32, int64, bool",
    r"_(int4|uint4|int2|uint2)_cpu$": "int4/uint4/int2/uint2 (sub-byte) tensors; 8-bit quantization only",
    r"_(e4m3fn|e5m2|e4m3fn_float16|e4m3fn_zero_point|float4e2m1)_cpu$": "float8/float4 tensors; 8-bit "
                                                                        "integer quantization only",
    r"_float16_cpu$": "float16 tensors (here: float16 scales); float32 only",
    r"^test_identity_sequence_cpu$": "sequence type, not a tensor; tensors only",
    r"^test_identity_opt_cpu$": "optional type, not a tensor; tensors only",
}


class PyrtRep(BackendRep):
    def __init__(self, model: pyruntime.Model):
        self.model = model
        self.names = [i.name for i in model.inputs]

    def run(self, inputs, **kwargs):
        # onnx gives 0-d inputs as numpy scalars; like onnxruntime's backend, pass them as 0-d
        # arrays (same dtype: no cast).
        feed = {n: np.asarray(x) if isinstance(x, np.generic) else x for n, x in zip(self.names, inputs)}
        return self.model.run(None, feed)


class PyrtBackend(Backend):
    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        return PyrtRep(pyruntime.load(model, threads=1))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


def _classify(name: str):
    """(op, status, reason) for a test name, or None if the test is out of scope."""
    ops = [op for op, pat in INCLUDE.items() if re.search(pat, name)]
    if not ops:
        return None
    assert len(ops) == 1, f"{name} matches the patterns of {ops}"
    op = ops[0]
    for pat, reason in EXCLUDED.items():
        if re.search(pat, name):
            return op, "excluded", reason
    if op in XFAIL_OPS:
        return op, "xfail", XFAIL_REASON
    return op, "run", ""


def _skip(reason: str):
    def excluded(self):
        raise unittest.SkipTest(f"excluded: {reason}")
    return excluded


with warnings.catch_warnings():  # generating onnx's test data warns about overflows on purpose
    warnings.simplefilter("ignore")
    backend_test = onnx.backend.test.BackendTest(PyrtBackend, __name__)
    for _pattern in INCLUDE.values():
        backend_test.include(_pattern)
    _node_cases = backend_test.test_cases["OnnxBackendNodeModelTest"]
SELECTED: dict[str, tuple] = {}


class OnnxBackendNodeModelTest(unittest.TestCase):
    """The selected node tests only (pytest would otherwise list every other onnx test as
    skipped)."""


for _name in sorted(vars(_node_cases)):
    if not _name.startswith("test_"):
        continue
    _c = _classify(_name)
    if _c is None:
        continue
    SELECTED[_name] = _c
    _func = getattr(_node_cases, _name)
    if _c[1] == "excluded":
        _func = _skip(_c[2])
    elif _c[1] == "xfail":
        _func = pytest.mark.xfail(reason=_c[2], strict=False)(_func)
    setattr(OnnxBackendNodeModelTest, _name, _func)

del _node_cases, _name, _c, _func, _pattern


def test_selection_matches_the_ops():
    """Every selected test's graph uses its op only (the `_expanded` ones excepted), and every
    op of INCLUDE has at least one test that runs or is an expected failure."""
    from onnx.backend.test.loader import load_node_model_tests

    graphs = {f"{c.name}_cpu": c.model for c in load_node_model_tests()}
    for name, (op, status, _) in SELECTED.items():
        ops = {n.op_type for n in graphs[name].graph.node}
        if "_expanded" not in name:
            assert ops == {op}, f"{name} selected for {op} but its graph holds {sorted(ops)}"
    # nothing of an op missed: every node test whose graph is exactly one of our ops is selected
    for name, model in graphs.items():
        ops = {n.op_type for n in model.graph.node}
        if len(ops) == 1 and ops <= set(INCLUDE):
            assert name in SELECTED, f"{name} tests {ops} but no INCLUDE pattern selects it"
    for op in INCLUDE:
        assert any(o == op and s != "excluded" for o, s, _ in SELECTED.values()), f"no runnable test for {op}"


# ---------------------------------------------------------------------------------------
# Forms the node tests above do not reach: they are generated at the newest opset only, so
# the attribute forms of older opsets (Clip-6/11, Squeeze-11, ReduceMean-13, Softmax-11),
# constant operands (the fused and folded paths) and a few edge cases are checked here,
# each against onnxruntime on the same model.

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_F, _U8, _S8, _I32, _I64 = (TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32,
                            TensorProto.INT64)
_NP = {_F: np.float32, _U8: np.uint8, _S8: np.int8, _I32: np.int32, _I64: np.int64}


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _m(opset, nodes, inputs, outputs, inits=()):
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m


def _op(opset, op, ins, in_info, out_info, inits=(), n_out=1, **attrs):
    outs = [o[0] for o in out_info]
    return _m(opset, [helper.make_node(op, ins, outs, **attrs)], [_vi(*i) for i in in_info],
              [_vi(*o) for o in out_info], inits)


_R = np.random.default_rng(0)
FORMS = {
    # opset-dependent attribute / input forms
    "softmax_11_axis1_coerces_to_2d": _op(11, "Softmax", ["x"], [("x", _F, [2, 3, 4])], [("y", _F, [2, 3, 4])], axis=1),
    "softmax_11_default_axis": _op(11, "Softmax", ["x"], [("x", _F, [2, 3, 4])], [("y", _F, [2, 3, 4])]),
    "softmax_13_axis0_rank1": _op(13, "Softmax", ["x"], [("x", _F, [5])], [("y", _F, [5])], axis=0),
    "clip_10_attributes": _op(10, "Clip", ["x"], [("x", _F, [3, 4])], [("y", _F, [3, 4])], min=-0.5, max=0.25),
    "clip_10_default_attributes": _op(10, "Clip", ["x"], [("x", _F, [3, 4])], [("y", _F, [3, 4])]),
    "clip_11_constant_bounds": _op(11, "Clip", ["x", "lo", "hi"], [("x", _F, [3, 4])], [("y", _F, [3, 4])],
                                   [_init("lo", np.float32(-0.5)), _init("hi", np.float32(0.5))]),
    "clip_11_max_only": _op(11, "Clip", ["x", "", "hi"], [("x", _F, [3, 4]), ("hi", _F, [])], [("y", _F, [3, 4])]),
    "clip_13_int8_constant_bounds": _op(13, "Clip", ["x", "lo", "hi"], [("x", _S8, [3, 4])], [("y", _S8, [3, 4])],
                                        [_init("lo", np.int8(-20)), _init("hi", np.int8(30))]),
    "clip_13_uint8_runtime_bounds": _op(13, "Clip", ["x", "lo", "hi"], [("x", _U8, [3, 4]), ("lo", _U8, []),
                                                                        ("hi", _U8, [])], [("y", _U8, [3, 4])]),
    "relu_14_int8": _op(14, "Relu", ["x"], [("x", _S8, [3, 4])], [("y", _S8, [3, 4])]),
    "squeeze_11_axes_attribute": _op(11, "Squeeze", ["x"], [("x", _F, [1, 3, 1, 2])], [("y", _F, [3, 2])],
                                     axes=[0, -2]),
    "squeeze_11_no_axes": _op(11, "Squeeze", ["x"], [("x", _F, [1, 3, 1, 2])], [("y", _F, [3, 2])]),
    "squeeze_13_constant_axes": _op(13, "Squeeze", ["x", "a"], [("x", _F, [1, 3, 1, 2])], [("y", _F, [3, 1, 2])],
                                    [_init("a", np.array([0]))]),
    "unsqueeze_11_axes_attribute": _op(11, "Unsqueeze", ["x"], [("x", _F, [3, 2])], [("y", _F, [3, 1, 2, 1])],
                                       axes=[-1, 1]),
    "unsqueeze_13_constant_axes": _op(13, "Unsqueeze", ["x", "a"], [("x", _F, [3, 2])], [("y", _F, [1, 3, 2, 1])],
                                      [_init("a", np.array([3, 0]))]),
    "reduce_mean_13_axes_attribute": _op(13, "ReduceMean", ["x"], [("x", _F, [2, 3, 4, 5])], [("y", _F, [3, 5])],
                                         axes=[0, -2], keepdims=0),
    "reduce_mean_13_all_axes": _op(13, "ReduceMean", ["x"], [("x", _F, [2, 3, 4])], [("y", _F, [1, 1, 1])]),
    "reduce_mean_18_constant_axes": _op(18, "ReduceMean", ["x", "a"], [("x", _F, [2, 3, 4])], [("y", _F, [2, 1, 1])],
                                        [_init("a", np.array([2, 1]))]),
    "reduce_mean_18_noop_with_empty_axes": _op(18, "ReduceMean", ["x"], [("x", _F, [2, 3])], [("y", _F, [2, 3])],
                                               noop_with_empty_axes=1),
    "dropout_10_ratio_attribute": _op(10, "Dropout", ["x"], [("x", _F, [3, 4])], [("y", _F, [3, 4])], ratio=0.3),
    "dropout_12_constant_ratio_and_mask": _m(12, [helper.make_node("Dropout", ["x", "r"], ["y", "mask"])],
                                             [_vi("x", _F, [3, 4])], [_vi("y", _F, [3, 4]),
                                                                     _vi("mask", TensorProto.BOOL, [3, 4])],
                                             [_init("r", np.float32(0.2))]),
    # quantization
    "quantize_10_default_uint8": _op(10, "QuantizeLinear", ["x", "s"], [("x", _F, [3, 4])], [("y", _U8, [3, 4])],
                                     [_init("s", np.float32(0.02))]),
    "quantize_13_per_axis_0_int8": _op(13, "QuantizeLinear", ["x", "s", "z"], [("x", _F, [3, 4])],
                                       [("y", _S8, [3, 4])], [_init("s", np.float32([0.01, 0.02, 0.05])),
                                                              _init("z", np.int8([-3, 0, 4]))], axis=0),
    "quantize_21_output_dtype_int8": _op(21, "QuantizeLinear", ["x", "s"], [("x", _F, [3, 4])], [("y", _S8, [3, 4])],
                                         [_init("s", np.float32(0.01))], output_dtype=_S8),
    "dequantize_10_int32": _op(10, "DequantizeLinear", ["x", "s"], [("x", _I32, [3, 4])], [("y", _F, [3, 4])],
                               [_init("s", np.float32(0.001))]),
    "dequantize_13_per_axis_last": _op(13, "DequantizeLinear", ["x", "s", "z"], [("x", _U8, [2, 3, 4])],
                                       [("y", _F, [2, 3, 4])], [_init("s", np.float32([0.1, 0.2, 0.3, 0.4])),
                                                                _init("z", np.uint8([0, 10, 128, 255]))], axis=-1),
    **{f"dynamic_quantize_{kind}": _m(11, [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
                                      [_vi("x", _F, [3, 4])], [_vi("y", _U8, [3, 4]), _vi("s", _F, []),
                                                               _vi("z", _U8, [])])
       for kind in ("all_positive", "all_negative", "all_zero", "mixed")},
    # constant operands: the folded / fused paths
    "gemm_11_column_bias": _op(11, "Gemm", ["a", "b", "c"], [("a", _F, [3, 5]), ("b", _F, [5, 4]), ("c", _F, [3, 1])],
                               [("y", _F, [3, 4])]),
    "gemm_11_constant_weights_row_bias_trans": _op(11, "Gemm", ["a", "b", "c"], [("a", _F, [5, 3])],
                                                   [("y", _F, [3, 4])],
                                                   [_init("b", _R.standard_normal((4, 5)).astype(np.float32)),
                                                    _init("c", _R.standard_normal((1, 4)).astype(np.float32))],
                                                   transA=1, transB=1, alpha=0.5, beta=2.0),
    "gemm_11_constant_weights_full_bias": _op(11, "Gemm", ["a", "b", "c"], [("a", _F, [3, 5])], [("y", _F, [3, 4])],
                                              [_init("b", _R.standard_normal((5, 4)).astype(np.float32)),
                                               _init("c", _R.standard_normal((3, 4)).astype(np.float32))], beta=0.5),
    "matmul_constant_weights_3d": _op(13, "MatMul", ["a", "b"], [("a", _F, [2, 3, 5])], [("y", _F, [2, 3, 4])],
                                      [_init("b", _R.standard_normal((5, 4)).astype(np.float32))]),
    "matmul_constant_weights_1d_input": _op(13, "MatMul", ["a", "b"], [("a", _F, [5])], [("y", _F, [4])],
                                            [_init("b", _R.standard_normal((5, 4)).astype(np.float32))]),
    "batchnorm_10_constant_params": _op(10, "BatchNormalization", ["x", "s", "b", "m", "v"], [("x", _F, [2, 3, 4])],
                                       [("y", _F, [2, 3, 4])],
                                       [_init("s", np.float32([1, 2, 3])), _init("b", np.float32([0, 1, -1])),
                                        _init("m", np.float32([0.5, 0, 1])), _init("v", np.float32([1, 4, 0.25]))]),
    "batchnorm_10_runtime_params": _op(10, "BatchNormalization", ["x", "s", "b", "m", "v"],
                                      [("x", _F, [2, 3, 2, 2]), ("s", _F, [3]), ("b", _F, [3]), ("m", _F, [3])],
                                      [("y", _F, [2, 3, 2, 2])], [_init("v", np.float32([1, 4, 0.25]))]),
    # integer arithmetic, indexing and shapes
    "div_int32_truncates": _op(14, "Div", ["a", "b"], [("a", _I32, [2, 3])], [("y", _I32, [2, 3])],
                               [_init("b", np.int32([3, -3, 7]))]),
    "mul_int64_broadcast": _op(14, "Mul", ["a", "b"], [("a", _I64, [2, 1, 3]), ("b", _I64, [4, 1])],
                               [("y", _I64, [2, 4, 3])]),
    "sub_uint8_wraps": _op(14, "Sub", ["a", "b"], [("a", _U8, [3, 4]), ("b", _U8, [4])], [("y", _U8, [3, 4])]),
    "add_int8_wraps": _op(14, "Add", ["a", "b"], [("a", _S8, [3, 4]), ("b", _S8, [3, 1])], [("y", _S8, [3, 4])]),
    "add_rank9_broadcast_coalesces": _op(14, "Add", ["a", "b"], [("a", _F, [2, 1, 2, 2, 2, 2, 2, 2, 3]),
                                                                 ("b", _F, [2, 3, 1, 1, 1, 1, 1, 1, 3])],
                                         [("y", _F, [2, 3, 2, 2, 2, 2, 2, 2, 3])]),
    "transpose_rank6_unit_dims": _op(13, "Transpose", ["x"], [("x", _F, [2, 1, 3, 1, 4, 5])],
                                     [("y", _F, [4, 5, 1, 2, 3, 1])], perm=[4, 5, 1, 0, 2, 3]),
    "gather_axis1_constant_negative_indices": _op(13, "Gather", ["x", "i"], [("x", _F, [3, 4, 2])],
                                                  [("y", _F, [3, 2, 2, 2])], [_init("i", np.array([[-1, 0], [2, -4]]))],
                                                  axis=1),
    "gather_scalar_index_int32": _op(13, "Gather", ["x", "i"], [("x", _F, [3, 4]), ("i", _I32, [])],
                                     [("y", _F, [4])]),
    "reshape_14_allowzero_empty": _op(14, "Reshape", ["x", "s"], [("x", _F, [0, 3])], [("y", _F, [3, 0])],
                                      [_init("s", np.array([3, 0]))], allowzero=1),
    "reshape_13_zero_copies_dimension": _op(13, "Reshape", ["x", "s"], [("x", _F, [2, 3, 4])], [("y", _F, [2, 12])],
                                            [_init("s", np.array([0, -1]))]),
    "concat_constant_and_runtime_negative_axis": _op(13, "Concat", ["c", "x"], [("x", _F, [2, 3])],
                                                     [("y", _F, [2, 5])],
                                                     [_init("c", np.ones((2, 2), np.float32))], axis=-1),
    "flatten_axis0": _op(13, "Flatten", ["x"], [("x", _F, [2, 3, 4])], [("y", _F, [1, 24])], axis=0),
    "shape_subgraph_feeds_reshape": _m(15, [helper.make_node("Shape", ["x"], ["s"], start=-3, end=-1),
                                            helper.make_node("Gather", ["s", "zero"], ["n"]),
                                            helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
                                            helper.make_node("Concat", ["n1", "minus1"], ["t"], axis=0),
                                            helper.make_node("Reshape", ["x", "t"], ["y"])],
                                       [_vi("x", _F, [2, 3, 4])], [_vi("y", _F, [2, 12])],
                                       [_init("zero", np.array(0)), _init("zero1", np.array([0])),
                                        _init("minus1", np.array([-1]))]),
    "identity_of_input_is_output": _op(13, "Identity", ["x"], [("x", _F, [2, 2])], [("y", _F, [2, 2])]),
}


def _onnxruntime(model, feed):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


# Forms that need a native kernel change (csrc): none at present.
KERNEL_XFAIL: dict[str, str] = {}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KERNEL_XFAIL[n]))
                                  if n in KERNEL_XFAIL else n for n in sorted(FORMS)])
def test_forms_against_onnxruntime(name):
    model = FORMS[name]
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    feed = {}
    for i in model.graph.input:
        t = i.type.tensor_type
        shape, dt = [d.dim_value for d in t.shape.dim], _NP[t.elem_type]
        if dt == np.float32:
            x = np.asarray(rng.standard_normal(shape) * 3, np.float32)
            feed[i.name] = {"dynamic_quantize_all_positive": np.abs(x), "dynamic_quantize_all_negative": -np.abs(x),
                            "dynamic_quantize_all_zero": np.zeros_like(x)}.get(name, x)
        elif i.name == "i":
            feed[i.name] = np.array(-2, dt)
        else:
            info = np.iinfo(dt)
            feed[i.name] = np.asarray(rng.integers(info.min, int(info.max) + 1, shape), dt)
            if name == "div_int32_truncates":
                feed[i.name] = rng.integers(-50, 50, shape).astype(dt)
    got = pyruntime.load(model, threads=1).run(None, feed)
    want = _onnxruntime(model, feed)
    for g_, w_ in zip(got, want):
        assert g_.dtype == w_.dtype and g_.shape == w_.shape, (g_.dtype, g_.shape, w_.dtype, w_.shape)
        if np.issubdtype(g_.dtype, np.floating):
            np.testing.assert_allclose(g_, w_, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(g_, w_)


def test_broadcast_beyond_the_executors_rank_is_refused():
    model = _op(14, "Add", ["a", "b"], [("a", _F, [2, 1] * 4 + [2]), ("b", _F, [1, 2] * 4 + [1])],
                [("y", _F, [2] * 9)])
    with pytest.raises(pyruntime.UnsupportedError, match="at most 8"):
        pyruntime.load(model, threads=1).run(None, {"a": np.ones([2, 1] * 4 + [2], np.float32),
                                                    "b": np.ones([1, 2] * 4 + [1], np.float32)})


def test_shape_subgraph_with_an_op_the_plan_evaluates():
    model = _m(15, [helper.make_node("Shape", ["x"], ["s"], start=-2),
                    helper.make_node("ReduceProd", ["s"], ["p"], keepdims=1),
                    helper.make_node("Concat", ["lead", "p"], ["t"], axis=0),
                    helper.make_node("Reshape", ["x", "t"], ["y"])],
               [_vi("x", _F, [2, 3, 4])], [_vi("y", _F, [2, 12])], [_init("lead", np.array([2]))])
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(pyruntime.load(model, threads=1).run(None, {"x": x})[0], x.reshape(2, 12))
