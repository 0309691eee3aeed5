"""Every ISA path against the normative int64 NumPy reference, bit for bit.

Paths: scalar, avx2, avx512vnni (skipped with a reason where the CPU/OS lacks it) and
avx512vnni_emulated (the VNNI kernels' own source over a portable model of the
intrinsics: always runs, tested like a real path).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import pyruntime
from pyruntime import ops
from pyruntime import reference as ref

from pyrt_testlib import (ALL_PATHS, BIG, F32, I32, OUT_VARIANTS, S8, SIZES, U8, Config, assert_same,
                          make_config, mismatch_report, pairwise_shapes, path_params, path_skip_reason,
                          rand_int8, same_bits, small_weights, uncovered_pairs, usable_paths)

INT32_MAX = 2**31 - 1

# ---------------------------------------------------------------------------------------
# Shapes: a pairwise covering array of (M, N, K)

PAIRWISE = pairwise_shapes()


def test_covering_array_is_pairwise_and_limits_big_dimension():
    assert uncovered_pairs(PAIRWISE) == []
    for case in PAIRWISE:
        assert sum(v == BIG for v in case) <= 1, case
        assert all(v in SIZES for v in case), case
    for dim in range(3):
        assert {c[dim] for c in PAIRWISE} == set(SIZES)
    # Far below the full product (16^3 = 4096): pairwise, not exhaustive.
    assert len(PAIRWISE) <= 300


def _pairwise_config(i: int, shape) -> Config:
    M, N, K = shape
    rng = np.random.default_rng(10_000 + i)
    out_dtype, per_col, clamp = OUT_VARIANTS[i % len(OUT_VARIANTS)]
    return make_config(
        rng, M, N, K,
        a_dtype=(U8, S8)[i % 2],
        b_dtype=(S8, U8)[(i // 2) % 2],
        out_dtype=out_dtype, per_column_mult=per_col, clamp=clamp,
        b_zp_kind=("none", "tensor", "column")[(i // 4) % 3],
        with_bias=i % 5 != 4,
        small_w=i % 7 in (1, 4, 6),
        label=f"pairwise#{i}")


_pairwise_cache: dict = {}


def _pairwise_case(i: int):
    if i not in _pairwise_cache:
        cfg = _pairwise_config(i, PAIRWISE[i])
        _pairwise_cache[i] = (cfg, cfg.pack(), cfg.expected())
    return _pairwise_cache[i]


@pytest.mark.parametrize("isa", path_params())
def test_pairwise_shapes_bit_exact(isa):
    failures = []
    for i in range(len(PAIRWISE)):
        cfg, packed, exp = _pairwise_case(i)
        got = cfg.run(packed, isa=isa, threads=1)
        if not same_bits(got, exp):
            failures.append(f"{cfg.describe()}: {mismatch_report(got, exp, 3)}")
        if isa == "avx2" and cfg.extra["small_w"]:
            variant = packed.layout("avx2")["variant"]
            if variant != 0:
                failures.append(f"{cfg.describe()}: |w'|<=64 should use the quad layout, got variant {variant}")
    assert not failures, f"{len(failures)} failing cases on {isa}:\n" + "\n".join(failures[:20])


# ---------------------------------------------------------------------------------------
# Every operand type and output kind, on the GEMV (M=1) and the tiled kernels

KIND_SHAPES = ((1, 37, 70), (13, 45, 33))
_kinds_cache: dict = {}


def _kind_configs():
    if not _kinds_cache:
        seed = 0
        for shape, a_dt, b_dt, variant, zp_kind, bias, small_w in itertools.product(
                KIND_SHAPES, (U8, S8), (S8, U8), OUT_VARIANTS, ("none", "tensor", "column"), (False, True),
                (False, True)):
            seed += 1
            out_dtype, per_col, clamp = variant
            rng = np.random.default_rng(seed)
            cfg = make_config(rng, *shape, a_dtype=a_dt, b_dtype=b_dt, out_dtype=out_dtype, per_column_mult=per_col,
                              clamp=clamp, b_zp_kind=zp_kind, with_bias=bias, small_w=small_w,
                              label=f"kinds#{seed} clamp={clamp} small_w={small_w}")
            _kinds_cache[seed] = (cfg, cfg.pack(), cfg.expected())
    return list(_kinds_cache.values())


@pytest.mark.parametrize("isa", path_params())
def test_all_operand_types_and_output_kinds(isa):
    failures = []
    configs = _kind_configs()
    for cfg, packed, exp in configs:
        got = cfg.run(packed, isa=isa, threads=1)
        if not same_bits(got, exp):
            failures.append(f"{cfg.describe()}: {mismatch_report(got, exp, 3)}")
    # The requantized outputs must not be degenerate (all clamped) or the test proves little.
    requant = [exp for cfg, _, exp in configs if cfg.out_dtype in (U8, S8) and cfg.lo is None and cfg.hi is None]
    spread = np.mean([len(np.unique(e)) for e in requant])
    assert spread > 20, f"requantized outputs are nearly constant (mean {spread} distinct values)"
    assert not failures, f"{len(failures)} of {len(configs)} configs fail on {isa}:\n" + "\n".join(failures[:20])


# ---------------------------------------------------------------------------------------
# Adversarial values


def _pattern(kind: str, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    lo, hi = (0, 255) if dtype == U8 else (-128, 127)
    rows, cols = shape
    if kind == "max":
        return np.full(shape, hi, dtype)
    if kind == "min":
        return np.full(shape, lo, dtype)
    if kind == "min+1":  # -127 for s8 (1 for u8)
        return np.full(shape, lo + 1, dtype)
    if kind == "alt":  # alternating extremes along both axes
        grid = (np.arange(rows)[:, None] + np.arange(cols)[None, :]) % 2
        return np.where(grid == 0, hi, lo).astype(dtype)
    if kind == "alt_pairs":  # hi, hi, lo, lo, ... along rows, so vpmaddubsw pairs saturate
        grid = (np.arange(rows)[:, None] // 2 + np.arange(cols)[None, :]) % 2
        return np.where(grid == 0, hi, lo).astype(dtype)
    raise ValueError(kind)


def _extreme_configs():
    cfgs = []
    for (M, N, K) in ((7, 33, 257), (1, 33, 257)):
        for a_dt, b_dt in ((U8, S8), (U8, U8), (S8, S8), (S8, U8)):
            a_lo, a_hi = (0, 255) if a_dt == U8 else (-128, 127)
            b_lo, b_hi = (0, 255) if b_dt == U8 else (-128, 127)
            for a_kind, b_kind, a_zp, b_zp in itertools.product(
                    ("max", "min", "alt"), ("max", "min", "min+1", "alt", "alt_pairs"), (a_lo, a_hi, 0),
                    (b_lo, b_hi, 0)):
                if a_zp == 0 and a_dt == U8 or b_zp == 0 and b_dt == U8:
                    continue  # 0 is already an end for u8
                cfg = Config(a=_pattern(a_kind, (M, K), a_dt), b=_pattern(b_kind, (K, N), b_dt),
                             a_zero_point=a_zp, b_zero_point=b_dt.type(b_zp),
                             label=f"A={a_kind} B={b_kind}")
                cfgs.append(cfg)
                # The same accumulators, requantized hard against the clamps.
                q = Config(a=cfg.a, b=cfg.b, a_zero_point=a_zp, b_zero_point=cfg.b_zero_point,
                           bias=np.arange(N, dtype=np.int32) * 1001 - 16000, multiplier=1.0 / 4096,
                           out_zero_point=a_zp if a_dt == U8 else 0, out_dtype=a_dt, label=cfg.label + " requant")
                cfgs.append(q)
                f = Config(a=cfg.a, b=cfg.b, a_zero_point=a_zp, b_zero_point=cfg.b_zero_point,
                           multiplier=0.1, out_dtype=F32, label=cfg.label + " f32")
                cfgs.append(f)
    return cfgs


_extreme_cache: list = []


@pytest.mark.parametrize("isa", path_params())
def test_extreme_values_and_zero_points(isa):
    if not _extreme_cache:
        _extreme_cache.extend((c, c.pack(), c.expected()) for c in _extreme_configs())
    failures = []
    for cfg, packed, exp in _extreme_cache:
        got = cfg.run(packed, isa=isa, threads=1)
        if not same_bits(got, exp):
            failures.append(f"{cfg.describe()}: {mismatch_report(got, exp, 3)}")
    assert not failures, f"{len(failures)} of {len(_extreme_cache)} fail on {isa}:\n" + "\n".join(failures[:20])


def _zero_word_rows(rng, M: int, K: int, a_dtype) -> dict[str, np.ndarray]:
    """A operands of M rows whose k steps are often zero words in every row (skipped by the
    GEMV, and by the GEMM tiles): the zero of an s8 row is -128 (flipped to u8 0 on the
    way in)."""
    zero = 0 if a_dtype == U8 else -128
    dense = rand_int8(rng, (M, K), a_dtype)
    dense[dense == zero] = zero + 1  # no accidental zero words
    rows = {"dense": dense}
    border = dense.copy()  # an image's background: zero runs at both ends and in between
    border[:, :K // 3] = zero
    border[:, K // 2:K // 2 + 9] = zero
    border[:, -(K // 5):] = zero
    rows["border"] = border
    alternate = dense.copy()
    alternate[:, (np.arange(K) // 4) % 2 == 0] = zero  # every other quad
    rows["alternate quads"] = alternate
    rows["all zero"] = np.full((M, K), zero, a_dtype)
    last = np.full((M, K), zero, a_dtype)  # only the ragged last step is nonzero
    last[:, -1] = zero + 3
    rows["last only"] = last
    scattered = dense.copy()  # single zero bytes: no quad is all zero
    scattered[:, ::3] = zero
    rows["scattered bytes"] = scattered
    if M > 1:  # one row keeps a few steps that all the others have zero
        lone = border.copy()
        lone[M // 2, [0, K // 3 - 1, K // 2 + 4, K - 1]] = zero + 7
        rows["one row breaks the zeros"] = lone
        first_only = np.full((M, K), zero, a_dtype)  # the first step only, in the last row
        first_only[-1, 0] = zero + 1
        rows["first step, last row"] = first_only
        # Rows that disagree on where their zeros are, as a batch of images does: the GEMM
        # regroups them so that each tile's rows share their zero steps.
        halves = dense.copy()
        halves[0::2, :K // 2] = zero
        halves[1::2, K // 2:] = zero
        rows["alternating halves"] = halves
        ragged = dense.copy()
        for r, (lead, tail) in enumerate(rng.integers(0, K // 2, (M, 2))):
            ragged[r, :lead] = zero
            ragged[r, K - tail:] = zero
        rows["ragged margins"] = ragged
    return rows


def _zero_step_failures(rng, isa, shapes):
    failures, cases = [], 0
    for M, K, N in shapes:
        for a_dt in (U8, S8):
            for small in (False, True):  # AVX2: the pair layout, then the quad layout
                b = small_weights(rng, (K, N), S8) if small else rand_int8(rng, (K, N), S8)
                for name, a in _zero_word_rows(rng, M, K, a_dt).items():
                    cfg = Config(a=a, b=b, a_zero_point=int(rand_int8(rng, (), a_dt)),
                                 b_zero_point=np.int8(3), bias=np.arange(N, dtype=np.int32) - 7,
                                 multiplier=np.float32(1e-3), out_zero_point=5, out_dtype=U8,
                                 label=f"M={M} K={K} N={N} {a_dt} {name}{' small w' if small else ''}")
                    packed, exp = cfg.pack(), cfg.expected()
                    for threads in (1, 2):
                        cases += 1
                        got = cfg.run(packed, isa=isa, threads=threads)
                        if not same_bits(got, exp):
                            failures.append(f"{cfg.describe()} threads={threads}: {mismatch_report(got, exp, 3)}")
    return failures, cases


@pytest.mark.parametrize("isa", path_params())
def test_gemv_zero_words_are_skipped_exactly(isa):
    """An M = 1 GEMV reads B only for the k steps whose A word is nonzero; rows full of
    zero runs must give the reference's bits on every path, layout and thread count."""
    failures, cases = _zero_step_failures(np.random.default_rng(4321), isa,
                                          ((1, 784, 512), (1, 257, 33), (1, 9, 10), (1, 1030, 160)))
    assert not failures, f"{len(failures)} of {cases} fail on {isa}:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("isa", path_params())
