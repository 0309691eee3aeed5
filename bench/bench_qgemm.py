"""Microbenchmarks of pyruntime's int8 GEMM core beside onnxruntime MatMulInteger and torch fp32.

Run from the repository root (bench/pytest.ini makes bench/ the rootdir):

    python -m pytest bench/bench_qgemm.py [--benchmark-json=bench/results/qgemm.json]

Rows per shape M x K x N and thread count, in this order (one pytest-benchmark group each):
onnxruntime MatMulInteger (session.run, B a constant initializer), torch fp32 F.linear, then
pyruntime.ops.qgemm(a, packed, threads=t, isa=path) for every ISA path, prepacked once with
pyruntime.ops.pack_weights(b). A is full-range u8, B arbitrary full-range s8 (the exact path);
at 1024^3 each path also runs fused requant to u8 and small weights (|w| <= 64, which lets
AVX2 use its vpmaddubsw quad layout). Paths this CPU lacks are reported as n/a, never run.
Results are checked against the exact product (float64 BLAS, exact below 2^53) once per row.
The report (table, targets) is printed at the end and written to bench/results/qgemm.md.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import pytest

import peers
import pyruntime
import qgemm_report as rep
from pyruntime import ops
from pyruntime import reference

SHAPES = [(1, 784, 256), (1, 1024, 1024), (16, 512, 512), (64, 512, 512), (256, 1024, 1024), (1024, 1024, 1024)]
BIG = (1024, 1024, 1024)
TWO_THREAD_SHAPES = {(256, 1024, 1024), (1024, 1024, 1024)}
PATHS = ["scalar", "avx2", "avx512vnni"]
SCALAR_SKIP = {BIG}                     # ~0.1 s a call: skipped, see the skip reason
SCALAR_FEW_ROUNDS = {(256, 1024, 1024)}  # ~30 ms a call: 3 rounds only
FEW_ROUNDS = 3
OUT_ZERO_POINT = 128


@dataclass(frozen=True)
class Case:
    impl: str                 # "ort" | "torch" | "pyruntime"
    shape: tuple
    threads: int
    path: str | None = None
    out: str = "int32"        # "int32" | "u8"
    weights: str = "full"     # "full" | "small"

    @property
    def id(self) -> str:
        base = f"{'x'.join(map(str, self.shape))}-t{self.threads}"
        if self.impl == "ort":
            return base + "-ort_matmulinteger"
        if self.impl == "torch":
            return base + "-torch_fp32_linear"
        return base + f"-{self.path}-{self.out}" + ("-w64" if self.weights == "small" else "")


def _cases() -> list:
    cases = []
    for shape in SHAPES:
        for t in ([1, 2] if shape in TWO_THREAD_SHAPES else [1]):
            cases += [Case("ort", shape, t), Case("torch", shape, t, out="fp32")]
            for path in PATHS:
                cases.append(Case("pyruntime", shape, t, path))
                if shape == BIG and t == 1:
                    cases.append(Case("pyruntime", shape, t, path, out="u8"))
                    cases.append(Case("pyruntime", shape, t, path, weights="small"))
    return cases


CASES = _cases()


# ---------------------------------------------------------------------------- data (fixed seeds)

@functools.lru_cache(maxsize=None)
def _data(shape: tuple, weights: str):
    M, K, N = shape
    rng = np.random.default_rng([M, K, N, 0 if weights == "full" else 1])
    a = rng.integers(0, 256, size=(M, K)).astype(np.uint8)
    if weights == "full":
        b = rng.integers(-128, 128, size=(K, N)).astype(np.int8)  # arbitrary s8: exact path
    else:
        b = rng.integers(-64, 65, size=(K, N)).astype(np.int8)    # |w| <= 64
    return a, b


@functools.lru_cache(maxsize=None)
def _exact(shape: tuple, weights: str) -> np.ndarray:
    """The exact int32 product; float64 BLAS is exact here (|acc| < 2^53)."""
    a, b = _data(shape, weights)
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _packed(shape: tuple, weights: str):
    return ops.pack_weights(_data(shape, weights)[1])


@functools.lru_cache(maxsize=None)
def _multiplier(shape: tuple, weights: str) -> float:
    """A requant multiplier that spreads the u8 output over its range (few clamps)."""
    return float(np.float32(40.0 / max(1.0, float(_exact(shape, weights).std()))))


PAIRED_BUDGET_S = 3.0


def _warmup(fn, min_calls: int = 2, min_time: float = 0.05, max_calls: int = 200) -> None:
    t0 = time.perf_counter()
    for i in range(max_calls):
        fn()
        if i + 1 >= min_calls and time.perf_counter() - t0 >= min_time:
            break


def _median(benchmark):
    """(median, best, rounds) of the per-round times; Nones under --benchmark-disable."""
    st = getattr(benchmark, "stats", None)
    if st is None or getattr(st, "stats", None) is None:
        return None, None, None
    return st.stats.median, st.stats.min, st.stats.rounds


# ---------------------------------------------------------------------------- the benchmark

@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_qgemm(case: Case, benchmark, peaks, cpu):
    M, K, N = case.shape
    benchmark.group = f"{M}x{K}x{N} threads={case.threads}"
    row = rep.record(rep.Row(case.impl, case.shape, case.threads, case.path, case.out, case.weights))
    row.extra_info = benchmark.extra_info
    benchmark.extra_info.update(impl=case.impl, shape=f"{M}x{K}x{N}", M=M, K=K, N=N, threads=case.threads,
                                path=case.path, out=case.out, weights=case.weights)

    if case.threads > pyruntime._native.max_threads():
        row.status = f"skipped: needs {case.threads} CPUs, the process may use {pyruntime._native.max_threads()}"
        pytest.skip(row.status)

    a, b = _data(case.shape, case.weights)
    exact = _exact(case.shape, case.weights)

    if case.impl in ("ort", "torch"):
        make = peers.ort_matmul_integer if case.impl == "ort" else peers.torch_linear_fp32
        run, close = make(a, b, case.threads)
        try:
            if case.impl == "ort":
                row.exact = bool(np.array_equal(run(), exact))
            _warmup(run)
            benchmark(run)
        finally:
            close()
        row.median_s, row.best_s, row.rounds = _median(benchmark)
        return

    # pyruntime
    path = case.path
    if path not in cpu["available"]:
        row.status = rep.NOT_AVAILABLE
        pytest.skip(rep.NOT_AVAILABLE)
    if path == "scalar" and case.shape in SCALAR_SKIP:
        row.status = "skipped: scalar too slow at this size (~0.1 s a call), keeps the run within budget"
        pytest.skip(f"scalar path skipped at {M}x{K}x{N}: too slow (portable reference path, ~0.1 s a call); "
                    "keeps the benchmark run within its 3-4 minute budget")
    packed = _packed(case.shape, case.weights)
    kwargs = dict(threads=case.threads, isa=path)
    if case.out == "u8":
        kwargs.update(multiplier=_multiplier(case.shape, case.weights), out_zero_point=OUT_ZERO_POINT,
                      out_dtype=np.uint8)

    def run():
        return ops.qgemm(a, packed, **kwargs)

    first = run()  # packs B for this path on first use
    row.variant = int(packed.layout(path)["variant"])
    benchmark.extra_info["layout_variant"] = row.variant
    if case.out == "int32":
        expected = exact
    else:
        expected = reference.requantize(exact, np.float32(kwargs["multiplier"]), OUT_ZERO_POINT, 0, 255, np.uint8)
    row.exact = bool(first.dtype == expected.dtype and np.array_equal(first, expected))

    if path == "scalar" and case.shape in SCALAR_FEW_ROUNDS:
        benchmark.pedantic(run, rounds=FEW_ROUNDS, iterations=1, warmup_rounds=0)
    else:
        _warmup(run)
        benchmark(run)
    row.median_s, row.best_s, row.rounds = _median(benchmark)
    assert row.exact, f"{case.id}: pyruntime result differs from the exact reference (timing kept in the report)"


# ---------------------------------------------------------------------------- paired rounds

PAIRED_CASES = [((1, 1024, 1024), "avx2"), ((1, 1024, 1024), "avx512vnni"), ((1024, 1024, 1024), "avx512vnni")]


@pytest.mark.parametrize("shape,path", PAIRED_CASES, ids=[f"{'x'.join(map(str, s))}-{p}" for s, p in PAIRED_CASES])
def test_paired_vs_ort(shape, path, cpu):
    """pyruntime (prepacked, Python API, int32 out) and onnxruntime MatMulInteger alternate
    round by round, one thread each, order flipped every pair; the median per-pair ratio
    (ORT time / pyruntime time) judges the ORT targets. Both halves of a pair see the same
    neighbours on a shared machine; the sequential rows do not."""
    if path not in cpu["available"]:
        pytest.skip(rep.NOT_AVAILABLE)
    a, b = _data(shape, "full")
    packed = _packed(shape, "full")
    ort_run, close = peers.ort_matmul_integer(a, b, 1)
    try:
        ours = lambda: ops.qgemm(a, packed, threads=1, isa=path)  # noqa: E731
        ratios = peers.paired_ratios(ours, ort_run, 2e-3, PAIRED_BUDGET_S, 7)  # rounds of ~2 ms
    finally:
        close()
    rep.PAIRED[(shape, path)] = (float(np.median(ratios)), len(ratios))
    assert all(r > 0 for r in ratios)

