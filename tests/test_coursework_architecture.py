"""check_deit_loss and check_successive_halving: correct implementations pass; each typical
mistake, planted, fails with its own name; the references agree with computations made
another way (NumPy and closed forms for DeiT's loss, hand-traced runs for the search) and with
kdtutor's own deit losses and successive halving."""

import heapq
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdtutor.coursework.architecture import (
    _DEIT_CASES,
    _DEIT_CHECK,
    _HALVING_MISTAKES,
    _SH_CASES,
    DeiTLossCheckError,
    SuccessiveHalvingCheckError,
    _Halving,
    check_deit_loss,
    check_successive_halving,
    reference_deit_loss,
    reference_successive_halving,
)
from kdtutor.coursework.messages import within
from kdtutor.errors import KDTutorError
from kdtutor.methods.deit import deit_losses
from kdtutor.search import Candidate, halving_schedule, successive_halving

torch.set_num_threads(1)

# F.kl_div warns about reduction="mean", the very mistake some of these functions make on purpose
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")


def flat(message) -> str:
    """The message with its line wrapping undone."""
    return " ".join(str(message).split())


# ----------------------------------------------------------------------------------------------
# the DeiT reference against computations made another way
# ----------------------------------------------------------------------------------------------
ZC = np.array([[1.0, -0.5, 0.3, 2.0], [0.2, 0.1, -1.2, 0.7], [-0.4, 1.5, 0.0, 0.9]])
ZD = np.array([[0.5, 0.5, -1.0, 1.0], [1.1, -0.3, 0.4, 0.0], [0.3, -0.8, 2.2, -0.1]])
ZT = np.array([[0.1, 2.0, -0.5, 0.3], [-1.0, 0.2, 1.4, 0.6], [0.9, 0.0, -0.2, 1.7]])
Y = np.array([3, 0, 1])


def np_log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def np_deit(zc, zd, zt, y, mode, alpha, tau, eps):
    """DeiT's loss by hand: an explicit smoothed target for the label term; the teacher's
    argmax (hard) or a loop over the samples of the softened KL (soft)."""
    batch, k = zc.shape
    q = np.full(zc.shape, eps / k)
    q[np.arange(batch), y] += 1 - eps
    label = -(q * np_log_softmax(zc)).sum(axis=1).mean()
    if mode == "hard":
        y_t = zt.argmax(axis=1)
        teacher = -np_log_softmax(zd)[np.arange(batch), y_t].mean()
    else:
        total = 0.0
        for row_d, row_t in zip(zd / tau, zt / tau, strict=True):
            p_t = np.exp(row_t) / np.exp(row_t).sum()
            p_d = np.exp(row_d) / np.exp(row_d).sum()
            total += sum(a * math.log(a / b) for a, b in zip(p_t, p_d, strict=True))
        teacher = tau**2 * total / batch
    return (1 - alpha) * label + alpha * teacher


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.mark.parametrize(
    ("mode", "alpha", "tau", "eps"),
    [("hard", 0.5, 1.0, 0.1), ("hard", 0.3, 4.0, 0.0), ("soft", 0.1, 3.0, 0.1), ("soft", 0.7, 1.0, 0.2)],
)  # fmt: skip
def test_deit_reference_against_numpy(mode, alpha, tau, eps):
    got = reference_deit_loss(t64(ZC), t64(ZD), t64(ZT), torch.tensor(Y), mode, alpha, tau, eps)
    assert got.item() == pytest.approx(np_deit(ZC, ZD, ZT, Y, mode, alpha, tau, eps), rel=1e-12)


