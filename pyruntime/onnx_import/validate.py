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

import math
import os
import re
import stat
from typing import Iterator

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from ..errors import InputError, ModelError, UnsupportedError

__all__ = ["load_model_proto", "validate_quantization", "infer_shapes_strict",
           "MIN_IR_VERSION", "MAX_IR_VERSION", "MIN_OPSET", "MAX_OPSET", "SUPPORTED_DOMAINS"]

MIN_IR_VERSION = 3
MAX_IR_VERSION = int(onnx.IR_VERSION)
MIN_OPSET = 10
MAX_OPSET = int(onnx.defs.onnx_opset_version())
MS_DOMAIN = "com.microsoft"
MS_OPSETS = (1,)
SUPPORTED_DOMAINS = ("", "ai.onnx", MS_DOMAIN)

_RAISE_CAP = ("if the model is genuine and trusted, raise the cap: "
              "pyruntime.load(..., max_tensor_elements=N)")
_REEXPORT = "re-export or repair the model at its source"


# --------------------------------------------------------------------------------------
# data types: bits per element in raw_data, and the typed field (and elements per entry)
# --------------------------------------------------------------------------------------

def _dt(name: str):
    return getattr(TensorProto, name, None)


_BITS: dict[int, int] = {}
_FIELD: dict[int, tuple[str, float]] = {}  # data_type -> (typed field, entries per element)
for _names, _bits, _field, _per in (
    (("FLOAT",), 32, "float_data", 1),
    (("COMPLEX64",), 64, "float_data", 2),
    (("DOUBLE",), 64, "double_data", 1),
    (("COMPLEX128",), 128, "double_data", 2),
    (("INT64",), 64, "int64_data", 1),
    (("UINT32",), 32, "uint64_data", 1),
    (("UINT64",), 64, "uint64_data", 1),
    (("INT32",), 32, "int32_data", 1),
    (("INT16", "UINT16", "FLOAT16", "BFLOAT16"), 16, "int32_data", 1),
    (("INT8", "UINT8", "BOOL", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
      "FLOAT8E5M2FNUZ", "FLOAT8E8M0"), 8, "int32_data", 1),
    (("FLOAT6E2M3", "FLOAT6E3M2"), 6, "int32_data", 1),
    (("INT4", "UINT4", "FLOAT4E2M1"), 4, "int32_data", 0.5),
    (("INT2", "UINT2"), 2, "int32_data", 0.25),
):
    for _n in _names:
        _v = _dt(_n)
        if _v is not None:
            _BITS[_v] = _bits
            _FIELD[_v] = (_field, _per)
_FIELD[TensorProto.STRING] = ("string_data", 1)
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                 "uint64_data")
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_INT8_TYPES = {TensorProto.UINT8, TensorProto.INT8}
# every data type a Q/DQ zero point may have in some opset
_QDQ_ZP_TYPES = {v for v in (_dt(n) for n in (
    "UINT8", "INT8", "UINT16", "INT16", "INT32", "UINT4", "INT4", "UINT2", "INT2",
    "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0",
    "FLOAT4E2M1")) if v is not None}


def _type_name(dt: int) -> str:
    try:
        return TensorProto.DataType.Name(dt).lower()
    except ValueError:
        return f"<unknown data type {dt}>"


def _raw_nbytes(data_type: int, count: int) -> int:
    return (count * _BITS[data_type] + 7) // 8


# --------------------------------------------------------------------------------------
# naming things in messages
# --------------------------------------------------------------------------------------

def _dom(domain: str) -> str:
    return "ai.onnx" if domain in ("", "ai.onnx") else domain


def _opset_of(opsets: dict, domain: str):
    if domain in ("", "ai.onnx"):
        return opsets.get("", opsets.get("ai.onnx", "not imported"))
    return opsets.get(domain, "not imported")


class _Scope:
    """One graph (or model-local function body): its nodes, where it sits, its opsets."""

    __slots__ = ("graph", "nodes", "where", "opsets", "function")

    def __init__(self, graph, nodes, where: str, opsets: dict, function=None):
        self.graph = graph
        self.nodes = nodes
        self.where = where  # "" for the main graph, else " in graph 'x' of node ..."
        self.opsets = opsets
        self.function = function

    def node_desc(self, idx: int, node=None) -> str:
        if node is None:
            node = self.nodes[idx]
        name = f"node '{node.name}' (#{idx}, " if node.name else f"node #{idx} ("
        return (f"{name}op {node.op_type}, domain '{_dom(node.domain)}', "
                f"opset {_opset_of(self.opsets, node.domain)}){self.where}")


def _graph_attrs(node) -> Iterator[tuple[str, onnx.GraphProto]]:
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH or a.HasField("g"):
            yield a.name, a.g
        for i, g in enumerate(a.graphs):
            yield f"{a.name}[{i}]", g


