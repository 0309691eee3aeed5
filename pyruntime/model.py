"""pyruntime.load(...) -> Model: the onnxruntime-like front door.

Loading validates and fuses the graph once and packs every weight matrix; a Program per
distinct set of input shapes is planned on first use and kept in a small LRU cache.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import _native
from .errors import InputError, ModelError, UnsupportedError
from .onnx_import import graph as graph_mod
from .onnx_import import fuse_conv, fuse_qadd, lower_conv, passes  # noqa: F401 (lower_conv registers ops)
from .onnx_import.lower import LOWER, Lowering, unsupported
from .ops import _isa_index, _threads

_PLAN_CACHE = 16
# Inputs whose values decide shapes (node tests feed them at run time): a model reading a
# graph input here is planned per distinct value, the value joining the plan's key.
_SHAPE_ARGS = {("Reshape", 1), ("Squeeze", 1), ("Unsqueeze", 1), ("ReduceMean", 1), ("Expand", 1), ("Tile", 1)}


@dataclass(frozen=True)
class IOInfo:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, or strings for symbolic dimensions


def _load_proto(model, allow_external_data: bool, max_tensor_elements: int, max_model_bytes: int):
    from .onnx_import.validate import load_model_proto

    return load_model_proto(model, allow_external_data=allow_external_data,
                            max_tensor_elements=max_tensor_elements, max_model_bytes=max_model_bytes)


class Model:
    """A loaded model. Thread-safe: run/predict may be called from many threads at once."""

    def __init__(self, g: graph_mod.Graph, *, threads: int, isa: int, exits: bool):
        self._g = g
        self._threads = threads
        self._isa = isa
        self._exits = exits
        self.inputs = [IOInfo(i.name, i.dtype, tuple(i.shape)) for i in g.inputs]
        self.outputs = [IOInfo(o.name, o.dtype, tuple(o.shape)) for o in g.outputs]
        self._input_names = [i.name for i in self.inputs]
        self._output_names = [o.name for o in self.outputs]
        self._output_pos = {n: i for i, n in enumerate(self._output_names)}
        self._plans: OrderedDict = OrderedDict()
        graph_inputs = set(self._input_names)
        value_names = {n.inputs[i] for n in g.nodes if n.domain == "" for (op, i) in _SHAPE_ARGS
                       if n.op == op and len(n.inputs) > i and n.inputs[i] in graph_inputs}
        self._value_inputs = [i for i, name in enumerate(self._input_names) if name in value_names]
        self._lock = threading.Lock()
        self._last_arena = 0

    @property
    def isa(self) -> str:
        return _native.isa_name(self._isa)

    # -- running
    def _check_feed(self, feed) -> list[np.ndarray]:
        if not isinstance(feed, dict):
            raise InputError(f"feed must be a dict of input name -> numpy array, got {type(feed).__name__}")
        unknown = [k for k in feed if k not in self._input_names]
        if unknown:
            raise InputError(f"unknown input name(s) {unknown}; this model's inputs are {self._input_names}")
        arrays = []
        for info in self.inputs:
            if info.name not in feed:
                raise InputError(f"missing input '{info.name}' (dtype {info.dtype}, shape {info.shape})")
            x = feed[info.name]
            if not isinstance(x, np.ndarray):
                raise InputError(f"input '{info.name}' must be a numpy array, got {type(x).__name__}")
            if x.dtype != info.dtype:
                raise InputError(f"input '{info.name}' has dtype {x.dtype}, expected {info.dtype} "
                                 f"(no silent casts: convert it with .astype(np.{info.dtype}))")
            if info.shape and (x.ndim != len(info.shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(info.shape, x.shape))):
                raise InputError(f"input '{info.name}' has shape {x.shape}, expected {info.shape}")
            arrays.append(x)
        return arrays

    def _key(self, arrays) -> tuple:
        shapes = tuple([a.shape for a in arrays])
        if not self._value_inputs:
            return shapes
        return shapes + tuple((arrays[i].dtype.str, arrays[i].tobytes()) for i in self._value_inputs)

    def _program(self, key: tuple, arrays):
        prog = self._plans.get(key)
        if prog is not None:
            return prog
        low = Lowering(self._g, [a.shape for a in arrays])
        for i in self._value_inputs:
            low.consts[self._input_names[i]] = np.array(arrays[i])
        low.run()
        prog = low.build(self._output_names)
        with self._lock:  # bounded: the oldest plan goes first
            self._plans[key] = prog
            self._last_arena = prog.arena_bytes
            while len(self._plans) > _PLAN_CACHE:
                self._plans.popitem(last=False)
        return prog

    def run(self, output_names, feed) -> list[np.ndarray]:
        """onnxruntime-compatible: the named outputs (all when None), in that order."""
        # Fast path: a feed whose shapes were planned before. The native side re-checks
        # dtype and exact shape on every call, so only a first sight needs the full checks.
        try:
            arrays = [feed[n] for n in self._input_names]
            prog = self._plans.get(self._key(arrays))
        except (TypeError, KeyError, AttributeError):
            prog = None
        if prog is None or len(feed) != len(arrays):
            arrays = self._check_feed(feed)
            prog = self._program(self._key(arrays), arrays)
        outs = prog.run(arrays, self._threads, self._isa)
        if output_names is None:
            return outs
        try:
            return [outs[self._output_pos[n]] for n in output_names]
        except (KeyError, TypeError):
            raise InputError(f"unknown output name(s) in {output_names!r}; this model's outputs are "
                             f"{self._output_names}") from None

    def predict(self, x) -> np.ndarray:
        """Output 0 for the model's single input."""
        if len(self._input_names) != 1:
            raise InputError(f"predict needs a single-input model; this one has {self._input_names}: use run()")
        return self.run(None, {self._input_names[0]: x})[0]

    def summary(self) -> str:
        """Per node: the kernel chosen, dtypes and fusions; plus the arena of the last plan."""
        lines = [f"model on {self.isa}, {self._threads} thread(s); arena {self._last_arena} bytes "
                 f"for the last planned input shapes"]
        for n in self._g.nodes:
            kernel = {"QGemm": "qgemm int8 (%s out)" % n.attrs.get("out_dtype") if n.domain == "pyrt" else None,
                      "FGemm": "sgemm fp32" if n.domain == "pyrt" else None}.get(n.op) or n.op
            fused = f" fused[{' + '.join(n.fusions)}]" if n.fusions else ""
            lines.append(f"  {n.name}: {kernel}{fused}")
        return "\n".join(lines)


