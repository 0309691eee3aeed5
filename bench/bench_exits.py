"""Early-exit benchmarks for the shipped Fashion-MNIST student (pyruntime.zoo.path()), on the
Fashion-MNIST TEST set, beside onnxruntime and OpenVINO running the full graph.

Run from the repository root (bench/pytest.ini makes bench/ the rootdir):

    python -m pytest bench/bench_exits.py                  # full run (a few minutes)
    PYRT_EXITS_SAMPLES=500 PYRT_LOAD_SECONDS=2 python -m pytest bench/bench_exits.py -x -q -s   # quick

Environment knobs: PYRT_EXITS_SAMPLES caps the test samples of sections 1-2 (default: all
10000), PYRT_LOAD_SECONDS the seconds per concurrency level of section 4 (default 30),
PYRT_SWEEP_SAMPLES the subset of section 3 (default 2000), PYRT_EXITS_PASSES the number of
interleaved passes (default 5).

Configurations ("rows"): pyruntime with exits on (the shipped thresholds); pyruntime
exits=False (the full graph); pyruntime with exits on but every threshold +inf (nothing
exits: the cost of evaluating the gates); onnxruntime full graph (CPU EP, intra_op_num_threads
= threads, inter_op 1, sequential, ORT_ENABLE_ALL, `sess.run(["logits"], ...)`); OpenVINO full
graph (CPU, INFERENCE_NUM_THREADS = threads, NUM_STREAMS 1, PERFORMANCE_HINT LATENCY, the model
reshaped to the static batch, one sync infer request, output "logits").

Sections (one test each):
1. test_b1: batch 1 over the test set, threads 1 and 2: per-sample latency (perf_counter
   around every call) mean / p50 / p99 and top-1 accuracy per configuration. Each
   configuration is warmed up (200 calls), then measured in PASSES interleaved passes: the
   samples are split into PASSES slices and each pass runs every configuration over one slice,
   in a seeded shuffled order of configurations (every configuration sees the same samples).
   test_b1_pytest_benchmark additionally times pyruntime exits-on at batch 1 with
   pytest-benchmark (pedantic, one call per round, cycling over a fixed set of 2000 samples).
2. test_b64: batch 64 over the test set in full chunks of 64 (the trailing partial chunk is
   left out so that every runtime, OpenVINO's static shape included, runs the same batches):
   mean latency per sample and per batch, p50 / p99 per batch, accuracy; interleaved as above.
3. test_sweep: both gate thresholds scaled by each factor in SWEEP_FACTORS (0 = everything
   exits at the first gate, inf = nothing exits), batch 1, 1 thread, on the first
   PYRT_SWEEP_SAMPLES samples; interleaved with exits-off and ORT reference points. Mean
   latency and accuracy per point; plot bench/results/exits_sweep.png.
4. test_load: closed loop: C Python threads (C = 1, 2, 4) call `m.predict(x_i)` (batch 1) on
   ONE shared model (threads=1; exits on, then exits=False) for PYRT_LOAD_SECONDS seconds each; per-call latency
   p50 / p99 and throughput. Every result is checked against the single-threaded output of the
   same sample (a mismatch fails the test). Bound: p99 <= 1.5 * (C / 2) * p50_single, with 2 the
   machine's cores and p50_single the C = 1 p50 (for C = 1 that bound, 0.75 x p50, is below the
   median and cannot be met; the table also shows the looser 1.5 * max(C / 2, 1) * p50_single).

Peers of one (section, threads) group live together during its interleaved passes (a short
untimed pause separates blocks so that idle pools stop spinning) and are closed and garbage
collected before the next group. The garbage collector is disabled while timing.

The markdown report (rows, ratios "x exits off" = exits-off mean / this mean, "x ORT",
"x OpenVINO", and a Targets section with PASS/MISS that never fails the run) is printed at the
end and written to bench/results/exits.md; the raw numbers go to bench/results/exits.json.
A missing dataset skips every test with load_raw's message.
"""
from __future__ import annotations

import gc
import json
import math
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tqdm import tqdm

import pyruntime
from pyruntime import zoo

_HERE = Path(__file__).resolve().parent
RESULTS_DIR = _HERE / "results"
MD_PATH = RESULTS_DIR / "exits.md"
JSON_PATH = RESULTS_DIR / "exits.json"
PNG_PATH = RESULTS_DIR / "exits_sweep.png"