def _scopes(model: onnx.ModelProto) -> list[_Scope]:
    """The main graph, every subgraph (If/Loop/Scan bodies), every function body."""
    model_opsets = _opset_map(model.opset_import)
    out: list[_Scope] = []

    def visit(scope: _Scope):
        out.append(scope)
        for i, node in enumerate(scope.nodes):
            for aname, g in _graph_attrs(node):
                desc = scope.node_desc(i, node)
                visit(_Scope(g, g.node, f" in graph attribute '{aname}' of {desc}", scope.opsets,
                             scope.function))

    visit(_Scope(model.graph, model.graph.node, "", model_opsets))
    for f in model.functions:
        fo = _opset_map(f.opset_import) if len(f.opset_import) else model_opsets
        visit(_Scope(None, f.node, f" in model-local function '{f.domain}:{f.name}'", fo, f))
    return out


def _opset_map(entries) -> dict:
    m = {}
    for e in entries:
        m.setdefault("" if e.domain == "ai.onnx" else e.domain, e.version)
    return m


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


# --------------------------------------------------------------------------------------
# 3. tensors and declared shapes
# --------------------------------------------------------------------------------------

def _dims_count(dims, what: str, cap: int, kind=ModelError) -> int:
    for i, d in enumerate(dims):
        if d < 0:
            raise ModelError(f"{what} has a negative dimension {d} at axis {i} (dims "
                             f"{list(dims)}); dimensions must be >= 0; {_REEXPORT}")
    count = math.prod(int(d) for d in dims)
    if count > cap:
        raise kind(f"{what} has dims {list(dims)}, that is {count} elements, over the element "
                   f"cap max_tensor_elements={cap}; {_RAISE_CAP}")
    return count


def _check_tensor(t: TensorProto, what: str, cap: int, external: list) -> None:
    dt = t.data_type
    if dt not in _FIELD:
        raise ModelError(f"{what} has data type {_type_name(dt)} ({dt}), which is not a valid "
                         f"ONNX tensor type; {_REEXPORT}")
    count = _dims_count(t.dims, what, cap)
    if t.HasField("segment"):
        raise UnsupportedError(f"{what} is a segment of a larger tensor (TensorProto.segment), "
                               "which this runtime does not read; save the tensor whole")
    populated = [f for f in _TYPED_FIELDS if len(getattr(t, f))]
    has_raw = t.HasField("raw_data")
    if t.data_location == TensorProto.EXTERNAL:
        if has_raw or populated:
            raise ModelError(f"{what} says its data is external but also holds data inline "
                             f"({'raw_data' if has_raw else populated[0]}); {_REEXPORT}")
        external.append((t, what, count))
        return
    if len(t.external_data):
        raise ModelError(f"{what} has external_data entries but data_location is not EXTERNAL; "
                         f"{_REEXPORT}")
    field, per = _FIELD[dt]
    if has_raw:
        if dt == TensorProto.STRING:
            raise ModelError(f"{what} is a string tensor stored in raw_data; strings must be in "
                             f"string_data; {_REEXPORT}")
        if populated:
            raise ModelError(f"{what} holds both raw_data and {populated[0]}; exactly one storage "
                             f"is allowed; {_REEXPORT}")
        want = _raw_nbytes(dt, count)
        if len(t.raw_data) != want:
            raise ModelError(f"{what} ({_type_name(dt)}, dims {list(t.dims)}) has raw_data of "
                             f"{len(t.raw_data)} bytes, expected {count} elements x "
                             f"{_BITS[dt] / 8:g} bytes = {want} bytes; the file is corrupt or "
                             f"hostile; {_REEXPORT}")
        return
    wrong = [f for f in populated if f != field]
    if wrong:
        raise ModelError(f"{what} ({_type_name(dt)}) stores data in {wrong[0]}, which is not the "
                         f"field for {_type_name(dt)} ({field}); {_REEXPORT}")
    want = math.ceil(count * per)
    have = len(getattr(t, field))
    if have != want:
        raise ModelError(f"{what} ({_type_name(dt)}, dims {list(t.dims)}) has {have} entries in "
                         f"{field}, expected {want} for {count} elements; the file is corrupt or "
                         f"hostile; {_REEXPORT}")


def _check_sparse(st, what: str, cap: int, external: list) -> None:
    _dims_count(st.dims, f"{what} (dense shape)", cap)
    _check_tensor(st.values, f"{what} (values)", cap, external)
    _check_tensor(st.indices, f"{what} (indices)", cap, external)


def _check_type(tp, what: str, cap: int, inferred: bool = False) -> None:
    """Declared dims: none negative, the fixed ones within the cap. Inferred dims (onnx may
    write -1 for an unknown size) are held to the cap only."""
    kind = tp.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        tt = getattr(tp, kind)
        if tt.HasField("shape"):
            fixed = []
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    if d.dim_value < 0 and inferred:
                        continue
                    if d.dim_value < 0:
                        raise ModelError(f"{what} declares a negative dimension {d.dim_value} at "
                                         f"axis {i}; dimensions must be >= 0 (use a symbolic "
                                         f"dim_param for an unknown size); {_REEXPORT}")
                    fixed.append(d.dim_value)
            n = math.prod(fixed)
            if n > cap:
                raise ModelError(f"{what} declares fixed dimensions {fixed}, that is {n} "
                                 f"elements, over the element cap max_tensor_elements={cap}; "
                                 f"{_RAISE_CAP}")
    elif kind == "sequence_type":
        _check_type(tp.sequence_type.elem_type, what, cap, inferred)
    elif kind == "optional_type":
        _check_type(tp.optional_type.elem_type, what, cap, inferred)
    elif kind == "map_type":
        _check_type(tp.map_type.value_type, what, cap, inferred)


