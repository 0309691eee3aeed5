"""Shared builders for tests/test_model.py, tests/test_model_parity.py and bench/bench_models.py.

Everything is built programmatically with fixed seeds; nothing is downloaded.

- `fashion_mnist(split)`: Fashion-MNIST from the Debian IDX files (flattened, [0, 1] float32),
  or None when they are not installed (callers then fall back to seeded random inputs and
  say so).
- `mlp_weights()`: the 784-512-256-10 MLP student. Trained for a few seconds with numpy
  mini-batch SGD on Fashion-MNIST when the files are present (a trained net has real
  top-1 margins, so top-1 parity is meaningful); else deterministic He-initialised weights.
- `mlp_fp32_model(weights)`: MatMul + Add + Relu, fp32, input "x" [N, 784] with a symbolic
  batch dimension "N", output "logits" [N, 10].
- `MLPZoo(directory)`: writes the fp32 model and its onnxruntime `quantize_static` variants
  (QDQ U8S8/S8S8 per-tensor/per-channel, QOperator U8S8 per-tensor/per-channel).
- Reference runners: onnxruntime sessions and an exact numpy interpreter of the
  (QDQ or QOperator) graphs (`NumpyRef`), used where onnxruntime's U8S8 kernels saturate.
- `first_divergence(...)`: the layer-by-layer comparison that finds where two runtimes
  start to differ, by exposing every intermediate tensor as a graph output.
"""
from __future__ import annotations

import gzip
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FMNIST_DIR = Path(os.environ.get("PYRUNTIME_DATA") or "/usr/share/datasets/fashion-mnist")
FMNIST_MISSING = (f"Fashion-MNIST IDX files not found in {FMNIST_DIR} (apt-get install dataset-fashion-mnist, "
                  "or set PYRUNTIME_DATA); using seeded random inputs instead")

IN_DIM, H1, H2, OUT_DIM = 784, 512, 256, 10
SEED = 20240611

# name -> (quant_format, activation type, per_channel)
VARIANTS = {
    "qdq_u8s8_pt": ("QDQ", "u8", False),
    "qdq_u8s8_pc": ("QDQ", "u8", True),
    "qdq_s8s8_pt": ("QDQ", "s8", False),
    "qdq_s8s8_pc": ("QDQ", "s8", True),
    "qop_u8s8_pt": ("QOperator", "u8", False),
    "qop_u8s8_pc": ("QOperator", "u8", True),
}


# ---------------------------------------------------------------------------------------
# data


def _read_idx(path: Path) -> np.ndarray:
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


_FMNIST_CACHE: dict = {}


def fashion_mnist(split: str = "test"):
    """(x float32 [N, 784] in [0, 1], y int64 [N]) for split 'train' or 'test', or None."""
    if split in _FMNIST_CACHE:
        return _FMNIST_CACHE[split]
    stem = {"train": "train", "test": "t10k"}[split]
    out = None
    for suffix in (".gz", ""):
        ip = FMNIST_DIR / f"{stem}-images-idx3-ubyte{suffix}"
        lp = FMNIST_DIR / f"{stem}-labels-idx1-ubyte{suffix}"
        if ip.is_file() and lp.is_file():
            x = _read_idx(ip).reshape(-1, IN_DIM).astype(np.float32) / np.float32(255.0)
            out = (np.ascontiguousarray(x), _read_idx(lp).astype(np.int64))
            break
    _FMNIST_CACHE[split] = out
    return out


def eval_inputs(n: int = 1000, seed: int = SEED):
    """(x [n, 784] float32, source description): Fashion-MNIST test images when present,
    else seeded uniform [0, 1) noise."""
    fm = fashion_mnist("test")
    if fm is not None:
        return np.ascontiguousarray(fm[0][:n]), f"Fashion-MNIST test[:{n}]"
    return np.random.default_rng(seed).random((n, IN_DIM), dtype=np.float32), f"seeded uniform noise ({n})"


def calibration_inputs(n: int = 256, seed: int = SEED + 1) -> np.ndarray:
    fm = fashion_mnist("train")
    if fm is not None:
        idx = np.random.default_rng(seed).permutation(len(fm[0]))[:n]
        return np.ascontiguousarray(fm[0][np.sort(idx)])
    return np.random.default_rng(seed).random((n, IN_DIM), dtype=np.float32)


# ---------------------------------------------------------------------------------------
# the MLP student


