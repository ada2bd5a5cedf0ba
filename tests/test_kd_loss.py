"""Hinton's KD loss against an independent NumPy computation, and its stated properties."""

import numpy as np
import pytest
import torch

from kdtutor.errors import ShapeMismatchError
from kdtutor.losses import kd_loss, soft_cross_entropy


def numpy_kd(zs: np.ndarray, zt: np.ndarray, T: float) -> float:
    """T^2 * mean over samples of sum_k p_t log(p_t / p_s), written with explicit loops."""
    total = 0.0
    for i in range(zs.shape[0]):
        es = np.exp((zs[i] - zs[i].max()) / T)
        et = np.exp((zt[i] - zt[i].max()) / T)
        ps, pt = es / es.sum(), et / et.sum()
        total += sum(pt[k] * (np.log(pt[k]) - np.log(ps[k])) for k in range(len(pt)))
    return T * T * total / zs.shape[0]


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0, 20.0])
def test_kd_loss_matches_numpy(T):
    rng = np.random.default_rng(int(T))
    zs = rng.normal(size=(7, 10)) * 3
    zt = rng.normal(size=(7, 10)) * 3
    got = kd_loss(torch.tensor(zs), torch.tensor(zt), T).item()
    assert got == pytest.approx(numpy_kd(zs, zt, T), rel=1e-9, abs=1e-12)


def test_batchmean_not_elementwise_mean():
    """The KL is summed over classes and averaged over samples, so duplicating the batch
    leaves it unchanged while adding classes with zero mass does not divide it."""
    torch.manual_seed(0)
    zs, zt = torch.randn(4, 5), torch.randn(4, 5)
    one = kd_loss(zs, zt, 2.0)
    assert kd_loss(torch.cat([zs, zs]), torch.cat([zt, zt]), 2.0).item() == pytest.approx(
        one.item(), rel=1e-6
    )
    # elementwise "mean" reduction would be smaller by the number of classes
    pt, log_ps = torch.softmax(zt / 2, 1), torch.log_softmax(zs / 2, 1)
    elementwise = (pt * (pt.log() - log_ps)).mean() * 4
    assert one.item() == pytest.approx(elementwise.item() * 5, rel=1e-6)


def test_zero_when_equal_and_positive_otherwise():
    z = torch.randn(6, 10)
    assert kd_loss(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-7)
    assert kd_loss(z, torch.randn(6, 10), 4.0).item() > 0


def test_t2_factor_keeps_gradient_scale():
    """The softened KL's gradient shrinks like 1/T^2 for large T (Hinton 2015, section 2.1):
    with the T^2 factor the gradient norm is roughly constant across temperatures."""
    torch.manual_seed(1)
    zt = torch.randn(64, 10)
    base = torch.randn(64, 10)
    norms, raw = {}, {}
    for T in (4.0, 8.0, 16.0, 32.0):
        for scaled, store in ((True, norms), (False, raw)):
            zs = base.clone().requires_grad_(True)
            kd_loss(zs, zt, T, scale_by_t2=scaled).backward()
            store[T] = zs.grad.norm().item()
    # high-temperature limit: grad of raw KL ~ (z_s - z_t)/(K T^2) after centring
    assert raw[8.0] / raw[16.0] == pytest.approx(4.0, rel=0.1)
    assert raw[16.0] / raw[32.0] == pytest.approx(4.0, rel=0.05)
    assert norms[16.0] / norms[32.0] == pytest.approx(1.0, rel=0.05)
    assert norms[4.0] / norms[32.0] == pytest.approx(1.0, rel=0.35)


def test_high_temperature_limit_is_logit_matching():
    """For large T (and zero-mean logits) T^2 KL -> sum (z_s - z_t)^2 / (2K) per sample (Hinton 2015)."""
    torch.manual_seed(2)
    zs, zt = torch.randn(5, 10, dtype=torch.float64), torch.randn(5, 10, dtype=torch.float64)
    zs, zt = zs - zs.mean(1, keepdim=True), zt - zt.mean(1, keepdim=True)
    expected = ((zs - zt) ** 2).sum(1).mean() / (2 * 10)
    assert kd_loss(zs, zt, 1000.0).item() == pytest.approx(expected.item(), rel=1e-3)


def test_kd_loss_rejects_bad_input():
    with pytest.raises(ShapeMismatchError, match="num_classes"):
        kd_loss(torch.randn(2, 10), torch.randn(2, 100))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), 0.0)


def test_soft_cross_entropy_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    q = torch.tensor([[0.2, 0.3, 0.5]])
    logp = logits - torch.logsumexp(logits, 1, keepdim=True)
    assert soft_cross_entropy(logits, q).item() == pytest.approx(-(q * logp).sum().item(), rel=1e-6)
