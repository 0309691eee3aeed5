"""pyruntime: a native int8 CPU inference runtime for small student networks.

`import pyruntime` needs numpy (and onnx for models) only; torch stays behind
pyruntime.train.
"""
from __future__ import annotations

from .errors import InputError, ModelError, PyRuntimeError, UnsupportedError

try:
    from . import _native
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "pyruntime's native module is missing or does not load; build it with "
        "`pip install -e .` from the source tree"
    ) from exc

# PYRUNTIME_ISA is read once, here: a path this CPU lacks fails now, not at the first call.
_native.process_isa()

from . import ops  # noqa: E402
from .model import Model, load  # noqa: E402

__version__ = "0.1.0"
__all__ = ["load", "Model", "cpu_info", "set_spin", "ops", "PyRuntimeError", "ModelError", "UnsupportedError", "InputError"]


def cpu_info() -> dict:
    """{'isa': selected path, 'available': usable paths lowest first, 'vendor', 'model',
    'cores' (CPUs this process may use), 'flags' (usable features)}."""
    return _native.cpu_info()


def set_spin(spin: bool | int) -> None:
    """Idle pool workers spin briefly before sleeping; False turns that off, True restores
    the default (PYRUNTIME_SPIN, else 200 us), an int sets the spin in microseconds."""
    if isinstance(spin, bool):
        _native.set_spin_microseconds(_native.default_spin_microseconds() if spin else 0)
    elif isinstance(spin, int) and spin >= 0:
        _native.set_spin_microseconds(spin)
    else:
        raise InputError(f"spin must be a bool or microseconds >= 0, got {spin!r}")
