"""Peer implementations measured beside pyruntime in the same pytest run.

- onnxruntime MatMulInteger: a one-node ONNX model (A uint8 input x B int8 initializer, so B is
  constant and onnxruntime may prepack it like our packed weights), run through
  InferenceSession.run with a prebuilt input feed and intra_op_num_threads = threads.
- torch fp32 linear: torch.nn.functional.linear(x, w) with torch.set_num_threads(threads).

Each builder returns (callable, close); call close() when done so that no peer thread pool
keeps spinning on this 2-core machine while the next benchmark runs.
"""
from __future__ import annotations

import gc
import time

import numpy as np


def ort_matmul_integer(a: np.ndarray, b: np.ndarray, threads: int):
    """onnxruntime session.run of one MatMulInteger node; returns (run, close)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    M, K = a.shape
    N = b.shape[1]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "qgemm_peer",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [M, K])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [M, N])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(b), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"A": np.ascontiguousarray(a)}

    def run():
        return sess.run(None, feed)[0]

    holder = [sess]

    def close():
        holder.clear()
        gc.collect()

    return run, close


def torch_linear_fp32(a: np.ndarray, b: np.ndarray, threads: int):
    """torch fp32 F.linear on the same values (A as float32, W = B^T as float32); (run, close)."""
    import torch
    import torch.nn.functional as F

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.from_numpy(a.astype(np.float32))
    w = torch.from_numpy(np.ascontiguousarray(b.T.astype(np.float32)))  # [N, K], nn.Linear layout

    def run():
        with torch.inference_mode():
            return F.linear(x, w)

    def close():
        torch.set_num_threads(prev)

    return run, close


def per_call_s(fn, warmup_s: float = 0.05) -> float:
    """Seconds per call of fn, from at least 3 calls filling ~warmup_s (they warm it up too)."""
    t0 = time.perf_counter()
    n = 0
    while n < 3 or time.perf_counter() - t0 < warmup_s:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def calls_per_round(fn, round_s: float) -> int:
    """Calls of fn that fill a round of about round_s (at least one), fn warmed up."""
    return max(1, int(np.ceil(round_s / per_call_s(fn))))


def paired_ratios(ours, peer, round_s: float, budget_s: float, min_pairs: int) -> list:
    """Rounds of about round_s of ours and of peer, alternating (the order flips every pair)
    for budget_s seconds and at least min_pairs pairs; returns each pair's ratio of per-call
    times, peer / ours. Both halves of a pair see the same neighbours on a shared machine,
    which sequential rows do not."""
    calls = (ours, peer)
    per_round = (calls_per_round(ours, round_s), calls_per_round(peer, round_s))
    ratios, deadline = [], time.perf_counter() + budget_s
    gc.collect()
    gc.disable()
    try:
        while time.perf_counter() < deadline or len(ratios) < min_pairs:
            t = [0.0, 0.0]
            for j in ((0, 1) if len(ratios) % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                for _ in range(per_round[j]):
                    calls[j]()
                t[j] = (time.perf_counter() - t0) / per_round[j]
            ratios.append(t[1] / t[0])
    finally:
        gc.enable()
    return ratios