def _check_all_tensors(scopes: list[_Scope], cap: int) -> list:
    external: list = []
    for sc in scopes:
        g = sc.graph
        if g is not None:
            for t in g.initializer:
                _check_tensor(t, f"initializer '{t.name}'{sc.where}", cap, external)
            for st in g.sparse_initializer:
                _check_sparse(st, f"sparse initializer '{st.values.name}'{sc.where}", cap, external)
            for kind, vis in (("graph input", g.input), ("graph output", g.output),
                              ("value_info", g.value_info)):
                for vi in vis:
                    _check_type(vi.type, f"{kind} '{vi.name}'{sc.where}", cap)
        for i, node in enumerate(sc.nodes):
            for a in node.attribute:
                if a.HasField("t"):
                    _check_tensor(a.t, f"tensor attribute '{a.name}' of {sc.node_desc(i, node)}",
                                  cap, external)
                for k, t in enumerate(a.tensors):
                    _check_tensor(t, f"tensor attribute '{a.name}[{k}]' of "
                                     f"{sc.node_desc(i, node)}", cap, external)
                if a.HasField("sparse_tensor"):
                    _check_sparse(a.sparse_tensor, f"sparse tensor attribute '{a.name}' of "
                                  f"{sc.node_desc(i, node)}", cap, external)
                for k, st in enumerate(a.sparse_tensors):
                    _check_sparse(st, f"sparse tensor attribute '{a.name}[{k}]' of "
                                  f"{sc.node_desc(i, node)}", cap, external)
                if a.HasField("tp"):
                    _check_type(a.tp, f"type attribute '{a.name}' of {sc.node_desc(i, node)}", cap)
    return external


# --------------------------------------------------------------------------------------
# 4. external data
# --------------------------------------------------------------------------------------

_EXT_KEYS = ("location", "offset", "length", "checksum")
_DIGITS = re.compile(r"[0-9]{1,19}")


def _ext_fields(t: TensorProto, what: str) -> dict:
    info: dict[str, str] = {}
    for e in t.external_data:
        if e.key not in _EXT_KEYS:
            raise ModelError(f"{what} has an unknown external_data key {e.key!r} (allowed: "
                             f"{', '.join(_EXT_KEYS)}); {_REEXPORT}")
        if e.key in info:
            raise ModelError(f"{what} has external_data key {e.key!r} twice; {_REEXPORT}")
        info[e.key] = e.value
    if not info.get("location"):
        raise ModelError(f"{what} has external data without a 'location'; {_REEXPORT}")
    for k in ("offset", "length"):
        if k in info and not _DIGITS.fullmatch(info[k]):
            raise ModelError(f"{what} has external_data {k}={info[k]!r}; expected a non-negative "
                             f"decimal integer; {_REEXPORT}")
    return info


def _resolve_location(base_dir: str, location: str, what: str) -> str:
    bad = None
    if "\x00" in location:
        bad = "holds a NUL character"
    elif "\\" in location:
        bad = "holds a backslash (locations are POSIX paths relative to the model's directory)"
    elif os.path.isabs(location) or re.match(r"^[A-Za-z]:", location):
        bad = "is an absolute path"
    else:
        parts = location.split("/")
        if ".." in parts:
            bad = "contains '..' (it would leave the model's directory)"
        elif not [p for p in parts if p not in ("", ".")]:
            bad = "names no file"
    if bad:
        raise ModelError(f"{what} has external data location {location!r}, which {bad}; external "
                         "data must be a relative path inside the model's directory; "
                         f"{_REEXPORT}")
    root = os.path.realpath(base_dir)
    cur = root
    for p in location.split("/"):
        if p in ("", "."):
            continue
        cur = os.path.join(cur, p)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise ModelError(f"{what} has external data location {location!r}, but {cur!r} does "
                             "not exist; put the data file next to the model (in its directory)"
                             ) from None
        except OSError as exc:
            raise ModelError(f"{what}: external data location {location!r} cannot be examined "
                             f"({exc}); check the files next to the model") from None
        if stat.S_ISLNK(st.st_mode):
            raise ModelError(f"{what} has external data location {location!r}, and {cur!r} is a "
                             "symbolic link; symlinks are refused because they can point outside "
                             "the model's directory; copy the real file into the directory")
    if not stat.S_ISREG(os.lstat(cur).st_mode):
        raise ModelError(f"{what} has external data location {location!r}, which is not a "
                         "regular file; point it at the data file saved with the model")
    real = os.path.realpath(cur)
    if os.path.commonpath([real, root]) != root:  # defence in depth
        raise ModelError(f"{what} has external data location {location!r} resolving outside the "
                         f"model's directory {root!r}; {_REEXPORT}")
    return cur


