"""Per-sample early exit: the contract's validation, and predict() against the oracle the
contract defines from the model's own full run (every head)."""
import json
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyruntime
from pyruntime import ModelError
from pyruntime.exits import fire

C = 10


def _linear(inits, rng, name, a, b, inp, out, relu):
    inits.append(numpy_helper.from_array(rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32), name + "W"))
    inits.append(numpy_helper.from_array(rng.normal(0, 0.1, b).astype(np.float32), name + "B"))
    nodes = [helper.make_node("MatMul", [inp, name + "W"], [name + "m"]),
             helper.make_node("Add", [name + "m", name + "B"], [name + "a" if relu else out])]
    if relu:
        nodes.append(helper.make_node("Relu", [name + "a"], [out]))
    return nodes


def gated_mlp(residual=False, spec=None, seed=0, mutate=None):
    """x -> h1 (gate0) -> h2 [+ h1 residual] (gate1) -> y."""
    rng = np.random.default_rng(seed)
    inits = []
    nodes = _linear(inits, rng, "l1", 32, 16, "x", "h1", True)
    nodes += _linear(inits, rng, "g0", 16, C, "h1", "gate0", False)
    nodes += _linear(inits, rng, "l2", 16, 16, "h1", "h2a" if residual else "h2", True)
    if residual:
        nodes.append(helper.make_node("Add", ["h2a", "h1"], ["h2"]))
    nodes += _linear(inits, rng, "g1", 16, C, "h2", "gate1", False)
    nodes += _linear(inits, rng, "l3", 16, C, "h2", "y", False)
    if mutate:
        nodes = mutate(nodes)
    out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", C]) for n in ("y", "gate0", "gate1")]
    g = helper.make_graph(nodes, "ee", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])], out, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    spec = spec if spec is not None else {"version": 1, "final": "y", "exits": [
        {"output": "gate0", "rule": "margin", "threshold": 0.15, "macs_fraction": 0.4},
        {"output": "gate1", "rule": "max", "threshold": 0.6, "macs_fraction": 0.7}]}
    helper.set_model_props(m, {"pyruntime.exits": json.dumps(spec)})
    return m


def oracle(model, x):
    """What the contract says predict must return, from run() with every head."""
    y, g0, g1 = model.run(None, {"x": x})
    t = list(model.exits)
    gates = [(g0, "margin", t[0]), (g1, "max", t[1])]
    out, idx = y.copy(), np.full(len(x), 2, np.int64)
    decided = np.zeros(len(x), bool)
    for k, (scores, rule, thr) in enumerate(gates):
        f = fire(scores, rule, thr) & ~decided
        out[f], idx[f] = scores[f], k
        decided |= f
    return out, idx


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_predict_matches_the_contract_oracle(residual, batch):
    model = pyruntime.load(gated_mlp(residual))
    x = np.random.default_rng(batch).random((batch, 32), dtype=np.float32)
    out, idx = model.predict(x, return_exit=True)
    want, want_idx = oracle(model, x)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(out, want)
    assert idx.dtype == np.int64


def test_a_batch_mixes_every_exit_and_rows_keep_input_order():
    model = pyruntime.load(gated_mlp())
    x = np.random.default_rng(5).random((256, 32), dtype=np.float32)
    out, idx = model.predict(x, return_exit=True)
    assert set(np.unique(idx)) == {0, 1, 2}, np.bincount(idx)
    want, want_idx = oracle(model, x)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)


@pytest.mark.parametrize("t0,t1,expect", [(-np.inf, 0.6, 0), (np.inf, np.inf, 2), (np.inf, -np.inf, 1)])
def test_infinite_thresholds(t0, t1, expect):
    model = pyruntime.load(gated_mlp())
    model.exits[0], model.exits[1] = t0, t1
    x = np.random.default_rng(1).random((9, 32), dtype=np.float32)
    out, idx = model.predict(x, return_exit=True)
    assert (idx == expect).all()
    y, g0, g1 = model.run(None, {"x": x})
    np.testing.assert_array_equal(out, [g0, g1, y][expect])


