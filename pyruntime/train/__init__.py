"""pyruntime.train: the student factory (needs the `[train]` extra: torch, tqdm).

Modules: data (Fashion-MNIST IDX loader, numpy only), models (teacher, student, gates,
MAC counts, checkpoint cache), engine (training loop), distill (Hinton KD), gates (hinge
decision gates, threshold calibration, exit rules), quantize (int8 PTQ/QAT simulation),
export (QDQ ONNX with the early-exit metadata), pipeline (`python -m pyruntime.train`).

torch is imported by these modules only; `import pyruntime` never imports this package.
"""
