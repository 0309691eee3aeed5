"""Shared helpers for the int8 GEMM tests: ISA paths with explicit skip reasons, the
pairwise covering array of shapes, operand/config generation and exact comparison.

Everything here is deterministic: seeds are constants or derived from case indices.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest

import pyruntime
from pyruntime import ops
from pyruntime import reference as ref

U8 = np.dtype(np.uint8)
S8 = np.dtype(np.int8)
I32 = np.dtype(np.int32)
F32 = np.dtype(np.float32)
RANGE = {U8: (0, 255), S8: (-128, 127)}

# Native paths, lowest first (the capping order), then the never-auto-selected model.
REAL_PATHS = ("scalar", "avx2", "avx512vnni")
ALL_PATHS = REAL_PATHS + ("avx512vnni_emulated",)

# ---------------------------------------------------------------------------------------
# ISA paths


def _proc_cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def path_skip_reason(name: str) -> str | None:
    """None when `name` can run in this process, else why not (used as the skip reason)."""
    if name == "avx512vnni_emulated":
        return None  # portable code: always runs
    info = pyruntime.cpu_info()
    if name not in info["available"]:
        if name == "avx512vnni":
            if "avx512_vnni" in _proc_cpuinfo_flags():
                why = "CPUID has it but the OS does not save ZMM state"
            else:
                why = "no AVX-512 VNNI in CPUID, or XCR0 ZMM state off (hypervisor)"
            return (f"CPU/OS lacks avx512vnni ({why}); usable paths here: {info['available']}, "
                    f"usable flags: {info['flags']}")
        return f"CPU/OS lacks {name}; usable paths here: {info['available']}"
    cap = info["isa"]
    if cap in REAL_PATHS and REAL_PATHS.index(name) > REAL_PATHS.index(cap):
        return f"path {name} lies above the process cap PYRUNTIME_ISA={cap}"
    return None


def path_params(paths=ALL_PATHS):
    """pytest params for ISA paths; unusable ones skip with an explicit reason."""
    out = []
    for p in paths:
        reason = path_skip_reason(p)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        out.append(pytest.param(p, id=p, marks=marks))
    return out


def usable_paths(paths=ALL_PATHS) -> list[str]:
    return [p for p in paths if path_skip_reason(p) is None]


# ---------------------------------------------------------------------------------------
# Pairwise covering array of (M, N, K)

SIZES = (1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 127, 255, 257, 1000)
BIG = 1000


def pairwise_shapes() -> list[tuple[int, int, int]]:
    """A strength-2 covering array over SIZES for (M, N, K), with BIG in at most one
    dimension per case (so the pair (BIG, BIG) is the one pair left out, by rule).

    The 15 other values form a cyclic Latin square: row i, column j, symbol (13-i-j) mod 15
    covers every value pair of every dimension pair exactly once; the offset is the one
    of the 15 that minimises the total MACs. Each dimension set to BIG is paired with the
    other two dimensions in anti-sorted order (big with small) to keep the cost down.
    """
    small = [v for v in SIZES if v != BIG]
    n = len(small)
    cases = [(small[i], small[j], small[(13 - i - j) % n]) for i in range(n) for j in range(n)]
    for i in range(n):
        cases.append((BIG, small[i], small[n - 1 - i]))
        cases.append((small[n - 1 - i], BIG, small[i]))
        cases.append((small[i], small[n - 1 - i], BIG))
    return cases


def uncovered_pairs(cases) -> list[tuple[int, int, int, int]]:
    """(dim_a, dim_b, value_a, value_b) pairs that no case covers, (BIG, BIG) excepted."""
    missing = []
    for da, db in itertools.combinations(range(3), 2):
        seen = {(c[da], c[db]) for c in cases}
        for va in SIZES:
            for vb in SIZES:
                if (va, vb) not in seen and not (va == BIG and vb == BIG):
                    missing.append((da, db, va, vb))
    return missing


# ---------------------------------------------------------------------------------------
# Operands and configurations


def rand_int8(rng, shape, dtype, lo=None, hi=None) -> np.ndarray:
    dtype = np.dtype(dtype)
    dlo, dhi = RANGE[dtype]
    lo = dlo if lo is None else lo
    hi = dhi if hi is None else hi
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64).astype(dtype)


def small_weights(rng, shape, dtype) -> np.ndarray:
    """Weights whose shifted value B' (s8: B, u8: B - 128) lies within [-64, 64]: the AVX2
    vpmaddubsw pair sum cannot saturate, so the fast quad layout is used."""
    dtype = np.dtype(dtype)
    off = 128 if dtype == U8 else 0
    return rand_int8(rng, shape, dtype, off - 64, off + 64)


@dataclass
class Config:
    """One qgemm call: operands plus the epilogue, and how to get the reference."""

    a: np.ndarray
    b: np.ndarray
    a_zero_point: int = 0
    b_zero_point: object = None  # None, a numpy scalar of b's dtype, or a 1-D array
    bias: np.ndarray | None = None
    multiplier: object = None
    out_zero_point: int = 0
    lo: int | None = None
    hi: int | None = None
    out_dtype: np.dtype = I32
    label: str = ""
    extra: dict = field(default_factory=dict)

    def kwargs(self) -> dict:
        kw = dict(a_zero_point=self.a_zero_point, bias=self.bias, out_dtype=self.out_dtype)
        if self.out_dtype != I32:
            kw["multiplier"] = self.multiplier
        if self.out_dtype in (U8, S8):
            kw.update(out_zero_point=self.out_zero_point, lo=self.lo, hi=self.hi)
        return kw

    def pack(self) -> ops.PackedWeights:
        return ops.pack_weights(self.b, self.b_zero_point)

    def expected(self) -> np.ndarray:
        bzp = 0 if self.b_zero_point is None else np.asarray(self.b_zero_point)
        return ref.qgemm(self.a, self.b, a_zero_point=self.a_zero_point, b_zero_point=bzp, bias=self.bias,
                         multiplier=self.multiplier, out_zero_point=self.out_zero_point, lo=self.lo, hi=self.hi,
                         out_dtype=self.out_dtype)

    def run(self, packed=None, *, isa, threads=1) -> np.ndarray:
        packed = self.pack() if packed is None else packed
        return ops.qgemm(self.a, packed, threads=threads, isa=isa, **self.kwargs())

    def describe(self) -> str:
        M, K = self.a.shape
        N = self.b.shape[1]
        bzp = self.b_zero_point
        bzp_s = "none" if bzp is None else ("col" if np.ndim(bzp) == 1 and np.size(bzp) > 1 else f"{int(np.asarray(bzp).reshape(-1)[0])}")
        mult = self.multiplier
        mult_s = "-" if mult is None else ("col" if np.ndim(mult) == 1 and np.size(mult) > 1 else f"{float(np.asarray(mult).reshape(-1)[0]):.3g}")
        return (f"[{self.label}] M={M} N={N} K={K} A={self.a.dtype} B={self.b.dtype} a_zp={self.a_zero_point} "
                f"b_zp={bzp_s} bias={'yes' if self.bias is not None else 'no'} out={np.dtype(self.out_dtype)} "
                f"m={mult_s} out_zp={self.out_zero_point} lo={self.lo} hi={self.hi}")


def zero_point(rng, dtype, kind: str, n: int):
    """kind: 'none' | 'tensor' | 'column' | an int (a fixed per-tensor value)."""
    dtype = np.dtype(dtype)
    if kind == "none":
        return None
    if kind == "tensor":
        return dtype.type(rand_int8(rng, (), dtype))
    if kind == "column":
        return rand_int8(rng, (n,), dtype)
    return dtype.type(kind)


def _rms_dev(x: np.ndarray, zp) -> float:
    d = x.astype(np.float64) - np.asarray(0 if zp is None else zp, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d))) if d.size else 1.0


def requant_multiplier(rng, cfg: Config, per_column: bool, spread: float = 40.0):
    """Multiplier(s) that map typical accumulators onto about +-spread output steps."""
    K = cfg.a.shape[1]
    N = cfg.b.shape[1]
    scale = np.sqrt(max(K, 1)) * _rms_dev(cfg.a, cfg.a_zero_point) * _rms_dev(cfg.b, cfg.b_zero_point) + 1.0
    base = spread / scale
    if per_column:
        return (base * rng.uniform(0.25, 2.0, size=N)).astype(np.float32)
    return float(np.float32(base * rng.uniform(0.5, 1.5)))


def clamp_bounds(kind: str, out_dtype, zp: int, y_scale: float = 0.05):
    """(lo, hi) in the output's quantized domain for a fused activation, with the float
    bounds quantized by the output scale and zero point (round half to even, saturate)."""
    out_dtype = np.dtype(out_dtype)

    def q(x):
        return int(ref.quantize_linear(np.float32(x), y_scale, zp, out_dtype))

    if kind == "none":
        return None, None
    if kind == "relu":
        return zp, None
    if kind == "relu6":
        return zp, q(6.0)
    if kind == "clip":
        return q(-1.0), q(2.0)
    raise ValueError(kind)


OUT_VARIANTS = (
    # (out_dtype, per-column multiplier, clamp)
    (I32, False, "none"),
    (F32, False, "none"),
    (F32, True, "none"),
    (U8, False, "none"),
    (U8, True, "none"),
    (S8, False, "none"),
    (S8, True, "none"),
    (U8, False, "relu"),
    (U8, True, "relu6"),
    (S8, False, "clip"),
    (S8, True, "relu"),
    (U8, False, "clip"),
    (S8, True, "relu6"),
)


def make_config(rng, M, N, K, *, a_dtype, b_dtype, out_dtype, per_column_mult=False, clamp="none",
                b_zp_kind="tensor", a_zp=None, with_bias=True, small_w=False, label="") -> Config:
    a_dtype, b_dtype, out_dtype = np.dtype(a_dtype), np.dtype(b_dtype), np.dtype(out_dtype)
    a = rand_int8(rng, (M, K), a_dtype)
    b = small_weights(rng, (K, N), b_dtype) if small_w else rand_int8(rng, (K, N), b_dtype)
    cfg = Config(a=a, b=b, out_dtype=out_dtype, label=label)
    cfg.extra["small_w"] = small_w
    cfg.a_zero_point = int(rand_int8(rng, (), a_dtype)) if a_zp is None else int(a_zp)
    cfg.b_zero_point = zero_point(rng, b_dtype, b_zp_kind, N)
    if with_bias:
        cfg.bias = rng.integers(-(1 << 20), 1 << 20, size=N, dtype=np.int64).astype(np.int32)
    if out_dtype == F32:
        cfg.multiplier = (rng.uniform(1e-4, 1e-1, size=N).astype(np.float32) if per_column_mult
                          else float(np.float32(rng.uniform(1e-4, 1e-1))))
    elif out_dtype in (U8, S8):
        cfg.multiplier = requant_multiplier(rng, cfg, per_column_mult)
        cfg.out_zero_point = int(rand_int8(rng, (), out_dtype))
        cfg.lo, cfg.hi = clamp_bounds(clamp, out_dtype, cfg.out_zero_point)
    return cfg


# ---------------------------------------------------------------------------------------
# Comparison


def same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    """Same dtype, shape and bytes (float32 compared bit for bit: -0.0 != 0.0)."""
    x = np.asarray(x)
    y = np.asarray(y)
    return x.dtype == y.dtype and x.shape == y.shape and np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes()


def mismatch_report(got: np.ndarray, exp: np.ndarray, limit: int = 5) -> str:
    if got.dtype != exp.dtype or got.shape != exp.shape:
        return f"got {got.dtype}{got.shape}, expected {exp.dtype}{exp.shape}"
    if got.dtype == F32:
        bad = np.argwhere(got.view(np.uint32) != exp.view(np.uint32))
    else:
        bad = np.argwhere(got != exp)
    items = ", ".join(f"{tuple(int(i) for i in idx)}: got {got[tuple(idx)]!r} expected {exp[tuple(idx)]!r}"
                      for idx in bad[:limit])
    return f"{len(bad)} of {got.size} elements differ; first: {items}"


def assert_same(got: np.ndarray, exp: np.ndarray, what: str = "") -> None:
    assert same_bits(got, exp), f"{what}: {mismatch_report(np.asarray(got), np.asarray(exp))}"
