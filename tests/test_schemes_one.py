"""ONE (Lan, Zhu, Gong, 2018) against computations written out by hand: the loss term by term,
the gate, the detached ensemble target, the KD weight's ramp-up, the networks scored, the
FLOPs of the gated ensemble, resume, the refusals and the CLI."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from _resume import interrupted_then_resumed
from torch import nn

from kdtutor.cli import main
from kdtutor.config import ConfigError
from kdtutor.data import BatchLoader
from kdtutor.errors import KDTutorError, UnknownNameError
from kdtutor.methods import build_distiller, get_method
from kdtutor.methods.hparams import LossWeights
from kdtutor.methods.one import ONE, ONEGate, ONEHParams, sigmoid_rampup
from kdtutor.models import build_model
from kdtutor.models.split import SplitError
from kdtutor.models.summary import model_summary
from kdtutor.seeding import seed_everything
from kdtutor.train import fit, predict_logits


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny_one(**hparams) -> ONE:
    torch.manual_seed(0)
    return build_distiller("one", build_model("cnn_tiny"), None, hparams)


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_gate(h: np.ndarray, gate: ONEGate, *, training: bool) -> np.ndarray:
    """avgpool -> FC -> BN (batch statistics in training, running ones in eval) -> ReLU ->
    softmax, in NumPy from the gate's parameters."""
    w, b = gate.fc.weight.detach().double().numpy(), gate.fc.bias.detach().double().numpy()
    a = h.mean(axis=(2, 3)) @ w.T + b
    if training:
        mean, var = a.mean(axis=0), a.var(axis=0)  # BatchNorm normalises by the biased variance
    else:
        mean = gate.bn.running_mean.double().numpy()
        var = gate.bn.running_var.double().numpy()
    gamma, beta = gate.bn.weight.detach().double().numpy(), gate.bn.bias.detach().double().numpy()
    r = np.maximum((a - mean) / np.sqrt(var + gate.bn.eps) * gamma + beta, 0.0)
    e = np.exp(r - r.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def scored_inputs(dataset) -> torch.Tensor:
    """The normalised float inputs the trainer scores, all in one batch."""
    return next(iter(BatchLoader(dataset, len(dataset)))).x


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))


# -- the loss ---------------------------------------------------------------------------------
def test_loss_is_the_formula_term_by_term(batch):
    x, y = batch
    d = tiny_one(ce_weight=0.5, kd_weight=0.7, T=3.0, rampup_epochs=5)
    d.train()
    d.on_epoch_start(2, 20)
    logits, losses = d(x, y)
    assert list(losses) == ["ce1", "ce2", "ce3", "ce_ens", "kd1", "kd2", "kd3"]

    with torch.no_grad():  # the same modules, called one by one, in training mode
        h = d.trunk(x)
        z = [d.student(x), *(copy_(h) for copy_ in d.branch_copies)]
    torch.testing.assert_close(logits, z[0])  # branch 1 is the user's model
    zs = [t.double().numpy() for t in z]
    g = np_gate(h.double().numpy(), d.gate, training=True)
    ze = sum(g[:, i : i + 1] * zs[i] for i in range(3))  # z_e = sum_i g_i z_i
    rows = np.arange(len(y))
    ce = [-np_log_softmax(zi)[rows, y.numpy()].mean() for zi in [*zs, ze]]
    w = math.exp(-5 * (1 - 2 / 5) ** 2)  # epoch 2 of a 5-epoch ramp
    t = 3.0
    log_pe = np_log_softmax(ze / t)
    kl = [
        t**2 * (np.exp(log_pe) * (log_pe - np_log_softmax(zi / t))).sum(axis=1).mean() for zi in zs
    ]
    for i in range(3):
        assert losses[f"ce{i + 1}"].item() == pytest.approx(0.5 * ce[i], rel=1e-5)
        assert losses[f"kd{i + 1}"].item() == pytest.approx(0.7 * w * kl[i], rel=1e-4)
    assert losses["ce_ens"].item() == pytest.approx(0.5 * ce[3], rel=1e-5)
    assert kl[0] > 1e-4  # the branches disagree: the KD terms are not trivially zero


def test_without_kd_weight_only_the_cross_entropies_remain(batch):
    _, losses = tiny_one(kd_weight=0.0)(*batch)
    assert list(losses) == ["ce1", "ce2", "ce3", "ce_ens"]


