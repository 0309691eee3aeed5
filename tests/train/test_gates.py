"""Exit rules and threshold calibration on synthetic heads."""
import itertools
from statistics import NormalDist

import numpy as np
import pytest

pytest.importorskip("torch", reason="pyruntime.train needs torch (pip install -e '.[train]')")

from pyruntime.train.gates import _options, apply_exits, calibrate, exit_stats, rule_score  # noqa: E402


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
    cal = calibrate(final, heads, y, fr, max_drop=0.005, n_candidates=24, holdout=None)
    assert cal["accuracy"] >= base - 0.005 - 1e-12
    assert cal["expected_macs"] < 0.8  # confident, correct samples do exit
    st = exit_stats(final, heads, cal["rules"], cal["thresholds"], y, fr)
    assert st["accuracy"] == pytest.approx(cal["accuracy"])
    assert st["expected_macs"] == pytest.approx(cal["expected_macs"])
    assert sum(r["rate"] for r in st["per_exit"]) == pytest.approx(1.0)
    # a looser target never costs more MACs
    loose = calibrate(final, heads, y, fr, max_drop=0.05, n_candidates=24, holdout=None)
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


def _paired_drop_bound(final, heads, y, cal, confidence):
    """The bound from its definition, per sample: d_i = correct_full_i - correct_exit_i."""
    out, _ = apply_exits(final, heads, cal["rules"], cal["thresholds"])
    d = (final.argmax(1) == y).astype(np.float64) - (out.argmax(1) == y)
    return d.mean() + NormalDist().inv_cdf(confidence) * d.std(ddof=1) / np.sqrt(len(d))


def test_confidence_bound_is_stricter_than_the_point_estimate():
    y, heads, final = _synthetic_case()
    fr = [0.1, 0.5]
    point = calibrate(final, heads, y, fr, max_drop=0.005, n_candidates=24, confidence=None, holdout=None)
    bounded = calibrate(final, heads, y, fr, max_drop=0.005, n_candidates=24, confidence=0.95, holdout=None)
    # the point estimate's choice meets the target but not its 95% bound, so the bound must move
    assert point["drop"] <= 0.005 + 1e-12
    assert _paired_drop_bound(final, heads, y, point, 0.95) > 0.005
    assert bounded["expected_macs"] > point["expected_macs"]
    assert bounded["drop_bound"] == pytest.approx(_paired_drop_bound(final, heads, y, bounded, 0.95), abs=1e-12)
    assert bounded["drop_bound"] <= 0.005 + 1e-12
    assert bounded["target"] == {"max_drop": 0.005, "macs_budget": None, "confidence": 0.95, "holdout": None,
                                 "seed": 0}
    st = exit_stats(final, heads, bounded["rules"], bounded["thresholds"], y, fr)
    assert st["expected_macs"] == pytest.approx(bounded["expected_macs"])


def test_confidence_none_is_the_point_estimate():
    """None and 0.5 choose what the exhaustive search without a bound chooses: the lowest
    expected MACs whose validation accuracy is within max_drop (written here from exit_stats)."""
    y, heads, final = _synthetic_case(seed=2)
    fr = [0.1, 0.5]
    cal = calibrate(final, heads, y, fr, max_drop=0.005, n_candidates=8, confidence=None, holdout=None)
    half = calibrate(final, heads, y, fr, max_drop=0.005, n_candidates=8, confidence=0.5, holdout=None)
    assert (half["rules"], half["thresholds"]) == (cal["rules"], cal["thresholds"])
    assert cal["drop_bound"] == cal["drop"]
    base = float((final.argmax(1) == y).mean())
    best = None
    for combo in itertools.product(*[_options(h, 8, ("margin", "max")) for h in heads]):
        st = exit_stats(final, heads, [r for r, _ in combo], [t for _, t in combo], y, fr)
        if st["accuracy"] >= base - 0.005 - 1e-12 and (best is None or (st["expected_macs"], -st["accuracy"]) < best):
            best = (st["expected_macs"], -st["accuracy"])
    assert (cal["expected_macs"], -cal["accuracy"]) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("confidence", [0.3, 1.0])
def test_confidence_out_of_range_is_refused(confidence):
    y, heads, final = _synthetic_case(n=100)
    with pytest.raises(ValueError, match="confidence"):
        calibrate(final, heads, y, [0.1, 0.5], confidence=confidence)


