"""Hinton knowledge distillation with cached teacher logits and optional teacher annealing.

Loss: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).
With teacher annealing (Clark et al., Born-Again Multi-Task Networks) alpha decays linearly
to 0 over training, so the student moves from the teacher's targets to the gold labels.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import engine
from .models import Student, StudentConfig, cache_path, config_hash, load_checkpoint, save_checkpoint


def kd_loss(student_logits, teacher_logits, labels, T: float, alpha: float) -> torch.Tensor:
    """alpha*T^2*KL(softmax(t/T)||softmax(s/T)) + (1-alpha)*CE(s, y); KL summed over
    classes and averaged over the batch."""
    log_ps = F.log_softmax(student_logits / T, dim=1)
    log_pt = F.log_softmax(teacher_logits / T, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()
    loss = alpha * T * T * kl
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, labels)
    return loss


@torch.no_grad()
def teacher_logits(teacher, x, flips=True, desc="teacher logits") -> torch.Tensor:
    """[2, N, C] logits of the teacher on x and on x flipped left-right (the only
    augmentation distilled students use, so the cache covers every view they see)."""
    a = engine.predict(teacher, x, bs=500, desc=desc)
    if not flips:
        return a[None]
    b = engine.predict(teacher, torch.as_tensor(x).flip(3), bs=500, desc=desc + " (flipped)")
    return torch.stack([a, b])


@dataclasses.dataclass(frozen=True)
class StudentTrainConfig:
    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    augment: str = "flip"
    seed: int = 0


def train_student(data, cfg: StudentConfig = StudentConfig(), tcfg: StudentTrainConfig = StudentTrainConfig(),
                  *, cached_logits=None, T: float = 4.0, alpha: float = 0.0, anneal: bool = False,
                  train=None, desc=None, progress=True, cache=None, teacher_key: str | None = None):
    """Trains a fresh student. alpha == 0 (or no cached logits) is hard-label training.
    `cached_logits` is teacher_logits(teacher, train.x) for the same `train` split.
    With `cache` (a directory) and `teacher_key` the trained student is kept on disk under
    the hash of everything that defines it, and loaded instead of retrained next time."""
    train = train if train is not None else data.train
    soft = cached_logits is not None and alpha > 0
    path = None
    if cache is not None and (teacher_key or not soft) and train is data.train:
        key = config_hash("student", {"cfg": dataclasses.asdict(cfg), "train": dataclasses.asdict(tcfg),
                                      "soft": soft, "T": T if soft else None, "alpha": alpha if soft else None,
                                      "anneal": anneal if soft else None, "teacher": teacher_key if soft else None,
                                      "data": data.name, "n": len(train)})
        path = cache_path(f"student-{data.name}", key, cache)
        student = Student(cfg)
        meta = load_checkpoint(path, student)
        if meta is not None:
            student.eval()
            return student, meta
    engine.seed_everything(tcfg.seed)
    student = Student(cfg)

    def loss_fn(m, xb, yb, idx, flip, prog):
        s = m(xb)
        if not soft:
            return F.cross_entropy(s, yb)
        t = torch.where(flip[:, None], cached_logits[1][idx], cached_logits[0][idx]) \
            if cached_logits.shape[0] == 2 else cached_logits[0][idx]
        a = alpha * (1.0 - prog) if anneal else alpha
        return kd_loss(s, t, yb, T, a)

    res = engine.fit(student, train.x, train.y, epochs=tcfg.epochs, batch_size=tcfg.batch_size, lr=tcfg.lr,
                     weight_decay=tcfg.weight_decay, augment_mode=tcfg.augment, loss_fn=loss_fn, seed=tcfg.seed,
                     desc=desc or ("student KD" if soft else "student hard"), progress=progress)
    if path is not None:
        save_checkpoint(path, student, res)
    return student, res


def distill(teacher, student_cfg: StudentConfig, data, T: float = 4.0, alpha: float = 0.9, *,
            anneal: bool = False, tcfg: StudentTrainConfig = StudentTrainConfig(), cached_logits=None,
            progress=True):
    """Distils `teacher` into a fresh student of `student_cfg` on data.train. Returns
    (student, info) with the validation accuracy. Pass `cached_logits` to reuse them."""
    if cached_logits is None:
        cached_logits = teacher_logits(teacher, data.train.x)
    student, res = train_student(data, student_cfg, tcfg, cached_logits=cached_logits, T=T, alpha=alpha,
                                 anneal=anneal, progress=progress)
    val_acc = engine.accuracy(engine.predict(student, data.val.x), data.val.y)
    return student, {"val_acc": val_acc, "T": T, "alpha": alpha, "anneal": anneal, "time_s": res["time_s"]}


def tune(teacher_logits_train, data, student_cfg, tcfg, grid, progress=True, log=print):
    """Picks (T, alpha, anneal) by validation accuracy. grid: list of (T, alpha, anneal).
    Returns (best, rows)."""
    rows = []
    for T, alpha, anneal in grid:
        s, _ = train_student(data, student_cfg, tcfg, cached_logits=teacher_logits_train, T=T, alpha=alpha,
                             anneal=anneal, desc=f"tune T={T} a={alpha}{' anneal' if anneal else ''}",
                             progress=progress)
        acc = engine.accuracy(engine.predict(s, data.val.x), data.val.y)
        rows.append({"T": T, "alpha": alpha, "anneal": anneal, "val_acc": acc})
        log(f"  tune T={T} alpha={alpha} anneal={anneal}: val acc {acc:.4f}")
    best = max(rows, key=lambda r: r["val_acc"])
    return best, rows


def mean_ci95(values) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n < 2:
        return float(v.mean()), float("nan")
    tcrit = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(n, 1.96)
    return float(v.mean()), float(tcrit * v.std(ddof=1) / math.sqrt(n))


def seed_study(data, teacher, student_cfg, tcfg, T, alpha, anneal=False, seeds=(0, 1, 2), progress=True,
               log=print, cached_logits=None, cache=None, teacher_key=None):
    """Hard-label vs distilled student over seeds, on the test set. Returns a dict with the
    per-seed accuracies and the gain's mean and 95% interval (paired by seed)."""
    if cached_logits is None:
        cached_logits = teacher_logits(teacher, data.train.x)
    hard, soft = [], []
    for sd in seeds:
        tc = dataclasses.replace(tcfg, seed=sd)
        h, _ = train_student(data, student_cfg, tc, desc=f"seed {sd} hard", progress=progress, cache=cache)
        s, _ = train_student(data, student_cfg, tc, cached_logits=cached_logits, T=T, alpha=alpha, anneal=anneal,
                             desc=f"seed {sd} KD", progress=progress, cache=cache, teacher_key=teacher_key)
        hard.append(engine.accuracy(engine.predict(h, data.test.x), data.test.y))
        soft.append(engine.accuracy(engine.predict(s, data.test.x), data.test.y))
        log(f"  seed {sd}: hard {hard[-1]:.4f}  distilled {soft[-1]:.4f}  gain {100 * (soft[-1] - hard[-1]):+.2f}pp")
    gains = [100 * (s - h) for s, h in zip(soft, hard)]
    gm, gci = mean_ci95(gains)
    return {"seeds": list(seeds), "hard": hard, "distilled": soft, "gain_pp": gains, "gain_mean_pp": gm,
            "gain_ci95_pp": gci, "hard_mean": mean_ci95(hard), "distilled_mean": mean_ci95(soft),
            "T": T, "alpha": alpha, "anneal": anneal}
