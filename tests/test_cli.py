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
