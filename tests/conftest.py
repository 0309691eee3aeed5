"""Test configuration for pyruntime's int8 GEMM core.

Shared helpers live in tests/pyrt_testlib.py (ISA paths with skip reasons, the pairwise
covering array of shapes, operand and epilogue generation, bit-exact comparison).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pyruntime


def pytest_report_header(config):
    info = pyruntime.cpu_info()
    return [f"pyruntime: cpu={info['vendor']} {info['model']!r} cores={info['cores']} "
            f"available={info['available']} selected={info['isa']} "
            f"PYRUNTIME_ISA={os.environ.get('PYRUNTIME_ISA', '')!r}"]


@pytest.fixture
def run_python():
    """Runs `python -c code` in a fresh interpreter with a controlled environment.

    env: variables to set (None removes one). Returns the CompletedProcess.
    """

    def run(code: str, env: dict | None = None, timeout: float = 60.0, args=None):
        e = dict(os.environ)
        e.pop("PYRUNTIME_ISA", None)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        cmd = [sys.executable] + (list(args) if args else ["-c", code])
        return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout)

    return run
