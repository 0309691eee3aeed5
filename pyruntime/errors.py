"""Typed errors. Every message says what is wrong, what was expected, and what to do."""


class PyRuntimeError(RuntimeError):
    """Base class of every error pyruntime raises on purpose."""


class ModelError(PyRuntimeError):
    """The model is invalid or hostile."""


class UnsupportedError(PyRuntimeError):
    """Valid input that this runtime, CPU or build does not support."""


class InputError(PyRuntimeError, ValueError):
    """A call received a wrong dtype, shape or value: expected vs given."""
