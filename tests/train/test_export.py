"""QDQ export: onnx.checker, onnxruntime, the early-exit contract, the op list, and the
int8 simulation in torch against onnxruntime."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="pyruntime.train needs torch (pip install -e '.[train]')")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pyruntime.train import export as E  # noqa: E402
from pyruntime.train import gates as G  # noqa: E402
from pyruntime.train import quantize as Q  # noqa: E402
from pyruntime.train.models import GateConfig, Student, StudentConfig, exit_macs_fractions  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.manual_seed(0)
    student = Student(StudentConfig(stages=((8, 1), (16, 2), (16, 1))))
    # give BN non-trivial statistics
    student.train()
    with torch.no_grad():
        for _ in range(3):
            student(torch.rand(64, 1, 28, 28))
    student.eval()
    gates = G.make_gates(student, [GateConfig("stage1", grid=2), GateConfig("stage2", grid=1, hidden=12)])
    x = torch.rand(96, 1, 28, 28)
    q = Q.quantize_ptq(student, gates, x[:64], method="percentile")
    path = tmp_path_factory.mktemp("exp") / "m.onnx"
    model = E.export_qdq(q, path, rules=["margin", "max"], thresholds=[0.05, 0.3])
    return student, gates, q, model, path, x.numpy()


def test_checker_and_op_list(built):
    _, _, _, model, path, _ = built
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    # SUPPORTED_EXPORT_OPS stands in for the runtime's supported-op list until it has one.
    assert ops <= E.SUPPORTED_EXPORT_OPS, ops - E.SUPPORTED_EXPORT_OPS
    assert {"Conv", "Gemm", "QuantizeLinear", "DequantizeLinear"} <= ops
    inp = model.graph.input[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim] == ["N", 1, 28, 28]


def test_exits_metadata_follows_the_contract(built):
    student, gates, _, model, path, x = built
    meta = json.loads({p.key: p.value for p in model.metadata_props}["pyruntime.exits"])
    outs = [o.name for o in model.graph.output]
    assert meta["version"] == 1 and meta["final"] == outs[0]
    assert [e["output"] for e in meta["exits"]] == outs[1:]
    fr = [e["macs_fraction"] for e in meta["exits"]]
    assert all(0 < f < 1 for f in fr) and all(a < b for a, b in zip(fr, fr[1:]))
    assert all(e["rule"] in ("margin", "max") and np.isfinite(e["threshold"]) for e in meta["exits"])
    # macs_fraction from the graph equals the count from the torch modules
    assert fr == pytest.approx(exit_macs_fractions(student, gates), rel=1e-9)
    # onnxruntime: every head, same shape and dtype as output 0
    res = E.run_onnxruntime(path, x)
    assert len(res) == 3
    for r in res:
        assert r.shape == res[0].shape == (len(x), 10) and r.dtype == np.float32


def test_depth_order_of_gates(built):
    _, _, _, model, _, _ = built
    outs = [o.name for o in model.graph.output]
    a0, a1 = E.ancestors(model, outs[1]), E.ancestors(model, outs[2])
    head0 = {i for i in a0 if model.graph.node[i].name.split(":")[1].startswith("gate0")}
    assert (a0 - head0) <= a1  # gate 0's trunk is inside gate 1's ancestors


def test_exit_rule_from_onnxruntime_outputs(built):
    _, _, _, model, path, x = built
    meta = E.read_exits(model)
    res = E.run_onnxruntime(path, x)
    rules = [e["rule"] for e in meta["exits"]]
    # thresholds at the median score so that some samples exit at each gate
    th = [float(np.median(G.rule_score(h, r))) for h, r in zip(res[1:], rules)]
    out, idx = G.apply_exits(res[0], res[1:], rules, th)
    for i in range(len(x)):
        k = next((k for k, (h, r, t) in enumerate(zip(res[1:], rules, th))
                  if (np.sort(h[i])[-1] - (np.sort(h[i])[-2] if r == "margin" else 0.0)) >= t), 2)
        assert idx[i] == k
        assert np.array_equal(out[i], (res[1:] + [res[0]])[k][i])
    assert set(idx.tolist()) >= {0, 1}


def test_torch_int8_simulation_matches_onnxruntime(built):
    _, _, q, _, path, x = built
    f, gl = Q.qpredict(q, x)
    res = E.run_onnxruntime(path, x)
    for sim, o in zip([f] + gl, res):
        scale = float(np.abs(o).max()) + 1e-6
        # an occasional rounding tie may move one activation by one step; nothing more
        assert np.abs(sim - o).max() <= 0.02 * scale
        assert np.mean(np.abs(sim - o) <= 1e-4 * scale) > 0.95


def test_set_exits_rejects_bad_thresholds(built):
    _, _, _, model, _, _ = built
    m = onnx.ModelProto()
    m.CopyFrom(model)
    with pytest.raises(ValueError):
        E.set_exits(m, ["margin", "max"], [float("inf"), 1.0])
    with pytest.raises(ValueError):
        E.set_exits(m, ["margin"], [1.0])


def test_pyruntime_runs_the_exported_model_like_onnxruntime(built):
    import pyruntime
    if not hasattr(pyruntime, "load"):
        pytest.skip("pyruntime cannot load models yet")
    _, _, _, _, path, x = built
    m = pyruntime.load(str(path), threads=1)
    assert [o.name for o in m.outputs] == ["logits", "gate0_stage1", "gate1_stage2"]
    ours = m.run(None, {"input": x})
    ref = E.run_onnxruntime(path, x)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.abs(a - b).max() <= 1e-3 * (np.abs(b).max() + 1e-6)
