"""`import pyruntime` must not import torch (only pyruntime.train may)."""
import subprocess
import sys


def test_import_pyruntime_does_not_import_torch():
    code = ("import sys, pyruntime, pyruntime.ops; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "assert not bad, bad; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_train_data_module_does_not_import_torch():
    code = ("import sys, pyruntime.train.data; "
            "assert 'torch' not in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
