"""pyruntime.load(...) -> Model: the public front door (issue 3, items 1, 5 and 6).

Loading from path/bytes/ModelProto, I/O metadata, isa, summary(); run/predict and their
input checks (InputError with expected vs given); non-contiguous, empty-batch and
NaN/Inf inputs; many Python threads on one Model; threads=1 vs 2; the bounded plan cache;
isa='scalar' vs the default path. Models come from tests/model_zoo_helpers.py (the
784-512-256-10 MLP student and its onnxruntime quantize_static variants).
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

import pyruntime
from pyruntime import InputError

import model_zoo_helpers as zh

INT8_VARIANTS = list(zh.VARIANTS)
ALL_VARIANTS = ["fp32"] + INT8_VARIANTS
DEFAULT_ISA = pyruntime.cpu_info()["isa"]


@pytest.fixture(scope="module")
def zoo():
    return zh.shared_zoo()


@pytest.fixture(scope="module")
def models(zoo):
    """One loaded Model per variant (default threads and isa)."""
    return {v: pyruntime.load(str(zoo.path(v))) for v in ALL_VARIANTS}


@pytest.fixture(scope="module")
def x64():
    return zh.eval_inputs(64)[0]


# ---------------------------------------------------------------------------------------
# load and metadata


@pytest.mark.parametrize("variant", ["fp32", "qdq_u8s8_pt", "qop_u8s8_pc"])
def test_load_from_path_bytes_and_proto(zoo, x64, variant):
    path = zoo.path(variant)
    ref = pyruntime.load(str(path)).predict(x64)
    for src in (Path(path), path.read_bytes(), onnx.load(str(path))):
        m = pyruntime.load(src)
        assert isinstance(m, pyruntime.Model)
        out = m.predict(x64)
        assert out.dtype == np.float32 and out.shape == (64, 10)
        np.testing.assert_array_equal(out, ref, err_msg=f"load({type(src).__name__}) differs")


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_inputs_outputs_metadata(models, variant):
    m = models[variant]
    assert [(i.name, np.dtype(i.dtype), tuple(i.shape)) for i in m.inputs] == [("x", np.dtype(np.float32), ("N", 784))]
    assert [(o.name, np.dtype(o.dtype), tuple(o.shape)) for o in m.outputs] == [
        ("logits", np.dtype(np.float32), ("N", 10))]
    assert isinstance(m.inputs[0].shape[0], str) and isinstance(m.inputs[0].shape[1], int)


def test_isa(zoo):
    info = pyruntime.cpu_info()
    m = pyruntime.load(str(zoo.path("qdq_s8s8_pc")))
    assert m.isa == info["isa"] and m.isa in info["available"]
    assert pyruntime.load(str(zoo.path("qdq_s8s8_pc")), isa="scalar").isa == "scalar"


def test_summary_names_kernels_fusions_and_arena(zoo, x64):
    q = pyruntime.load(str(zoo.path("qdq_u8s8_pt")))
    q.predict(x64)
    s = q.summary()
    assert "qgemm" in s and s.count("qgemm") == 3, s
    gemm_lines = [ln for ln in s.splitlines() if "qgemm" in ln]
    assert all("fused[" in ln and "QuantizeLinear" in ln and "DequantizeLinear" in ln for ln in gemm_lines), s
    assert "uint8" in s, s  # the dtypes of the chosen kernels
    assert q.isa in s
    import re
    arena = re.search(r"arena (\d+) bytes", s)
    assert arena and int(arena.group(1)) > 0, s

    f = pyruntime.load(str(zoo.path("fp32")))
    f.predict(x64)
    s = f.summary()
    assert s.count("sgemm") == 3 and "Relu" in s and "bias" in s, s

    s = pyruntime.load(str(zoo.path("qop_u8s8_pt"))).summary()
    assert s.count("qgemm") == 3 and "QLinearMatMul" in s, s


# ---------------------------------------------------------------------------------------
# run / predict


def test_run_none_names_and_predict(models, x64):
    for v in ALL_VARIANTS:
        m = models[v]
        (a,) = m.run(None, {"x": x64})
        (b,) = m.run(["logits"], {"x": x64})
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(m.predict(x64), a)
        assert isinstance(m.run(None, {"x": x64}), list)


def test_plain_model_counts_predicted_rows(zoo, x64):
    """A model without gates counts every row predict answers (first sight and the
    latest-shape fast path alike) under its final output; run() counts nothing."""
    m = pyruntime.load(str(zoo.path("fp32")))
    m.predict(x64)  # first sight: planned and counted in Python
    m.predict(x64)  # fast path: counted natively
    m.predict(x64[:3])
    m.run(None, {"x": x64})
    assert m.exit_stats() == {"counts": {"logits": 131}, "total": 131}
    m.reset_exit_stats()
    m.predict(x64[:3])
    assert m.exit_stats()["total"] == 3


def test_run_output_order(zoo, x64):
    """Outputs come back in the order asked for, not the graph's declared order."""
    base = zoo.proto("qdq_s8s8_pt")
    hidden = zh.traced_names(base, ("QuantizeLinear",))[1]  # fc1's quantized output
    m2 = zh.with_outputs(base, [hidden])
    m = pyruntime.load(m2)
    assert [o.name for o in m.outputs] == ["logits", hidden]
    logits, h = m.run(None, {"x": x64})
    h2, logits2 = m.run([hidden, "logits"], {"x": x64})
    np.testing.assert_array_equal(h, h2)
    np.testing.assert_array_equal(logits, logits2)
    assert h.dtype == np.int8 and h.shape == (64, 512)
    (only,) = m.run([hidden], {"x": x64})
    np.testing.assert_array_equal(only, h)
    ort = zh.ort_run(m2, x64, [hidden])[0]
    assert np.abs(only.astype(np.int32) - ort.astype(np.int32)).max() <= 2  # ORT's AVX2 u8s8 kernel is inexact