def test_the_gate_gives_each_image_weights_that_sum_to_one(batch):
    x, _ = batch
    d = tiny_one(branches=4)
    with torch.no_grad():
        h = d.trunk(x)
        for training in (True, False):
            d.train(training)
            g = d.gate(h)
            assert g.shape == (16, 4) and bool((g >= 0).all())
            torch.testing.assert_close(g.sum(dim=1), torch.ones(16))
            np.testing.assert_allclose(
                g.double().numpy(), np_gate(h.double().numpy(), d.gate, training=training),
                rtol=1e-5, atol=1e-6,
            )  # fmt: skip
    assert d.gate.fc.in_features == h.shape[1] == 16  # cnn_tiny's stage 2 input


def test_the_ensemble_target_carries_no_gradient_into_the_branches(batch):
    """one.py detaches z_e before the KD terms: branch i's KD term reaches only branch i (and
    the trunk below it), never the gate or the other branches through the target."""
    d = tiny_one()
    d.train()
    _, losses = d(*batch)
    gate = list(d.gate.parameters())
    copies = [list(c.parameters()) for c in d.branch_copies]
    head1 = [*d.student.stages[2].parameters(), *d.student.fc.parameters()]
    heads = [head1, *copies]

    def grads(loss, params):
        return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)

    for i in range(3):
        others = [p for j, head in enumerate(heads) if j != i for p in head]
        assert all(g is None or not g.any() for g in grads(losses[f"kd{i + 1}"], gate + others)), i
        assert all(g is not None and g.any() for g in grads(losses[f"kd{i + 1}"], heads[i])), i
    # the ensemble's own CE does reach the gate and every branch (so the check above can fail)
    assert all(g is not None and g.abs().sum() > 0 for g in grads(losses["ce_ens"], gate[:1]))
    assert all(g is not None for g in grads(losses["ce_ens"], [p for h in heads for p in h]))


# -- the ramp-up --------------------------------------------------------------------------------
def test_the_kd_weight_ramps_up_as_the_authors_code():
    r = 80
    for epoch, expected in [
        (0, math.exp(-5)),
        (20, math.exp(-5 * 0.75**2)),
        (40, math.exp(-5 * 0.25)),
        (79, math.exp(-5 * (1 / 80) ** 2)),
        (80, 1.0),
        (299, 1.0),
    ]:
        assert sigmoid_rampup(epoch, r) == pytest.approx(expected, rel=1e-12), epoch
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(-3, 10) == pytest.approx(math.exp(-5))
    with pytest.raises(ConfigError, match=">= 0"):
        sigmoid_rampup(1, -1)
    # a 20-epoch run ramps over round(80 * 20 / 300) = 5 epochs, set by on_epoch_start
    assert get_method("one").scaled_hparams(20) == {"rampup_epochs": 5}
    assert get_method("one").scaled_hparams(300) == {}
    d = tiny_one(rampup_epochs=5)
    assert d.kd_ramp == pytest.approx(math.exp(-5))  # before the first epoch: epoch 0's weight
    hand = [math.exp(-5 * (1 - e / 5) ** 2) for e in range(5)] + [1.0] * 15
    for epoch in range(20):
        d.on_epoch_start(epoch, 20)
        assert d.kd_ramp == pytest.approx(hand[epoch], rel=1e-12), epoch


def test_the_kd_terms_scale_with_the_ramp(batch):
    d = tiny_one(rampup_epochs=4)
    d.eval()  # the gate's and branches' outputs do not depend on the step
    values = {}
    for epoch in (0, 2, 4):
        d.on_epoch_start(epoch, 10)
        with torch.no_grad():
            values[epoch] = d(*batch)[1]
    for epoch in (0, 2):
        ratio = values[epoch]["kd1"].item() / values[4]["kd1"].item()
        assert ratio == pytest.approx(math.exp(-5 * (1 - epoch / 4) ** 2), rel=1e-5)
        assert values[epoch]["ce_ens"].item() == values[4]["ce_ens"].item()


# -- training and scoring -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_data):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    student = build_model("cnn_tiny")
    start = copy.deepcopy(student.state_dict())
    d = build_distiller("one", student, rampup_epochs=1)
    result = fit(d, tiny_data.train, tiny_data.test, epochs=2, batch_size=50, lr=0.1)
    return student, start, d, result


