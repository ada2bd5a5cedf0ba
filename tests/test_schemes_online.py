"""DML and KDCL, the online methods with peers, against computations written out by hand:
the paper's Algorithm 1 with two SGD optimizers, the simultaneous step, KDCL's loss for each
of its soft targets, the scores of every peer and of the ensemble, resume and the CLI."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _resume import interrupted_then_resumed
from torch import nn

from kdtutor.cli import main
from kdtutor.config import ConfigError
from kdtutor.data import Batch
from kdtutor.errors import KDTutorError, NotAModelError, ShapeMismatchError
from kdtutor.methods import Steps, build_distiller, get_method
from kdtutor.methods.dml import DML, DMLHParams
from kdtutor.methods.kdcl import KDCL, KDCLHParams
from kdtutor.models import build_model
from kdtutor.seeding import seed_everything
from kdtutor.train import fit, predict_logits

LR = 0.5


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def mlp(seed: int, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=classes, in_channels=3, image_size=32, hidden=(16,))


def kl(target_logits, logits, t=1.0):
    """t^2 * batch mean of sum_c p_t (log p_t - log p), p = softmax(z / t), written out."""
    p = torch.softmax(target_logits / t, 1)
    return t**2 * (p * (torch.log(p) - torch.log_softmax(logits / t, 1))).sum(1).mean()


def sgd_steps(distiller) -> Steps:
    groups = distiller.optimizer_groups()
    return Steps(distiller, {name: torch.optim.SGD(g.params, lr=LR) for name, g in groups.items()})


def one_dml_step(update, a, b, x, y):
    d = DML(copy.deepcopy(a), None, DMLHParams(update=update), peers=[copy.deepcopy(b)])
    d.train()
    _, logged = d.train_step(Batch(x, y, None), sgd_steps(d))
    return d, logged


def algorithm_1(a, b, x, y, *, sequential: bool):
    """Zhang et al.'s Algorithm 1 for two networks, each with its own SGD: predictions of both,
    update net 1, predictions again (sequential only), update net 2."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    opt_a = torch.optim.SGD(a.parameters(), lr=LR)
    opt_b = torch.optim.SGD(b.parameters(), lr=LR)
    za, zb = a(x), b(x)
    loss_a = F.cross_entropy(za, y) + kl(zb.detach(), za)
    opt_a.zero_grad()
    loss_a.backward()
    opt_a.step()
    if sequential:
        with torch.no_grad():
            za = a(x)
    ce_b, kl_b = F.cross_entropy(zb, y), kl(za.detach(), zb)
    opt_b.zero_grad()
    (ce_b + kl_b).backward()
    opt_b.step()
    return a, b, {"ce2": ce_b.detach(), "kl2": kl_b.detach()}


def assert_same_weights(net, expected):
    for (name, got), want in zip(
        net.state_dict().items(), expected.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, msg=lambda m, name=name: f"{name}: {m}")


@pytest.fixture
def batch(tiny_data):
    return tiny_data.train.batch(torch.arange(32))


# -- DML's update orders against Algorithm 1 written by hand -------------------------------------
def test_sequential_step_is_the_papers_algorithm_1(batch):
    x, y = batch
    a, b = mlp(0), mlp(1)
    d, logged = one_dml_step("sequential", a, b, x, y)
    hand_a, hand_b, hand_losses = algorithm_1(a, b, x, y, sequential=True)
    assert sorted(d.optimizer_groups()) == ["peer1", "peer2"]
    assert list(logged) == ["ce1", "kl1", "ce2", "kl2"]
    assert_same_weights(d.student, hand_a)
    assert_same_weights(d.others[0], hand_b)
    for name in ("ce2", "kl2"):  # peer 2's target was the updated peer 1
        torch.testing.assert_close(logged[name], hand_losses[name])


