"""kdtutor.analysis.response: response diagnostics."""

import pytest
import torch

from kdtutor.analysis import DIAGNOSTICS, response_diagnostics
from kdtutor.errors import ShapeMismatchError
from kdtutor.losses import dist_loss, dkd_loss, kd_loss


def test_identical_logits_have_no_gap():
    torch.manual_seed(0)
    z = torch.randn(50, 10) * 3
    labels = z.argmax(dim=1)
    d = response_diagnostics(z, z, labels, T=4.0)
    assert list(d) == list(DIAGNOSTICS)
    for key in ("kd", "tckd", "nckd", "inter", "intra"):
        assert abs(d[key]) < 1e-4, key
    assert d["agreement"] == 100.0 and d["accuracy"] == 100.0


def test_values_are_the_package_losses():
    torch.manual_seed(1)
    zs, zt = torch.randn(40, 7), torch.randn(40, 7) * 2
    labels = torch.randint(7, (40,))
    d = response_diagnostics(zs, zt, labels, T=2.0)
    tckd, nckd = dkd_loss(zs, zt, labels, 2.0)
    inter, intra = dist_loss(zs, zt, 2.0)
    assert d["kd"] == pytest.approx(float(kd_loss(zs, zt, 2.0)))
    assert (d["tckd"], d["nckd"]) == pytest.approx((float(tckd), float(nckd)))
    assert (d["inter"], d["intra"]) == pytest.approx((float(inter), float(intra)))
    agree = (zs.argmax(1) == zt.argmax(1)).float().mean().item() * 100
    assert d["agreement"] == pytest.approx(agree)
    assert d["accuracy"] == pytest.approx((zs.argmax(1) == labels).float().mean().item() * 100)


def test_shape_errors():
    z = torch.zeros(4, 3)
    with pytest.raises(ShapeMismatchError):
        response_diagnostics(z, torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ShapeMismatchError):
        response_diagnostics(z, z, torch.zeros(5, dtype=torch.long))
