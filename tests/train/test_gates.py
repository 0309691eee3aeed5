"""Exit rules and threshold calibration on synthetic heads."""
import numpy as np
import pytest

pytest.importorskip("torch", reason="pyruntime.train needs torch (pip install -e '.[train]')")

from pyruntime.train.gates import apply_exits, calibrate, exit_stats, rule_score  # noqa: E402


def _reference_exits(final, heads, rules, thresholds):
    """The contract, written per sample."""
    rows, idx = [], []
    for i in range(final.shape[0]):
        for k, (h, r, t) in enumerate(zip(heads, rules, thresholds)):
            top = sorted(h[i].tolist(), reverse=True)
            score = top[0] - top[1] if r == "margin" else top[0]
            if score >= t:
                rows.append(h[i])
                idx.append(k)
                break
        else:
            rows.append(final[i])
            idx.append(len(heads))
    return np.stack(rows), np.array(idx)


def test_rule_scores():
    s = np.array([[0.1, 3.0, 2.5], [-1.0, -2.0, -0.5]])
    assert np.allclose(rule_score(s, "margin"), [0.5, 0.5])
    assert np.allclose(rule_score(s, "max"), [3.0, -0.5])


def test_apply_exits_matches_per_sample_contract():
    rng = np.random.default_rng(0)
    final = rng.normal(size=(200, 10)).astype(np.float32)
    heads = [rng.normal(size=(200, 10)).astype(np.float32) for _ in range(2)]
    for rules, th in ((["margin", "max"], [0.8, 1.5]), (["max", "margin"], [2.0, 0.3]), (["margin", "margin"], [1e9, 0.0])):
        out, idx = apply_exits(final, heads, rules, th)
        ro, ri = _reference_exits(final, heads, rules, th)
        assert np.array_equal(idx, ri)
        assert np.array_equal(out, ro)


def _synthetic_case(n=4000, seed=0):
    """Gate 0 is right and confident on 'easy' samples, gate 1 on more, the final head on 95%."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    easy = rng.random(n)

    def head(acc, conf_frac):
        s = rng.normal(0, 0.3, size=(n, 10))
        correct = rng.random(n) < acc
        wrong = (y + rng.integers(1, 10, n)) % 10
        lab = np.where(correct, y, wrong)
        confident = easy < conf_frac
        s[np.arange(n), lab] += np.where(confident & correct, 3.0, 0.6)
        return s.astype(np.float32)

    return y, [head(0.7, 0.4), head(0.85, 0.7)], head(0.95, 1.0)


def test_calibration_meets_accuracy_target():
    y, heads, final = _synthetic_case()
    fr = [0.1, 0.5]
    base = float((final.argmax(1) == y).mean())
    cal = calibrate(final, heads, y, fr, max_drop=0.005, n_candidates=24)
    assert cal["accuracy"] >= base - 0.005 - 1e-12
    assert cal["expected_macs"] < 0.8  # confident, correct samples do exit
    st = exit_stats(final, heads, cal["rules"], cal["thresholds"], y, fr)
    assert st["accuracy"] == pytest.approx(cal["accuracy"])
    assert st["expected_macs"] == pytest.approx(cal["expected_macs"])
    assert sum(r["rate"] for r in st["per_exit"]) == pytest.approx(1.0)
    # a looser target never costs more MACs
    loose = calibrate(final, heads, y, fr, max_drop=0.05, n_candidates=24)
    assert loose["expected_macs"] <= cal["expected_macs"] + 1e-12
    assert loose["accuracy"] >= base - 0.05 - 1e-12


def test_calibration_meets_macs_budget():
    y, heads, final = _synthetic_case(seed=1)
    fr = [0.1, 0.5]
    cal = calibrate(final, heads, y, fr, macs_budget=0.4, n_candidates=24)
    assert cal["expected_macs"] <= 0.4 + 1e-12
    st = exit_stats(final, heads, cal["rules"], cal["thresholds"], y, fr)
    assert st["expected_macs"] == pytest.approx(cal["expected_macs"])
    assert all(np.isfinite(cal["thresholds"]))
