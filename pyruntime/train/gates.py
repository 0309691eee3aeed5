"""Decision gates (Shafiee et al.): hinge-trained heads at stage boundaries, threshold
calibration under an accuracy-drop or MAC-budget target, and the contract's exit rules.

A gate reads a frozen trunk: its input is parameter-free pooling of the stage output, so
the pooled features are computed once and the gate's linear layer trains on them.
The exit rules follow DESIGN.md's early-exit contract: `margin` exits when
top1 - top2 >= threshold, `max` when top1 >= threshold, on the head's raw scores.
"""
from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import engine
from .models import Gate, GateConfig, Student

RULES = ("margin", "max")
NEVER = 1.0e9  # a finite threshold no score reaches: the gate never fires


# ----------------------------------------------------------------------------- losses
def multiclass_hinge(scores: torch.Tensor, y: torch.Tensor, margin: float = 1.0,
                     kind: str = "crammer_singer") -> torch.Tensor:
    """Multi-class hinge loss, averaged over the batch.

    crammer_singer: max(0, margin - s_y + max_{j != y} s_j)  (what the `margin` rule reads)
    weston_watkins: sum_{j != y} max(0, margin - s_y + s_j)
    """
    sy = scores.gather(1, y[:, None])
    viol = margin - sy + scores
    viol = viol.scatter(1, y[:, None], float("-inf") if kind == "crammer_singer" else 0.0)
    if kind == "crammer_singer":
        return viol.max(1).values.clamp_min(0).mean()
    if kind == "weston_watkins":
        return viol.clamp_min(0).sum(1).mean()
    raise ValueError(f"unknown hinge kind {kind!r}")


# ----------------------------------------------------------------------------- training
def make_gates(student: Student, gate_cfgs) -> list[Gate]:
    return [Gate(g, student.stage_shapes[g.stage], student.cfg.num_classes) for g in gate_cfgs]


@torch.no_grad()
def pooled_features(student, gates, x, feature_fn=None, bs=1000, desc="gate features") -> list[torch.Tensor]:
    """Per gate, the pooled (flattened) features of the frozen trunk on x.
    feature_fn(xb) -> {stage: tensor} overrides the trunk (e.g. the int8-simulated one)."""
    feature_fn = feature_fn or (lambda xb: student.forward_features(xb))
    student.eval()
    outs = [[] for _ in gates]
    x = torch.as_tensor(x)
    for i in tqdm(range(0, len(x), bs), desc=desc, leave=False):
        feats = feature_fn(x[i:i + bs])
        for k, g in enumerate(gates):
            outs[k].append(g.pool(feats[g.gcfg.stage]))
    return [torch.cat(o) for o in outs]


def train_gate(gate: Gate, feats: torch.Tensor, y, loss: str = "hinge", epochs: int = 30, lr: float = 3e-3,
               weight_decay: float = 1e-4, batch_size: int = 256, seed: int = 0, progress=True, desc=None):
    """Trains gate.fc on precomputed pooled features (the trunk is frozen)."""
    y = torch.as_tensor(y)
    torch.manual_seed(seed)

    def loss_fn(m, fb, yb, idx, flip, prog):
        s = m(fb)
        return multiclass_hinge(s, yb) if loss == "hinge" else F.cross_entropy(s, yb)

    return engine.fit(gate.fc, feats, y, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      optimizer="adamw", loss_fn=loss_fn, seed=seed, desc=desc or f"gate ({loss})",
                      progress=progress)


def train_gates(student, gate_cfgs, train_x, train_y, loss="hinge", epochs=30, seed=0, progress=True,
                feats=None, feature_fn=None):
    gates = make_gates(student, gate_cfgs)
    for k, g in enumerate(gates):
        torch.manual_seed(seed + k)
        g.fc.reset_parameters() if hasattr(g.fc, "reset_parameters") else None
    if feats is None:
        feats = pooled_features(student, gates, train_x, feature_fn=feature_fn)
    for k, g in enumerate(gates):
        train_gate(g, feats[k], train_y, loss=loss, epochs=epochs, seed=seed + k, progress=progress,
                   desc=f"gate {g.gcfg.stage} ({loss})")
        g.eval()
    return gates, feats