def test_after_fit_the_users_student_is_trunk_plus_branch_one(trained, tiny_data):
    student, start, d, _ = trained
    assert d.student is student
    assert all(not torch.equal(v, start[k]) for k, v in student.state_dict().items()
               if v.is_floating_point())  # fmt: skip
    x = scored_inputs(tiny_data.test)[:20]
    student.eval(), d.eval()
    with torch.no_grad():
        direct = student(x)
        torch.testing.assert_close(d.student(x), direct, rtol=0, atol=0)
        torch.testing.assert_close(d.branches[0](d.trunk(x)), direct)
        torch.testing.assert_close(d.eval_networks()["branch1"](x), direct, rtol=0, atol=0)


def test_every_branch_and_the_gated_ensemble_are_scored(trained, tiny_data):
    _, _, d, result = trained
    scores = result.history[-1]["test"]
    assert list(scores) == ["branch1", "branch2", "branch3", "ensemble"]
    assert result.history[-1]["test_acc"] == scores["branch1"]["accuracy"]
    assert {"ce1", "ce2", "ce3", "ce_ens", "kd1", "kd2", "kd3"} == set(result.history[-1]["losses"])
    x, labels = scored_inputs(tiny_data.test), tiny_data.test.targets
    d.eval()
    with torch.no_grad():  # every branch and the ensemble recomputed module by module
        h = d.trunk(x)
        z = [d.student.fc(d.student.flatten(d.student.avgpool(d.student.stages[2](h))))]
        z += [c(h) for c in d.branch_copies]
    for i, zi in enumerate(z, start=1):
        expected = 100.0 * int((zi.argmax(1) == labels).sum()) / len(labels)
        assert scores[f"branch{i}"]["accuracy"] == pytest.approx(expected, abs=1e-9), i
    logits, _ = predict_logits(d.student, tiny_data.test)
    torch.testing.assert_close(logits, z[0])
    g = np_gate(h.double().numpy(), d.gate, training=False)
    ze = sum(g[:, i : i + 1] * z[i].double().numpy() for i in range(3))
    expected = 100.0 * float(np.mean(ze.argmax(axis=1) == labels.numpy()))
    assert scores["ensemble"]["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_the_gated_ensemble_costs_less_than_m_students():
    """The ensemble runs the trunk once and the M branches on its output, plus the gate
    (a C x M linear layer and the M-term weighted sum of K logits): trunk + M heads + gate
    FLOPs, where M separate students would run the trunk M times. The saving is
    (M - 1) x the trunk's FLOPs, minus the gate's few hundred."""
    torch.manual_seed(0)
    student = build_model("cnn_wide_s2")
    m = 3
    d = build_distiller("one", student, branches=m)
    with torch.no_grad():
        h = d.trunk(torch.zeros(1, 3, 32, 32))
    trunk = model_summary(d.trunk, latency_runs=0).flops
    head = model_summary(d.branches[0], (1, *h.shape[1:]), latency_runs=0).flops
    whole = model_summary(student, latency_runs=0).flops
    assert trunk + head == whole  # the split loses and duplicates nothing
    channels, classes = h.shape[1], 10
    gate = 2 * channels * m + 2 * m * classes  # a multiply-add is 2 FLOPs
    ensemble = model_summary(d.ensemble_network(), latency_runs=0).flops
    assert ensemble == trunk + m * head + gate
    assert ensemble < m * whole
    assert ensemble / whole < 2.0  # cnn_wide_s2: the trunk is ~0.58 of the network


# -- resume, other students, refusals ------------------------------------------------------------
def test_a_two_epoch_run_resumes_bit_identically(tiny_data, tmp_path):
    cfg = {"epochs": 2, "batch_size": 50, "lr": 0.05, "seed": 3}

    def make():
        seed_everything(11)
        return build_distiller("one", build_model("cnn_tiny"), None, {"rampup_epochs": 2})

    ensemble = ("branch_copies.1.", "gate.")  # compared too, not only the student
    runs = interrupted_then_resumed(
        make, *tiny_data, tmp_path, after=1, same=("losses",), covers=ensemble, config=cfg
    )
    assert [h["epoch"] for h in runs.result.history] == [1, 2]
    ramp = math.exp(-5 * 0.5**2)  # epoch 1
    assert runs.resumed.kd_ramp == runs.full.kd_ramp == pytest.approx(ramp)


def test_a_resnet_student_split_at_an_earlier_stage(batch):
    x, y = batch
    torch.manual_seed(0)
    student = build_model("resnet8_half_s2")
    d = build_distiller("one", student, split_at="layer2", branches=2)
    d.eval()
    with torch.no_grad():
        h = d.trunk(x)
        assert d.gate.fc.in_features == h.shape[1]
        torch.testing.assert_close(d.branches[0](h), student(x))
        torch.testing.assert_close(d.branches[1](h), d.eval_networks()["branch2"](x))
    d.train()
    _, losses = d(x, y)
    assert list(losses) == ["ce1", "ce2", "ce_ens", "kd1", "kd2"]
    assert all(math.isfinite(v.item()) for v in losses.values())
    with pytest.raises(UnknownNameError, match="layer3"):
        build_distiller("one", build_model("resnet8_half_s2"), split_at="layer4")


def test_an_untraceable_student_is_refused_with_a_pointer_to_dml():
    with pytest.raises(SplitError, match=r"ONE needs a traceable model.*use dml") as info:
        build_distiller("one", build_model("vgg8"))
    assert isinstance(info.value, KDTutorError)
    assert isinstance(info.value.__cause__, SplitError)


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ({"branches": 1}, ConfigError, r"branches must be an integer >= 2"),
        ({"rampup_epochs": -1}, ConfigError, r"rampup_epochs must be >= 0"),
        ({"T": 0}, ConfigError, r"T must be > 0"),
    ],
)
def test_bad_hyperparameters_are_refused(values, error, match):
    with pytest.raises(error, match=match):
        build_distiller("one", build_model("cnn_tiny"), None, values)


