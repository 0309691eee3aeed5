"""Int8 quantization of a student and its gates: BN folding, post-training calibration
(minmax, percentile), and QAT with distillation from the fp32 student (Apprentice scheme C).

The quantized network is simulated in torch exactly where the exported QDQ graph puts its
QuantizeLinear/DequantizeLinear pairs:
- input: u8, scale 1/255, zero point 0 (pixels in [0,1] are exact);
- weights: s8 symmetric per output channel, range [-127, 127], zero point 0;
- bias: int32, scale f32(s_in * s_w[c]);
- activations after ReLU (and after MaxPool, which keeps the scale) and after global
  average pooling: u8 per tensor, zero point 0 (every activation is >= 0);
- heads (final and gates): Gemm with a float32 output, not requantized.
Rounding is half to even (torch.round), as ONNX QuantizeLinear does.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import engine
from .distill import kd_loss
from .models import Gate, Student

W_QMAX = 127
A_QMAX = 255
INPUT_SCALE = np.float32(1.0 / 255.0)


# ----------------------------------------------------------------------------- fake quant
class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def fq_act(x, scale: torch.Tensor, qmax: int = A_QMAX):
    """u8 with zero point 0: clamp(round(x / s), 0, qmax) * s, straight-through gradient."""
    return torch.clamp(_RoundSTE.apply(x / scale), 0, qmax) * scale


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric scale max|w| / 127 (float32)."""
    m = w.detach().abs().reshape(w.shape[0], -1).amax(1)
    return torch.where(m > 0, m / W_QMAX, torch.ones_like(m)).float()


def fq_weight(w, scale):
    shape = (-1,) + (1,) * (w.dim() - 1)
    return torch.clamp(_RoundSTE.apply(w / scale.reshape(shape)), -W_QMAX, W_QMAX) * scale.reshape(shape)


def bias_scale(s_in: torch.Tensor, s_w: torch.Tensor) -> torch.Tensor:
    return (s_in.double() * s_w.double()).float()


def fq_bias(b, s_in, s_w):
    sb = bias_scale(s_in, s_w)
    return _RoundSTE.apply(b / sb) * sb


# ----------------------------------------------------------------------------- folded model
class QLayer(nn.Module):
    """Conv (3x3 pad 1) or Linear with a float bias, weights folded from BN."""

    def __init__(self, weight, bias, kind):
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.bias = nn.Parameter(bias.detach().clone().float())

    def forward(self, x, s_in=None, quant=False):
        if quant:
            s_w = weight_scale(self.weight)
            w = fq_weight(self.weight, s_w)
            b = fq_bias(self.bias, s_in, s_w)
        else:
            w, b = self.weight, self.bias
        if self.kind == "conv":
            return F.conv2d(x, w, b, 1, 1)
        return F.linear(x, w, b)

    def int_params(self, s_in: torch.Tensor):
        """(int8 weight, f32 weight scale, int32 bias, f32 bias scale) as numpy."""
        with torch.no_grad():
            s_w = weight_scale(self.weight)
            shape = (-1,) + (1,) * (self.weight.dim() - 1)
            wq = torch.clamp(torch.round(self.weight / s_w.reshape(shape)), -W_QMAX, W_QMAX).to(torch.int8)
            sb = bias_scale(s_in, s_w)
            bq = torch.round(self.bias / sb).to(torch.int64)
        if bq.abs().max() >= 2 ** 31:
            raise OverflowError("bias does not fit int32")
        return wq.numpy(), s_w.numpy().astype(np.float32), bq.numpy().astype(np.int32), sb.numpy().astype(np.float32)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d):
    std = torch.sqrt(bn.running_var + bn.eps)
    g = bn.weight / std
    w = conv.weight * g.reshape(-1, 1, 1, 1)
    b0 = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    b = (b0 - bn.running_mean) * g + bn.bias
    return w, b