def test_gemm_zero_steps_are_skipped_exactly(isa):
    """A packed GEMM tile drops the k steps that are zero in all its rows, and the rows are
    regrouped so that tiles share more of them; the kept steps must still meet their own B
    rows and each row land in its own C row (and row sum, b_zero_point being 3). Full and
    ragged tiles, ragged K, columns both past and within the in-place limit, against the
    reference's bits."""
    failures, cases = _zero_step_failures(np.random.default_rng(8765), isa,
                                          ((12, 784, 300), (13, 257, 512), (30, 9, 290), (5, 130, 40),
                                           (64, 784, 288), (200, 130, 300)))
    assert not failures, f"{len(failures)} of {cases} fail on {isa}:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("isa", path_params())
def test_maddubs_saturating_weights_are_exact(isa):
    """A = 255 against pairs of +127 (s8) or 255 (u8, B' = 127): one vpmaddubsw pair sum
    would be 64770 and saturate to 32767. Every path must give the exact sum."""
    for M in (1, 6, 13):
        for K in (2, 3, 64, 255):
            for b_dt, w, bzp in ((S8, 127, 0), (U8, 255, 0), (U8, 255, 128), (S8, -128, 0), (U8, 0, 128),
                                 (S8, 127, -128), (U8, 0, 255)):
                a = np.full((M, K), 255, np.uint8)
                b = np.full((K, 17), w, b_dt)
                packed = ops.pack_weights(b, b_dt.type(bzp))
                got = ops.qgemm(a, packed, isa=isa, threads=1)
                expected = np.full((M, 17), K * 255 * (w - bzp), np.int32)
                assert_same(got, expected, f"{isa} M={M} K={K} B={b_dt} w={w} b_zp={bzp}")


