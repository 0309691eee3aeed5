"""int8 and fp32 MLP outputs vs onnxruntime and vs an exact reference (issue 3 targets).

Each onnxruntime quantize_static variant of the 784-512-256-10 MLP student is run on
>= 1000 inputs (Fashion-MNIST test images when installed, else seeded noise) and must
match the exact reference with identical top-1 on >= 99.5% of inputs, a 99.9th percentile
of |diff| <= 2 output quantization steps and a max <= 8.

The exact reference is `model_zoo_helpers.NumpyRef`: the graph interpreted op by op in
numpy, integer matmuls in int64, QDQ MatMuls in float64 (checked here against
onnx.reference.ReferenceEvaluator). onnxruntime is not exact on CPUs without VNNI: its
MLAS u8 x s8 kernels use AVX2 vpmaddubsw, whose int16 pair sums saturate for full-range
weights (and s8 activations are shifted to u8 first), so its answers are compared with
the reference and reported as measured figures; the thresholds are asserted against
onnxruntime only where onnxruntime itself meets them against the exact reference.

`first_divergence` (the layer-by-layer comparison) exposes intermediate tensors as graph
outputs in both runtimes and names the first one whose difference exceeds 1 step.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import pyruntime

import model_zoo_helpers as zh

INT8_VARIANTS = list(zh.VARIANTS)
N_INPUTS = 1000
TOP1_MIN, P999_MAX, MAX_MAX = 0.995, 2.0, 8.0


@pytest.fixture(scope="module")
def zoo():
    return zh.shared_zoo()


@pytest.fixture(scope="module")
def inputs():
    x, desc = zh.eval_inputs(N_INPUTS)
    assert x.shape == (N_INPUTS, 784) and x.dtype == np.float32
    return x, desc


@pytest.fixture(scope="module")
def exact(zoo, inputs):
    """Exact reference outputs per int8 variant."""
    return {v: zh.NumpyRef(zoo.proto(v)).run(inputs[0])[0] for v in INT8_VARIANTS}


@pytest.fixture(scope="module")
def ort_out(zoo, inputs):
    return {v: zh.ort_run(zoo.path(v), inputs[0])[0] for v in ["fp32"] + INT8_VARIANTS}


def _check(stats: dict, what: str):
    assert stats["top1"] >= TOP1_MIN, f"{what}: top-1 agreement {stats['top1']:.4f} < {TOP1_MIN}: {stats}"
    assert stats["p999"] <= P999_MAX, f"{what}: 99.9th percentile {stats['p999']:.2f} steps > {P999_MAX}: {stats}"
    assert stats["max"] <= MAX_MAX, f"{what}: max {stats['max']:.2f} steps > {MAX_MAX}: {stats}"


def _meets(stats: dict) -> bool:
    return stats["top1"] >= TOP1_MIN and stats["p999"] <= P999_MAX and stats["max"] <= MAX_MAX


def test_fixture_facts(zoo, inputs):
    """The variants are what their names say (format, activation dtype, granularity)."""
    for v, (fmt, act, per_channel) in zh.VARIANTS.items():
        m = zoo.proto(v)
        ops = zh.op_types(m)
        if fmt == "QDQ":
            assert ops.count("MatMul") == 3 and "QLinearMatMul" not in ops
        else:
            assert ops.count("QLinearMatMul") == 3
        consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        q_in = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
        assert consts[q_in.input[2]].dtype == (np.uint8 if act == "u8" else np.int8)
        w_scales = [consts[n.input[1]] if n.op_type == "DequantizeLinear" else consts[n.input[4]]
                    for n in m.graph.node
                    if (n.op_type == "DequantizeLinear" and n.input[0] in consts
                        and consts[n.input[0]].dtype == np.int8 and consts[n.input[0]].ndim == 2)
                    or n.op_type == "QLinearMatMul"]
        assert len(w_scales) == 3
        assert all((s.size > 1) == per_channel for s in w_scales), (v, [s.shape for s in w_scales])


@pytest.mark.parametrize("variant", [v for v in INT8_VARIANTS if v.startswith("qdq")])
def test_exact_reference_agrees_with_onnx_reference_evaluator(zoo, inputs, variant):
    """Our numpy reference is checked against onnx's own (opset bumped to 19): within one
    output step everywhere (they differ only in float32 vs float64 MatMul sums at rounding
    boundaries) and bit-identical on the vast majority of elements."""
    x = inputs[0][:200]
    m = zoo.proto(variant)
    a = zh.runner_numpy_ref()(m, x, ["logits"])[0]
    b = zh.runner_onnx_reference()(m, x, ["logits"])[0]
    st = zh.parity_stats(a, b, zh.output_step(m))
    assert st["max"] <= 1.01 and st["mean"] < 0.01 and st["top1"] >= 0.995, st


@pytest.mark.parametrize("variant", INT8_VARIANTS)
def test_int8_parity_vs_exact_reference(zoo, inputs, exact, variant, record_property):
    m = pyruntime.load(str(zoo.path(variant)))
    out = m.predict(inputs[0])
    st = zh.parity_stats(out, exact[variant], zh.output_step(zoo.proto(variant)))
    record_property("parity_vs_exact", st)
    _check(st, f"{variant} pyruntime vs exact reference on {inputs[1]}")


@pytest.mark.parametrize("variant", INT8_VARIANTS)
def test_int8_vs_onnxruntime(zoo, inputs, exact, ort_out, variant, record_property):
    """pyruntime vs onnxruntime: the thresholds hold wherever onnxruntime is itself exact
    enough on this CPU; otherwise onnxruntime's own error is measured, and the layer-by-layer
    comparison must place its first divergence at an int8 GEMM output (the kernel that
    saturates), with pyruntime matching the reference there."""
    proto = zoo.proto(variant)
    step = zh.output_step(proto)
    out = pyruntime.load(str(zoo.path(variant))).predict(inputs[0])
    vs_ort = zh.parity_stats(out, ort_out[variant], step)
    ort_vs_exact = zh.parity_stats(ort_out[variant], exact[variant], step)
    record_property("pyruntime_vs_ort", vs_ort)
    record_property("ort_vs_exact", ort_vs_exact)
    print(f"\n{variant}: pyruntime vs ORT {vs_ort}; ORT vs exact {ort_vs_exact}")
    if _meets(ort_vs_exact):
        _check(vs_ort, f"{variant} pyruntime vs onnxruntime")
        return
    # Localise onnxruntime's difference with fusion intact (prefix models, quantized tensors).
    x = inputs[0][:256]
    names = zh.traced_names(proto, zh.FUSION_PRESERVING_OPS)
    where = zh.first_divergence(proto, zh.runner_ort(), zh.runner_numpy_ref(), x, names=names, mode="prefix")
    print(f"{variant}: onnxruntime's first divergence from the exact reference: {where}")
    record_property("ort_first_divergence", where)
    assert where is not None, "onnxruntime misses the thresholds but no traced tensor differs by > 1 step"
    # it starts at an int8 GEMM layer, after the input quantization (which agrees) ...
    order = zh.traced_names(proto, zh.FUSION_PRESERVING_OPS)
    first_mm = next(n for n in proto.graph.node if n.op_type in ("MatMul", "QLinearMatMul"))
    assert where["name"] != order[0] and where["name"] in zh.traced_names(proto, zh.FUSION_PRESERVING_OPS), where
    assert _downstream_of(proto, first_mm.output[0], where["name"]), where
    # ... where pyruntime, traced the same way, matches the reference
    assert zh.first_divergence(proto, zh.runner_pyruntime(), zh.runner_numpy_ref(), x, names=names,
                               mode="prefix") is None


def _downstream_of(model, src: str, name: str) -> bool:
    if src == name:
        return True
    live = {src}
    for n in model.graph.node:
        if any(i in live for i in n.input):
            live.update(n.output)
    return name in live


def test_fp32_vs_onnxruntime(zoo, inputs, ort_out):
    out = pyruntime.load(str(zoo.path("fp32"))).predict(inputs[0])
    ref = ort_out["fp32"]
    d = float(np.abs(out - ref).max())
    assert d < 1e-4, f"fp32 max |diff| {d}"
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.999
    exact = zh.mlp_numpy({k: v.astype(np.float64) for k, v in zoo.weights.items()}, inputs[0].astype(np.float64))
    assert float(np.abs(out - exact).max()) < 1e-4


# ---------------------------------------------------------------------------------------
# the layer-by-layer comparison helper


@pytest.mark.parametrize("variant", INT8_VARIANTS)
@pytest.mark.parametrize("trace", ["all", "quantized"])
def test_layer_by_layer_none_on_passing_models(zoo, inputs, variant, trace):
    proto = zoo.proto(variant)
    names = zh.traced_names(proto) if trace == "all" else zh.traced_names(proto, zh.FUSION_PRESERVING_OPS)
    assert len(names) >= 6
    where = zh.first_divergence(proto, zh.runner_pyruntime(), zh.runner_numpy_ref(), inputs[0][:256], names=names)
    assert where is None, where


def test_layer_by_layer_fp32(zoo, inputs):
    proto = zoo.proto("fp32")
    assert zh.first_divergence(proto, zh.runner_pyruntime(), zh.runner_ort(), inputs[0][:256]) is None


def _second_matmul_weight(m: onnx.ModelProto) -> tuple[str, str]:
    """(int8 weight initializer of the second matmul, that matmul's output name)."""
    consts = {t.name for t in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    mms = [n for n in m.graph.node if n.op_type in ("MatMul", "QLinearMatMul")]
    mm = mms[1]
    if mm.op_type == "QLinearMatMul":
        return mm.input[3], mm.output[0]
    dq = prod[mm.input[1]]
    assert dq.op_type == "DequantizeLinear" and dq.input[0] in consts
    return dq.input[0], mm.output[0]


def _perturbed_runner(base_runner, weight: str, row: int, delta: int):
    def run(m, x, names):
        p = onnx.ModelProto()
        p.CopyFrom(m)
        for i, t in enumerate(p.graph.initializer):
            if t.name == weight:
                w = numpy_helper.to_array(t).copy()
                w[row, :] = np.clip(w[row, :].astype(np.int32) + delta, -127, 127).astype(w.dtype)
                p.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, weight))
        return base_runner(p, x, names)
    return run


