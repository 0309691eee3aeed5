"""Evaluates one ONNX node on constant inputs with onnx's own reference evaluator.

Used for constant folding at load and for the shape-only subgraphs (Shape -> Gather ->
Concat -> Reshape) once input shapes are known, so their semantics are onnx's, not ours.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ..errors import ModelError
from .graph import Node


def _node_proto(node: Node) -> onnx.NodeProto:
    """The node as it stands now: passes rename inputs (Identity bypass), so the original
    proto supplies only the attributes."""
    if node.proto is not None:
        proto = onnx.NodeProto()
        proto.CopyFrom(node.proto)
        del proto.input[:]
        del proto.output[:]
        proto.input.extend(node.inputs)
        proto.output.extend(node.outputs)
        return proto
    attrs = {k: numpy_helper.from_array(np.asarray(v)) if isinstance(v, np.ndarray) else v
             for k, v in node.attrs.items()}
    return helper.make_node(node.op, node.inputs, node.outputs, domain=node.domain, **attrs)


def evaluate(node: Node, inputs: list, opsets: dict[str, int]) -> list[np.ndarray]:
    graph_inputs = []
    feeds = {}
    for name, arr in zip(node.inputs, inputs):
        if not name or arr is None or name in feeds:
            continue
        arr = np.asarray(arr)
        graph_inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
        feeds[name] = arr
    outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.outputs if o]
    graph = helper.make_graph([_node_proto(node)], "fold", graph_inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    try:
        result = ReferenceEvaluator(model).run(None, feeds)
    except Exception as exc:  # the reference evaluator raises many types
        raise ModelError(f"{node.label()} could not be evaluated on its constant inputs: {exc}") from exc
    return [np.asarray(r) for r in result]
