"""check_dml_loss and check_cskd_loss: correct losses pass; each typical mistake fails with
its own hint; the references agree with kdtutor's own losses."""

import pytest
import torch
import torch.nn.functional as F

from kdtutor.coursework.schemes import (
    CSKDLossCheckError,
    DMLLossCheckError,
    check_cskd_loss,
    check_dml_loss,
    reference_cskd_loss,
    reference_dml_losses,
)
from kdtutor.errors import KDTutorError
from kdtutor.losses import kd_loss
from kdtutor.losses.schemes import mutual_kl
from kdtutor.methods import build_distiller
from kdtutor.models import build_model

# F.kl_div warns about reduction="mean", the very mistake some of these functions make on purpose
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")


def flat(message) -> str:
    """The message with its line wrapping undone."""
    return " ".join(str(message).split())


# ----------------------------------------------------------------------------------------------
# the references against kdtutor's losses
# ----------------------------------------------------------------------------------------------
def test_dml_reference_agrees_with_mutual_kl_and_cross_entropy():
    torch.manual_seed(0)
    for batch, classes, scale in ((9, 7, 1.0), (1, 10, 3.0), (32, 100, 5.0)):
        z1 = torch.randn(batch, classes, dtype=torch.float64) * scale
        z2 = torch.randn(batch, classes, dtype=torch.float64) * scale
        y = torch.randint(classes, (batch,))
        loss_1, loss_2 = reference_dml_losses(z1, z2, y)
        torch.testing.assert_close(loss_1, F.cross_entropy(z1, y) + mutual_kl(z1, [z2]))
        torch.testing.assert_close(loss_2, F.cross_entropy(z2, y) + mutual_kl(z2, [z1]))
        # at T = 1, DML's mutual term is Hinton's KD loss with the other peer as the teacher
        torch.testing.assert_close(loss_1 - F.cross_entropy(z1, y), kd_loss(z1, z2, 1.0))


def test_dml_reference_detaches_the_other_peer():
    torch.manual_seed(1)
    z1 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(4, (5,))
    loss_1, _ = reference_dml_losses(z1, z2, y)
    grad_1, grad_2 = torch.autograd.grad(loss_1, [z1, z2], allow_unused=True)
    assert grad_2 is None
    # d(CE + KL(p2 || p1)) / dz1 = (p1 - onehot(y)) / B + (p1 - p2) / B, by hand
    p1, p2 = F.softmax(z1.detach(), 1), F.softmax(z2.detach(), 1)
    expected = (2 * p1 - F.one_hot(y, 4) - p2) / 5
    torch.testing.assert_close(grad_1, expected)


def test_cskd_reference_agrees_with_kd_loss_and_cross_entropy():
    torch.manual_seed(2)
    for T, lam in ((1.0, 1.0), (4.0, 0.5), (10.0, 3.0)):
        z = torch.randn(11, 10, dtype=torch.float64) * 3
        zp = torch.randn(11, 10, dtype=torch.float64) * 3
        y = torch.randint(10, (11,))
        expected = F.cross_entropy(z, y) + lam * kd_loss(z, zp, T)
        torch.testing.assert_close(reference_cskd_loss(z, zp, y, T, lam), expected)


def test_cskd_reference_is_zero_kl_for_identical_predictions():
    """With the partner predicting exactly as the anchor, only the cross entropy is left."""
    z = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(5, (6,))
    torch.testing.assert_close(
        reference_cskd_loss(z, z.clone(), y, 4.0, 3.0), F.cross_entropy(z, y)
    )


# ----------------------------------------------------------------------------------------------
# DML
# ----------------------------------------------------------------------------------------------
def _kl(target, z, reduction="batchmean"):
    """KL(softmax(target) || softmax(z)) with F.kl_div; the target is detached."""
    return F.kl_div(F.log_softmax(z, 1), F.softmax(target.detach(), 1), reduction=reduction)


def dml_correct(z1, z2, y):
    return F.cross_entropy(z1, y) + _kl(z2, z1), F.cross_entropy(z2, y) + _kl(z1, z2)