# (name, weight pattern along k for every column, expected AVX2 variant): B' values.
LAYOUT_CASES = (
    ("small", None, 0),
    ("64,64", [64, 64], 0),
    ("-64,-64", [-64, -64], 0),
    ("65,64", [65, 64], 1),
    ("-65,-64", [-65, -64], 1),
    ("-128,0", [-128, 0], 0),
    ("127,0", [127, 0], 0),
    ("127,127", [127, 127], 1),
    ("-128,-128", [-128, -128], 1),
    ("0,127,127,0 (pairs straddle)", [0, 127, 127, 0], 0),
    ("127,-128", [127, -128], 0),
)


def _layout_weights(pattern, K, N, dtype, rng):
    dtype = np.dtype(dtype)
    if pattern is None:
        return small_weights(rng, (K, N), dtype)
    col = np.resize(np.array(pattern, np.int64), K)
    b = np.repeat(col[:, None], N, axis=1)
    if dtype == U8:
        b = b + 128
    return b.astype(dtype)


def _layout_matrix():
    rng = np.random.default_rng(7)
    out = []
    for name, pattern, variant in LAYOUT_CASES:
        for dt in (S8, U8):
            for K in (4, 67):
                out.append((name, dt, K, _layout_weights(pattern, K, 21, dt, rng), variant))
    return out


