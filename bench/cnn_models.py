"""Builders for the reference CNN benchmark students (DESIGN.md "Reference benchmark
students", issue 4 item 6), used by bench/bench_cnn.py.

Everything is built with onnx.helper from fixed seeds (He-initialised weights, small random
biases); nothing is downloaded. Input "x" float32 [N, 1, 28, 28] (symbolic N), output
"logits" [N, 10].

- `small-cnn`: Conv(1->16)+ReLU, MaxPool2, Conv(16->32)+ReLU, MaxPool2, Flatten,
  Gemm(1568->128)+ReLU, Gemm(128->10).
- `mid-resnet`: Conv(1->64)+ReLU; residual block (two 64->64 convs, ReLU after the first),
  Add with the block input, ReLU; MaxPool2; Conv(64->128)+ReLU, Conv(128->128)+ReLU;
  GlobalAveragePool; Flatten; Gemm(128->10). 101.6 M MACs per image.
- `dw-separable`: Conv(1->32)+ReLU; depthwise 3x3 (group=32)+ReLU, pointwise 32->64+ReLU;
  MaxPool2; depthwise 3x3 (group=64)+ReLU, pointwise 64->128+ReLU; GlobalAveragePool;
  Flatten; Gemm(128->10).

Every conv is 3x3 stride 1 pad 1 unless 1x1 (pointwise). `macs(model)` counts the
multiply-accumulates of one image from the graph (Conv and Gemm nodes) with onnx shape
inference. `CNNZoo(dir)` writes the fp32 models and their onnxruntime quantize_static
variants (reusing tests/model_zoo_helpers.quantize).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent / "tests") not in sys.path:
    sys.path.insert(0, str(_HERE.parent / "tests"))

import model_zoo_helpers as zh  # noqa: E402

SEED = 20240704
MODELS = ("small-cnn", "mid-resnet", "dw-separable")
# int8 variants built per model (model_zoo_helpers.VARIANTS keys)
INT8_VARIANTS = ("qdq_s8s8_pc", "qdq_u8s8_pt")


class _G:
    """A tiny graph builder: conv/relu/pool/gemm with seeded weights."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.n = 0

    def _name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def conv(self, x, cin, cout, k=3, group=1, relu=True):
        name = self._name("conv")
        fan_in = cin // group * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.05).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}_W"), numpy_helper.from_array(b, f"{name}_B")]
        p = k // 2
        self.nodes.append(helper.make_node("Conv", [x, f"{name}_W", f"{name}_B"], [name], name=name,
                                           kernel_shape=[k, k], pads=[p, p, p, p], strides=[1, 1], group=group))
        return self.relu(name) if relu else name

    def relu(self, x):
        y = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [y], name=y))
        return y

    def maxpool(self, x):
        y = self._name("pool")
        self.nodes.append(helper.make_node("MaxPool", [x], [y], name=y, kernel_shape=[2, 2], strides=[2, 2]))
        return y

    def gap(self, x):
        y = self._name("gap")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [y], name=y))
        return y

    def flatten(self, x):
        y = self._name("flat")
        self.nodes.append(helper.make_node("Flatten", [x], [y], name=y, axis=1))
        return y

    def add(self, a, b):
        y = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y], name=y))
        return y

    def gemm(self, x, k, n, relu=True, out=None):
        name = out or self._name("fc")
        w = (self.rng.standard_normal((n, k)) * np.sqrt(2.0 / k)).astype(np.float32)
        b = (self.rng.standard_normal(n) * 0.05).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}_W"), numpy_helper.from_array(b, f"{name}_B")]
        self.nodes.append(helper.make_node("Gemm", [x, f"{name}_W", f"{name}_B"], [name], name=name, transB=1))
        return self.relu(name) if relu else name

    def model(self, graph_name) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, graph_name,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                              initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="bench/cnn_models")
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        return m


def small_cnn(seed: int = SEED) -> onnx.ModelProto:
    g = _G(seed)
    h = g.maxpool(g.conv("x", 1, 16))
    h = g.maxpool(g.conv(h, 16, 32))
    h = g.gemm(g.flatten(h), 32 * 7 * 7, 128)
    g.gemm(h, 128, 10, relu=False, out="logits")
    return g.model("small_cnn")


def mid_resnet(seed: int = SEED + 1) -> onnx.ModelProto:
    g = _G(seed)
    h = g.conv("x", 1, 64)
    r = g.conv(g.conv(h, 64, 64), 64, 64, relu=False)
    h = g.maxpool(g.relu(g.add(r, h)))
    h = g.conv(g.conv(h, 64, 128), 128, 128)
    g.gemm(g.flatten(g.gap(h)), 128, 10, relu=False, out="logits")
    return g.model("mid_resnet")


def dw_separable(seed: int = SEED + 2) -> onnx.ModelProto:
    g = _G(seed)
    h = g.conv("x", 1, 32)
    h = g.conv(g.conv(h, 32, 32, group=32), 32, 64, k=1)
    h = g.maxpool(h)
    h = g.conv(g.conv(h, 64, 64, group=64), 64, 128, k=1)
    g.gemm(g.flatten(g.gap(h)), 128, 10, relu=False, out="logits")
    return g.model("dw_separable")


BUILDERS = {"small-cnn": small_cnn, "mid-resnet": mid_resnet, "dw-separable": dw_separable}


def macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one image (N = 1): Conv and Gemm/MatMul nodes."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dim = m.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = 1
    m = onnx.shape_inference.infer_shapes(m)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    total = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]  # [Cout, Cin/g, kh, kw]
            out = shapes[n.output[0]]  # [1, Cout, H, W]
            total += int(np.prod(out)) * w[1] * w[2] * w[3]
        elif n.op_type in ("Gemm", "MatMul"):
            w = inits[n.input[1]]
            total += int(np.prod(w))
    return total


def calibration_images(n: int = 64) -> np.ndarray:
    """[n, 1, 28, 28] float32: Fashion-MNIST training images when installed, else noise."""
    return zh.calibration_inputs(n).reshape(n, 1, 28, 28)


def eval_images(n: int) -> tuple[np.ndarray, str]:
    x, desc = zh.eval_inputs(n)
    return np.ascontiguousarray(x.reshape(n, 1, 28, 28)), desc


class CNNZoo:
    """fp32 models and their int8 quantize_static variants, written under `directory`."""

    def __init__(self, directory: str | Path | None = None, models=MODELS, variants=INT8_VARIANTS):
        self.dir = Path(directory or tempfile.mkdtemp(prefix="pyrt_cnn_zoo_"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths: dict[tuple[str, str], Path] = {}
        self.macs: dict[str, int] = {}
        calib = calibration_images()
        for name in models:
            proto = BUILDERS[name]()
            self.macs[name] = macs(proto)
            stem = name.replace("-", "_")
            p = self.dir / f"{stem}_fp32.onnx"
            onnx.save(proto, str(p))
            self.paths[(name, "fp32")] = p
            for v in variants:
                self.paths[(name, v)] = zh.quantize(p, self.dir / f"{stem}_{v}.onnx", v, calib)

    def path(self, model: str, variant: str) -> Path:
        return self.paths[(model, variant)]