def test_deit_reference_on_cases_solved_by_hand():
    y = torch.tensor([0])
    # hard: label term log 2 (two equal logits, smoothing or not); teacher argmax 0 and
    # softmax(z_dist) = (1/4, 3/4), so the teacher term is log 4
    z_cls, z_dist = t64([[0.0, 0.0]]), t64([[0.0, math.log(3)]])
    hard = reference_deit_loss(z_cls, z_dist, t64([[5.0, 0.0]]), y, "hard", 0.5, 7.0, 0.2)
    assert hard.item() == pytest.approx(1.5 * math.log(2), rel=1e-12)
    # soft at tau 2: softmax(z_teacher / 2) = (3/4, 1/4) against (1/2, 1/2), so
    # tau² KL = 4 (3/4 log 3/2 + 1/4 log 1/2) = 3 log 3 - 4 log 2
    z_t = t64([[2 * math.log(3), 0.0]])
    soft = reference_deit_loss(z_cls, z_cls, z_t, y, "soft", 0.1, 2.0, 0.2)
    assert soft.item() == pytest.approx(
        0.9 * math.log(2) + 0.1 * (3 * math.log(3) - 4 * math.log(2))
    )


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_deit_reference_agrees_with_kdtutor_deit_losses(mode):
    gen = torch.Generator().manual_seed(7)
    for batch, classes, alpha, tau, eps in ((9, 7, 0.5, 1.0, 0.1), (32, 100, 0.1, 3.0, 0.0)):
        zc, zd, zt = (torch.randn(batch, classes, generator=gen, dtype=torch.float64) * 3
                      for _ in range(3))  # fmt: skip
        y = torch.randint(classes, (batch,), generator=gen)
        losses = deit_losses(zc, zd, zt, y, distillation=mode, ce_weight=1 - alpha,
                             kd_weight=alpha, T=tau, label_smoothing=eps)  # fmt: skip
        expected = losses["ce"] + losses["dist"]
        torch.testing.assert_close(
            reference_deit_loss(zc, zd, zt, y, mode, alpha, tau, eps), expected
        )


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_deit_reference_gradients_in_closed_form(mode):
    """d/dz_cls = (1 - alpha)(p_c - q) / B; d/dz_dist = alpha (p_d - onehot(y_t)) / B (hard) or
    alpha tau (p_d^tau - p_t^tau) / B (soft); nothing reaches the teacher."""
    alpha, tau, eps = 0.3, 2.0, 0.1
    zc, zd, zt = (t64(a).requires_grad_(True) for a in (ZC, ZD, ZT))
    loss = reference_deit_loss(zc, zd, zt, torch.tensor(Y), mode, alpha, tau, eps)
    grad_c, grad_d, grad_t = torch.autograd.grad(loss, [zc, zd, zt], allow_unused=True)
    assert grad_t is None
    batch, k = ZC.shape
    q = np.full(ZC.shape, eps / k)
    q[np.arange(batch), Y] += 1 - eps
    np.testing.assert_allclose(grad_c, (1 - alpha) * (np.exp(np_log_softmax(ZC)) - q) / batch)
    if mode == "hard":
        onehot = np.eye(k)[ZT.argmax(axis=1)]
        expected = alpha * (np.exp(np_log_softmax(ZD)) - onehot) / batch
    else:
        p_d, p_t = np.exp(np_log_softmax(ZD / tau)), np.exp(np_log_softmax(ZT / tau))
        expected = alpha * tau * (p_d - p_t) / batch
    np.testing.assert_allclose(grad_d, expected)


def test_deit_reference_refuses_an_unknown_mode():
    with pytest.raises(KDTutorError, match="'hard' or 'soft'"):
        reference_deit_loss(t64(ZC), t64(ZD), t64(ZT), torch.tensor(Y), "medium", 0.5, 1.0, 0.1)


def test_every_deit_mistake_changes_some_ordinary_value():
    """Otherwise a learner making it would pass."""
    ordinary = [c.inputs(i) for i, c in enumerate(_DEIT_CASES) if not c.hard]
    expected = [float(reference_deit_loss(*x)) for x in ordinary]
    for mistake in _DEIT_CHECK.mistakes:
        assert any(
            not within(float(mistake.value(*x)), e, atol=1e-6, rtol=1e-4)
            for x, e in zip(ordinary, expected, strict=True)
        ), mistake.hints


# ----------------------------------------------------------------------------------------------
# check_deit_loss
# ----------------------------------------------------------------------------------------------
def deit_correct(zc, zd, zt, y, mode, alpha, tau, eps):
    label = F.cross_entropy(zc, y, label_smoothing=eps)
    zt = zt.detach()
    if mode == "hard":
        teacher = F.cross_entropy(zd, zt.argmax(dim=1))
    else:
        kl = F.kl_div(F.log_softmax(zd / tau, 1), F.softmax(zt / tau, 1), reduction="batchmean")
        teacher = tau**2 * kl
    return (1 - alpha) * label + alpha * teacher


