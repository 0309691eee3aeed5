"""pyruntime.ops: argument checking (typed errors naming expected vs given), layouts of
the inputs (non-contiguous views), and edge shapes."""
from __future__ import annotations

import numpy as np
import pytest

import pyruntime
from pyruntime import InputError, UnsupportedError, ops
from pyruntime import reference as ref

from pyrt_testlib import assert_same, path_params

RNG_SEED = 20240601


@pytest.fixture
def operands():
    rng = np.random.default_rng(RNG_SEED)
    a = rng.integers(0, 256, (3, 4)).astype(np.uint8)
    b = rng.integers(-128, 128, (4, 5)).astype(np.int8)
    return a, b, ops.pack_weights(b)


def test_errors_are_typed():
    assert issubclass(InputError, pyruntime.PyRuntimeError) and issubclass(InputError, ValueError)
    assert issubclass(UnsupportedError, pyruntime.PyRuntimeError)
    assert issubclass(pyruntime.ModelError, pyruntime.PyRuntimeError)
    assert issubclass(pyruntime.PyRuntimeError, RuntimeError)


# (label, call(a, b, packed), error type, message fragments that must all appear)
QGEMM_ERRORS = [
    ("float A", lambda a, b, p: ops.qgemm(a.astype(np.float32), p), InputError, ["a", "uint8 or int8", "float32"]),
    ("int16 A", lambda a, b, p: ops.qgemm(a.astype(np.int16), p), InputError, ["a", "uint8 or int8", "int16"]),
    ("list A", lambda a, b, p: ops.qgemm(a.tolist(), p), InputError, ["a", "numpy array", "list"]),
    ("1-D A", lambda a, b, p: ops.qgemm(a[0], p), InputError, ["a", "2-D", "(4,)"]),
    ("3-D A", lambda a, b, p: ops.qgemm(a[None], p), InputError, ["a", "2-D", "(1, 3, 4)"]),
    ("K mismatch", lambda a, b, p: ops.qgemm(np.zeros((3, 6), np.uint8), p), InputError, ["6 columns", "K=4"]),
    ("not packed", lambda a, b, p: ops.qgemm(a, b), InputError, ["pack_weights", "ndarray"]),
    ("a_zp > 255", lambda a, b, p: ops.qgemm(a, p, a_zero_point=256), InputError, ["a_zero_point", "[0, 255]", "256"]),
    ("a_zp < 0", lambda a, b, p: ops.qgemm(a, p, a_zero_point=-1), InputError, ["a_zero_point", "[0, 255]", "-1"]),
    ("s8 a_zp 128", lambda a, b, p: ops.qgemm(a.view(np.int8), p, a_zero_point=128), InputError,
     ["a_zero_point", "int8", "[-128, 127]", "128"]),
    ("float a_zp", lambda a, b, p: ops.qgemm(a, p, a_zero_point=1.5), InputError, ["a_zero_point", "1.5"]),
    ("bool a_zp", lambda a, b, p: ops.qgemm(a, p, a_zero_point=True), InputError, ["a_zero_point", "True"]),
    ("NaN multiplier", lambda a, b, p: ops.qgemm(a, p, multiplier=float("nan"), out_dtype=np.uint8), InputError,
     ["multiplier", "finite and > 0", "nan"]),
    ("inf multiplier", lambda a, b, p: ops.qgemm(a, p, multiplier=float("inf"), out_dtype=np.int8), InputError,
     ["multiplier", "finite and > 0", "inf"]),
    ("zero multiplier", lambda a, b, p: ops.qgemm(a, p, multiplier=0.0, out_dtype=np.float32), InputError,
     ["multiplier", "> 0", "0.0"]),
    ("negative multiplier", lambda a, b, p: ops.qgemm(a, p, multiplier=-0.5, out_dtype=np.uint8), InputError,
     ["multiplier", "> 0", "-0.5"]),
    ("negative per-column multiplier",
     lambda a, b, p: ops.qgemm(a, p, multiplier=np.array([1, 1, -1, 1, 1], np.float32), out_dtype=np.uint8),
     InputError, ["multiplier", "> 0"]),
    ("multiplier underflows f32", lambda a, b, p: ops.qgemm(a, p, multiplier=1e-50, out_dtype=np.uint8), InputError,
     ["multiplier", "float32"]),
    ("multiplier wrong length",
     lambda a, b, p: ops.qgemm(a, p, multiplier=np.ones(4, np.float32), out_dtype=np.uint8), InputError,
     ["multiplier", "5", "(4,)"]),
    ("string multiplier", lambda a, b, p: ops.qgemm(a, p, multiplier="x", out_dtype=np.uint8), InputError,
     ["multiplier", "float"]),
    ("missing multiplier", lambda a, b, p: ops.qgemm(a, p, out_dtype=np.uint8), InputError, ["multiplier", "uint8"]),
    ("multiplier with int32", lambda a, b, p: ops.qgemm(a, p, multiplier=1.0), InputError,
     ["int32", "multiplier"]),
    ("bias int64", lambda a, b, p: ops.qgemm(a, p, bias=np.zeros(5, np.int64)), InputError,
     ["bias", "int32", "(5,)", "int64"]),
    ("bias wrong shape", lambda a, b, p: ops.qgemm(a, p, bias=np.zeros(4, np.int32)), InputError,
     ["bias", "(5,)", "(4,)"]),
    ("bias 2-D", lambda a, b, p: ops.qgemm(a, p, bias=np.zeros((1, 5), np.int32)), InputError,
     ["bias", "(5,)", "(1, 5)"]),
    ("bias list", lambda a, b, p: ops.qgemm(a, p, bias=[0] * 5), InputError, ["bias", "int32", "list"]),
    ("lo > hi", lambda a, b, p: ops.qgemm(a, p, multiplier=1.0, out_dtype=np.uint8, lo=10, hi=5), InputError,
     ["lo=10", "hi=5"]),
    ("lo out of u8", lambda a, b, p: ops.qgemm(a, p, multiplier=1.0, out_dtype=np.uint8, lo=-1), InputError,
     ["lo", "[0, 255]", "-1"]),
    ("hi out of s8", lambda a, b, p: ops.qgemm(a, p, multiplier=1.0, out_dtype=np.int8, hi=128), InputError,
     ["hi", "[-128, 127]", "128"]),
    ("out_zp out of s8", lambda a, b, p: ops.qgemm(a, p, multiplier=1.0, out_dtype=np.int8, out_zero_point=200),
     InputError, ["out_zero_point", "[-128, 127]", "200"]),
    ("clamp on int32", lambda a, b, p: ops.qgemm(a, p, lo=3), InputError, ["lo", "uint8/int8"]),
    ("out_zp on float32", lambda a, b, p: ops.qgemm(a, p, multiplier=1.0, out_dtype=np.float32, out_zero_point=3),
     InputError, ["out_zero_point", "uint8/int8", "float32"]),
    ("out_dtype int16", lambda a, b, p: ops.qgemm(a, p, out_dtype=np.int16), InputError,
     ["out_dtype", "int32, float32, uint8 or int8", "int16"]),
    ("out_dtype float64", lambda a, b, p: ops.qgemm(a, p, out_dtype=np.float64), InputError,
     ["out_dtype", "float64"]),
    ("out_dtype nonsense", lambda a, b, p: ops.qgemm(a, p, out_dtype="banana"), InputError, ["out_dtype", "banana"]),
    ("threads=0", lambda a, b, p: ops.qgemm(a, p, threads=0), InputError, ["threads", "positive", "0"]),
    ("threads=-2", lambda a, b, p: ops.qgemm(a, p, threads=-2), InputError, ["threads", "positive", "-2"]),
    ("threads=1.5", lambda a, b, p: ops.qgemm(a, p, threads=1.5), InputError, ["threads", "1.5"]),
    ("threads=True", lambda a, b, p: ops.qgemm(a, p, threads=True), InputError, ["threads", "True"]),
    ("isa not a string", lambda a, b, p: ops.qgemm(a, p, isa=3), InputError, ["isa", "int"]),
]


