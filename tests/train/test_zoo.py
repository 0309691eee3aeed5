"""The shipped student against its card, in onnxruntime (exits simulated from every head,
per the pyruntime.exits contract, until the runtime applies them itself)."""
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="pyruntime.train needs torch (pip install -e '.[train]')")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import pyruntime  # noqa: E402

ZOO = Path(pyruntime.__file__).resolve().parent / "zoo"
MODEL, CARD = ZOO / "fashion_mnist_student.onnx", ZOO / "fashion_mnist_student.json"


@pytest.fixture(scope="module")
def shipped():
    if not MODEL.is_file():
        pytest.skip(f"no shipped student at {MODEL}")
    return onnx.load(str(MODEL)), json.loads(CARD.read_text())


def test_shipped_model_is_valid_and_small(shipped):
    from pyruntime.train.export import SUPPORTED_EXPORT_OPS, macs_fractions, read_exits, validate_exits
    model, card = shipped
    onnx.checker.check_model(model, full_check=True)
    assert MODEL.stat().st_size <= 1_000_000
    assert {n.op_type for n in model.graph.node} <= SUPPORTED_EXPORT_OPS
    outs = [o.name for o in model.graph.output]
    meta = read_exits(model)
    validate_exits(meta, outs)
    assert meta == card["exits"]
    assert [e["macs_fraction"] for e in meta["exits"]] == pytest.approx(macs_fractions(model, outs[1:]), rel=1e-12)


def test_shipped_model_matches_its_card_on_the_test_set(shipped):
    from pyruntime.train.data import DatasetMissingError, load_fashion_mnist
    from pyruntime.train.export import run_onnxruntime
    from pyruntime.train.gates import apply_exits
    model, card = shipped
    try:
        data = load_fashion_mnist()
    except DatasetMissingError as e:
        pytest.skip(str(e))
    res = run_onnxruntime(MODEL, data.test.x)
    meta = card["exits"]
    acc = float((res[0].argmax(1) == data.test.y).mean())
    assert acc == pytest.approx(card["accuracy_test"]["int8"], abs=1e-4)
    out, idx = apply_exits(res[0], res[1:], [e["rule"] for e in meta["exits"]],
                           [e["threshold"] for e in meta["exits"]])
    assert float((out.argmax(1) == data.test.y).mean()) == pytest.approx(card["accuracy_test"]["int8_with_exits"], abs=1e-4)
    assert np.bincount(idx, minlength=len(res)).tolist() == card["exit_histogram_test"]


def test_shipped_thresholds_are_calibrate_s_choice_on_the_validation_split(shipped):
    """The card's target, applied again to the model's own outputs on the validation split,
    chooses the shipped thresholds: they were not tuned on the test set."""
    from pyruntime.train.data import DatasetMissingError, load_fashion_mnist
    from pyruntime.train.export import macs_fractions, run_onnxruntime
    from pyruntime.train.gates import calibrate
    model, card = shipped
    try:
        data = load_fashion_mnist()
    except DatasetMissingError as e:
        pytest.skip(str(e))
    target = card["training"]["calibration_target"]
    ov = run_onnxruntime(MODEL, data.val.x)
    fr = macs_fractions(model, [o.name for o in model.graph.output][1:])
    cal = calibrate(ov[0], ov[1:], data.val.y, fr, max_drop=target["max_drop"], macs_budget=target["macs_budget"],
                    confidence=target.get("confidence"), holdout=target.get("holdout"), seed=target.get("seed", 0))
    assert [{"rule": e["rule"], "threshold": e["threshold"]} for e in card["exits"]["exits"]] == [
        {"rule": r, "threshold": t} for r, t in zip(cal["rules"], cal["thresholds"])]
    if "recalibration" in card:
        assert cal["drop_bound"] == pytest.approx(card["recalibration"]["validation"]["drop_bound"], abs=1e-12)
