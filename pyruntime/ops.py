"""Kernel-level API: ONNX MatMulInteger / QLinearMatMul semantics and the raw int8 GEMM.

Arithmetic follows DESIGN.md bit for bit on every ISA path and thread count;
pyruntime.reference is the normative statement of it.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from . import _native
from .errors import InputError, UnsupportedError

__all__ = ["PackedWeights", "pack_weights", "qgemm", "matmul_integer", "qlinear_matmul"]

_INT8_TYPES = (np.dtype(np.uint8), np.dtype(np.int8))
_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}
_OUT_KIND = {np.dtype(np.int32): 0, np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3}
_OUT_DTYPES = list(_OUT_KIND)
_OUT_KIND.update({t.type: k for t, k in list(_OUT_KIND.items())})  # np.int32 as well as np.dtype
_MAX_THREADS = _native.max_threads()  # the CPUs this process may use, fixed at import
_isa_cache: dict = {}


def _is_int(v) -> bool:
    # Concrete types only: isinstance against numbers.Integral costs a microsecond per call.
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _isa_index(isa) -> int:
    key = "" if isa is None else isa
    idx = _isa_cache.get(key)
    if idx is None:
        if not isinstance(key, str):
            raise InputError(f"isa must be a path name string or None, got {type(isa).__name__}")
        idx = _native.resolve_isa(key)  # raises UnsupportedError with the available paths
        _isa_cache[key] = idx
    return idx


def _out_kind_slow(out_dtype) -> int:
    """Any other dtype-like np.dtype() takes ('uint8', 'u1', ...)."""
    try:
        return _OUT_KIND[np.dtype(out_dtype)]
    except (TypeError, KeyError):
        raise InputError(f"out_dtype must be int32, float32, uint8 or int8, got {out_dtype!r}") from None


def _threads(threads) -> int:
    if threads is None:
        return _MAX_THREADS
    if not _is_int(threads) or threads < 1:
        raise InputError(f"threads must be a positive int or None, got {threads!r}")
    return int(threads)


def _int8_matrix(x, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise InputError(f"{name} must be a numpy array of uint8 or int8, got {type(x).__name__}")
    if x.dtype not in _INT8_TYPES:
        raise InputError(f"{name} must have dtype uint8 or int8, got {x.dtype}")
    if x.ndim != 2:
        raise InputError(f"{name} must be 2-D (rows x columns), got shape {x.shape}")
    if x.strides[1] != 1 or x.strides[0] < 0:
        x = np.ascontiguousarray(x)
    return x


def _zero_point(zp, dtype: np.dtype, name: str, allowed_len: int | None) -> np.ndarray:
    """A zero point of the operand's dtype, as int32 values: scalar, or 1-D per channel."""
    lo, hi = _RANGE[dtype]
    if zp is None:
        return np.zeros(1, dtype=np.int32)
    if isinstance(zp, (bool, np.bool_)):
        raise InputError(f"{name} must be an integer of {dtype}, got a bool")
    if isinstance(zp, int):
        if not lo <= zp <= hi:
            raise InputError(f"{name}={zp} lies outside {dtype} [{lo}, {hi}]")
        return np.array([zp], dtype=np.int32)
    arr = np.asarray(zp)
    if arr.dtype != dtype:
        raise InputError(f"{name} must have the operand's dtype {dtype}, got {arr.dtype}")
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size not in (1, allowed_len or 1)):
        expected = "a scalar" + (f" or a 1-D array of {allowed_len}" if allowed_len else "")
        raise InputError(f"{name} must be {expected}, got shape {arr.shape}")
    return arr.reshape(-1).astype(np.int32)


def _positive_floats(x, name: str, allowed_len: int | None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise InputError(f"{name} must be a float scale, got dtype {arr.dtype}")
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size not in (1, allowed_len or 1)):
        expected = "a scalar" + (f" or a 1-D array of {allowed_len}" if allowed_len else "")
        raise InputError(f"{name} must be {expected}, got shape {arr.shape}")
    arr = arr.reshape(-1).astype(np.float64)
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise InputError(f"{name} must be finite and > 0, got {arr.tolist()[:8]}")
    return arr


