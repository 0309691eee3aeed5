"""3. tensors and declared shapes."""
from __future__ import annotations

import math

from onnx import TensorProto

from ...errors import ModelError, UnsupportedError
from .common import (_BITS, _FIELD, _RAISE_CAP, _REEXPORT, _TYPED_FIELDS, _raw_nbytes, _Scope,
                     _type_name)


# --------------------------------------------------------------------------------------
# 3. tensors and declared shapes
# --------------------------------------------------------------------------------------

def _dims_count(dims, what: str, cap: int, kind=ModelError) -> int:
    for i, d in enumerate(dims):
        if d < 0:
            raise ModelError(f"{what} has a negative dimension {d} at axis {i} (dims "
                             f"{list(dims)}); dimensions must be >= 0; {_REEXPORT}")
    count = math.prod(int(d) for d in dims)
    if count > cap:
        raise kind(f"{what} has dims {list(dims)}, that is {count} elements, over the element "
                   f"cap max_tensor_elements={cap}; {_RAISE_CAP}")
    return count


def _check_tensor(t: TensorProto, what: str, cap: int, external: list) -> None:
    dt = t.data_type
    if dt not in _FIELD:
        raise ModelError(f"{what} has data type {_type_name(dt)} ({dt}), which is not a valid "
                         f"ONNX tensor type; {_REEXPORT}")
    count = _dims_count(t.dims, what, cap)
    if t.HasField("segment"):
        raise UnsupportedError(f"{what} is a segment of a larger tensor (TensorProto.segment), "
                               "which this runtime does not read; save the tensor whole")
    populated = [f for f in _TYPED_FIELDS if len(getattr(t, f))]
    has_raw = t.HasField("raw_data")
    if t.data_location == TensorProto.EXTERNAL:
        if has_raw or populated:
            raise ModelError(f"{what} says its data is external but also holds data inline "
                             f"({'raw_data' if has_raw else populated[0]}); {_REEXPORT}")
        external.append((t, what, count))
        return
    if len(t.external_data):
        raise ModelError(f"{what} has external_data entries but data_location is not EXTERNAL; "
                         f"{_REEXPORT}")
    field, per = _FIELD[dt]
    if has_raw:
        if dt == TensorProto.STRING:
            raise ModelError(f"{what} is a string tensor stored in raw_data; strings must be in "
                             f"string_data; {_REEXPORT}")
        if populated:
            raise ModelError(f"{what} holds both raw_data and {populated[0]}; exactly one storage "
                             f"is allowed; {_REEXPORT}")
        want = _raw_nbytes(dt, count)
        if len(t.raw_data) != want:
            raise ModelError(f"{what} ({_type_name(dt)}, dims {list(t.dims)}) has raw_data of "
                             f"{len(t.raw_data)} bytes, expected {count} elements x "
                             f"{_BITS[dt] / 8:g} bytes = {want} bytes; the file is corrupt or "
                             f"hostile; {_REEXPORT}")
        return
    wrong = [f for f in populated if f != field]
    if wrong:
        raise ModelError(f"{what} ({_type_name(dt)}) stores data in {wrong[0]}, which is not the "
                         f"field for {_type_name(dt)} ({field}); {_REEXPORT}")
    want = math.ceil(count * per)
    have = len(getattr(t, field))
    if have != want:
        raise ModelError(f"{what} ({_type_name(dt)}, dims {list(t.dims)}) has {have} entries in "
                         f"{field}, expected {want} for {count} elements; the file is corrupt or "
                         f"hostile; {_REEXPORT}")


def _check_sparse(st, what: str, cap: int, external: list) -> None:
    _dims_count(st.dims, f"{what} (dense shape)", cap)
    _check_tensor(st.values, f"{what} (values)", cap, external)
    _check_tensor(st.indices, f"{what} (indices)", cap, external)


def _check_type(tp, what: str, cap: int, inferred: bool = False) -> None:
    """Declared dims: none negative, the fixed ones within the cap. Inferred dims (onnx may
    write -1 for an unknown size) are held to the cap only."""
    kind = tp.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        tt = getattr(tp, kind)
        if tt.HasField("shape"):
            fixed = []
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    if d.dim_value < 0 and inferred:
                        continue
                    if d.dim_value < 0:
                        raise ModelError(f"{what} declares a negative dimension {d.dim_value} at "
                                         f"axis {i}; dimensions must be >= 0 (use a symbolic "
                                         f"dim_param for an unknown size); {_REEXPORT}")
                    fixed.append(d.dim_value)
            n = math.prod(fixed)
            if n > cap:
                raise ModelError(f"{what} declares fixed dimensions {fixed}, that is {n} "
                                 f"elements, over the element cap max_tensor_elements={cap}; "
                                 f"{_RAISE_CAP}")
    elif kind == "sequence_type":
        _check_type(tp.sequence_type.elem_type, what, cap, inferred)
    elif kind == "optional_type":
        _check_type(tp.optional_type.elem_type, what, cap, inferred)
    elif kind == "map_type":
        _check_type(tp.map_type.value_type, what, cap, inferred)


def _check_all_tensors(scopes: list[_Scope], cap: int) -> list:
    external: list = []
    for sc in scopes:
        g = sc.graph
        if g is not None:
            for t in g.initializer:
                _check_tensor(t, f"initializer '{t.name}'{sc.where}", cap, external)
            for st in g.sparse_initializer:
                _check_sparse(st, f"sparse initializer '{st.values.name}'{sc.where}", cap, external)
            for kind, vis in (("graph input", g.input), ("graph output", g.output),
                              ("value_info", g.value_info)):
                for vi in vis:
                    _check_type(vi.type, f"{kind} '{vi.name}'{sc.where}", cap)
        for i, node in enumerate(sc.nodes):
            for a in node.attribute:
                if a.HasField("t"):
                    _check_tensor(a.t, f"tensor attribute '{a.name}' of {sc.node_desc(i, node)}",
                                  cap, external)
                for k, t in enumerate(a.tensors):
                    _check_tensor(t, f"tensor attribute '{a.name}[{k}]' of "
                                     f"{sc.node_desc(i, node)}", cap, external)
                if a.HasField("sparse_tensor"):
                    _check_sparse(a.sparse_tensor, f"sparse tensor attribute '{a.name}' of "
                                  f"{sc.node_desc(i, node)}", cap, external)
                for k, st in enumerate(a.sparse_tensors):
                    _check_sparse(st, f"sparse tensor attribute '{a.name}[{k}]' of "
                                  f"{sc.node_desc(i, node)}", cap, external)
                if a.HasField("tp"):
                    _check_type(a.tp, f"type attribute '{a.name}' of {sc.node_desc(i, node)}", cap)
    return external