@pytest.mark.parametrize("label,call,exc,fragments", QGEMM_ERRORS, ids=[e[0] for e in QGEMM_ERRORS])
def test_qgemm_argument_errors(operands, label, call, exc, fragments):
    a, b, packed = operands
    with pytest.raises(exc) as ei:
        call(a, b, packed)
    assert type(ei.value) is exc, f"{label}: raised {type(ei.value).__name__}, expected {exc.__name__}"
    msg = str(ei.value)
    missing = [f for f in fragments if f not in msg]
    assert not missing, f"{label}: message {msg!r} lacks {missing}"


def test_unknown_isa_name_is_an_input_error(operands):
    """A misspelt path name is a wrong argument value: InputError naming the valid names.
    (A real path the CPU lacks is UnsupportedError, below.)"""
    a, b, packed = operands
    for call in (lambda: ops.qgemm(a, packed, isa="avx9000"), lambda: ops.matmul_integer(a, b, isa="avx9000"),
                 lambda: packed.layout("avx9000")):
        with pytest.raises(pyruntime.PyRuntimeError) as ei:
            call()
        msg = str(ei.value)
        assert "avx9000" in msg and "scalar" in msg and "avx2" in msg and "avx512vnni" in msg, msg
        assert isinstance(ei.value, InputError), (
            f"unknown isa name raised {type(ei.value).__name__}, expected InputError: {msg}")


