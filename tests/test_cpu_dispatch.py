"""CPU detection, the ISA dispatch and its PYRUNTIME_ISA cap, the CLI, import hygiene."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import pyruntime
from pyruntime import ops

from pyrt_testlib import REAL_PATHS, path_skip_reason

EXPECTED_KEYS = {"isa", "available", "vendor", "model", "cores", "flags"}


def _usable_cpus() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max" and float(period) > 0:
            n = min(n, max(1, math.ceil(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return n


def test_cpu_info_keys_and_types():
    info = pyruntime.cpu_info()
    assert EXPECTED_KEYS <= set(info), f"missing keys: {EXPECTED_KEYS - set(info)}"
    assert isinstance(info["isa"], str)
    assert isinstance(info["vendor"], str) and info["vendor"]
    assert isinstance(info["model"], str)
    assert isinstance(info["cores"], int) and not isinstance(info["cores"], bool) and info["cores"] >= 1
    assert isinstance(info["flags"], list) and all(isinstance(f, str) for f in info["flags"])
    av = info["available"]
    assert isinstance(av, list) and all(isinstance(p, str) for p in av)
    assert av[0] == "scalar"
    assert set(av) <= set(REAL_PATHS), av
    assert av == sorted(av, key=REAL_PATHS.index), f"available must be lowest first: {av}"
    assert "avx512vnni_emulated" not in av  # never auto-selected, never listed as hardware
    # The selected path is the best available one unless PYRUNTIME_ISA caps it.
    if not os.environ.get("PYRUNTIME_ISA"):
        assert info["isa"] == av[-1]
    # Paths agree with the usable flags they need.
    flags = set(info["flags"])
    assert ("avx2" in av) == ({"avx2", "fma", "f16c", "bmi2"} <= flags)
    assert ("avx512vnni" in av) == ({"avx512f", "avx512bw", "avx512vl", "avx512vnni"} <= flags)


def test_cpu_info_cores_follow_affinity_and_quota():
    info = pyruntime.cpu_info()
    assert info["cores"] == _usable_cpus()
    assert pyruntime._native.max_threads() == info["cores"]


def test_cpu_info_returns_a_fresh_dict():
    info = pyruntime.cpu_info()
    info["isa"] = "tampered"
    info["available"].append("x")
    assert pyruntime.cpu_info()["isa"] != "tampered"
    assert "x" not in pyruntime.cpu_info()["available"]


def test_cli_info_prints_the_selected_path(run_python):
    proc = run_python("", args=["-m", "pyruntime", "info"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    info = pyruntime.cpu_info()
    lines = {ln.split(None, 1)[0]: ln.split(None, 1)[1] if len(ln.split(None, 1)) > 1 else "" for ln in out.splitlines()
             if ln.strip()}
    # run_python drops PYRUNTIME_ISA, so the child selects the best path even under a cap here
    assert lines.get("selected") == info["available"][-1], out
    assert lines.get("available") == ", ".join(info["available"]), out
    assert str(info["cores"]) in lines.get("cores", ""), out
    capped = run_python("", args=["-m", "pyruntime", "info"], env={"PYRUNTIME_ISA": "scalar"})
    assert capped.returncode == 0, capped.stderr
    assert "selected   scalar" in capped.stdout, capped.stdout
    bad = run_python("", args=["-m", "pyruntime", "nonsense"])
    assert bad.returncode != 0


def test_import_does_not_import_torch(run_python):
    proc = run_python("import sys, pyruntime, pyruntime.ops, pyruntime.reference; "
                      "pyruntime.cpu_info(); "
                      "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"import pyruntime pulled in torch: {proc.stdout}"


# ---------------------------------------------------------------------------------------
# PYRUNTIME_ISA: read once at import


def test_env_bad_name_fails_at_import(run_python):
    proc = run_python("import pyruntime", env={"PYRUNTIME_ISA": "avx9000"})
    assert proc.returncode != 0
    err = proc.stderr
    assert "avx9000" in err, err
    assert "scalar" in err and "avx2" in err and "avx512vnni" in err, f"the error should list the valid names: {err}"
    assert "UnsupportedError" in err or "InputError" in err, err


def test_env_unavailable_path_fails_at_import(run_python):
    available = pyruntime.cpu_info()["available"]
    missing = [p for p in REAL_PATHS if p not in available]
    if not missing:
        pytest.skip(f"every real path is available on this CPU ({available}): none to refuse")
    for path in missing:
        proc = run_python("import pyruntime", env={"PYRUNTIME_ISA": path})
        assert proc.returncode != 0, f"PYRUNTIME_ISA={path} should fail on a CPU lacking it"
        err = proc.stderr
        assert "UnsupportedError" in err and f"PYRUNTIME_ISA={path}" in err, err
        assert ", ".join(available) in err, f"the error should list the available paths: {err}"


CAP_CHECK = r"""
import json, numpy as np, pyruntime
from pyruntime import ops, reference as ref
out = {"isa": pyruntime.cpu_info()["isa"], "errors": {}, "ok": {}}
rng = np.random.default_rng(0)
a = rng.integers(0, 256, (9, 70)).astype(np.uint8)
b = rng.integers(-128, 128, (70, 40)).astype(np.int8)
p = ops.pack_weights(b)
exp = ref.qgemm(a, b, a_zero_point=5)
for isa in (None, "scalar", "avx2", "avx512vnni"):
    try:
        got = ops.qgemm(a, p, a_zero_point=5, isa=isa, threads=2)
        out["ok"][str(isa)] = bool(np.array_equal(got, exp) and got.dtype == np.int32)
    except pyruntime.PyRuntimeError as e:
        out["errors"][str(isa)] = [type(e).__name__, str(e)]
