"""4. external data."""
from __future__ import annotations

import os
import re
import stat

from onnx import TensorProto

from ...errors import ModelError
from .common import _BITS, _REEXPORT, _raw_nbytes, _type_name


# --------------------------------------------------------------------------------------
# 4. external data
# --------------------------------------------------------------------------------------

_EXT_KEYS = ("location", "offset", "length", "checksum")
_DIGITS = re.compile(r"[0-9]{1,19}")


def _ext_fields(t: TensorProto, what: str) -> dict:
    info: dict[str, str] = {}
    for e in t.external_data:
        if e.key not in _EXT_KEYS:
            raise ModelError(f"{what} has an unknown external_data key {e.key!r} (allowed: "
                             f"{', '.join(_EXT_KEYS)}); {_REEXPORT}")
        if e.key in info:
            raise ModelError(f"{what} has external_data key {e.key!r} twice; {_REEXPORT}")
        info[e.key] = e.value
    if not info.get("location"):
        raise ModelError(f"{what} has external data without a 'location'; {_REEXPORT}")
    for k in ("offset", "length"):
        if k in info and not _DIGITS.fullmatch(info[k]):
            raise ModelError(f"{what} has external_data {k}={info[k]!r}; expected a non-negative "
                             f"decimal integer; {_REEXPORT}")
    return info


def _resolve_location(base_dir: str, location: str, what: str) -> str:
    bad = None
    if "\x00" in location:
        bad = "holds a NUL character"
    elif "\\" in location:
        bad = "holds a backslash (locations are POSIX paths relative to the model's directory)"
    elif os.path.isabs(location) or re.match(r"^[A-Za-z]:", location):
        bad = "is an absolute path"
    else:
        parts = location.split("/")
        if ".." in parts:
            bad = "contains '..' (it would leave the model's directory)"
        elif not [p for p in parts if p not in ("", ".")]:
            bad = "names no file"
    if bad:
        raise ModelError(f"{what} has external data location {location!r}, which {bad}; external "
                         "data must be a relative path inside the model's directory; "
                         f"{_REEXPORT}")
    root = os.path.realpath(base_dir)
    cur = root
    for p in location.split("/"):
        if p in ("", "."):
            continue
        cur = os.path.join(cur, p)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise ModelError(f"{what} has external data location {location!r}, but {cur!r} does "
                             "not exist; put the data file next to the model (in its directory)"
                             ) from None
        except OSError as exc:
            raise ModelError(f"{what}: external data location {location!r} cannot be examined "
                             f"({exc}); check the files next to the model") from None
        if stat.S_ISLNK(st.st_mode):
            raise ModelError(f"{what} has external data location {location!r}, and {cur!r} is a "
                             "symbolic link; symlinks are refused because they can point outside "
                             "the model's directory; copy the real file into the directory")
    if not stat.S_ISREG(os.lstat(cur).st_mode):
        raise ModelError(f"{what} has external data location {location!r}, which is not a "
                         "regular file; point it at the data file saved with the model")
    real = os.path.realpath(cur)
    if os.path.commonpath([real, root]) != root:  # defence in depth
        raise ModelError(f"{what} has external data location {location!r} resolving outside the "
                         f"model's directory {root!r}; {_REEXPORT}")
    return cur


def _load_external(external: list, base_dir: str | None, allow: bool, max_bytes: int,
                   proto_bytes: int) -> None:
    """Reads every external tensor into raw_data after checking where it points; the protobuf
    and its external data together may hold at most max_bytes."""
    if not external:
        return
    t0, what0, _ = external[0]
    loc0 = next((e.value for e in t0.external_data if e.key == "location"), "?")
    if not allow:
        raise ModelError(f"{what0} stores its data in an external file ({loc0!r}); external data "
                         "is not allowed; pass allow_external_data=True to pyruntime.load() if the "
                         "model and its directory are trusted")
    if base_dir is None:
        raise ModelError(f"{what0} stores its data in an external file ({loc0!r}), but the model "
                         "was given as bytes or a ModelProto, so there is no directory to resolve "
                         "it from; load the model from its file path")
    total = proto_bytes
    fds: dict[str, tuple[int, int]] = {}
    try:
        for t, what, count in external:
            info = _ext_fields(t, what)
            path = _resolve_location(base_dir, info["location"], what)
            if path not in fds:
                flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                try:
                    fd = os.open(path, flags)
                except OSError as exc:
                    raise ModelError(f"{what}: external data file {info['location']!r} cannot be "
                                     f"opened ({exc}); check the files next to the model") from None
                st = os.fstat(fd)
                fds[path] = (fd, st.st_size)
                if not stat.S_ISREG(st.st_mode):
                    raise ModelError(f"{what}: external data {info['location']!r} is not a "
                                     "regular file; point it at the data file saved with the model")
            fd, size = fds[path]
            if t.data_type == TensorProto.STRING:
                raise ModelError(f"{what} is a string tensor with external data, which ONNX does "
                                 f"not allow; {_REEXPORT}")
            want = _raw_nbytes(t.data_type, count)
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else size - offset
            if offset > size or length < 0 or offset + length > size:
                raise ModelError(
                    f"{what} has external data offset={offset} length={length} in "
                    f"{info['location']!r}, outside the file ({size} bytes); the data file is "
                    f"truncated or the model is hostile; {_REEXPORT}")
            if length != want:
                raise ModelError(
                    f"{what} ({_type_name(t.data_type)}, dims {list(t.dims)}) has external data "
                    f"length {length} bytes, expected {count} elements x "
                    f"{_BITS[t.data_type] / 8:g} bytes = {want} bytes; {_REEXPORT}")
            total += length
            if total > max_bytes:
                raise ModelError(f"the model with its external data adds up to more than "
                                 f"max_model_bytes={max_bytes} (at {what}); if the model is "
                                 "trusted, raise "
                                 "the cap: pyruntime.load(..., max_model_bytes=N)")
            data = os.pread(fd, length, offset) if length else b""
            if len(data) != length:
                raise ModelError(f"{what}: reading {length} bytes at offset {offset} of "
                                 f"{info['location']!r} returned {len(data)} bytes (file changed "
                                 "while loading?); load again")
            t.raw_data = data
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
    finally:
        for fd, _ in fds.values():
            os.close(fd)

