"""KD and hinge losses against hand computations."""
import math

import pytest

torch = pytest.importorskip("torch", reason="pyruntime.train needs torch (pip install -e '.[train]')")

from pyruntime.train.distill import kd_loss, mean_ci95  # noqa: E402
from pyruntime.train.gates import multiclass_hinge  # noqa: E402


def _softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def test_kd_loss_matches_hand_computation_with_t_squared():
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 1.0, 0.0], [1.0, 0.0, 2.0]]
    y = [1, 2]
    T, alpha = 3.0, 0.7
    kl = ce = 0.0
    for si, ti, yi in zip(s, t, y):
        pt = _softmax([x / T for x in ti])
        ps = _softmax([x / T for x in si])
        kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
        ce += -math.log(_softmax(si)[yi])
    expected = alpha * T * T * kl / 2 + (1 - alpha) * ce / 2
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T, alpha)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # alpha = 1: pure soft targets, with the T^2 factor
    got1 = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T, 1.0)
    assert float(got1) == pytest.approx(T * T * kl / 2, rel=1e-5)


def test_kd_loss_gradient_scale_is_t_independent_at_high_t():
    # The T^2 factor keeps the soft-target gradient magnitude roughly constant in T.
    torch.manual_seed(0)
    s0, t = torch.randn(64, 10), torch.randn(64, 10)
    y = torch.randint(0, 10, (64,))
    norms = []
    for T in (8.0, 16.0):
        s = s0.clone().requires_grad_(True)
        kd_loss(s, t, y, T, 1.0).backward()
        norms.append(float(s.grad.norm()))
    # d/ds of KL at temperature T is ~ (s - t) / (C * T^2) once T >> logits; T^2 cancels it
    assert norms[1] / norms[0] == pytest.approx(1.0, rel=0.05)


def test_multiclass_hinge_hand_computation():
    s = torch.tensor([[2.0, 1.5, -1.0], [0.0, 3.0, 0.5], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 2, 1])
    # crammer-singer: max(0, 1 - s_y + max_{j != y} s_j)
    cs = [max(0, 1 - 2.0 + 1.5), max(0, 1 - 0.5 + 3.0), max(0, 1 - 1.0 + 1.0)]
    assert float(multiclass_hinge(s, y)) == pytest.approx(sum(cs) / 3)
    ww = [max(0, 1 - 2 + 1.5) + max(0, 1 - 2 - 1), max(0, 1 - 0.5 + 0) + max(0, 1 - 0.5 + 3), 1 + 1]
    assert float(multiclass_hinge(s, y, kind="weston_watkins")) == pytest.approx(sum(ww) / 3)
    # a margin >= 1 everywhere costs nothing
    assert float(multiclass_hinge(torch.tensor([[5.0, 1.0, 0.0]]), torch.tensor([0]))) == 0.0


def test_mean_ci95():
    m, h = mean_ci95([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0)
    assert h == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-4)