_WEIGHTS_CACHE: dict = {}


def mlp_weights(seed: int = SEED, train_subset: int = 8000, ridge: float = 1.0):
    """({'w1','b1','w2','b2','w3','b3'} float32, description), deterministic for a seed.

    The two hidden layers are seeded He-initialised random features; when Fashion-MNIST
    is installed the classifier layer is then fitted in closed form (ridge regression of
    one-hot labels on the 256 hidden features of `train_subset` training images, an
    "extreme learning machine"). That takes ~1-2 s even on a loaded 2-core machine (SGD
    took a minute there) and gives a real classifier (~0.8 test top-1) with realistic
    top-1 margins, so top-1 parity measures something. Without the data set the weights
    stay random (with small random biases)."""
    key = (seed, train_subset, ridge)
    if key in _WEIGHTS_CACHE:
        return _WEIGHTS_CACHE[key]
    rng = np.random.default_rng(seed)
    dims = [(IN_DIM, H1), (H1, H2), (H2, OUT_DIM)]
    W = [(rng.standard_normal(d, dtype=np.float32) * np.float32(np.sqrt(2.0 / d[0]))) for d in dims]
    B = [rng.standard_normal(d[1], dtype=np.float32) * np.float32(0.05) for d in dims]
    fm = fashion_mnist("train")
    if fm is None:
        desc = "seeded random He-init weights (no Fashion-MNIST)"
    else:
        x_all, y_all = fm
        idx = np.sort(rng.permutation(len(x_all))[:train_subset])
        x, y = x_all[idx], y_all[idx]
        h = np.maximum(np.maximum(x @ W[0] + B[0], 0) @ W[1] + B[1], 0).astype(np.float64)
        h1 = np.concatenate([h, np.ones((len(h), 1))], 1)
        t = np.eye(OUT_DIM)[y] * 2.0 - 1.0
        sol = np.linalg.solve(h1.T @ h1 + ridge * np.eye(h1.shape[1]), h1.T @ t)
        W[2], B[2] = sol[:-1].astype(np.float32), sol[-1].astype(np.float32)
        xt, yt = fashion_mnist("test")
        acc = float((mlp_numpy({"w1": W[0], "b1": B[0], "w2": W[1], "b2": B[1], "w3": W[2], "b3": B[2]},
                               xt[:2000]).argmax(1) == yt[:2000]).mean())
        desc = (f"random hidden layers + ridge-fitted classifier on {train_subset} Fashion-MNIST images, "
                f"test top-1 {acc:.3f} (first 2000)")
    w = {"w1": W[0], "b1": B[0], "w2": W[1], "b2": B[1], "w3": W[2], "b3": B[2]}
    w = {k: np.ascontiguousarray(v, np.float32) for k, v in w.items()}
    _WEIGHTS_CACHE[key] = (w, desc)
    return w, desc


def mlp_numpy(w: dict, x: np.ndarray) -> np.ndarray:
    h1 = np.maximum(x @ w["w1"] + w["b1"], 0)
    h2 = np.maximum(h1 @ w["w2"] + w["b2"], 0)
    return h2 @ w["w3"] + w["b3"]