def test_unavailable_isa_is_unsupported(operands):
    a, b, packed = operands
    available = pyruntime.cpu_info()["available"]
    missing = [p for p in ("avx2", "avx512vnni") if p not in available]
    if not missing:
        pytest.skip(f"every real path is available on this CPU ({available}): nothing to refuse")
    for path in missing:
        with pytest.raises(UnsupportedError) as ei:
            ops.qgemm(a, packed, isa=path)
        msg = str(ei.value)
        assert path in msg and "available" in msg and "scalar" in msg, msg


PACK_ERRORS = [
    ("int16 B", lambda b: ops.pack_weights(b.astype(np.int16)), ["b", "uint8 or int8", "int16"]),
    ("float B", lambda b: ops.pack_weights(b.astype(np.float64)), ["b", "float64"]),
    ("1-D B", lambda b: ops.pack_weights(b[0]), ["b", "2-D", "(5,)"]),
    ("3-D B", lambda b: ops.pack_weights(b[None]), ["b", "2-D"]),
    ("b_zp wrong dtype", lambda b: ops.pack_weights(b, np.uint8(3)), ["b_zero_point", "int8", "uint8"]),
    ("b_zp int array", lambda b: ops.pack_weights(b, np.zeros(5, np.int32)), ["b_zero_point", "int8", "int32"]),
    ("b_zp out of range", lambda b: ops.pack_weights(b, 200), ["b_zero_point", "200", "[-128, 127]"]),
    ("b_zp below range", lambda b: ops.pack_weights(b, -129), ["b_zero_point", "-129", "[-128, 127]"]),
    ("u8 b_zp out of range", lambda b: ops.pack_weights(b.view(np.uint8), 256), ["b_zero_point", "256", "[0, 255]"]),
    ("per-column b_zp wrong length", lambda b: ops.pack_weights(b, np.zeros(4, np.int8)),
     ["b_zero_point", "1-D array of 5", "(4,)"]),
    ("2-D b_zp", lambda b: ops.pack_weights(b, np.zeros((1, 5), np.int8)), ["b_zero_point", "(1, 5)"]),
    ("bool b_zp", lambda b: ops.pack_weights(b, True), ["b_zero_point", "bool"]),
]


@pytest.mark.parametrize("label,call,fragments", PACK_ERRORS, ids=[e[0] for e in PACK_ERRORS])
def test_pack_weights_errors(operands, label, call, fragments):
    _, b, _ = operands
    with pytest.raises(InputError) as ei:
        call(b)
    msg = str(ei.value)
    assert all(f in msg for f in fragments), f"{label}: {msg!r} lacks one of {fragments}"


def _qlm(a, b, **over):
    args = dict(a_scale=np.float32(0.02), a_zp=np.uint8(128), b_scale=np.float32(0.01), b_zp=np.int8(0),
                y_scale=np.float32(0.05), y_zp=np.uint8(10))
    args.update(over)
    return ops.qlinear_matmul(a, args["a_scale"], args["a_zp"], b, args["b_scale"], args["b_zp"], args["y_scale"],
                              args["y_zp"])


