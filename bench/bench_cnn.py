"""CNN student benchmarks (issue 4, item 6): pyruntime beside onnxruntime and OpenVINO, in the
same pytest run.

Run from the repository root (bench/pytest.ini makes bench/ the rootdir):

    python -m pytest bench/bench_cnn.py [--benchmark-json=bench/results/cnn.json]

Models (bench/cnn_models.py, fixed seeds, nothing downloaded): small-cnn, mid-resnet
(101.6 M MACs per image) and dw-separable, each fp32 and onnxruntime quantize_static int8
(QDQ S8S8 per-channel, QDQ U8S8 per-tensor). Configs (batch, threads): (1, 1), (64, 1) and,
for small-cnn and mid-resnet, (1, 2) and (64, 2).

Runtimes: pyruntime `load(path, threads=t).predict(x)`; onnxruntime and OpenVINO exactly as
bench/bench_models.py builds them (its `_make_runner`: ORT intra_op_num_threads = t,
sequential; OpenVINO CPU, INFERENCE_NUM_THREADS = t, static batch, one sync infer request).
torch is not measured here (the fp32 torch column of DESIGN.md's table is not reproduced).

Timing: pytest-benchmark pedantic. Calls above HEAVY_S (e.g. mid-resnet batch 64) get
3 rounds of 1 call; cheaper ones get rounds of >= 50 us within PYRT_CNN_BUDGET_S (default
0.6 s) per row. p50/p99 are over the per-round per-call averages.

Check column (pyruntime rows only, never failing the run): top-1 agreement with
onnxruntime on the benchmark batch and max |diff| of the logits.

For int8 pyruntime rows, "% peak" = useful MACs (2 ops each) per second over the measured
single-core int8 peak times threads: `peak_probe("vpdpbusd_zmm")` where the CPU has
avx512vnni, else "vpmaddwd_ymm" (the exact AVX2 path), measured once per session.

The markdown table and the issue-4 targets (PASS/MISS, never failing) are printed at the end
and written to bench/results/cnn.md (PYRT_CNN_REPORT=path to change it).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE.parent / "tests"))

import bench_models as bm  # noqa: E402  (its runners and formatting helpers)
import cnn_models as cm  # noqa: E402
import pyruntime  # noqa: E402

RUNTIMES = ("pyruntime", "onnxruntime", "openvino")
FORMATS = {"fp32": "fp32", "QDQ S8S8 per-channel": "qdq_s8s8_pc", "QDQ U8S8 per-tensor": "qdq_u8s8_pt"}
CONFIGS = {
    "small-cnn": [(1, 1), (1, 2), (64, 1), (64, 2)],
    "mid-resnet": [(1, 1), (1, 2), (64, 1), (64, 2)],
    "dw-separable": [(1, 1), (64, 1)],
}
ROUND_MIN_S = 50e-6
HEAVY_S = 0.02
HEAVY_ROUNDS = 3
BUDGET_S = float(os.environ.get("PYRT_CNN_BUDGET_S", "0.6"))
MAX_ROUNDS = 2000
REPORT_DEFAULT = _HERE / "results" / "cnn.md"


@dataclass(frozen=True)
class Case:
    model: str
    fmt: str
    batch: int
    threads: int
    runtime: str

    @property
    def key(self):
        return (self.model, self.fmt, self.batch, self.threads)

    @property
    def id(self):
        return f"{self.model}-{FORMATS[self.fmt]}-b{self.batch}-t{self.threads}-{self.runtime}"


CASES = [Case(m, f, b, t, r) for m in cm.MODELS for f in FORMATS for b, t in CONFIGS[m] for r in RUNTIMES]


@dataclass
class Result:
    case: Case
    median_us: float | None = None
    p99_us: float | None = None
    rounds: int = 0
    iterations: int = 0
    check: str = ""
    status: str = ""


RESULTS: dict[Case, Result] = {}
STATE: dict = {"peak": None, "peak_kind": None, "macs": {}, "inputs": ""}


# ---------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    z = cm.CNNZoo(tmp_path_factory.mktemp("cnn_zoo"), variants=[v for v in FORMATS.values() if v != "fp32"])
    STATE["macs"] = dict(z.macs)
    return z


@pytest.fixture(scope="module")
def int8_peak():
    """(kind, Gop/s per core) measured once: vpdpbusd_zmm with avx512vnni, else vpmaddwd_ymm."""
    info = pyruntime.cpu_info()
    kind = "vpdpbusd_zmm" if "avx512vnni" in info.get("available", []) else "vpmaddwd_ymm"
    STATE["peak_kind"] = kind
    try:
        STATE["peak"] = max(float(pyruntime._native.peak_probe(kind, 0.2)) for _ in range(3))
    except Exception as e:  # a probe failure must not hide the benchmark
        STATE["peak"] = f"{type(e).__name__}: {e}"
    return kind, STATE["peak"]


_REF: dict = {}  # (model, fmt, batch) -> onnxruntime output on the benchmark batch


def _check(case: Case, out: np.ndarray, path: Path, x: np.ndarray) -> str:
    key = (case.model, case.fmt, case.batch)
    if key not in _REF:
        _REF[key] = bm.zh.ort_session(path, 1).run(None, {"x": x})[0]
    ref = _REF[key]
    d = float(np.abs(out.astype(np.float64) - ref).max())
    agree = int((out.argmax(1) == ref.argmax(1)).sum())
    n = len(ref)
    tag = "ok" if agree == n else "TOP1"
    return f"{tag} {agree}/{n}, max|d| {d:.2g}"


def _make_runner(runtime, path, threads, batch, feed):
    if runtime != "pyruntime":
        return bm._make_runner(runtime, path, threads, [feed])
    m = pyruntime.load(str(path), threads=threads)
    x = feed["x"]
    m.predict(x)  # plan this shape

    def call():
        return m.predict(x)

    holder = [m]

    def close():
        holder.clear()
        import gc
        gc.collect()

    return call, close


def _plan(call) -> tuple[int, int, int]:
    """(iterations, rounds, warmup rounds)."""
    t0 = time.perf_counter()
    call()
    per = time.perf_counter() - t0
    if per >= HEAVY_S:
        return 1, HEAVY_ROUNDS, 0
    t0 = time.perf_counter()
    n = 0
    while n < 3 or time.perf_counter() - t0 < 0.03:
        call()
        n += 1
    per = (time.perf_counter() - t0) / n
    iterations = max(1, int(np.ceil(ROUND_MIN_S / per)))
    rounds = int(min(MAX_ROUNDS, max(7, BUDGET_S / (per * iterations))))
    return iterations, rounds, 1


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cnn(case: Case, benchmark, zoo, int8_peak, cnn_report):
    benchmark.group = f"{case.model} {case.fmt} batch={case.batch} threads={case.threads}"
    res = RESULTS.setdefault(case, Result(case))
    benchmark.extra_info.update(model=case.model, format=case.fmt, batch=case.batch, threads=case.threads,
                                runtime=case.runtime)
    if case.threads > pyruntime._native.max_threads():
        res.status = f"skipped: needs {case.threads} CPUs"
        pytest.skip(res.status)
    path = zoo.path(case.model, FORMATS[case.fmt])
    x, STATE["inputs"] = cm.eval_images(case.batch)
    feed = {"x": x}
    try:
        call, close = _make_runner(case.runtime, path, case.threads, case.batch, feed)
    except Exception as e:  # a runtime that cannot load the model is reported, not fatal
        res.status = f"n/a: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        pytest.skip(res.status)
    try:
        out = np.asarray(call())
        if case.runtime == "pyruntime":
            res.check = _check(case, out, path, x)
            benchmark.extra_info["check"] = res.check
        iterations, rounds, warm = _plan(call)
        res.iterations, res.rounds = iterations, rounds
        benchmark.pedantic(call, rounds=rounds, iterations=iterations, warmup_rounds=warm)
    finally:
        close()
    st = getattr(benchmark, "stats", None)
    data = getattr(getattr(st, "stats", None), "data", None) if st is not None else None
    if data:
        res.median_us = statistics.median(data) * 1e6
        res.p99_us = float(np.quantile(np.asarray(data), 0.99)) * 1e6
        benchmark.extra_info.update(median_us=res.median_us, p99_us=res.p99_us)
    res.status = "ok"


# ---------------------------------------------------------------------------------------
# the report


def _median(key, runtime):
    for c, r in RESULTS.items():
        if c.key == key and c.runtime == runtime:
            return r.median_us
    return None


def _pct_peak(case: Case, median_us):
    pk = STATE["peak"]
    if case.fmt == "fp32" or median_us is None or not isinstance(pk, float) or pk <= 0:
        return None
    gops = 2.0 * STATE["macs"].get(case.model, 0) * case.batch / (median_us * 1e-6) / 1e9
    return 100.0 * gops / (pk * case.threads)


def render_report() -> str:
    info = pyruntime.cpu_info()
    pk = STATE["peak"]
    pk_s = f"{pk:.1f} Gop/s per core" if isinstance(pk, float) else str(pk)
    macs = ", ".join(f"{m} {v / 1e6:.2f} M" for m, v in STATE["macs"].items())
    lines = ["# CNN benchmarks: pyruntime vs onnxruntime vs OpenVINO", "",
             f"CPU: {info.get('vendor')} {info.get('model')}, {info.get('cores')} usable CPU(s), pyruntime path "
             f"{info.get('isa')}; load average {os.getloadavg()[0]:.2f} at the end (shared machine: noisy).",
             "Command: `python -m pytest bench/bench_cnn.py`. Times are microseconds per call (p50 and p99 "
             "of per-round averages; calls >= 20 ms get 3 rounds). x ORT = ORT p50 / this p50 (> 1: faster "
             "than ORT); x OV likewise. torch: not measured.",
             f"MACs per image: {macs}. Inputs: {STATE['inputs']}.",
             f"int8 peak ({STATE['peak_kind']}): {pk_s}; % peak = useful MACs x 2 / time / (peak x threads).",
             "check: pyruntime vs onnxruntime on the benchmark batch (top-1 agreement, max |diff| of logits).",
             "", "| model | format | batch | threads | runtime | p50 us | p99 us | x ORT | x OV | % peak | check |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in CASES:
        r = RESULTS.get(case)
        if r is None:
            continue
        ort, ovm = _median(case.key, "onnxruntime"), _median(case.key, "openvino")
        head = f"| {case.model} | {case.fmt} | {case.batch} | {case.threads} | {case.runtime} | "
        if r.median_us is None:
            lines.append(head + f"{r.status or 'n/a'} | | | | | {r.check} |")
            continue
        pct = _pct_peak(case, r.median_us)
        lines.append(head + f"{bm._fmt_us(r.median_us)} | {bm._fmt_us(r.p99_us)} | {bm._ratio(ort, r.median_us)} | "
                     f"{bm._ratio(ovm, r.median_us)} | {'' if pct is None else f'{pct:.1f}%'} | {r.check} |")

    lines += ["", "## Targets (issue 4)", "",
              "int8 = QDQ S8S8 per-channel (the U8S8 per-tensor rows are reported above, not targeted).", "",
              "| target | measured | result |", "|---|---|---|"]

    def target(name, measured, ok):
        lines.append(f"| {name} | {'n/a' if measured is None else measured} | "
                     f"{'MISS (not measured)' if measured is None else ('PASS' if ok else 'MISS')} |")

    def speed(model, fmt, b, t, peer, peer_fmt=None):
        p = _median((model, fmt, b, t), "pyruntime")
        o = _median((model, peer_fmt or fmt, b, t), peer)
        return (None, None) if p is None or o is None else (o / p, f"{o / p:.2f}x ({bm._fmt_us(p)} vs {bm._fmt_us(o)} us)")

    i8 = "QDQ S8S8 per-channel"
    sp, s = speed("small-cnn", i8, 1, 1, "onnxruntime")
    target("small-cnn int8 b1 t1 >= 3x ORT int8", s, sp is not None and sp >= 3.0)
    sp, s = speed("small-cnn", i8, 1, 1, "onnxruntime", "fp32")
    target("small-cnn int8 b1 t1 >= 2.5x ORT fp32", s, sp is not None and sp >= 2.5)
    for t in (1, 2):
        for peer in ("onnxruntime", "openvino"):
            sp, s = speed("mid-resnet", i8, 1, t, peer)
            target(f"mid-resnet int8 b1 t{t} >= 1.1x {peer} int8", s, sp is not None and sp >= 1.1)
        for peer, need in (("onnxruntime", 1.05), ("openvino", 1.0)):
            sp, s = speed("mid-resnet", i8, 64, t, peer)
            target(f"mid-resnet int8 b64 t{t} >= {need}x {peer} int8", s, sp is not None and sp >= need)
    c = Case("mid-resnet", i8, 64, 1, "pyruntime")
    pct = _pct_peak(c, _median(c.key, "pyruntime"))
    target(f"mid-resnet int8 b64 t1 >= 92% of {STATE['peak_kind']} peak", None if pct is None else f"{pct:.1f}%",
           pct is not None and pct >= 92.0)
    sp, s = speed("dw-separable", i8, 1, 1, "onnxruntime")
    target("dw-separable int8 b1 t1 >= 1.2x ORT int8", s, sp is not None and sp >= 1.2)
    for m in cm.MODELS:
        for b, t in CONFIGS[m]:
            sp, s = speed(m, "fp32", b, t, "onnxruntime")
            target(f"{m} fp32 b{b} t{t} >= 0.8x ORT fp32", s, sp is not None and sp >= 0.8)
    return "\n".join(lines) + "\n"


class _ReportPlugin:
    def __init__(self, path: Path):
        self.path = path

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        if not RESULTS:
            return
        try:
            md = render_report()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(md)
            where = f"(written to {os.path.relpath(self.path)})"
        except Exception as e:  # the report never hides the benchmark results
            md, where = f"cnn report failed: {type(e).__name__}: {e}", ""
        terminalreporter.write_sep("=", "cnn report")
        for line in md.splitlines():
            terminalreporter.write_line(line)
        if where:
            terminalreporter.write_line(where)


@pytest.fixture(scope="session")
def cnn_report(request):
    path = Path(os.environ.get("PYRT_CNN_REPORT", str(REPORT_DEFAULT)))
    if not request.config.pluginmanager.has_plugin("pyrt_cnn_report"):
        request.config.pluginmanager.register(_ReportPlugin(path), "pyrt_cnn_report")
    return path
