"""`python -m pyruntime.train recalibrate`: new exit thresholds for an exported model, on a
tiny QDQ student and a small stand-in dataset written as IDX files."""
import json
import shutil

import pytest

torch = pytest.importorskip("torch", reason="pyruntime.train needs torch (pip install -e '.[train]')")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from pyruntime.train import data as D  # noqa: E402
from pyruntime.train import export as E  # noqa: E402
from pyruntime.train import gates as G  # noqa: E402
from pyruntime.train import quantize as Q  # noqa: E402
from pyruntime.train import zoo as Z  # noqa: E402
from pyruntime.train.__main__ import main  # noqa: E402
from pyruntime.train.models import GateConfig, Student, StudentConfig  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained two-gate int8 student whose gates never exit, and the data dir."""
    root = tmp_path_factory.mktemp("recal")
    D.write_fake_dataset(root / "data", n_train=1250, n_test=300)
    torch.manual_seed(0)
    student = Student(StudentConfig(stages=((8, 1), (16, 1), (16, 1)))).eval()
    gates = G.make_gates(student, [GateConfig("stage1", grid=2), GateConfig("stage2", grid=1)])
    q = Q.quantize_ptq(student, gates, torch.rand(64, 1, 28, 28), method="minmax")
    path = root / "tiny.onnx"
    E.export_qdq(q, path)
    return path, root / "data"


def test_recalibrate_round_trips_an_exported_model(tiny, tmp_path, monkeypatch, capsys):
    path, data_dir = tiny
    monkeypatch.setenv("PYRUNTIME_DATA", str(data_dir))
    before = path.read_bytes()
    out = tmp_path / "out.onnx"
    # 250 validation images of an untrained model: too few to hold half out and still certify
    # a gate, so the search and its check share them (--holdout 0)
    assert main(["recalibrate", str(path), "--out", str(out), "--max-drop", "1", "--confidence", "0.9",
                 "--holdout", "0"]) == 0
    printed = capsys.readouterr().out
    for needle in ("one-sided 90% confidence bound", "exit rate (val)", "accuracy of exited (test)", "Test:",
                   "exit histogram", f"wrote {out}"):
        assert needle in printed, printed
    assert path.read_bytes() == before
    old, new = onnx.load(str(path)), onnx.load(str(out))
    assert new.graph.SerializeToString() == old.graph.SerializeToString()
    onnx.checker.check_model(new, full_check=True)
    # the thresholds are calibrate's on the validation split, from every head's outputs
    data = D.load_fashion_mnist()
    ov = E.run_onnxruntime(old, data.val.x)
    fr = E.macs_fractions(old, [o.name for o in old.graph.output][1:])
    cal = G.calibrate(ov[0], ov[1:], data.val.y, fr, max_drop=0.01, confidence=0.9, holdout=None)
    meta = E.read_exits(new)
    assert [e["rule"] for e in meta["exits"]] == cal["rules"]
    assert [e["threshold"] for e in meta["exits"]] == cal["thresholds"]
    assert E.read_exits(old)["exits"][0]["threshold"] == 1.0e9
    assert cal["thresholds"][0] < 1.0e9  # gate 0 does exit now: the file did change
    import pyruntime
    if hasattr(pyruntime, "load"):
        assert list(pyruntime.load(str(out)).exits) == pytest.approx(cal["thresholds"], rel=1e-6)


def _zoo_for(model_path, data_dir, zoo_dir, monkeypatch):
    """A zoo holding `model_path`, with a copy of the shipped card rewritten to describe it."""
    monkeypatch.setenv("PYRUNTIME_DATA", str(data_dir))
    zoo_dir.mkdir()
    shutil.copyfile(model_path, zoo_dir / f"{Z.NAME}.onnx")
    shutil.copyfile(Z.ZOO / "README.md", zoo_dir / "README.md")
    card = json.loads((Z.ZOO / f"{Z.NAME}.json").read_text())
    card.pop("recalibration", None)
    model = onnx.load(str(model_path))
    card["outputs"] = [o.name for o in model.graph.output]
    card["macs"]["int8_graph_with_gates"] = sum(E.node_macs(model))
    test = D.load_fashion_mnist().test
    card["accuracy_test"]["int8"] = float((E.run_onnxruntime(model, test.x)[0].argmax(1) == test.y).mean())
    (zoo_dir / f"{Z.NAME}.json").write_text(json.dumps(card, indent=1) + "\n")
    monkeypatch.setattr(Z, "ZOO", zoo_dir)
    return card


def test_recalibrate_zoo_updates_only_what_thresholds_change(tiny, tmp_path, monkeypatch, capsys):
    path, data_dir = tiny
    zoo_dir = tmp_path / "zoo"
    card = _zoo_for(path, data_dir, zoo_dir, monkeypatch)
    report = (zoo_dir / "README.md").read_text().split(Z.REPORT_HEADING, 1)[1]
    model_path = zoo_dir / f"{Z.NAME}.onnx"
    assert main(["recalibrate", str(model_path), "--zoo", "--max-drop", "2"]) == 0
    assert f"shipped {model_path}" in capsys.readouterr().out
    new = json.loads((zoo_dir / f"{Z.NAME}.json").read_text())
    meta = E.read_exits(onnx.load(str(model_path)))
    assert new["exits"] == meta
    assert new["training"]["calibration_target"] == {"max_drop": 0.02, "macs_budget": None, "confidence": 0.95,
                                                     "holdout": 0.5, "seed": 0}
    assert sum(new["exit_histogram_test"]) == 300
    assert new["exit_rates_test"] == pytest.approx([c / 300 for c in new["exit_histogram_test"]])
    assert new["macs"]["int8_expected_with_exits"] == pytest.approx(
        new["expected_macs_fraction_test"] * card["macs"]["int8_graph_with_gates"])
    # the test-set accuracy with exits, per the contract from every head
    test = D.load_fashion_mnist().test
    res = E.run_onnxruntime(model_path, test.x)
    out, _ = G.apply_exits(res[0], res[1:], [e["rule"] for e in meta["exits"]],
                           [e["threshold"] for e in meta["exits"]])
    assert new["accuracy_test"]["int8_with_exits"] == pytest.approx(float((out.argmax(1) == test.y).mean()))
    rc = new.pop("recalibration")
    assert rc["command"] == f"python -m pyruntime.train recalibrate {model_path} --zoo --max-drop 2"
    assert rc["validation"]["drop_bound"] <= 0.02 + 1e-12
    changed = {"exits", "accuracy_test", "expected_macs_fraction_test", "exit_histogram_test", "exit_rates_test",
               "macs", "training"}
    assert {k: v for k, v in new.items() if k not in changed} == {k: v for k, v in card.items() if k not in changed}
    assert new["accuracy_test"]["teacher_fp32"] == card["accuracy_test"]["teacher_fp32"]
    readme = (zoo_dir / "README.md").read_text()
    assert readme.split(Z.REPORT_HEADING, 1)[1] == report  # the pipeline's report is kept as it was
    assert "## Recalibrated exit thresholds" in readme and rc["command"] in readme
    assert f"| {meta['exits'][0]['output']} | {meta['exits'][0]['rule']} | {meta['exits'][0]['threshold']:.6g} |" in readme


def test_recalibrate_zoo_refuses_another_graph(tiny, tmp_path, monkeypatch):
    path, data_dir = tiny
    other = onnx.load(str(path))
    w = next(t for t in other.graph.initializer if t.name.endswith(".weight_q"))
    w.raw_data = bytes(255 - b for b in w.raw_data)
    other_path = tmp_path / "other.onnx"
    onnx.save(other, str(other_path))
    zoo_dir = tmp_path / "zoo"
    _zoo_for(path, data_dir, zoo_dir, monkeypatch)
    before = {p.name: p.read_bytes() for p in zoo_dir.iterdir()}
    for extra in ([], ["--out", str(tmp_path / "out.onnx")]):
        with pytest.raises(ValueError, match="not the shipped student"):
            main(["recalibrate", str(other_path), "--zoo"] + extra)
    assert {p.name: p.read_bytes() for p in zoo_dir.iterdir()} == before
    assert not (tmp_path / "out.onnx").exists()


def test_calibration_study_reports_both_calibrations(tiny, tmp_path, monkeypatch, capsys):
    path, data_dir = tiny
    monkeypatch.setenv("PYRUNTIME_DATA", str(data_dir))
    out = tmp_path / "study"
    assert main(["calibration-study", str(path), "--out", str(out), "--reps", "3", "--max-drop", "1",
                 "--no-progress"]) == 0
    res = json.loads((out / "calibration_study.json").read_text())
    assert res["reps"] == 3 and res["max_drop"] == 0.01 and res["half"] == 125
    assert set(res["summary"]) == {"none", "0.5"}
    for s in res["summary"].values():
        assert round(s["exceed_rate"] * 3) == pytest.approx(s["exceed_rate"] * 3)
        assert 0.0 < s["macs_min"] <= s["macs_mean"] <= s["macs_max"] <= 1.0
    printed = capsys.readouterr().out
    assert "none (search and check on the same samples)" in printed and "| 50% |" in printed