def test_gate_ties_fire_at_threshold_zero():
    """gate0's scores all equal (margin 0): the margin rule fires exactly at threshold 0."""
    m = gated_mlp()
    for n in m.graph.node:
        if list(n.output) == ["gate0"]:
            n.output[0] = "gate0raw"
    m.graph.node.append(helper.make_node("Mul", ["gate0raw", "zero"], ["gate0"]))
    m.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    model = pyruntime.load(m)
    x = np.random.default_rng(2).random((4, 32), dtype=np.float32)
    model.exits[0] = 0.0
    _, idx = model.predict(x, return_exit=True)
    assert (idx == 0).all()
    model.exits[0] = 1e-6
    _, idx = model.predict(x, return_exit=True)
    assert (idx != 0).all()


def test_exits_false_runs_the_full_graph_and_run_computes_every_head():
    x = np.random.default_rng(3).random((16, 32), dtype=np.float32)
    full = pyruntime.load(gated_mlp(), exits=False)
    out, idx = full.predict(x, return_exit=True)
    np.testing.assert_array_equal(out, full.run(None, {"x": x})[0])
    assert (idx == 2).all()
    assert len(pyruntime.load(gated_mlp()).run(None, {"x": x})) == 3


def test_exit_stats_count_and_reset():
    model = pyruntime.load(gated_mlp())
    x = np.random.default_rng(4).random((64, 32), dtype=np.float32)
    _, idx = model.predict(x, return_exit=True)
    stats = model.exit_stats()
    assert stats["total"] == 64
    assert list(stats["counts"].values()) == np.bincount(idx, minlength=3).tolist()
    model.reset_exit_stats()
    assert model.exit_stats()["total"] == 0


def test_thresholds_set_from_many_threads_are_safe_and_last():
    model = pyruntime.load(gated_mlp())
    x = np.random.default_rng(6).random((32, 32), dtype=np.float32)
    errors = []

    def worker(i):
        try:
            for _ in range(50):
                model.exits[i % 2] = float(i)
                model.predict(x)
        except Exception as exc:  # pragma: no cover - a failure is what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    model.exits[0], model.exits[1] = 0.15, 0.6
    assert list(model.exits) == [0.15, 0.6]
    with pytest.raises(pyruntime.InputError):
        model.exits[0] = float("nan")


BAD = [
    ({"version": 2, "final": "y", "exits": []}, "version"),
    ({"version": 1, "final": "gate0", "exits": []}, "final"),
    ({"version": 1, "final": "y", "exits": [{"output": "nope", "rule": "max", "threshold": 1, "macs_fraction": .5}]},
     "output"),
    ({"version": 1, "final": "y", "exits": [{"output": "gate0", "rule": "entropy", "threshold": 1,
                                             "macs_fraction": .5}]}, "rule"),
    ({"version": 1, "final": "y", "exits": [{"output": "gate0", "rule": "max", "threshold": float("inf"),
                                             "macs_fraction": .5}]}, "threshold"),
    ({"version": 1, "final": "y", "exits": [
        {"output": "gate0", "rule": "max", "threshold": 1, "macs_fraction": .6},
        {"output": "gate1", "rule": "max", "threshold": 1, "macs_fraction": .5}]}, "macs_fraction"),
    ({"version": 1, "final": "y", "exits": [{"output": "gate0", "rule": "max", "threshold": 1, "macs_fraction": 1.2}]},
     "macs_fraction"),
    ({"version": 1, "final": "y", "exits": [
        {"output": "gate1", "rule": "max", "threshold": 1, "macs_fraction": .4},
        {"output": "gate0", "rule": "max", "threshold": 1, "macs_fraction": .6}]}, "depth order"),
]


