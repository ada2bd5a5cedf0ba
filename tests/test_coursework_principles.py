"""check_kd_loss: a correct KD loss passes; each classic mistake fails with its own hint."""

import pytest
import torch
import torch.nn.functional as F

from kdtutor.coursework.principles import KDLossCheckError, check_kd_loss, reference_kd_loss
from kdtutor.losses import kd_loss

# F.kl_div warns about reduction="mean", the very mistake some of these functions make on purpose
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")


def flat(message) -> str:
    """The message with its line wrapping undone."""
    return " ".join(str(message).split())


def correct(zs, zt, T):
    return (
        F.kl_div(F.log_softmax(zs / T, dim=1), F.softmax(zt / T, dim=1), reduction="batchmean")
        * T**2
    )


def correct_explicit(zs, zt, T):
    log_ps, log_pt = torch.log_softmax(zs / T, 1), torch.log_softmax(zt / T, 1)
    return T * T * (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()


def no_t2(zs, zt, T):
    return correct(zs, zt, T) / T**2


def times_t(zs, zt, T):
    return correct(zs, zt, T) / T


def mean_reduction(zs, zt, T):
    return F.kl_div(F.log_softmax(zs / T, 1), F.softmax(zt / T, 1), reduction="mean") * T**2


def sum_reduction(zs, zt, T):
    return F.kl_div(F.log_softmax(zs / T, 1), F.softmax(zt / T, 1), reduction="sum") * T**2


def swapped(zs, zt, T):
    return correct(zt, zs, T)


def no_temperature(zs, zt, T):
    return correct(zs, zt, 1.0) * T**2


def teacher_only_temperature(zs, zt, T):
    return F.kl_div(F.log_softmax(zs, 1), F.softmax(zt / T, 1), reduction="batchmean") * T**2


def cross_entropy(zs, zt, T):
    return -(F.softmax(zt / T, 1) * F.log_softmax(zs / T, 1)).sum(1).mean() * T**2


def probabilities_into_kl_div(zs, zt, T):
    return F.kl_div(F.softmax(zs / T, 1), F.softmax(zt / T, 1), reduction="batchmean") * T**2


def pytorch_defaults(zs, zt, T):
    """F.kl_div's default reduction and no T^2: two mistakes at once."""
    return F.kl_div(F.log_softmax(zs / T, 1), F.softmax(zt / T, 1))


def unstable(zs, zt, T):
    ps, pt = torch.softmax(zs / T, 1), torch.softmax(zt / T, 1)
    return T**2 * (pt * (pt.log() - ps.log())).sum(1).mean()


def returns_float(zs, zt, T):
    return correct(zs, zt, T).item()


def per_sample(zs, zt, T):
    return F.kl_div(F.log_softmax(zs / T, 1), F.softmax(zt / T, 1), reduction="none").sum(1) * T**2


def detached(zs, zt, T):
    return correct(zs.detach(), zt, T)


def raises(zs, zt, T):
    raise RuntimeError("not implemented yet")


def in_place(zs, zt, T):
    zs /= T
    zt /= T
    return correct(zs, zt, 1.0) * T**2


@pytest.mark.parametrize("fn", [correct, correct_explicit, kd_loss])
def test_correct_implementations_pass(fn, capsys):
    assert check_kd_loss(fn) is True
    assert "✓" in capsys.readouterr().out


def test_reference_is_independent_of_kdtutor_but_agrees():
    torch.manual_seed(0)
    zs, zt = torch.randn(9, 7, dtype=torch.float64), torch.randn(9, 7, dtype=torch.float64)
    for T in (1.0, 4.0, 20.0):
        torch.testing.assert_close(reference_kd_loss(zs, zt, T), kd_loss(zs, zt, T))


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (no_t2, "T² factor is missing"),
        (times_t, "the factor is T**2"),
        (mean_reduction, "reduction='batchmean'"),
        (mean_reduction, "off by a factor of K"),
        (sum_reduction, "divide by the batch size"),
        (swapped, "KL direction is swapped"),
        (no_temperature, "softmax is taken without the temperature"),
        (teacher_only_temperature, "only the teacher's logits are divided by T"),
        (cross_entropy, "cross-entropy"),
        (probabilities_into_kl_div, "expects log-probabilities"),
        (unstable, "numerically unstable"),
        (returns_float, "not a torch.Tensor"),
        (per_sample, "one value per sample"),
        (detached, "not differentiable"),
        (raises, "RuntimeError: not implemented yet"),
        (in_place, "in place"),
    ],
)
def test_each_classic_mistake_gets_its_hint(fn, hint):
    with pytest.raises(KDLossCheckError) as info:
        check_kd_loss(fn)
    assert hint in flat(info.value)


def test_single_mistakes_are_named_alone():
    with pytest.raises(KDLossCheckError) as info:
        check_kd_loss(no_t2)
    message = flat(info.value)
    assert "a classic mistake" in message and "reduction" not in message.split("For example")[0]


def test_two_mistakes_at_once_are_both_named():
    with pytest.raises(KDLossCheckError) as info:
        check_kd_loss(pytorch_defaults)
    message = flat(info.value)
    assert "2 classic mistakes" in message
    assert "T² factor is missing" in message and "reduction='batchmean'" in message


def test_unknown_mistake_gets_the_step_list():
    with pytest.raises(KDLossCheckError) as info:
        check_kd_loss(lambda zs, zt, T: correct(zs, zt, T) + 0.5)
    assert "match none of the classic mistakes" in flat(info.value)


def test_no_raise_mode_prints_and_returns_false(capsys):
    assert check_kd_loss(no_t2, raise_on_failure=False) is False
    assert "T² factor is missing" in flat(capsys.readouterr().out)


def test_quiet_success():
    assert check_kd_loss(correct, verbose=False) is True


def test_messages_are_wrapped_for_notebooks():
    with pytest.raises(KDLossCheckError) as info:
        check_kd_loss(pytorch_defaults)
    assert max(len(line) for line in str(info.value).splitlines()) <= 78
