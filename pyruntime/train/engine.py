"""Training loop, augmentation, evaluation and batched inference shared by every stage."""
from __future__ import annotations

import math
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment(x: torch.Tensor, mode: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (augmented batch, flip mask). `mode` contains 'flip' and/or 'crop<k>'."""
    n = x.shape[0]
    flip = torch.zeros(n, dtype=torch.bool)
    if "flip" in mode:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if "crop" in mode:
        k = int(mode.split("crop")[1][0])
        xp = F.pad(x, (k, k, k, k))
        dx = torch.randint(0, 2 * k + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * k + 1, (n,), generator=gen)
        # gather crops with unfold-free indexing
        h = x.shape[2]
        ar = torch.arange(h)
        rows = (dy[:, None] + ar[None, :])  # n,h
        cols = (dx[:, None] + ar[None, :])
        x = xp[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
               rows[:, None, :, None], cols[:, None, None, :]]
    return x, flip


def batches(n: int, bs: int, shuffle: bool, gen: torch.Generator | None = None):
    idx = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    for i in range(0, n, bs):
        yield idx[i:i + bs]


@torch.no_grad()
def predict(model: nn.Module, x, bs: int = 1000, desc: str | None = None, fn=None) -> torch.Tensor:
    """Logits of `model` (or of fn(model, batch)) over x (numpy or tensor), in eval mode."""
    x = torch.as_tensor(x)
    was = model.training
    model.eval()
    outs = []
    it = range(0, len(x), bs)
    if desc:
        it = tqdm(it, desc=desc, leave=False)
    for i in it:
        xb = x[i:i + bs]
        outs.append(fn(model, xb) if fn else model(xb))
    model.train(was)
    if isinstance(outs[0], (tuple, list)):
        return type(outs[0])(torch.cat([o[j] for o in outs]) for j in range(len(outs[0])))
    return torch.cat(outs)


def accuracy(logits, y) -> float:
    return float((torch.as_tensor(logits).argmax(1) == torch.as_tensor(y)).float().mean())


def fit(model: nn.Module, x, y, *, epochs: int, batch_size: int = 128, lr: float = 0.05,
        weight_decay: float = 5e-4, optimizer: str = "sgd", augment_mode: str = "",
        loss_fn=None, seed: int = 0, desc: str = "train", val=None, label_smoothing: float = 0.0,
        params=None, progress: bool = True, channels_last: bool = False) -> dict:
    """One-cycle SGD (nesterov) or AdamW training.

    loss_fn(model, xb, yb, idx, flip, progress) -> loss; default cross-entropy. `idx` are the
    rows of x in the batch (to look up cached targets), `flip` the flip mask, `progress`
    the fraction of training done (for schedules such as teacher annealing).
    channels_last: NHWC activations; torch's CPU convolutions run about 1.3x faster on them
    for the teacher's shapes.
    """
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    params = list(params if params is not None else model.parameters())
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25,
                                                anneal_strategy="linear", div_factor=10.0,
                                                final_div_factor=100.0)
    if loss_fn is None:
        def loss_fn(m, xb, yb, idx, flip, prog):
            return F.cross_entropy(m(xb), yb, label_smoothing=label_smoothing)
    history = []
    t0 = time.time()
    step = 0
    bar = tqdm(total=total, desc=desc, leave=False, disable=not progress)
    for ep in range(epochs):
        model.train()
        run_loss, nb = 0.0, 0
        for idx in batches(len(x), batch_size, True, gen):
            xb, flip = augment(x[idx], augment_mode, gen) if augment_mode else (x[idx], torch.zeros(len(idx), dtype=torch.bool))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model, xb, y[idx], idx, flip, step / total)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            run_loss += float(loss.detach())
            nb += 1
            bar.update(1)
            bar.set_postfix(epoch=ep + 1, loss=f"{run_loss / nb:.4f}")
        rec = {"epoch": ep + 1, "loss": run_loss / max(nb, 1), "time_s": time.time() - t0}
        if val is not None:
            rec["val_acc"] = accuracy(predict(model, val[0]), val[1])
            bar.set_postfix(epoch=ep + 1, loss=f"{rec['loss']:.4f}", val=f"{rec['val_acc']:.4f}")
        history.append(rec)
    bar.close()
    model.eval()
    return {"history": history, "time_s": time.time() - t0}
