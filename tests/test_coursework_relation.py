"""check_rkd_distance_loss and check_sp_loss: correct losses pass; typical mistakes fail with
their own hint."""

import pytest
import torch
import torch.nn.functional as F

from kdtutor.coursework.relation import (
    RelationCheckError,
    check_rkd_distance_loss,
    check_sp_loss,
    reference_rkd_distance_loss,
    reference_sp_loss,
)
from kdtutor.losses.relation import rkd_distance_loss, sp_loss

# F.mse_loss warns about broadcasting, the very mistake sp_no_flatten makes on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Using a target size:UserWarning")


def flat(message) -> str:
    """The message with its line wrapping undone."""
    return " ".join(str(message).split())


# ----------------------------------------------------------------------------------------------
# RKD distance
# ----------------------------------------------------------------------------------------------
def _cdist(x):
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")


def _psi(x, dist=_cdist):
    d = dist(x.flatten(1))
    return d / d[d > 0].mean()


def rkd_correct(s, t):
    return F.smooth_l1_loss(_psi(s), _psi(t).detach())


def rkd_correct_clamped(s, t):
    def dist(x):
        sq = (x[:, None] - x[None]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
        return sq * (1 - torch.eye(x.shape[0]))

    return F.smooth_l1_loss(_psi(s, dist), _psi(t, dist))


def rkd_squared(s, t):
    def dist(x):
        return _cdist(x).pow(2)

    return F.smooth_l1_loss(_psi(s, dist), _psi(t, dist))


def rkd_no_normalisation(s, t):
    return F.smooth_l1_loss(_cdist(s.flatten(1)), _cdist(t.flatten(1)))


def rkd_mean_with_diagonal(s, t):
    ds, dt = _cdist(s.flatten(1)), _cdist(t.flatten(1))
    return F.smooth_l1_loss(ds / ds.mean(), dt / dt.mean())


def rkd_mse(s, t):
    return F.mse_loss(_psi(s), _psi(t))


def rkd_l1(s, t):
    return F.l1_loss(_psi(s), _psi(t))


def rkd_pairs(s, t):
    b = s.shape[0]
    return F.smooth_l1_loss(_psi(s), _psi(t), reduction="sum") / (b * (b - 1))


def rkd_squared_and_mse(s, t):
    def dist(x):
        return _cdist(x).pow(2)

    return F.mse_loss(_psi(s, dist), _psi(t, dist))


def rkd_naive_sqrt(s, t):
    def dist(x):
        return (x[:, None] - x[None]).pow(2).sum(-1).sqrt()

    return F.smooth_l1_loss(_psi(s, dist), _psi(t, dist))


def rkd_cdist_matrix_product(s, t):
    def dist(x):
        return torch.cdist(x, x)  # float32 matrix-product path from 25 rows: diagonal not 0

    return F.smooth_l1_loss(_psi(s, dist), _psi(t, dist))


def rkd_student_against_teacher(s, t):
    return torch.cdist(s.flatten(1), t.flatten(1)).mean()


def rkd_detached(s, t):
    return rkd_correct(s.detach(), t)


def rkd_per_pair(s, t):
    return F.smooth_l1_loss(_psi(s), _psi(t), reduction="none")


@pytest.mark.parametrize("fn", [rkd_correct, rkd_correct_clamped, rkd_distance_loss])
def test_correct_rkd_distance_losses_pass(fn, capsys):
    assert check_rkd_distance_loss(fn) is True
    assert "✓" in capsys.readouterr().out


def test_rkd_reference_is_independent_of_kdtutor_but_agrees():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    t = torch.randn(12, 9, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(reference_rkd_distance_loss(s, t), rkd_distance_loss(s, t))
    torch.testing.assert_close(
        reference_rkd_distance_loss(s * 7.0, t), reference_rkd_distance_loss(s, t)
    )


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (rkd_squared, "squared distances"),
        (rkd_no_normalisation, "not normalised"),
        (rkd_mean_with_diagonal, "zeros of the diagonal included"),
        (rkd_mse, "you use the squared error"),
        (rkd_l1, "absolute error"),
        (rkd_pairs, "factor B/(B-1)"),
        (rkd_naive_sqrt, "sqrt(0)"),
        (rkd_cdist_matrix_product, "compute_mode='donot_use_mm_for_euclid_dist'"),
        (rkd_student_against_teacher, "never student against teacher"),
        (rkd_detached, "not differentiable"),
        (rkd_per_pair, "single number"),
    ],
)
def test_each_rkd_mistake_gets_its_hint(fn, hint):
    with pytest.raises(RelationCheckError) as info:
        check_rkd_distance_loss(fn)
    assert hint in flat(info.value)