@pytest.mark.skipif(path_skip_reason("avx2") is not None, reason=str(path_skip_reason("avx2")))
def test_avx2_layout_variant_follows_saturation_proof():
    for name, dt, K, b, variant in _layout_matrix():
        for zp in (None, dt.type(0 if dt == U8 else -128), dt.type(255 if dt == U8 else 127)):
            packed = ops.pack_weights(b, zp)
            got = packed.layout("avx2")["variant"]
            assert got == variant, f"weights {name} ({dt}, K={K}, b_zp={zp}): variant {got}, expected {variant}"
    # One saturating pair anywhere sends the whole matrix to the widened layout.
    rng = np.random.default_rng(8)
    b = small_weights(rng, (64, 40), S8)
    b[10, 33], b[11, 33] = 127, 100
    assert ops.pack_weights(b).layout("avx2")["variant"] == 1


@pytest.mark.parametrize("isa", path_params())
def test_layout_boundary_weights_are_exact(isa):
    """Weights at the edge of the vpmaddubsw proof, against A at both ends and zero points."""
    failures = []
    for name, dt, K, b, _ in _layout_matrix():
        for a_dt, a_val, a_zp in ((U8, 255, 0), (U8, 0, 255), (S8, 127, -128), (S8, -128, 127), (U8, 255, 17)):
            for M in (1, 7):
                a = np.full((M, K), a_val, a_dt)
                a[:, ::3] = a_zp  # a few exact-zero terms mixed in
                for bzp in (None, dt.type(5)):
                    cfg = Config(a=a, b=b, a_zero_point=a_zp, b_zero_point=bzp, label=name)
                    got = cfg.run(isa=isa)
                    exp = cfg.expected()
                    if not same_bits(got, exp):
                        failures.append(f"{cfg.describe()}: {mismatch_report(got, exp, 3)}")
    assert not failures, "\n".join(failures[:20])