ONNX_OP_ERRORS = [
    ("MatMulInteger float A", lambda a, b: ops.matmul_integer(a.astype(np.float32), b), InputError,
     ["a", "float32"]),
    ("MatMulInteger int16 B", lambda a, b: ops.matmul_integer(a, b.astype(np.int16)), InputError, ["b", "int16"]),
    ("MatMulInteger K mismatch", lambda a, b: ops.matmul_integer(a, b[:3]), InputError, ["(3, 4)", "(3, 5)"]),
    ("MatMulInteger per-row a_zp", lambda a, b: ops.matmul_integer(a, b, np.array([1, 2, 3], np.uint8)),
     UnsupportedError, ["per-row a_zero_point"]),
    ("MatMulInteger a_zp wrong dtype", lambda a, b: ops.matmul_integer(a, b, np.int8(1)), InputError,
     ["a_zero_point", "uint8", "int8"]),
    ("MatMulInteger a_zp out of range", lambda a, b: ops.matmul_integer(a, b, 300), InputError,
     ["a_zero_point", "300"]),
    ("MatMulInteger b_zp wrong length", lambda a, b: ops.matmul_integer(a, b, None, np.zeros(3, np.int8)),
     InputError, ["b_zero_point", "5", "(3,)"]),
    ("MatMulInteger threads=0", lambda a, b: ops.matmul_integer(a, b, threads=0), InputError, ["threads"]),
    ("QLinearMatMul per-row a_scale", lambda a, b: _qlm(a, b, a_scale=np.array([0.1, 0.2, 0.3], np.float32)),
     UnsupportedError, ["per-row a_scale"]),
    ("QLinearMatMul NaN a_scale", lambda a, b: _qlm(a, b, a_scale=np.float32("nan")), InputError,
     ["a_scale", "finite", "nan"]),
    ("QLinearMatMul inf b_scale", lambda a, b: _qlm(a, b, b_scale=np.float32("inf")), InputError,
     ["b_scale", "finite", "inf"]),
    ("QLinearMatMul zero y_scale", lambda a, b: _qlm(a, b, y_scale=np.float32(0)), InputError,
     ["y_scale", "> 0", "0.0"]),
    ("QLinearMatMul negative a_scale", lambda a, b: _qlm(a, b, a_scale=np.float32(-1)), InputError,
     ["a_scale", "> 0", "-1.0"]),
    ("QLinearMatMul negative per-column b_scale",
     lambda a, b: _qlm(a, b, b_scale=np.array([1, 1, 1, -1, 1], np.float32)), InputError, ["b_scale", "> 0"]),
    ("QLinearMatMul b_scale wrong length", lambda a, b: _qlm(a, b, b_scale=np.ones(4, np.float32)), InputError,
     ["b_scale", "5", "(4,)"]),
    ("QLinearMatMul a_zp wrong dtype", lambda a, b: _qlm(a, b, a_zp=np.int8(0)), InputError,
     ["a_zero_point", "uint8", "int8"]),
    ("QLinearMatMul b_zp wrong dtype", lambda a, b: _qlm(a, b, b_zp=np.uint8(0)), InputError,
     ["b_zero_point", "int8", "uint8"]),
    ("QLinearMatMul y_zp int64", lambda a, b: _qlm(a, b, y_zp=np.int64(0)), InputError,
     ["y_zero_point", "uint8 or int8", "int64"]),
    ("QLinearMatMul y_zp two values", lambda a, b: _qlm(a, b, y_zp=np.array([1, 2], np.uint8)), InputError,
     ["y_zero_point", "(2,)"]),
    ("QLinearMatMul multiplier underflows", lambda a, b: _qlm(a, b, a_scale=np.float32(1e-30),
                                                              b_scale=np.float32(1e-30), y_scale=np.float32(1e30)),
     InputError, ["a_scale * b_scale / y_scale", "float32"]),
    ("QLinearMatMul float A", lambda a, b: _qlm(a.astype(np.float32), b), InputError, ["a", "float32"]),
    ("QLinearMatMul K mismatch", lambda a, b: _qlm(a[:, :3], b), InputError, ["(3, 3)", "(4, 5)"]),
]


@pytest.mark.parametrize("label,call,exc,fragments", ONNX_OP_ERRORS, ids=[e[0] for e in ONNX_OP_ERRORS])
def test_onnx_op_errors(operands, label, call, exc, fragments):
    a, b, _ = operands
    with pytest.raises(exc) as ei:
        call(a, b)
    assert type(ei.value) is exc, f"{label}: raised {type(ei.value).__name__}"
    msg = str(ei.value)
    missing = [f for f in fragments if f not in msg]
    assert not missing, f"{label}: message {msg!r} lacks {missing}"


def test_huge_multiplier_is_refused_without_a_warning(operands, recwarn):
    """A multiplier that overflows float32: InputError, and no stray numpy RuntimeWarning on
    the way (under -W error that warning would replace the typed error)."""
    a, b, packed = operands
    with pytest.raises(InputError, match="multiplier"):
        ops.qgemm(a, packed, multiplier=1e39, out_dtype=np.uint8)
    with pytest.raises(InputError, match="a_scale \\* b_scale / y_scale"):
        _qlm(a, b, a_scale=np.float32(1e30), b_scale=np.float32(1e30), y_scale=np.float32(1e-30))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in recwarn]