def _load_external(external: list, base_dir: str | None, allow: bool, max_bytes: int,
                   proto_bytes: int) -> None:
    """Reads every external tensor into raw_data after checking where it points; the protobuf
    and its external data together may hold at most max_bytes."""
    if not external:
        return
    t0, what0, _ = external[0]
    loc0 = next((e.value for e in t0.external_data if e.key == "location"), "?")
    if not allow:
        raise ModelError(f"{what0} stores its data in an external file ({loc0!r}); external data "
                         "is not allowed; pass allow_external_data=True to pyruntime.load() if the "
                         "model and its directory are trusted")
    if base_dir is None:
        raise ModelError(f"{what0} stores its data in an external file ({loc0!r}), but the model "
                         "was given as bytes or a ModelProto, so there is no directory to resolve "
                         "it from; load the model from its file path")
    total = proto_bytes
    fds: dict[str, tuple[int, int]] = {}
    try:
        for t, what, count in external:
            info = _ext_fields(t, what)
            path = _resolve_location(base_dir, info["location"], what)
            if path not in fds:
                flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                try:
                    fd = os.open(path, flags)
                except OSError as exc:
                    raise ModelError(f"{what}: external data file {info['location']!r} cannot be "
                                     f"opened ({exc}); check the files next to the model") from None
                st = os.fstat(fd)
                fds[path] = (fd, st.st_size)
                if not stat.S_ISREG(st.st_mode):
                    raise ModelError(f"{what}: external data {info['location']!r} is not a "
                                     "regular file; point it at the data file saved with the model")
            fd, size = fds[path]
            if t.data_type == TensorProto.STRING:
                raise ModelError(f"{what} is a string tensor with external data, which ONNX does "
                                 f"not allow; {_REEXPORT}")
            want = _raw_nbytes(t.data_type, count)
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else size - offset
            if offset > size or length < 0 or offset + length > size:
                raise ModelError(
                    f"{what} has external data offset={offset} length={length} in "
                    f"{info['location']!r}, outside the file ({size} bytes); the data file is "
                    f"truncated or the model is hostile; {_REEXPORT}")
            if length != want:
                raise ModelError(
                    f"{what} ({_type_name(t.data_type)}, dims {list(t.dims)}) has external data "
                    f"length {length} bytes, expected {count} elements x "
                    f"{_BITS[t.data_type] / 8:g} bytes = {want} bytes; {_REEXPORT}")
            total += length
            if total > max_bytes:
                raise ModelError(f"the model with its external data adds up to more than "
                                 f"max_model_bytes={max_bytes} (at {what}); if the model is "
                                 "trusted, raise "
                                 "the cap: pyruntime.load(..., max_model_bytes=N)")
            data = os.pread(fd, length, offset) if length else b""
            if len(data) != length:
                raise ModelError(f"{what}: reading {length} bytes at offset {offset} of "
                                 f"{info['location']!r} returned {len(data)} bytes (file changed "
                                 "while loading?); load again")
            t.raw_data = data
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
    finally:
        for fd, _ in fds.values():
            os.close(fd)


# --------------------------------------------------------------------------------------
# 5. structure: single assignment, every read defined earlier
# --------------------------------------------------------------------------------------

def _find_cycle(nodes) -> list[int] | None:
    """Indices of nodes on one cycle, or None."""
    producer = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer.setdefault(o, i)
    state = [0] * len(nodes)  # 0 new, 1 on stack, 2 done
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack = [(start, iter([producer[x] for x in nodes[start].input if x in producer]))]
        path = [start]
        state[start] = 1
        while stack:
            i, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[i] = 2
                stack.pop()
                path.pop()
            elif state[nxt] == 1:
                return path[path.index(nxt):]
            elif state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter([producer[x] for x in nodes[nxt].input if x in producer])))
    return None


def _check_structure(scope: _Scope, outer: frozenset, all_scopes_by_graph: dict) -> None:
    g, nodes = scope.graph, scope.nodes
    own: set[str] = set()
    if g is not None:
        for kind, names in (("graph input", [v.name for v in g.input]),
                            ("initializer", [t.name for t in g.initializer]),
                            ("sparse initializer", [s.values.name for s in g.sparse_initializer])):
            seen = set()
            for n in names:
                if n in seen:
                    raise ModelError(f"{kind} '{n}'{scope.where} is declared twice; names must be "
                                     f"unique; {_REEXPORT}")
                seen.add(n)
            own |= seen
        init_names = {t.name for t in g.initializer}
        if init_names & {s.values.name for s in g.sparse_initializer}:
            n = sorted(init_names & {s.values.name for s in g.sparse_initializer})[0]
            raise ModelError(f"'{n}'{scope.where} is both an initializer and a sparse "
                             f"initializer; {_REEXPORT}")
    else:
        own |= set(scope.function.input)
    defined = set(outer) | own
    producer: dict[str, int] = {}
    later = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                later.setdefault(o, i)
    for i, node in enumerate(nodes):
        for name in node.input:
            if not name or name in defined:
                continue
            if name in later and later[name] >= i:
                cyc = _find_cycle(nodes)
                j = later[name]
                if cyc is not None and i in cyc:
                    chain = " -> ".join(f"'{nodes[k].name or '#' + str(k)}'" for k in cyc)
                    how = f"the nodes form a cycle ({chain} -> back)"
                elif cyc is not None:
                    chain = " -> ".join(f"'{nodes[k].name or '#' + str(k)}'" for k in cyc)
                    how = f"the graph has a cycle ({chain} -> back)"
                else:
                    how = "the nodes are not in topological order"
                raise ModelError(
                    f"{scope.node_desc(i, node)} reads '{name}', which no earlier node, graph "
                    f"input or initializer defines (a cycle or an undefined input): it is "
                    f"produced only later by {scope.node_desc(j)}; {how}; ONNX graphs must be "
                    f"acyclic and topologically sorted; {_REEXPORT}")
            raise ModelError(
                f"{scope.node_desc(i, node)} reads '{name}', which no earlier node, graph input or "
                f"initializer defines (a cycle or an undefined input); {_REEXPORT}")
        # subgraphs see what is defined so far
        for _, sub in _graph_attrs(node):
            child = all_scopes_by_graph.get(id(sub))
            if child is not None:
                _check_structure(child, frozenset(defined), all_scopes_by_graph)
        for o in node.output:
            if not o:
                continue
            if o in own or o in producer:
                first = (scope.node_desc(producer[o]) if o in producer else
                         "a graph input or initializer")
                raise ModelError(f"{scope.node_desc(i, node)} writes '{o}', which {first} already "
                                 "defines; every name must be assigned once (SSA); "
                                 f"{_REEXPORT}")
            producer[o] = i
            defined.add(o)
    if g is not None:
        for vo in g.output:
            if vo.name not in defined:
                raise ModelError(f"graph output '{vo.name}'{scope.where} is produced by no node, "
                                 f"graph input or initializer; {_REEXPORT}")
    elif scope.function is not None:
        for o in scope.function.output:
            if o not in defined:
                raise ModelError(f"output '{o}'{scope.where} is produced by no node of the "
                                 f"function; {_REEXPORT}")