def dml_explicit(z1, z2, y):
    log_p1, log_p2 = torch.log_softmax(z1, 1), torch.log_softmax(z2, 1)
    t1, t2 = log_p1.detach(), log_p2.detach()
    kl_1 = (t2.exp() * (t2 - log_p1)).sum(1).mean()
    kl_2 = (t1.exp() * (t1 - log_p2)).sum(1).mean()
    return F.cross_entropy(z1, y) + kl_1, F.cross_entropy(z2, y) + kl_2


def dml_kdtutor(z1, z2, y):
    return (
        F.cross_entropy(z1, y) + mutual_kl(z1, [z2]),
        F.cross_entropy(z2, y) + mutual_kl(z2, [z1]),
    )


_DISTILLER = build_distiller("dml", build_model("cnn_tiny"), update="simultaneous")


def dml_distiller(z1, z2, y):
    """The package's DML distiller's own weighted losses, peer by peer."""
    return tuple(
        sum(_DISTILLER.peer_losses(k, z, y, [other]).values())
        for k, z, other in ((1, z1, z2), (2, z2, z1))
    )


def dml_with_bug(kind):
    def fn(z1, z2, y):
        ce1, ce2 = F.cross_entropy(z1, y), F.cross_entropy(z2, y)
        loss_1, loss_2 = dml_correct(z1, z2, y)
        if kind == "order":
            return loss_2, loss_1
        if kind == "twice":
            return loss_1, loss_1
        if kind == "direction":  # KL(p_own || p_other)
            return (
                ce1 + F.kl_div(F.log_softmax(z2.detach(), 1), F.softmax(z1, 1), reduction="batchmean"),
                ce2 + F.kl_div(F.log_softmax(z1.detach(), 1), F.softmax(z2, 1), reduction="batchmean"),
            )  # fmt: skip
        if kind == "direction peer 2":
            return (
                loss_1,
                ce2 + F.kl_div(F.log_softmax(z1.detach(), 1), F.softmax(z2, 1), reduction="batchmean"),
            )  # fmt: skip
        if kind == "no ce":
            return _kl(z2, z1), _kl(z1, z2)
        if kind == "other ce":
            return ce2 + _kl(z2, z1), ce1 + _kl(z1, z2)
        if kind == "soft ce":
            soft = -(F.softmax(z2.detach(), 1) * F.log_softmax(z1, 1)).sum(1).mean()
            return ce1 + soft, loss_2
        if kind == "probabilities":
            kl = F.kl_div(F.softmax(z2, 1), F.softmax(z1.detach(), 1), reduction="batchmean")
            return loss_1, ce2 + kl
        if kind == "mean":
            return ce1 + _kl(z2, z1, "mean"), ce2 + _kl(z1, z2, "mean")
        if kind == "sum":
            return ce1 + _kl(z2, z1, "sum"), ce2 + _kl(z1, z2, "sum")
        if kind == "no ce and mean":
            return _kl(z2, z1, "mean"), _kl(z1, z2, "mean")
        if kind == "not detached":
            kl = lambda t, z: F.kl_div(F.log_softmax(z, 1), F.softmax(t, 1), reduction="batchmean")  # noqa: E731
            return ce1 + kl(z2, z1), ce2 + kl(z1, z2)
        if kind == "peer 2 not detached":
            kl = F.kl_div(F.log_softmax(z2, 1), F.softmax(z1, 1), reduction="batchmean")
            return loss_1, ce2 + kl
        if kind == "own detached":
            return dml_correct(z1.detach(), z2.detach(), y)
        if kind == "own logits detached in the KL":
            kl = F.kl_div(F.log_softmax(z1.detach(), 1), F.softmax(z2.detach(), 1),
                          reduction="batchmean")  # fmt: skip
            return ce1 + kl, loss_2
        if kind == "unstable":
            p1, p2 = F.softmax(z1, 1), F.softmax(z2, 1)
            q1, q2 = p1.detach(), p2.detach()
            return (
                ce1 + (q2 * (q2.log() - p1.log())).sum(1).mean(),
                ce2 + (q1 * (q1.log() - p2.log())).sum(1).mean(),
            )
        if kind == "float":
            return loss_1.item(), loss_2
        if kind == "sum of both":
            return loss_1 + loss_2
        if kind == "per sample":
            per = F.cross_entropy(z1, y, reduction="none")
            return per, loss_2
        if kind == "raises":
            raise RuntimeError("not implemented yet")
        if kind == "in place":  # a shift that leaves the softmax as it is, done in place
            z1 -= z1.max(dim=1, keepdim=True).values
            return dml_correct(z1, z2, y)
        if kind == "detached in place":
            z2.detach_()
            return dml_correct(z1, z2, y)
        if kind == "unknown":
            return loss_1 + 0.25, loss_2
        raise AssertionError(kind)

    return fn


