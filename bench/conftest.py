"""pytest glue for bench/: peak-probe session fixture, report at session finish.

The markdown table is computed in a pytest_sessionfinish hook wrapper that runs before
pytest-benchmark's own one (tryfirst), so the derived figures (Gop/s, ratios to peers,
% of peak, speedups) land in each benchmark's extra_info before --benchmark-json is written;
it is printed in the terminal summary after pytest-benchmark's table and written to
--qgemm-report (default bench/results/qgemm.md).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import qgemm_report as rep

_HERE = Path(__file__).resolve().parent


def pytest_addoption(parser):
    group = parser.getgroup("pyruntime bench")
    group.addoption("--qgemm-report", default=str(_HERE / "results" / "qgemm.md"),
                    help="where bench_qgemm.py writes its markdown table (default: bench/results/qgemm.md)")
    group.addoption("--probe-seconds", type=float, default=0.2,
                    help="seconds per peak_probe call (best of 3 is kept)")


def _print_uncaptured(config, text: str) -> None:
    capman = config.pluginmanager.getplugin("capturemanager")
    tr = config.pluginmanager.getplugin("terminalreporter")
    if capman is not None and tr is not None:
        with capman.global_and_fixture_disabled():
            tr.write_line("")
            tr.write_line(text)
    else:
        print(text)


@pytest.fixture(scope="session")
def cpu():
    import pyruntime
    info = pyruntime.cpu_info()
    rep.STATE["cpu"] = info
    return info


@pytest.fixture(scope="session")
def peaks(request, cpu):
    """This CPU's per-core peak for each probe kind, measured once per session."""
    p = rep.measure_peaks(seconds=request.config.getoption("--probe-seconds"))
    rep.STATE["peaks"] = p
    _print_uncaptured(request.config, f"{rep.peaks_line(p)} | CPU: {cpu.get('vendor')} {cpu.get('model')}")
    return p


def _has_qgemm_rows() -> bool:
    return bool(rep.ROWS)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    if _has_qgemm_rows():
        try:
            import pyruntime
            cpu = rep.STATE["cpu"] or pyruntime.cpu_info()
            md = rep.finalize(rep.STATE["peaks"], cpu, list(cpu.get("available", [])), cpu.get("isa", "?"))
            rep.STATE["markdown"] = md
            path = Path(session.config.getoption("--qgemm-report"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(md)
            rep.STATE["md_path"] = str(path)
        except Exception as e:  # the report must never hide the benchmark results
            rep.STATE["markdown"] = f"qgemm report failed: {type(e).__name__}: {e}"
    yield


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    md = rep.STATE.get("markdown")
    if not md:
        return
    terminalreporter.write_sep("=", "qgemm report")
    for line in md.splitlines():
        terminalreporter.write_line(line)
    if rep.STATE.get("md_path"):
        terminalreporter.write_line(f"(written to {os.path.relpath(rep.STATE['md_path'])})")