@pytest.mark.parametrize("variant", ["qdq_u8s8_pt", "qdq_s8s8_pc", "qop_u8s8_pc"])
def test_layer_by_layer_finds_a_perturbed_layer(zoo, inputs, variant):
    """A model with one weight row of the second matmul pushed by 40 codes must be located
    at that matmul (all-op trace) or at the first quantized tensor after it."""
    proto = zoo.proto(variant)
    weight, mm_out = _second_matmul_weight(proto)
    bad = _perturbed_runner(zh.runner_pyruntime(), weight, row=5, delta=40)
    x = inputs[0][:128]
    where = zh.first_divergence(proto, bad, zh.runner_numpy_ref(), x)
    assert where is not None and where["name"] == mm_out, where
    assert where["steps"] > 1
    # the fusion-preserving trace lands on the first quantized tensor downstream of it
    qnames = zh.traced_names(proto, zh.FUSION_PRESERVING_OPS)
    where_q = zh.first_divergence(proto, bad, zh.runner_numpy_ref(), x, names=qnames)
    assert where_q is not None
    order = zh.traced_names(proto, tuple(set(zh.TRACE_OPS) | set(zh.FUSION_PRESERVING_OPS)))
    assert order.index(where_q["name"]) >= order.index(mm_out)
    before = [n for n in qnames if order.index(n) < order.index(mm_out)]
    assert where_q["name"] not in before
    # prefix mode (fusions intact) finds the same tensor as the fusion-preserving trace
    where_p = zh.first_divergence(proto, bad, zh.runner_numpy_ref(), x, names=qnames, mode="prefix")
    assert where_p is not None and where_p["name"] == where_q["name"], (where_p, where_q)
    # and the helper also works with the roles swapped ...
    assert zh.first_divergence(proto, zh.runner_numpy_ref(), bad, x)["name"] == mm_out
    # ... and with onnxruntime as the perturbed runtime, where onnxruntime's unfused graph is
    # exact here (its per-channel kernels are not, so they diverge before the perturbation)
    if zh.first_divergence(proto, zh.runner_ort(), zh.runner_numpy_ref(), x) is None:
        assert zh.first_divergence(proto, _perturbed_runner(zh.runner_ort(), weight, 5, 40), zh.runner_numpy_ref(),
                                   x)["name"] == mm_out


def test_layer_by_layer_perturbed_fp32(zoo, inputs):
    proto = zoo.proto("fp32")
    x = inputs[0][:64]

    def bad(m, x, names):
        p = onnx.ModelProto()
        p.CopyFrom(m)
        for i, t in enumerate(p.graph.initializer):
            if t.name == "W3":
                w = numpy_helper.to_array(t).copy()
                w[:, 0] += 0.5  # every hidden unit feeds logit 0
                p.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, "W3"))
        return zh.runner_pyruntime()(p, x, names)

    where = zh.first_divergence(proto, bad, zh.runner_ort(), x)
    assert where is not None and where["name"] == "mm3", where