N_SAMPLES = int(os.environ.get("PYRT_EXITS_SAMPLES", "10000"))
LOAD_SECONDS = float(os.environ.get("PYRT_LOAD_SECONDS", "30"))
SWEEP_SAMPLES = int(os.environ.get("PYRT_SWEEP_SAMPLES", "2000"))
PASSES = max(1, int(os.environ.get("PYRT_EXITS_PASSES", "5")))
ENV_KNOBS = ("PYRT_EXITS_SAMPLES", "PYRT_LOAD_SECONDS", "PYRT_SWEEP_SAMPLES", "PYRT_EXITS_PASSES")

CORES = 2
THREADS = (1, 2)
WARMUP_B1 = 200
WARMUP_B64 = 10
BATCH = 64
SEED = 20240501
PAUSE_S = 0.02  # untimed pause between blocks: idle worker pools stop spinning
SWEEP_FACTORS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, math.inf)
LOAD_CONCURRENCY = (1, 2, 4)
LOAD_POOL = 2000  # distinct samples the load-test threads cycle over
BENCH_SAMPLES = 2000  # the fixed sample set of the pytest-benchmark row

CONFIGS = ("pyrt exits on", "pyrt exits off", "pyrt exits +inf", "onnxruntime", "openvino")
OFF, ORT, OV = "pyrt exits off", "onnxruntime", "openvino"

# Everything measured lands here; the module fixture's teardown renders and writes it.
RESULTS: dict = {"b1": {}, "b1_benchmark": {}, "b64": {}, "sweep": None, "load": None, "load_off": None, "errors": {}}
STATE: dict = {"command": None, "markdown": None}


# ---------------------------------------------------------------------------------------
# data, model, runners


@pytest.fixture(scope="module")
def data():
    from pyruntime.train.data import _to_float, load_raw
    try:
        raw = load_raw()
    except FileNotFoundError as e:  # DatasetMissingError: the message says how to install it
        pytest.skip(str(e))
    x = np.ascontiguousarray(_to_float(raw["test_images"]))
    y = raw["test_labels"].astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))  # a seeded order: a capped run is a random subset
    return x[order], y[order]


@pytest.fixture(scope="module")
def model_path():
    return str(zoo.path())


def _command(section_test: str | None = None) -> str:
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in ENV_KNOBS if k in os.environ)
    args = STATE["command"] or "bench/bench_exits.py"
    cmd = f"{env + ' ' if env else ''}python -m pytest {args}"
    return f"`{cmd}` (test `{section_test}`)" if section_test else f"`{cmd}`"


def _skip_threads(threads: int):
    avail = pyruntime._native.max_threads()
    if threads > avail:
        pytest.skip(f"needs {threads} CPUs, the process may use {avail}")


class Runner:
    """call(x) -> output 0 (logits) as a numpy array; close() releases the runtime."""

    def __init__(self, name: str, path: str, threads: int, batch: int):
        self.name = name
        self.model = None
        holder = []
        if name.startswith("pyrt"):
            m = pyruntime.load(path, threads=threads, exits=(name != OFF))
            if name == "pyrt exits +inf":
                for k in range(len(m.exits)):
                    m.exits[k] = math.inf
            self.model = m
            self.call = m.predict
            holder.append(m)
        elif name == ORT:
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

            def call(x):
                return sess.run(["logits"], {"input": x})[0]
            self.call = call
            holder.append(sess)
        elif name == OV:
            import openvino as ov
            core = ov.Core()
            model = core.read_model(path)
            model.reshape({"input": [batch, 1, 28, 28]})
            compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                         "PERFORMANCE_HINT": "LATENCY"})
            req = compiled.create_infer_request()

            def call(x):
                return req.infer({"input": x})["logits"]
            self.call = call
            holder += [core, model, compiled, req]
        else:
            raise ValueError(name)
        self._holder = holder

    def close(self):
        self.call = None
        self.model = None
        self._holder.clear()
        gc.collect()


