"""2. versions and domains."""
from __future__ import annotations

import onnx

from ...errors import ModelError, UnsupportedError
from .common import (MAX_IR_VERSION, MAX_OPSET, MIN_IR_VERSION, MIN_OPSET, MS_DOMAIN, MS_OPSETS,
                     SUPPORTED_DOMAINS, _REEXPORT, _dom, _Scope)


# --------------------------------------------------------------------------------------
# 2. versions and domains
# --------------------------------------------------------------------------------------

def _check_versions(model: onnx.ModelProto) -> None:
    ir = model.ir_version
    if ir < MIN_IR_VERSION:
        raise UnsupportedError(
            f"model IR version {ir} is older than the supported range {MIN_IR_VERSION}.."
            f"{MAX_IR_VERSION}; convert it with onnx.version_converter.convert_version(model, 13) "
            "or re-export it with a recent exporter")
    if ir > MAX_IR_VERSION:
        raise UnsupportedError(
            f"model IR version {ir} is newer than the installed onnx {onnx.__version__} knows "
            f"(supported {MIN_IR_VERSION}..{MAX_IR_VERSION}); re-export it for IR "
            f"{MAX_IR_VERSION} or older, or upgrade onnx")
    seen: dict[str, int] = {}
    for e in model.opset_import:
        d = "" if e.domain == "ai.onnx" else e.domain
        if d in seen:
            raise ModelError(f"model imports domain '{_dom(e.domain)}' twice (versions {seen[d]} "
                             f"and {e.version}); keep one opset_import entry per domain; "
                             f"{_REEXPORT}")
        seen[d] = e.version
    # A model without a default-domain import is refused in _check_domains if a node needs it.
    v = seen.get("", MIN_OPSET)
    if v < MIN_OPSET or v > MAX_OPSET:
        old = v < MIN_OPSET
        raise UnsupportedError(
            f"model imports default-domain ('ai.onnx') opset {v}, "
            f"{'older' if old else 'newer'} than the supported range {MIN_OPSET}..{MAX_OPSET}; "
            + ("convert it with onnx.version_converter.convert_version(model, 13)" if old else
               f"re-export it with opset {MAX_OPSET} or older, or upgrade onnx"))
    if MS_DOMAIN in seen and seen[MS_DOMAIN] not in MS_OPSETS:
        raise UnsupportedError(
            f"model imports domain '{MS_DOMAIN}' version {seen[MS_DOMAIN]}; only version(s) "
            f"{', '.join(map(str, MS_OPSETS))} are supported; re-export with onnxruntime's "
            "quantizer, which writes version 1")


def _check_domains(model: onnx.ModelProto, scopes: list[_Scope]) -> None:
    functions = {(f.domain, f.name) for f in model.functions}
    for sc in scopes:
        for i, node in enumerate(sc.nodes):
            d = node.domain
            if (d, node.op_type) in functions:
                continue
            if d not in SUPPORTED_DOMAINS:
                raise UnsupportedError(
                    f"{sc.node_desc(i, node)} is in domain '{d}', which this runtime does not "
                    f"support (supported: 'ai.onnx' opset {MIN_OPSET}..{MAX_OPSET} and "
                    f"'{MS_DOMAIN}' version 1); replace the op with standard ONNX ops at export")
            key = "" if d == "ai.onnx" else d
            if key not in sc.opsets:
                raise ModelError(
                    f"{sc.node_desc(i, node)} uses domain '{_dom(d)}' but the model imports no "
                    f"opset for it; add an opset_import entry for '{_dom(d)}'; {_REEXPORT}")