# ---------------------------------------------------------------------------------------
# Accepted argument forms


@pytest.mark.parametrize("out", [np.uint8, np.dtype(np.uint8), "uint8", "u1"], ids=repr)
def test_out_dtype_accepts_numpy_dtype_likes(operands, out):
    """out_dtype takes what np.dtype() takes; the error names 'uint8' as valid, so the
    string 'uint8' must not be refused."""
    a, b, packed = operands
    got = ops.qgemm(a, packed, multiplier=0.001, out_zero_point=7, out_dtype=out)
    assert_same(got, ref.qgemm(a, b, multiplier=0.001, out_zero_point=7, out_dtype=np.uint8), f"out_dtype={out!r}")


def test_zero_points_accept_python_and_numpy_scalars(operands):
    a, b, _ = operands
    exp = ref.matmul_int(a, b, 3, -5).astype(np.int32)
    for bzp in (-5, np.int8(-5), np.array(-5, np.int8), np.array([-5], np.int8)):
        for azp in (3, np.uint8(3), np.array([3], np.uint8)):
            assert_same(ops.matmul_integer(a, b, azp, bzp), exp, f"a_zp={azp!r} b_zp={bzp!r}")
        assert_same(ops.qgemm(a, ops.pack_weights(b, bzp), a_zero_point=3), exp, f"qgemm b_zp={bzp!r}")
        assert_same(ops.qgemm(a, ops.pack_weights(b, bzp), a_zero_point=np.int64(3)), exp, "np.int64 a_zp")


def test_packed_weights_describe_themselves(operands):
    _, b, packed = operands
    assert packed.shape == (4, 5)
    assert packed.dtype == np.int8
    assert "(4, 5)" in repr(packed)
    for isa in ("scalar", "avx512vnni_emulated"):
        lay = packed.layout(isa)
        assert set(lay) >= {"variant", "nr", "k_padded", "bytes"}
        assert lay["k_padded"] >= 4 and lay["nr"] >= 1 and lay["bytes"] >= 4 * 5


# ---------------------------------------------------------------------------------------
# Input layouts: views must give the same answer as contiguous copies


def _views(rng):
    """(label, A view, B view) pairs; every view has the logical shape (M, K) / (K, N)."""
    M, K, N = 23, 37, 29
    big_a = rng.integers(0, 256, (2 * M + 3, 2 * K + 5)).astype(np.uint8)
    big_b = rng.integers(-128, 128, (2 * K + 3, 2 * N + 5)).astype(np.int8)
    a_t = rng.integers(0, 256, (K, M)).astype(np.uint8).T          # transposed view
    b_t = rng.integers(-128, 128, (N, K)).astype(np.int8).T
    a_views = [
        ("contiguous", np.ascontiguousarray(big_a[:M, :K])),
        ("column slice", big_a[:M, 3:3 + K]),                   # row stride > K, used in place
        ("row step", big_a[1:2 * M:2, :K]),                     # row stride 2x
        ("column step", big_a[:M, :2 * K:2]),                   # inner stride 2: copied
        ("transposed", a_t),
        ("reversed rows", big_a[:M, :K][::-1]),                 # negative row stride
        ("reversed columns", big_a[:M, :K][:, ::-1]),
        ("fortran", np.asfortranarray(big_a[:M, :K])),
        ("broadcast row", np.broadcast_to(big_a[0, :K], (M, K))),  # row stride 0
    ]
    b_views = [
        ("contiguous", np.ascontiguousarray(big_b[:K, :N])),
        ("column slice", big_b[:K, 2:2 + N]),
        ("row step", big_b[:2 * K:2, :N]),
        ("transposed", b_t),
        ("column step", big_b[:K, 1:2 * N:2]),
        ("broadcast row", np.broadcast_to(big_b[5, :N], (K, N))),
    ]
    return a_views, b_views


