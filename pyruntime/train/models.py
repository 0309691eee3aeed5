"""Teacher and student networks, MAC/parameter counts, and the checkpoint cache.

The student is a plain chain of named stages (Conv+BN+ReLU, MaxPool) ending in global
average pooling and a linear head; decision gates attach at stage boundaries. It is built
only from ops the exporter writes (Conv, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- teacher
@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    widths: tuple = (32, 64, 128)
    blocks: tuple = (2, 2, 2)
    epochs: int = 14
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    # No label smoothing: it flattens the logits the students learn from (Mueller et al., 2019).
    label_smoothing: float = 0.0
    augment: str = "crop2+flip"
    seed: int = 0
    train_subset: int | None = None
    channels_last: bool = True

    def key(self) -> str:
        return config_hash("teacher", dataclasses.asdict(self))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class Teacher(nn.Module):
    """ResNet-style: stem conv at 28x28, max pool to 14x14, then stages at 14, 7, 4."""

    def __init__(self, cfg: TeacherConfig = TeacherConfig(), num_classes=10):
        super().__init__()
        w = cfg.widths
        self.stem = nn.Sequential(nn.Conv2d(1, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(2))
        layers, cin = [], w[0]
        for i, (cout, nb) in enumerate(zip(w, cfg.blocks)):
            for b in range(nb):
                layers.append(BasicBlock(cin, cout, 2 if (b == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem((x - 0.2860) / 0.3530))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ----------------------------------------------------------------------------- student
@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """stages[i] = (out_channels, convs); every stage but the last ends in MaxPool 2x2, the
    last in global average pooling. Stage i is named f"stage{i+1}"."""
    stages: tuple = ((16, 1), (32, 1), (64, 1))
    num_classes: int = 10

    @property
    def stage_names(self) -> list[str]:
        return [f"stage{i + 1}" for i in range(len(self.stages))]


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Student(nn.Module):
    def __init__(self, cfg: StudentConfig = StudentConfig()):
        super().__init__()
        self.cfg = cfg
        self.stages = nn.ModuleDict()
        cin, hw = 1, 28
        self.stage_shapes = {}
        for name, (cout, nconv) in zip(cfg.stage_names, cfg.stages):
            mods = []
            for _ in range(nconv):
                mods.append(ConvBNReLU(cin, cout))
                cin = cout
            last = name == cfg.stage_names[-1]
            if not last:
                mods.append(nn.MaxPool2d(2))
                hw //= 2
            self.stages[name] = nn.Sequential(*mods)
            self.stage_shapes[name] = (cout, hw, hw)
        self.head = nn.Linear(cin, cfg.num_classes)

    def forward_features(self, x) -> dict:
        feats = {}
        for name, stage in self.stages.items():
            x = stage(x)
            feats[name] = x
        return feats

    def forward(self, x, return_features=False):
        feats = self.forward_features(x)
        out = self.head(torch.flatten(F.adaptive_avg_pool2d(feats[self.cfg.stage_names[-1]], 1), 1))
        return (out, feats) if return_features else out


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """A gate: MaxPool (kernel = stride = hw // grid) down to grid x grid, or global average
    pooling when grid == 1; Flatten; Linear (or Linear-ReLU-Linear with `hidden`)."""
    stage: str
    grid: int = 2
    hidden: int = 0


class Gate(nn.Module):
    def __init__(self, gcfg: GateConfig, in_shape, num_classes=10):
        super().__init__()
        c, h, w = in_shape
        self.gcfg = gcfg
        self.kernel = h // gcfg.grid if gcfg.grid > 1 else 0
        cells = (h // self.kernel) ** 2 if self.kernel else 1
        nin = c * cells
        if gcfg.hidden:
            self.fc = nn.Sequential(nn.Linear(nin, gcfg.hidden), nn.ReLU(), nn.Linear(gcfg.hidden, num_classes))
        else:
            self.fc = nn.Linear(nin, num_classes)

    def pool(self, f):
        if self.kernel:
            return torch.flatten(F.max_pool2d(f, self.kernel, self.kernel), 1)
        return torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)

    def forward(self, f):
        return self.fc(self.pool(f))


# ----------------------------------------------------------------------------- counting
def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape=(1, 1, 28, 28)) -> int:
    """Multiply-accumulates per image of Conv2d and Linear layers (pools/adds count 0)."""
    macs = [0]

    def conv_hook(m, i, o):
        macs[0] += o.numel() // o.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, i, o):
        macs[0] += o.numel() // o.shape[0] * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(input_shape))
    model.train(was)
    for h in hooks:
        h.remove()
    return macs[0]


def gate_macs(gate: Gate) -> int:
    return sum(m.in_features * m.out_features for m in gate.modules() if isinstance(m, nn.Linear))


def student_stage_macs(student: Student) -> dict:
    """MACs per stage name, plus 'head'."""
    out, x = {}, torch.zeros(1, 1, 28, 28)
    for name, stage in student.stages.items():
        out[name] = count_macs(stage, tuple(x.shape))
        with torch.no_grad():
            x = stage.eval()(x)
    out["head"] = student.head.in_features * student.head.out_features
    return out


def exit_macs_fractions(student: Student, gates: list) -> list[float]:
    """For gate k: MACs of the trunk up to its stage plus gates 0..k's heads, over the MACs of
    the whole early-exit graph (trunk + final head + every gate) - the DESIGN definition."""
    sm = student_stage_macs(student)
    total = sum(sm.values()) + sum(gate_macs(g) for g in gates)
    names = student.cfg.stage_names
    fr = []
    for k, g in enumerate(gates):
        upto = names.index(g.gcfg.stage)
        trunk = sum(sm[n] for n in names[:upto + 1])
        fr.append((trunk + sum(gate_macs(gg) for gg in gates[:k + 1])) / total)
    return fr


# ----------------------------------------------------------------------------- cache
def config_hash(kind: str, cfg: dict) -> str:
    blob = json.dumps({"kind": kind, "cfg": cfg, "v": 1}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_dir(path=None) -> Path:
    p = Path(path or os.environ.get("PYRUNTIME_CACHE") or Path.home() / ".cache" / "pyruntime")
    p.mkdir(parents=True, exist_ok=True)
    return p


def cache_path(kind: str, key: str, cache=None) -> Path:
    return cache_dir(cache) / f"{kind}-{key}.pt"


def save_checkpoint(path: Path, model: nn.Module, meta: dict):
    tmp = Path(str(path) + ".tmp")
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module) -> dict | None:
    if not Path(path).is_file():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ck["state_dict"])
    return ck["meta"]