def load(model, *, threads=None, isa=None, exits=True, spin=None, allow_external_data=False,
         max_tensor_elements=1 << 28, max_model_bytes=1 << 31) -> Model:
    """Loads an ONNX model (path, bytes or onnx.ModelProto): validation, fusion and weight
    packing happen here, so a model problem fails now rather than at the first call."""
    proto, _ = _load_proto(model, allow_external_data, max_tensor_elements, max_model_bytes)
    g = graph_mod.from_model(proto)
    g = passes.run_all(g)
    g = fuse_conv.fuse_float_conv(fuse_conv.fuse_qdq_conv(fuse_conv.fuse_qoperator_conv(g)))
    g = passes.remove_dead(fuse_qadd.fuse_qdq_add(g))
    for n in g.nodes:
        if (n.domain, n.op) not in LOWER:
            raise unsupported(n)
        if n.domain == "pyrt" and n.op == "QGemm":
            w = n.attrs["w"]
            zp = n.attrs["w_zp"].astype(np.int32) if n.attrs["w_zp"] is not None else np.zeros(1, np.int32)
            n.attrs["native"] = _native.PackedWeights(np.ascontiguousarray(w), np.ascontiguousarray(zp))
            # DESIGN.md's bound with the widest activation deviation (255): refuse now what
            # could wrap int32 at run time.
            bias = n.attrs["bias"]
            worst = w.shape[0] * 255 * n.attrs["native"].max_abs_weight + (
                int(np.abs(bias.astype(np.int64)).max()) if bias is not None and bias.size else 0)
            if worst > 2**31 - 1:
                raise UnsupportedError(f"{n.label()}: K={w.shape[0]} with weights up to "
                                       f"{n.attrs['native'].max_abs_weight} could reach |acc + bias| = {worst} "
                                       "> 2^31-1; split the layer or narrow its weights")
        elif n.domain == "pyrt" and n.op == "QConv":
            w = n.attrs["w"]
            kxm = np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
            n.attrs["native"] = _native.PackedWeights(kxm, np.ascontiguousarray(n.attrs["w_zp"]))
        elif n.domain == "pyrt" and n.op == "FGemm":
            n.attrs["native"] = _native.PackedSgemm(n.attrs["w"])
    if spin is not None:
        from . import set_spin
        set_spin(spin)
    return Model(g, threads=_threads(threads), isa=_isa_index(isa), exits=exits)