# ---------------------------------------------------------------------------------------
# Requantization: round half to even, clamping in float, int32 -> f32 rounding


def _half_even(x: float) -> int:
    return round(x)  # Python's round() on floats rounds half to even


@pytest.mark.parametrize("isa", path_params())
@pytest.mark.parametrize("out_dtype", [U8, S8], ids=["u8", "s8"])
def test_requant_ties_round_half_to_even(isa, out_dtype):
    lo_d, hi_d = (0, 255) if out_dtype == U8 else (-128, 127)
    mults = np.array([0.5, 0.25, 1.5, 0.125, 2.5], np.float32)  # exact in f32: every tie is exact
    # Tiled kernel: acc = a - 128 over 256 rows, K=1, one column per multiplier.
    a = np.arange(256, dtype=np.uint8)[:, None]
    b = np.ones((1, len(mults)), np.int8)
    acc = np.arange(256) - 128
    for zp in (0, 3, -4) if out_dtype == S8 else (128, 131, 100):
        got = ops.qgemm(a, ops.pack_weights(b), a_zero_point=128, multiplier=mults, out_zero_point=zp,
                        out_dtype=out_dtype, isa=isa, threads=1)
        expected = np.array([[min(hi_d, max(lo_d, _half_even(float(v) * float(m)) + zp)) for m in mults] for v in acc],
                            dtype=out_dtype)
        assert_same(got, expected, f"{isa} tiled ties, zp={zp}")
        ties = sum((float(v) * float(m)) % 1 == 0.5 for v in acc for m in mults)
        assert ties > 300  # the check really exercises ties
    # GEMV kernel (M=1): acc = b[n] over 256 columns.
    b = np.arange(-128, 128, dtype=np.int64).astype(np.int8)[None, :]
    for m in (0.5, 1.5, 0.25):
        got = ops.qgemm(np.ones((1, 1), np.uint8), ops.pack_weights(b), multiplier=m,
                        out_zero_point=0 if out_dtype == S8 else 128, out_dtype=out_dtype, isa=isa, threads=1)
        zp = 0 if out_dtype == S8 else 128
        expected = np.array([[min(hi_d, max(lo_d, _half_even(float(v) * m) + zp)) for v in range(-128, 128)]],
                            dtype=out_dtype)
        assert_same(got, expected, f"{isa} gemv ties m={m}")


@pytest.mark.parametrize("isa", path_params())
def test_ties_through_long_accumulations(isa):
    """Ties built from real dot products: row 0's accumulators are all odd and the
    multiplier is 0.5, so every output of row 0 is an exact tie (and about half the rest)."""
    rng = np.random.default_rng(31)
    for M, N, K in ((1, 40, 129), (9, 40, 129), (30, 70, 300)):
        a = rng.integers(0, 2, (M, K)).astype(np.uint8)
        b = rng.integers(-3, 4, (K, N)).astype(np.int8)
        acc = ref.matmul_int(a, b, 0, 0)
        bias = np.where(acc[0] % 2 == 0, 1, 0).astype(np.int32)
        full = (acc + bias.astype(np.int64)) * 0.5
        assert np.all(full[0] % 1 == 0.5) and np.all(np.abs(full) < 100)
        for out_dtype, zp in ((S8, -3), (S8, 0), (U8, 128), (U8, 101)):
            cfg = Config(a=a, b=b, bias=bias, multiplier=0.5, out_zero_point=zp, out_dtype=out_dtype, label="long ties")
            exp = cfg.expected()
            hand = np.array([[_half_even(float(x)) + zp for x in row] for row in full]).astype(out_dtype)
            assert_same(exp, hand, "reference vs round-half-even by hand")
            assert_same(cfg.run(isa=isa), exp, f"{isa} M={M} N={N} K={K} {out_dtype} zp={zp}")