def mlp_fp32_model(w: dict, batch: int | str = "N", opset: int = 13) -> onnx.ModelProto:
    """MatMul + Add + Relu x2, MatMul + Add; input 'x' [batch, 784], output 'logits'."""
    nodes, inits = [], []
    prev = "x"
    for i in (1, 2, 3):
        inits += [numpy_helper.from_array(w[f"w{i}"], f"W{i}"), numpy_helper.from_array(w[f"b{i}"], f"B{i}")]
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"mm{i}"], name=f"fc{i}_matmul"))
        out = "logits" if i == 3 else f"fc{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], [out], name=f"fc{i}_add"))
        if i < 3:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"fc{i}_relu"))
            prev = f"relu{i}"
    graph = helper.make_graph(nodes, "mlp_student",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, IN_DIM])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, OUT_DIM])],
                              initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="model_zoo_helpers")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def relu_model(shape=(1, 16)) -> onnx.ModelProto:
    """One Relu node on a fixed-shape fp32 input 'x' (the per-call floor model)."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "one_relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


# ---------------------------------------------------------------------------------------
# quantization with onnxruntime


class _Reader:
    """onnxruntime CalibrationDataReader over a fixed array (batches of 32)."""

    def __init__(self, x: np.ndarray, batch: int = 32):
        self._batches = [x[i:i + batch] for i in range(0, len(x), batch)]
        self._it = iter(self._batches)

    def get_next(self):
        b = next(self._it, None)
        return None if b is None else {"x": b}

    def rewind(self):
        self._it = iter(self._batches)


def quantize(fp32_path: str | Path, out_path: str | Path, variant: str, calib: np.ndarray) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    fmt, act, per_channel = VARIANTS[variant]

    class Reader(_Reader, CalibrationDataReader):
        pass

    import logging
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # "consider pre-processing" advice, twice per call
    try:
        quantize_static(str(fp32_path), str(out_path), Reader(calib),
                        quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                        per_channel=per_channel,
                        activation_type=QuantType.QUInt8 if act == "u8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8)
    finally:
        logging.disable(previous)
    return Path(out_path)


class MLPZoo:
    """The fp32 MLP and its six quantized variants, written under `directory`."""

    def __init__(self, directory: str | Path | None = None):
        self.dir = Path(directory or tempfile.mkdtemp(prefix="pyrt_mlp_zoo_"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.weights, self.weights_desc = mlp_weights()
        self.fp32 = mlp_fp32_model(self.weights)
        self.paths = {"fp32": self.dir / "mlp_fp32.onnx"}
        onnx.save(self.fp32, str(self.paths["fp32"]))
        calib = calibration_inputs()
        for v in VARIANTS:
            self.paths[v] = quantize(self.paths["fp32"], self.dir / f"mlp_{v}.onnx", v, calib)

    def path(self, variant: str) -> Path:
        return self.paths[variant]

    def proto(self, variant: str) -> onnx.ModelProto:
        return onnx.load(str(self.paths[variant]))


# ---------------------------------------------------------------------------------------
# reference runners


def ort_session(model, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def ort_run(model, x: np.ndarray, outputs=None, threads: int = 1) -> list[np.ndarray]:
    return ort_session(model, threads).run(outputs, {"x": x})


def _rhe(v):
    return np.rint(v)  # numpy rounds half to even


def quantize_ref(x: np.ndarray, scale, zp, axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / s) + zp); NaN -> zp (DESIGN.md)."""
    zp = np.asarray(zp)
    dt = zp.dtype
    lo, hi = (0, 255) if dt == np.uint8 else (-128, 127)
    s = np.asarray(scale, np.float32)
    if s.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        s, zp = s.reshape(shape), zp.reshape(shape)
    q = _rhe(x.astype(np.float32) / s)
    q = np.where(np.isnan(q), 0, q)
    return np.clip(q + zp.astype(np.float64), lo, hi).astype(dt)


def dequantize_ref(q: np.ndarray, scale, zp=None, axis: int = 1) -> np.ndarray:
    s = np.asarray(scale, np.float32)
    z = np.zeros(1, np.int32) if zp is None else np.asarray(zp).astype(np.int32)
    if s.size > 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return ((q.astype(np.int32) - z).astype(np.float32) * s).astype(np.float32)