def test_a_teacher_and_a_training_batch_of_one_image_are_refused(batch):
    with pytest.raises(KDTutorError, match=r"takes none.*--teacher none"):
        build_distiller("one", build_model("cnn_tiny"), build_model("cnn_tiny"))
    d = tiny_one()
    d.train()
    with pytest.raises(KDTutorError, match="at least 2 images per training batch"):
        d(batch[0][:1], batch[1][:1])
    d.eval()
    with torch.no_grad():
        d.eval_networks()["ensemble"](batch[0][:1])  # evaluation reads the running statistics


def test_defaults_and_contract():
    cls = get_method("one")
    assert cls is ONE and cls.family == "online" and not cls.requires_teacher
    assert issubclass(cls.hparams_cls, LossWeights) and cls.loss_weights == ("kd_weight",)
    hp = ONEHParams()
    assert (hp.ce_weight, hp.kd_weight, hp.T, hp.branches, hp.rampup_epochs) == (1, 1, 3, 3, 80)
    assert (cls.epoch_hparams, cls.protocol_epochs) == ({"rampup_epochs": 80}, 300)
    d = tiny_one()
    assert d.supports_ddp and len(d.branches) == 3
    names = {n for n, _ in d.named_parameters()}
    assert not any(n.startswith(("trunk.", "_parts")) for n in names)  # each parameter once
    assert len(list(d.trainable_parameters())) == len(names)
    # the copies start from their own initialisation (a permutation of the student's values)
    w1, w2 = d.student.fc.weight, d.branch_copies[0].fc.weight
    assert not torch.equal(w1, w2) and torch.equal(w1.flatten().sort()[0], w2.flatten().sort()[0])


# -- the command line -------------------------------------------------------------------------------
def test_one_trains_through_the_cli(tmp_path, capsys):
    assert main(["methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "online" in lines["one"] and "On-the-Fly Native Ensemble" in lines["one"]
    out = tmp_path / "r.json"
    argv = ["distill", "--dataset", "shapes", "--teacher", "none", "--student", "cnn_tiny",
            "--method", "one", "--epochs", "1", "--train-size", "96", "--test-size", "32",
            "--scale", "smoke", "--out", str(out), "--set", "branches=2"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    history = json.loads(out.read_text())["runs"][0]["history"][0]
    assert set(history["losses"]) == {"ce1", "ce2", "ce_ens", "kd1", "kd2"}
    assert all(math.isfinite(v) for v in history["losses"].values())
    assert set(history["test"]) == {"branch1", "branch2", "ensemble"}


def test_gate_module_alone():
    gate = ONEGate(5, 3)
    g = gate(torch.randn(4, 5))  # a (B, C) trunk output is read as is
    torch.testing.assert_close(g.sum(dim=1), torch.ones(4))
    assert isinstance(gate.bn, nn.BatchNorm1d)
