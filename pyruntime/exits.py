"""The early-exit contract (DESIGN.md, `pyruntime.exits` version 1): parsing, validation
and the split of a graph into segments that run one after another, per sample.

Segment k holds the nodes that are ancestors of gate k's output and of no earlier gate's;
the last segment is the rest. After segment k the gate's rule is evaluated on each row;
rows that fire are answered by that gate, the others are compacted and run on.
"""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass

import numpy as np

from .errors import InputError, ModelError
from .onnx_import.graph import Graph, Node, ValueInfo

META_KEY = "pyruntime.exits"
RULES = ("margin", "max")


@dataclass
class Gate:
    output: str
    rule: str
    threshold: float
    macs_fraction: float


def parse(metadata: dict, g: Graph) -> list[Gate] | None:
    """The validated gates, or None when the model carries no exits."""
    raw = metadata.get(META_KEY)
    if raw is None:
        return None
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        raise ModelError(f"metadata_props['{META_KEY}'] is not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or spec.get("version") != 1:
        raise ModelError(f"metadata_props['{META_KEY}'].version must be 1, got {spec.get('version')!r}"
                         if isinstance(spec, dict) else f"metadata_props['{META_KEY}'] must be a JSON object")
    final = g.outputs[0]
    if spec.get("final") != final.name:
        raise ModelError(f"{META_KEY}.final is {spec.get('final')!r}; it must name output 0, '{final.name}'")
    entries = spec.get("exits")
    if not isinstance(entries, list) or not entries:
        raise ModelError(f"{META_KEY}.exits must be a non-empty list of gates")
    outputs = {o.name: o for o in g.outputs}
    gates, prev = [], 0.0
    for k, e in enumerate(entries):
        where = f"{META_KEY}.exits[{k}]"
        if not isinstance(e, dict):
            raise ModelError(f"{where} must be an object")
        name = e.get("output")
        if name not in outputs or name == final.name:
            raise ModelError(f"{where}.output {name!r} must name a graph output other than output 0; outputs are "
                             f"{list(outputs)}")
        info = outputs[name]
        if info.dtype != final.dtype or len(info.shape) != len(final.shape) or any(
                isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(info.shape, final.shape)):
            raise ModelError(f"{where}.output '{name}' is {info.dtype} {info.shape}; it must match output 0, "
                             f"{final.dtype} {final.shape}")
        if e.get("rule") not in RULES:
            raise ModelError(f"{where}.rule {e.get('rule')!r} is unknown; expected one of {RULES}")
        thr = e.get("threshold")
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
            raise ModelError(f"{where}.threshold must be a finite number, got {thr!r}")
        frac = e.get("macs_fraction")
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not prev < frac < 1:
            raise ModelError(f"{where}.macs_fraction must be in ({prev}, 1) and increase strictly, got {frac!r}")
        prev = float(frac)
        gates.append(Gate(name, e["rule"], float(thr), float(frac)))
    if len({x.output for x in gates}) != len(gates):
        raise ModelError(f"{META_KEY}.exits names a gate output twice")
    return gates


def _ancestors(g: Graph, name: str, prod: dict[str, Node]) -> set[int]:
    seen: set[int] = set()
    stack = [name]
    while stack:
        n = prod.get(stack.pop())
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        stack.extend(i for i in n.inputs if i)
    return seen


# Ops that combine rows of the batch when applied to axis 0.
def _mixes_rows(n: Node) -> bool:
    a = n.attrs
    if n.domain != "":
        return False
    if n.op == "Flatten":
        return int(a.get("axis", 1)) == 0
    if n.op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"):
        axes = list(a.get("axes", []))
        return not axes or 0 in axes
    if n.op == "Transpose":
        return list(a.get("perm", [1, 0]))[:1] != [0]
    if n.op in ("Concat", "Gather", "Softmax", "Split"):
        return int(a.get("axis", 1 if n.op == "Softmax" and n.opset < 13 else 0)) == 0
    return False


@dataclass
class Segment:
    graph: Graph            # nodes of this segment; inputs = values it reads from earlier ones
    gate: str | None        # the gate output it produces (None for the last segment)
    carry: list[str]        # values later segments read (compacted after the gate)


def split(g: Graph, gates: list[Gate]) -> list[Segment]:
    prod = g.producers()
    final = g.outputs[0].name
    anc = [_ancestors(g, x.output, prod) for x in gates]
    anc_final = _ancestors(g, final, prod)
    for k in range(1, len(gates)):
        trunk = anc[k - 1] & anc_final
        if not trunk <= anc[k]:
            raise ModelError(f"gates are not in depth order: gate {k - 1} ('{gates[k - 1].output}') depends on trunk "
                             f"nodes that gate {k} ('{gates[k].output}') does not")
    order = {id(n): i for i, n in enumerate(g.nodes)}
    taken: set[int] = set()
    groups = []
    for a in anc + [set(order) - set().union(*anc) if anc else set(order)]:
        ids = a - taken
        taken |= ids
        groups.append([n for n in g.nodes if id(n) in ids])
    for k, nodes in enumerate(groups):
        for n in nodes:
            if _mixes_rows(n):
                raise ModelError(f"segment {k} holds {n.label()}, which mixes rows of the batch; per-sample early exit "
                                 "cannot split such a graph")
    graph_inputs = {i.name: i for i in g.inputs}
    segments = []
    produced_before: set[str] = set()
    for k, nodes in enumerate(groups):
        made = {o for n in nodes for o in n.outputs if o}
        reads = [i for n in nodes for i in n.inputs if i and i not in made and i not in g.consts]
        reads = list(dict.fromkeys(reads))
        later_reads = {i for later in groups[k + 1:] for n in later for i in n.inputs if i}
        carry = sorted(v for v in (made | produced_before) if v in later_reads and v not in graph_inputs)
        produced_before |= made
        gate = gates[k].output if k < len(gates) else None
        outs = [gate] if gate else [final]
        outs += [c for c in carry if c in made]
        inputs = [graph_inputs[r] if r in graph_inputs else ValueInfo(r, np.dtype(np.float32), []) for r in reads]
        seg_graph = Graph(nodes, inputs, [ValueInfo(o, np.dtype(np.float32), []) for o in outs], g.consts, g.opsets,
                          g.value_shapes)
        segments.append(Segment(seg_graph, gate, carry))
    return segments


def fire(scores: np.ndarray, rule: str, threshold: float) -> np.ndarray:
    """Per row: does the rule fire? margin: top1 - top2 >= t; max: top1 >= t. The normative
    statement of the rule (the native ExitRunner follows it): float32 scores compare in
    float32, integer scores exactly; a row holding NaN never fires."""
    if scores.dtype.kind in "iub":
        scores = scores.astype(np.float64)  # int8 top1 - top2 could wrap
    if scores.shape[1] == 0:
        return np.zeros(scores.shape[0], bool)
    if rule == "max":
        return scores.max(axis=1) >= threshold
    if scores.shape[1] < 2:
        return np.full(scores.shape[0], True) if threshold <= 0 else np.zeros(scores.shape[0], bool)
    top2 = np.partition(scores, -2, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) >= threshold


class Thresholds:
    """Model.exits: per-gate thresholds, readable and settable (finite or +-inf) from any
    thread; a change lasts for later calls."""

    def __init__(self, gates: list[Gate]):
        self._gates = gates
        self._values = tuple(x.threshold for x in gates)
        self._lock = threading.Lock()

    def snapshot(self) -> tuple:
        return self._values

    def __len__(self) -> int:
        return len(self._gates)

    def __getitem__(self, k: int) -> float:
        return self._values[k]

    def __setitem__(self, k: int, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
                math.isnan(float(value)):
            raise InputError(f"threshold of gate {k} must be a number (finite or +-inf), got {value!r}")
        with self._lock:
            values = list(self._values)
            values[k] = float(value)
            self._values = tuple(values)

    def __iter__(self):
        return iter(self._values)

    def __repr__(self) -> str:
        return "Exits(" + ", ".join(f"{x.output}: {x.rule} >= {t}" for x, t in zip(self._gates, self._values)) + ")"