def _err(fn) -> str:
    with pytest.raises(InputError) as ei:
        fn()
    assert isinstance(ei.value, pyruntime.PyRuntimeError) and isinstance(ei.value, ValueError)
    return str(ei.value)


@pytest.mark.parametrize("variant", ["fp32", "qdq_u8s8_pt", "qop_u8s8_pt"])
@pytest.mark.parametrize("planned", [False, True], ids=["first-sight", "planned-shape"])
def test_input_errors(zoo, x64, variant, planned):
    """Each bad call raises InputError naming what was expected and what was given, both
    on the first call (Python checks) and once the shape is planned (native fast path)."""
    m = pyruntime.load(str(zoo.path(variant)))
    if planned:
        m.predict(x64)
    msg = _err(lambda: m.run(["nope"], {"x": x64}))
    assert "nope" in msg and "logits" in msg
    msg = _err(lambda: m.run(None, {}))
    assert "'x'" in msg and "784" in msg
    msg = _err(lambda: m.run(None, {"y": x64}))
    assert "'y'" in msg and "'x'" in msg
    msg = _err(lambda: m.run(None, {"x": x64, "y": x64}))
    assert "'y'" in msg
    msg = _err(lambda: m.run(None, {"x": x64.astype(np.float64)}))
    assert "float64" in msg and "float32" in msg
    msg = _err(lambda: m.run(None, {"x": x64.astype(np.int8)}))
    assert "int8" in msg and "float32" in msg
    msg = _err(lambda: m.run(None, {"x": x64[None]}))
    assert "(1, 64, 784)" in msg and "784" in msg
    msg = _err(lambda: m.run(None, {"x": x64[0]}))
    assert "(784,)" in msg
    msg = _err(lambda: m.run(None, {"x": np.ascontiguousarray(x64[:, :700])}))
    assert "(64, 700)" in msg and "784" in msg
    msg = _err(lambda: m.run(None, {"x": x64.tolist()}))
    assert "numpy" in msg
    msg = _err(lambda: m.predict(x64.astype(np.float64)))
    assert "float64" in msg
    # the model still works after every refusal
    np.testing.assert_array_equal(m.predict(x64), pyruntime.load(str(zoo.path(variant))).predict(x64))


def test_run_empty_output_list_like_onnxruntime(zoo, x64):
    m = pyruntime.load(str(zoo.path("fp32")))
    ort = zh.ort_session(zoo.path("fp32")).run([], {"x": x64})
    assert len(ort) == 1
    assert len(m.run([], {"x": x64})) == len(ort)


def test_fixed_shape_model_errors():
    m = pyruntime.load(zh.relu_model((1, 16)))
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    np.testing.assert_array_equal(m.run(None, {"x": x})[0], np.maximum(x, 0))
    for bad in (np.zeros((2, 16), np.float32), np.zeros((1, 15), np.float32), np.zeros((0, 16), np.float32)):
        msg = _err(lambda: m.run(None, {"x": bad}))
        assert str(bad.shape) in msg and "(1, 16)" in msg, msg


def test_inputs_untouched_and_outputs_fresh(models, x64):
    for v in ("fp32", "qdq_s8s8_pt"):
        m = models[v]
        x = x64.copy()
        a = m.predict(x)
        a_copy = a.copy()
        np.testing.assert_array_equal(x, x64)
        b = m.predict(x[::-1].copy())
        np.testing.assert_array_equal(a, a_copy)  # a later call does not reuse an earlier result
        assert a.flags["WRITEABLE"] and a.flags["C_CONTIGUOUS"] and not np.shares_memory(a, b)