def test_simultaneous_step_takes_every_target_before_the_step(batch):
    x, y = batch
    a, b = mlp(0), mlp(1)
    d, logged = one_dml_step("simultaneous", a, b, x, y)
    hand_a, hand_b, hand_losses = algorithm_1(a, b, x, y, sequential=False)
    assert sorted(d.optimizer_groups()) == ["student"]
    assert list(logged) == ["ce1", "kl1", "ce2", "kl2"]
    assert_same_weights(d.student, hand_a)
    assert_same_weights(d.others[0], hand_b)
    torch.testing.assert_close(logged["kl2"], hand_losses["kl2"])
    # and it is another update: peer 1 moves alike, peer 2 learns from another target
    seq, seq_logged = one_dml_step("sequential", a, b, x, y)
    assert_same_weights(seq.student, d.student)
    assert not torch.allclose(seq_logged["kl2"], logged["kl2"])
    gaps = [
        (p - q).abs().max().item()
        for p, q in zip(seq.others[0].parameters(), d.others[0].parameters(), strict=True)
    ]
    assert max(gaps) > 1e-4


def test_sequential_reforward_leaves_batchnorm_statistics_to_the_step(batch):
    """Each peer's running statistics move once per step, as after one training forward."""
    x, y = batch
    torch.manual_seed(0)
    student = build_model("cnn_tiny")
    d = build_distiller("dml", copy.deepcopy(student))
    peer2_start = copy.deepcopy(d.others[0])
    d.train()
    d.train_step(Batch(x, y, None), sgd_steps(d))
    for start, trained in ((student, d.student), (peer2_start, d.others[0])):
        start.train()
        with torch.no_grad():
            start(x)
        for name, buffer in start.named_buffers():
            torch.testing.assert_close(dict(trained.named_buffers())[name], buffer)


def test_four_peers_train_and_are_scored(tiny_data):
    torch.manual_seed(0)
    d = build_distiller("dml", mlp(0), num_peers=4)
    starts = [copy.deepcopy(p.state_dict()) for p in d.peers]
    assert not torch.equal(starts[0]["fc.weight"], starts[1]["fc.weight"])  # independent inits
    result = fit(d, tiny_data.train, tiny_data.test, epochs=1, batch_size=50, lr=0.1)
    assert list(result.history[0]["losses"]) == [
        f"{n}{k}" for k in range(1, 5) for n in "ce kl".split()
    ]
    assert list(result.history[0]["test"]) == ["peer1", "peer2", "peer3", "peer4", "ensemble"]
    for peer, start in zip(d.peers, starts, strict=True):
        assert not torch.equal(peer.fc.weight, start["fc.weight"])


@pytest.mark.parametrize("method", ["dml", "kdcl"])
def test_mixed_architectures_step_on_one_batch(method, batch):
    x, y = batch
    torch.manual_seed(0)
    d = build_distiller(method, build_model("cnn_wide_s2"), peers=("resnet8_half_s2",),
                        num_peers=2, input_shape=(3, 32, 32))  # fmt: skip
    assert type(d.others[0]).__name__ == type(build_model("resnet8_half_s2")).__name__
    starts = [copy.deepcopy(p.state_dict()) for p in d.peers]
    d.train()
    outputs, losses = d.train_step(Batch(x, y, None), sgd_steps(d))
    assert outputs.shape == (32, 10)
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    for peer, start in zip(d.peers, starts, strict=True):
        assert any(not torch.equal(v, start[k]) for k, v in peer.state_dict().items())


# -- KDCL's loss against its formula written out ---------------------------------------------------
def hand_teacher(za, zb, y, mode):
    """KDCL's soft target from two peers' logits, by explicit loops."""
    if mode == "mean":
        return (za + zb) / 2
    out = torch.empty_like(za)
    for i in range(za.shape[0]):
        if mode == "naive":  # the row of the peer with the lower cross entropy
            ce_a = -torch.log_softmax(za[i], 0)[y[i]]
            ce_b = -torch.log_softmax(zb[i], 0)[y[i]]
            out[i] = za[i] if ce_a <= ce_b else zb[i]
        else:  # min_logit: class by class, the smaller logit once the label's is moved to 0
            for c in range(za.shape[1]):
                out[i, c] = min(za[i, c] - za[i, y[i]], zb[i, c] - zb[i, y[i]])
    return out


