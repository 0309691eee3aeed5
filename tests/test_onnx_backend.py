"""ONNX conformance: the backend node tests shipped in the installed onnx package.

`onnx.backend.test.BackendTest` runs every node test of the op set of this issue and the next
through an adapter whose `prepare` is `pyruntime.load(model, threads=1)` and whose `run` is
`Model.run(None, feed)` with the test's inputs in the order of the graph inputs. Expected
outputs are compared with each test's own tolerances (rtol 1e-3, atol 1e-7 by default).

Selection: INCLUDE holds one regex per op (every node test of the op, every dtype variant).
Only variants outside the runtime's dtypes (float32, uint8, int8, int32, int64, bool) or
outside inference (training mode) or function expansions (`_expanded`) are excluded, each
with its reason in EXCLUDED. The conv / pool tests are expected failures (XFAIL_OPS) until
their kernels land with issue 4 (not strict: those that already pass show as XPASS; empty
XFAIL_OPS once they all do).

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

XFAIL_OPS = {"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "GlobalAveragePool"}
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
