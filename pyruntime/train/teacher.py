"""The teacher: train once per config, cached by the config's hash."""
from __future__ import annotations

import dataclasses
import time

import torch

from . import engine
from .models import Teacher, TeacherConfig, cache_path, count_macs, count_params, load_checkpoint, save_checkpoint


def get_teacher(data, cfg: TeacherConfig = TeacherConfig(), cache=None, log=print, progress=True):
    """Returns (teacher, meta). Loads the cached checkpoint for this config if there is one."""
    model = Teacher(cfg, data.num_classes)
    path = cache_path(f"teacher-{data.name}", cfg.key(), cache)
    meta = load_checkpoint(path, model)
    if meta is not None:
        log(f"teacher: cached checkpoint {path} (val acc {meta['val_acc']:.4f}, "
            f"trained in {meta['train_time_s']:.0f} s)")
        model.eval()
        return model, dict(meta, cached=True, path=str(path))
    engine.seed_everything(cfg.seed)
    model = Teacher(cfg, data.num_classes)
    train = data.train.subset(cfg.train_subset)
    t0 = time.time()
    res = engine.fit(model, train.x, train.y, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                     weight_decay=cfg.weight_decay, augment_mode=cfg.augment,
                     label_smoothing=cfg.label_smoothing, seed=cfg.seed, desc="teacher",
                     channels_last=cfg.channels_last,
                     val=(data.val.x, data.val.y), progress=progress)
    dt = time.time() - t0
    meta = {"config": dataclasses.asdict(cfg), "val_acc": res["history"][-1]["val_acc"],
            "history": res["history"], "train_time_s": dt, "threads": torch.get_num_threads(),
            "macs": count_macs(model), "params": count_params(model)}
    save_checkpoint(path, model, meta)
    log(f"teacher: trained in {dt:.0f} s on {torch.get_num_threads()} threads, val acc {meta['val_acc']:.4f}; saved {path}")
    return model, dict(meta, cached=False, path=str(path))