def _check_all_structure(scopes: list[_Scope]) -> None:
    by_graph = {id(sc.graph): sc for sc in scopes if sc.graph is not None}
    for sc in scopes:
        # roots only: the main graph and function bodies; subgraphs are visited from their node
        if sc.where == "" or (sc.function is not None and sc.graph is None):
            _check_structure(sc, frozenset(), by_graph)


# --------------------------------------------------------------------------------------
# 6. quantization
# --------------------------------------------------------------------------------------

# One quantized operand: (data ref, scale input index or None, zero-point input index or None,
# role). Data ref: ("i", k) input k or ("o", k) output k. Role drives per-axis length checks:
#   "qdq"      QuantizeLinear/DequantizeLinear: 1-D scale of length L>1 runs along `axis`
#   "scalar"   per-tensor only: one element
#   "rows"     1-D per row of a matrix: L == shape[-2]
#   "cols"     1-D per column: L == shape[-1]
#   "out_ch"   1-D per output channel of a conv weight: L == shape[0]
#   "gemm_b"   QGemm B: per column of op(B): L == N
#   None       no length rule beyond scale/zero-point agreement
_QUANT_OPS: dict[tuple[str, str], list] = {
    ("", "QuantizeLinear"): [(("o", 0), 1, 2, "qdq")],
    ("", "DequantizeLinear"): [(("i", 0), 1, 2, "qdq")],
    ("", "QLinearMatMul"): [(("i", 0), 1, 2, "rows"), (("i", 3), 4, 5, "cols"),
                            (("o", 0), 6, 7, "rows")],
    ("", "QLinearConv"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "out_ch"),
                          (("o", 0), 6, 7, "scalar")],
    ("", "MatMulInteger"): [(("i", 0), None, 2, "rows"), (("i", 1), None, 3, "cols")],
    ("", "ConvInteger"): [(("i", 0), None, 2, "scalar"), (("i", 1), None, 3, "out_ch")],
    ("", "DynamicQuantizeLinear"): [],
    (MS_DOMAIN, "QuantizeLinear"): [(("o", 0), 1, 2, "qdq")],
    (MS_DOMAIN, "DequantizeLinear"): [(("i", 0), 1, 2, "qdq")],
    (MS_DOMAIN, "QGemm"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "gemm_b"),
                           (("o", 0), 7, 8, "scalar")],
    (MS_DOMAIN, "QLinearConv"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "out_ch"),
                                 (("o", 0), 6, 7, "scalar")],
    (MS_DOMAIN, "QLinearAdd"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "scalar"),
                                (("o", 0), 6, 7, "scalar")],
    (MS_DOMAIN, "QLinearMul"): [(("i", 0), 1, 2, "scalar"), (("i", 3), 4, 5, "scalar"),
                                (("o", 0), 6, 7, "scalar")],
    (MS_DOMAIN, "QLinearWhere"): [(("i", 1), 2, 3, "scalar"), (("i", 4), 5, 6, "scalar"),
                                  (("o", 0), 7, 8, "scalar")],
    (MS_DOMAIN, "DynamicQuantizeMatMul"): [(("i", 1), 2, 3, "cols")],
    (MS_DOMAIN, "MatMulIntegerToFloat"): [(("i", 0), 2, 4, None), (("i", 1), 3, 5, "cols")],
    (MS_DOMAIN, "QAttention"): [(("i", 0), 3, 6, "scalar"), (("i", 1), 4, 7, None)],
}
for _op in ("QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearLeakyRelu",
            "QLinearSigmoid", "QLinearSoftmax", "QLinearReduceMean"):
    _QUANT_OPS[(MS_DOMAIN, _op)] = [(("i", 0), 1, 2, "scalar"), (("o", 0), 3, 4, "scalar")]
