"""The intra-op pool: concurrent callers, spinning off, fork safety, GIL release."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

import pyruntime
from pyruntime import ops
from pyruntime import reference as ref

from pyrt_testlib import OUT_VARIANTS, S8, U8, assert_same, make_config, path_params, same_bits, usable_paths

CHILD_TIMEOUT_S = 60.0


def _problem(seed=0, M=150, N=200, K=300):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (M, K)).astype(np.uint8)
    b = rng.integers(-128, 128, (K, N)).astype(np.int8)
    bzp = rng.integers(-128, 128, N).astype(np.int8)
    return a, b, bzp


@pytest.mark.parametrize("isa", path_params())
def test_concurrent_callers_share_one_packed_weights(isa):
    """4 Python threads, one PackedWeights (packed lazily by whichever thread comes first),
    different inputs and epilogues per thread: every call gives the reference answer."""
    rng = np.random.default_rng(11)
    K, N = 257, 130
    b = rng.integers(-128, 128, (K, N)).astype(np.int8)
    bzp = rng.integers(-128, 128, N).astype(np.int8)
    packed = ops.pack_weights(b, bzp)  # not yet packed for `isa`: the threads race to pack it
    jobs = []
    for t in range(4):
        for j in range(6):
            M = (1, 5, 40, 97, 130, 2)[(t + j) % 6]
            a = rng.integers(0, 256, (M, K)).astype(np.uint8)
            a_zp = int(rng.integers(0, 256))
            bias = rng.integers(-5000, 5000, N).astype(np.int32)
            kind = (t + j) % 3
            if kind == 0:
                kw = dict(a_zero_point=a_zp, bias=bias)
            elif kind == 1:
                kw = dict(a_zero_point=a_zp, multiplier=1e-3, out_dtype=np.float32)
            else:
                kw = dict(a_zero_point=a_zp, bias=bias, multiplier=rng.uniform(1e-6, 1e-5, N).astype(np.float32),
                          out_zero_point=3, out_dtype=np.int8)
            exp = ref.qgemm(a, b, b_zero_point=bzp, **kw)
            jobs.append((t, a, kw, exp))

    barrier = threading.Barrier(4)
    errors: list = []

    def worker(tid):
        try:
            barrier.wait(timeout=30)
            for rep in range(3):
                for t, a, kw, exp in jobs:
                    if t != tid:
                        continue
                    got = ops.qgemm(a, packed, isa=isa, threads=None if rep == 0 else 2, **kw)
                    if not same_bits(got, exp):
                        errors.append(f"thread {tid} rep {rep} M={a.shape[0]} {kw.get('out_dtype', 'int32')}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {tid}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a qgemm call from a Python thread hung"
    assert not errors, errors


def test_gil_is_released_during_qgemm():
    """While one thread is inside a long qgemm, another Python thread must run.

    With a huge switch interval a thread that holds the GIL is never preempted, so the
    counter can only move during a call that released the GIL. A pure-Python loop of about
    the same length is the control: it holds the GIL, and the counter must stand still
    through it (that proves the method discriminates). No timing is asserted."""
    a, b, _ = _problem(1, M=600, N=600, K=900)
    packed = ops.pack_weights(b)
    ops.qgemm(a[:2], packed, threads=1, isa="scalar")  # pack now, outside the measurement
    counter = [0]
    stop = threading.Event()
    ready = threading.Event()

    def count():
        ready.set()
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0)  # releases the GIL so the main thread gets it back promptly

    def python_loop():
        x = 0
        for i in range(2_000_000):
            x += i
        return x

    old = sys.getswitchinterval()
    th = threading.Thread(target=count)
    th.start()
    during_qgemm, during_control = [], []
    try:
        assert ready.wait(10)
        sys.setswitchinterval(30.0)
        time.sleep(0.05)  # let waits begun under the old interval drain
        for _ in range(3):
            c0 = counter[0]
            python_loop()
            during_control.append(counter[0] - c0)
            c0 = counter[0]
            ops.qgemm(a, packed, threads=1, isa="scalar")
            during_qgemm.append(counter[0] - c0)
    finally:
        sys.setswitchinterval(old)
        stop.set()
        th.join(10)
    assert during_control == [0, 0, 0], f"control is broken: the counter moved while Python held the GIL {during_control}"
    assert any(d > 0 for d in during_qgemm), f"no Python bytecode ran during qgemm (GIL held?): {during_qgemm}"


@pytest.mark.parametrize("isa", path_params())
def test_spin_off_and_on(isa):
    a, b, bzp = _problem(2)
    exp = ref.qgemm(a, b, a_zero_point=9, b_zero_point=bzp)
    packed = ops.pack_weights(b, bzp)
    try:
        pyruntime.set_spin(False)
        assert pyruntime._native.spin_microseconds() == 0
        for threads in (2, 2, 1, 3, 2):
            assert_same(ops.qgemm(a, packed, a_zero_point=9, threads=threads, isa=isa), exp, f"spin off t={threads}")
        time.sleep(0.01)  # workers are asleep now: the next call must wake them
        assert_same(ops.qgemm(a, packed, a_zero_point=9, threads=2, isa=isa), exp, "after sleep")
        pyruntime.set_spin(50)
        assert pyruntime._native.spin_microseconds() == 50
        assert_same(ops.qgemm(a, packed, a_zero_point=9, threads=2, isa=isa), exp, "spin 50us")
    finally:
        pyruntime.set_spin(True)
    assert pyruntime._native.spin_microseconds() == 200
    assert_same(ops.qgemm(a, packed, a_zero_point=9, threads=2, isa=isa), exp, "spin back on")


@pytest.mark.parametrize("bad", [-1, "x", 1.5, None])
def test_set_spin_rejects_bad_values(bad):
    with pytest.raises(pyruntime.InputError, match="spin must be a bool or microseconds >= 0"):
        pyruntime.set_spin(bad)


def _wait_child(pid: int, timeout: float) -> int:
    """Exit status of a forked child; kills it and fails when it outlives `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child {pid} hung for {timeout}s running qgemm with threads=2 (pool not rebuilt after fork?)")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is not available on this platform")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads alive (our pool) warns on 3.12+
def test_fork_child_rebuilds_pool():
    a, b, bzp = _problem(3)
    packed = ops.pack_weights(b, bzp)
    exp = ref.qgemm(a, b, a_zero_point=7, b_zero_point=bzp)
    # The parent's pool exists and its workers are alive (and spinning) at fork time.
    for _ in range(3):
        assert_same(ops.qgemm(a, packed, a_zero_point=7, threads=2), exp, "parent before fork")
    for spin in (True, False):
        pyruntime.set_spin(spin)
        try:
            ops.qgemm(a, packed, a_zero_point=7, threads=2)
            pid = os.fork()
            if pid == 0:  # child: never return into pytest
                code = 3
                try:
                    ok = True
                    for isa in usable_paths():
                        got = ops.qgemm(a, packed, a_zero_point=7, threads=2, isa=isa)
                        ok &= same_bits(got, exp)
                    fresh = ops.pack_weights(b, bzp)
                    ok &= same_bits(ops.qgemm(a, fresh, a_zero_point=7, threads=2), exp)
                    code = 0 if ok else 1
                finally:
                    os._exit(code)
            assert _wait_child(pid, CHILD_TIMEOUT_S) == 0, "the forked child computed a wrong answer"
        finally:
            pyruntime.set_spin(True)
    # The parent's pool still works after the fork.
    assert_same(ops.qgemm(a, packed, a_zero_point=7, threads=2), exp, "parent after fork")


def _mp_child(q, a, b, bzp, exp):
    try:
        packed = ops.pack_weights(b, bzp)
        got = ops.qgemm(a, packed, a_zero_point=7, threads=2)
        q.put(("ok" if same_bits(got, exp) else "wrong", None))
    except Exception as e:  # noqa: BLE001
        q.put(("error", repr(e)))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no 'fork' start method on this platform")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_multiprocessing_fork_context():
    a, b, bzp = _problem(4)
    exp = ref.qgemm(a, b, a_zero_point=7, b_zero_point=bzp)
    assert_same(ops.qgemm(a, ops.pack_weights(b, bzp), a_zero_point=7, threads=2), exp, "parent")
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_mp_child, args=(q, a, b, bzp, exp)) for _ in range(2)]
    for p in procs:
        p.start()
    results = []
    try:
        for _ in procs:
            results.append(q.get(timeout=CHILD_TIMEOUT_S))
    except Exception:  # noqa: BLE001 - queue.Empty: a child hung or died
        pass
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()
    assert results == [("ok", None)] * len(procs), f"fork children: {results}, exit codes {[p.exitcode for p in procs]}"
    assert all(p.exitcode == 0 for p in procs)


def test_thread_counts_beyond_cores_and_pool_contention_give_same_bits():
    """More threads than cores, and calls while another thread holds the pool, run the same
    static partition: the same bits."""
    a, b, bzp = _problem(5, M=300, N=260, K=200)
    packed = ops.pack_weights(b, bzp)
    exp = ref.qgemm(a, b, a_zero_point=200, b_zero_point=bzp, multiplier=2e-6, out_zero_point=100, out_dtype=np.uint8)
    for threads in (1, 2, 3, 4, 7, 16, 64):
        got = ops.qgemm(a, packed, a_zero_point=200, multiplier=2e-6, out_zero_point=100, out_dtype=np.uint8,
                        threads=threads)
        assert_same(got, exp, f"threads={threads}")