def _split(n, holdout, seed):
    """calibrate's held-out rows, as its docstring defines them."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:int(round(n * holdout))])


def test_holdout_bound_is_stated_on_the_held_out_rows():
    y, heads, final = _synthetic_case(seed=3)
    fr = [0.1, 0.5]
    cal = calibrate(final, heads, y, fr, max_drop=0.005, n_candidates=16, holdout=0.5, seed=4)
    test = _split(len(y), 0.5, 4)
    assert cal["bound_samples"] == len(test)
    on_test = _paired_drop_bound(final[test], [h[test] for h in heads], y[test], cal, 0.95)
    assert cal["drop_bound"] == pytest.approx(on_test, abs=1e-12)
    assert cal["drop_bound"] <= 0.005 + 1e-12
    assert cal["expected_macs"] < 0.8
    st = exit_stats(final, heads, cal["rules"], cal["thresholds"], y, fr)
    assert (st["accuracy"], st["expected_macs"]) == pytest.approx((cal["accuracy"], cal["expected_macs"]))
    assert cal["target"]["holdout"] == 0.5 and cal["target"]["seed"] == 4


def test_holdout_that_refutes_the_search_keeps_every_gate_shut():
    """Heads confident and right on the search rows but confident and wrong on the held-out
    rows: the search picks eager gates, the first back-off step fails, nothing exits."""
    y, heads, final = _synthetic_case(n=2000, seed=5)
    test = _split(len(y), 0.5, 0)
    heads = [h.copy() for h in heads]
    for h in heads:
        h[:] = 0.0
        h[np.arange(len(y)), y] = 5.0
        h[test] = 0.0
        h[test, (y[test] + 1) % 10] = 5.0
    cal = calibrate(final, heads, y, [0.1, 0.5], max_drop=0.005, n_candidates=8, holdout=0.5, seed=0)
    assert cal["thresholds"] == [1.0e9, 1.0e9]
    assert cal["expected_macs"] == 1.0 and cal["drop"] == 0.0 and cal["drop_bound"] == 0.0
    eager = calibrate(final, heads, y, [0.1, 0.5], max_drop=0.6, n_candidates=8, holdout=None)
    assert eager["expected_macs"] < 0.2  # so the shut gates are the holdout's doing


def _noisy_case(n, seed):
    """Heads whose confidence only loosely tracks correctness: a hidden difficulty sets both
    the chance of being right and, through noise, the size of the winning score."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    hard = rng.random(n) ** 2

    def head(skill):
        correct = rng.random(n) < 1.0 / (1.0 + np.exp(6.0 * hard - skill))
        lab = np.where(correct, y, (y + rng.integers(1, 10, n)) % 10)
        s = rng.normal(0, 0.5, size=(n, 10))
        s[np.arange(n), lab] += 4.0 - 3.0 * hard + rng.normal(0, 1.0, n)
        return s.astype(np.float32)

    return y, [head(4.0), head(4.5)], head(5.0)


def test_holdout_keeps_fresh_data_within_the_target():
    """The point of the held-out check: thresholds chosen on 1500 samples, then measured on
    20000 fresh ones from the same source. Searching and checking on the same samples
    overshoots 0.5pp on fresh data far more often than the 5% its bound promises."""
    fr = [0.1, 0.5]
    over = {None: 0, 0.5: 0}
    for r in range(48):
        y, heads, final = _noisy_case(21500, seed=100 + r)
        c, f = slice(0, 1500), slice(1500, None)
        base = float((final[f].argmax(1) == y[f]).mean())
        for holdout in over:
            cal = calibrate(final[c], [h[c] for h in heads], y[c], fr, max_drop=0.005, n_candidates=12,
                            holdout=holdout, seed=r)
            st = exit_stats(final[f], [h[f] for h in heads], cal["rules"], cal["thresholds"], y[f], fr)
            over[holdout] += base - st["accuracy"] > 0.005
    assert over[0.5] <= 4, over  # about the 5% promised, of 48
    assert over[None] >= over[0.5] + 5, over


@pytest.mark.parametrize("holdout", [0.0, 1.0, -0.5])
def test_holdout_out_of_range_is_refused(holdout):
    y, heads, final = _synthetic_case(n=100)
    with pytest.raises(ValueError, match="holdout"):
        calibrate(final, heads, y, [0.1, 0.5], holdout=holdout)