_QLINEAR_CONCAT = (MS_DOMAIN, "QLinearConcat")  # Y_scale, Y_zp, then (X, X_scale, X_zp)...
# ops whose zero points must be uint8 / int8 (onnx's T1/T2/T3 and the contrib schemas)
_INT8_ZP_OPS = {k for k in _QUANT_OPS if k[1] not in ("QuantizeLinear", "DequantizeLinear")}
_INT8_ZP_OPS.add(_QLINEAR_CONCAT)


class _Info:
    """What is known about the values of one graph scope: types, shapes, constants."""

    def __init__(self, parent: "_Info | None" = None):
        self.types: dict[str, int] = dict(parent.types) if parent else {}
        self.shapes: dict[str, tuple | None] = dict(parent.shapes) if parent else {}
        self.consts: dict[str, object] = dict(parent.consts) if parent else {}  # name -> proto

    def add_vi(self, vi) -> None:
        tp = vi.type
        if tp.WhichOneof("value") != "tensor_type":
            return
        tt = tp.tensor_type
        if tt.elem_type:
            self.types.setdefault(vi.name, tt.elem_type)
        if tt.HasField("shape"):
            self.shapes.setdefault(vi.name, tuple(
                d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim))

    def add_tensor(self, name: str, t: TensorProto) -> None:
        self.types[name] = t.data_type
        self.shapes[name] = tuple(int(d) for d in t.dims)
        self.consts[name] = t


def _const_array(proto) -> np.ndarray | None:
    """A constant's value (TensorProto or Constant's AttributeProto), or None if unreadable."""
    try:
        if isinstance(proto, TensorProto):
            if proto.data_location == TensorProto.EXTERNAL:
                return None
            return numpy_helper.to_array(proto)
        a = proto
        if a.type == AttributeProto.FLOAT:
            return np.array(a.f, np.float32)
        if a.type == AttributeProto.FLOATS:
            return np.array(list(a.floats), np.float32)
        if a.type == AttributeProto.INT:
            return np.array(a.i, np.int64)
        if a.type == AttributeProto.INTS:
            return np.array(list(a.ints), np.int64)
    except Exception:
        return None
    return None


_CONST_ATTR_TYPES = {"value_float": (TensorProto.FLOAT, False),
                     "value_floats": (TensorProto.FLOAT, True),
                     "value_int": (TensorProto.INT64, False),
                     "value_ints": (TensorProto.INT64, True)}


def _add_constant_node(info: _Info, node) -> None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return
    out = node.output[0]
    for a in node.attribute:
        if a.name == "value" and a.HasField("t"):
            info.add_tensor(out, a.t)
        elif a.name in _CONST_ATTR_TYPES:
            dt, vec = _CONST_ATTR_TYPES[a.name]
            info.types[out] = dt
            n = len(a.floats) if a.name == "value_floats" else len(a.ints)
            info.shapes[out] = (n,) if vec else ()
            info.consts[out] = a


def _attr_int(node, name: str, default, desc: str):
    for a in node.attribute:
        if a.name == name:
            if a.type != AttributeProto.INT:
                raise ModelError(f"{desc} has attribute '{name}' of type "
                                 f"{AttributeProto.AttributeType.Name(a.type)}, expected INT; "
                                 f"{_REEXPORT}")
            return a.i
    return default


def _numel(shape) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return math.prod(shape)