@pytest.mark.parametrize("variant", ["fp32", "qdq_u8s8_pt"])
def test_byte_swapped_input_is_refused_or_correct(zoo, x64, variant):
    m = pyruntime.load(str(zoo.path(variant)))
    big = x64.astype(">f4")
    with pytest.raises(InputError):  # first sight: the Python check refuses it
        m.predict(big)
    ref = m.predict(x64)  # plans the shape
    try:
        out = m.predict(big)
    except InputError:
        return
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_non_contiguous_inputs(models, x64, variant):
    m = models[variant]
    ref = m.predict(np.ascontiguousarray(x64))
    fortran = np.asfortranarray(x64)
    transposed = np.ascontiguousarray(x64.T).T  # a transposed view, F-ordered
    big = np.zeros((128, 2 * 784), np.float32)
    big[::2, ::2] = x64
    strided = big[::2, ::2]  # sliced view with strides in both dimensions
    reversed_rows = np.ascontiguousarray(x64[::-1])[::-1]  # negative row stride
    for v in (fortran, transposed, strided, reversed_rows):
        assert not v.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(m.predict(v), ref)
    raw = bytearray(x64.nbytes + 1)  # misaligned float32 data
    una = np.frombuffer(raw, np.float32, count=x64.size, offset=1).reshape(x64.shape)
    assert not una.flags["ALIGNED"]
    una[...] = x64
    np.testing.assert_array_equal(m.predict(una), ref)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_batch_zero(models, variant):
    out = models[variant].run(None, {"x": np.zeros((0, 784), np.float32)})
    assert len(out) == 1 and out[0].shape == (0, 10) and out[0].dtype == np.float32
    assert models[variant].predict(np.empty((0, 784), np.float32)).shape == (0, 10)


def _nan_inf_batch(x):
    x = x[:8].copy()
    x[0, 0] = np.nan
    x[1, :] = np.nan
    x[2, :] = np.inf
    x[3, :] = -np.inf
    x[4, 100] = np.inf
    x[5, 100] = -np.inf
    x[6, ::2] = np.nan
    x[6, 1::2] = np.inf
    return x  # row 7 stays finite


@pytest.mark.parametrize("isa", ["scalar", None], ids=["scalar", "default"])
@pytest.mark.parametrize("variant", INT8_VARIANTS)
def test_nan_inf_int8(zoo, x64, variant, isa):
    """int8 models: the input QuantizeLinear maps NaN to the zero point (the code of 0.0)
    and +-inf to the saturated ends, so every output is finite, deterministic, and equal to
    the output for the input with NaN -> 0.0 and +-inf -> +-3e38."""
    m = pyruntime.load(str(zoo.path(variant)), isa=isa)
    xn = _nan_inf_batch(x64)
    out = m.predict(xn)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(m.predict(xn), out)
    subst = np.where(np.isnan(xn), np.float32(0), np.clip(xn, -3e38, 3e38)).astype(np.float32)
    np.testing.assert_array_equal(out, m.predict(subst))
    np.testing.assert_array_equal(out[7], m.predict(x64[7:8])[0])


def _fp32_nan_case(zoo, x64, isa):
    m = pyruntime.load(str(zoo.path("fp32")), isa=isa)
    xn = _nan_inf_batch(x64)
    out = m.predict(xn)
    ort = zh.ort_run(zoo.proto("fp32"), xn)[0]
    # Like onnxruntime: a NaN anywhere in a row (or +inf and -inf products meeting) makes
    # that row's logits NaN; the finite row stays finite.
    assert np.isnan(ort[:7]).all() and np.isfinite(ort[7]).all()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ort))
    np.testing.assert_allclose(out, ort, rtol=1e-5, atol=1e-4, equal_nan=True)


def test_nan_inf_fp32_scalar(zoo, x64):
    _fp32_nan_case(zoo, x64, "scalar")


@pytest.mark.skipif(DEFAULT_ISA == "scalar", reason="the default path is the scalar one here")
def test_nan_inf_fp32_default_isa(zoo, x64):
    _fp32_nan_case(zoo, x64, None)


