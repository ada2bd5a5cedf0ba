"""Chapter 5's methods on KD's loss: TAKD (one step of a teacher-assistant path: KD's loss,
or the authors' code's element-wise KL) and ESKD (KD stopped early), against NumPy and
against KD and the student trained alone, through ``fit`` and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _resume import interrupted_then_resumed

from kdtutor.cli import main
from kdtutor.config import ConfigError
from kdtutor.errors import KDTutorError, ShapeMismatchError
from kdtutor.methods import build_distiller, get_method
from kdtutor.methods.kd import KDHParams
from kdtutor.models import build_model
from kdtutor.seeding import seed_everything
from kdtutor.train import fit

torch.set_num_threads(1)


# -- helpers -----------------------------------------------------------------------------------
def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(
        0, 10, (n,), generator=g
    )


def pair():
    """A float64 cnn_tiny student and cnn_medium teacher, in eval mode (no batch statistics,
    so every forward of one input gives the same logits)."""
    torch.manual_seed(0)
    return build_model("cnn_tiny").double().eval(), build_model("cnn_medium").double().eval()


def np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_ce(z, y):
    return float(-np_log_softmax(z)[np.arange(len(y)), y].mean())


def np_kd(zs, zt, T):
    """T^2 times the KL(p_t || p_s) of the softened outputs, summed over classes, averaged
    over the batch."""
    log_ps, log_pt = np_log_softmax(zs / T), np_log_softmax(zt / T)
    return float(T * T * (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean())


def logits_of(distiller, x):
    with torch.no_grad():
        return distiller.student(x).numpy(), distiller.teacher(x).numpy()


# -- what they are -----------------------------------------------------------------------------
def test_takd_and_eskd_are_architecture_methods_with_kds_defaults():
    kd = KDHParams()
    for name, year in (("takd", "2020"), ("eskd", "2019")):
        cls = get_method(name)
        assert cls.family == "architecture" and year in cls.paper
        assert issubclass(cls.hparams_cls, KDHParams) and cls.requires_teacher
        assert cls.loss_weights == ("kd_weight",)
        hp = cls.hparams_cls()
        assert (hp.ce_weight, hp.kd_weight, hp.T, hp.scale_by_t2) == (
            kd.ce_weight, kd.kd_weight, kd.T, kd.scale_by_t2,
        )  # fmt: skip
    assert get_method("takd").hparams_cls().kl_reduction == "batchmean"
    hp = get_method("eskd").hparams_cls()
    assert (hp.kd_epochs, hp.ce_weight_after) == (10, 1.0)


def test_the_architecture_methods_stay_out_of_the_knowledge_suite(capsys):
    from kdtutor.bench.knowledge import KNOWLEDGE_METHODS

    assert not {"takd", "eskd"} & set(KNOWLEDGE_METHODS)
    assert main(["methods"]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert lines["takd"] == "architecture" and lines["eskd"] == "architecture"


# -- TAKD --------------------------------------------------------------------------------------
def test_takds_loss_is_kds_on_the_same_pair():
    student, teacher = pair()
    x, y = batch()
    for hparams in ({}, {"T": 2.0, "ce_weight": 0.3, "kd_weight": 0.7}, {"scale_by_t2": False}):
        out_t, takd = build_distiller("takd", student, teacher, hparams)(x, y)
        out_k, kd = build_distiller("kd", student, teacher, hparams)(x, y)
        assert torch.equal(out_t, out_k) and list(takd) == list(kd) == ["ce", "kd"]
        assert all(torch.equal(takd[k], kd[k]) for k in kd), hparams


def test_takds_loss_against_numpy():
    student, teacher = pair()
    x, y = batch(seed=1)
    d = build_distiller("takd", student, teacher, {"T": 3.0, "ce_weight": 0.25, "kd_weight": 0.75})
    _, losses = d(x, y)
    zs, zt = logits_of(d, x)
    assert losses["ce"].item() == pytest.approx(0.25 * np_ce(zs, y.numpy()), rel=1e-10)
    assert losses["kd"].item() == pytest.approx(0.75 * np_kd(zs, zt, 3.0), rel=1e-10)


def test_takds_elementwise_kl_is_the_authors_code_form():
    """``kl_reduction="elementwise"`` is the authors' ``lambda * T * T * nn.KLDivLoss()(
    log_softmax(zs / T), softmax(zt / T))``: ``nn.KLDivLoss``'s default reduction (``"mean"``
    in the torch of their code) averages over every element, batch and classes, so it is KD's
    term divided by the number of classes. Written out here, since torch announces that
    ``"mean"`` will become ``"batchmean"``; the cross entropy is unchanged."""
    student, teacher = pair()
    x, y = batch(seed=2)
    T = 5.0
    d = build_distiller("takd", student, teacher, {"T": T, "kl_reduction": "elementwise"})
    _, losses = d(x, y)
    with torch.no_grad():
        log_ps = torch.log_softmax(d.student(x) / T, dim=1)
        p_t = torch.softmax(d.teacher(x) / T, dim=1)
    code = (p_t * (p_t.log() - log_ps)).sum() / p_t.numel()  # the mean over B x K elements
    assert losses["kd"].item() == pytest.approx(0.9 * T * T * code.item(), rel=1e-10)
    zs_np, zt_np = logits_of(d, x)
    assert losses["kd"].item() == pytest.approx(0.9 * np_kd(zs_np, zt_np, T) / 10, rel=1e-10)
    _, batchmean = build_distiller("takd", student, teacher, {"T": T})(x, y)
    assert torch.equal(losses["ce"], batchmean["ce"])
    _, none = build_distiller("takd", student, teacher, {"kd_weight": 0.0,
                                                           "kl_reduction": "elementwise"})(x, y)  # fmt: skip
    assert list(none) == ["ce"]


# -- ESKD --------------------------------------------------------------------------------------
def test_eskds_loss_is_kds_before_the_stop_and_the_cross_entropy_after():
    student, teacher = pair()
    x, y = batch(seed=3)
    kd = build_distiller("kd", student, teacher)
    for after in (1.0, 0.25):
        d = build_distiller("eskd", student, teacher, {"kd_epochs": 3, "ce_weight_after": after})
        zs, _ = logits_of(d, x)
        for epoch in range(6):
            d.on_epoch_start(epoch, 6)
            _, losses = d(x, y)
            if epoch < 3:
                assert d.distilling and list(losses) == ["ce", "kd"]
                _, want = kd(x, y)
                assert all(torch.equal(losses[k], want[k]) for k in want)
            else:
                assert not d.distilling and list(losses) == ["ce"]
                assert losses["ce"].item() == pytest.approx(after * np_ce(zs, y.numpy()), rel=1e-10)


def fitted(method, tiny_data, teacher, epochs, **hparams):
    seed_everything(4)
    distiller = build_distiller(method, build_model("cnn_tiny"), teacher, hparams)
    result = fit(distiller, *tiny_data, epochs=epochs, batch_size=50, seed=4)
    return distiller, [h["losses"] for h in result.history]


def same_student(a, b):
    sa, sb = a.student.state_dict(), b.student.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_eskd_switches_its_kd_term_off_at_the_given_epoch_in_the_logged_losses(tiny_data):
    torch.manual_seed(0)
    teacher = build_model("cnn_medium")
    eskd, logged = fitted("eskd", tiny_data, teacher, 4, kd_epochs=2)
    kd, kd_logged = fitted("kd", tiny_data, teacher, 4)
    assert [set(losses) for losses in logged] == [{"ce", "kd"}] * 2 + [{"ce"}] * 2
    assert logged[:2] == kd_logged[:2]  # the same run as KD until the stop
    assert logged[2]["ce"] != kd_logged[2]["ce"] and not same_student(eskd, kd)
    # never stopped, it is KD; stopped before the first epoch, the student trained alone
    never, never_logged = fitted("eskd", tiny_data, teacher, 3, kd_epochs=3)
    kd3, kd3_logged = fitted("kd", tiny_data, teacher, 3)
    assert never_logged == kd3_logged and same_student(never, kd3)
    at_once, at_once_logged = fitted("eskd", tiny_data, teacher, 3, kd_epochs=0)
    alone, alone_logged = fitted("scratch", tiny_data, None, 3)
    assert at_once_logged == alone_logged and same_student(at_once, alone)


def test_eskd_resumes_bit_identically_after_its_stop(tiny_data, tmp_path):
    torch.manual_seed(0)
    teacher = build_model("cnn_medium")
    cfg = {"epochs": 3, "batch_size": 50, "seed": 1}

    def make():  # a fresh distiller: distilling is True until on_epoch_start says not
        seed_everything(2)
        return build_distiller("eskd", build_model("cnn_tiny"), teacher, {"kd_epochs": 2})

    runs = interrupted_then_resumed(
        make, *tiny_data, tmp_path, after=2, same=("losses",), config=cfg
    )
    assert set(runs.result.history[-1]["losses"]) == {"ce"}


def test_eskds_stop_scales_with_short_runs():
    from kdtutor.bench.knowledge import method_hparams

    cls = get_method("eskd")
    assert cls.scaled_hparams(1) == {"kd_epochs": 1}
    assert cls.scaled_hparams(8) == {"kd_epochs": 4}
    assert cls.scaled_hparams(20) == {} and cls.scaled_hparams(40) == {}
    assert method_hparams("eskd", 6) == {"kd_epochs": 3}
    assert get_method("takd").scaled_hparams(1) == {}


# -- bad input and the command line ------------------------------------------------------------
def test_bad_input_is_refused():
    student, teacher = pair()
    cases = [
        ("takd", {"kl_reduction": "sum"}, ConfigError, "one of 'batchmean', 'elementwise'"),
        ("takd", {"temperature": 2}, ConfigError, "unknown key 'temperature'"),
        ("eskd", {"kd_epochs": -1}, ConfigError, "kd_epochs must be >= 0"),
        ("eskd", {"kd_epochs": 1.5}, ConfigError, "eskd'.kd_epochs must be int"),
        ("eskd", {"ce_weight_after": -0.5}, ConfigError, "ce_weight_after must be >= 0"),
        ("eskd", {"T": 0}, ConfigError, "T must be > 0"),
    ]
    for method, hparams, error, message in cases:
        with pytest.raises(error, match=message):
            build_distiller(method, student, teacher, hparams)
    with pytest.raises(ConfigError, match=r"takd\.kl_reduction"):
        cls = get_method("takd")
        cls(student, teacher, cls.hparams_cls(kl_reduction="sum"))
    for method in ("takd", "eskd"):
        with pytest.raises(KDTutorError, match="needs a teacher"):
            build_distiller(method, student)
        with pytest.raises(ShapeMismatchError, match="num_classes=10"):
            build_distiller(method, build_model("cnn_tiny", num_classes=5), teacher)


@pytest.mark.parametrize(("method", "sets", "logged"), [
    ("takd", ["--set", "kl_reduction=elementwise"], [{"ce", "kd"}, {"ce", "kd"}]),
    ("eskd", ["--set", "kd_epochs=1"], [{"ce", "kd"}, {"ce"}]),
])  # fmt: skip
def test_the_methods_distil_through_the_command_line(method, sets, logged, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["distill", "--dataset", "shapes", "--teacher", "zoo:shapes_cnn_large", "--student",
            "cnn_tiny", "--method", method, "--epochs", "2", "--train-size", "96",
            "--test-size", "32", "--scale", "smoke", "--out", str(out), "-q", *sets]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["method"] == method
    history = data["runs"][0]["history"]
    assert [set(h["losses"]) for h in history] == logged
    assert all(np.isfinite(v) for h in history for v in h["losses"].values())