def _as_float32_multiplier(m: np.ndarray, name: str) -> np.ndarray:
    """Rounds once to float32, refusing values that become inf or 0 there."""
    with np.errstate(over="ignore", under="ignore"):
        m32 = m.astype(np.float32)
    if not np.all(np.isfinite(m32)) or not np.all(m32 > 0):
        raise InputError(f"{name} must stay finite and > 0 once rounded to float32, got {m.tolist()[:8]}")
    return m32


_F32 = struct.Struct("f")


def _multiplier(x, n: int) -> np.ndarray:
    """qgemm's multiplier as float32 (1 or n values). A plain positive Python float takes a
    path without numpy reductions: they cost more than a small GEMM."""
    if type(x) is float and math.isfinite(x) and x > 0:
        try:
            v32 = _F32.unpack(_F32.pack(x))[0]
        except OverflowError:  # beyond float32: the general path names the problem
            v32 = math.inf
        if math.isfinite(v32) and v32 > 0:
            return np.full(1, v32, np.float32)
    return _as_float32_multiplier(_positive_floats(x, "multiplier", n), "multiplier")


class PackedWeights:
    """B (K x N, uint8 or int8) prepared once; packed per ISA on first use and cached."""

    __slots__ = ("native", "dtype", "zero_point", "shape")

    def __init__(self, native, dtype: np.dtype, zero_point: np.ndarray):
        self.native = native
        self.dtype = dtype
        self.zero_point = zero_point
        self.shape = (native.K, native.N)  # read on every qgemm call: keep it a plain tuple

    def layout(self, isa: str | None = None) -> dict:
        """The packed layout on one path: {'variant', 'nr', 'k_padded', 'bytes'}."""
        return self.native.layout(_isa_index(isa))

    def __repr__(self) -> str:
        return f"PackedWeights(shape={self.shape}, dtype={self.dtype})"


def pack_weights(b, b_zero_point=None) -> PackedWeights:
    """Prepares weights for qgemm. b_zero_point: scalar or one per column, of b's dtype."""
    b = _int8_matrix(b, "b")
    zp = _zero_point(b_zero_point, b.dtype, "b_zero_point", b.shape[1])
    return PackedWeights(_native.PackedWeights(b, zp), b.dtype, zp)


def qgemm(a, packed: PackedWeights, *, a_zero_point=0, bias=None, multiplier=None, out_zero_point=0,
          lo=None, hi=None, out_dtype=np.int32, threads=None, isa=None) -> np.ndarray:
    """C = epilogue((A - a_zp) x (B - b_zp) + bias), the int8 GEMM with its fused epilogue.

    out_dtype int32: the raw accumulator plus bias. float32: f32(acc) * multiplier.
    uint8/int8: requantized with multiplier and out_zero_point, clamped to [lo, hi]
    (ReLU / ReLU6 / Clip expressed in the output's quantized domain).
    """
    if not isinstance(packed, PackedWeights):
        raise InputError(f"packed must come from pyruntime.ops.pack_weights, got {type(packed).__name__}")
    a = _int8_matrix(a, "a")
    K, N = packed.shape
    if a.shape[1] != K:
        raise InputError(f"a has {a.shape[1]} columns but the packed weights expect K={K} (a: {a.shape})")
    a_lo, a_hi = _RANGE[a.dtype]
    if not _is_int(a_zero_point) or not a_lo <= a_zero_point <= a_hi:
        raise InputError(f"a_zero_point must be an int in {a.dtype} [{a_lo}, {a_hi}], got {a_zero_point!r}")
    kind = _OUT_KIND.get(out_dtype) if isinstance(out_dtype, (type, np.dtype)) else None
    if kind is None:
        kind = _out_kind_slow(out_dtype)
    out = _OUT_DTYPES[kind]
    if bias is not None:
        if not isinstance(bias, np.ndarray) or bias.dtype != np.int32 or bias.shape != (N,):
            got = f"{bias.dtype} {bias.shape}" if isinstance(bias, np.ndarray) else type(bias).__name__
            raise InputError(f"bias must be an int32 array of shape ({N},), got {got}")
        bias = np.ascontiguousarray(bias)
    mult = None
    if kind != 0:
        if multiplier is None:
            raise InputError(f"out_dtype {out} needs a multiplier (scale of the accumulator)")
        mult = _multiplier(multiplier, N)
    elif multiplier is not None:
        raise InputError("out_dtype int32 returns the raw accumulator; drop the multiplier or pick another out_dtype")
    q_lo = q_hi = 0
    if kind >= 2:
        d_lo, d_hi = _RANGE[out]
        q_lo = d_lo if lo is None else lo
        q_hi = d_hi if hi is None else hi
        for nm, v in (("out_zero_point", out_zero_point), ("lo", q_lo), ("hi", q_hi)):
            if not _is_int(v) or not d_lo <= v <= d_hi:
                raise InputError(f"{nm} must be an int in {out} [{d_lo}, {d_hi}], got {v!r}")
        if q_lo > q_hi:
            raise InputError(f"lo={q_lo} must not exceed hi={q_hi}")
    elif lo is not None or hi is not None or out_zero_point != 0:
        raise InputError(f"lo, hi and out_zero_point apply to uint8/int8 outputs, not {out}")
    return _native.qgemm(packed.native, a, int(a_zero_point), bias, mult, kind, int(out_zero_point),
                         int(q_lo), int(q_hi), _threads(threads), _isa_index(isa))