@pytest.mark.parametrize(
    "fn", [dml_correct, dml_explicit, dml_kdtutor, dml_distiller],
    ids=["kl_div", "explicit", "mutual_kl", "distiller"],
)  # fmt: skip
def test_correct_dml_losses_pass(fn, capsys):
    assert check_dml_loss(fn) is True
    out = capsys.readouterr().out
    assert "✓ check_dml_loss" in out and "target is detached" in flat(out)


@pytest.mark.parametrize(
    ("kind", "hints"),
    [
        ("order", ["wrong order", "return (loss_1, loss_2)"]),
        ("twice", ["both values are peer 1's loss", "CE(logits_2, y) + KL(p_1 || p_2)"]),
        (
            "direction",
            [
                "both losses make the same mistake",
                "peer 1's KL is the wrong way round",
                "KL(p_1 || p_2)",
                "F.softmax(logits_2.detach(), 1)",
            ],
        ),
        (
            "direction peer 2",
            ["peer 2's loss is wrong (peer 1's is right)", "peer 2's KL is the wrong way round"],
        ),
        ("no ce", ["no cross entropy with the labels", "F.cross_entropy(logits_1, y)"]),
        ("other ce", ["uses peer 2's cross entropy"]),
        ("soft ce", ["peer 1's loss is wrong", "not the KL divergence", "entropy of p_2"]),
        ("probabilities", ["peer 2's F.kl_div is given probabilities"]),
        ("mean", ["reduction='mean'", "number of classes K"]),
        ("sum", ["summed over the batch", "divide it by the batch size"]),
        ("no ce and mean", ["2 mistakes at once", "no cross entropy", "reduction='mean'"]),
        ("not detached", ["peer 1's loss sends gradient into peer 2's logits", "Detach it"]),
        ("peer 2 not detached", ["peer 2's loss sends gradient into peer 1's logits"]),
        ("own detached", ["peer 1's loss is not differentiable", "detach only peer 2's"]),
        ("own logits detached in the KL", ["gradient of peer 1's loss", "is not"]),
        ("unstable", ["correct on ordinary logits", "extreme logits", "F.log_softmax"]),
        ("float", ["loss_1 is a float, not a torch.Tensor"]),
        ("sum of both", ["must return a pair (loss_1, loss_2)"]),
        ("per sample", ["one value per sample"]),
        ("raises", ["RuntimeError: not implemented yet"]),
        ("in place", ["in place"]),
        ("detached in place", ["in place", "logits_2.detach()"]),
        ("unknown", ["matches none of the typical mistakes", "F.cross_entropy(logits_1, y)"]),
    ],
)
def test_each_dml_mistake_gets_its_hint(kind, hints):
    with pytest.raises(DMLLossCheckError) as info:
        check_dml_loss(dml_with_bug(kind))
    message = flat(info.value)
    for hint in hints:
        assert hint in message, f"{hint!r} not in {message!r}"


def test_a_right_dml_loss_is_said_to_be_right():
    with pytest.raises(DMLLossCheckError) as info:
        check_dml_loss(dml_with_bug("probabilities"))
    message = flat(info.value)
    assert "peer 1's is right" in message and "peer 1's F.kl_div" not in message


# ----------------------------------------------------------------------------------------------
# CS-KD
# ----------------------------------------------------------------------------------------------
def cskd_correct(z, zp, y, T, lam):
    kl = F.kl_div(F.log_softmax(z / T, 1), F.softmax(zp.detach() / T, 1), reduction="batchmean")
    return F.cross_entropy(z, y) + lam * T**2 * kl