def _open_runners(names, path, threads, batch):
    runners = {}
    for name in names:
        try:
            runners[name] = Runner(name, path, threads, batch)
        except Exception as e:  # a peer that cannot load the model is reported, not fatal
            RESULTS["errors"][f"{name} t{threads} b{batch}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return runners


def _close_all(runners):
    for r in runners.values():
        r.close()
    runners.clear()
    gc.collect()


def _stats_us(lat_s: np.ndarray) -> dict:
    a = np.asarray(lat_s, np.float64) * 1e6
    return {"mean_us": float(a.mean()), "p50_us": float(np.quantile(a, 0.5)), "p99_us": float(np.quantile(a, 0.99)),
            "min_us": float(a.min()), "n": int(a.size)}


def _exit_fractions(m) -> dict | None:
    if m is None or m.exits is None:
        return None
    st = m.exit_stats()
    total = max(st["total"], 1)
    return {k: v / total for k, v in st["counts"].items()}


def _interleaved(runners: dict, xs: list, warmup: int, desc: str):
    """Times every call of every runner over the batches xs, PASSES interleaved passes in a
    seeded shuffled order. Returns {name: (latencies s [len(xs)], predictions [rows])}."""
    names = list(runners)
    for name in names:  # warm-up on the first batches, then the stats start from zero
        r = runners[name]
        for i in range(warmup):
            r.call(xs[i % len(xs)])
        if r.model is not None:
            r.model.reset_exit_stats()
    lat = {n: np.zeros(len(xs)) for n in names}
    pred: dict = {n: [None] * len(xs) for n in names}
    bounds = np.linspace(0, len(xs), PASSES + 1).astype(int)
    rng = np.random.default_rng(SEED)
    gc.collect()
    gc.disable()
    try:
        with tqdm(total=len(xs) * len(names), desc=desc, unit="call", mininterval=0.5, leave=False) as bar:
            for p in range(PASSES):
                lo, hi = bounds[p], bounds[p + 1]
                for name in rng.permutation(names):
                    time.sleep(PAUSE_S)
                    _time_calls(runners[name].call, xs, lo, hi, lat[name], pred[name],
                                lambda out: np.asarray(out).argmax(axis=1))
                    bar.update(hi - lo)
    finally:
        gc.enable()
    return {n: (lat[n], np.concatenate(pred[n])) for n in names}


def _time_calls(call, xs, lo, hi, lat, pred, top1) -> None:
    """call(xs[i]) for i in [lo, hi), one at a time: each latency into lat[i], top1(output)
    into pred[i] (outside the timed region)."""
    perf = time.perf_counter
    for i in range(lo, hi):
        xi = xs[i]
        t0 = perf()
        out = call(xi)
        t1 = perf()
        lat[i] = t1 - t0
        pred[i] = top1(out)


def _section_rows(runners, res, y, batch):
    rows = {}
    ort_pred = res[ORT][1] if ORT in res else None
    for name, (lat, pred) in res.items():
        row = _stats_us(lat)
        if batch > 1:  # per-batch numbers, and the mean per sample
            row = {f"batch_{k}": v for k, v in row.items() if k != "n"} | {"batches": row["n"]}
            row["mean_us"] = row["batch_mean_us"] / batch
        row["samples"] = int(pred.size)
        row["accuracy"] = float((pred == y[:pred.size]).mean())
        row["agree_ort"] = None if ort_pred is None else float((pred == ort_pred).mean())
        row["exits"] = _exit_fractions(runners[name].model)
        rows[name] = row
    return rows


# ---------------------------------------------------------------------------------------
# the report fixture (writes bench/results/exits.{md,json} after the last test)


class _ReportPlugin:
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        md = STATE.get("markdown")
        if not md:
            return
        terminalreporter.write_sep("=", "early-exit report")
        for line in md.splitlines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(written to {os.path.relpath(MD_PATH)}, {os.path.relpath(JSON_PATH)})")


@pytest.fixture(scope="module", autouse=True)
def report(request):
    args = [a for a in request.config.invocation_params.args]
    STATE["command"] = " ".join(shlex.quote(a) for a in args) if args else "bench/bench_exits.py"
    if not request.config.pluginmanager.has_plugin("pyrt_exits_report"):
        request.config.pluginmanager.register(_ReportPlugin(), "pyrt_exits_report")
    yield
    if not any([RESULTS["b1"], RESULTS["b64"], RESULTS["sweep"], RESULTS["load"], RESULTS["load_off"]]):
        return
    try:
        md = render_report()
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        MD_PATH.write_text(md)
        JSON_PATH.write_text(json.dumps(_json_ready(), indent=1, default=_json_default))
        STATE["markdown"] = md
    except Exception as e:  # the report never hides the test results
        STATE["markdown"] = f"early-exit report failed: {type(e).__name__}: {e}"


# ---------------------------------------------------------------------------------------
# 1. batch 1


@pytest.mark.parametrize("threads", THREADS, ids=[f"t{t}" for t in THREADS])
def test_b1(threads, data, model_path):
    _skip_threads(threads)
    x, y = data
    n = min(N_SAMPLES, len(x))
    xs = [x[i:i + 1] for i in range(n)]
    runners = _open_runners(CONFIGS, model_path, threads, 1)
    try:
        res = _interleaved(runners, xs, WARMUP_B1, f"b1 t{threads}")
        rows = _section_rows(runners, res, y, 1)
    finally:
        _close_all(runners)
    RESULTS["b1"][threads] = {"samples": n, "passes": PASSES, "warmup": WARMUP_B1, "rows": rows,
                              "command": _command(f"test_b1[t{threads}]")}
    assert rows["pyrt exits +inf"]["exits"]["logits"] == 1.0, "thresholds +inf: every sample must reach the final head"


@pytest.mark.parametrize("threads", THREADS, ids=[f"t{t}" for t in THREADS])
def test_b1_pytest_benchmark(threads, benchmark, data, model_path):
    """pytest-benchmark's own timing of pyruntime exits-on at batch 1 (one call per round,
    cycling over a fixed set of samples)."""
    _skip_threads(threads)
    x, _ = data
    k = min(BENCH_SAMPLES, len(x))
    xs = [x[i:i + 1] for i in range(k)]
    benchmark.group = f"student b1 threads={threads}"
    benchmark.extra_info.update(batch=1, threads=threads, config="pyrt exits on", samples=k)
    m = pyruntime.load(model_path, threads=threads)
    state = {"i": 0}

    def call():
        i = state["i"]
        state["i"] = i + 1 if i + 1 < k else 0
        return m.predict(xs[i])

    try:
        benchmark.pedantic(call, rounds=k, iterations=1, warmup_rounds=WARMUP_B1)
    finally:
        del m
        gc.collect()
    data_s = getattr(getattr(getattr(benchmark, "stats", None), "stats", None), "data", None)
    if data_s:
        st = _stats_us(np.asarray(data_s))
        benchmark.extra_info.update(st)
        RESULTS["b1_benchmark"][threads] = st | {"command": _command(f"test_b1_pytest_benchmark[t{threads}]")}


# ---------------------------------------------------------------------------------------
# 2. batch 64


@pytest.mark.parametrize("threads", THREADS, ids=[f"t{t}" for t in THREADS])
def test_b64(threads, data, model_path):
    _skip_threads(threads)
    x, y = data
    n = min(N_SAMPLES, len(x))
    chunks = n // BATCH
    if chunks == 0:
        pytest.skip(f"fewer than {BATCH} samples")
    xs = [x[c * BATCH:(c + 1) * BATCH] for c in range(chunks)]
    runners = _open_runners(CONFIGS, model_path, threads, BATCH)
    try:
        res = _interleaved(runners, xs, WARMUP_B64, f"b64 t{threads}")
        rows = _section_rows(runners, res, y, BATCH)
    finally:
        _close_all(runners)
    RESULTS["b64"][threads] = {"samples": chunks * BATCH, "batches": chunks, "passes": PASSES, "warmup": WARMUP_B64,
                               "rows": rows, "command": _command(f"test_b64[t{threads}]")}


# ---------------------------------------------------------------------------------------
# 3. threshold sweep


def test_sweep(data, model_path):
    x, y = data
    n = min(SWEEP_SAMPLES, len(x))
    xs = [x[i:i + 1] for i in range(n)]
    runners = _open_runners(("pyrt exits on", OFF, ORT), model_path, 1, 1)
    try:
        m = runners["pyrt exits on"].model
        base = [float(v) for v in m.exits]

        # One point per factor, all on the exits-on model: its thresholds are set (untimed)
        # before each block of that point.
        points = {f"x{f:g}": f for f in SWEEP_FACTORS}
        names = list(points) + [OFF, ORT]
        # warm-up
        for r in runners.values():
            for i in range(WARMUP_B1):
                r.call(xs[i % n])
        lat = {k: np.zeros(n) for k in names}
        pred = {k: np.zeros(n, np.int64) for k in names}
        counts = {k: np.zeros(len(base) + 1, np.int64) for k in points}
        bounds = np.linspace(0, n, PASSES + 1).astype(int)
        rng = np.random.default_rng(SEED + 3)
        gc.collect()
        gc.disable()
        try:
            with tqdm(total=n * len(names), desc="sweep t1", unit="call", mininterval=0.5, leave=False) as bar:
                for p in range(PASSES):
                    lo, hi = bounds[p], bounds[p + 1]
                    for name in rng.permutation(names):
                        if name in points:
                            f = points[name]
                            for k, b in enumerate(base):
                                m.exits[k] = math.inf if math.isinf(f) else b * f
                            call = m.predict
                            m.reset_exit_stats()
                        else:
                            call = runners[name].call
                        time.sleep(PAUSE_S)
                        _time_calls(call, xs, lo, hi, lat[name], pred[name], lambda out: int(np.asarray(out).argmax()))
                        if name in points:
                            counts[name] += np.array(list(m.exit_stats()["counts"].values()), np.int64)
                        bar.update(hi - lo)
        finally:
            gc.enable()
            for k, b in enumerate(base):
                m.exits[k] = b
    finally:
        _close_all(runners)
    rows = []
    for name in names:
        st = _stats_us(lat[name])
        row = {"point": name, "factor": points.get(name), "mean_us": st["mean_us"], "p50_us": st["p50_us"],
               "p99_us": st["p99_us"], "accuracy": float((pred[name] == y[:n]).mean())}
        if name in points:
            f = points[name]
            row["thresholds"] = [math.inf if math.isinf(f) else b * f for b in base]
            c = counts[name]
            row["exit_fractions"] = (c / max(int(c.sum()), 1)).tolist()
        rows.append(row)
    RESULTS["sweep"] = {"samples": n, "threads": 1, "batch": 1, "passes": PASSES, "base_thresholds": base,
                        "rows": rows, "command": _command("test_sweep"), "plot": str(PNG_PATH)}
    _plot_sweep(RESULTS["sweep"])
    assert PNG_PATH.is_file()


def _plot_sweep(sweep):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in sweep["rows"] if r["factor"] is not None]
    ref = {r["point"]: r for r in sweep["rows"] if r["factor"] is None}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r["mean_us"] for r in pts], [100 * r["accuracy"] for r in pts], "o-", label="pyruntime exits, thresholds x factor")
    for r in pts:
        ax.annotate(f"x{r['factor']:g}", (r["mean_us"], 100 * r["accuracy"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8)
    if OFF in ref:
        ax.plot(ref[OFF]["mean_us"], 100 * ref[OFF]["accuracy"], "s", ms=9, label="pyruntime exits=False")
    if ORT in ref:
        ax.plot(ref[ORT]["mean_us"], 100 * ref[ORT]["accuracy"], "^", ms=9, label="onnxruntime full graph")
    ax.set_xlabel("mean latency per sample (us), batch 1, 1 thread")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Early-exit threshold sweep, Fashion-MNIST test ({sweep['samples']} samples)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG_PATH, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# 4. closed-loop load test


def _load_level(m, xs, C: int, seconds: float):
    """C threads call m.predict on xs in a closed loop; (latencies s, sample indices, outputs, elapsed)."""
    k = len(xs)
    barrier = threading.Barrier(C + 1)
    per = [None] * C
    stop = [0.0]

    def worker(t):
        perf = time.perf_counter
        lat, idx, outs = [], [], []
        i = (t * k) // C
        barrier.wait()
        deadline = stop[0]
        while True:
            xi = xs[i]
            t0 = perf()
            out = m.predict(xi)
            t1 = perf()
            lat.append(t1 - t0)
            idx.append(i)
            outs.append(out)
            i = i + 1 if i + 1 < k else 0
            if t1 >= deadline:
                break
        per[t] = (lat, idx, outs)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(C)]
    for th in threads:
        th.start()
    stop[0] = time.perf_counter() + seconds
    start = time.perf_counter()
    barrier.wait()
    with tqdm(total=int(seconds), desc=f"load C={C}", unit="s", leave=False) as bar:
        while any(th.is_alive() for th in threads):
            time.sleep(min(1.0, max(0.01, stop[0] - time.perf_counter())))
            bar.n = min(int(seconds), int(time.perf_counter() - start))
            bar.refresh()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - start
    lat = np.concatenate([np.asarray(p[0]) for p in per])
    idx = np.concatenate([np.asarray(p[1], np.int64) for p in per])
    outs = np.concatenate([np.concatenate(p[2]) for p in per]) if lat.size else np.zeros((0, 10), np.float32)
    return lat, idx, outs, elapsed


@pytest.mark.parametrize("exits", [True, False], ids=["exits_on", "exits_off"])
def test_load(data, model_path, exits):
    """Exits on is the service as shipped; its latencies are bimodal (most samples leave at
    gate 0, a few run the whole graph), so its p99 sits near the full graph's time whatever
    the load. Exits off shows the same machinery under a uniform per-call cost."""
    x, _ = data
    k = min(LOAD_POOL, len(x))
    xs = [x[i:i + 1] for i in range(k)]
    m = pyruntime.load(model_path, threads=1, exits=exits)
    for i in range(WARMUP_B1):
        m.predict(xs[i % k])
    ref = np.concatenate([m.predict(xi) for xi in xs])  # single-threaded outputs, one call per sample
    levels = []
    p50_single = None
    failures = []
    try:
        for C in LOAD_CONCURRENCY:
            gc.collect()
            gc.disable()
            try:
                lat, idx, outs, elapsed = _load_level(m, xs, C, LOAD_SECONDS)
            finally:
                gc.enable()
            mism = int(np.sum(np.any(outs != ref[idx], axis=1)))
            st = _stats_us(lat)
            if C == 1:
                p50_single = st["p50_us"]
            bound = 1.5 * (C / CORES) * p50_single
            loose = 1.5 * max(C / CORES, 1.0) * p50_single
            levels.append({"C": C, "calls": int(lat.size), "seconds": elapsed, "throughput": lat.size / elapsed,
                           "mean_us": st["mean_us"], "p50_us": st["p50_us"], "p99_us": st["p99_us"],
                           "bound_us": bound, "bound_loose_us": loose, "mismatches": mism,
                           "distinct_samples": int(np.unique(idx).size)})
            if mism:
                failures.append(f"C={C}: {mism} of {lat.size} results differ from the single-threaded output")
            gc.collect()
    finally:
        RESULTS["load" if exits else "load_off"] = {
            "threads_per_call": 1, "pool": k, "seconds": LOAD_SECONDS, "cores": CORES, "p50_single_us": p50_single,
            "levels": levels, "command": _command("test_load[exits_on]" if exits else "test_load[exits_off]")}
        del m
        gc.collect()
    assert not failures, "; ".join(failures)


# ---------------------------------------------------------------------------------------
# the report


def _f(v, nd=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{nd}f}"


def _ratio(num, den):
    if num is None or den is None or den == 0:
        return "n/a"
    return f"{num / den:.2f}x"


def _exits_str(ex):
    if not ex:
        return "-"
    return "/".join(f"{100 * v:.0f}" for v in ex.values())


def _target(lines, name, measured, ok):
    if measured is None:
        lines.append(f"| {name} | n/a (not measured) | MISS |")
    else:
        lines.append(f"| {name} | {measured} | {'PASS' if ok else 'MISS'} |")


def render_report() -> str:
    info = pyruntime.cpu_info()
    lines = ["# Early exits: the shipped Fashion-MNIST student, pyruntime vs onnxruntime vs OpenVINO", "",
             f"CPU: {info.get('vendor')} {info.get('model')}, {info.get('cores')} usable CPU(s), pyruntime path "
             f"{info.get('isa')}; load average {os.getloadavg()[0]:.2f} at the end (shared 2-core VM: noisy). "
             f"Model: `{os.path.relpath(zoo.path())}`. Data: Fashion-MNIST test set in a seeded shuffled order.",
             f"Full command: {_command()}.", "",
             "Latencies in microseconds, timed with perf_counter around each call. "
             "x exits off = pyrt exits-off mean / this mean (> 1: faster); x ORT, x OpenVINO likewise against the "
             "peer's full graph. exits %: share answered by gate0 / gate1 / final head. "
             "agree ORT: share of samples with the same top-1 class as onnxruntime.", ""]
    if RESULTS["errors"]:
        lines += ["Peers that could not run: " + "; ".join(f"{k}: {v}" for k, v in RESULTS["errors"].items()), ""]

    def section_table(sec, batch):
        per_batch = batch > 1
        head = ("| threads | config | mean us/sample | mean us/batch | p50 us/batch | p99 us/batch | accuracy % | "
                "agree ORT % | exits % | x exits off | x ORT | x OpenVINO |") if per_batch else \
               ("| threads | config | mean us | p50 us | p99 us | accuracy % | agree ORT % | exits % | "
                "x exits off | x ORT | x OpenVINO |")
        out = [head, "|" + "---|" * (head.count("|") - 1)]
        for t, s in sorted(sec.items()):
            rows = s["rows"]
            ref = {n: rows[n]["mean_us"] if n in rows else None for n in (OFF, ORT, OV)}
            for name in CONFIGS:
                r = rows.get(name)
                if r is None:
                    out.append(f"| {t} | {name} | n/a | | | | | | | | | |")
                    continue
                agree = "n/a" if r["agree_ort"] is None else _f(100 * r["agree_ort"], 2)
                common = (f"{_f(100 * r['accuracy'], 2)} | {agree} | {_exits_str(r['exits'])} | "
                          f"{_ratio(ref[OFF], r['mean_us'])} | {_ratio(ref[ORT], r['mean_us'])} | "
                          f"{_ratio(ref[OV], r['mean_us'])} |")
                if per_batch:
                    out.append(f"| {t} | {name} | {_f(r['mean_us'], 2)} | {_f(r['batch_mean_us'])} | "
                               f"{_f(r['batch_p50_us'])} | {_f(r['batch_p99_us'])} | {common}")
                else:
                    out.append(f"| {t} | {name} | {_f(r['mean_us'])} | {_f(r['p50_us'])} | {_f(r['p99_us'])} | {common}")
        return out

    if RESULTS["b1"]:
        s0 = next(iter(RESULTS["b1"].values()))
        lines += ["## 1. Batch 1", "",
                  f"{s0['samples']} test samples per configuration, {s0['passes']} interleaved passes, "
                  f"{s0['warmup']} warm-up calls each."]
        lines += [f"Threads {t}: {s['command']}." for t, s in sorted(RESULTS["b1"].items())] + [""]
        lines += section_table(RESULTS["b1"], 1) + [""]
        for t, b in sorted(RESULTS["b1_benchmark"].items()):
            lines.append(f"pytest-benchmark, pyrt exits on, batch 1, {t} thread(s), {b['n']} rounds of one call over "
                         f"a fixed set of {min(BENCH_SAMPLES, b['n'])} samples: mean {_f(b['mean_us'])} us, "
                         f"p50 {_f(b['p50_us'])} us, p99 {_f(b['p99_us'])} us ({b['command']}).")
        lines.append("")
    if RESULTS["b64"]:
        s0 = next(iter(RESULTS["b64"].values()))
        lines += ["## 2. Batch 64", "",
                  f"{s0['batches']} full batches of {BATCH} ({s0['samples']} samples; the trailing partial batch is "
                  f"left out) per configuration, {s0['passes']} interleaved passes, {s0['warmup']} warm-up batches."]
        lines += [f"Threads {t}: {s['command']}." for t, s in sorted(RESULTS["b64"].items())] + [""]
        lines += section_table(RESULTS["b64"], BATCH) + [""]
    sw = RESULTS["sweep"]
    if sw:
        lines += ["## 3. Threshold sweep (batch 1, 1 thread)", "",
                  f"Both gate thresholds x factor (base {', '.join(f'{b:.4f}' for b in sw['base_thresholds'])}) on "
                  f"{sw['samples']} samples, {sw['passes']} interleaved passes with the reference points. "
                  f"Plot: `{os.path.relpath(sw['plot'])}`. Command: {sw['command']}.", "",
                  "| point | thresholds | mean us | p50 us | p99 us | accuracy % | exits % | x exits off | x ORT |",
                  "|---|---|---|---|---|---|---|---|---|"]
        ref = {r["point"]: r["mean_us"] for r in sw["rows"] if r["factor"] is None}
        for r in sw["rows"]:
            th = "-" if r["factor"] is None else ", ".join("inf" if math.isinf(v) else f"{v:.3f}" for v in r["thresholds"])
            ex = "-" if r["factor"] is None else "/".join(f"{100 * v:.0f}" for v in r["exit_fractions"])
            lines.append(f"| {r['point']} | {th} | {_f(r['mean_us'])} | {_f(r['p50_us'])} | {_f(r['p99_us'])} | "
                         f"{_f(100 * r['accuracy'], 2)} | {ex} | {_ratio(ref.get(OFF), r['mean_us'])} | "
                         f"{_ratio(ref.get(ORT), r['mean_us'])} |")
        lines.append("")
    for key, label in (("load", "exits on"), ("load_off", "exits=False")):
        ld = RESULTS[key]
        if not ld:
            continue
        lines += [f"## 4. Closed-loop load (one shared model, threads=1 per call, {label}, batch 1)", "",
                  f"C Python threads call `m.predict(x_i)` back to back for {ld['seconds']:g} s per level, cycling over "
                  f"{ld['pool']} test samples; every output is compared with the single-threaded output of its sample. "
                  f"Bound used for the target: p99 <= 1.5 x (C / {ld['cores']}) x p50_single, p50_single = the C=1 p50 "
                  f"({_f(ld['p50_single_us'])} us); for C=1 it is 0.75 x p50 (below the median, so it cannot pass). "
                  f"'loose bound' (informational only) = 1.5 x max(C / {ld['cores']}, 1) x p50_single. "
                  f"Command: {ld['command']}.", "",
                  "| C | calls | calls/s | mean us | p50 us | p99 us | bound us | p99 <= bound | loose bound us | "
                  "p99 <= loose | mismatches |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for lv in ld["levels"]:
            lines.append(f"| {lv['C']} | {lv['calls']} | {lv['throughput']:.0f} | {_f(lv['mean_us'])} | "
                         f"{_f(lv['p50_us'])} | {_f(lv['p99_us'])} | {_f(lv['bound_us'])} | "
                         f"{'yes' if lv['p99_us'] <= lv['bound_us'] else 'no'} | {_f(lv['bound_loose_us'])} | "
                         f"{'yes' if lv['p99_us'] <= lv['bound_loose_us'] else 'no'} | {lv['mismatches']} |")
        lines.append("")

    lines += ["## Targets (PASS/MISS; never fails the run)", "", "| target | measured | result |", "|---|---|---|"]

    def pair(sec, t, a, b):
        rows = RESULTS[sec].get(t, {}).get("rows", {})
        return rows.get(a), rows.get(b)

    def speedup(sec, t, slow, label, need, max_drop, nd, unit):
        """Target: 'pyrt exits on' at least `need` x faster than `slow`, within max_drop pp."""
        on, other = pair(sec, t, "pyrt exits on", slow)
        name = f"{sec}, {t} thread(s): {label}"
        if not (on and other):
            return _target(lines, name, None, False)
        sp, drop = other["mean_us"] / on["mean_us"], 100 * (other["accuracy"] - on["accuracy"])
        _target(lines, name, f"{sp:.2f}x ({_f(on['mean_us'], nd)} vs {_f(other['mean_us'], nd)} {unit}), "
                f"drop {drop:+.2f} pp", sp >= need and (max_drop is None or drop <= max_drop))

    for t in THREADS:
        speedup("b1", t, OFF, "exits on vs off >= 2.0x lower mean latency at <= 0.5 pp accuracy drop", 2.0, 0.5,
                1, "us")
    for t in THREADS:
        speedup("b64", t, OFF, "exits on vs off >= 1.6x lower mean latency", 1.6, None, 2, "us/sample")
    for t in THREADS:
        speedup("b1", t, ORT, "exits on vs onnxruntime full graph >= 5x at <= 0.5 pp drop vs ORT", 5.0, 0.5, 1, "us")
    for sec in ("b1", "b64"):
        for t in THREADS:
            inf, off = pair(sec, t, "pyrt exits +inf", OFF)
            if inf and off:
                ov = inf["mean_us"] / off["mean_us"] - 1
                _target(lines, f"{sec}, {t} thread(s): gate overhead when nothing exits (+inf vs exits=False) <= 5%",
                        f"{100 * ov:+.1f}% ({_f(inf['mean_us'], 2)} vs {_f(off['mean_us'], 2)} us/sample)", ov <= 0.05)
            else:
                _target(lines, f"{sec}, {t} thread(s): gate overhead <= 5%", None, False)
    for key, label in (("load", "exits on"), ("load_off", "exits=False")):
        ld = RESULTS[key]
        if not (ld and ld["levels"]):
            _target(lines, f"load ({label}) C=1,2,4: p99 bound, results identical", None, False)
            continue
        for lv in ld["levels"]:
            ok = lv["p99_us"] <= lv["bound_us"] and lv["mismatches"] == 0
            _target(lines, f"load ({label}) C={lv['C']}: p99 <= 1.5 x ({lv['C']}/{ld['cores']}) x p50_single = "
                           f"{_f(lv['bound_us'])} us, results identical",
                    f"p99 {_f(lv['p99_us'])} us, {lv['throughput']:.0f} calls/s, {lv['mismatches']} mismatches "
                    f"of {lv['calls']}", ok)
    return "\n".join(lines) + "\n"


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _json_ready():
    def fix(v):  # JSON has no inf: write it as the string "inf"
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {str(k): fix(w) for k, w in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(w) for w in v]
        return v
    info = pyruntime.cpu_info()
    return fix({"cpu": {k: info.get(k) for k in ("vendor", "model", "cores", "isa")}, "model": str(zoo.path()),
                "command": _command(), "settings": {"samples": N_SAMPLES, "load_seconds": LOAD_SECONDS,
                                                    "sweep_samples": SWEEP_SAMPLES, "passes": PASSES, "seed": SEED},
                "results": RESULTS, "python": sys.version.split()[0]})