@pytest.mark.parametrize("spec,fragment", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_malformed_exit_metadata_is_refused_at_load(spec, fragment):
    with pytest.raises(ModelError, match=fragment):
        pyruntime.load(gated_mlp(spec=spec))


def test_invalid_json_is_refused():
    m = gated_mlp()
    helper.set_model_props(m, {"pyruntime.exits": "{not json"})
    with pytest.raises(ModelError, match="JSON"):
        pyruntime.load(m)


def test_a_segment_that_mixes_rows_is_refused():
    def mix(nodes):  # the trunk after gate 0 reduces over the batch axis
        at = next(i for i, n in enumerate(nodes) if list(n.output) == ["h2"])
        nodes[at].output[0] = "h2pre"
        return nodes[:at + 1] + [helper.make_node("ReduceMean", ["h2pre"], ["h2m"], axes=[0], keepdims=1),
                                 helper.make_node("Add", ["h2pre", "h2m"], ["h2"])] + nodes[at + 1:]

    with pytest.raises(ModelError, match="mixes rows"):
        pyruntime.load(gated_mlp(mutate=mix))


def test_the_shipped_student_follows_the_contract():
    """The zoo's int8 early-exit student: every sample's row and exit index are exactly
    what the contract picks from the model's own full run."""
    from pyruntime import zoo

    model = pyruntime.load(zoo.path(), threads=1)
    assert len(model.exits) == 2
    x = np.random.default_rng(9).random((64, 1, 28, 28), dtype=np.float32)
    heads = model.run(None, {model.inputs[0].name: x})
    rules = [g.rule for g in model._gates]
    out, idx = model.predict(x, return_exit=True)
    want, want_idx = heads[0].copy(), np.full(64, 2)
    decided = np.zeros(64, bool)
    for k in range(2):
        f = fire(heads[k + 1], rules[k], model.exits[k]) & ~decided
        want[f], want_idx[f] = heads[k + 1][f], k
        decided |= f
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("rule", ["margin", "max"])
def test_native_rule_equals_the_reference_rule(dtype, rule):
    """The executor's rule against exits.fire, the normative one: ties, NaN rows, one and
    zero classes, int8 extremes (top1 - top2 = 255 must not wrap) and +-inf thresholds."""
    from pyruntime import _native

    rng = np.random.default_rng(7)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    for classes in (0, 1, 2, 10):
        if info is not None:
            scores = rng.integers(max(info.min, -300), min(info.max, 300), (200, classes), endpoint=True).astype(dtype)
            if classes >= 2:
                scores[:20, :2] = [info.max, info.min]
                scores[20:40, :2] = scores[20:40, 1:2]  # ties
        else:
            scores = rng.normal(0, 2, (200, classes)).astype(dtype)
            if classes >= 2:
                scores[:20, 1] = scores[:20, 0]  # ties
                scores[20:30, 0] = np.nan
                scores[30:40, 1] = np.inf
        thresholds = [-np.inf, -1.0, 0.0, 0.5, 1.0, 3.0, 255.0, np.inf]
        if info is not None:
            thresholds += [float(np.median(scores)) if scores.size else 0.0]
        for t in thresholds:
            native = _native.ExitRunner.rule_fires(("margin", "max").index(rule), scores, t)
            np.testing.assert_array_equal(native, fire(scores, rule, t), err_msg=f"{classes=} {t=}")


def test_concurrent_predicts_with_exits_equal_the_single_threaded_ones():
    """The native exit loop keeps its buffers per thread: batches of different sizes from
    four threads at once give what each gives alone."""
    model = pyruntime.load(gated_mlp(residual=True))
    rng = np.random.default_rng(11)
    batches = [rng.random((n, 32), dtype=np.float32) for n in (1, 3, 17, 64, 100, 5, 33, 2)]
    alone = [model.predict(x, return_exit=True) for x in batches]
    errors = []

    def worker(offset):
        for rep in range(20):
            i = (offset + rep) % len(batches)
            out, idx = model.predict(batches[i], return_exit=True)
            if not (np.array_equal(out, alone[i][0]) and np.array_equal(idx, alone[i][1])):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({int(i) for _, idx in alone for i in idx}) == 3  # every exit is exercised
