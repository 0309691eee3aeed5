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
from . import exits as exits_mod
from .errors import InputError, ModelError, UnsupportedError
from .onnx_import import graph as graph_mod
from .onnx_import import fuse_conv, fuse_qadd, fuse_qpool, lower_conv, lower_gemm, passes  # noqa: F401 (they register ops)
from .onnx_import.lower import DTYPE_CODE, LOWER, Lowering, plan_evaluated_nodes, plan_time_inputs, unsupported
from .ops import _isa_index, _threads

_PLAN_CACHE = 16

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

    def __init__(self, g: graph_mod.Graph, *, threads: int, isa: int, exits: bool = False, gates=None,
                 trusted_inputs: bool = False):
        self._g = g
        self._threads = threads
        # Early-exit segments pass activations to each other channels-last.
        self._segment = trusted_inputs
        self._in_nhwc: set[str] = set()
        self._out_nhwc: set[str] = set()
        self._isa = isa
        self._trusted = trusted_inputs  # an internal segment: its feeds come from the model itself
        self._gates = gates
        self.exits = exits_mod.Thresholds(gates) if gates else None
        self._segments = None
        # (input dtype, row shape) -> (native ExitRunner, score row shape, planned buckets)
        self._runners: dict = {}
        if gates and exits:
            self._segments = [(seg, Model(seg.graph, threads=threads, isa=isa, trusted_inputs=True))
                              for seg in exits_mod.split(g, gates)]
        self._exit_count = len(gates) + 1 if gates else 1
        self._counts = _native.ExitCounter(self._exit_count)  # rows per exit, the final head last
        self.inputs = [IOInfo(i.name, i.dtype, tuple(i.shape)) for i in g.inputs]
        self.outputs = [IOInfo(o.name, o.dtype, tuple(o.shape)) for o in g.outputs]
        first = self.inputs[0].shape if self.inputs else ()
        self._fixed_batch = first[0] if first and isinstance(first[0], int) else None
        self._input_names = [i.name for i in self.inputs]
        self._output_names = [o.name for o in self.outputs]
        self._output_pos = {n: i for i, n in enumerate(self._output_names)}
        self._plans: OrderedDict = OrderedDict()
        # Inputs whose values decide shapes (node tests feed them at run time): planned per
        # distinct value, the value joining the plan's key.
        value_names = set(plan_time_inputs(g))
        self._value_inputs = [i for i, name in enumerate(self._input_names) if name in value_names]
        self._one_input = len(self._input_names) == 1 and not self._value_inputs
        # (shape, program) of the latest single-input call, one tuple so that a reader on
        # another thread never pairs one call's shape with another's program.
        self._last: tuple = (None, None)
        self._lock = threading.Lock()
        self._last_arena = 0

    @property
    def isa(self) -> str:
        return _native.isa_name(self._isa)

    # -- running
    def _check_feed(self, feed) -> list[np.ndarray]:
        if self._trusted:
            return [feed[n] for n in self._input_names]
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
        logical = [(a.shape[0], a.shape[-1], *a.shape[1:-1]) if name in self._in_nhwc else a.shape
                   for name, a in zip(self._input_names, arrays)]
        low = Lowering(self._g, logical, {self._input_names[i]: arrays[i] for i in self._value_inputs})
        for name, a, shape in zip(self._input_names, arrays, logical):
            low.vals[name] = (a.dtype, tuple(shape))
        low.nhwc.update(self._in_nhwc)
        low.keep_nhwc_outputs = self._segment
        low.run()
        prog = low.build(self._output_names)
        if self._segment:
            self._out_nhwc = {o for o in self._output_names if o in low.nhwc}
        with self._lock:  # bounded: the oldest plan goes first
            self._plans[key] = prog
            self._last_arena = prog.arena_bytes
            while len(self._plans) > _PLAN_CACHE:
                self._plans.popitem(last=False)
        return prog

    def run(self, output_names, feed) -> list[np.ndarray]:
        """onnxruntime-compatible: the named outputs (all when None), in that order."""
        # Fast path: a single input of the same shape as the latest call. The native side
        # re-checks dtype and exact shape on every call, so only a new shape needs the
        # full checks.
        try:
            x = feed[self._input_names[0]]
            shape, prog = self._last
            if x.shape != shape or len(feed) != 1:
                prog = None
        except (TypeError, KeyError, AttributeError, IndexError):
            prog = None
        if prog is not None:
            outs = prog.run([x], self._threads, self._isa)
        else:
            arrays, prog = self._planned(feed)
            outs = prog.run(arrays, self._threads, self._isa)
        if not output_names:  # None or [] (onnxruntime's convention): every output
            return outs
        try:
            return [outs[self._output_pos[n]] for n in output_names]
        except (KeyError, TypeError):
            raise InputError(f"unknown output name(s) in {output_names!r}; this model's outputs are "
                             f"{self._output_names}") from None

    def _planned(self, feed) -> tuple[list, object]:
        """The feed's arrays and the program planned for their shapes (planned now if new)."""
        try:
            if self._one_input:
                x = feed[self._input_names[0]]
                arrays = [x]
                key = (x.shape,)
            else:
                arrays = [feed[n] for n in self._input_names]
                key = self._key(arrays)
            prog = self._plans.get(key)
            if prog is not None:
                self._plans.move_to_end(key)  # least recently used goes first
        except (TypeError, KeyError, AttributeError):  # KeyError: evicted by another thread meanwhile
            prog = None
        if prog is None or len(feed) != len(arrays):
            arrays = self._check_feed(feed)
            prog = self._program(self._key(arrays), arrays)
        if self._one_input:
            self._last = (arrays[0].shape, prog)
        return arrays, prog

    def predict(self, x, *, return_exit: bool = False):
        """Output 0 for the model's single input. On an early-exit model loaded with
        exits=True, each sample is answered by the first gate whose rule fires (the rest of
        the network is not computed for it); return_exit=True adds the exit index per
        sample (gate k -> k, the final head -> number of gates) as int64."""
        # Fast path for a plain model (or exits off): the same shape as the latest call.
        if (self._segments is None and not return_exit and x.__class__ is np.ndarray
                and x.shape == (last := self._last)[0]):
            return last[1].run_counted([x], self._threads, self._isa, self._counts)[0]
        # Fast path for an early-exit model: an input whose dtype and row shape were checked
        # and planned before (the runner re-checks nothing, so a fixed batch size is checked
        # here). Every other case takes _predict_checked.
        n = 1
        try:
            entry = self._runners.get((x.dtype, x.shape[1:]))  # dtype objects hash faster than .str
            n = x.shape[0]
        except (AttributeError, IndexError):
            entry = None
        if entry is not None and 0 < n < entry[3] and (self._fixed_batch is None or self._fixed_batch == n):
            out, exit_index = entry[0].run(x, self.exits.snapshot(), self._threads, self._isa, self._counts)
            if len(entry[1]) != 1:
                out = out.reshape((n,) + entry[1])
        else:
            out, exit_index = self._predict_checked(x)
            if exit_index is None:  # no exits (or exits=False): the final head answers every row
                n = out.shape[0] if out.ndim else 1
                self._counts.add(self._exit_count - 1, n)
                return (out, np.full(n, self._exit_count - 1, np.int64)) if return_exit else out
        # The exit runner counted its rows' exits.
        return (out, exit_index) if return_exit else out

    def _predict_checked(self, x):
        if len(self._input_names) != 1:
            raise InputError(f"predict needs a single-input model; this one has {self._input_names}: use run()")
        if self._segments is None:
            return self.run(None, {self._input_names[0]: x})[0], None
        if not isinstance(x, np.ndarray):
            raise InputError(f"input '{self._input_names[0]}' must be a numpy array, got {type(x).__name__}")
        self._check_feed({self._input_names[0]: x})
        n = x.shape[0] if x.ndim else 1
        if n == 0:
            return self.run(None, {self._input_names[0]: x})[0], np.zeros(0, np.int64)
        runner, row_shape = self._exit_runner(x, n)[:2]
        out, exit_index = runner.run(x, self.exits.snapshot(), self._threads, self._isa, self._counts)
        return out.reshape((n,) + row_shape), exit_index

    def _exit_runner(self, x: np.ndarray, n: int):
        """The native exit plan for x's row shape, with plans for every power-of-two chunk
        of up to n rows (planned on first need; later calls reuse them)."""
        key = (x.dtype, x.shape[1:])
        entry = self._runners.get(key)
        need = n.bit_length() - 1
        if entry is None or entry[0].max_bucket < need:
            with self._lock:  # another thread may have planned them meanwhile
                entry = self._runners.get(key)
                buckets = list(entry[2]) if entry else []
                while len(buckets) <= need:
                    buckets.append(self._plan_exit_bucket(x.dtype, x.shape[1:], len(buckets)))
                runner, row_shape = self._build_exit_runner(buckets)
                entry = (runner, row_shape, buckets, 2 << runner.max_bucket)  # [3]: batches below it are planned
                self._runners[key] = entry
        return entry

    def _plan_exit_bucket(self, dtype, row_shape: tuple, b: int):
        """Every segment planned for 2^b rows: (programs, buffer layout of each value handed on)."""
        rows = 1 << b
        layouts = {self._input_names[0]: (np.dtype(dtype), (rows,) + tuple(row_shape))}
        nhwc: set[str] = set()
        progs = []
        for _, model in self._segments:
            if not model._plans:  # first plan: take over the layouts the producers chose
                model._in_nhwc = {name for name in model._input_names if name in nhwc}
            arrays = [np.empty(layouts[name][1], layouts[name][0]) for name in model._input_names]
            prog = model._program(model._key(arrays), arrays)
            nhwc |= model._out_nhwc
            for name, (dt, shape) in zip(model._output_names, prog.output_layouts()):
                layouts[name] = (np.dtype(dt), tuple(shape))
            progs.append(prog)
        return progs, layouts

    def _build_exit_runner(self, buckets):
        layouts = buckets[0][1]  # one-row buffers
        slots = {self._input_names[0]: 0}
        for _, model in self._segments:
            for name in model._output_names[1:]:
                slots.setdefault(name, len(slots))
        last_use = [0] * len(slots)
        segments = []
        for k, (seg, model) in enumerate(self._segments):
            for name in model._input_names:
                last_use[slots[name]] = k
            rule = -1 if seg.gate is None else exits_mod.RULES.index(self._gates[k].rule)
            segments.append(([progs[k] for progs, _ in buckets], [slots[name] for name in model._input_names],
                             [slots[name] for name in model._output_names[1:]], rule))
        row_bytes = [0] * len(slots)
        for name, s in slots.items():
            dt, shape = layouts[name]
            row_bytes[s] = int(np.prod(shape[1:], dtype=np.int64)) * dt.itemsize
        score_dt, score_shape = layouts[self._segments[-1][1]._output_names[0]]
        row_shape = tuple(score_shape[1:])
        runner = _native.ExitRunner(segments, row_bytes, last_use, int(np.prod(row_shape, dtype=np.int64)),
                                    DTYPE_CODE[score_dt])
        return runner, row_shape

    def exit_stats(self) -> dict:
        """Samples answered by each exit since load or the last reset_exit_stats()."""
        counts = self._counts.counts()
        names = [g.output for g in (self._gates or [])] + [self._output_names[0]]
        return {"counts": dict(zip(names, counts)), "total": sum(counts)}

    def reset_exit_stats(self) -> None:
        self._counts.reset()

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
    g = fuse_conv.fuse_qconv_max_pool(g)
    g = passes.remove_dead(fuse_qpool.fuse_qdq_avg_pool(fuse_qadd.fuse_qdq_add(g)))
    g = fuse_qadd.fuse_qgemm_row_add(g)
    planned = plan_evaluated_nodes(g)  # computed from constants and shapes by every plan
    for n in g.nodes:
        if (n.domain, n.op) not in LOWER and id(n) not in planned:
            raise unsupported(n)
        if n.domain == "pyrt" and n.op == "QGemm":
            w = n.attrs["w"]
            n.attrs["native"] = lower_gemm.pack_qgemm_weights(w, n.attrs["w_zp"])
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
            w, zp = n.attrs["w"], n.attrs["w_zp"]
            group = int(n.attrs.get("group", 1))
            mg = w.shape[0] // group
            n.attrs["native"] = [  # one packed [K, M/group] matrix per group
                _native.PackedWeights(np.ascontiguousarray(w[gi * mg:(gi + 1) * mg].reshape(mg, -1).T),
                                      np.ascontiguousarray(zp if zp.size == 1 else zp[gi * mg:(gi + 1) * mg]))
                for gi in range(group)]
        elif n.domain == "pyrt" and n.op == "FGemm":
            n.attrs["native"] = _native.PackedSgemm(n.attrs["w"])
    if spin is not None:
        from . import set_spin
        set_spin(spin)
    gates = exits_mod.parse({p.key: p.value for p in proto.metadata_props}, g)
    threads = min(_threads(threads), _native.max_threads())  # more would only queue
    return Model(g, threads=threads, isa=_isa_index(isa), exits=exits, gates=gates)