def cskd_authors_style(z, zp, y, T, lam):
    """The authors' KDLoss: a summed KL times T^2 divided by the anchors' count, target from
    a no-grad forward."""
    with torch.no_grad():
        target = F.softmax(zp / T, 1)
    kl = F.kl_div(torch.log_softmax(z / T, 1), target, reduction="sum") * T**2 / z.shape[0]
    return torch.mean(F.cross_entropy(z, y)) + lam * kl


def cskd_kdtutor(z, zp, y, T, lam):
    return F.cross_entropy(z, y) + lam * kd_loss(z, zp.detach(), T)


def cskd_with_bug(kind):
    def fn(z, zp, y, T, lam):
        ce = F.cross_entropy(z, y)
        log_p, q = F.log_softmax(z / T, 1), F.softmax(zp.detach() / T, 1)
        kl = F.kl_div(log_p, q, reduction="batchmean")
        if kind == "no T^2":
            return ce + lam * kl
        if kind == "times T":
            return ce + lam * T * kl
        if kind == "mean":
            return ce + lam * T**2 * F.kl_div(log_p, q, reduction="mean")
        if kind == "sum":
            return ce + lam * T**2 * F.kl_div(log_p, q, reduction="sum")
        if kind == "direction":
            swapped = F.kl_div(F.log_softmax(zp.detach() / T, 1), F.softmax(z / T, 1),
                               reduction="batchmean")  # fmt: skip
            return ce + lam * T**2 * swapped
        if kind == "no temperature":
            plain = F.kl_div(F.log_softmax(z, 1), F.softmax(zp.detach(), 1), reduction="batchmean")
            return ce + lam * T**2 * plain
        if kind == "ce on pairs":
            return ce + F.cross_entropy(zp, y) + lam * T**2 * kl
        if kind == "ce on the concatenation":
            both = F.cross_entropy(torch.cat([z, zp]), torch.cat([y, y]))
            return both + lam * T**2 * kl
        if kind == "no ce":
            return lam * T**2 * kl
        if kind == "lam forgotten":
            return ce + T**2 * kl
        if kind == "lam on all":
            return lam * (ce + T**2 * kl)
        if kind == "soft ce":
            return ce + lam * T**2 * -(q * log_p).sum(1).mean()
        if kind == "probabilities":
            return ce + lam * T**2 * F.kl_div(log_p.exp(), q, reduction="batchmean")
        if kind == "no T^2 and mean":
            return ce + lam * F.kl_div(log_p, q, reduction="mean")
        if kind == "not detached":
            return ce + lam * kd_loss(z, zp, T)
        if kind == "anchors detached":
            return cskd_correct(z.detach(), zp, y, T, lam)
        if kind == "unstable":
            p, qq = F.softmax(z / T, 1), F.softmax(zp.detach() / T, 1)
            return ce + lam * T**2 * (qq * (qq.log() - p.log())).sum(1).mean()
        if kind == "float":
            return float(cskd_correct(z, zp, y, T, lam))
        if kind == "per sample":
            per = F.kl_div(log_p, q, reduction="none").sum(1)
            return F.cross_entropy(z, y, reduction="none") + lam * T**2 * per
        if kind == "raises":
            raise RuntimeError("not implemented yet")
        if kind == "in place":
            z /= T
            return cskd_correct(z * T, zp, y, T, lam)
        if kind == "unknown":
            return cskd_correct(z, zp, y, T, lam) * 1.5
        raise AssertionError(kind)

    return fn


@pytest.mark.parametrize(
    "fn", [cskd_correct, cskd_authors_style, cskd_kdtutor], ids=["kl_div", "authors", "kd_loss"]
)
def test_correct_cskd_losses_pass(fn, capsys):
    assert check_cskd_loss(fn) is True
    out = capsys.readouterr().out
    assert "✓ check_cskd_loss" in out and "prediction is detached" in flat(out)


