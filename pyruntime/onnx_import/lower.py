"""Lowers the fused graph, for concrete input shapes, to a native Program.

Values derived only from constants and shapes (Shape -> Gather -> Concat -> Reshape)
are computed here, at plan time; every other node becomes one native step. Buffers get
arena offsets from their lifetimes, so a call allocates nothing but its outputs.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .. import _native
from ..errors import InputError, ModelError, UnsupportedError
from .evaluate import evaluate
from .graph import Graph, Node

OP = dict(copy=0, binary=1, unary=2, softmax=3, reduce_mean=4, transpose=5, concat=6, gather=7, sgemm=8,
          qgemm=9, quantize=10, dequantize=11, dynq=12, matmul_f32=13, matmul_int=14, qadd=15, batchnorm=16)
DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int32): 3,
              np.dtype(np.int64): 4, np.dtype(np.bool_): 5}
OUT_KIND = {np.dtype(np.int32): 0, np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3}
_HOME_ARENA, _HOME_CONST, _HOME_INPUT, _HOME_OUTPUT = 0, 1, 2, 3
_ALIGN = 64


# Inputs whose values decide shapes (or whether the node is supported at all), by position:
# they must be known when a plan is made. Where a graph input reaches one of these slots,
# plans are made per value of that input too (plan_time_inputs, Model).
PLAN_TIME_SLOTS = {
    ("", "Reshape"): (1,),
    ("", "Squeeze"): (1,),
    ("", "Unsqueeze"): (1,),
    ("", "ReduceMean"): (1,),
    ("", "Dropout"): (2,),  # training_mode
}
# Largest graph input that may be read at plan time (elements): axes and shapes are short.
PLAN_TIME_MAX_ELEMENTS = 64


def plan_time_inputs(g: Graph) -> list[str]:
    """Graph inputs whose values a plan depends on: they reach a PLAN_TIME_SLOTS input,
    directly or through nodes evaluated at plan time (Shape reads only its input's shape).
    A model with such inputs is planned per (input shapes, values of these inputs)."""
    prod = g.producers()
    needed, stack = set(), []
    for n in g.nodes:
        for i in PLAN_TIME_SLOTS.get((n.domain, n.op), ()):
            if i < len(n.inputs) and n.inputs[i]:
                stack.append(n.inputs[i])
    while stack:
        name = stack.pop()
        if name in needed or name in g.consts:
            continue
        needed.add(name)
        p = prod.get(name)
        if p is not None and not (p.domain == "" and p.op == "Shape"):
            stack.extend(i for i in p.inputs if i)
    return [i.name for i in g.inputs if i.name in needed]


def plan_evaluated_nodes(g: Graph) -> set[int]:
    """ids of the nodes every plan computes itself (onnx's reference evaluator, at plan time)
    rather than running natively: default-domain nodes whose inputs are all constants, Shape
    outputs, plan_time_inputs or outputs of such nodes (Shape -> Gather -> Concat -> Reshape
    chains). Their op need not be one the executor runs."""
    known = set(g.consts) | set(plan_time_inputs(g))
    done: set[int] = set()
    for n in g.nodes:
        ins = [i for i in n.inputs if i]
        if n.domain != "":
            continue
        if n.op == "Shape" or (n.op not in _RUNTIME_ONLY and ins and all(i in known for i in ins)):
            known.update(o for o in n.outputs if o)
            if n.op != "Shape":
                done.add(id(n))
    return done


class Lowering:
    def __init__(self, g: Graph, input_shapes: list[tuple], input_values: dict | None = None):
        """input_values: the values of plan_time_inputs(g) for this plan (their arrays are
        still fed at run time, but the plan reads them as constants)."""
        self.g = g
        self.consts: dict[str, np.ndarray] = dict(g.consts)
        self.vals: dict[str, tuple[np.dtype, tuple]] = {}
        self.steps: list[dict] = []
        # Values stored channels-last (NHWC) while their logical shape stays NCHW: the
        # layout-aware lowerings (LAYOUT_AWARE) keep activations there between convs.
        self.nhwc: set[str] = set()
        # Flatten outputs that keep an NHWC value's byte order: name -> (C, H, W). Only
        # GEMMs with constant weights read them, their weight rows permuted to match.
        self.flat_nhwc: dict[str, tuple[int, int, int]] = {}
        self._nchw_copies: dict[str, str] = {}
        # Outputs handed to another plan of the same model (early-exit segments) may stay
        # NHWC: the next plan declares them NHWC inputs, and nobody transposes twice.
        self.keep_nhwc_outputs = False
        for info, shape in zip(g.inputs, input_shapes):
            self.vals[info.name] = (info.dtype, tuple(shape))
        for name, v in (input_values or {}).items():
            v = np.array(v)  # a private copy: the plan must not change with the caller's array
            if v.size > PLAN_TIME_MAX_ELEMENTS:
                raise UnsupportedError(f"input '{name}' sets shapes or axes, so its values are read when the "
                                       f"model is planned; it has {v.size} elements, more than "
                                       f"{PLAN_TIME_MAX_ELEMENTS}: make it a constant (an initializer)")
            self.consts[name] = v

    # -- queries used by the op lowerings
    def is_const(self, name: str) -> bool:
        return bool(name) and name in self.consts

    def dtype(self, name: str) -> np.dtype:
        return self.consts[name].dtype if name in self.consts else self.vals[name][0]

    def shape(self, name: str) -> tuple:
        return tuple(self.consts[name].shape) if name in self.consts else self.vals[name][1]

    def define(self, name: str, dtype, shape) -> None:
        if any(d < 0 for d in shape):
            raise ModelError(f"value '{name}' would get a negative dimension {tuple(shape)}")
        self.vals[name] = (np.dtype(dtype), tuple(int(d) for d in shape))

    def emit(self, op: str, inputs, outputs, ints=(), floats=(), qweights=None, fweights=None, i32=(), f32=(),
             qgroups=()):
        self.steps.append(dict(op=OP[op], inputs=list(inputs), outputs=list(outputs), ints=[int(i) for i in ints],
                               floats=[float(f) for f in floats], qweights=qweights, fweights=fweights,
                               qgroups=list(qgroups),
                               i32=list(np.asarray(i32, np.int32).reshape(-1)) if len(i32) else [],
                               f32=list(np.asarray(f32, np.float32).reshape(-1)) if len(f32) else []))

    def nchw(self, name: str) -> str:
        """`name` in NCHW memory order: itself, or (once) a transposed copy of an NHWC value."""
        if name not in self.nhwc:
            return name
        if name not in self._nchw_copies:
            n_, c_, h_, w_ = self.shape(name)
            copy = f"{name}__nchw"
            self.define(copy, self.dtype(name), (n_, c_, h_, w_))
            self.emit("transpose", [name], [copy], [4, n_, h_, w_, c_, 0, 3, 1, 2])
            self._nchw_copies[name] = copy
        return self._nchw_copies[name]

    def with_nchw_inputs(self, n: Node) -> Node:
        if not any(i in self.nhwc for i in n.inputs):
            return n
        return replace(n, inputs=[self.nchw(i) if i else i for i in n.inputs])

    # -- driving
    def run(self) -> None:
        for n in self.g.nodes:
            ins = [i for i in n.inputs if i]
            if n.domain == "" and n.op not in _RUNTIME_ONLY and ins and all(self.is_const(i) for i in ins):
                values = evaluate(n, [self.consts.get(i) if i else None for i in n.inputs], self.g.opsets)
                for name, v in zip([o for o in n.outputs if o], values):
                    self.consts[name] = v
                continue
            fn = LOWER.get((n.domain, n.op))
            if fn is None:
                raise unsupported(n)
            if fn is _fused_only:
                raise UnsupportedError(f"{n.label()} runs only with constant weights and quantization "
                                       "parameters (they are runtime tensors here)")
            try:
                fn(self, n if (n.domain, n.op) in LAYOUT_AWARE else self.with_nchw_inputs(n))
            except (InputError, UnsupportedError, ModelError):
                raise
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise ModelError(f"{n.label()} cannot run on these shapes: {exc}") from exc

    def build(self, output_names: list[str]):
        prog = _native.Program()
        ids: dict[str, int] = {}
        g_inputs = [i.name for i in self.g.inputs]
        # Outputs leave in NCHW order; outputs that are constants or graph inputs need a
        # step that writes them.
        out_ids = []
        for pos, name in enumerate(o if self.keep_nhwc_outputs else self.nchw(o) for o in output_names):
            src = name
            if name in self.consts or name in g_inputs or name in output_names[:pos]:
                alias = f"{name}__out{pos}"
                self.vals[alias] = (self.dtype(name), self.shape(name))
                self.emit("copy", [name], [alias])
                src = alias
            out_ids.append(src)
        homes: dict[str, tuple[int, int]] = {}
        for pos, name in enumerate(g_inputs):
            homes[name] = (_HOME_INPUT, pos)
        for pos, name in enumerate(out_ids):
            homes[name] = (_HOME_OUTPUT, pos)
        arena = _plan_arena(self, homes)
        arena_bytes = max((off + size for off, size in arena.values()), default=0)

        def vid(name: str) -> int:
            if not name:
                return -1
            if name in ids:
                return ids[name]
            if name in homes:
                home, index = homes[name]
            elif name in self.consts:
                home, index = _HOME_CONST, prog.add_constant(np.ascontiguousarray(self.consts[name]))
            else:
                home, index = _HOME_ARENA, arena[name][0]
            dt, shape = self.dtype(name), self.shape(name)
            if name in self.nhwc:  # stored channels-last: the buffer's shape is N, H, W, C
                shape = (shape[0], *shape[2:], shape[1])
            if dt not in DTYPE_CODE:
                raise UnsupportedError(f"value '{name}' has dtype {dt}; supported: float32, uint8, int8, int32, "
                                       "int64, bool")
            ids[name] = prog.add_value(DTYPE_CODE[dt], list(shape), home, int(index))
            return ids[name]

        in_ids = [vid(n) for n in g_inputs]
        o_ids = [vid(n) for n in out_ids]
        for s in self.steps:
            prog.add_step(s["op"], [vid(i) for i in s["inputs"]], [vid(o) for o in s["outputs"]], s["ints"],
                          s["floats"], s["qweights"], s["fweights"], s["i32"], s["f32"], s["qgroups"])
        prog.set_arena_bytes(int(arena_bytes))
        prog.set_io(in_ids, o_ids, g_inputs)
        return prog


def _plan_arena(low: Lowering, homes) -> dict[str, tuple[int, int]]:
    """First-fit offsets from value lifetimes: a buffer is reused once its last reader ran."""
    first, last = {}, {}
    for i, s in enumerate(low.steps):
        for name in s["inputs"]:
            if name:
                last[name] = i
        for name in s["outputs"]:
            first.setdefault(name, i)
            last[name] = max(last.get(name, i), i)
    live: list[tuple[int, int, int]] = []  # (offset, size, last step)
    placed = {}
    for name, start in sorted(first.items(), key=lambda kv: kv[1]):
        if name in homes or name in low.consts:
            continue
        dt, shape = low.vals[name]
        size = max(_ALIGN, -(-math.prod(shape) * dt.itemsize // _ALIGN) * _ALIGN)
        live = [b for b in live if b[2] >= start]
        offset = 0
        for off, sz, _ in sorted(live):
            if offset + size <= off:
                break
            offset = max(offset, off + sz)
        live.append((offset, size, last[name]))
        placed[name] = (offset, size)
    return placed


def unsupported(n: Node) -> UnsupportedError:
    names = ", ".join(sorted(op for (_, op) in LOWER if not op.startswith("_")))
    return UnsupportedError(f"{n.label()} is not supported. Supported ops: {names}; "
                            "re-export the model with these ops")


def _axis(axis: int, rank: int, n: Node) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ModelError(f"{n.label()}: axis {axis} is outside a rank-{rank} input")
    return axis % rank if rank else 0


def _prod(xs) -> int:
    return int(math.prod(xs))


# ---------------------------------------------------------------------------------------
# element-wise


# The executor's index loops hold at most this many dimensions (after coalescing).
_MAX_RANK = 8


def _broadcast_strides(shape, out_shape):
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(0 if d == 1 else acc)
        acc *= d
    return strides[::-1]


def _broadcast_ints(n: Node, shapes, out) -> list[int]:
    """rank R, out_shape[R], then strides[R] per operand, with size-1 dimensions dropped and
    neighbours that every operand walks contiguously merged (fewer, longer inner loops)."""
    strides = [_broadcast_strides(s, out) for s in shapes]
    dims: list[tuple[int, list[int]]] = []
    for i, d in enumerate(out):
        if d == 1:
            continue
        st = [s[i] for s in strides]
        if dims and all(ps == x * d for ps, x in zip(dims[-1][1], st)):
            dims[-1] = (dims[-1][0] * d, st)
        else:
            dims.append((d, st))
    if len(dims) > _MAX_RANK:
        raise UnsupportedError(f"{n.label()}: broadcasting {[tuple(s) for s in shapes]} needs {len(dims)} "
                               f"dimensions; at most {_MAX_RANK} are supported")
    ints = [len(dims), *(d for d, _ in dims)]
    for k in range(len(shapes)):
        ints += [st[k] for _, st in dims]
    return ints


_BINARY_DTYPES = (np.float32, np.uint8, np.int8, np.int32, np.int64)


def lower_binary(low: Lowering, n: Node) -> None:
    a, b = n.inputs[:2]
    if low.dtype(a) != low.dtype(b):
        raise ModelError(f"{n.label()}: operands have dtypes {low.dtype(a)} and {low.dtype(b)}; they must match")
    if low.dtype(a) not in _BINARY_DTYPES:
        raise UnsupportedError(f"{n.label()} on {low.dtype(a)} is not supported; float32, uint8, int8, int32 "
                               "and int64 are")
    out = tuple(np.broadcast_shapes(low.shape(a), low.shape(b)))
    low.define(n.outputs[0], low.dtype(a), out)
    op = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3}[n.op]
    low.emit("binary", [a, b], [n.outputs[0]], [op, *_broadcast_ints(n, [low.shape(a), low.shape(b)], out)])


def _emit_transpose(low: Lowering, n: Node, x: str, y: str, shape, perm) -> None:
    """Defines y = transpose(x, perm) and emits it with size-1 axes dropped and axes that stay
    neighbours merged."""
    low.define(y, low.dtype(x), [shape[p] for p in perm])
    keep = [a for a in range(len(shape)) if shape[a] != 1]
    index = {a: i for i, a in enumerate(keep)}
    groups: list[list[int]] = []  # runs of input axes that stay together, in output order
    for p in (index[p] for p in perm if p in index):
        if groups and groups[-1][-1] + 1 == p:
            groups[-1].append(p)
        else:
            groups.append([p])
    order = sorted(range(len(groups)), key=lambda g: groups[g][0])
    in_shape = [_prod(shape[keep[a]] for a in groups[g]) for g in order]
    rank_of = {g: i for i, g in enumerate(order)}
    new_perm = [rank_of[g] for g in range(len(groups))]
    if len(in_shape) > _MAX_RANK:
        raise UnsupportedError(f"{n.label()}: transposing {tuple(shape)} by {list(perm)} needs {len(in_shape)} "
                               f"dimensions; at most {_MAX_RANK} are supported")
    low.emit("transpose", [x], [y], [len(in_shape), *in_shape, *new_perm])


def _float_input(low, n):
    if low.dtype(n.inputs[0]) != np.float32:
        raise UnsupportedError(f"{n.label()} on {low.dtype(n.inputs[0])} is not supported; only float32")


def lower_unary(low: Lowering, n: Node) -> None:
    x = n.inputs[0]
    dt = low.dtype(x)
    if n.op in ("Relu", "Clip") and dt in (np.uint8, np.int8):
        return _lower_int8_clip(low, n)
    _float_input(low, n)
    low.define(n.outputs[0], np.float32, low.shape(x))
    op = {"Relu": 0, "Clip": 1, "Sigmoid": 2, "Tanh": 3}[n.op]
    ins, floats = [x], [-np.inf, np.inf]
    if n.op == "Clip":
        if n.opset < 11:
            floats = [n.attrs.get("min", -3.4028234663852886e38), n.attrs.get("max", 3.4028234663852886e38)]
        else:
            ins = [x, n.inputs[1] if len(n.inputs) > 1 else "", n.inputs[2] if len(n.inputs) > 2 else ""]
            for k in (1, 2):  # constant bounds go in the step; runtime ones stay inputs
                if ins[k] and low.is_const(ins[k]):
                    floats[k - 1] = float(_const_scalar(low, ins[k], n, ("min", "max")[k - 1]))
                    ins[k] = ""
            while len(ins) > 1 and not ins[-1]:
                ins.pop()
    low.emit("unary", ins, [n.outputs[0]], [op], floats)


def _lower_int8_clip(low: Lowering, n: Node) -> None:
    """Relu / Clip on uint8 or int8 (opset 12+/14+): exact through float32, every 8-bit value
    and bound being a float32 integer: dequantize with scale 1, clip, quantize with scale 1."""
    x, y = n.inputs[0], n.outputs[0]
    dt, shape = low.dtype(x), low.shape(x)
    one = f"{y}__one"
    low.consts[one] = np.ones((), np.float32)
    per_tensor = [_prod(shape), 1, 1, 0]

    def as_float(name: str) -> str:
        if low.dtype(name) != dt:
            raise ModelError(f"{n.label()}: bound '{name}' has dtype {low.dtype(name)}, input has {dt}")
        f = f"{y}__{name}__f32"
        low.define(f, np.float32, low.shape(name))
        low.emit("dequantize", [name, one, ""], [f], [_prod(low.shape(name)), 1, 1, 0])
        return f

    xf, yf = as_float(x), f"{y}__clip_f32"
    floats, ins = [-np.inf, np.inf], [xf]
    if n.op == "Relu":
        floats[0] = 0.0
    else:
        for k in (1, 2):
            b = n.inputs[k] if len(n.inputs) > k else ""
            if b and low.is_const(b):
                floats[k - 1] = float(_const_scalar(low, b, n, ("min", "max")[k - 1]))
                b = ""
            ins.append(as_float(b) if b else "")
    while len(ins) > 1 and not ins[-1]:
        ins.pop()
    low.define(yf, np.float32, shape)
    low.emit("unary", ins, [yf], [1], floats)
    low.define(y, dt, shape)
    low.emit("quantize", [yf, one, ""], [y], per_tensor)


def lower_softmax(low: Lowering, n: Node) -> None:
    _float_input(low, n)
    shape = low.shape(n.inputs[0])
    r = len(shape)
    axis = _axis(int(n.attrs.get("axis", -1 if n.opset >= 13 else 1)), r, n)
    if n.opset >= 13:
        ints = [_prod(shape[:axis]), shape[axis], _prod(shape[axis + 1:])]
    else:
        ints = [_prod(shape[:axis]), _prod(shape[axis:]), 1]
    low.define(n.outputs[0], np.float32, shape)
    low.emit("softmax", [n.inputs[0]], [n.outputs[0]], ints)


def lower_reduce_mean(low: Lowering, n: Node) -> None:
    _float_input(low, n)
    x = n.inputs[0]
    shape = low.shape(x)
    r = len(shape)
    if n.opset >= 18 and len(n.inputs) > 1 and n.inputs[1]:
        if not low.is_const(n.inputs[1]):
            raise UnsupportedError(f"{n.label()}: axes must be a constant")
        axes = [int(a) for a in low.consts[n.inputs[1]].reshape(-1)]
    else:
        axes = list(n.attrs.get("axes", []))
    if not axes:
        if int(n.attrs.get("noop_with_empty_axes", 0)):
            low.define(n.outputs[0], np.float32, shape)
            low.emit("copy", [x], [n.outputs[0]])
            return
        axes = list(range(r))
    axes = sorted({_axis(a, r, n) for a in axes})
    keep = int(n.attrs.get("keepdims", 1))
    out = [1 if i in axes else d for i, d in enumerate(shape)] if keep else [d for i, d in enumerate(shape)
                                                                              if i not in axes]
    src = x
    if axes != list(range(axes[0], axes[0] + len(axes))):
        perm = [i for i in range(r) if i not in axes] + axes
        src = n.outputs[0] + "__t"
        _emit_transpose(low, n, x, src, shape, perm)
        kept = [shape[i] for i in range(r) if i not in axes]
        ints = [_prod(kept), _prod(shape[a] for a in axes), 1]
    else:
        ints = [_prod(shape[:axes[0]]), _prod(shape[a] for a in axes), _prod(shape[axes[-1] + 1:])]
    low.define(n.outputs[0], np.float32, out)
    low.emit("reduce_mean", [src], [n.outputs[0]], ints)


def lower_batchnorm(low: Lowering, n: Node) -> None:
    if int(n.attrs.get("training_mode", 0)) or len([o for o in n.outputs if o]) > 1:
        raise UnsupportedError(f"{n.label()}: training mode is not supported; export the model in eval mode")
    _float_input(low, n)
    shape = low.shape(n.inputs[0])
    low.define(n.outputs[0], np.float32, shape)
    low.emit("batchnorm", n.inputs[:5], [n.outputs[0]], [shape[0], shape[1] if len(shape) > 1 else 1,
                                                         _prod(shape[2:])], [n.attrs.get("epsilon", 1e-5)])


# ---------------------------------------------------------------------------------------
# shape and layout


def _copy_as(low: Lowering, n: Node, out_shape) -> None:
    x = n.inputs[0]
    if _prod(out_shape) != _prod(low.shape(x)):
        raise ModelError(f"{n.label()}: cannot view {low.shape(x)} as {tuple(out_shape)}")
    low.define(n.outputs[0], low.dtype(x), out_shape)
    low.emit("copy", [x], [n.outputs[0]])


def _const_ints(low: Lowering, name: str, n: Node, what: str) -> list[int]:
    if not low.is_const(name):
        raise UnsupportedError(f"{n.label()}: {what} must be known before the run (a constant or derived from "
                               "shapes); data-dependent shapes are not supported")
    return [int(v) for v in low.consts[name].reshape(-1)]


def lower_reshape(low: Lowering, n: Node) -> None:
    shape = low.shape(n.inputs[0])
    target = _const_ints(low, n.inputs[1], n, "the target shape")
    allow_zero = int(n.attrs.get("allowzero", 0))
    out = [shape[i] if (d == 0 and not allow_zero) else d for i, d in enumerate(target)]
    if out.count(-1) > 1:
        raise ModelError(f"{n.label()}: more than one -1 in shape {target}")
    if -1 in out:
        known = _prod(d for d in out if d != -1)
        if known == 0 or _prod(shape) % known:
            raise ModelError(f"{n.label()}: cannot reshape {shape} to {target}")
        out[out.index(-1)] = _prod(shape) // known
    _copy_as(low, n, out)


def lower_flatten(low: Lowering, n: Node) -> None:
    shape = low.shape(n.inputs[0])
    axis = int(n.attrs.get("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    _copy_as(low, n, [_prod(shape[:axis]), _prod(shape[axis:])])


def _axes_arg(low, n):
    if len(n.inputs) > 1 and n.inputs[1]:
        return _const_ints(low, n.inputs[1], n, "axes")
    return list(n.attrs.get("axes", []))


def lower_squeeze(low: Lowering, n: Node) -> None:
    shape = low.shape(n.inputs[0])
    axes = {_axis(a, len(shape), n) for a in _axes_arg(low, n)} or {i for i, d in enumerate(shape) if d == 1}
    if any(shape[a] != 1 for a in axes):
        raise ModelError(f"{n.label()}: cannot squeeze axes {sorted(axes)} of shape {shape}")
    _copy_as(low, n, [d for i, d in enumerate(shape) if i not in axes])


def lower_unsqueeze(low: Lowering, n: Node) -> None:
    shape = list(low.shape(n.inputs[0]))
    axes = _axes_arg(low, n)
    r = len(shape) + len(axes)
    out = shape
    for a in sorted(_axis(a, r, n) for a in axes):
        out = out[:a] + [1] + out[a:]
    _copy_as(low, n, out)


def lower_identity(low: Lowering, n: Node) -> None:
    if n.op == "Dropout" and _dropout_training(low.consts, n):
        raise UnsupportedError(f"{n.label()}: training_mode is true; only inference (training_mode false or "
                               "absent) is supported")
    _copy_as(low, n, low.shape(n.inputs[0]))
    if n.op == "Dropout" and len(n.outputs) > 1 and n.outputs[1]:
        low.consts[n.outputs[1]] = np.ones(low.shape(n.inputs[0]), dtype=np.bool_)


def _dropout_training(consts: dict, n: Node) -> bool:
    """Whether a Dropout runs in training mode; its training_mode input is read at plan time
    (a constant, or a graph input planned per value)."""
    t = n.inputs[2] if len(n.inputs) > 2 else ""
    if not t:
        return False
    if t not in consts:
        raise UnsupportedError(f"{n.label()}: training_mode must be known before the run")
    return bool(np.asarray(consts[t]).reshape(-1)[0])


def lower_transpose(low: Lowering, n: Node) -> None:
    shape = low.shape(n.inputs[0])
    r = len(shape)
    perm = list(n.attrs.get("perm", list(range(r))[::-1]))
    if sorted(perm) != list(range(r)):
        raise ModelError(f"{n.label()}: perm {perm} is not a permutation of {r} axes")
    _emit_transpose(low, n, n.inputs[0], n.outputs[0], shape, perm)


def lower_concat(low: Lowering, n: Node) -> None:
    ins = [i for i in n.inputs if i]
    shapes = [low.shape(i) for i in ins]
    r = len(shapes[0])
    axis = _axis(int(n.attrs["axis"]), r, n)
    dt = low.dtype(ins[0])
    for i, s in zip(ins, shapes):
        if len(s) != r or any(s[d] != shapes[0][d] for d in range(r) if d != axis) or low.dtype(i) != dt:
            raise ModelError(f"{n.label()}: inputs {shapes} cannot be concatenated on axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    low.define(n.outputs[0], dt, out)
    low.emit("concat", ins, [n.outputs[0]], [_prod(out[:axis])] + [_prod(s[axis:]) * dt.itemsize for s in shapes])


def lower_gather(low: Lowering, n: Node) -> None:
    data, idx = n.inputs[:2]
    shape = low.shape(data)
    axis = _axis(int(n.attrs.get("axis", 0)), len(shape), n)
    if low.dtype(idx) not in (np.int32, np.int64):
        raise ModelError(f"{n.label()}: indices must be int32 or int64, got {low.dtype(idx)}")
    if low.is_const(idx):
        bad = low.consts[idx][(low.consts[idx] < -shape[axis]) | (low.consts[idx] >= shape[axis])]
        if bad.size:
            raise ModelError(f"{n.label()}: index {int(bad[0])} is outside axis {axis} of length {shape[axis]}")
    ishape = low.shape(idx)
    dt = low.dtype(data)
    low.define(n.outputs[0], dt, list(shape[:axis]) + list(ishape) + list(shape[axis + 1:]))
    low.emit("gather", [data, idx], [n.outputs[0]],
             [_prod(shape[:axis]), shape[axis], _prod(shape[axis + 1:]) * dt.itemsize, _prod(ishape)])


def lower_shape(low: Lowering, n: Node) -> None:
    shape = low.shape(n.inputs[0])
    start, end = int(n.attrs.get("start", 0)), n.attrs.get("end")
    low.consts[n.outputs[0]] = np.array(shape[start:end if end is not None else None], dtype=np.int64)


def _const_scalar(low, name, n, what):
    if not name:
        return None
    if not low.is_const(name) or low.consts[name].size != 1:
        raise UnsupportedError(f"{n.label()}: {what} must be a constant scalar")
    return low.consts[name].reshape(-1)[0]


def _fused_only(low: Lowering, n: Node) -> None:
    """Marks ops that run only after fuse_qoperator turned them into pyrt.QGemm."""


# (domain, op) whose lowering reads NHWC inputs itself; every other op sees NCHW copies.
LAYOUT_AWARE: set = set()

LOWER = {
    ("", "Add"): lower_binary, ("", "Sub"): lower_binary, ("", "Mul"): lower_binary, ("", "Div"): lower_binary,
    ("", "Relu"): lower_unary, ("", "Clip"): lower_unary, ("", "Sigmoid"): lower_unary, ("", "Tanh"): lower_unary,
    ("", "Softmax"): lower_softmax, ("", "ReduceMean"): lower_reduce_mean,
    ("", "BatchNormalization"): lower_batchnorm,
    ("", "Reshape"): lower_reshape, ("", "Flatten"): lower_flatten, ("", "Squeeze"): lower_squeeze,
    ("", "Unsqueeze"): lower_unsqueeze, ("", "Identity"): lower_identity, ("", "Dropout"): lower_identity,
    ("", "Transpose"): lower_transpose, ("", "Concat"): lower_concat, ("", "Gather"): lower_gather,
    ("", "Shape"): lower_shape,
}
# Ops whose constant inputs must still run natively (evaluating them here would bypass
# the int8 rules or hide the step from the summary).
_RUNTIME_ONLY = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
