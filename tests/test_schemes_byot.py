"""BYOT (Zhang et al., 2019): the total loss against the re-implementation's formula written out
with NumPy (code and paper modes), no gradient into the deepest exit from its teaching terms,
the exits' heads, FLOPs and standalone networks, scoring, a bit-identical resume, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from _resume import interrupted_then_resumed
from torch import nn

from kdtutor.bench.cost import network_flops
from kdtutor.bench.tuning import weights_for
from kdtutor.cli import main
from kdtutor.config import ConfigError
from kdtutor.errors import KDTutorError, ShapeMismatchError, UnknownNameError
from kdtutor.methods import LossWeights, build_distiller, get_method
from kdtutor.methods.byot import BYOT, BYOTHParams, byot_kd_loss, exit_networks
from kdtutor.models import build_model, model_summary
from kdtutor.models.split import SplitError
from kdtutor.train import fit
from kdtutor.train.evaluation import predict_logits

torch.set_num_threads(1)


# -- helpers -----------------------------------------------------------------------------------
def np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_ce(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y].mean()


def tiny_byot(**hparams):
    """A 3-stage ConvNet on 3x8x8 inputs (stage maps 4x8x8, 8x4x4, 16x2x2), 5 classes."""
    torch.manual_seed(0)
    student = build_model("convnet", num_classes=5, widths=(4, 8, 16))
    return build_distiller("byot", student, input_shape=(3, 8, 8), **hparams)


def by_hand(d, x):
    """Every exit's logits and pooled features, the stages run one after the other by hand."""
    s = d.student
    h0 = s.stages[0](x)
    h1 = s.stages[1](h0)
    f_c = s.avgpool(s.stages[2](h1)).flatten(1)
    z_c = s.fc(f_c)
    out = []
    for head, h in zip(d.heads, (h0, h1), strict=True):
        f = head.bottleneck(h).mean(dim=(2, 3))  # global average pooling
        out.append((head.fc(f), f))
    as_np = [(z.detach().double().numpy(), f.detach().double().numpy()) for z, f in out]
    return as_np, z_c.detach().double().numpy(), f_c.detach().double().numpy()


# -- defaults and structure ---------------------------------------------------------------------
def test_defaults_are_the_codes_and_byot_is_self_distillation_without_teacher():
    hp = BYOTHParams()
    assert (hp.ce_weight, hp.kd_weight, hp.T, hp.beta, hp.mode) == (0.9, 0.1, 3.0, 1e-6, "code")
    cls = get_method("byot")
    assert cls is BYOT and issubclass(cls.hparams_cls, LossWeights)
    assert cls.family == "self" and not cls.requires_teacher
    assert cls.loss_weights == ("kd_weight", "beta")  # both teaching terms scale together
    assert weights_for("byot", 10.0, 20, None) == pytest.approx({"kd_weight": 1.0, "beta": 1e-5})


def test_heads_follow_the_codes_bottleneck_on_cnn_wide_s2():
    d = build_distiller("byot", build_model("cnn_wide_s2"))  # stages 16x16x16, 8x8x32, 4x4x64
    assert d.exit_paths == ("stages.0", "stages.1") and d.embedding_path == "flatten"
    for head, c_in, k in zip(d.heads, (16, 32), (4, 2), strict=True):
        convs = [m for m in head.bottleneck if isinstance(m, nn.Conv2d)]
        assert [(c.in_channels, c.out_channels) for c in convs] == [(c_in, 16), (16, 16), (16, 64)]
        assert [c.kernel_size for c in convs] == [(1, 1), (k, k), (1, 1)]
        assert convs[1].stride == (k, k) and all(c.bias is not None for c in convs)
        assert [type(m) for m in head.bottleneck].count(nn.BatchNorm2d) == 3
        assert (head.fc.in_features, head.fc.out_features) == (64, 10)
    assert list(d.eval_networks()) == ["student", "exit1", "exit2", "ensemble"]
    one = build_distiller("byot", build_model("cnn_wide_s2"), exits=("stages.1",))
    assert len(one.heads) == 1 and list(one.eval_networks()) == ["student", "exit1", "ensemble"]


# -- the loss ---------------------------------------------------------------------------------
def test_code_mode_total_loss_is_the_codes_formula():
    d = tiny_byot(beta=0.05)  # a hint large enough to count
    torch.manual_seed(1)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    _, losses = d(x, y)
    assert list(losses) == ["ce", "ce1", "kd1", "feat1", "ce2", "kd2", "feat2"]
    exits, z_c, f_c = by_hand(d, x)
    y_np, t = y.numpy(), 3.0
    p_c = np.exp(np_log_softmax(z_c / t))
    ce = np_ce(z_c, y_np) + sum(np_ce(z, y_np) for z, _ in exits)
    soft_ce = [-(p_c * np_log_softmax(z / t)).sum(axis=1).mean() * t**2 for z, _ in exits]
    hint = [(((f - f_c) ** 2) * ((f > 0) | (f_c > 0))).sum() for _, f in exits]
    total = 0.9 * ce + 0.1 * sum(soft_ce) + 0.05 * sum(hint)  # train.py, lines 252-254
    assert sum(v.item() for v in losses.values()) == pytest.approx(total, rel=1e-5)
    assert losses["ce"].item() == pytest.approx(0.9 * np_ce(z_c, y_np), rel=1e-5)
    assert losses["kd2"].item() == pytest.approx(0.1 * soft_ce[1], rel=1e-5)
    assert losses["feat1"].item() == pytest.approx(0.05 * hint[0], rel=1e-5)