@torch.no_grad()
def gate_logits(gates, feats) -> list[np.ndarray]:
    return [g.fc(f).numpy() for g, f in zip(gates, feats)]


# ----------------------------------------------------------------------------- rules
def rule_score(scores: np.ndarray, rule: str) -> np.ndarray:
    s = np.sort(np.asarray(scores, dtype=np.float64), axis=1)
    if rule == "margin":
        return s[:, -1] - s[:, -2]
    if rule == "max":
        return s[:, -1]
    raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")


def apply_exits(final: np.ndarray, heads: list, rules: list, thresholds: list):
    """The contract, per sample: the first gate whose rule fires supplies the row and the
    exit index k; samples no gate takes get the final head's row and index K."""
    final = np.asarray(final)
    n, K = final.shape[0], len(heads)
    out = final.copy()
    idx = np.full(n, K, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    for k, (h, r, t) in enumerate(zip(heads, rules, thresholds)):
        fire = open_ & (rule_score(h, r) >= t)
        out[fire] = np.asarray(h)[fire]
        idx[fire] = k
        open_ &= ~fire
    return out, idx


def exit_stats(final, heads, rules, thresholds, y, macs_fractions) -> dict:
    """Accuracy, expected MACs (fraction of the full graph) and per-gate rows."""
    out, idx = apply_exits(final, heads, rules, thresholds)
    y = np.asarray(y)
    K = len(heads)
    fr = np.append(np.asarray(macs_fractions, dtype=np.float64), 1.0)
    correct = out.argmax(1) == y
    rows = []
    for k in range(K + 1):
        m = idx == k
        rows.append({"exit": k, "name": f"gate {k}" if k < K else "final", "rate": float(m.mean()),
                     "accuracy": float(correct[m].mean()) if m.any() else float("nan"),
                     "macs_fraction": float(fr[k])})
    return {"accuracy": float(correct.mean()), "expected_macs": float(fr[idx].mean()), "per_exit": rows,
            "exit_index": idx}


# ----------------------------------------------------------------------------- calibration
def _options(head, n_cand, rules):
    """Candidate (rule, threshold) pairs for one gate: quantiles of each rule's score."""
    opts = [("max", NEVER)]
    for r in rules:
        sc = rule_score(head, r)
        qs = np.unique(np.quantile(sc, np.linspace(0.0, 1.0, n_cand)))
        opts += [(r, float(t)) for t in qs]
    return opts


def drop_se(n: int, drop: float, n_differ: int) -> float:
    """Standard error of the paired accuracy drop mean(d), d_i = correct_full_i -
    correct_exit_i in {-1, 0, 1} (sample variance). Only samples whose deciding head and
    final head disagree on correctness have d_i != 0, so sum(d_i^2) is `n_differ`."""
    if n < 2:
        return 0.0
    return math.sqrt(max(n_differ - n * drop * drop, 0.0) / (n - 1) / n)


def _totals(fire, corrects, differs, fr) -> tuple[int, int, float]:
    """(correct answers, samples whose deciding head and final head differ in correctness,
    summed MAC fractions) when gate k fires on fire[k], per the contract."""
    open_ = np.ones(len(corrects[-1]), dtype=bool)
    correct = n_differ = 0
    macs = 0.0
    for k, fk in enumerate(fire):
        f = fk & open_
        cnt = int(f.sum())
        if cnt:
            correct += int((corrects[k] & f).sum())
            n_differ += int((differs[k] & f).sum())
            macs += cnt * fr[k]
            open_ &= ~f
    rest = int(open_.sum())
    return correct + int((corrects[-1] & open_).sum()), n_differ, macs + rest * fr[-1]


def _within(n: int, correct: int, base_correct: int, n_differ: int, max_drop: float, z: float) -> bool:
    """drop + z*se <= max_drop, written on accuracies so z = 0 is the point estimate exactly."""
    acc, base = correct / n, base_correct / n
    return acc - z * drop_se(n, base - acc, n_differ) >= base - max_drop - 1e-12


def _backoff_threshold(score: np.ndarray, threshold: float, lam: float) -> float:
    """A threshold on this gate's score that fires on the lam share of the samples `threshold`
    fires on, the most confident first: lam 0 never fires, lam 1 is `threshold` itself."""
    m = int((score >= threshold).sum())
    take = int(math.ceil(lam * m - 1e-9))
    if take == 0:
        return NEVER
    return threshold if take == m else float(np.sort(score)[::-1][take - 1])


def calibrate(final, heads, y, macs_fractions, *, max_drop: float = 0.005, macs_budget: float | None = None,
              confidence: float | None = 0.95, holdout: float | None = 0.5, seed: int = 0, rules=RULES,
              n_candidates: int | None = None, return_sweep: bool = False, backoff_steps: int = 20) -> dict:
    """Chooses a rule and a threshold per gate on held-out data.

    Target: with `macs_budget` None, the lowest expected MACs whose accuracy drop against
    the final head stays within `max_drop` (a fraction: 0.005 = 0.5pp) at one-sided
    `confidence`: drop + z * drop_se <= max_drop, z the normal quantile of `confidence`.

    The search is exhaustive over a grid of score quantiles per gate and rule (plus 'never
    exit'), about 20000 combinations. Checking the bound on the samples the search ran on
    is biased: among so many combinations near the boundary it picks those whose drop
    happens to be low on these samples, and on fresh data they miss the target far more
    often than 1 - confidence. So with `holdout` (a fraction), a seeded part of the samples
    takes no part in the search. The search part picks the rules and thresholds. The
    held-out part then tests a nested path towards them, from 'never exit' through gates
    that take the most confident lam share of what the picked thresholds take, lam rising
    in `backoff_steps` steps to 1, and keeps the last step before the first that fails
    its bound (fixed-sequence testing, as in Learn-then-Test): the bound then holds at
    `confidence` with no penalty for the number of steps tested. `holdout` None: search
    and check on all samples (the biased form).

    With a budget (a fraction of the full graph's MACs): the best accuracy within it on all
    samples; `confidence` then only sets the bound reported.
    """
    if confidence is not None and not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1) or None, got {confidence!r}")
    if holdout is not None and not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be a fraction in (0, 1) or None, got {holdout!r}")
    z = NormalDist().inv_cdf(confidence) if confidence is not None else 0.0
    final = np.asarray(final)
    y = np.asarray(y)
    K = len(heads)
    fr = np.append(np.asarray(macs_fractions, dtype=np.float64), 1.0)
    if n_candidates is None:
        n_candidates = max(4, int(round((20000.0 ** (1.0 / max(K, 1))) / len(rules))))
    opts = [_options(h, n_candidates, rules) for h in heads]
    fires = [[rule_score(h, r) >= t for (r, t) in o] for h, o in zip(heads, opts)]
    corrects = [np.asarray(h).argmax(1) == y for h in heads] + [final.argmax(1) == y]
    differs = [c != corrects[-1] for c in corrects[:-1]]
    n = len(y)
    split = macs_budget is None and holdout is not None
    if split:
        perm = np.random.default_rng(seed).permutation(n)
        n_test = int(round(n * holdout))
        if min(n_test, n - n_test) < 2:
            raise ValueError(f"holdout {holdout} of {n} samples leaves a part with fewer than 2")
        search, test = np.sort(perm[n_test:]), np.sort(perm[:n_test])
    else:
        search = test = np.arange(n)

    def measure(fire, rows=None):  # rows None: every sample
        if rows is None:
            return np.array(_totals(fire, corrects, differs, fr), dtype=np.float64)
        return np.array(_totals([f[rows] for f in fire], [c[rows] for c in corrects],
                                [d[rows] for d in differs], fr), dtype=np.float64)

    combos = list(itertools.product(*[range(len(o)) for o in opts]))
    fires_s = [[f[search] for f in fk] for fk in fires]  # the search part, sliced once
    corrects_s, differs_s = [c[search] for c in corrects], [d[search] for d in differs]
    searched = np.array([_totals([fires_s[k][c] for k, c in enumerate(combo)], corrects_s, differs_s, fr)
                         for combo in combos], dtype=np.float64)  # columns: correct, n_differ, macs
    n_s = len(search)
    base_s = int(corrects[-1][search].sum())
    if macs_budget is not None:
        ok = np.flatnonzero(searched[:, 2] / n <= macs_budget + 1e-12)
        key = lambda i: (-searched[i, 0], searched[i, 2])  # noqa: E731
    else:  # never-exit always qualifies
        ok = [i for i in range(len(combos)) if _within(n_s, searched[i, 0], base_s, searched[i, 1], max_drop, z)]
        key = lambda i: (searched[i, 2], -searched[i, 0])  # noqa: E731
    pick = min(ok, key=key) if len(ok) else combos.index(tuple(0 for _ in heads))
    chosen = [opts[k][c] for k, c in enumerate(combos[pick])]
    scores = [rule_score(h, r) for h, (r, _) in zip(heads, chosen)]
    thresholds = [t for _, t in chosen]

    n_t = len(test)
    base_t = int(corrects[-1][test].sum())
    if split:
        passed = [NEVER] * K
        for step in range(1, backoff_steps + 1):
            lam = step / backoff_steps
            ts = [_backoff_threshold(sc, t, lam) for sc, t in zip(scores, thresholds)]
            c, d, _ = measure([sc >= t for sc, t in zip(scores, ts)], test)
            if not _within(n_t, c, base_t, d, max_drop, z):
                break
            passed = ts
        thresholds = passed
    fire = [sc >= t for sc, t in zip(scores, thresholds)]
    c_t, d_t, _ = measure(fire, test)
    c_all, _, macs_all = measure(fire)
    base = int(corrects[-1].sum()) / n
    drop_t = base_t / n_t - c_t / n_t  # the same float as `drop` when the check ran on all samples
    res = {"rules": [r for r, _ in chosen], "thresholds": thresholds, "accuracy": c_all / n,
           "expected_macs": macs_all / n, "base_accuracy": base, "drop": base - c_all / n,
           "drop_bound": drop_t + z * drop_se(n_t, drop_t, int(d_t)), "bound_samples": n_t,
           "target": {"max_drop": max_drop, "macs_budget": macs_budget, "confidence": confidence,
                      "holdout": holdout if split else None, "seed": seed}}
    if return_sweep:
        every = searched if not split else np.array([measure([fires[k][c] for k, c in enumerate(combo)])
                                                     for combo in combos])  # the search ran on every sample
        res["pareto"] = pareto(zip((every[:, 2] / n).tolist(), (every[:, 0] / n).tolist()))
    return res


def describe_target(target: dict) -> str:
    """calibrate's `target` in words, for reports and the zoo card."""
    if target.get("macs_budget") is not None:
        return f"MAC budget {target['macs_budget']:g} of the full graph"
    conf = target.get("confidence")
    how = "point estimate" if conf is None or conf == 0.5 else f"one-sided {100 * conf:g}% confidence bound"
    if target.get("holdout"):
        return (f"accuracy drop <= {100 * target['max_drop']:g}pp ({how} on {100 * target['holdout']:g}% of the "
                f"validation split held out of the threshold search)")
    return f"accuracy drop <= {100 * target['max_drop']:g}pp ({how}, validation split)"


def pareto(points) -> list[tuple[float, float]]:
    """The (expected MACs, accuracy) points no other point beats on both."""
    pts = sorted(set(points), key=lambda p: (p[0], -p[1]))
    out, best_acc = [], -1.0
    for em, acc in pts:
        if acc > best_acc:
            out.append((em, acc))
            best_acc = acc
    return out
