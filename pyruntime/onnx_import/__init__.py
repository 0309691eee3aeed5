"""ONNX import: validate (load-time checks), graph, passes, lower (to a native program).

Imports onnx; pyruntime.load pulls it in, `import pyruntime` does not."""