@pytest.mark.parametrize("isa", path_params())
def test_non_contiguous_inputs(isa):
    rng = np.random.default_rng(RNG_SEED + 1)
    a_views, b_views = _views(rng)
    bias_store = rng.integers(-1000, 1000, 2 * 29).astype(np.int32)
    bias = bias_store[::2]                                      # strided bias view
    mult_store = rng.uniform(1e-5, 1e-4, 2 * 29).astype(np.float32)
    mult = mult_store[1::2]                                     # strided multiplier view
    zp_store = rng.integers(-128, 128, 3 * 29).astype(np.int8)
    bzp = zp_store[::3]                                         # strided per-column zero points
    for b_label, bv in b_views:
        packed = ops.pack_weights(bv, bzp)
        for a_label, av in a_views:
            for M in (av.shape[0], 1):
                a = av[:M]
                what = f"{isa}: A {a_label} {a.strides} (M={M}), B {b_label} {bv.strides}"
                exp = ref.qgemm(a, bv, a_zero_point=100, b_zero_point=bzp, bias=bias)
                assert_same(ops.qgemm(a, packed, a_zero_point=100, bias=bias, isa=isa), exp, what)
                exp = ref.qgemm(a, bv, a_zero_point=100, b_zero_point=bzp, bias=bias, multiplier=mult,
                                out_zero_point=-4, out_dtype=np.int8)
                got = ops.qgemm(a, packed, a_zero_point=100, bias=bias, multiplier=mult, out_zero_point=-4,
                                out_dtype=np.int8, isa=isa)
                assert_same(got, exp, what + " requant")
            exp = ref.matmul_int(av, bv, 7, bzp).astype(np.int32)
            assert_same(ops.matmul_integer(av, bv, np.uint8(7), bzp, isa=isa), exp, f"matmul_integer {a_label}/{b_label}")


def test_inputs_are_not_modified():
    rng = np.random.default_rng(RNG_SEED + 2)
    a = rng.integers(-128, 128, (17, 40)).astype(np.int8)
    b = rng.integers(0, 256, (40, 33)).astype(np.uint8)
    bias = rng.integers(-9, 9, 33).astype(np.int32)
    copies = [x.copy() for x in (a, b, bias)]
    packed = ops.pack_weights(b, np.uint8(3))
    b[:] = 0  # packing copied the weights: later changes to b do not leak in
    ops.qgemm(a, packed, a_zero_point=-5, bias=bias, multiplier=0.01, out_dtype=np.uint8)
    assert np.array_equal(a, copies[0]) and np.array_equal(bias, copies[2])
    got = ops.qgemm(a, packed, a_zero_point=-5)
    assert_same(got, ref.qgemm(a, copies[1], a_zero_point=-5, b_zero_point=3), "weights copied at pack time")


# ---------------------------------------------------------------------------------------
# Edge shapes


@pytest.mark.parametrize("isa", path_params())
@pytest.mark.parametrize("out_dtype", [np.int32, np.float32, np.uint8, np.int8], ids=lambda d: np.dtype(d).name)
def test_empty_and_degenerate_shapes(isa, out_dtype):
    rng = np.random.default_rng(RNG_SEED + 3)
    kw = {} if out_dtype == np.int32 else dict(multiplier=0.5)
    N = 19
    # M = 0: an empty (0, N) result of the right dtype.
    b = rng.integers(-128, 128, (8, N)).astype(np.int8)
    got = ops.qgemm(np.zeros((0, 8), np.uint8), ops.pack_weights(b), isa=isa, out_dtype=out_dtype, **kw)
    assert got.shape == (0, N) and got.dtype == np.dtype(out_dtype)
    # N = 0
    got = ops.qgemm(np.zeros((5, 8), np.uint8), ops.pack_weights(np.zeros((8, 0), np.int8)), isa=isa,
                    out_dtype=out_dtype, **kw)
    assert got.shape == (5, 0) and got.dtype == np.dtype(out_dtype)
    # K = 1 and K = 0 (the output is the bias and zero-point terms alone).
    bias = rng.integers(-300, 300, N).astype(np.int32)
    for K in (1, 0):
        for M in (1, 6):
            a = rng.integers(0, 256, (M, K)).astype(np.uint8)
            bk = rng.integers(-128, 128, (K, N)).astype(np.int8)
            bzp = rng.integers(-128, 128, N).astype(np.int8)
            got = ops.qgemm(a, ops.pack_weights(bk, bzp), a_zero_point=9, bias=bias, isa=isa, out_dtype=out_dtype,
                            **kw)
            exp = ref.qgemm(a, bk, a_zero_point=9, b_zero_point=bzp, bias=bias, out_dtype=out_dtype, **kw)
            assert_same(got, exp, f"{isa} K={K} M={M}")


def test_matmul_integer_empty_shapes():
    assert ops.matmul_integer(np.zeros((0, 4), np.uint8), np.zeros((4, 3), np.int8)).shape == (0, 3)
    got = ops.matmul_integer(np.zeros((2, 0), np.uint8), np.zeros((0, 3), np.int8))
    assert_same(got, np.zeros((2, 3), np.int32), "K=0")
