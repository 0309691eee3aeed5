"""`python -m pyruntime bench MODEL.onnx`: latency of any model, in the manner of
onnxruntime_perf_test and OpenVINO's benchmark_app, optionally beside those runtimes."""
from __future__ import annotations

import json
import time

import numpy as np

from .errors import InputError

_NP = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
       "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def synthetic_feed(model, batch: int, seed: int = 0) -> dict:
    """Random inputs for every model input: symbolic dims become `batch` (first) or 1."""
    rng = np.random.default_rng(seed)
    feed = {}
    for info in model.inputs:
        shape = [d if isinstance(d, int) else (batch if i == 0 else 1) for i, d in enumerate(info.shape)]
        if np.issubdtype(info.dtype, np.floating):
            feed[info.name] = rng.random(shape, dtype=np.float32).astype(info.dtype)
        else:
            lim = np.iinfo(info.dtype)
            feed[info.name] = rng.integers(max(lim.min, -128), min(lim.max, 127) + 1, shape).astype(info.dtype)
    return feed


def measure(call, seconds: float, min_runs: int = 10) -> dict:
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times = []
    end = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < end:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    us = np.array(times) * 1e6
    return {"first_run_us": first * 1e6, "runs": len(us), "mean_us": float(us.mean()),
            "p50_us": float(np.percentile(us, 50)), "p90_us": float(np.percentile(us, 90)),
            "p99_us": float(np.percentile(us, 99)), "throughput_per_s": float(len(us) / (us.sum() / 1e6))}


def _peer_call(name: str, path: str, feed: dict, threads: int):
    if name == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, feed)
    if name == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        values = list(feed.values())
        return lambda: request.infer(values)
    raise InputError(f"unknown peer '{name}'; expected onnxruntime or openvino")


def run(path: str, *, compare=(), batch: int = 1, threads: int = 1, seconds: float = 2.0, json_path=None,
        exits: bool = True) -> list[dict]:
    import pyruntime

    t0 = time.perf_counter()
    model = pyruntime.load(path, threads=threads, exits=exits)
    load_us = (time.perf_counter() - t0) * 1e6
    feed = synthetic_feed(model, batch)
    single = len(model.inputs) == 1
    call = (lambda: model.predict(feed[model.inputs[0].name])) if single else (lambda: model.run(None, feed))
    rows = [dict(runtime="pyruntime", load_us=load_us, **measure(call, seconds))]
    for peer in compare:
        rows.append(dict(runtime=peer, **measure(_peer_call(peer, path, feed, threads), seconds)))
    base = rows[0]["mean_us"]
    print(f"model {path}  batch {batch}  threads {threads}  path {model.isa}  "
          f"exits {'on' if exits and model.exits is not None else 'off'}")
    print(f"{'runtime':<12} {'first run':>10} {'mean':>9} {'p50':>9} {'p90':>9} {'p99':>9} {'per s':>9} {'vs pyrt':>8}")
    for r in rows:
        print(f"{r['runtime']:<12} {r['first_run_us']:>8.0f}us {r['mean_us']:>7.1f}us {r['p50_us']:>7.1f}us "
              f"{r['p90_us']:>7.1f}us {r['p99_us']:>7.1f}us {r['throughput_per_s']:>9.0f} {r['mean_us'] / base:>7.2f}x")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"model": path, "batch": batch, "threads": threads, "rows": rows}, f, indent=2)
    return rows
