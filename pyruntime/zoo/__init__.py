"""Shipped student models (made by pyruntime.train) with their cards.

    import pyruntime
    from pyruntime import zoo
    model = pyruntime.load(zoo.path("fashion_mnist_student"))
    card = zoo.card("fashion_mnist_student")
"""
from __future__ import annotations

import json
from pathlib import Path

_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in _DIR.glob("*.onnx"))


def path(name: str = "fashion_mnist_student") -> str:
    p = _DIR / f"{name}.onnx"
    if not p.is_file():
        raise FileNotFoundError(f"no zoo model {name!r}; available: {', '.join(names()) or 'none'}")
    return str(p)


def card(name: str = "fashion_mnist_student") -> dict:
    return json.loads((_DIR / f"{name}.json").read_text())
