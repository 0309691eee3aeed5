"""Load-time import and validation of ONNX models, before any compute.

`load_model_proto` is the loader's first step. It refuses, with a typed error, anything
that is not a well-formed model inside the range this runtime supports, and anything that
could make a later stage (onnx's checker, shape inference, the planner) allocate without
bound, read outside the model's directory, hang or crash:

1. parse: a path (size checked before reading, regular files only), bytes or a ModelProto
   (re-serialized, so it is a private copy and protobuf's nesting limit applies);
2. versions: IR 3..onnx.IR_VERSION; default-domain opset 10..onnx.defs.onnx_opset_version();
   'com.microsoft' version 1; a node in any other domain is unsupported;
3. every tensor (initializers, sparse initializers, tensors in node attributes, subgraphs and
   model-local functions included): known data type, dims >= 0, element count <= the cap,
   raw_data length == count * item size, typed-field length == count, one storage only;
   declared value_info / input / output shapes: no negative dim, fixed part <= the cap;
4. external data: refused unless allowed; then the location must be a relative path inside
   the model's directory (no '..', no absolute path, no symlink on the way, a regular file),
   offset/length inside the file and length == the tensor's size; read by hand;
5. structure: each node reads only names that a graph input, an initializer or an earlier
   node defines (names the node on a cycle or an undefined input); single assignment;
6. quantization (`validate_quantization`): constant scales finite and > 0, zero-point dtypes
   as the op requires, scale / zero-point lengths agree, per-axis lengths match the axis;
7. onnx.checker.check_model(full_check=True), after the size checks;
8. strict shape inference with type checks and data propagation (`infer_shapes_strict`);
   inferred shapes are held to the element cap; the quantization checks run again with
   the inferred shapes.

Every message names the node (name and index), its op, domain and opset where there is one,
says what is wrong and what was expected, and what to do next.
"""
from __future__ import annotations

import onnx

from ...errors import InputError, ModelError
from .checker import _check_inferred_shapes, _run_checker, infer_shapes_strict
from .common import (MAX_IR_VERSION, MAX_OPSET, MIN_IR_VERSION, MIN_OPSET, SUPPORTED_DOMAINS,
                     _REEXPORT, _scopes)
from .external import _load_external
from .parse import _check_int_arg, _read_model
from .quant import validate_quantization
from .structure import _check_all_structure
from .tensors import _check_all_tensors
from .versions import _check_domains, _check_versions

__all__ = ["load_model_proto", "validate_quantization", "infer_shapes_strict",
           "MIN_IR_VERSION", "MAX_IR_VERSION", "MIN_OPSET", "MAX_OPSET", "SUPPORTED_DOMAINS"]


# --------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------

def load_model_proto(model, *, allow_external_data: bool = False,
                     max_tensor_elements: int = 1 << 28,
                     max_model_bytes: int = 1 << 31) -> tuple[onnx.ModelProto, str | None]:
    """Parses and validates a model before any compute.

    model: a path (str / os.PathLike), bytes, or onnx.ModelProto (never modified).
    Returns (validated model with inferred shapes and external data, if allowed, loaded into
    it; the model's directory, or None for bytes / ModelProto).
    Raises ModelError (invalid or hostile), UnsupportedError (valid but outside the supported
    IR / opset / domains), InputError (wrong argument type, missing file)."""
    if not isinstance(allow_external_data, bool):
        raise InputError(f"allow_external_data must be a bool, got {allow_external_data!r}")
    cap = _check_int_arg("max_tensor_elements", max_tensor_elements)
    max_bytes = _check_int_arg("max_model_bytes", max_model_bytes)
    proto, base_dir = _read_model(model, max_bytes)
    try:
        _check_versions(proto)
        scopes = _scopes(proto)
        _check_domains(proto, scopes)
        external = _check_all_tensors(scopes, cap)
        if external:
            _load_external(external, base_dir, allow_external_data, max_bytes, proto.ByteSize())
        _check_all_structure(scopes)
        validate_quantization(proto)  # before the checker: its messages name the node better
        _run_checker(proto)
        inferred = infer_shapes_strict(proto)
        _check_inferred_shapes(inferred, cap)
        validate_quantization(inferred)  # again, now with inferred shapes for per-axis lengths
    except RecursionError:
        raise ModelError("the model's graphs are nested too deeply to validate; "
                         f"{_REEXPORT}") from None
    return inferred, base_dir
