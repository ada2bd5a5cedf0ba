"""DKD and DIST: their losses against independent NumPy computations, DKD's decomposition of
KD, and a few training steps through build_distiller."""

import numpy as np
import pytest
import torch

from kdtutor.data import load_dataset
from kdtutor.losses import dist_loss, dkd_loss, kd_loss
from kdtutor.methods import build_distiller
from kdtutor.models import build_model
from kdtutor.train import fit


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def kl(p, q):
    return float(sum(pi * (np.log(pi) - np.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0))


def numpy_dkd(zs, zt, y, T):
    tckd = nckd = 0.0
    for i in range(len(y)):
        ps, pt = softmax(zs[i] / T), softmax(zt[i] / T)
        tckd += kl([pt[y[i]], 1 - pt[y[i]]], [ps[y[i]], 1 - ps[y[i]]])
        others = [k for k in range(zs.shape[1]) if k != y[i]]
        nckd += kl(softmax(zt[i, others] / T), softmax(zs[i, others] / T))
    return T * T * tckd / len(y), T * T * nckd / len(y)


@pytest.mark.parametrize("T", [1.0, 4.0, 8.0])
def test_dkd_matches_numpy(T):
    rng = np.random.default_rng(3)
    zs, zt = rng.normal(size=(6, 7)) * 2, rng.normal(size=(6, 7)) * 2
    y = rng.integers(0, 7, size=6)
    tckd, nckd = dkd_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), T)
    ref = numpy_dkd(zs, zt, y, T)
    assert (tckd.item(), nckd.item()) == pytest.approx(ref, rel=1e-8)


def test_dkd_decomposes_kd_per_sample():
    """KL(p_t||p_s) = TCKD + (1 - p_t[y]) NCKD for each sample (Zhao et al. 2022, eq. 7)."""
    torch.manual_seed(0)
    zs, zt = torch.randn(5, 10, dtype=torch.float64), torch.randn(5, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (5,))
    for i in range(5):
        one = slice(i, i + 1)
        tckd, nckd = dkd_loss(zs[one], zt[one], y[one], 2.0)
        pt_target = torch.softmax(zt[i] / 2.0, 0)[y[i]]
        assert kd_loss(zs[one], zt[one], 2.0).item() == pytest.approx(
            (tckd + (1 - pt_target) * nckd).item(), rel=1e-9
        )


def test_dkd_zero_when_equal():
    z, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    tckd, nckd = dkd_loss(z, z.clone(), y)
    assert tckd.item() == pytest.approx(0, abs=1e-6) and nckd.item() == pytest.approx(0, abs=1e-6)


def numpy_dist(zs, zt, T):
    ps = np.stack([softmax(r / T) for r in zs])
    pt = np.stack([softmax(r / T) for r in zt])
    inter = 1 - np.mean([np.corrcoef(ps[i], pt[i])[0, 1] for i in range(len(ps))])
    intra = 1 - np.mean([np.corrcoef(ps[:, k], pt[:, k])[0, 1] for k in range(ps.shape[1])])
    return T * T * inter, T * T * intra


def test_dist_matches_numpy_and_properties():
    rng = np.random.default_rng(5)
    zs, zt = rng.normal(size=(8, 6)), rng.normal(size=(8, 6))
    inter, intra = dist_loss(torch.tensor(zs), torch.tensor(zt), 4.0)
    assert (inter.item(), intra.item()) == pytest.approx(numpy_dist(zs, zt, 4.0), rel=1e-6)
    # a student that is exactly the teacher has zero loss (up to the 1e-8 guard of the
    # correlation's denominator, negligible at T=1 where the probabilities vary enough)
    z = torch.tensor(zt)
    assert [v.item() for v in dist_loss(z, z.clone(), 1.0)] == pytest.approx([0, 0], abs=1e-6)


@pytest.mark.parametrize("method", ["dkd", "dist"])
def test_trains_through_build_distiller(method):
    train, test = (
        load_dataset("digits", "train", size=200),
        load_dataset("digits", "test", size=100),
    )
    kwargs = {"num_classes": 10, "in_channels": 1, "image_size": 8, "hidden": (32,)}
    teacher = build_model("mlp", **kwargs).eval()
    d = build_distiller(method, build_model("mlp", **kwargs), teacher)
    result = fit(d, train, test, epochs=2, batch_size=50)
    assert all(np.isfinite(v) for v in result.history[-1]["losses"].values())
    if method == "dkd":
        assert d.warmup == pytest.approx(2 / 20)  # second epoch of a 20-epoch warm-up
