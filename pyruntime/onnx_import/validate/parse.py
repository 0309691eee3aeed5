"""1. parse: a path, bytes or a ModelProto into a private ModelProto."""
from __future__ import annotations

import os
import stat

import numpy as np
import onnx

from ...errors import InputError, ModelError
from .common import _REEXPORT


# --------------------------------------------------------------------------------------
# 1. parse
# --------------------------------------------------------------------------------------

def _check_int_arg(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InputError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    if len(data) == 0:
        raise ModelError(f"not a valid ONNX ModelProto: {what} is empty (0 bytes); "
                         "pass the path or bytes of an .onnx model file")
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception as exc:  # DecodeError, RuntimeWarning as error, ...
        raise ModelError(f"not a valid ONNX ModelProto: could not parse {what} ({len(data)} "
                         f"bytes) ({type(exc).__name__}: {exc}); the data is truncated, corrupt or "
                         f"not an ONNX model; {_REEXPORT}") from None
    if m.ir_version == 0 or not m.HasField("graph"):
        missing = "ir_version" if m.ir_version == 0 else "graph"
        raise ModelError(f"not a valid ONNX ModelProto: {what} parses as protobuf but has no "
                         f"{missing} field, so it is not a model (truncated, or another kind of "
                         f"file); {_REEXPORT}")
    return m


def _read_model(model, max_model_bytes: int) -> tuple[onnx.ModelProto, str | None]:
    if isinstance(model, onnx.ModelProto):
        size = model.ByteSize()
        if size > max_model_bytes:
            raise ModelError(f"the ModelProto is {size} bytes, over max_model_bytes="
                             f"{max_model_bytes}; if it is trusted, raise the cap: "
                             "pyruntime.load(..., max_model_bytes=N)")
        try:
            data = model.SerializeToString()
        except Exception as exc:
            raise ModelError(f"not a valid ONNX ModelProto: it does not serialize "
                             f"({type(exc).__name__}: {exc}); {_REEXPORT}") from None
        return _parse(data, "the ModelProto"), None
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if len(data) > max_model_bytes:
            raise ModelError(f"the model bytes are {len(data)} bytes, over max_model_bytes="
                             f"{max_model_bytes}; if the model is trusted, raise the cap: "
                             "pyruntime.load(..., max_model_bytes=N)")
        return _parse(data, "the model bytes"), None
    if isinstance(model, (str, os.PathLike)):
        try:
            path = os.fspath(model)
        except TypeError as exc:
            raise InputError(f"model path does not convert to a path: {exc}") from None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if "\x00" in path:
            raise InputError(f"model path {path!r} holds a NUL character; pass a file path")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise InputError(f"model file {path!r} does not exist; expected the path of an .onnx "
                             "file, its bytes, or an onnx.ModelProto") from None
        except OSError as exc:
            raise InputError(f"model file {path!r} cannot be opened ({exc}); check the path and "
                             "its permissions") from None
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise InputError(f"model path {path!r} is {kind}; expected the path of an .onnx file")
        if st.st_size > max_model_bytes:
            raise ModelError(f"model file {path!r} is {st.st_size} bytes, over max_model_bytes="
                             f"{max_model_bytes}; if the model is trusted, raise the cap: "
                             "pyruntime.load(..., max_model_bytes=N)")
        try:
            with open(path, "rb") as f:
                data = f.read(max_model_bytes + 1)
        except OSError as exc:
            raise InputError(f"model file {path!r} cannot be read ({exc}); check the path and "
                             "its permissions") from None
        if len(data) > max_model_bytes:  # grew since stat
            raise ModelError(f"model file {path!r} is over max_model_bytes={max_model_bytes}; "
                             "if the model is trusted, raise the cap: "
                             "pyruntime.load(..., max_model_bytes=N)")
        return _parse(data, f"file {path!r}"), os.path.dirname(os.path.abspath(path))
    raise InputError(f"model must be a path (str or os.PathLike), bytes or onnx.ModelProto, "
                     f"got {type(model).__name__}")

