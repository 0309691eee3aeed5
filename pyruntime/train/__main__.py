"""python -m pyruntime.train fashion-mnist --out DIR   (the whole pipeline)
python -m pyruntime.train seed-study --out DIR      (hard vs distilled over 3 seeds)
python -m pyruntime.train experiments --out DIR     (3% of the data; an omitted class)
python -m pyruntime.train recalibrate MODEL.onnx --out OUT.onnx
                                                    (new exit thresholds, no retraining;
                                                     --zoo: MODEL is the shipped student,
                                                     refresh it and its card in pyruntime/zoo/)
python -m pyruntime.train calibration-study [MODEL.onnx] --reps 100
                                                    (does the exit calibration hold on fresh
                                                     data? validation split only; MODEL
                                                     defaults to the shipped student)"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyruntime.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["fashion-mnist", "seed-study", "experiments", "recalibrate",
                                          "calibration-study"])
    p.add_argument("model", nargs="?", help="recalibrate, calibration-study: the exported early-exit ONNX model")
    p.add_argument("--out", default=None,
                   help="output directory (default runs/<command>); recalibrate: the ONNX file to write")
    p.add_argument("--cache", default=None, help="checkpoint cache (default $PYRUNTIME_CACHE or ~/.cache/pyruntime)")
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny subsets, tiny teacher, 1 epoch")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--student-epochs", type=int, default=None)
    p.add_argument("--T", type=float, default=None, help="distillation temperature")
    p.add_argument("--alpha", type=float, default=None, help="weight of the soft-target term")
    p.add_argument("--anneal", action="store_true", help="teacher annealing (alpha decays to 0)")
    p.add_argument("--tune", action="store_true", help="choose T/alpha on the validation split first")
    p.add_argument("--max-drop", type=float, default=0.5, help="exit calibration: max accuracy drop in pp")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="exit calibration: one-sided confidence that the validation drop stays within "
                        "--max-drop (0.5: the point estimate)")
    p.add_argument("--holdout", type=float, default=50.0,
                   help="exit calibration: percent of the validation split kept out of the threshold search to "
                        "check its choice (0: search and check on all of it)")
    p.add_argument("--macs-budget", type=float, default=None,
                   help="exit calibration: expected-MACs budget as a fraction of the full graph (overrides --max-drop)")
    p.add_argument("--seeds", type=int, default=3, help="seed-study: number of seeds (0..N-1)")
    p.add_argument("--seed-list", default=None, help="seed-study: explicit seeds, e.g. 1,2")
    p.add_argument("--merge-report", default=None,
                   help="seed-study: a pipeline report.json whose seed (same config) joins the study; "
                        "experiments: take the full-data student's accuracy from it")
    p.add_argument("--reps", type=int, default=100, help="calibration-study: random halvings of the split")
    p.add_argument("--which", default="3pct,omit", help="experiments: 3pct and/or omit")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--zoo", action="store_true",
                   help="fashion-mnist: copy the model into pyruntime/zoo/ with its card (the shipped student); "
                        "recalibrate: the same, updating only what the thresholds change")
    a = p.parse_args(argv)
    if a.command == "recalibrate":
        if not a.model:
            p.error("recalibrate needs the model: recalibrate MODEL.onnx --out OUT.onnx")
        if not a.out and not a.zoo:
            p.error("recalibrate needs --out OUT.onnx (or --zoo to refresh the shipped student in place)")
    elif a.model and a.command != "calibration-study":
        p.error(f"{a.command} takes no model argument")

    import torch

    from .distill import StudentTrainConfig
    from .pipeline import PipelineConfig, run, run_seed_study

    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = PipelineConfig(out=a.out or f"runs/{a.command}", cache=a.cache, quick=a.quick, tune=a.tune,
                         max_drop=a.max_drop / 100.0, confidence=a.confidence, macs_budget=a.macs_budget,
                         calib_holdout=a.holdout / 100.0 or None,
                         progress=not a.no_progress)
    if a.quick:
        cfg.make_quick()
    if a.teacher_epochs:
        cfg.teacher = dataclasses.replace(cfg.teacher, epochs=a.teacher_epochs)
    if a.student_epochs:
        cfg.student_train = dataclasses.replace(cfg.student_train, epochs=a.student_epochs)
    for k in ("T", "alpha"):
        if getattr(a, k) is not None:
            setattr(cfg, k, getattr(a, k))
    cfg.anneal = a.anneal
    if a.command == "recalibrate":
        from .pipeline import recalibrate
        from .zoo import NAME, ZOO, check_shipped, ship_recalibrated
        if a.zoo:  # before anything is written
            check_shipped(a.model, ZOO)
        out = a.out or str(ZOO / f"{NAME}.onnx")
        res = recalibrate(a.model, out, cfg)
        if a.zoo:
            cmd = shlex.join(["python", "-m", "pyruntime.train"] + list(sys.argv[1:] if argv is None else argv))
            print(f"shipped {ship_recalibrated(res, cmd, ZOO)}")
    elif a.command == "calibration-study":
        from .calibration_study import run_calibration_study
        from .zoo import NAME, ZOO
        run_calibration_study(a.model or ZOO / f"{NAME}.onnx", cfg, reps=a.reps)
    elif a.command == "fashion-mnist":
        run(cfg)
        if a.zoo:
            from .zoo import ship
            print(f"shipped {ship(cfg.out)}")
    elif a.command == "experiments":
        import json
        from pathlib import Path

        from .experiments import run_experiments
        full = None
        if a.merge_report:  # the full-data hard-label student of a pipeline run with the same config
            full = json.loads(Path(a.merge_report).read_text())["student"]["hard"]["test_acc"]
        run_experiments(cfg, which=tuple(a.which.split(",")), full_acc=full)
    else:
        seeds = tuple(int(v) for v in a.seed_list.split(",")) if a.seed_list else tuple(range(a.seeds))
        run_seed_study(cfg, seeds=seeds, merge_report=a.merge_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
