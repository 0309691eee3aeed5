"""7-8. onnx's checker and strict shape inference."""
from __future__ import annotations

import re

import onnx

from ...errors import InputError, ModelError
from .common import _REEXPORT, _scopes
from .tensors import _check_type


# --------------------------------------------------------------------------------------
# 7-8. onnx's checker and strict shape inference
# --------------------------------------------------------------------------------------

_NODE_REFS = (
    re.compile(r"node name: ([^)\s,]+)"),
    re.compile(r"[Nn]ame: ([^\s,)]+) OpType: "),
    re.compile(r"node '([^']+)'"),
)


def _locate(model: onnx.ModelProto, msg: str) -> str:
    """' at node ... (op, domain, opset)' for the node named in an onnx message, if found."""
    names = []
    for rx in _NODE_REFS:
        names += rx.findall(msg)
    if not names:
        return ""
    scopes = _scopes(model)
    for name in names:
        for sc in scopes:
            for i, n in enumerate(sc.nodes):
                if n.name and n.name == name:
                    return f" (at {sc.node_desc(i, n)})"
    return ""


def _onnx_msg(exc: Exception) -> str:
    s = " ".join(str(exc).split())
    return s if s else type(exc).__name__


def _run_checker(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError, ValueError for > 2 GB, ...
        msg = _onnx_msg(exc)
        if "ShapeInferenceError" in msg or "TypeInferenceError" in msg:
            raise ModelError(f"shape inference (run by onnx.checker) found the model inconsistent"
                             f"{_locate(model, msg)}: {msg}; the declared shapes or types disagree "
                             "with what the ops compute; fix the model's declared shapes (graph "
                             f"inputs/outputs, value_info) or {_REEXPORT}") from None
        raise ModelError(f"the model fails onnx.checker{_locate(model, msg)}: {msg}; the model is "
                         f"not valid ONNX; {_REEXPORT}") from None


def infer_shapes_strict(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx shape inference with type checks, strict mode and data propagation; returns the
    model with inferred value_info. Any inconsistency raises ModelError naming what failed."""
    if not isinstance(model, onnx.ModelProto):
        raise InputError(f"infer_shapes_strict expects an onnx.ModelProto, got "
                         f"{type(model).__name__}")
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                 data_prop=True)
    except Exception as exc:
        msg = _onnx_msg(exc)
        raise ModelError(f"shape inference found the model inconsistent{_locate(model, msg)}: "
                         f"{msg}; the declared shapes or types disagree with what the ops compute; "
                         "fix the model's declared shapes (graph inputs/outputs, value_info) or "
                         f"{_REEXPORT}") from None


def _check_inferred_shapes(model: onnx.ModelProto, cap: int) -> None:
    for sc in _scopes(model):
        g = sc.graph
        if g is None:
            continue
        producer = {}
        for i, n in enumerate(sc.nodes):
            for o in n.output:
                producer.setdefault(o, i)
        for vi in list(g.value_info) + list(g.output):
            try:
                _check_type(vi.type, "", cap, inferred=True)
            except ModelError:
                by = (f", computed by {sc.node_desc(producer[vi.name])}"
                      if vi.name in producer else "")
                _check_type(vi.type, f"value '{vi.name}' (as shape inference finds it{by})"
                            f"{sc.where}", cap, inferred=True)