def deit_kdtutor(zc, zd, zt, y, mode, alpha, tau, eps):
    losses = deit_losses(zc, zd, zt, y, distillation=mode, ce_weight=1 - alpha,
                         kd_weight=alpha, T=tau, label_smoothing=eps)  # fmt: skip
    return sum(losses.values())


def deit_authors_style(zc, zd, zt, y, mode, alpha, tau, eps):
    """DeiT's losses.py with the KL divided by the batch size (the paper's), teacher logits
    under no_grad, the smoothed base criterion on the class output."""
    base = F.cross_entropy(zc, y, label_smoothing=eps)
    with torch.no_grad():
        teacher_outputs = zt * 1.0
    if mode == "soft":
        kl = F.kl_div(F.log_softmax(zd / tau, dim=1), F.log_softmax(teacher_outputs / tau, dim=1),
                      reduction="sum", log_target=True)  # fmt: skip
        distillation = kl * (tau * tau) / zd.shape[0]
    else:
        distillation = F.cross_entropy(zd, teacher_outputs.argmax(dim=1))
    return base * (1 - alpha) + distillation * alpha


def deit_with_bug(kind):
    def fn(zc, zd, zt, y, mode, alpha, tau, eps):
        label = F.cross_entropy(zc, y, label_smoothing=eps)
        zt_d = zt.detach()
        hard = F.cross_entropy(zd, zt_d.argmax(1))
        log_p, p_t = F.log_softmax(zd / tau, 1), F.softmax(zt_d / tau, 1)
        kl = F.kl_div(log_p, p_t, reduction="batchmean")
        soft = tau**2 * kl
        teacher = hard if mode == "hard" else soft
        if kind == "teacher on the class head":
            return deit_correct(zc, zc, zt, y, mode, alpha, tau, eps)
        if kind == "no tau^2":
            return (1 - alpha) * label + alpha * (hard if mode == "hard" else kl)
        if kind == "KL averaged over the classes":
            mean = tau**2 * F.kl_div(log_p, p_t, reduction="mean")
            return (1 - alpha) * label + alpha * (hard if mode == "hard" else mean)
        if kind == "the code's KL":  # DeiT's losses.py as it is
            kl_sum = F.kl_div(log_p, F.log_softmax(zt_d / tau, 1), reduction="sum", log_target=True)
            code = kl_sum * (tau * tau) / zd.numel()
            return (1 - alpha) * label + alpha * (hard if mode == "hard" else code)
        if kind == "teacher label smoothed":
            smoothed = F.cross_entropy(zd, zt_d.argmax(1), label_smoothing=eps)
            return (1 - alpha) * label + alpha * (smoothed if mode == "hard" else soft)
        if kind == "teacher not detached":
            kl_live = F.kl_div(log_p, F.softmax(zt / tau, 1), reduction="batchmean")
            return (1 - alpha) * label + alpha * (hard if mode == "hard" else tau**2 * kl_live)
        if kind == "heads swapped":
            return deit_correct(zd, zc, zt, y, mode, alpha, tau, eps)
        if kind == "mean of the heads":
            mean = (zc + zd) / 2
            return deit_correct(mean, mean, zt, y, mode, alpha, tau, eps)
        if kind == "weights swapped":
            return alpha * label + (1 - alpha) * teacher
        if kind == "label term unweighted":
            return label + alpha * teacher
        if kind == "no smoothing":
            return (1 - alpha) * F.cross_entropy(zc, y) + alpha * teacher
        if kind == "KL summed over the batch":
            kl_sum = tau**2 * F.kl_div(log_p, p_t, reduction="sum")
            return (1 - alpha) * label + alpha * (hard if mode == "hard" else kl_sum)
        if kind == "no temperature":
            plain = tau**2 * F.kl_div(
                F.log_softmax(zd, 1), F.softmax(zt_d, 1), reduction="batchmean"
            )
            return (1 - alpha) * label + alpha * (hard if mode == "hard" else plain)
        if kind == "times tau":
            return (1 - alpha) * label + alpha * (hard if mode == "hard" else tau * kl)
        if kind == "class head and no tau^2":
            return deit_with_bug("no tau^2")(zc, zc, zt, y, mode, alpha, tau, eps)
        if kind == "temperature in hard mode":
            return (1 - alpha) * label + alpha * (F.cross_entropy(zd / tau, zt_d.argmax(1))
                                                  if mode == "hard" else soft)  # fmt: skip
        if kind == "unstable":
            p, q = F.softmax(zd / tau, 1), F.softmax(zt_d / tau, 1)
            naive = tau**2 * (q * (q.log() - p.log())).sum(1).mean()
            return (1 - alpha) * label + alpha * (hard if mode == "hard" else naive)
        if kind == "dict":
            return {"ce": (1 - alpha) * label, "dist": alpha * teacher}
        if kind == "float":
            return float((1 - alpha) * label + alpha * teacher)
        if kind == "per sample":
            return (1 - alpha) * F.cross_entropy(zc, y, label_smoothing=eps, reduction="none") + (
                alpha * F.cross_entropy(zd, zt_d.argmax(1), reduction="none")
            )
        if kind == "raises":
            raise RuntimeError("not implemented yet")
        if kind == "in place":
            zc -= zc.max(dim=1, keepdim=True).values
            return deit_correct(zc, zd, zt, y, mode, alpha, tau, eps)
        if kind == "teacher detached in place":
            zt.detach_()
            return deit_correct(zc, zd, zt, y, mode, alpha, tau, eps)
        if kind == "class head detached":
            return deit_correct(zc.detach(), zd, zt, y, mode, alpha, tau, eps)
        if kind == "distillation head detached":
            return deit_correct(zc, zd.detach(), zt, y, mode, alpha, tau, eps)
        if kind == "unknown":
            return deit_correct(zc, zd, zt, y, mode, alpha, tau, eps) * 1.5
        raise AssertionError(kind)

    return fn


