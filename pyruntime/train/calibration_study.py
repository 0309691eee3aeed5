"""Does the exit calibration keep its promise on fresh data? Answered on the validation
split alone: split it at random into two halves many times; calibrate on one half, measure
the accuracy drop on the other, and count how often it exceeds the target. The test set is
not touched.

`python -m pyruntime.train calibration-study [MODEL.onnx] --reps 100`
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import export as E
from . import gates as G


def run_calibration_study(model_path, cfg, reps: int = 100, holdouts=(None, 0.5), log=print) -> dict:
    import onnx

    from .pipeline import _load
    model = onnx.load(str(model_path))
    data = _load(cfg)
    gate_outs = [o.name for o in model.graph.output][1:]
    fr = E.macs_fractions(model, gate_outs)
    ov = E.run_onnxruntime(model, data.val.x)
    final, heads, y = ov[0], ov[1:], data.val.y
    n = len(y)
    rng = np.random.default_rng(123)
    rows = {h: [] for h in holdouts}
    for r in tqdm(range(reps), desc="calibration study", disable=not cfg.progress):
        perm = rng.permutation(n)
        a, b = perm[: n // 2], perm[n // 2:]
        base = float((final[b].argmax(1) == y[b]).mean())
        for h in holdouts:
            cal = G.calibrate(final[a], [g[a] for g in heads], y[a], fr, max_drop=cfg.max_drop,
                              confidence=cfg.confidence, holdout=h, seed=r, n_candidates=cfg.calib_candidates)
            st = G.exit_stats(final[b], [g[b] for g in heads], cal["rules"], cal["thresholds"], y[b], fr)
            rows[h].append((base - st["accuracy"], st["expected_macs"]))
    summary = {}
    for h, v in rows.items():
        v = np.asarray(v)
        summary["none" if h is None else f"{h:g}"] = {
            "exceed_rate": float((v[:, 0] > cfg.max_drop + 1e-12).mean()), "drop_mean": float(v[:, 0].mean()),
            "macs_mean": float(v[:, 1].mean()), "macs_min": float(v[:, 1].min()), "macs_max": float(v[:, 1].max())}
    res = {"model": str(model_path), "reps": reps, "half": n // 2, "max_drop": cfg.max_drop,
           "confidence": cfg.confidence, "summary": summary}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration_study.json").write_text(json.dumps(res, indent=1))
    md = render(res)
    (out / "calibration_study.md").write_text(md)
    log(md)
    return res


def render(res) -> str:
    L = [f"{res['reps']} random halvings of the validation split ({res['half']} images each): thresholds "
         f"calibrated on one half for a drop <= {100 * res['max_drop']:g}pp (one-sided "
         f"{100 * res['confidence']:g}% bound), measured on the other.", "",
         "| held out of the search | fresh half: drop > target | mean drop | expected MACs mean (min-max) |",
         "|---|---|---|---|"]
    for h, s in res["summary"].items():
        name = "none (search and check on the same samples)" if h == "none" else f"{100 * float(h):g}%"
        L.append(f"| {name} | {100 * s['exceed_rate']:.0f}% | {100 * s['drop_mean']:.2f}pp | "
                 f"{100 * s['macs_mean']:.1f}% ({100 * s['macs_min']:.1f}-{100 * s['macs_max']:.1f}%) |")
    return "\n".join(L) + "\n"
