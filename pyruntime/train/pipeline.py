"""The Fashion-MNIST student factory, end to end:
teacher -> student (hard labels and distilled) -> gates (hinge and CE) -> int8 -> QDQ ONNX
export -> evaluation in onnxruntime -> report.md, report.json and PNG plots.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import engine, export as E, gates as G, quantize as Q
from .data import CLASSES, load_fashion_mnist
from .distill import StudentTrainConfig, mean_ci95, seed_study, teacher_logits, train_student, tune
from .models import (GateConfig, StudentConfig, TeacherConfig, cache_dir, count_macs, count_params,
                     exit_macs_fractions, gate_macs)
from .teacher import get_teacher

DEFAULT_GATES = (GateConfig("stage1", grid=4), GateConfig("stage2", grid=3))
QUICK_TEACHER = TeacherConfig(widths=(8, 16, 32), blocks=(1, 1, 1), epochs=1, train_subset=1000)
TUNE_GRID = [(2.0, 0.5, False), (4.0, 0.5, False), (4.0, 0.9, False), (4.0, 0.9, True), (8.0, 0.7, False)]


@dataclasses.dataclass
class PipelineConfig:
    out: str = "runs/fashion-mnist"
    cache: str | None = None
    quick: bool = False
    seed: int = 0
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    student_train: StudentTrainConfig = StudentTrainConfig()
    gates: tuple = DEFAULT_GATES
    gate_epochs: int = 30
    # Chosen on the validation split (seed 0, the teacher without label smoothing): T=4,
    # alpha=0.9 gave 90.80%, T=2/0.7 90.78%, T=4/0.5 90.70%, T=8/0.9 90.14%, hard labels
    # 89.76% (docs/train_results.md). `--tune` repeats such a choice in the run.
    T: float = 4.0
    alpha: float = 0.9
    anneal: bool = False
    tune: bool = False
    max_drop: float = 0.005
    # One-sided confidence of the bound on the validation drop that must stay within
    # max_drop (None or 0.5: the point estimate, which overfits the split; see gates.calibrate).
    confidence: float | None = 0.95
    # Share of the validation split kept out of the threshold search to check its choice
    # (None: search and check on the same samples, which overshoots on fresh data; see
    # gates.calibrate and docs/train_results.md).
    calib_holdout: float | None = 0.5
    macs_budget: float | None = None
    calib_size: int = 2000
    ptq_max_loss: float = 0.003
    qat_epochs: int = 2
    calib_candidates: int | None = None  # threshold grid per gate and rule (None: ~20000 combinations)
    progress: bool = True
    reuse_students: bool = True  # keep trained students in the cache too (keyed by their whole config)

    @property
    def cache_students(self):
        return str(cache_dir(self.cache)) if self.reuse_students else None

    def make_quick(self):
        """Smoke mode: 1000 training images, a tiny teacher, 1 epoch everywhere."""
        self.quick = True
        self.teacher = QUICK_TEACHER
        self.student_train = StudentTrainConfig(epochs=1)
        self.gate_epochs = 2
        self.calib_size = 256
        self.calib_candidates = 10
        self.qat_epochs = 1
        self.reuse_students = False
        return self


def _load(cfg):
    if cfg.quick:
        return load_fashion_mnist(train_subset=1000, test_subset=500)
    return load_fashion_mnist()


def _logits_cache(teacher, tkey, data, cache, log):
    path = cache_dir(cache) / f"teacher-logits-{data.name}-{tkey}-{len(data.train)}.pt"
    if path.is_file():
        log(f"teacher logits: cached {path}")
        return torch.load(path)
    t0 = time.time()
    lg = teacher_logits(teacher, data.train.x)
    torch.save(lg, path)
    log(f"teacher logits: computed in {time.time() - t0:.0f} s (train set and its mirror image), saved {path}")
    return lg


def _acc(logits, y):
    return engine.accuracy(torch.as_tensor(logits), torch.as_tensor(y))


def _pct(x):
    return f"{100 * x:.2f}%"


def run(cfg: PipelineConfig, log=print) -> dict:
    t_start = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rep: dict = {"config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
                 "threads": torch.get_num_threads()}
    timings = rep["timings_s"] = {}

    # ---------------------------------------------------------------- data
    data = _load(cfg)
    log(f"data: train {len(data.train)}, val {len(data.val)} (held out from train), test {len(data.test)}")

    # ---------------------------------------------------------------- teacher
    t0 = time.time()
    teacher, tmeta = get_teacher(data, cfg.teacher, cfg.cache, log=log, progress=cfg.progress)
    teacher_test = _acc(engine.predict(teacher, data.test.x, bs=500, desc="teacher test"), data.test.y)
    rep["teacher"] = {"test_acc": teacher_test, "val_acc": tmeta["val_acc"], "macs": count_macs(teacher),
                      "params": count_params(teacher), "train_time_s": tmeta["train_time_s"],
                      "cached": tmeta["cached"], "config": dataclasses.asdict(cfg.teacher)}
    log(f"teacher: test acc {_pct(teacher_test)}, {rep['teacher']['macs'] / 1e6:.1f} M MACs")
    tl = _logits_cache(teacher, cfg.teacher.key(), data, cfg.cache, log)
    timings["teacher"] = time.time() - t0

    # ---------------------------------------------------------------- students
    t0 = time.time()
    T, alpha, anneal = cfg.T, cfg.alpha, cfg.anneal
    if cfg.tune:
        log("tuning T and alpha on the validation split")
        best, rows = tune(tl, data, cfg.student, cfg.student_train, TUNE_GRID, progress=cfg.progress, log=log)
        T, alpha, anneal = best["T"], best["alpha"], best["anneal"]
        rep["tuning"] = rows
    hard, _ = train_student(data, cfg.student, cfg.student_train, progress=cfg.progress, cache=cfg.cache_students)
    student, sres = train_student(data, cfg.student, cfg.student_train, cached_logits=tl, T=T, alpha=alpha,
                                  anneal=anneal, progress=cfg.progress, cache=cfg.cache_students,
                                  teacher_key=cfg.teacher.key())
    hard_val, kd_val = (_acc(engine.predict(m, data.val.x), data.val.y) for m in (hard, student))
    hard_test, kd_test = (_acc(engine.predict(m, data.test.x), data.test.y) for m in (hard, student))
    s_macs = count_macs(student)
    rep["student"] = {"config": dataclasses.asdict(cfg.student), "train": dataclasses.asdict(cfg.student_train),
                      "macs": s_macs, "params": count_params(student), "T": T, "alpha": alpha, "anneal": anneal,
                      "hard": {"val_acc": hard_val, "test_acc": hard_test},
                      "distilled": {"val_acc": kd_val, "test_acc": kd_test}, "train_time_s": sres["time_s"]}
    log(f"student ({s_macs / 1e6:.2f} M MACs, {rep['student']['params']} params): hard {_pct(hard_test)}, "
        f"distilled (T={T}, alpha={alpha}{', annealed' if anneal else ''}) {_pct(kd_test)} on test")
    timings["students"] = time.time() - t0

    # ---------------------------------------------------------------- gates (fp32)
    t0 = time.time()
    fp_final_val = engine.predict(student, data.val.x).numpy()
    fp_final_test = engine.predict(student, data.test.x).numpy()
    gate_sets, feats_cache = {}, None
    rep["gates_fp32"] = {}
    sweeps = {}
    for loss in ("hinge", "ce"):
        gates, feats_cache = G.train_gates(student, cfg.gates, data.train.x, data.train.y, loss=loss,
                                           epochs=cfg.gate_epochs, seed=cfg.seed, progress=cfg.progress,
                                           feats=feats_cache)
        gate_sets[loss] = gates
        fr = exit_macs_fractions(student, gates)
        gv = G.gate_logits(gates, G.pooled_features(student, gates, data.val.x))
        gt = G.gate_logits(gates, G.pooled_features(student, gates, data.test.x))
        cal = G.calibrate(fp_final_val, gv, data.val.y, fr, max_drop=cfg.max_drop, macs_budget=cfg.macs_budget,
                          confidence=cfg.confidence, holdout=cfg.calib_holdout, n_candidates=cfg.calib_candidates,
                          return_sweep=True)
        sweeps[f"fp32 {loss}"] = cal.pop("pareto")
        st = G.exit_stats(fp_final_test, gt, cal["rules"], cal["thresholds"], data.test.y, fr)
        st.pop("exit_index")
        rep["gates_fp32"][loss] = {"calibration": cal, "test": st, "macs_fractions": fr,
                                   "gate_alone_test_acc": [_acc(g, data.test.y) for g in gt]}
        log(f"gates fp32 ({loss}): rules {cal['rules']} thresholds {[round(t, 4) for t in cal['thresholds']]}; "
            f"test acc {_pct(st['accuracy'])} at {_pct(st['expected_macs'])} expected MACs")
    timings["gates"] = time.time() - t0

    # ---------------------------------------------------------------- int8
    t0 = time.time()
    gates = gate_sets["hinge"]
    calib_x = data.train.subset(cfg.calib_size, seed=7).x
    ptq = {}
    fp_val_acc = _acc(fp_final_val, data.val.y)
    for method in ("minmax", "percentile"):
        q = Q.quantize_ptq(student, gates, calib_x, method=method)
        fv, _ = Q.qpredict(q, data.val.x)
        ptq[method] = (q, _acc(fv, data.val.y))
        log(f"int8 PTQ {method}: val acc {_pct(ptq[method][1])} (fp32 {_pct(fp_val_acc)})")
    method = max(ptq, key=lambda m: ptq[m][1])
    q, qacc = ptq[method]
    rep["int8"] = {"ptq_val_acc": {m: a for m, (_, a) in ptq.items()}, "ptq_method": method, "qat": False,
                   "fp32_val_acc": fp_val_acc}
    if fp_val_acc - qacc > cfg.ptq_max_loss:
        log(f"PTQ loses {100 * (fp_val_acc - qacc):.2f}pp > {100 * cfg.ptq_max_loss:.1f}pp: QAT with distillation "
            f"from the fp32 student")
        fl = teacher_logits(student, data.train.x, desc="fp32 student logits")
        Q.qat(q, data.train.x, data.train.y, fl, epochs=cfg.qat_epochs, seed=cfg.seed, progress=cfg.progress)
        fv, _ = Q.qpredict(q, data.val.x)
        rep["int8"].update(qat=True, qat_val_acc=_acc(fv, data.val.y))
        log(f"int8 after QAT: val acc {_pct(rep['int8']['qat_val_acc'])}; retraining gates on the int8 trunk")
        qgates, _ = G.train_gates(student, cfg.gates, data.train.x, data.train.y, loss="hinge",
                                  epochs=cfg.gate_epochs, seed=cfg.seed, progress=cfg.progress,
                                  feature_fn=Q.gate_feature_fn(q))
        Q.set_gates(q, qgates)
    timings["int8"] = time.time() - t0

    # ---------------------------------------------------------------- export + evaluation
    t0 = time.time()
    onnx_path = out / "student_int8_exits.onnx"
    model = E.export_qdq(q, None)
    ex, ov, ot = calibrate_exits(model, data, cfg)
    sweeps["int8 hinge (onnxruntime)"] = ex["calibration"].pop("pareto")
    model.doc_string = (f"pyruntime.train Fashion-MNIST student: int8 QDQ, {len(ot) - 1} early exits; "
                        f"input float32 [N,1,28,28] pixels in [0,1]")
    import onnx
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(onnx_path))
    ot_opt = E.run_onnxruntime(model, data.test.x, optimized=True)
    rep["int8"].update({
        "test_acc": _acc(ot[0], data.test.y), "val_acc": _acc(ov[0], data.val.y),
        "test_acc_ort_optimized": _acc(ot_opt[0], data.test.y), "exits": ex,
        "graph_macs": sum(E.node_macs(model)), "onnx_path": str(onnx_path), "onnx_bytes": onnx_path.stat().st_size,
        "ops": E.op_inventory(model), "gate_alone_test_acc": [_acc(g, data.test.y) for g in ot[1:]],
    })
    st, hist = ex["test"], ex["histogram"]
    log(f"int8 (onnxruntime): test acc {_pct(rep['int8']['test_acc'])}; with exits {_pct(st['accuracy'])} at "
        f"{_pct(st['expected_macs'])} expected MACs; exit histogram {hist}")
    rep["int8"]["pyruntime"] = _pyruntime_check(onnx_path, data.test.x, ot, log)
    timings["export_eval"] = time.time() - t0
    timings["total"] = time.time() - t_start

    # ---------------------------------------------------------------- report
    rep["plots"] = _plots(out, sweeps, hist)
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=_json_default))
    md = render_report(rep)
    (out / "report.md").write_text(md)
    log("")
    log(md)
    return rep


def calibrate_exits(model, data, cfg: PipelineConfig, return_sweep: bool = True):
    """Chooses an exported model's exit thresholds on the validation split from every head's
    outputs (onnxruntime), writes them into its metadata, and measures them per the contract
    on both splits. Returns ({"calibration", "val", "test", "histogram", "metadata"}, val
    outputs, test outputs); the test set is only reported."""
    gate_outs = [o.name for o in model.graph.output][1:]
    fr = E.macs_fractions(model, gate_outs)
    ov = E.run_onnxruntime(model, data.val.x)
    cal = G.calibrate(ov[0], ov[1:], data.val.y, fr, max_drop=cfg.max_drop, macs_budget=cfg.macs_budget,
                      confidence=cfg.confidence, holdout=cfg.calib_holdout, n_candidates=cfg.calib_candidates,
                      return_sweep=return_sweep)
    meta = E.set_exits(model, cal["rules"], cal["thresholds"])
    ot = E.run_onnxruntime(model, data.test.x)
    sv = G.exit_stats(ov[0], ov[1:], cal["rules"], cal["thresholds"], data.val.y, fr)
    st = G.exit_stats(ot[0], ot[1:], cal["rules"], cal["thresholds"], data.test.y, fr)
    sv.pop("exit_index")
    hist = np.bincount(st.pop("exit_index"), minlength=len(gate_outs) + 1)
    return {"calibration": cal, "val": sv, "test": st, "histogram": hist.tolist(), "metadata": meta}, ov, ot


def recalibrate(model_path, out_path, cfg: PipelineConfig, log=print) -> dict:
    """New exit thresholds for an exported model, without retraining: `calibrate_exits` on
    the validation split, the model saved to out_path with only its metadata changed."""
    import onnx
    model = onnx.load(str(model_path))
    data = _load(cfg)
    log(f"data: val {len(data.val)} (held out from train, chooses the thresholds), test {len(data.test)} (reported)")
    ex, _, ot = calibrate_exits(model, data, cfg, return_sweep=False)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out_path))
    res = {"model": str(model_path), "out": str(out_path), "exits": ex, "graph_macs": sum(E.node_macs(model)),
           "test_acc": _acc(ot[0], data.test.y), "gate_alone_test_acc": [_acc(g, data.test.y) for g in ot[1:]]}
    log("\n".join(render_exits(ex, res["test_acc"], res["gate_alone_test_acc"])))
    log(f"wrote {out_path}")
    return res


def _median_us(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e6)


def _pyruntime_check(onnx_path, x, ort_outputs, log) -> dict:
    """Runs the exported model in pyruntime (when it can load models): agreement with
    onnxruntime's outputs of every head, and latency against onnxruntime, 1 thread."""
    import pyruntime
    if not hasattr(pyruntime, "load"):
        return {"available": False, "note": "pyruntime cannot load models yet"}
    try:
        m = pyruntime.load(str(onnx_path), threads=1)
        outs = []
        for i in range(0, len(x), 1000):
            outs.append(m.run(None, {"input": x[i:i + 1000]}))
        outs = [np.concatenate([o[k] for o in outs]) for k in range(len(ort_outputs))]
        diff = [float(np.abs(a - b).max()) for a, b in zip(outs, ort_outputs)]
        same_top1 = [float((a.argmax(1) == b.argmax(1)).mean()) for a, b in zip(outs, ort_outputs)]
        # pyruntime's own early exit against the contract applied to onnxruntime's heads
        import onnx
        meta = E.read_exits(onnx.load(str(onnx_path)))["exits"]
        _, want = G.apply_exits(ort_outputs[0], list(ort_outputs[1:]), [e["rule"] for e in meta],
                                [e["threshold"] for e in meta])
        got = np.concatenate([m.predict(x[i:i + 1000], return_exit=True)[1] for i in range(0, len(x), 1000)])
        same_exit = float((got == want).mean())
        import onnxruntime as ort
        lat = {}
        for opt in (False, True):
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            if not opt:
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            for bs in (1, 64):
                xb = np.ascontiguousarray(x[:bs])
                lat[f"onnxruntime{'' if opt else ' (no graph optimizations)'} batch {bs}"] = _median_us(
                    lambda: sess.run(None, {"input": xb}), 200 if bs == 1 else 30)
        for bs in (1, 64):
            xb = np.ascontiguousarray(x[:bs])
            lat[f"pyruntime batch {bs}"] = _median_us(lambda: m.run(None, {"input": xb}), 200 if bs == 1 else 30)
        log(f"pyruntime: max |diff| vs onnxruntime per head {diff}; latency (us, 1 thread) "
            + ", ".join(f"{k} {v:.0f}" for k, v in lat.items()))
        return {"available": True, "max_abs_diff": diff, "same_top1": same_top1, "latency_us": lat,
                "same_exit": same_exit, "note": "full graph, every head, through `run`"}
    except Exception as e:  # the runtime is young: report, never fail the pipeline
        log(f"pyruntime could not run the model: {type(e).__name__}: {e}")
        return {"available": False, "note": f"{type(e).__name__}: {e}"}


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _plots(out: Path, sweeps: dict, hist) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in sweeps.items():
        if pts:
            em, acc = zip(*pts)
            ax.plot(100 * np.array(em), 100 * np.array(acc), marker=".", label=name)
    ax.set_xlabel("expected MACs (% of the full early-exit graph)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Accuracy vs expected MACs as thresholds sweep (Pareto front)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_macs.png", dpi=120)
    plt.close(fig)
    files.append("accuracy_vs_macs.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    labels = [f"gate {k}" for k in range(len(hist) - 1)] + ["final"]
    ax.bar(labels, hist)
    ax.set_ylabel("test images")
    ax.set_title("Exit histogram (int8, onnxruntime, test set)")
    fig.tight_layout()
    fig.savefig(out / "exit_histogram.png", dpi=120)
    plt.close(fig)
    files.append("exit_histogram.png")
    return files


def render_exits(ex: dict, test_acc: float, gate_alone_test_acc) -> list[str]:
    """The early-exit section: calibrate_exits' result, with the full graph's test accuracy
    and each gate head's alone."""
    cal, sv, st = ex["calibration"], ex["val"], ex["test"]
    L = [f"Target: {G.describe_target(cal['target'])}; validation: {_pct(cal['accuracy'])} vs "
         f"{_pct(cal['base_accuracy'])} without exits (drop {100 * cal['drop']:.2f}pp; upper bound "
         f"{100 * cal['drop_bound']:.2f}pp{' on the held-out part' if cal['target'].get('holdout') else ''}), "
         f"{_pct(cal['expected_macs'])} expected MACs.", "",
         "| exit | output | rule | threshold | macs_fraction | exit rate (val) | accuracy of exited (val) "
         "| exit rate (test) | accuracy of exited (test) | head alone (test) |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    metas = ex["metadata"]["exits"]

    def rate_acc(row):
        return f"{_pct(row['rate'])} | {_pct(row['accuracy']) if row['rate'] > 0 else '-'}"

    for k, (rv, rt) in enumerate(zip(sv["per_exit"], st["per_exit"])):
        if k < len(metas):
            m = metas[k]
            L.append(f"| {k} | {m['output']} | {m['rule']} | {m['threshold']:.4g} | {m['macs_fraction']:.4f} | "
                     f"{rate_acc(rv)} | {rate_acc(rt)} | {_pct(gate_alone_test_acc[k])} |")
        else:
            L.append(f"| final | {ex['metadata']['final']} | - | - | 1 | {rate_acc(rv)} | {rate_acc(rt)} | "
                     f"{_pct(test_acc)} |")
    L += ["", f"Test: {_pct(st['accuracy'])} with exits vs {_pct(test_acc)} full graph (drop "
          f"{100 * (test_acc - st['accuracy']):.2f}pp); expected MACs {_pct(st['expected_macs'])} of the full "
          f"graph; exit histogram {ex['histogram']}."]
    return L


def render_report(rep: dict) -> str:
    t, s, q = rep["teacher"], rep["student"], rep["int8"]
    ex = q["exits"]
    gm = q["graph_macs"]
    L = ["# pyruntime.train: Fashion-MNIST student report", ""]
    if rep["config"]["quick"]:
        L += ["**Quick smoke mode: tiny subsets and 1 epoch; these numbers mean nothing.**", ""]
    L += ["## Accuracy (test set)", "",
          "| model | test accuracy | MACs / image | params |", "|---|---|---|---|",
          f"| teacher (ResNet, {t['config']['epochs']} epochs) | {_pct(t['test_acc'])} | {t['macs'] / 1e6:.2f} M | {t['params']:,} |",
          f"| student, hard labels | {_pct(s['hard']['test_acc'])} | {s['macs'] / 1e6:.2f} M | {s['params']:,} |",
          f"| student, distilled (T={s['T']}, alpha={s['alpha']}{', annealed' if s['anneal'] else ''}) | {_pct(s['distilled']['test_acc'])} | {s['macs'] / 1e6:.2f} M | {s['params']:,} |",
          f"| int8 student (QDQ ONNX, onnxruntime, full graph) | {_pct(q['test_acc'])} | {gm / 1e6:.2f} M (with gates) | {s['params']:,} + gates |",
          f"| int8 student with early exits | {_pct(ex['test']['accuracy'])} | {ex['test']['expected_macs'] * gm / 1e6:.2f} M expected ({_pct(ex['test']['expected_macs'])}) | |",
          "",
          f"Teacher: {t['train_time_s']:.0f} s of training on {rep['threads']} thread(s){' (cached checkpoint)' if t['cached'] else ''}. "
          f"Student/teacher MACs: 1/{t['macs'] / s['macs']:.1f}. Distillation gain on this seed: "
          f"{100 * (s['distilled']['test_acc'] - s['hard']['test_acc']):+.2f}pp (the 3-seed study is `python -m pyruntime.train seed-study`).",
          "",
          f"Int8: PTQ validation accuracy {', '.join(f'{m} {_pct(a)}' for m, a in q['ptq_val_acc'].items())} vs fp32 "
          f"{_pct(q['fp32_val_acc'])}; chosen {q['ptq_method']}{'; then QAT with distillation from the fp32 student, val ' + _pct(q['qat_val_acc']) if q['qat'] else ' (no QAT needed)'}. "
          f"onnxruntime with its graph optimizations on (fused int8 kernels) gives {_pct(q['test_acc_ort_optimized'])}; "
          f"the numbers above run the QDQ graph as written.", ""]
    L += ["## Early exits (int8, thresholds recalibrated on the validation split after quantization)", ""]
    L += render_exits(ex, q["test_acc"], q["gate_alone_test_acc"]) + [""]
    L += ["## Hinge vs cross-entropy gates (fp32 student, same calibration)", "",
          "| gate loss | rules | thresholds | test acc with exits | expected MACs | gate heads alone (test) |",
          "|---|---|---|---|---|---|"]
    for loss, g in rep["gates_fp32"].items():
        c = g["calibration"]
        L.append(f"| {loss} | {', '.join(c['rules'])} | {', '.join(f'{x:.4g}' for x in c['thresholds'])} | "
                 f"{_pct(g['test']['accuracy'])} | {_pct(g['test']['expected_macs'])} | "
                 f"{', '.join(_pct(a) for a in g['gate_alone_test_acc'])} |")
    ops = ", ".join((k + "(" + ", ".join(v) + ")") if v else k for k, v in q["ops"].items())
    L += ["", f"Exported ops (attributes): {ops}. "
          f"ONNX file {q['onnx_bytes'] / 1024:.0f} KiB.", ""]
    pr = q.get("pyruntime", {})
    L += ["## pyruntime", ""]
    if pr.get("available"):
        L += [f"pyruntime runs the exported model: max |difference| from onnxruntime per head "
              f"{', '.join(f'{d:.2g}' for d in pr['max_abs_diff'])}; same top-1 on "
              f"{', '.join(_pct(v) for v in pr['same_top1'])} of the test set ({pr['note']})."
              + (f" With its own early exit (`predict`), the exit index equals the contract's on onnxruntime's "
                 f"heads for {_pct(pr['same_exit'])} of the test set." if "same_exit" in pr else ""), "",
              "| engine (1 thread, full graph) | median latency (us) |", "|---|---|"]
        L += [f"| {k} | {v:.0f} |" for k, v in pr["latency_us"].items()]
        L += ["", "Latencies were taken on a shared 2-core machine; read them as rough.", ""]
    else:
        L += [f"Not measured: {pr.get('note', 'n/a')}.", ""]
    if rep.get("tuning"):
        L += ["## T / alpha tuning (validation split)", "", "| T | alpha | anneal | val acc |", "|---|---|---|---|"]
        L += [f"| {r['T']} | {r['alpha']} | {r['anneal']} | {_pct(r['val_acc'])} |" for r in rep["tuning"]]
        L.append("")
    L += ["## Time", "", " | ".join(f"{k} {v:.0f} s" for k, v in rep["timings_s"].items()), ""]
    if rep.get("plots"):
        L += [f"![{p}]({p})" for p in rep["plots"]] + [""]
    return "\n".join(L)


def run_seed_study(cfg: PipelineConfig, seeds=(0, 1, 2), log=print, merge_report=None) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _load(cfg)
    teacher, _ = get_teacher(data, cfg.teacher, cfg.cache, log=log, progress=cfg.progress)
    tl = _logits_cache(teacher, cfg.teacher.key(), data, cfg.cache, log)
    T, alpha, anneal = cfg.T, cfg.alpha, cfg.anneal
    res = {}
    if cfg.tune:
        best, rows = tune(tl, data, cfg.student, cfg.student_train, TUNE_GRID, progress=cfg.progress, log=log)
        T, alpha, anneal = best["T"], best["alpha"], best["anneal"]
        res["tuning"] = rows
    res.update(seed_study(data, teacher, cfg.student, cfg.student_train, T, alpha, anneal, seeds=seeds,
                          progress=cfg.progress, log=log, cached_logits=tl, cache=cfg.cache_students,
                          teacher_key=cfg.teacher.key()))
    if merge_report:  # add the seed the pipeline trained with the same configuration
        pr = json.loads(Path(merge_report).read_text())["student"]
        same = (pr["config"] == json.loads(json.dumps(dataclasses.asdict(cfg.student)))
                and pr["train"]["epochs"] == cfg.student_train.epochs and pr["T"] == T and pr["alpha"] == alpha
                and pr["anneal"] == anneal)
        if not same:
            raise ValueError(f"{merge_report} was made with another student or KD configuration")
        sd = pr["train"]["seed"]
        if sd not in res["seeds"]:
            res["seeds"].insert(0, sd)
            res["hard"].insert(0, pr["hard"]["test_acc"])
            res["distilled"].insert(0, pr["distilled"]["test_acc"])
            res["gain_pp"] = [100 * (s - h) for s, h in zip(res["distilled"], res["hard"])]
            res["gain_mean_pp"], res["gain_ci95_pp"] = mean_ci95(res["gain_pp"])
            res["hard_mean"], res["distilled_mean"] = mean_ci95(res["hard"]), mean_ci95(res["distilled"])
            res["merged_from"] = str(merge_report)
    L = ["# Distillation seed study (Fashion-MNIST test set)", "",
         f"Student {cfg.student.stages}, {cfg.student_train.epochs} epochs; KD T={T}, alpha={alpha}, anneal={anneal} "
         + ("(chosen on the validation split by the grid below)." if cfg.tune else "(fixed beforehand, not tuned in this run).") + "",
         "",
         "| seed | hard labels | distilled | gain |", "|---|---|---|---|"]
    if res.get("merged_from"):
        L.insert(4, f"Seed {res['seeds'][0]} comes from the pipeline run {res['merged_from']} (same configuration).")
        L.insert(5, "")
    for sd, h, s in zip(res["seeds"], res["hard"], res["distilled"]):
        L.append(f"| {sd} | {_pct(h)} | {_pct(s)} | {100 * (s - h):+.2f}pp |")
    L += [f"| mean ± 95% CI | {_pct(res['hard_mean'][0])} ± {100 * res['hard_mean'][1]:.2f} | "
          f"{_pct(res['distilled_mean'][0])} ± {100 * res['distilled_mean'][1]:.2f} | "
          f"{res['gain_mean_pp']:+.2f} ± {res['gain_ci95_pp']:.2f}pp |", ""]
    if res.get("tuning"):
        L += ["| T | alpha | anneal | val acc |", "|---|---|---|---|"]
        L += [f"| {r['T']} | {r['alpha']} | {r['anneal']} | {_pct(r['val_acc'])} |" for r in res["tuning"]]
    md = "\n".join(L)
    (out / "seed_study.md").write_text(md)
    (out / "seed_study.json").write_text(json.dumps(res, indent=1, default=_json_default))
    log(md)
    return res