@pytest.mark.parametrize(
    "fn", [deit_correct, deit_kdtutor, deit_authors_style], ids=["F", "kdtutor", "authors"]
)
def test_correct_deit_losses_pass(fn, capsys):
    assert check_deit_loss(fn) is True
    out = flat(capsys.readouterr().out)
    assert "✓ check_deit_loss" in out and "teacher's logits are detached" in out


@pytest.mark.parametrize(
    ("kind", "hints"),
    [
        # the named mistakes
        ("teacher on the class head", ["teacher term is on the class head", "z_dist would never learn"]),
        ("no tau^2", ["tau² factor is missing"]),
        ("KL averaged over the classes", ["averaged over the classes", "authors' code's form", "kl_reduction='code'"]),
        ("the code's KL", ["averaged over the classes", "outputs_kd.numel()"]),
        ("teacher label smoothed", ["smooths the teacher's hard label", "true labels only"]),
        ("teacher not detached", ["sends gradient into z_teacher", "teacher is not detached", "z_teacher.detach()"]),
        # and more
        ("heads swapped", ["two heads are swapped"]),
        ("mean of the heads", ["mean of the two heads' logits"]),
        ("weights swapped", ["weights are swapped"]),
        ("label term unweighted", ["not weighted by 1 - alpha"]),
        ("no smoothing", ["labels are not smoothed"]),
        ("KL summed over the batch", ["summed over the batch"]),
        ("no temperature", ["without the temperature"]),
        ("times tau", ["the factor is tau**2"]),
        ("class head and no tau^2", ["2 typical mistakes at once", "class head", "tau² factor"]),
        ("temperature in hard mode", ["right in soft mode but not in hard mode"]),
        ("unstable", ["correct on ordinary logits", "extreme logits", "F.log_softmax"]),
        ("dict", ["fn returned a dict", "not its terms"]),
        ("float", ["not a torch.Tensor"]),
        ("per sample", ["one value per sample"]),
        ("raises", ["RuntimeError: not implemented yet"]),
        ("in place", ["in place"]),
        ("teacher detached in place", ["in place", "z_teacher.detach()"]),
        ("class head detached", ["not differentiable with respect to the class head's logits"]),
        ("distillation head detached", ["not differentiable with respect to the distillation head"]),
        ("unknown", ["match none of the typical mistakes", "label_smoothing=eps"]),
    ],
)  # fmt: skip
def test_each_deit_mistake_gets_its_hint(kind, hints):
    with pytest.raises(DeiTLossCheckError) as info:
        check_deit_loss(deit_with_bug(kind))
    message = flat(info.value)
    for hint in hints:
        assert hint in message, f"{hint!r} not in {message!r}"


