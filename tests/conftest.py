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


@pytest.fixture
def emitted(monkeypatch):
    """(op code, ints) of every native step lowered while the test runs: lets a test check
    which kernel a model really took (summary() names fused nodes, not kernels)."""
    from pyruntime.onnx_import import lower
    steps = []
    real = lower.Lowering.emit

    def spy(self, op, inputs, outputs, ints=(), *a, **k):
        steps.append((lower.OP[op], [int(i) for i in ints]))
        return real(self, op, inputs, outputs, ints, *a, **k)

    monkeypatch.setattr(lower.Lowering, "emit", spy)
    return steps
