"""The importer's graph: ONNX nodes with decoded attributes and constants as numpy arrays.

Passes rewrite it; lower.py turns it into a native Program for concrete input shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class Node:
    op: str
    domain: str
    inputs: list[str]  # '' marks an absent optional input
    outputs: list[str]
    attrs: dict
    name: str
    opset: int
    fusions: list[str] = field(default_factory=list)  # what passes folded into this node
    proto: onnx.NodeProto | None = None  # the original node, for constant evaluation

    def label(self) -> str:
        dom = self.domain or "ai.onnx"
        return f"node '{self.name}' ({self.op}, domain {dom}, opset {self.opset})"


@dataclass
class ValueInfo:
    name: str
    dtype: np.dtype
    shape: list  # ints, or str for symbolic / unknown dims

    def as_tuple(self):
        return (self.name, self.dtype, list(self.shape))


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    consts: dict[str, np.ndarray]
    opsets: dict[str, int]
    value_shapes: dict[str, list] = field(default_factory=dict)  # from shape inference, for ranks

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        use: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    use.setdefault(i, []).append(n)
        return use

    def output_names(self) -> set[str]:
        return {o.name for o in self.outputs}


def _dims(type_proto) -> list:
    if not type_proto.tensor_type.HasField("shape"):
        return []
    dims = []
    for i, d in enumerate(type_proto.tensor_type.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or f"unk_{i}")
    return dims


def _value_info(vi) -> ValueInfo:
    elem = vi.type.tensor_type.elem_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(np.float32)
    return ValueInfo(vi.name, dtype, _dims(vi.type))


def from_model(model: onnx.ModelProto) -> Graph:
    g = model.graph
    opsets = {(o.domain or ""): o.version for o in model.opset_import}
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    init_names = set(consts)
    inputs = [_value_info(v) for v in g.input if v.name not in init_names]
    outputs = [_value_info(v) for v in g.output]
    nodes = []
    for i, n in enumerate(g.node):
        dom = "" if n.domain in DEFAULT_DOMAINS else n.domain
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        for k, v in list(attrs.items()):
            if isinstance(v, onnx.TensorProto):
                attrs[k] = numpy_helper.to_array(v)
            elif isinstance(v, bytes):
                attrs[k] = v.decode()
        nodes.append(Node(n.op_type, dom, list(n.input), list(n.output), attrs, n.name or f"#{i}",
                          opsets.get(dom, 1), proto=n))
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        shapes[vi.name] = _dims(vi.type)
    return Graph(nodes, inputs, outputs, consts, opsets, shapes)