def test_single_deit_mistakes_are_named_alone():
    with pytest.raises(DeiTLossCheckError) as info:
        check_deit_loss(deit_with_bug("teacher label smoothed"))
    diagnosis = flat(info.value).split("For example")[0]
    assert "a typical mistake" in diagnosis and "tau²" not in diagnosis


# ----------------------------------------------------------------------------------------------
# the successive-halving reference against hand-traced runs and kdtutor.search
# ----------------------------------------------------------------------------------------------
class Recording:
    """A score table that records its calls."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, candidate, epochs):
        self.calls.append((candidate, epochs))
        return self.table[candidate, epochs]


def test_halving_reference_on_a_hand_traced_run_with_three_rungs():
    # 8 candidates, eta = 2, 1 to 8 epochs: 8 at 1 epoch, 4 at 2, 2 at 8 (8 // 2 = 4, 4 // 2
    # = 2, then 2 // 2 = 1: that rung is the last). By hand: a b c d survive the first rung,
    # b c the second (b 60 and c 58 beat a 55 and d 52), and c wins at 8 epochs (75 > 70):
    # the best after one epoch (a) and after two (b) both lose.
    first = dict(zip("abcdefgh", (50, 48, 46, 44, 42, 40, 38, 36), strict=True))
    table = {(c, 1): v for c, v in first.items()}
    table |= {("a", 2): 55, ("b", 2): 60, ("c", 2): 58, ("d", 2): 52, ("b", 8): 70, ("c", 8): 75}
    score = Recording(table)
    winner = reference_successive_halving("abcdefgh", score, min_epochs=1, max_epochs=8, eta=2)
    assert winner == "c"
    assert score.calls == [(c, 1) for c in "abcdefgh"] + [(c, 2) for c in "abcd"] + [
        ("b", 8),
        ("c", 8),
    ]
    assert sum(e for _, e in score.calls) == 8 + 8 + 16 == 32


def test_halving_reference_on_a_hand_traced_run_with_a_pool_that_is_no_power_of_eta():
    # 7 candidates, eta = 3, 2 to 9 epochs: 7 // 3 = 2 > 1, so a first rung of 7 at 2 epochs
    # keeps the best 2 (f 45 and d 44); 2 // 3 = 0, so the second rung is the last, at 9
    # epochs, and d wins (81 > 80).
    table = {(c, 2): v for c, v in zip("abcdefg", (40, 41, 43, 44, 42, 45, 30), strict=True)}
    table |= {("d", 9): 81, ("f", 9): 80}
    score = Recording(table)
    assert reference_successive_halving("abcdefg", score, min_epochs=2, max_epochs=9) == "d"
    assert score.calls == [(c, 2) for c in "abcdefg"] + [("d", 9), ("f", 9)]


def test_halving_reference_breaks_ties_towards_the_earlier_candidate():
    table = {(c, 1): 50 for c in "abcd"} | {("a", 3): 60, ("b", 3): 60}
    assert reference_successive_halving("abcd", lambda c, r: table[c, r], min_epochs=1,
                                        max_epochs=3, eta=2) == "a"  # fmt: skip


@pytest.mark.parametrize("case", _SH_CASES, ids=lambda c: c.describe())
def test_halving_reference_agrees_with_kdtutor_search(case):
    """kdtutor.search.successive_halving on the same table: the same rungs, the same winner,
    the same nominal budget (its memo reuses a score when a capped rung repeats the epochs)."""
    names = case.candidates()
    pool = [Candidate("convnet", (("tag", name),), 0, 0) for name in names]
    name_of = {c.spec: name for c, name in zip(pool, names, strict=True)}
    table = case.table()
    package_calls = []

    def score(candidate, epochs):
        package_calls.append((name_of[candidate.spec], epochs))
        return table(name_of[candidate.spec], epochs)

    result = successive_halving(pool, score, min_epochs=case.min_epochs,
                                max_epochs=case.max_epochs, eta=case.eta)  # fmt: skip
    reference = _Halving().value(case)
    assert name_of[result.best.spec] == reference.winner
    assert set(package_calls) == set(reference.calls)
    schedule = halving_schedule(case.n, min_epochs=case.min_epochs, max_epochs=case.max_epochs,
                                eta=case.eta)  # fmt: skip
    assert result.budget == reference.spent == sum(n * r for n, r in schedule)


def test_every_halving_case_ranks_differently_at_few_and_many_epochs():
    """The score tables reward a search that re-scores its survivors: in every case with more
    than one rung, the best candidate after min_epochs is not the winner."""
    for case in _SH_CASES:
        table = case.table()
        best_early = max(case.candidates(), key=lambda c: table(c, case.min_epochs))
        if case.n // case.eta > 1:
            assert best_early != _Halving().value(case).winner, case


def test_every_halving_mistake_changes_some_case():
    expected = [_Halving().value(case) for case in _SH_CASES]
    for mistake in _HALVING_MISTAKES:
        assert any(
            mistake.value(case).key(want.spent) != want.key(want.spent)
            for case, want in zip(_SH_CASES, expected, strict=True)
        ), mistake.hints


def test_halving_reference_refuses_bad_settings():
    score = lambda c, r: 0.0  # noqa: E731
    with pytest.raises(KDTutorError, match="distinct candidates"):
        reference_successive_halving(["a", "a"], score, min_epochs=1, max_epochs=2)
    with pytest.raises(KDTutorError, match="eta >= 2"):
        reference_successive_halving("ab", score, min_epochs=1, max_epochs=2, eta=1)
    with pytest.raises(KDTutorError, match="min_epochs must be a positive integer"):
        reference_successive_halving("ab", score, min_epochs=1.5, max_epochs=2)
    with pytest.raises(KDTutorError, match="min_epochs <= max_epochs"):
        reference_successive_halving("ab", score, min_epochs=3, max_epochs=2)


# ----------------------------------------------------------------------------------------------
# check_successive_halving
# ----------------------------------------------------------------------------------------------
def halving_correct(candidates, score, *, min_epochs, max_epochs, eta):
    rung, k = list(candidates), 0
    while True:
        last = len(rung) // eta <= 1
        epochs = max_epochs if last else min(min_epochs * eta**k, max_epochs)
        scores = {c: score(c, epochs) for c in rung}
        ranked = sorted(rung, key=scores.get, reverse=True)
        if last:
            return ranked[0]
        rung, k = ranked[: len(rung) // eta], k + 1


def halving_by_schedule(candidates, score, *, min_epochs, max_epochs, eta):
    """The rungs computed first, a memo keyed by (candidate, epochs), heapq to keep the best."""
    sizes = [len(candidates)]
    while sizes[-1] // eta > 1:
        sizes.append(sizes[-1] // eta)
    epochs = [min(min_epochs * eta**k, max_epochs) for k in range(len(sizes) - 1)] + [max_epochs]
    memo = {}
    rung = list(candidates)
    for k, r in enumerate(epochs):
        for c in rung:
            if (c, r) not in memo:
                memo[c, r] = score(c, r)
        keep = sizes[k + 1] if k + 1 < len(sizes) else 1
        rung = heapq.nlargest(keep, rung, key=lambda c, r=r: memo[c, r])
    return rung[0]


def halving_kdtutor(candidates, score, *, min_epochs, max_epochs, eta):
    pool = [Candidate("convnet", (("tag", c),), 0, 0) for c in candidates]
    name_of = {p.spec: c for p, c in zip(pool, candidates, strict=True)}
    result = successive_halving(pool, lambda p, r: score(name_of[p.spec], r),
                                min_epochs=min_epochs, max_epochs=max_epochs, eta=eta)  # fmt: skip
    return name_of[result.best.spec]


def halving_with_bug(kind):
    def fn(candidates, score, *, min_epochs, max_epochs, eta):
        if kind == "keeping eta, runaway":  # the pool stops shrinking at eta candidates
            rung, k = list(candidates), 0
            while len(rung) > 1:
                epochs = min(min_epochs * eta**k, max_epochs)
                scores = {c: score(c, epochs) for c in rung}
                rung, k = sorted(rung, key=scores.get, reverse=True)[:eta], k + 1
            return rung[0]
        if kind == "old budget":  # the next rung's epochs computed before k grows: one rung late
            rung, k, epochs = list(candidates), 0, min_epochs
            while True:
                last = len(rung) // eta <= 1
                if last:
                    epochs = max_epochs
                scores = {c: score(c, epochs) for c in rung}
                ranked = sorted(rung, key=scores.get, reverse=True)
                if last:
                    return ranked[0]
                rung = ranked[: len(rung) // eta]
                epochs = min(min_epochs * eta**k, max_epochs)
                k += 1
        if kind == "memo by candidate":
            memo = {}
            rung, k = list(candidates), 0
            while True:
                last = len(rung) // eta <= 1
                epochs = max_epochs if last else min(min_epochs * eta**k, max_epochs)
                for c in rung:
                    if c not in memo:
                        memo[c] = score(c, epochs)
                ranked = sorted(rung, key=memo.get, reverse=True)
                if last:
                    return ranked[0]
                rung, k = ranked[: len(rung) // eta], k + 1
        if kind in ("one more", "one fewer"):  # keeps len(rung) // eta + 1 (or - 1)
            rung, k = list(candidates), 0
            while True:
                last = len(rung) // eta <= 1
                epochs = max_epochs if last else min(min_epochs * eta**k, max_epochs)
                ranked = sorted(rung, key=lambda c, e=epochs: score(c, e), reverse=True)
                if last:
                    return ranked[0]
                more = 1 if kind == "one more" else -1
                rung, k = ranked[: len(rung) // eta + more], k + 1
        rung, k = list(candidates), 0
        while True:
            last = len(rung) // eta <= 1
            epochs = max_epochs if last else min(min_epochs * eta**k, max_epochs)
            if kind == "not growing the epochs":
                epochs = min_epochs
            if kind == "not growing the epochs until the last rung":
                epochs = max_epochs if last else min_epochs
            if kind == "uncapped":
                epochs = max_epochs if last else min_epochs * eta**k
            if kind == "geometric last rung":
                epochs = min(min_epochs * eta**k, max_epochs)
            if kind == "float epochs":
                epochs = min_epochs * eta**k / 2 + 0.5
            if kind == "first rung twice" and k == 0:
                for c in rung:
                    score(c, epochs)
            if kind == "wrong candidate":
                score(len(rung), epochs)
            scores = {c: score(c, epochs) for c in rung}
            if kind == "twice":  # the last rung scored again by max(key=score)
                if last:
                    return max(rung, key=lambda c, e=epochs: score(c, e))
            ranked = sorted(rung, key=scores.get, reverse=kind != "ascending")
            if last:
                if kind == "lowest winner":
                    return ranked[-1]
                if kind == "pair":
                    return ranked[0], scores[ranked[0]]
                if kind == "raises":
                    raise RuntimeError("not implemented yet")
                return ranked[0]
            keep = len(rung) // eta
            if kind == "keeping eta":
                keep = eta
            if kind == "dropping 1/eta":
                keep = len(rung) - len(rung) // eta
            if kind == "true division":
                keep = len(rung) / eta
            rung, k = ranked[:keep], k + 1

    return fn


@pytest.mark.parametrize(
    "fn", [halving_correct, halving_by_schedule, halving_kdtutor], ids=["loop", "schedule", "kdtutor"]
)  # fmt: skip
def test_correct_searches_pass(fn, capsys):
    assert check_successive_halving(fn) is True
    out = flat(capsys.readouterr().out)
    assert "✓ check_successive_halving" in out and "within the budget" in out


@pytest.mark.parametrize(
    ("kind", "hints"),
    [
        # the named mistakes
        ("keeping eta", ["keeping eta candidates instead of 1/eta", "27 -> 9 -> 3", "3 at 20"]),
        ("keeping eta, runaway", ["did not stop", "keeping eta candidates instead of 1/eta"]),
        ("not growing the epochs", ["not growing the epochs", "27 at 2 epochs, 9 at 2, 3 at 2"]),
        ("not growing the epochs until the last rung", ["not growing the epochs between rungs"]),
        ("old budget", ["scoring the survivors at the old budget", "9 at 2, 3 at 20"]),
        ("twice", ["spending more than the budget", "more than the budget of 168"]),
        # and more
        ("uncapped", ["not capped at max_epochs", "more than the budget"]),
        ("memo by candidate", ["old budget", "keyed by (candidate, epochs)"]),
        ("dropping 1/eta", ["dropping 1/eta of the candidates"]),
        ("geometric last rung", ["the last rung", "trains for max_epochs", "3 at 18"]),
        ("ascending", ["keeping the lowest scores", "higher is better"]),
        ("lowest winner", ["rungs are right", "lowest score of the last rung"]),
        ("one fewer", ["rungs differ from successive halving's", "len(rung) // eta"]),
        ("one more", ["spends more than the budget: 194", "len(rung) // eta"]),
        ("first rung twice", ["spending more than the budget", "more than the budget of 168"]),
        ("pair", ["return the candidate alone", "one item of candidates"]),
        ("raises", ["RuntimeError: not implemented yet"]),
        ("float epochs", ["epochs=1.5", "whole number"]),
        ("true division", ["slice indices must be integers", "// is integer division"]),
        ("wrong candidate", ["score was called with 27", "not one of the candidates"]),
    ],
)
def test_each_halving_mistake_gets_its_hint(kind, hints):
    with pytest.raises(SuccessiveHalvingCheckError) as info:
        check_successive_halving(halving_with_bug(kind))
    message = flat(info.value)
    for hint in hints:
        assert hint in message, f"{hint!r} not in {message!r}"


def test_a_search_with_the_wrong_parameter_names_is_told_the_call():
    def fn(candidates, score, r0, big_r, eta):
        return candidates[0]

    with pytest.raises(SuccessiveHalvingCheckError) as info:
        check_successive_halving(fn)
    message = flat(info.value)
    assert "unexpected keyword argument 'min_epochs'" in message
    assert "name the parameters min_epochs, max_epochs and eta" in message


def test_more_than_the_budget_without_a_known_pattern():
    """Every candidate also scored at max_epochs first (a random search before the halving)
    matches no typical mistake: the budget and the repeated calls are named."""

    def fn(candidates, score, *, min_epochs, max_epochs, eta):
        for c in candidates:
            score(c, max_epochs)
        return halving_correct(candidates, score, min_epochs=min_epochs, max_epochs=max_epochs,
                               eta=eta)  # fmt: skip

    with pytest.raises(SuccessiveHalvingCheckError) as info:
        check_successive_halving(fn)
    message = flat(info.value)
    assert (
        "spends more than the budget: 708 candidate-epochs where successive halving spends 168"
        in message
    )
    assert "3 repeated calls" in message


# ----------------------------------------------------------------------------------------------
# both checkers
# ----------------------------------------------------------------------------------------------
def test_no_raise_mode_prints_and_returns_false(capsys):
    assert check_deit_loss(deit_with_bug("no tau^2"), raise_on_failure=False) is False
    assert "tau² factor is missing" in flat(capsys.readouterr().out)
    assert check_deit_loss(deit_with_bug("teacher not detached"), raise_on_failure=False) is False
    assert "z_teacher" in flat(capsys.readouterr().out)
    assert (
        check_successive_halving(halving_with_bug("keeping eta"), raise_on_failure=False) is False
    )
    assert "keeping eta candidates" in flat(capsys.readouterr().out)


def test_quiet_success(capsys):
    assert check_deit_loss(deit_correct, verbose=False) is True
    assert check_successive_halving(halving_correct, verbose=False) is True
    assert capsys.readouterr().out == ""


def test_something_else_than_a_function_is_refused():
    with pytest.raises(KDTutorError, match="my_deit_loss"):
        check_deit_loss(None)  # type: ignore[arg-type]
    with pytest.raises(KDTutorError, match="pass the function itself"):
        check_successive_halving("c00")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("check", "fn", "error"),
    [
        (check_deit_loss, deit_with_bug("KL averaged over the classes"), DeiTLossCheckError),
        (check_deit_loss, deit_with_bug("teacher not detached"), DeiTLossCheckError),
        (check_deit_loss, deit_with_bug("class head and no tau^2"), DeiTLossCheckError),
        (check_successive_halving, halving_with_bug("old budget"), SuccessiveHalvingCheckError),
        (check_successive_halving, halving_with_bug("keeping eta, runaway"), SuccessiveHalvingCheckError),
        (check_successive_halving, halving_with_bug("one fewer"), SuccessiveHalvingCheckError),
    ],
)  # fmt: skip
def test_messages_are_wrapped_for_notebooks(check, fn, error):
    with pytest.raises(error) as info:
        check(fn)
    assert max(len(line) for line in str(info.value).splitlines()) <= 78


def test_success_lines_are_wrapped_for_notebooks(capsys):
    check_deit_loss(deit_correct)
    check_successive_halving(halving_correct)
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 78
