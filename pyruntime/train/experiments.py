"""Hinton et al.'s two transfer-set experiments, reproduced on Fashion-MNIST.

(a) 3% of the data: the student on 3% of the training set with soft targets, against the
    same 3% with hard labels, against the full-data student.
(b) Omitted class: the student's transfer set has no image of class 3 (Dress) at all; it
    learns that class through the teacher's soft targets only. The bias correction raises
    the class-3 logit bias by the amount chosen on the validation split (the value that
    makes the predicted share of class 3 on validation match its true share).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from . import engine
from .data import CLASSES, Split
from .distill import StudentTrainConfig, train_student


def _acc(m, split):
    return engine.accuracy(engine.predict(m, split.x), split.y)


def three_percent(data, teacher_logits_train, student_cfg, tcfg: StudentTrainConfig, T, alpha, *, frac=0.03,
                  full_acc=None, seed=0, progress=True, log=print) -> dict:
    n = int(round(frac * len(data.train)))
    idx = np.sort(np.random.default_rng(seed).permutation(len(data.train))[:n])
    small = Split(data.train.x[idx], data.train.y[idx])
    tl = teacher_logits_train[:, torch.as_tensor(idx)]
    # the same number of optimizer steps as one full-data run: many more epochs on 3%
    epochs = max(tcfg.epochs, int(round(tcfg.epochs * len(data.train) / n / 4)))
    tc = dataclasses.replace(tcfg, epochs=epochs)
    hard, _ = train_student(data, student_cfg, tc, train=small, desc="3% hard", progress=progress)
    soft, _ = train_student(data, student_cfg, tc, train=small, cached_logits=tl, T=T, alpha=alpha,
                            desc="3% soft", progress=progress)
    if full_acc is None:
        full, _ = train_student(data, student_cfg, tcfg, desc="full hard", progress=progress)
        full_acc = _acc(full, data.test)
    r = {"n_images": n, "epochs": epochs, "hard_3pct": _acc(hard, data.test), "soft_3pct": _acc(soft, data.test),
         "full": full_acc, "T": T, "alpha": alpha}
    gap = r["full"] - r["hard_3pct"]
    r["gap_recovered"] = (r["soft_3pct"] - r["hard_3pct"]) / gap if gap > 0 else float("nan")
    log(f"3%: hard {r['hard_3pct']:.4f}, soft {r['soft_3pct']:.4f}, full {r['full']:.4f}; "
        f"soft targets recover {100 * r['gap_recovered']:.0f}% of the gap")
    return r


def omitted_class(data, teacher_logits_train, student_cfg, tcfg: StudentTrainConfig, T, alpha, *, omit=3,
                  full_acc=None, progress=True, log=print) -> dict:
    keep = np.nonzero(data.train.y != omit)[0]
    transfer = Split(data.train.x[keep], data.train.y[keep])
    tl = teacher_logits_train[:, torch.as_tensor(keep)]
    s, _ = train_student(data, student_cfg, tcfg, train=transfer, cached_logits=tl, T=T, alpha=alpha,
                         desc=f"KD without class {omit}", progress=progress)

    def stats(logits, y):
        pred = logits.argmax(1)
        m = y == omit
        return float((pred == y).float().mean()), float((pred[m] == omit).float().mean())

    lv = engine.predict(s, data.val.x)
    lt = engine.predict(s, data.test.x)
    yv, yt = torch.as_tensor(data.val.y), torch.as_tensor(data.test.y)
    before = stats(lt, yt)
    # bias correction on validation: the smallest offset whose predicted class share matches the truth
    share = float((yv == omit).float().mean())
    best, grid = 0.0, np.arange(0.0, 15.01, 0.1)
    for b in grid:
        lv2 = lv.clone()
        lv2[:, omit] += float(b)
        if float((lv2.argmax(1) == omit).float().mean()) >= share:
            best = float(b)
            break
    lt2 = lt.clone()
    lt2[:, omit] += best
    after = stats(lt2, yt)
    r = {"omitted": omit, "class": CLASSES[omit], "T": T, "alpha": alpha, "bias_offset": best,
         "before": {"overall": before[0], "omitted_class": before[1]},
         "after": {"overall": after[0], "omitted_class": after[1]}, "full_student": full_acc}
    log(f"omitted class {omit} ({CLASSES[omit]}): before correction {before[1]:.4f} on the class, {before[0]:.4f} overall; "
        f"bias +{best:.1f}: {after[1]:.4f} on the class, {after[0]:.4f} overall")
    return r


def render(res: dict) -> str:
    L = ["# Transfer-set experiments (Fashion-MNIST test set)", ""]
    if "three_percent" in res:
        r = res["three_percent"]
        L += [f"## (a) 3% of the training data ({r['n_images']} images, {r['epochs']} epochs; T={r['T']}, alpha={r['alpha']})", "",
              "| student | test accuracy |", "|---|---|",
              f"| 3%, hard labels | {100 * r['hard_3pct']:.2f}% |", f"| 3%, soft targets | {100 * r['soft_3pct']:.2f}% |",
              f"| full training set, hard labels | {100 * r['full']:.2f}% |", "",
              f"Soft targets recover {100 * r['gap_recovered']:.0f}% of the gap between hard-3% and full data.", ""]
    if "omitted_class" in res:
        r = res["omitted_class"]
        L += [f"## (b) Class {r['omitted']} ({r['class']}) omitted from the transfer set (T={r['T']}, alpha={r['alpha']})", "",
              "| | accuracy on the omitted class | overall |", "|---|---|---|",
              f"| before bias correction | {100 * r['before']['omitted_class']:.2f}% | {100 * r['before']['overall']:.2f}% |",
              f"| after (+{r['bias_offset']:.1f} on its bias, chosen on validation) | {100 * r['after']['omitted_class']:.2f}% | {100 * r['after']['overall']:.2f}% |"]
        if r.get("full_student") is not None:
            L.append(f"| full student (all classes, hard labels) | - | {100 * r['full_student']:.2f}% |")
        L.append("")
    return "\n".join(L)


def run_experiments(cfg, which=("3pct", "omit"), log=print, full_acc=None) -> dict:
    from .pipeline import _load, _logits_cache
    from .teacher import get_teacher
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _load(cfg)
    teacher, _ = get_teacher(data, cfg.teacher, cfg.cache, log=log, progress=cfg.progress)
    tl = _logits_cache(teacher, cfg.teacher.key(), data, cfg.cache, log)
    res = {}
    if "3pct" in which:
        res["three_percent"] = three_percent(data, tl, cfg.student, cfg.student_train, cfg.T, cfg.alpha,
                                             full_acc=full_acc, progress=cfg.progress, log=log)
        full_acc = res["three_percent"]["full"]
    if "omit" in which:
        res["omitted_class"] = omitted_class(data, tl, cfg.student, cfg.student_train, cfg.T, cfg.alpha,
                                             full_acc=full_acc, progress=cfg.progress, log=log)
    md = render(res)
    (out / "experiments.md").write_text(md)
    (out / "experiments.json").write_text(json.dumps(res, indent=1))
    log(md)
    return res