def test_paper_mode_total_loss_is_the_papers_formula():
    d = tiny_byot(beta=0.05, mode="paper", T=2.0)
    torch.manual_seed(2)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    _, losses = d(x, y)
    exits, z_c, f_c = by_hand(d, x)
    y_np, t = y.numpy(), 2.0
    log_p_c = np_log_softmax(z_c / t)
    total = np_ce(z_c, y_np)  # the deepest exit's CE, weighted 1
    for z, f in exits:
        kl = (np.exp(log_p_c) * (log_p_c - np_log_softmax(z / t))).sum(axis=1).mean()
        total += 0.9 * np_ce(z, y_np) + 0.1 * t**2 * kl + 0.05 * ((f - f_c) ** 2).sum(1).mean()
    assert sum(v.item() for v in losses.values()) == pytest.approx(total, rel=1e-5)


def test_code_and_paper_kd_differ_by_the_deepest_entropy_with_the_same_gradient():
    torch.manual_seed(3)
    z = torch.randn(4, 6, requires_grad=True)
    z_c = torch.randn(4, 6)
    code, paper = byot_kd_loss(z, z_c, 3.0, "code"), byot_kd_loss(z, z_c, 3.0, "paper")
    p_c = torch.softmax(z_c / 3.0, 1)
    entropy = -(p_c * p_c.log()).sum(1).mean()
    assert (code - paper).item() == pytest.approx(9.0 * entropy.item(), rel=1e-5)
    (g_code,) = torch.autograd.grad(code, z)
    (g_paper,) = torch.autograd.grad(paper, z)
    torch.testing.assert_close(g_code, g_paper)
    with pytest.raises(ConfigError, match="unknown BYOT mode"):
        byot_kd_loss(z, z_c, 3.0, "both")


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_no_gradient_reaches_the_deepest_exit_from_the_teaching_terms(mode):
    torch.manual_seed(0)
    d = build_distiller("byot", build_model("cnn_wide_s2"), mode=mode, beta=1.0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    _, losses = d(x, y)
    teaching = sum(v for k, v in losses.items() if k.startswith(("kd", "feat")))
    deepest = [*d.student.stages[2].parameters(), *d.student.fc.parameters()]  # z_C, F_C only
    grads = torch.autograd.grad(teaching, deepest, allow_unused=True, retain_graph=True)
    assert all(g is None or not g.any() for g in grads)
    # while they do train the shallow stages and the exits
    shallow = [
        d.student.stages[0].blocks[0].conv.weight,
        d.heads[0].fc.weight,
        d.heads[1].fc.weight,
    ]
    assert all(g.any() for g in torch.autograd.grad(teaching, shallow, retain_graph=True))
    # the deepest exit's own CE does reach it
    (g,) = torch.autograd.grad(losses["ce"], [d.student.fc.weight])
    assert g.any()


# -- the exits as networks ------------------------------------------------------------------
@pytest.mark.parametrize("model", ["cnn_wide_s2", "resnet8_half_s2"])
def test_exit_flops_increase_and_the_deepest_exit_is_the_student(model):
    d = build_distiller("byot", build_model(model))
    flops = {k: model_summary(n, latency_runs=0).flops for k, n in exit_networks(d).items()}
    assert list(flops) == ["exit1", "exit2", "student", "ensemble"]
    values = list(flops.values())
    assert all(a < b for a, b in itertools.pairwise(values))
    assert exit_networks(d)["student"] is d.student
    # what is scored costs what the standalone exit costs: the stages after it do not run
    scored = d.eval_networks()
    assert {k: network_flops(scored[k], (3, 32, 32)) for k in flops} == flops
    assert flops["student"] == model_summary(build_model(model), latency_runs=0).flops
    if model == "cnn_wide_s2":  # by hand: stem conv 3->16 at 16x16, then the head
        stem = 16 * 16 * 16 * 27 * 2
        head = 16 * 16 * 16 * 16 * 2 + 4 * 4 * 16 * 16 * 16 * 2 + 4 * 4 * 16 * 64 * 2 + 64 * 10 * 2
        assert flops["exit1"] == stem + head == 517_376


@pytest.mark.parametrize("model", ["cnn_wide_s2", "resnet8_half_s2"])
def test_one_batch_trains_and_exit_networks_give_what_is_scored(model, tiny_data):
    torch.manual_seed(0)
    d = build_distiller("byot", build_model(model))
    before = {k: v.clone() for k, v in d.trainable_state_dict().items()}
    result = fit(d, tiny_data.train.subset(32), None, epochs=1, batch_size=32, lr=0.1)
    assert set(result.history[0]["losses"]) == {"ce", "ce1", "kd1", "feat1", "ce2", "kd2", "feat2"}
    after = d.trainable_state_dict()
    assert not torch.equal(after["heads.0.fc.weight"], before["heads.0.fc.weight"])
    assert not torch.equal(after["student.fc.weight"], before["student.fc.weight"])
    d.eval()
    x = torch.randn(16, 3, 32, 32)
    scored = d.eval_networks()
    for name, net in exit_networks(d).items():
        torch.testing.assert_close(net(x), scored[name](x))


def test_scores_equal_independent_counts_over_each_exit(tiny_data):
    torch.manual_seed(0)
    d = build_distiller("byot", build_model("cnn_wide_s2"))
    result = fit(d, tiny_data.train, tiny_data.test, epochs=1, batch_size=50, lr=0.05)
    scores = result.history[-1]["test"]
    assert list(scores) == ["student", "exit1", "exit2", "ensemble"]
    probs = []
    for name in ("exit1", "exit2", "student"):
        net = d.student if name == "student" else exit_networks(d)[name]
        logits, labels = predict_logits(net, tiny_data.test)
        probs.append(torch.softmax(logits.double(), 1).numpy())
        expected = 100.0 * int((logits.argmax(1) == labels).sum()) / len(labels)
        assert scores[name]["accuracy"] == pytest.approx(expected, abs=1e-9), name
    ensemble = np.mean(probs, axis=0).argmax(1)
    expected = 100.0 * (ensemble == labels.numpy()).mean()
    assert scores["ensemble"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert result.history[-1]["test_acc"] == scores["student"]["accuracy"]


def test_resume_is_bit_identical(tiny_data, tmp_path):
    train, test = tiny_data.train.subset(96), tiny_data.test.subset(32)
    cfg = {"epochs": 2, "batch_size": 32, "lr": 0.05, "seed": 3}

    def make():
        torch.manual_seed(11)
        return build_distiller("byot", build_model("cnn_wide_s2"))

    runs = interrupted_then_resumed(
        make, train, test, tmp_path, after=1, same=("test",), covers=("heads.",), config=cfg
    )
    assert [h["epoch"] for h in runs.result.history] == [1, 2]


def test_trains_through_the_command_line(tmp_path):
    out = tmp_path / "results.json"
    code = main(["distill", "--dataset", "shapes", "--student", "cnn_tiny", "--method", "byot",
                 "--teacher", "none", "--epochs", "1", "--train-size", "64", "--test-size", "32",
                 "--batch-size", "32", "--scale", "smoke", "--set", "mode=paper", "--out",
                 str(out), "-q"])  # fmt: skip
    assert code == 0
    import json

    data = json.loads(out.read_text())
    assert data["method"] == "byot" and data["hparams"] == {"mode": "paper"}
    assert set(data["runs"][0]["history"][0]["test"]) == {"student", "exit1", "exit2", "ensemble"}


# -- bad input --------------------------------------------------------------------------------
def test_bad_input_is_refused_with_the_fix():
    wide = build_model("cnn_wide_s2")
    with pytest.raises(KDTutorError, match="takes no teacher"):
        build_distiller("byot", wide, build_model("cnn_wide_s2"))
    with pytest.raises(KDTutorError, match="last stage"):
        build_distiller("byot", wide, exits=("stages.2",))
    with pytest.raises(UnknownNameError, match=r"Did you mean 'stages\.1'"):
        build_distiller("byot", wide, exits=("stages.l",))
    with pytest.raises(KDTutorError, match="shallowest to deepest"):
        build_distiller("byot", wide, exits=("stages.1", "stages.0"))
    with pytest.raises(ConfigError, match=r"byot\.mode"):
        build_distiller("byot", wide, mode="both")
    with pytest.raises(ConfigError, match="beta"):
        build_distiller("byot", wide, beta=-1.0)
    with pytest.raises(ConfigError, match="bottleneck_ratio"):
        build_distiller("byot", wide, bottleneck_ratio=0)
    mlp = build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=(16, 16))
    with pytest.raises(ShapeMismatchError, match="feature maps"):
        build_distiller("byot", mlp, input_shape=(1, 8, 8))
    with pytest.raises(KDTutorError, match="needs a BYOT distiller"):
        exit_networks(build_distiller("scratch", wide))


def test_an_untraceable_student_trains_but_has_no_exit_networks():
    torch.manual_seed(0)
    d = build_distiller("byot", build_model("vgg8"))
    _, losses = d(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(SplitError, match="traceable"):
        exit_networks(d)
    d.eval()  # its exits are still scored (by a hook, not a traced graph)
    x = torch.randn(2, 3, 32, 32)
    logits = d.exit_logits(x)
    scored = d.eval_networks()
    torch.testing.assert_close(scored["exit1"](x), logits[0])
    torch.testing.assert_close(scored["student"](x), logits[-1])