@pytest.mark.skipif(DEFAULT_ISA == "scalar", reason="the default path is the scalar one here")
def test_nan_fp32_single_matmul_minimal(tmp_path):
    from onnx import helper, numpy_helper
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", 1, ["N", 16])],
                          [helper.make_tensor_value_info("y", 1, ["N", 16])],
                          initializer=[numpy_helper.from_array(np.eye(16, dtype=np.float32), "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = np.ones((1, 16), np.float32)
    x[0, 0] = np.nan
    assert np.isnan(pyruntime.load(model, isa="scalar").predict(x)).all()
    assert np.isnan(pyruntime.load(model).predict(x)).all()


# ---------------------------------------------------------------------------------------
# threads


BATCHES = (1, 3, 17, 64)


@pytest.mark.parametrize("variant", ["fp32", "qdq_u8s8_pc", "qop_u8s8_pt"])
def test_many_python_threads_one_model(zoo, variant):
    """8 Python threads x 50 calls, mixed batch sizes, run and predict alternating (both
    share the latest-shape fast path), on one Model: each result equals the
    single-threaded one bit for bit."""
    m = pyruntime.load(str(zoo.path(variant)))
    rng = np.random.default_rng(7)
    xs = {b: rng.random((b, 784), dtype=np.float32) for b in BATCHES}
    expected = {b: m.predict(xs[b]) for b in BATCHES}
    errors, mismatches = [], []
    start = threading.Barrier(8)

    def worker(tid):
        try:
            start.wait()
            for i in range(50):
                b = BATCHES[(tid + i) % len(BATCHES)]
                out = m.run(None, {"x": xs[b]})[0] if i % 2 else m.predict(xs[b])
                if not np.array_equal(out, expected[b]):
                    mismatches.append((tid, i, b))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors[:3]
    assert not mismatches, f"{len(mismatches)} results differ from the single-threaded run: {mismatches[:5]}"


def test_threads_plan_concurrently_while_evicting(zoo):
    """8 threads call a fresh Model with 40 batch sizes (more than the plan cache holds),
    so shapes are planned, evicted and re-planned concurrently; every result equals the
    single-threaded one (int8: bit for bit, and batch-size independent)."""
    m = pyruntime.load(str(zoo.path("qdq_u8s8_pt")))
    x = np.random.default_rng(11).random((40, 784), dtype=np.float32)
    ref = pyruntime.load(str(zoo.path("qdq_u8s8_pt"))).predict(x)
    bad, errors = [], []

    def worker(tid):
        try:
            for i in range(40):
                b = 1 + (tid * 7 + i * 3) % 40
                if not np.array_equal(m.predict(x[:b]), ref[:b]):
                    bad.append((tid, b))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert not bad, bad[:5]
    assert len(m._plans) <= 16


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_threads_1_vs_2(zoo, variant):
    x = zh.eval_inputs(200)[0]
    m1 = pyruntime.load(str(zoo.path(variant)), threads=1)
    m2 = pyruntime.load(str(zoo.path(variant)), threads=2)
    for b in (1, 64, 200):
        a, c = m1.predict(x[:b]), m2.predict(x[:b])
        if variant == "fp32":
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------------------------------
# the plan cache


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize("variant", ["fp32", "qdq_s8s8_pc"])
def test_plan_cache_is_bounded(zoo, variant):
    m = pyruntime.load(str(zoo.path(variant)))
    rng = np.random.default_rng(3)
    x = rng.random((300, 784), dtype=np.float32)
    ref = zh.NumpyRef(zoo.proto(variant)).run(x[:40])[0] if variant != "fp32" else None
    m.predict(x[:300])
    rss0 = _rss_bytes()
    sizes = list(range(1, 41))
    for rep in range(3):
        for b in sizes:
            out = m.predict(x[:b])
            assert out.shape == (b, 10)
            assert len(m._plans) <= 16
    assert len(m._plans) <= 16  # white-box: the LRU bound
    grown = _rss_bytes() - rss0
    assert grown < 64 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 120 calls with 40 batch sizes"
    # early sizes were evicted and are planned again: still correct
    out = m.predict(x[:40])
    full = m.predict(x[:300])[:40]
    if variant == "fp32":
        np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(out, full)
        step = zh.output_step(zoo.proto(variant))
        assert np.abs(out - ref).max() <= 1.01 * step


def test_plan_cache_keeps_the_hot_shape(zoo):
    m = pyruntime.load(str(zoo.path("fp32")))
    x = np.zeros((1, 784), np.float32)
    m.predict(x)
    hot = m._plans[((1, 784),)]
    for b in range(2, 40):
        m.predict(np.zeros((b, 784), np.float32))
        m.predict(x)
    assert m._plans.get(((1, 784),)) is hot


# ---------------------------------------------------------------------------------------
# ISA paths


@pytest.mark.skipif(DEFAULT_ISA == "scalar", reason="the default path is the scalar one here")
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_scalar_vs_default_isa(zoo, variant):
    x = zh.eval_inputs(256)[0]
    a = pyruntime.load(str(zoo.path(variant)), isa="scalar")
    b = pyruntime.load(str(zoo.path(variant)))
    assert a.isa == "scalar" and b.isa == DEFAULT_ISA
    for n in (1, 7, 256):
        if variant == "fp32":
            np.testing.assert_allclose(a.predict(x[:n]), b.predict(x[:n]), rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(a.predict(x[:n]), b.predict(x[:n]))