class NumpyRef:
    """An exact numpy interpreter of the ops these MLP graphs contain (QDQ and QOperator):
    integer matmuls accumulate in int64 (no saturation), float ops in float32 in the graph's
    order. `run(x, outputs)` returns the requested tensors (any intermediate name allowed)."""

    def __init__(self, model: onnx.ModelProto):
        self.m = model
        self.consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def run(self, x: np.ndarray, outputs=None) -> list[np.ndarray]:
        env = dict(self.consts)
        env[self.m.graph.input[0].name] = x
        for n in self.m.graph.node:
            if n.op_type == "Constant":
                continue
            ins = [env[i] if i else None for i in n.input]
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            env[n.output[0]] = self._op(n.op_type, ins, attrs)
        names = outputs or [o.name for o in self.m.graph.output]
        return [env[k] for k in names]

    @staticmethod
    def _op(op, ins, attrs):
        axis = int(attrs.get("axis", 1))
        if op == "QuantizeLinear":
            zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), np.uint8)
            return quantize_ref(ins[0], ins[1], zp, axis)
        if op == "DequantizeLinear":
            return dequantize_ref(ins[0], ins[1], ins[2] if len(ins) > 2 else None, axis)
        if op == "MatMul":
            # float64 accumulation: products of float32 values are exact in float64, so this
            # is the (practically) exact real-valued result, rounded once to float32.
            return (ins[0].astype(np.float64) @ ins[1].astype(np.float64)).astype(np.float32)
        if op == "Add":
            return ins[0] + ins[1]
        if op == "Relu":
            return np.maximum(ins[0], np.zeros((), ins[0].dtype))
        if op == "QLinearMatMul":
            a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = ins
            acc = _int_matmul(a.astype(np.int64) - a_zp.astype(np.int64),
                              b.astype(np.int64) - b_zp.astype(np.int64).reshape(1, -1))
            real = acc.astype(np.float64) * (np.float64(a_s) * b_s.astype(np.float64).reshape(1, -1)) / np.float64(y_s)
            return np.clip(_rhe(real) + y_zp.astype(np.int64), *_range(y_zp.dtype)).astype(y_zp.dtype)
        if op == "MatMulInteger":
            a, b = ins[0], ins[1]
            a_zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros(1, np.int64)
            b_zp = ins[3] if len(ins) > 3 and ins[3] is not None else np.zeros(1, np.int64)
            acc = _int_matmul(a.astype(np.int64) - int(np.asarray(a_zp).reshape(-1)[0]),
                              b.astype(np.int64) - np.asarray(b_zp).astype(np.int64).reshape(1, -1))
            return acc.astype(np.int32)
        if op == "QLinearAdd":  # com.microsoft
            a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = ins
            real = dequantize_ref(a, a_s, a_zp).astype(np.float64) + dequantize_ref(b, b_s, b_zp).astype(np.float64)
            return np.clip(_rhe(real / np.float64(y_s)) + y_zp.astype(np.int64), *_range(y_zp.dtype)).astype(y_zp.dtype)
        if op == "Cast":
            return ins[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
        if op == "Mul":
            return ins[0] * ins[1]
        if op == "DynamicQuantizeLinear":
            raise NotImplementedError(op)
        raise NotImplementedError(f"NumpyRef has no {op}")


def _int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer matmul through float64 BLAS (numpy's int64 matmul has no BLAS): every
    partial sum is an integer below 2^53, so float64 represents it exactly."""
    bound = a.shape[-1] * float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0))
    assert bound < 2.0 ** 53, "integer matmul could lose exactness in float64"
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)


def _range(dt):
    return (0, 255) if np.dtype(dt) == np.uint8 else (-128, 127)


# ---------------------------------------------------------------------------------------
# quantization facts of a model


def output_step(model: onnx.ModelProto) -> float:
    """The output quantization step: the scale of the last QuantizeLinear / DequantizeLinear
    (or QOperator y_scale / DequantizeLinear) that feeds the graph output."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    name = model.graph.output[0].name
    seen = 0
    while name in prod and seen < 50:
        n = prod[name]
        seen += 1
        if n.op_type in ("DequantizeLinear", "QuantizeLinear"):
            return float(np.asarray(consts[n.input[1]]).reshape(-1)[0])
        if n.op_type in ("QLinearMatMul",):
            return float(consts[n.input[6]].reshape(-1)[0])
        if n.op_type in ("QLinearAdd",):
            return float(consts[n.input[6]].reshape(-1)[0])
        name = n.input[0]
    raise ValueError("no quantization node feeds the model output")


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


# ---------------------------------------------------------------------------------------
# layer-by-layer comparison


TRACE_OPS = ("QuantizeLinear", "DequantizeLinear", "MatMul", "QLinearMatMul", "MatMulInteger", "QLinearAdd", "Add",
             "Relu")


FUSION_PRESERVING_OPS = ("QuantizeLinear", "QLinearMatMul", "QLinearAdd")


def traced_names(model: onnx.ModelProto, ops=TRACE_OPS) -> list[str]:
    """Outputs of every node of the given op types that depends on the graph input (weight
    DequantizeLinear nodes are constants, not layers), in graph (topological) order.

    The default traces every Q/DQ/MatMul/Add output; exposing a float MatMul output stops
    fused runtimes (onnxruntime, pyruntime) from fusing DQ -> MatMul -> Q, so that trace
    compares the unfused graphs. `FUSION_PRESERVING_OPS` traces only quantized tensors
    (Q outputs, QOperator outputs), which keeps every fusion and so localises a fused
    kernel's own difference."""
    live = {i.name for i in model.graph.input}
    out = []
    for n in model.graph.node:
        if any(i in live for i in n.input):
            live.update(n.output)
            if n.op_type in ops:
                out.append(n.output[0])
    return out


def shared_zoo() -> "MLPZoo":
    """One MLPZoo per process (tests and benchmarks share it), removed at exit."""
    global _SHARED_ZOO
    if _SHARED_ZOO is None:
        import atexit
        import shutil
        d = tempfile.mkdtemp(prefix="pyrt_mlp_zoo_")
        atexit.register(shutil.rmtree, d, True)
        _SHARED_ZOO = MLPZoo(d)
    return _SHARED_ZOO


_SHARED_ZOO = None


def with_outputs(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs also list `names`. Types come from onnx shape
    inference, else (custom-domain ops such as com.microsoft QLinearAdd, which onnx cannot
    infer) from a one-row NumpyRef run, with the batch dimension symbolic."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(m)
    vi = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    have = {o.name for o in m.graph.output}
    missing = [nm for nm in names if nm not in have and (nm not in vi or not vi[nm].type.tensor_type.elem_type)]
    probe = {}
    if missing:
        x0 = np.zeros((1, IN_DIM), np.float32)
        probe = dict(zip(missing, NumpyRef(model).run(x0, missing)))
    for nm in names:
        if nm in have:
            continue
        if nm in probe:
            v = np.asarray(probe[nm])
            m.graph.output.append(helper.make_tensor_value_info(
                nm, helper.np_dtype_to_tensor_dtype(v.dtype), ["N"] + list(v.shape[1:])))
        else:
            m.graph.output.append(vi[nm])
        have.add(nm)
    return m


def prefix_model(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The part of `model` that computes `name`, with `name` as its only output: unlike
    `with_outputs`, no fused chain gains an extra consumer, so a fusing runtime still fuses
    everything up to (and including) the node producing `name`."""
    m = with_outputs(model, [name])
    out = next(o for o in m.graph.output if o.name == name)
    keep_out = onnx.ValueInfoProto()
    keep_out.CopyFrom(out)
    del m.graph.output[:]
    m.graph.output.append(keep_out)
    needed, kept = {name}, []
    for n in reversed(list(m.graph.node)):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(i for i in n.input if i)
    del m.graph.node[:]
    m.graph.node.extend(reversed(kept))
    used = [t for t in m.graph.initializer if t.name in needed]
    del m.graph.initializer[:]
    m.graph.initializer.extend(used)
    return m


def _tensor_step(model: onnx.ModelProto, name: str) -> float | None:
    """The coarsest quantization grid a tensor touches: its own scale when quantized (Q, DQ
    or QOperator output), together with the scales of the activations feeding its producer
    (through a Q, the producer of the Q's input) and of the Qs consuming it. A 1-step
    difference in a coarse input is 2 steps of a finer output, so it must not count as a
    new divergence. None for a tensor on no grid (fp32 models)."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    steps = []

    def scale(nm):
        return float(np.max(consts[nm]))

    def feeding(node):
        if node is None:
            return
        if node.op_type in ("QLinearMatMul", "QLinearAdd"):
            if node.input[0] not in consts:
                steps.append(scale(node.input[1]))
            if node.op_type == "QLinearAdd" and node.input[3] not in consts:
                steps.append(scale(node.input[4]))
            return
        for i in node.input:
            p = prod.get(i)
            if p is not None and p.op_type == "DequantizeLinear" and p.input[0] not in consts:
                steps.append(scale(p.input[1]))
            elif p is not None and p.op_type in ("QLinearMatMul", "QLinearAdd"):
                steps.append(scale(p.input[6]))

    n = prod.get(name)
    if n is not None:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            steps.append(scale(n.input[1]))
        if n.op_type in ("QLinearMatMul", "QLinearAdd"):
            steps.append(scale(n.input[6]))
        feeding(n)
        if n.op_type == "QuantizeLinear":
            feeding(prod.get(n.input[0]))
    for c in model.graph.node:
        if c.op_type == "QuantizeLinear" and c.input[0] == name:
            steps.append(scale(c.input[1]))
    return max(steps) if steps else None


def _own_scale(model: onnx.ModelProto, name: str) -> float | None:
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if name in n.output:
            if n.op_type == "QuantizeLinear":
                return float(np.max(consts[n.input[1]]))
            if n.op_type in ("QLinearMatMul", "QLinearAdd"):
                return float(np.max(consts[n.input[6]]))
    return None


def first_divergence(model: onnx.ModelProto, run_a, run_b, x: np.ndarray, tol_steps: float = 1.0,
                     names=None, mode: str = "outputs"):
    """The first tensor, in graph order, whose max |a - b| between two runtimes exceeds
    `tol_steps` quantization steps, as a dict {name, op, max_diff, step, steps, count}, or
    None when every traced tensor agrees.

    `run_a`, `run_b`: (ModelProto, x, output_names) -> list of arrays (see runner_*).
    `names`: the tensors to trace (default `traced_names(model)`); the graph outputs are
    always appended. `mode="outputs"` runs the model once with every traced tensor added as
    a graph output (`with_outputs`); `mode="prefix"` runs one `prefix_model` per tensor,
    which leaves every fusion intact (onnxruntime drops a QDQ fusion as soon as an
    intermediate of it is a graph output, so its fused kernels' differences only show in
    this mode).

    Steps: the coarsest grid a tensor touches (`_tensor_step`), in codes for integer
    tensors (at least 1 code); float tensors on no grid (a pure fp32 model) get a 1e-4
    relative tolerance."""
    names = list(names or traced_names(model))
    names += [o.name for o in model.graph.output if o.name not in names]
    if mode == "outputs":
        m = with_outputs(model, names)
        a = run_a(m, x, names)
        b = run_b(m, x, names)
    elif mode == "prefix":
        a, b = [], []
        for nm in names:
            pm = prefix_model(model, nm)
            a.append(run_a(pm, x, [nm])[0])
            b.append(run_b(pm, x, [nm])[0])
    else:
        raise ValueError(f"mode must be 'outputs' or 'prefix', not {mode!r}")
    ops = {o: n.op_type for n in model.graph.node for o in n.output}
    for nm, va, vb in zip(names, a, b):
        va, vb = np.asarray(va), np.asarray(vb)
        if va.shape != vb.shape:
            return dict(name=nm, op=ops.get(nm), max_diff=float("inf"), step=None, steps=float("inf"),
                        count=int(max(va.size, vb.size)), note=f"shape {va.shape} vs {vb.shape}")
        if va.size == 0:
            continue
        diff = np.abs(va.astype(np.float64) - vb.astype(np.float64))
        d = float(np.max(diff))
        step = _tensor_step(model, nm)
        if va.dtype.kind in "iu":  # integer codes: 1 code, or more below a coarser input grid
            own = _own_scale(model, nm)
            step = max(1.0, step / own) if (step and own) else 1.0
        if step is None:
            limit = 1e-4 * max(1.0, float(np.max(np.abs(vb))))
            steps = d
        else:
            limit = tol_steps * step * (1 + 1e-4)  # float32 scales: 1 code * s / s is 1 +- 1 ulp
            steps = d / step
        if d > limit:
            return dict(name=nm, op=ops.get(nm), max_diff=d, step=step, steps=steps, count=int((diff > limit).sum()))
    return None


def runner_pyruntime(**load_kw):
    def run(m, x, names):
        import pyruntime
        return pyruntime.load(m, **load_kw).run(names, {"x": x})
    return run


def runner_ort(threads: int = 1):
    def run(m, x, names):
        return ort_session(m, threads).run(names, {"x": x})
    return run


def runner_numpy_ref():
    def run(m, x, names):
        return NumpyRef(m).run(x, names)
    return run


def runner_onnx_reference():
    """onnx.reference.ReferenceEvaluator (opset bumped to >= 19 when needed for its
    QuantizeLinear / DequantizeLinear implementations)."""
    def run(m, x, names):
        from onnx.reference import ReferenceEvaluator
        m2 = onnx.ModelProto()
        m2.CopyFrom(m)
        for op in m2.opset_import:
            if op.domain in ("", "ai.onnx") and op.version < 19:
                op.version = 19
        return ReferenceEvaluator(m2).run(names, {"x": x})
    return run


def parity_stats(out: np.ndarray, ref: np.ndarray, step: float) -> dict:
    d = np.abs(out.astype(np.float64) - ref.astype(np.float64)) / step
    return dict(top1=float((out.argmax(1) == ref.argmax(1)).mean()), p999=float(np.quantile(d, 0.999)),
                max=float(d.max()), mean=float(d.mean()))
