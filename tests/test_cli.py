"""The command line: `python -m pyruntime info` and `python -m pyruntime bench MODEL`."""
import json
import subprocess
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save


def _model(path):
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    save(m, path)


def test_bench_prints_the_table_and_writes_json(tmp_path):
    model, out = tmp_path / "m.onnx", tmp_path / "r.json"
    _model(str(model))
    r = subprocess.run([sys.executable, "-m", "pyruntime", "bench", str(model), "--batch", "3", "--seconds", "0.05",
                        "--compare", "onnxruntime", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "p99" in r.stdout and "onnxruntime" in r.stdout
    data = json.loads(out.read_text())
    assert data["batch"] == 3 and [row["runtime"] for row in data["rows"]] == ["pyruntime", "onnxruntime"]
    for row in data["rows"]:
        assert row["runs"] >= 10 and 0 < row["p50_us"] <= row["p99_us"]


def test_bench_refuses_an_unknown_peer(tmp_path):
    model = tmp_path / "m.onnx"
    _model(str(model))
    r = subprocess.run([sys.executable, "-m", "pyruntime", "bench", str(model), "--seconds", "0.01",
                        "--compare", "tensorrt"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown peer" in r.stderr


def test_demo_runs_the_shipped_student(tmp_path):
    """The README's main job, on a slice of the test set."""
    import os

    import pytest

    if not os.path.isdir(os.environ.get("PYRUNTIME_DATA", "/usr/share/datasets/fashion-mnist")):
        pytest.skip("Fashion-MNIST is not installed: apt-get install -y dataset-fashion-mnist (CI installs it)")
    r = subprocess.run([sys.executable, "-m", "pyruntime", "demo", "--n", "300", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for fragment in ("ISA path", "exits on", "exit histogram", "onnxruntime, full graph"):
        assert fragment in r.stdout, r.stdout
    assert (tmp_path / "accuracy_vs_latency.png").stat().st_size > 1000