@pytest.mark.parametrize("isa", path_params())
def test_int32_to_float32_rounds_to_nearest_even(isa):
    """acc = bias only (B = 0): f32(acc) must round half to even above 2^24."""
    vals = [16777217, 16777219, -16777217, -16777219, 2**31 - 1, -(2**31 - 1), 33554435, 0, 1, -1]
    bias = np.array(vals, np.int32)
    for M in (1, 5):
        a = np.zeros((M, 1), np.uint8)
        packed = ops.pack_weights(np.zeros((1, len(vals)), np.int8))
        got = ops.qgemm(a, packed, bias=bias, multiplier=1.0, out_dtype=np.float32, isa=isa, threads=1)
        expected = np.array([[16777216.0, 16777220.0, -16777216.0, -16777220.0, 2147483648.0, -2147483648.0,
                              33554436.0, 0.0, 1.0, -1.0]] * M, np.float32)
        assert_same(got, expected, f"{isa} M={M}")
        raw = ops.qgemm(a, packed, bias=bias, isa=isa, threads=1)
        assert_same(raw, np.array([vals] * M, np.int32), f"{isa} raw M={M}")


@pytest.mark.parametrize("isa", path_params())
def test_clamp_happens_in_float_before_conversion(isa):
    """Huge products (even +-inf in f32) clamp to lo/hi instead of wrapping through INT_MIN."""
    bias = np.array([2**31 - 1, -(2**31 - 1), 2**30, -(2**30), 1, -1, 0], np.int32)
    packed = ops.pack_weights(np.zeros((1, len(bias)), np.int8))
    for M in (1, 4):
        a = np.zeros((M, 1), np.int8)
        for mult in (1e6, 3e38):
            for out_dtype, zp, lo, hi in ((U8, 0, None, None), (U8, 128, 100, 200), (S8, 0, None, None),
                                          (S8, -5, -20, 7), (U8, 255, None, None), (S8, 127, 127, 127)):
                cfg_kw = dict(bias=bias, multiplier=mult, out_zero_point=zp, lo=lo, hi=hi, out_dtype=out_dtype)
                got = ops.qgemm(a, packed, isa=isa, threads=1, **cfg_kw)
                d_lo, d_hi = (0, 255) if out_dtype == U8 else (-128, 127)
                lo_, hi_ = (d_lo if lo is None else lo), (d_hi if hi is None else hi)
                with np.errstate(over="ignore"):  # the reference's f32 product may reach inf, on purpose
                    exp = ref.qgemm(a, np.zeros((1, len(bias)), np.int8), **cfg_kw)
                assert exp[0, 0] == hi_ and exp[0, 1] == lo_ and exp[0, 6] == zp
                assert_same(got, exp, f"{isa} M={M} m={mult} {out_dtype} zp={zp} lo={lo} hi={hi}")
            f = ops.qgemm(a, packed, bias=bias, multiplier=mult, out_dtype=np.float32, isa=isa, threads=1)
            with np.errstate(over="ignore"):
                f_exp = ref.qgemm(a, np.zeros((1, len(bias)), np.int8), bias=bias, multiplier=mult, out_dtype=np.float32)
            assert_same(f, f_exp, f"{isa} f32 m={mult}")
            if mult == 3e38:
                assert np.isinf(f[0, 0]) and f[0, 0] > 0 and np.isinf(f[0, 1]) and f[0, 1] < 0


@pytest.mark.parametrize("isa", path_params())
def test_subnormal_multipliers_are_not_flushed(isa):
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (9, 40)).astype(np.int8)
    b = rng.integers(-128, 128, (40, 35)).astype(np.int8)
    packed = ops.pack_weights(b)
    for m in (1e-40, 1.4e-45, np.float32(1e-38)):
        got = ops.qgemm(a, packed, a_zero_point=3, multiplier=m, out_dtype=np.float32, isa=isa, threads=1)
        exp = ref.qgemm(a, b, a_zero_point=3, multiplier=m, out_dtype=np.float32)
        assert np.count_nonzero(exp) > 0
        assert_same(got, exp, f"{isa} m={m}")


# ---------------------------------------------------------------------------------------
# Same bits on every path and every thread count

IDENTITY_SHAPES = ((1, 300, 129), (7, 100, 65), (200, 257, 96), (97, 33, 1000), (2, 1000, 31))