def test_rkd_two_mistakes_at_once_are_both_named():
    with pytest.raises(RelationCheckError) as info:
        check_rkd_distance_loss(rkd_squared_and_mse)
    message = flat(info.value)
    assert "2 typical mistakes" in message
    assert "squared distances" in message and "squared error" in message


def test_rkd_half_mse_is_told_apart_from_huber():
    def half_mse(s, t):
        return 0.5 * F.mse_loss(_psi(s), _psi(t))

    with pytest.raises(RelationCheckError) as info:
        check_rkd_distance_loss(half_mse)
    assert "that is the Huber loss only for differences below 1" in flat(info.value)


# ----------------------------------------------------------------------------------------------
# SP
# ----------------------------------------------------------------------------------------------
def _gram(f):
    f = f.flatten(1)
    return f @ f.t()


def sp_correct(s, t):
    return F.mse_loss(F.normalize(_gram(s), dim=1), F.normalize(_gram(t), dim=1))


def sp_correct_columns(s, t):  # G is symmetric: normalising columns gives the same loss
    gs, gt = F.normalize(_gram(s), dim=0), F.normalize(_gram(t), dim=0)
    return (gs - gt).pow(2).sum() / s.shape[0] ** 2


def sp_unnormalised(s, t):
    return F.mse_loss(_gram(s), _gram(t))


def sp_cosine(s, t):
    fs, ft = F.normalize(s.flatten(1), dim=1), F.normalize(t.flatten(1), dim=1)
    return F.mse_loss(fs @ fs.t(), ft @ ft.t())


def sp_norm_not_squared(s, t):
    diff = F.normalize(_gram(s), dim=1) - F.normalize(_gram(t), dim=1)
    return torch.linalg.matrix_norm(diff) / s.shape[0] ** 2


def sp_divided_by_b(s, t):
    diff = F.normalize(_gram(s), dim=1) - F.normalize(_gram(t), dim=1)
    return diff.pow(2).sum() / s.shape[0]


def sp_manual_division(s, t):
    def norm(g):
        return g / g.norm(dim=1, keepdim=True)

    return F.mse_loss(norm(_gram(s)), norm(_gram(t)))


def sp_no_flatten(s, t):
    gs, gt = s @ s.transpose(-1, -2), t @ t.transpose(-1, -2)
    return F.mse_loss(F.normalize(gs, dim=1), F.normalize(gt, dim=1))


def sp_two_mistakes(s, t):
    return sp_norm_not_squared(s, t) * s.shape[0]


@pytest.mark.parametrize("fn", [sp_correct, sp_correct_columns, sp_loss])
def test_correct_sp_losses_pass(fn, capsys):
    assert check_sp_loss(fn) is True
    assert "✓" in capsys.readouterr().out


def test_sp_reference_is_independent_of_kdtutor_but_agrees():
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(10, 4, 3, 3, generator=gen, dtype=torch.float64)
    t = torch.randn(10, 30, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(reference_sp_loss(s, t), sp_loss(s, t))


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (sp_unnormalised, "is not normalised"),
        (sp_cosine, "cosine similarities"),
        (sp_norm_not_squared, "uses its square"),
        (sp_divided_by_b, "you divide by B;"),
        (sp_manual_division, "0 / 0"),
        (sp_no_flatten, "flatten each to (B, C*H*W)"),
    ],
)
def test_each_sp_mistake_gets_its_hint(fn, hint):
    with pytest.raises(RelationCheckError) as info:
        check_sp_loss(fn)
    assert hint in flat(info.value)


def test_sp_two_mistakes_at_once_are_both_named():
    with pytest.raises(RelationCheckError) as info:
        check_sp_loss(sp_two_mistakes)
    message = flat(info.value)
    assert "2 typical mistakes" in message and "uses its square" in message


def test_unknown_mistake_gets_the_step_list():
    with pytest.raises(RelationCheckError) as info:
        check_sp_loss(lambda s, t: sp_correct(s, t) + 0.5)
    assert "match none of the typical mistakes" in flat(info.value)


def test_no_raise_mode_prints_and_returns_false(capsys):
    assert check_rkd_distance_loss(rkd_mse, raise_on_failure=False) is False
    assert "squared error" in flat(capsys.readouterr().out)


def test_quiet_success(capsys):
    assert check_sp_loss(sp_correct, verbose=False) is True
    assert capsys.readouterr().out == ""


def test_messages_are_wrapped_for_notebooks():
    with pytest.raises(RelationCheckError) as info:
        check_rkd_distance_loss(rkd_squared_and_mse)
    assert max(len(line) for line in str(info.value).splitlines()) <= 78
