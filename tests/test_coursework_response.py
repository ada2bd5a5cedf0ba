"""check_dkd_loss: correct DKD losses pass; each typical mistake fails with its own hint."""

import pytest
import torch
import torch.nn.functional as F

from kdtutor.coursework.response import DKDLossCheckError, check_dkd_loss, reference_dkd_loss
from kdtutor.losses import dkd_loss, kd_loss


def flat(message) -> str:
    """The message with its line wrapping undone."""
    return " ".join(str(message).split())


def _mask(zs, target):
    return F.one_hot(target, zs.shape[1]).bool()


def correct(zs, zt, target, T):
    """Masked log_softmax for NCKD, clamped binary probabilities for TCKD."""
    mask = _mask(zs, target)
    ps, pt = F.softmax(zs / T, 1), F.softmax(zt / T, 1)
    bs = torch.stack([ps[mask], 1 - ps[mask]], 1).clamp_min(1e-12)
    bt = torch.stack([pt[mask], 1 - pt[mask]], 1).clamp_min(1e-12)
    tckd = (bt * (bt.log() - bs.log())).sum(1).mean()
    log_hs = F.log_softmax((zs / T).masked_fill(mask, float("-inf")), 1)
    log_ht = F.log_softmax((zt / T).masked_fill(mask, float("-inf")), 1)
    nckd = (log_ht.exp() * (log_ht - log_hs)).masked_fill(mask, 0.0).sum(1).mean()
    return T**2 * tckd, T**2 * nckd


def authors_style(zs, zt, target, T):
    """Zhao et al.'s code: masked sums for b, the target's logit lowered by 1000 for NCKD."""
    mask = _mask(zs, target).float()
    ps, pt = F.softmax(zs / T, 1), F.softmax(zt / T, 1)
    bs = torch.stack([(ps * mask).sum(1), (ps * (1 - mask)).sum(1)], 1)
    bt = torch.stack([(pt * mask).sum(1), (pt * (1 - mask)).sum(1)], 1)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * T**2 / zs.shape[0]
    log_hs = F.log_softmax(zs / T - 1000.0 * mask, 1)
    ht = F.softmax(zt / T - 1000.0 * mask, 1)
    nckd = F.kl_div(log_hs, ht, reduction="sum") * T**2 / zs.shape[0]
    return tckd, nckd


def with_bug(kind):
    def fn(zs, zt, target, T):
        tckd, nckd = correct(zs, zt, target, T)
        mask = _mask(zs, target)
        log_ps, log_pt = F.log_softmax(zs / T, 1), F.log_softmax(zt / T, 1)
        if kind == "no T^2":
            return tckd / T**2, nckd / T**2
        if kind == "order":
            return nckd, tckd
        if kind == "full KL":
            return tckd, kd_loss(zs, zt, T)
        if kind == "not renormalised":
            return tckd, T**2 * (log_pt.exp() * (log_pt - log_ps)).masked_fill(mask, 0).sum(
                1
            ).mean()
        if kind == "zeroed target":
            log_hs = F.log_softmax((zs / T).masked_fill(mask, 0.0), 1)
            log_ht = F.log_softmax((zt / T).masked_fill(mask, 0.0), 1)
            terms = (log_ht.exp() * (log_ht - log_hs)).masked_fill(mask, 0.0)
            return tckd, T**2 * terms.sum(1).mean()
        if kind == "weighted":
            log_hs = F.log_softmax((zs / T).masked_fill(mask, float("-inf")), 1)
            log_ht = F.log_softmax((zt / T).masked_fill(mask, float("-inf")), 1)
            per = (log_ht.exp() * (log_ht - log_hs)).masked_fill(mask, 0.0).sum(1)
            return tckd, T**2 * ((1 - log_pt.exp()[mask]) * per).mean()
        if kind == "direction":
            return correct(zt, zs, target, T)
        if kind == "mean":
            return tckd / 2, nckd / zs.shape[1]
        if kind == "no temperature":
            tckd1, nckd1 = correct(zs, zt, target, 1.0)
            return T**2 * tckd1, T**2 * nckd1
        if kind == "unstable":
            ps, pt = log_ps.exp(), log_pt.exp()
            bs = torch.stack([ps[mask], 1 - ps[mask]], 1)
            bt = torch.stack([pt[mask], 1 - pt[mask]], 1)
            hs = ps.masked_fill(mask, 0) / (1 - ps[mask]).unsqueeze(1)
            ht = pt.masked_fill(mask, 0) / (1 - pt[mask]).unsqueeze(1)
            t = (bt * (bt.log() - bs.log())).sum(1).mean()
            n = (ht * (ht.log() - hs.log())).masked_fill(mask, 0).sum(1).mean()
            return T**2 * t, T**2 * n
        if kind == "float":
            return tckd.item(), nckd
        if kind == "sum":
            return tckd + nckd
        if kind == "per sample":
            return tckd.expand(zs.shape[0]), nckd
        if kind == "detached":
            return correct(zs.detach(), zt, target, T)
        if kind == "raises":
            raise RuntimeError("not implemented yet")
        if kind == "in place":
            zs /= T
            return correct(zs, zt, target, 1.0)
        if kind == "unknown":
            return tckd, nckd + 0.5
        raise AssertionError(kind)

    return fn