@pytest.mark.parametrize("shape", IDENTITY_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bit_identical_across_paths_and_threads(shape):
    paths = usable_paths()
    assert "scalar" in paths and "avx512vnni_emulated" in paths
    M, N, K = shape
    for j, (out_dtype, per_col, clamp) in enumerate(OUT_VARIANTS[:7]):
        rng = np.random.default_rng(777 + j)
        cfg = make_config(rng, M, N, K, a_dtype=(U8, S8)[j % 2], b_dtype=(S8, U8)[(j // 2) % 2], out_dtype=out_dtype,
                          per_column_mult=per_col, clamp=clamp, b_zp_kind=("column", "tensor", "none")[j % 3],
                          small_w=j % 2 == 1, label=f"identity#{j}")
        packed = cfg.pack()
        exp = cfg.expected()
        for isa in paths:
            for threads in (1, 2, 3):
                got = cfg.run(packed, isa=isa, threads=threads)
                assert_same(got, exp, f"{cfg.describe()} isa={isa} threads={threads}")


# ---------------------------------------------------------------------------------------
# The int32 bound: refused, never wrapped


@pytest.mark.parametrize("isa", path_params())
def test_int32_worst_case_is_refused(isa):
    K = 70_000
    a = np.full((1, K), 255, np.uint8)
    b = np.full((K, 1), 127, np.int8)
    packed = ops.pack_weights(b)
    with pytest.raises(pyruntime.UnsupportedError) as ei:
        ops.qgemm(a, packed, isa=isa, threads=1)
    msg = str(ei.value)
    assert "K=70000" in msg and "2^31-1" in msg, msg
    assert str(70000 * 255 * 127) in msg, msg
    with pytest.raises(pyruntime.UnsupportedError):
        ops.matmul_integer(a, b, isa=isa)
    with pytest.raises(pyruntime.UnsupportedError):
        ops.qlinear_matmul(a, 0.1, np.uint8(0), b, 0.1, np.int8(0), 1.0, np.uint8(0), isa=isa)
    # The bound uses the dtype range around the zero point, not the values present.
    with pytest.raises(pyruntime.UnsupportedError):
        ops.qgemm(np.zeros((3, K), np.uint8), packed, isa=isa)
    # The same K with narrow weights fits and is exact.
    small = ops.pack_weights(np.ones((K, 3), np.int8))
    assert_same(ops.qgemm(a, small, isa=isa), np.full((1, 3), K * 255, np.int32), f"{isa} K=70000 w=1")


@pytest.mark.parametrize("isa", path_params())
def test_int32_bound_edges(isa):
    # Just under the bound from K: the largest legal accumulators are exact.
    for K, b_dt, w, azp, a_val in ((66_000, S8, 127, 0, 255), (33_000, U8, 255, 0, 255),
                                   (65_000, S8, -128, 127, -128)):
        a_dt = U8 if a_val == 255 else S8
        a = np.full((2, K), a_val, a_dt)
        b = np.full((K, 3), w, b_dt)
        expected = K * (a_val - azp) * w
        assert abs(expected) <= INT32_MAX
        got = ops.qgemm(a, ops.pack_weights(b), a_zero_point=azp, isa=isa, threads=1)
        assert_same(got, np.full((2, 3), expected, np.int32), f"{isa} K={K} w={w}")
    with pytest.raises(pyruntime.UnsupportedError):
        ops.qgemm(np.zeros((1, 66_400), np.uint8), ops.pack_weights(np.full((66_400, 1), 127, np.int8)), isa=isa)
    # Exactly 2^31-1 through the bias: accepted; one more: refused.
    a = np.full((1, 1), -128, np.int8)
    b = np.full((1, 2), -128, np.int8)
    packed = ops.pack_weights(b)
    worst = 255 * 128
    bias = np.array([INT32_MAX - worst, -(INT32_MAX - worst)], np.int32)
    got = ops.qgemm(a, packed, a_zero_point=127, bias=bias, isa=isa)
    assert_same(got, np.array([[INT32_MAX, -(INT32_MAX - 2 * worst)]], np.int32), f"{isa} bias at the bound")
    with pytest.raises(pyruntime.UnsupportedError):
        ops.qgemm(a, packed, a_zero_point=127, bias=bias + np.int32(1), isa=isa)
    with pytest.raises(pyruntime.UnsupportedError):
        ops.qgemm(a, packed, a_zero_point=127, bias=np.array([0, -(2**31)], np.int32), isa=isa)
