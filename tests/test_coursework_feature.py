"""check_at_loss: a correct attention-transfer loss passes; each typical mistake fails with its own hint."""

import pytest
import torch
import torch.nn.functional as F

from kdtutor.coursework.feature import ATLossCheckError, check_at_loss, reference_at_loss
from kdtutor.losses.feature import at_loss


def flat(message) -> str:
    """The message with its line wrapping undone."""
    return " ".join(str(message).split())


def shrink(s, t):
    size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
    return F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)


def attention(f, p):
    return F.normalize(f.abs().pow(p).sum(dim=1).flatten(1), dim=1)


def correct(s, t, p):
    s, t = shrink(s, t)
    return (attention(s, p) - attention(t, p)).pow(2).mean()


def correct_paper(s, t, p):
    s, t = shrink(s, t)
    return (attention(s, p) - attention(t, p)).norm(dim=1).mean()


def channel_mean(s, t, p):
    """The mean over channels (RepDistiller's code) instead of the sum: the same after normalising."""
    s, t = shrink(s, t)

    def at(f):
        return F.normalize(f.abs().pow(p).mean(1).view(f.size(0), -1))

    return (at(s) - at(t)).pow(2).mean()


def no_normalisation(s, t, p):
    s, t = shrink(s, t)
    qs, qt = (f.abs().pow(p).sum(dim=1).flatten(1) for f in (s, t))
    return (qs - qt).pow(2).mean()


def l1_normalisation(s, t, p):
    s, t = shrink(s, t)
    qs, qt = (F.normalize(f.abs().pow(p).sum(dim=1).flatten(1), p=1, dim=1) for f in (s, t))
    return (qs - qt).pow(2).mean()


def batch_normalisation(s, t, p):
    s, t = shrink(s, t)
    qs, qt = (f.abs().pow(p).sum(dim=1).flatten(1) for f in (s, t))
    return (qs / qs.norm() - qt / qt.norm()).pow(2).mean()


def no_abs(s, t, p):
    s, t = shrink(s, t)
    qs, qt = (F.normalize(f.pow(p).sum(dim=1).flatten(1), dim=1) for f in (s, t))
    return (qs - qt).pow(2).mean()


def sum_over_positions(s, t, p):
    s, t = shrink(s, t)
    return (attention(s, p) - attention(t, p)).pow(2).sum(dim=1).mean()


def upsample(s, t, p):
    size = (max(s.shape[-2], t.shape[-2]), max(s.shape[-1], t.shape[-1]))
    s, t = (
        f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear") for f in (s, t)
    )
    return (attention(s, p) - attention(t, p)).pow(2).mean()


def pool_maps(s, t, p):
    size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
    qs, qt = (F.adaptive_avg_pool2d(f.abs().pow(p).sum(dim=1, keepdim=True), size) for f in (s, t))
    qs, qt = (F.normalize(q.flatten(1), dim=1) for q in (qs, qt))
    return (qs - qt).pow(2).mean()


def unsafe_division(s, t, p):
    s, t = shrink(s, t)
    qs, qt = (f.abs().pow(p).sum(dim=1).flatten(1) for f in (s, t))
    qs, qt = (q / q.norm(dim=1, keepdim=True) for q in (qs, qt))
    return (qs - qt).pow(2).mean()


def no_resize(s, t, p):
    return (attention(s, p) - attention(t, p)).pow(2).mean()


def returns_float(s, t, p):
    return correct(s, t, p).item()


def per_sample(s, t, p):
    s, t = shrink(s, t)
    return (attention(s, p) - attention(t, p)).pow(2).mean(dim=1)


def detached(s, t, p):
    return correct(s.detach(), t, p)


def in_place(s, t, p):
    s.abs_()
    return correct(s, t, p)


@pytest.mark.parametrize("fn", [correct, channel_mean, at_loss])
def test_a_correct_code_form_passes(fn, capsys):
    assert check_at_loss(fn) is True
    assert "✓ check_at_loss" in capsys.readouterr().out


def test_the_paper_form_passes_in_paper_mode():
    assert check_at_loss(correct_paper, mode="paper", verbose=False)
    assert check_at_loss(
        lambda s, t, p: at_loss(s, t, p, mode="paper"), mode="paper", verbose=False
    )


def test_the_reference_agrees_with_the_package():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(4, 8, 16, 16, generator=gen, dtype=torch.float64).relu()
    t = torch.randn(4, 32, 8, 8, generator=gen, dtype=torch.float64).relu()
    for mode in ("code", "paper"):
        torch.testing.assert_close(reference_at_loss(s, t, 2.0, mode), at_loss(s, t, 2.0, mode))


@pytest.mark.parametrize(
    ("fn", "mode", "expected"),
    [
        (no_normalisation, "code", "not normalised"),
        (l1_normalisation, "code", "L1 norm"),
        (batch_normalisation, "code", "over the whole batch"),
        (no_abs, "code", "without the absolute value"),
        (correct_paper, "code", "the paper's form"),
        (correct, "paper", "you computed the code form"),
        (sum_over_positions, "code", "summed over positions"),
        (upsample, "code", "enlarged (interpolated)"),
        (pool_maps, "code", "you resized the attention maps"),
    ],
)
def test_typical_mistakes_are_named(fn, mode, expected):
    with pytest.raises(ATLossCheckError) as info:
        check_at_loss(fn, mode=mode)
    assert expected in flat(info.value)
    assert "For example" in flat(info.value)


def test_two_mistakes_at_once_are_both_named():
    def unnormalised_sum_over_positions(s, t, p):
        s, t = shrink(s, t)
        qs, qt = (f.abs().pow(p).sum(dim=1).flatten(1) for f in (s, t))
        return (qs - qt).pow(2).sum(dim=1).mean()

    with pytest.raises(ATLossCheckError) as info:
        check_at_loss(unnormalised_sum_over_positions)
    message = flat(info.value)
    assert "2 typical mistakes" in message
    assert "not normalised" in message and "summed over positions" in message


def test_division_by_a_zero_norm_is_explained():
    with pytest.raises(ATLossCheckError) as info:
        check_at_loss(unsafe_division)
    assert "F.normalize" in flat(info.value) and "0 / 0" in flat(info.value)


def test_a_missing_resize_is_explained():
    with pytest.raises(ATLossCheckError) as info:
        check_at_loss(no_resize)
    assert "adaptive_avg_pool2d" in flat(info.value)


def test_an_unknown_mistake_gets_the_steps():
    with pytest.raises(ATLossCheckError) as info:
        check_at_loss(lambda s, t, p: correct(s, t, p) * 1.7)
    assert "none of the typical mistakes" in flat(info.value)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (returns_float, "not a torch.Tensor"),
        (per_sample, "one value per sample"),
        (detached, "not differentiable"),
        (in_place, "in place"),
    ],
)
def test_shape_type_gradient_and_in_place_problems(fn, expected):
    with pytest.raises(ATLossCheckError) as info:
        check_at_loss(fn)
    assert expected in flat(info.value)


def test_without_raising_it_prints_and_returns_false(capsys):
    assert check_at_loss(no_normalisation, raise_on_failure=False) is False
    assert "✗ check_at_loss" in capsys.readouterr().out


def test_bad_mode():
    with pytest.raises(ValueError, match="code"):
        check_at_loss(correct, mode="eq2")