@pytest.mark.parametrize(
    "fn", [correct, authors_style, dkd_loss], ids=["masked", "authors", "kdtutor"]
)
def test_correct_implementations_pass(fn, capsys):
    assert check_dkd_loss(fn) is True
    assert "✓" in capsys.readouterr().out


def test_reference_is_independent_of_kdtutor_but_agrees():
    torch.manual_seed(0)
    zs, zt = torch.randn(9, 7, dtype=torch.float64), torch.randn(9, 7, dtype=torch.float64)
    target = torch.randint(7, (9,))
    for T in (1.0, 4.0, 20.0):
        mine, theirs = reference_dkd_loss(zs, zt, target, T), dkd_loss(zs, zt, target, T)
        for a, b in zip(mine, theirs, strict=True):
            torch.testing.assert_close(a, b)


def test_reference_satisfies_the_kd_identity():
    """Per batch of one: KL(p_t || p_s) = TCKD + (1 - p_t,y) NCKD."""
    torch.manual_seed(1)
    zs, zt = torch.randn(1, 10, dtype=torch.float64), torch.randn(1, 10, dtype=torch.float64) * 3
    target = torch.tensor([4])
    tckd, nckd = reference_dkd_loss(zs, zt, target, 4.0)
    weight = 1 - F.softmax(zt / 4.0, 1)[0, 4]
    torch.testing.assert_close(tckd + weight * nckd, kd_loss(zs, zt, 4.0))


@pytest.mark.parametrize(
    ("kind", "hints"),
    [
        (
            "no T^2",
            ["both terms are wrong", "TCKD lacks the T² factor", "NCKD lacks the T² factor"],
        ),
        ("order", ["wrong order", "return (tckd, nckd)"]),
        (
            "full KL",
            ["NCKD is wrong (TCKD is right)", "whole KD divergence", "leaves the target class out"],
        ),
        ("not renormalised", ["Renormalise them over the non-target classes"]),
        ("zeroed target", ["sets the target's logit to 0", "-inf"]),
        ("weighted", ["multiplied by the teacher's non-target mass", "couples the two terms"]),
        ("direction", ["TCKD's KL is the wrong way round", "NCKD's KL is the wrong way round"]),
        ("mean", ["divides it by 2", "divides it by the number of classes K"]),
        ("no temperature", ["without the temperature"]),
        ("unstable", ["correct on ordinary logits", "1 - p_target is exactly 0", "nan"]),
        ("float", ["tckd is a float, not a torch.Tensor"]),
        ("sum", ["must return a pair (tckd, nckd)"]),
        ("per sample", ["one value per sample"]),
        ("detached", ["not differentiable"]),
        ("raises", ["RuntimeError: not implemented yet"]),
        ("in place", ["in place"]),
        ("unknown", ["matches none of the typical mistakes", "mask the target's logit with -inf"]),
    ],
)
def test_each_typical_mistake_gets_its_hint(kind, hints):
    with pytest.raises(DKDLossCheckError) as info:
        check_dkd_loss(with_bug(kind))
    message = flat(info.value)
    for hint in hints:
        assert hint in message, f"{hint!r} not in {message!r}"


def test_a_right_term_is_said_to_be_right():
    with pytest.raises(DKDLossCheckError) as info:
        check_dkd_loss(with_bug("not renormalised"))
    message = flat(info.value)
    assert "TCKD is right" in message and "TCKD lacks" not in message


def test_no_raise_mode_prints_and_returns_false(capsys):
    assert check_dkd_loss(with_bug("weighted"), raise_on_failure=False) is False
    assert "non-target mass" in flat(capsys.readouterr().out)


def test_quiet_success(capsys):
    assert check_dkd_loss(correct, verbose=False) is True
    assert capsys.readouterr().out == ""


def test_messages_are_wrapped_for_notebooks():
    with pytest.raises(DKDLossCheckError) as info:
        check_dkd_loss(with_bug("direction"))
    assert max(len(line) for line in str(info.value).splitlines()) <= 78