@pytest.mark.parametrize("mode", ["mean", "naive", "min_logit"])
def test_kdcl_gradients_are_those_of_the_formula(mode, batch):
    x, y = batch
    x, y = x[:12], y[:12]
    a, b = mlp(0), mlp(1)
    d = KDCL(copy.deepcopy(a), None, KDCLHParams(ensemble=mode, ce_weight=0.7, kd_weight=0.3))
    d.others[0].load_state_dict(b.state_dict())
    d.train()
    _, losses = d(x, y)
    assert list(losses) == ["ce1", "kd1", "ce2", "kd2"]
    sum(losses.values()).backward()
    za, zb = a(x), b(x)
    zt = hand_teacher(za.detach(), zb.detach(), y, mode)
    t = 4.0  # the default
    total = sum(0.7 * F.cross_entropy(z, y) + 0.3 * kl(zt, z, t) for z in (za, zb))
    total.backward()
    for net, hand in ((d.student, a), (d.others[0], b)):
        for (name, p), q in zip(net.named_parameters(), hand.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, msg=lambda m, name=name: f"{name}: {m}")


def test_kdcl_peers_see_their_own_views_drawn_per_step(batch):
    x, y = batch
    torch.manual_seed(0)
    d = build_distiller("kdcl", build_model("cnn_tiny"), augment="crop_flip", num_peers=3)
    seen: list[torch.Tensor] = []
    for peer in d.peers:
        peer.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))

    def views():
        seen.clear()
        d(x, y)
        return list(seen)

    d.train()
    d.on_epoch_start(0, 2)
    first = views()
    assert all(v.shape == x.shape for v in first)
    assert not any(torch.equal(v, x) for v in first)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    second = views()
    assert not torch.equal(first[0], second[0])  # a new draw each step
    d.on_epoch_start(0, 2)
    assert all(
        torch.equal(u, v) for u, v in zip(first, views(), strict=True)
    )  # the same (epoch, step)
    d.eval()
    assert all(torch.equal(v, x) for v in views())  # no augmentation outside training


# -- what is scored ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dml", "kdcl"])
def test_every_peer_and_the_ensemble_are_scored(method, tiny_data):
    torch.manual_seed(0)
    d = build_distiller(method, mlp(0))
    result = fit(d, tiny_data.train, tiny_data.test, epochs=2, batch_size=50, lr=0.1)
    scores = result.history[-1]["test"]
    assert list(scores) == ["peer1", "peer2", "ensemble"]
    probs = []
    for name, net in (("peer1", d.student), ("peer2", d.others[0])):
        logits, labels = predict_logits(net, tiny_data.test)
        expected = 100.0 * int((logits.argmax(1) == labels).sum()) / len(labels)
        assert scores[name]["accuracy"] == pytest.approx(expected, abs=1e-9)
        z = logits.double().numpy()
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    ensemble = np.mean(probs, axis=0).argmax(axis=1)
    expected = 100.0 * float(np.mean(ensemble == labels.numpy()))
    assert scores["ensemble"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert result.history[-1]["test_acc"] == scores["peer1"]["accuracy"]  # the student's


# -- resume ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "hparams"),
    [("dml", {}), ("dml", {"update": "simultaneous"}), ("kdcl", {"augment": "crop_flip"})],
)
def test_a_two_epoch_run_resumes_bit_identically(method, hparams, tiny_data, tmp_path):
    cfg = {"epochs": 2, "batch_size": 50, "lr": 0.05, "seed": 3}

    def make():
        seed_everything(11)
        return build_distiller(method, build_model("cnn_tiny"), None, hparams)

    runs = interrupted_then_resumed(
        make, *tiny_data, tmp_path, after=1, covers=("others.0.",), config=cfg
    )
    groups = ["peer1", "peer2"] if method == "dml" and not hparams else ["student"]
    assert sorted(runs.cut["optimizers"]) == groups
    assert [h["epoch"] for h in runs.result.history] == [1, 2]