class QStudent(nn.Module):
    """The student plus its gates, BN folded, with activation scales for int8 simulation.

    Quant points (names used by the exporter and by calibration):
      'input'; f'{stage}.conv{i}' (after Conv+ReLU); f'{stage}.gap' (the final global
      average pool); f'gate{k}.gap' (a gate with grid 1); f'gate{k}.hidden' (an MLP gate).
    """

    def __init__(self, student: Student, gates: list[Gate]):
        super().__init__()
        student = copy.deepcopy(student).eval()
        self.cfg = student.cfg
        self.stage_names = list(student.cfg.stage_names)
        self.convs = nn.ModuleDict()
        self.pool_after = {}
        for name, stage in student.stages.items():
            i = 0
            for mod in stage:
                if isinstance(mod, nn.Sequential):  # ConvBNReLU
                    w, b = fold_conv_bn(mod[0], mod[1])
                    self.convs[f"{name}_conv{i}"] = QLayer(w, b, "conv")
                    i += 1
            self.pool_after[name] = any(isinstance(m, nn.MaxPool2d) for m in stage)
        self.head = QLayer(student.head.weight, student.head.bias, "linear")
        self.gate_cfgs = [g.gcfg for g in gates]
        self.gate_kernels = [g.kernel for g in gates]
        self.gate_layers = nn.ModuleList()
        for g in gates:
            lins = [m for m in g.fc.modules() if isinstance(m, nn.Linear)]
            self.gate_layers.append(nn.ModuleList([QLayer(l.weight, l.bias, "linear") for l in lins]))
        self.scales: dict[str, torch.Tensor] = {"input": torch.tensor(INPUT_SCALE)}
        self.quant = False
        self._observe = None

    # activation hook: observe (calibration) or fake-quantize
    def _act(self, name, x):
        if self._observe is not None:
            self._observe(name, x)
        if self.quant:
            return fq_act(x, self.scales[name])
        return x

    def _convs_of(self, stage):
        return [(k, m) for k, m in self.convs.items() if k.startswith(stage + "_conv")]

    def forward_all(self, x):
        """(final logits, [gate logits...], {stage: features})."""
        s_prev = self.scales["input"]
        x = self._act("input", x) if self.quant else x
        feats, feat_scale = {}, {}
        for name in self.stage_names:
            for key, conv in self._convs_of(name):
                x = F.relu(conv(x, s_prev, self.quant))
                qn = key.replace("_conv", ".conv")
                x = self._act(qn, x)
                s_prev = self.scales.get(qn)
            if self.pool_after[name]:
                x = F.max_pool2d(x, 2)
            feats[name], feat_scale[name] = x, s_prev
        last = self.stage_names[-1]
        g = self._act(f"{last}.gap", F.adaptive_avg_pool2d(x, 1).flatten(1))
        final = self.head(g, self.scales.get(f"{last}.gap"), self.quant)
        gouts = []
        for k, (gc, kern, layers) in enumerate(zip(self.gate_cfgs, self.gate_kernels, self.gate_layers)):
            f, s = feats[gc.stage], feat_scale[gc.stage]
            if kern:
                h = F.max_pool2d(f, kern, kern).flatten(1)
            else:
                h = self._act(f"gate{k}.gap", F.adaptive_avg_pool2d(f, 1).flatten(1))
                s = self.scales.get(f"gate{k}.gap")
            if len(layers) == 2:
                h = self._act(f"gate{k}.hidden", F.relu(layers[0](h, s, self.quant)))
                s = self.scales.get(f"gate{k}.hidden")
            gouts.append(layers[-1](h, s, self.quant))
        return final, gouts, feats

    def forward(self, x):
        return self.forward_all(x)[0]

    # ------------------------------------------------------------------ calibration
    @torch.no_grad()
    def calibrate(self, x, method: str = "minmax", percentile: float = 99.99, bs: int = 500):
        """Sets every activation scale from fp32 statistics on x."""
        samples: dict[str, list] = {}
        gen = torch.Generator().manual_seed(0)

        def obs(name, t):
            t = t.detach().flatten()
            if method == "minmax":
                samples.setdefault(name, []).append(t.max().reshape(1))
            else:  # keep a random subsample for the percentile
                if t.numel() > 20000:
                    t = t[torch.randint(0, t.numel(), (20000,), generator=gen)]
                samples.setdefault(name, []).append(t)

        was = self.quant
        self.quant = False
        self._observe = obs
        x = torch.as_tensor(x)
        for i in range(0, len(x), bs):
            self.forward_all(x[i:i + bs])
        self._observe = None
        self.quant = was
        for name, vals in samples.items():
            if name == "input":
                continue
            v = torch.cat(vals)
            hi = float(v.max()) if method == "minmax" else float(torch.quantile(v.float(), percentile / 100.0))
            hi = max(hi, 1e-6)
            self.scales[name] = torch.tensor(np.float32(hi / A_QMAX))
        return self

    def scales_numpy(self) -> dict:
        return {k: np.float32(float(v)) for k, v in self.scales.items()}


def quantize_ptq(student, gates, calib_x, method="minmax", percentile=99.99) -> QStudent:
    q = QStudent(student, gates)
    q.calibrate(calib_x, method=method, percentile=percentile)
    q.quant = True
    q.eval()
    return q


@torch.no_grad()
def qpredict(q: QStudent, x, bs=1000):
    """(final logits, [gate logits]) as numpy."""
    x = torch.as_tensor(x)
    finals, gates = [], []
    for i in range(0, len(x), bs):
        f, g, _ = q.forward_all(x[i:i + bs])
        finals.append(f)
        gates.append(g)
    K = len(gates[0])
    return torch.cat(finals).numpy(), [torch.cat([g[k] for g in gates]).numpy() for k in range(K)]


def qat(q: QStudent, x, y, fp32_logits, *, epochs=2, lr=1e-3, T=2.0, alpha=0.7, seed=0, progress=True,
        augment="flip"):
    """Quantization-aware fine-tuning of the trunk and final head with distillation from
    the fp32 student's logits (Apprentice scheme C). Gates are not trained here.
    fp32_logits: [2, N, C] logits of the fp32 student on x and on x flipped."""
    q.quant = True
    params = [p for n, p in q.named_parameters() if not n.startswith("gate_layers")]

    def loss_fn(m, xb, yb, idx, flip, prog):
        s = m(xb)
        t = torch.where(flip[:, None], fp32_logits[1][idx], fp32_logits[0][idx])
        return kd_loss(s, t, yb, T, alpha)

    res = engine.fit(q, x, y, epochs=epochs, batch_size=128, lr=lr, weight_decay=0.0, optimizer="adamw",
                     augment_mode=augment, loss_fn=loss_fn, seed=seed, desc="QAT (distilled from fp32)",
                     params=params, progress=progress)
    q.eval()
    return res


def set_gates(q: QStudent, gates: list[Gate]):
    """Replaces q's gate heads with `gates` (e.g. retrained on the quantized trunk)."""
    q.gate_layers = nn.ModuleList()
    for g in gates:
        lins = [m for m in g.fc.modules() if isinstance(m, nn.Linear)]
        q.gate_layers.append(nn.ModuleList([QLayer(l.weight, l.bias, "linear") for l in lins]))
    return q


def gate_feature_fn(q: QStudent):
    """feature_fn for gates.pooled_features reading q's (int8-simulated) trunk."""
    def fn(xb):
        return q.forward_all(xb)[2]
    return fn