@pytest.mark.parametrize(
    ("kind", "hints"),
    [
        ("no T^2", ["T² factor is missing"]),
        ("times T", ["the factor is T**2"]),
        ("mean", ["reduction='mean'", "number of classes K"]),
        ("sum", ["summed over the batch"]),
        ("direction", ["KL is the wrong way round", "KL(p^T(x') || p^T(x))"]),
        ("no temperature", ["without the temperature"]),
        ("ce on pairs", ["partners' cross entropy", "on the anchors alone"]),
        ("ce on the concatenation", ["averaged over the anchors and the partners together"]),
        ("no ce", ["lacks the cross entropy with the labels"]),
        ("lam forgotten", ["lam is not used"]),
        ("lam on all", ["lam multiplies the whole loss"]),
        ("soft ce", ["not the KL divergence"]),
        ("probabilities", ["expects log-probabilities"]),
        ("no T^2 and mean", ["2 typical mistakes at once", "T² factor", "reduction='mean'"]),
        ("not detached", ["sends gradient into pair_logits", "torch.no_grad()"]),
        ("anchors detached", ["not differentiable"]),
        ("unstable", ["correct on ordinary logits", "F.log_softmax"]),
        ("float", ["not a torch.Tensor"]),
        ("per sample", ["one value per sample"]),
        ("raises", ["RuntimeError: not implemented yet"]),
        ("in place", ["in place"]),
        ("unknown", ["match none of the typical mistakes"]),
    ],
)
def test_each_cskd_mistake_gets_its_hint(kind, hints):
    with pytest.raises(CSKDLossCheckError) as info:
        check_cskd_loss(cskd_with_bug(kind))
    message = flat(info.value)
    for hint in hints:
        assert hint in message, f"{hint!r} not in {message!r}"


def test_single_cskd_mistakes_are_named_alone():
    with pytest.raises(CSKDLossCheckError) as info:
        check_cskd_loss(cskd_with_bug("lam forgotten"))
    diagnosis = flat(info.value).split("For example")[0]
    assert "a typical mistake" in diagnosis and "T²" not in diagnosis


# ----------------------------------------------------------------------------------------------
# both checkers
# ----------------------------------------------------------------------------------------------
def test_no_raise_mode_prints_and_returns_false(capsys):
    assert check_dml_loss(dml_with_bug("not detached"), raise_on_failure=False) is False
    assert "sends gradient into peer 2's logits" in flat(capsys.readouterr().out)
    assert check_cskd_loss(cskd_with_bug("no T^2"), raise_on_failure=False) is False
    assert "T² factor is missing" in flat(capsys.readouterr().out)
    assert check_cskd_loss(cskd_with_bug("not detached"), raise_on_failure=False) is False
    assert "pair_logits" in flat(capsys.readouterr().out)


def test_quiet_success(capsys):
    assert check_dml_loss(dml_correct, verbose=False) is True
    assert check_cskd_loss(cskd_correct, verbose=False) is True
    assert capsys.readouterr().out == ""


def test_something_else_than_a_function_is_refused():
    z = torch.zeros(2, 3)
    with pytest.raises(KDTutorError, match="pass the function itself"):
        check_dml_loss(dml_correct(z, z, torch.zeros(2, dtype=torch.long)))  # type: ignore[arg-type]
    with pytest.raises(KDTutorError, match="my_cskd_loss"):
        check_cskd_loss(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("check", "fn", "error"),
    [
        (check_dml_loss, dml_with_bug("direction"), DMLLossCheckError),
        (check_dml_loss, dml_with_bug("no ce and mean"), DMLLossCheckError),
        (check_dml_loss, dml_with_bug("not detached"), DMLLossCheckError),
        (check_dml_loss, dml_with_bug("unknown"), DMLLossCheckError),
        (check_cskd_loss, cskd_with_bug("no T^2 and mean"), CSKDLossCheckError),
        (check_cskd_loss, cskd_with_bug("not detached"), CSKDLossCheckError),
        (check_cskd_loss, cskd_with_bug("direction"), CSKDLossCheckError),
    ],
)
def test_messages_are_wrapped_for_notebooks(check, fn, error):
    with pytest.raises(error) as info:
        check(fn)
    assert max(len(line) for line in str(info.value).splitlines()) <= 78


def test_success_lines_are_wrapped_for_notebooks(capsys):
    check_dml_loss(dml_correct)
    check_cskd_loss(cskd_correct)
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 78