def _check_scale(node, desc, info: _Info, sname: str, role_desc: str) -> None:
    t = info.types.get(sname)
    if t is not None and t not in _FLOAT_TYPES:
        raise ModelError(f"{desc}: scale '{sname}' (of {role_desc}) has type {_type_name(t)}; "
                         f"a scale must be a float tensor (float, float16 or bfloat16); {_REEXPORT}")
    if sname not in info.consts:
        return
    arr = _const_array(info.consts[sname])
    if arr is None:
        return
    vals = np.asarray(arr, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(vals) | (vals <= 0)
    if bad.any():
        k = int(np.argmax(bad))
        v = vals[k]
        what = "NaN" if np.isnan(v) else ("infinite" if np.isinf(v) else
                                          ("zero" if v == 0 else "negative"))
        at = f" at index {k}" if vals.size > 1 else ""
        raise ModelError(f"{desc}: scale '{sname}' (of {role_desc}) is {what} ({float(v)!r}{at}); "
                         "every quantization scale must be finite and > 0; fix the scale (recalibrate "
                         "and re-quantize the model)")


def _check_zp_type(node, key, desc, info: _Info, zname: str, dname: str | None,
                   data_is_output: bool, opset: int, role_desc: str) -> int | None:
    zt = info.types.get(zname)
    dt = info.types.get(dname) if dname else None
    if zt is not None:
        allowed = _INT8_TYPES if key in _INT8_ZP_OPS else _QDQ_ZP_TYPES
        if key[1] == "QuantizeLinear" and zt == TensorProto.INT32:
            allowed = allowed - {TensorProto.INT32}
        if zt not in allowed:
            exp = " or ".join(sorted(_type_name(x) for x in allowed)) if len(allowed) < 4 else \
                "uint8 or int8 (or, from newer opsets, int16/uint16/int4/uint4/float8)"
            raise ModelError(f"{desc}: zero point '{zname}' (of {role_desc}) has type "
                             f"{_type_name(zt)}, expected {exp}; {_REEXPORT}")
    if zt is not None and dt is not None and zt != dt:
        if data_is_output:
            why = (f"the zero point's type decides the output type, but output '{dname}' is "
                   f"declared {_type_name(dt)}")
        else:
            why = f"it must have the type of input '{dname}', which is {_type_name(dt)}"
        raise ModelError(f"{desc}: zero point '{zname}' (of {role_desc}) is {_type_name(zt)}; "
                         f"{why}; "
                         f"make the two types agree; {_REEXPORT}")
    if (key[1] == "DequantizeLinear" and (zt or dt) == TensorProto.INT32 and zname in info.consts):
        arr = _const_array(info.consts[zname])
        if arr is not None and np.any(arr != 0):
            raise ModelError(f"{desc}: zero point '{zname}' of an int32 input must be 0, got "
                             f"{arr.reshape(-1)[np.flatnonzero(arr)[0]]}; {_REEXPORT}")
    return zt


def _check_q_output_type(node, desc, info: _Info, zname: str | None, opset: int) -> None:
    out = node.output[0] if len(node.output) else ""
    ot = info.types.get(out)
    od = _attr_int(node, "output_dtype", 0, desc)
    zt = info.types.get(zname) if zname else None
    if od and zt is not None and od != zt:
        raise ModelError(f"{desc}: attribute output_dtype={_type_name(od)} disagrees with the zero "
                         f"point '{zname}' of type {_type_name(zt)}; they must match; "
                         f"{_REEXPORT}")
    if not zname and not od and ot is not None and ot != TensorProto.UINT8:
        raise ModelError(f"{desc}: without a zero point or output_dtype the output is uint8, but "
                         f"'{out}' is declared {_type_name(ot)}; add a zero point of the wanted "
                         f"type; {_REEXPORT}")
    if od and ot is not None and od != ot:
        raise ModelError(f"{desc}: attribute output_dtype={_type_name(od)} but output '{out}' is "
                         f"declared {_type_name(ot)}; {_REEXPORT}")


def _check_lengths(node, key, desc, info: _Info, sname, zname, dname, role, opset) -> None:
    sshape = info.shapes.get(sname) if sname else None
    zshape = info.shapes.get(zname) if zname else None
    sn, zn = _numel(sshape), _numel(zshape)
    if sn is not None and zn is not None and sn != zn:
        raise ModelError(f"{desc}: scale '{sname}' has {sn} element(s) (shape {list(sshape)}) but "
                         f"zero point '{zname}' has {zn} (shape {list(zshape)}); they must have "
                         f"the same shape; {_REEXPORT}")
    shape = sshape if sshape is not None else zshape
    name = sname if sshape is not None else zname
    if shape is None:
        return
    n = _numel(shape)
    what = "scale" if name == sname else "zero point"
    dshape = info.shapes.get(dname) if dname else None
    if role == "qdq":
        rank = len(shape)
        block = _attr_int(node, "block_size", 0, desc)
        if rank == 0 or (rank == 1 and n == 1 and not block):
            return  # per tensor
        std = key[0] == ""
        if std and opset < 13:
            raise ModelError(f"{desc}: {what} '{name}' has shape {list(shape)}, but before opset "
                             "13 QuantizeLinear/DequantizeLinear take a scalar scale only "
                             "(per-axis needs opset >= 13); convert the model to opset 13 or "
                             f"higher; {_REEXPORT}")
        axis = _attr_int(node, "axis", 1, desc)
        if dshape is None:
            return
        r = len(dshape)
        if not -r <= axis < r:
            raise ModelError(f"{desc}: axis={axis} is out of range for input of rank {r} (shape "
                             f"{list(dshape)}); expected -{r} <= axis < {r}; {_REEXPORT}")
        ax = axis % r
        dim = dshape[ax]
        if block:
            if rank != r:
                raise ModelError(f"{desc}: blocked {what} '{name}' has rank {rank}, expected the "
                                 f"input's rank {r}; {_REEXPORT}")
            for i, (s, d) in enumerate(zip(shape, dshape)):
                if s is None or d is None:
                    continue
                want = -(-d // block) if i == ax else d
                if s != want:
                    raise ModelError(f"{desc}: blocked {what} '{name}' has shape {list(shape)}, "
                                     f"expected {want} at axis {i} for input shape {list(dshape)} "
                                     f"and block_size={block}; {_REEXPORT}")
            return
        if rank != 1:
            raise ModelError(f"{desc}: {what} '{name}' has shape {list(shape)}; expected a scalar "
                             f"(per tensor) or a 1-D tensor (per axis); {_REEXPORT}")
        if dim is not None and n is not None and n != dim:
            raise ModelError(f"{desc}: per-axis {what} '{name}' has {n} elements, but input "
                             f"'{dname}' has {dim} along axis {axis} (shape {list(dshape)}); the "
                             "lengths must match; re-quantize with the right axis, or fix the "
                             "axis attribute")
        return
    if n is None or n == 1:
        return
    if role == "scalar":
        raise ModelError(f"{desc}: {what} '{name}' has {n} elements (shape {list(shape)}), but "
                         f"this operand is quantized per tensor: expected a scalar; {_REEXPORT}")
    if role is None:
        return
    if len(shape) != 1:
        if role in ("out_ch", "gemm_b"):
            raise ModelError(f"{desc}: {what} '{name}' has shape {list(shape)}; expected a scalar "
                             f"or a 1-D tensor; {_REEXPORT}")
        return  # MatMulInteger allows N-D zero points ([D1, D2, M, 1]); not checked here
    if dshape is None:
        return
    want, axis_name = None, ""
    if role == "rows" and len(dshape) >= 2:
        want, axis_name = dshape[-2], "rows"
    elif role == "cols" and len(dshape) >= 2:
        want, axis_name = dshape[-1], "columns"
    elif role == "out_ch" and len(dshape) >= 1:
        want, axis_name = dshape[0], "output channels"
    elif role == "gemm_b" and len(dshape) == 2:
        tb = _attr_int(node, "transB", 0, desc)
        want, axis_name = (dshape[0] if tb else dshape[1]), "columns of op(B)"
    if want is not None and n != want:
        raise ModelError(f"{desc}: {what} '{name}' has {n} elements but '{dname}' has {want} "
                         f"{axis_name} (shape {list(dshape)}); a 1-D {what} must have one entry "
                         f"per {'column' if role in ('cols', 'gemm_b') else axis_name.rstrip('s')}"
                         f"; {_REEXPORT}")


def _check_quant_node(sc: _Scope, i: int, node, info: _Info) -> None:
    d = "" if node.domain == "ai.onnx" else node.domain
    key = (d, node.op_type)
    if key == _QLINEAR_CONCAT:
        groups = [(("o", 0), 0, 1, "scalar")]
        groups += [(("i", k), k + 1, k + 2, "scalar") for k in range(2, len(node.input), 3)]
    else:
        groups = _QUANT_OPS.get(key)
        if groups is None:
            return
    opset = _opset_of(sc.opsets, node.domain)
    opset = opset if isinstance(opset, int) else 0
    desc = sc.node_desc(i, node)

    def name_at(ref):
        lst = node.input if ref[0] == "i" else node.output
        return lst[ref[1]] if ref[1] < len(lst) and lst[ref[1]] else None

    for ref, s_idx, z_idx, role in groups:
        dname = name_at(ref)
        sname = node.input[s_idx] if s_idx is not None and s_idx < len(node.input) else ""
        zname = node.input[z_idx] if z_idx is not None and z_idx < len(node.input) else ""
        role_desc = f"{'output' if ref[0] == 'o' else 'input'} {ref[1]}"
        if dname:
            role_desc += f" '{dname}'"
        if sname:
            _check_scale(node, desc, info, sname, role_desc)
        if zname:
            _check_zp_type(node, key, desc, info, zname, dname, ref[0] == "o", opset, role_desc)
        if key[1] == "QuantizeLinear":
            _check_q_output_type(node, desc, info, zname or None, opset)
        # the per-axis rules of Q/DQ look at the quantized operand's shape: x for both
        shape_ref = node.input[0] if role == "qdq" and len(node.input) else dname
        _check_lengths(node, key, desc, info, sname or None, zname or None, shape_ref, role, opset)


def _quant_scope(sc: _Scope, info: _Info, by_graph: dict) -> None:
    g = sc.graph
    if g is not None:
        for vis in (g.input, g.output, g.value_info):
            for vi in vis:
                info.add_vi(vi)
        for t in g.initializer:
            info.add_tensor(t.name, t)
    for node in sc.nodes:
        _add_constant_node(info, node)
    for i, node in enumerate(sc.nodes):
        _check_quant_node(sc, i, node, info)
        for _, sub in _graph_attrs(node):
            child = by_graph.get(id(sub))
            if child is not None:
                _quant_scope(child, _Info(info), by_graph)


def validate_quantization(model: onnx.ModelProto) -> None:
    """Checks every quantized op's scales and zero points (see the module docstring).

    Constant scales (initializers or Constant nodes) must be finite and > 0; zero points must
    have the dtype the op requires and match the quantized tensor's type; scale and zero point
    must have the same length; a 1-D (per-axis) scale must have one entry per element of the
    quantized axis where that dimension is known (from declared or inferred shapes). Raises
    ModelError naming the node, op, domain, opset and the bad value."""
    if not isinstance(model, onnx.ModelProto):
        raise InputError(f"validate_quantization expects an onnx.ModelProto, got "
                         f"{type(model).__name__}")
    scopes = _scopes(model)
    by_graph = {id(sc.graph): sc for sc in scopes if sc.graph is not None}
    try:
        _quant_scope(scopes[0], _Info(), by_graph)
        for sc in scopes:
            if sc.graph is None and sc.function is not None:
                _quant_scope(sc, _Info(), by_graph)
    except RecursionError:
        raise ModelError("the model's graphs are nested too deeply to validate; "
                         f"{_REEXPORT}") from None


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