def _scalar_zero_point(zp, dtype: np.dtype, name: str) -> int:
    z = _zero_point(zp, dtype, name, None)
    return int(z[0])


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None, *, threads=None, isa=None) -> np.ndarray:
    """ONNX MatMulInteger for 2-D inputs: int32 (A - a_zp) @ (B - b_zp); b_zp per column allowed."""
    a = _int8_matrix(a, "a")
    b = _int8_matrix(b, "b")
    if a.shape[1] != b.shape[0]:
        raise InputError(f"a is {a.shape} and b is {b.shape}: a's columns must equal b's rows")
    if a_zero_point is not None and np.ndim(a_zero_point) == 1 and np.size(a_zero_point) > 1:
        raise UnsupportedError("MatMulInteger with a per-row a_zero_point is not supported; "
                               "quantize A per tensor (one zero point)")
    a_zp = _scalar_zero_point(a_zero_point, a.dtype, "a_zero_point")
    return qgemm(a, pack_weights(b, b_zero_point), a_zero_point=a_zp, threads=threads, isa=isa)


def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point, *,
                   threads=None, isa=None) -> np.ndarray:
    """ONNX QLinearMatMul for 2-D inputs with DESIGN.md's rounding; b_scale/b_zp per column allowed."""
    a = _int8_matrix(a, "a")
    b = _int8_matrix(b, "b")
    if a.shape[1] != b.shape[0]:
        raise InputError(f"a is {a.shape} and b is {b.shape}: a's columns must equal b's rows")
    if np.ndim(a_scale) == 1 and np.size(a_scale) > 1:
        raise UnsupportedError("QLinearMatMul with a per-row a_scale is not supported; use one scale for A")
    s_a = _positive_floats(a_scale, "a_scale", None)[0]
    s_b = _positive_floats(b_scale, "b_scale", b.shape[1])
    s_y = _positive_floats(y_scale, "y_scale", None)[0]
    a_zp = _scalar_zero_point(a_zero_point, a.dtype, "a_zero_point")
    y_zp_arr = np.asarray(y_zero_point)
    if y_zp_arr.dtype not in _INT8_TYPES or y_zp_arr.size != 1:
        raise InputError(f"y_zero_point must be one uint8 or int8 value, got {y_zp_arr.dtype} shape {y_zp_arr.shape}")
    mult = _as_float32_multiplier(s_a * s_b / s_y, "a_scale * b_scale / y_scale")
    return qgemm(a, pack_weights(b, b_zero_point), a_zero_point=a_zp, multiplier=mult,
                 out_zero_point=int(y_zp_arr.reshape(-1)[0]), out_dtype=y_zp_arr.dtype, threads=threads, isa=isa)
