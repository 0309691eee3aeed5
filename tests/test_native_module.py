"""The native module as a shared object: what it exports to the rest of the process."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from pyruntime import _native


def test_native_module_exports_no_gnu_unique_symbols():
    """The dynamic loader merges STB_GNU_UNIQUE symbols across every library of the process,
    even those loaded with RTLD_LOCAL. Built by a toolchain that links libstdc++ statically
    (a gcc 13 under /opt/gcc on a second test machine), the module exported ~110 of them, and
    `import pyruntime` died with SIGSEGV in ml_dtypes, which onnx loads after it. Statics
    of header templates and inline functions are UNIQUE too (std::make_shared's tag, a
    thread-local buffer) unless compiled with -fno-gnu-unique."""
    if not sys.platform.startswith("linux"):
        pytest.skip("symbol bindings are an ELF matter: Linux only")
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed, so the module's symbols cannot be listed")
    out = subprocess.run([readelf, "--dyn-syms", "--wide", _native.__file__], capture_output=True, text=True,
                         check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    defined = [r for r in rows if len(r) >= 8 and r[0].endswith(":") and r[6] != "UND"]
    assert any(r[7] == "PyInit__native" for r in defined), "the module's init function is not exported"
    unique = [r[7] for r in defined if r[4] == "UNIQUE"]
    assert unique == [], f"{len(unique)} STB_GNU_UNIQUE symbols exported, e.g. {unique[:5]}"
