"""Export a quantized student with its gates as a standard QDQ ONNX model that follows the
DESIGN.md early-exit contract (`pyruntime.exits`, version 1).

Graph (opset 13): input float32 [N,1,28,28] in [0,1] -> QuantizeLinear (u8, 1/255) ->
per conv: DequantizeLinear -> Conv (weights DequantizeLinear(int8, per-channel axis 0),
bias DequantizeLinear(int32, per-channel)) -> Relu -> QuantizeLinear (u8); MaxPool between
DequantizeLinear and QuantizeLinear of the same scale; the final head is GlobalAveragePool
-> QuantizeLinear -> DequantizeLinear -> Flatten -> QuantizeLinear -> DequantizeLinear ->
Gemm (float32 output); a gate is MaxPool (or GlobalAveragePool) -> Flatten -> Gemm the same
way. Output 0 is the final head; one output per gate follows, same shape and dtype.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
# The ops (default domain) the exporter may write. The test checks exported models against
# this list; it should check against the runtime's own supported-op list once there is one.
SUPPORTED_EXPORT_OPS = frozenset({
    "Conv", "Relu", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm", "Add",
    "QuantizeLinear", "DequantizeLinear",
})
EXITS_KEY = "pyruntime.exits"


class _G:
    def __init__(self):
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, base):
        self._n += 1
        return f"{base}_{self._n}"

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op, inputs, name, **attrs):
        out = name
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}:{name}", **attrs))
        return out

    def q(self, x, scale_name, zp_name, out):
        return self.node("QuantizeLinear", [x, scale_name, zp_name], out)

    def dq(self, x, scale_name, zp_name, out, axis=None):
        kw = {"axis": axis} if axis is not None else {}
        return self.node("DequantizeLinear", [x, scale_name, zp_name], out, **kw)

    def act_qparams(self, key, scale):
        s = self.init(f"{key}.scale", np.array(scale, dtype=np.float32))
        z = self.init(f"{key}.zp", np.array(0, dtype=np.uint8))
        return s, z

    def qlayer(self, layer, s_in, prefix, x_dq, kind):
        wq, sw, bq, sb = layer.int_params(s_in)
        w = self.dq(self.init(f"{prefix}.weight_q", wq), self.init(f"{prefix}.weight_scale", sw),
                    self.init(f"{prefix}.weight_zp", np.zeros_like(wq, shape=sw.shape)), f"{prefix}.weight", axis=0)
        b = self.dq(self.init(f"{prefix}.bias_q", bq), self.init(f"{prefix}.bias_scale", sb),
                    self.init(f"{prefix}.bias_zp", np.zeros(sb.shape, np.int32)), f"{prefix}.bias", axis=0)
        if kind == "conv":
            return self.node("Conv", [x_dq, w, b], f"{prefix}.out", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                             strides=[1, 1], dilations=[1, 1], group=1)
        return self.node("Gemm", [x_dq, w, b], f"{prefix}.out", alpha=1.0, beta=1.0, transB=1)


def export_qdq(q, path=None, *, rules=None, thresholds=None, final_name="logits", producer="pyruntime.train",
               doc: str = "") -> onnx.ModelProto:
    """Writes the QStudent `q` (calibrated, see quantize.py) with its gates. rules/thresholds
    per gate go into the exits metadata (with macs_fraction from the graph's own MACs)."""
    import torch  # noqa: F401  (q holds torch tensors)

    sc = q.scales_numpy()
    g = _G()
    K = len(q.gate_cfgs)
    s_in, z_in = g.act_qparams("input", sc["input"])
    x = g.q("input", s_in, z_in, "input.q")
    x = g.dq(x, s_in, z_in, "input.dq")
    s_prev_val = sc["input"]
    s_prev, z_prev = s_in, z_in
    stage_out = {}
    for name in q.stage_names:
        for key, conv in q._convs_of(name):
            qn = key.replace("_conv", ".conv")
            import torch
            y = g.qlayer(conv, torch.tensor(s_prev_val), qn, x, "conv")
            y = g.node("Relu", [y], f"{qn}.relu")
            s_prev, z_prev = g.act_qparams(qn, sc[qn])
            s_prev_val = sc[qn]
            y = g.q(y, s_prev, z_prev, f"{qn}.q")
            x = g.dq(y, s_prev, z_prev, f"{qn}.dq")
        if q.pool_after[name]:
            y = g.node("MaxPool", [x], f"{name}.pool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])
            y = g.q(y, s_prev, z_prev, f"{name}.pool.q")
            x = g.dq(y, s_prev, z_prev, f"{name}.pool.dq")
        stage_out[name] = (x, s_prev, z_prev, s_prev_val)

    def head(x_dq, s, z, s_val, layers, prefix, out_name, gap_key):
        import torch
        if gap_key is not None:  # global average pool, requantized
            y = g.node("GlobalAveragePool", [x_dq], f"{prefix}.gap")
            s, z = g.act_qparams(gap_key, sc[gap_key])
            s_val = sc[gap_key]
            y = g.q(y, s, z, f"{prefix}.gap.q")
            x_dq = g.dq(y, s, z, f"{prefix}.gap.dq")
        y = g.node("Flatten", [x_dq], f"{prefix}.flat", axis=1)
        y = g.q(y, s, z, f"{prefix}.flat.q")
        x_dq = g.dq(y, s, z, f"{prefix}.flat.dq")
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            y = g.qlayer(layer, torch.tensor(s_val), f"{prefix}.fc{i}", x_dq, "linear")
            if last:
                g.nodes[-1].output[0] = out_name
                return out_name
            y = g.node("Relu", [y], f"{prefix}.fc{i}.relu")
            hk = f"{prefix}.hidden"
            s, z = g.act_qparams(hk, sc[hk])
            s_val = sc[hk]
            y = g.q(y, s, z, f"{hk}.q")
            x_dq = g.dq(y, s, z, f"{hk}.dq")

    last = q.stage_names[-1]
    x, s, z, sv = stage_out[last]
    head(x, s, z, sv, [q.head], "head", final_name, f"{last}.gap")
    gate_names = []
    for k, (gc, kern, layers) in enumerate(zip(q.gate_cfgs, q.gate_kernels, q.gate_layers)):
        x, s, z, sv = stage_out[gc.stage]
        out = f"gate{k}_{gc.stage}"
        gate_names.append(out)
        if kern:
            y = g.node("MaxPool", [x], f"gate{k}.pool", kernel_shape=[kern, kern], strides=[kern, kern],
                       pads=[0, 0, 0, 0])
            y = g.q(y, s, z, f"gate{k}.pool.q")
            x = g.dq(y, s, z, f"gate{k}.pool.dq")
            head(x, s, z, sv, list(layers), f"gate{k}", out, None)
        else:
            head(x, s, z, sv, list(layers), f"gate{k}", out, f"gate{k}.gap")

    C = q.cfg.num_classes
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", C]) for n in [final_name] + gate_names]
    graph = helper.make_graph(g.nodes, "pyruntime_student", [inp], outs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
    model.ir_version = 8
    model.doc_string = doc
    if rules is None:
        rules = ["margin"] * K
    if thresholds is None:
        thresholds = [1.0e9] * K
    set_exits(model, rules, thresholds)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, str(path))
    return model


# ----------------------------------------------------------------------------- MACs / contract
def _shapes(model: onnx.ModelProto) -> dict:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def node_macs(model: onnx.ModelProto) -> list[int]:
    """Per node, multiply-accumulates per sample: Conv = output elements x (C_in/group) x
    kernel area; Gemm/MatMul = output features x K. Every other op counts 0."""
    shapes = _shapes(model)
    out = []
    for n in model.graph.node:
        m = 0
        if n.op_type == "Conv":
            ws, ys = shapes[n.input[1]], shapes[n.output[0]]
            m = int(np.prod(ys[1:])) * int(np.prod(ws[1:]))
        elif n.op_type == "Gemm":
            ws = shapes[n.input[1]]
            transB = next((a.i for a in n.attribute if a.name == "transB"), 0)
            kdim, ndim = (ws[1], ws[0]) if transB else (ws[0], ws[1])
            m = int(kdim) * int(ndim)
        elif n.op_type == "MatMul":
            ws = shapes[n.input[1]]
            m = int(ws[-2]) * int(ws[-1])
        out.append(m)
    return out


def ancestors(model: onnx.ModelProto, output: str) -> set[int]:
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    seen, stack = set(), [output]
    while stack:
        t = stack.pop()
        i = producer.get(t)
        if i is None or i in seen:
            continue
        seen.add(i)
        stack.extend(model.graph.node[i].input)
    return seen


def macs_fractions(model: onnx.ModelProto, gate_outputs: list[str]) -> list[float]:
    """Gate k: MACs of the union of the ancestors of gates 0..k's outputs over the whole graph's."""
    macs = node_macs(model)
    total = sum(macs)
    union, fr = set(), []
    for name in gate_outputs:
        union |= ancestors(model, name)
        fr.append(sum(macs[i] for i in union) / total)
    return fr


def set_exits(model: onnx.ModelProto, rules, thresholds):
    """Writes metadata_props['pyruntime.exits'] for the graph's outputs 1.. as gates."""
    outs = [o.name for o in model.graph.output]
    gate_outs = outs[1:]
    if len(rules) != len(gate_outs) or len(thresholds) != len(gate_outs):
        raise ValueError(f"{len(gate_outs)} gates but {len(rules)} rules / {len(thresholds)} thresholds")
    fr = macs_fractions(model, gate_outs)
    meta = {"version": 1, "final": outs[0],
            "exits": [{"output": o, "rule": r, "threshold": float(t), "macs_fraction": float(f)}
                      for o, r, t, f in zip(gate_outs, rules, thresholds, fr)]}
    validate_exits(meta, outs)
    del model.metadata_props[:]
    helper.set_model_props(model, {EXITS_KEY: json.dumps(meta)})
    return meta


def validate_exits(meta: dict, outputs: list[str]):
    """Checks the metadata against the contract; raises ValueError."""
    if meta.get("version") != 1:
        raise ValueError("pyruntime.exits version must be 1")
    if meta.get("final") != outputs[0]:
        raise ValueError("final must name output 0")
    prev = 0.0
    for e in meta["exits"]:
        if e["output"] not in outputs[1:]:
            raise ValueError(f"exit output {e['output']!r} is not a graph output")
        if e["rule"] not in ("margin", "max"):
            raise ValueError(f"unknown rule {e['rule']!r}")
        if not np.isfinite(e["threshold"]):
            raise ValueError("thresholds in the file must be finite")
        f = e["macs_fraction"]
        if not (prev < f < 1.0):
            raise ValueError(f"macs_fraction must increase strictly inside (0, 1): {f}")
        prev = f


def read_exits(model: onnx.ModelProto) -> dict:
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props[EXITS_KEY])


def op_inventory(model: onnx.ModelProto) -> dict:
    """{op_type: sorted attribute names used} for the report."""
    inv: dict[str, set] = {}
    for n in model.graph.node:
        inv.setdefault(n.op_type, set()).update(a.name for a in n.attribute)
    return {k: sorted(v) for k, v in sorted(inv.items())}


def run_onnxruntime(model_or_path, x, bs=1000, optimized: bool = False):
    """All outputs of the model on x with onnxruntime, concatenated over batches.

    optimized=False (the default) disables onnxruntime's graph optimizations, so the QDQ
    graph runs as written (DequantizeLinear -> float op -> QuantizeLinear): the standard
    semantics, which our torch simulation and pyruntime's exact int32 kernels follow.
    With optimized=True onnxruntime fuses QDQ into its int8 kernels, whose AVX2 u8*s8 path
    saturates int16 pair sums (see DESIGN.md, Integer exactness), so its answers differ.
    """
    import onnxruntime as ort

    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = [[] for _ in names]
    for i in range(0, len(x), bs):
        r = sess.run(names, {"input": np.ascontiguousarray(x[i:i + bs], dtype=np.float32)})
        for k, v in enumerate(r):
            outs[k].append(v)
    return [np.concatenate(o) for o in outs]
