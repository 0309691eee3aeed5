"""Shared by the check stages: supported ranges, message tails, data types, naming nodes
in messages, graph scopes."""
from __future__ import annotations

from typing import Iterator

import onnx
from onnx import AttributeProto, TensorProto

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