import os
os.environ["PYRUNTIME_ISA"] = "avx2"   # read once: a later change does not move the process
out["after_env_change"] = pyruntime.cpu_info()["isa"]
out["layout_nr_default"] = p.layout()["nr"]
out["layout_nr_scalar"] = p.layout("scalar")["nr"]
print(json.dumps(out))
"""


def _run_cap(run_python, cap):
    import json

    proc = run_python(CAP_CHECK, env={"PYRUNTIME_ISA": cap})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_env_cap_scalar(run_python):
    res = _run_cap(run_python, "scalar")
    assert res["isa"] == "scalar"
    assert res["after_env_change"] == "scalar"
    assert res["ok"] == {"None": True, "scalar": True}, res
    kind, msg = res["errors"]["avx2"]
    assert kind == "UnsupportedError", res
    assert "avx2" in msg and "scalar" in msg, msg
    assert res["errors"]["avx512vnni"][0] == "UnsupportedError"
    assert res["layout_nr_default"] == res["layout_nr_scalar"], "isa=None must use the capped path"


@pytest.mark.skipif(path_skip_reason("avx2") is not None, reason=f"avx2 cannot run here: {path_skip_reason('avx2')}")
def test_env_cap_avx2(run_python):
    res = _run_cap(run_python, "avx2")
    assert res["isa"] == "avx2"
    assert res["ok"]["None"] and res["ok"]["scalar"] and res["ok"]["avx2"], res
    assert res["errors"]["avx512vnni"][0] == "UnsupportedError", res


def test_env_empty_means_unset(run_python):
    proc = run_python("import pyruntime; print(pyruntime.cpu_info()['isa'])", env={"PYRUNTIME_ISA": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == pyruntime.cpu_info()["available"][-1]


def test_per_call_isa_selects_the_kernels():
    """isa= changes the packed layout actually used (each path packs its own panels)."""
    rng = np.random.default_rng(1)
    b = rng.integers(-128, 128, (70, 40)).astype(np.int8)
    p = ops.pack_weights(b)
    nr = {}
    for isa in ("scalar", "avx2", "avx512vnni_emulated"):
        if path_skip_reason(isa) is None:
            nr[isa] = p.layout(isa)["nr"]
    assert len(set(nr.values())) == len(nr), f"paths should pack differently: {nr}"
    if path_skip_reason("avx512vnni") is None:  # the real VNNI kernels share the emulated layout
        assert p.layout("avx512vnni") == p.layout("avx512vnni_emulated")
    assert p.layout()["nr"] == p.layout(pyruntime.cpu_info()["isa"])["nr"]
