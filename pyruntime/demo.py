"""`python -m pyruntime demo`: the shipped early-exit student on the Fashion-MNIST test set.

Prints the CPU and ISA path, accuracy with and without exits, the exit histogram, batch-1
latency with exits on and off beside onnxruntime on the full graph, and saves the curve of
accuracy against mean latency as the gate thresholds sweep.
"""
from __future__ import annotations

import os
import time

import numpy as np


def _latencies(call, xs) -> np.ndarray:
    times = np.empty(len(xs))
    for i, x in enumerate(xs):
        t = time.perf_counter()
        call(x)
        times[i] = time.perf_counter() - t
    return times * 1e6


def run(out_dir: str = "results/demo", n: int | None = None, threads: int = 1) -> dict:
    import pyruntime
    from pyruntime import zoo
    from pyruntime.train import data as fm

    info = pyruntime.cpu_info()
    print(f"CPU {info['vendor']} {info['model']}, {info['cores']} cores; ISA path {info['isa']} "
          f"(available: {', '.join(info['available'])})")
    test = fm.load_fashion_mnist().test  # clear error, with the apt-get command, when missing
    xs, ys = test.x[:n], test.y[:n]
    path = zoo.path()
    model = pyruntime.load(path, threads=threads)
    full = pyruntime.load(path, threads=threads, exits=False)
    K = len(model.exits)

    out_exit, idx = model.predict(xs, return_exit=True)
    out_full = full.predict(xs)
    acc_exit = float((out_exit.argmax(1) == ys).mean())
    acc_full = float((out_full.argmax(1) == ys).mean())
    hist = np.bincount(idx, minlength=K + 1)
    print(f"\naccuracy on {len(ys)} test images: exits on {acc_exit:.4f}, full graph {acc_full:.4f} "
          f"({(acc_full - acc_exit) * 100:+.2f}pp)")
    names = [f"gate {k}" for k in range(K)] + ["final"]
    print("exit histogram: " + ", ".join(f"{nm} {c} ({c / len(ys):.1%})" for nm, c in zip(names, hist)))

    batch1 = [x[None] for x in xs[: min(len(xs), 2000)]]
    for x in batch1[:50]:  # warm the plans and caches
        model.predict(x), full.predict(x)
    on = _latencies(model.predict, batch1)
    off = _latencies(full.predict, batch1)
    rows = [("pyruntime, exits on", on), ("pyruntime, full graph", off)]
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        rows.append(("onnxruntime, full graph", _latencies(lambda x: sess.run(None, {name: x}), batch1)))
    except ImportError:
        print("(onnxruntime is not installed: pip install onnxruntime to compare)")
    print(f"\nbatch-1 latency over {len(batch1)} images, {threads} thread(s):")
    print(f"{'runtime':<26} {'mean':>8} {'p50':>8} {'p99':>8} {'vs exits on':>12}")
    for label, t in rows:
        print(f"{label:<26} {t.mean():>6.1f}us {np.percentile(t, 50):>6.1f}us {np.percentile(t, 99):>6.1f}us "
              f"{t.mean() / on.mean():>11.2f}x")

    # The accuracy / latency curve: all thresholds scaled together.
    base = list(model.exits)
    curve = []
    for scale in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, np.inf):
        for k in range(K):
            model.exits[k] = base[k] * scale if np.isfinite(scale) else np.inf
        out, _ = model.predict(xs, return_exit=True)
        t = _latencies(model.predict, batch1[:1000])
        curve.append((float(t.mean()), float((out.argmax(1) == ys).mean()), scale))
    for k in range(K):
        model.exits[k] = base[k]
    os.makedirs(out_dir, exist_ok=True)
    plot = os.path.join(out_dir, "accuracy_vs_latency.png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([c[0] for c in curve], [c[1] * 100 for c in curve], "o-")
        for lat, acc, scale in curve:
            ax.annotate("inf" if not np.isfinite(scale) else f"x{scale:g}", (lat, acc * 100), fontsize=7)
        ax.set_xlabel("mean latency per image, batch 1 (us)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Shipped student: thresholds scaled together")
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"\nplot: {plot}")
    except ImportError:
        print("\n(matplotlib is not installed: no plot; the curve is below)")
    print("thresholds x scale -> mean us, accuracy: " +
          "; ".join(f"x{s:g}: {lat:.0f}us {acc:.4f}" for lat, acc, s in curve))
    return {"accuracy_exits": acc_exit, "accuracy_full": acc_full, "histogram": hist.tolist(),
            "mean_us_exits": float(on.mean()), "mean_us_full": float(off.mean())}
