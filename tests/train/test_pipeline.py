"""The whole pipeline in smoke mode on a small stand-in dataset written as IDX files."""
import json

import pytest

torch = pytest.importorskip("torch", reason="pyruntime.train needs torch (pip install -e '.[train]')")
pytest.importorskip("onnxruntime")

from pyruntime.train import data as D  # noqa: E402
from pyruntime.train.pipeline import PipelineConfig, run  # noqa: E402


def test_quick_pipeline_end_to_end(tmp_path, monkeypatch):
    D.write_fake_dataset(tmp_path / "data", n_train=1250, n_test=300)
    monkeypatch.setenv("PYRUNTIME_DATA", str(tmp_path / "data"))
    torch.set_num_threads(1)
    cfg = PipelineConfig(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"), progress=False).make_quick()
    lines = []
    rep = run(cfg, log=lines.append)
    out = tmp_path / "out"
    md = (out / "report.md").read_text()
    for needle in ("teacher", "hard labels", "distilled", "int8", "early exits", "Hinge vs cross-entropy"):
        assert needle in md
    j = json.loads((out / "report.json").read_text())
    fr = [e["macs_fraction"] for e in j["int8"]["exits"]["metadata"]["exits"]]
    assert all(0 < f < 1 for f in fr) and all(a < b for a, b in zip(fr, fr[1:]))
    assert (out / "student_int8_exits.onnx").stat().st_size < 1_000_000
    assert sum(rep["int8"]["exits"]["histogram"]) == 300
    # the teacher checkpoint is cached by its config: a second load does not retrain
    from pyruntime.train.teacher import get_teacher
    _, meta = get_teacher(D.load_fashion_mnist(train_subset=1000, test_subset=500), cfg.teacher, cfg.cache,
                          log=lambda *a: None, progress=False)
    assert meta["cached"]