# -- hyperparameters and bad input ----------------------------------------------------------------
def test_defaults_and_contract():
    assert (DMLHParams().T, DMLHParams().update, DMLHParams().num_peers) == (1.0, "sequential", 2)
    assert (KDCLHParams().T, KDCLHParams().ensemble, KDCLHParams().augment) == (
        4.0,
        "min_logit",
        None,
    )
    for method in ("dml", "kdcl"):
        cls = get_method(method)
        assert cls.family == "online" and not cls.requires_teacher
        assert cls.loss_weights == ("kd_weight",)
    assert build_distiller("dml", mlp(0)).supports_ddp is False  # sequential steps outside forward
    assert build_distiller("dml", mlp(0), update="simultaneous").supports_ddp is True
    assert build_distiller("kdcl", mlp(0)).supports_ddp is True


@pytest.mark.parametrize(
    ("method", "values", "error", "match"),
    [
        ("dml", {"num_peers": 1}, ConfigError, r"num_peers must be an integer >= 2"),
        ("dml", {"peers": ("cnn_tiny", "cnn_tiny")}, ConfigError,
         r"names 2 network\(s\).*num_peers must be 3, but num_peers=2"),
        ("dml", {"update": "alternate"}, ConfigError, r"'sequential', 'simultaneous'"),
        ("dml", {"T": 0}, ConfigError, r"T must be > 0"),
        ("kdcl", {"ensemble": "max"}, ConfigError, r"'mean', 'naive', 'min_logit'"),
        ("kdcl", {"augment": "crop_flp"}, ConfigError, r"kdcl.augment.*crop_flip"),
        ("kdcl", {"peers": ("cnn_tnyi",)}, KDTutorError, r"cnn_tiny"),
    ],
)  # fmt: skip
def test_bad_hyperparameters_are_refused(method, values, error, match):
    with pytest.raises(error, match=match):
        build_distiller(method, build_model("cnn_tiny"), None, values)


def test_bad_peers_are_refused():
    student = mlp(0)
    with pytest.raises(KDTutorError, match=r"takes no teacher.*--teacher none"):
        build_distiller("dml", student, mlp(1))
    with pytest.raises(KDTutorError, match="both as modules and by name"):
        DML(student, None, DMLHParams(peers=("mlp",)), peers=[mlp(1)])
    with pytest.raises(ConfigError, match="num_peers must be 3"):
        DML(student, None, DMLHParams(), peers=[mlp(1), mlp(2)])
    with pytest.raises(KDTutorError, match="is the student or an earlier peer"):
        DML(student, None, DMLHParams(), peers=[student])
    with pytest.raises(NotAModelError, match=r"peer 2 must be an nn\.Module"):
        KDCL(student, None, KDCLHParams(), peers=["cnn_tiny"])
    with pytest.raises(ShapeMismatchError, match="peer 2 predicts 5"):
        KDCL(student, None, KDCLHParams(), peers=[mlp(1, classes=5)])
    with pytest.raises(KDTutorError, match=r"need the image shape.*input_shape=\(C, H, W\)"):
        build_distiller("dml", student, peers=("cnn_tiny",))


# -- the command line -----------------------------------------------------------------------------
def test_methods_command_lists_them(capsys):
    assert main(["methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "online" in lines["dml"] and "Deep Mutual Learning" in lines["dml"]
    assert "online" in lines["kdcl"] and "Collaborative Learning" in lines["kdcl"]


@pytest.mark.parametrize(
    ("method", "sets"),
    [("dml", ["--set", "num_peers=3"]), ("kdcl", ["--set", "peers=[cnn_tiny_s2]"])],
)
def test_they_train_through_the_cli(method, sets, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["distill", "--dataset", "shapes", "--teacher", "none", "--student", "cnn_tiny",
            "--method", method, "--epochs", "1", "--train-size", "96", "--test-size", "32",
            "--scale", "smoke", "--out", str(out), *sets]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    history = json.loads(out.read_text())["runs"][0]["history"][0]
    assert history["losses"] and all(math.isfinite(v) for v in history["losses"].values())
