"""OFD, ReviewKD, FT and AB: their losses against independent NumPy computations, their stages
and gradient flow, and two epochs of training each through build_distiller."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import truncnorm
from torch import nn

from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.features import FeatureExtractor
from kdtutor.losses.feature import (
    ab_loss,
    ft_loss,
    hcl_loss,
    negative_mean,
    ofd_loss,
    ofd_margin,
)
from kdtutor.methods import build_distiller
from kdtutor.methods.ofd import find_bn_before
from kdtutor.models import build_model
from kdtutor.train import fit


def student_teacher():
    torch.manual_seed(0)
    return build_model("cnn_tiny"), build_model("cnn_medium")


def batch(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


# -- OFD ---------------------------------------------------------------------------------------


def test_ofd_margin_matches_truncated_normal_and_monte_carlo():
    mu = np.array([0.0, 0.7, -0.4, 2.0, -3.0, 6.0, 12.0, -40.0])
    sigma = np.array([1.0, 0.5, 2.0, 1.0, 1.5, 1.0, 0.8, 1.0])
    weight = torch.tensor(sigma * np.array([1, -1, 1, 1, -1, 1, 1, 1]))  # sign of gamma ignored
    margin = ofd_margin(weight, torch.tensor(mu)).numpy()
    for m, mu_c, sigma_c in zip(margin, mu, sigma, strict=True):
        # E[x | x < 0] for x ~ N(mu, sigma^2): the mean of a normal truncated above at 0
        expected = truncnorm.mean(-np.inf, -mu_c / sigma_c, loc=mu_c, scale=sigma_c)
        assert m == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert m < 0
    # the closed form with the normal pdf and cdf, where it is well conditioned
    for m, mu_c, sigma_c in zip(margin[:5], mu[:5], sigma[:5], strict=True):
        a = mu_c / sigma_c
        pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + math.erf(-a / math.sqrt(2)))
        assert m == pytest.approx(mu_c - sigma_c * pdf / cdf, rel=1e-9)
    # Monte Carlo estimate for a few channels
    rng = np.random.default_rng(0)
    for m, mu_c, sigma_c in zip(margin[:4], mu[:4], sigma[:4], strict=True):
        x = rng.normal(mu_c, sigma_c, size=400_000)
        neg = x[x < 0]
        assert m == pytest.approx(neg.mean(), abs=4 * neg.std() / math.sqrt(len(neg)) + 1e-3)


def test_ofd_margin_degenerate_channels():
    margin = ofd_margin(torch.tensor([0.0, 0.0]), torch.tensor([-2.0, 3.0]))
    assert margin.tolist() == [-2.0, 0.0]
    assert torch.isfinite(ofd_margin(torch.tensor([1e-3]), torch.tensor([50.0]))).all()


def test_negative_mean_matches_loop():
    rng = np.random.default_rng(1)
    f = rng.normal(0.3, 1.0, size=(3, 4, 2, 5))
    f[:, 2] = np.abs(f[:, 2])  # a channel with no negative value
    got = negative_mean(torch.tensor(f)).numpy()
    for c in range(4):
        values = [v for v in f[:, c].ravel() if v < 0]
        assert got[c] == pytest.approx(np.mean(values) if values else 0.0, rel=1e-12)


def numpy_ofd(s, t, m):
    total = 0.0
    for b, c, h, w in np.ndindex(*s.shape):
        target = max(t[b, c, h, w], m[c])
        if s[b, c, h, w] > target or target > 0:
            total += (s[b, c, h, w] - target) ** 2
    return total / s.shape[0]


def test_ofd_loss_matches_numpy_and_is_zero_at_the_margin_relu_target():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(3, 4, 3, 3)), rng.normal(size=(3, 4, 3, 3))
    m = -np.abs(rng.normal(size=4))
    margin = torch.tensor(m).view(4, 1, 1)
    got = ofd_loss(torch.tensor(s), torch.tensor(t), margin)
    assert got.item() == pytest.approx(numpy_ofd(s, t, m), rel=1e-10)
    target = torch.maximum(torch.tensor(t), margin)
    assert ofd_loss(target, torch.tensor(t), margin).item() == 0.0
    # below the margin where the teacher is below it: any student value is fine
    low_t = torch.full((2, 4, 3, 3), -10.0, dtype=torch.float64)
    assert ofd_loss(low_t - 1.0, low_t, margin).item() == 0.0


def test_ofd_margins_come_from_the_teacher_batch_norms():
    student, teacher = student_teacher()
    torch.manual_seed(3)
    for module in teacher.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight)
            nn.init.normal_(module.bias)
    d = build_distiller("ofd", student, teacher)
    # stages are paired by resolution: cnn_medium's first three stages
    assert d.teacher_paths == tuple(f"stages.{i}.blocks.1.relu:input" for i in (0, 1, 2))
    for i, margin in zip((0, 1, 2), d.margins(), strict=True):
        bn = teacher.stages[i].blocks[1].bn
        assert d.margin_sources[i] == f"bn:stages.{i}.blocks.1.bn"
        assert torch.allclose(margin.flatten(), ofd_margin(bn.weight, bn.bias), atol=1e-6)
        assert margin.shape == (bn.num_features, 1, 1)
    assert "margin0" in d.trainable_state_dict()


def without_bn(model):
    for stage in model.stages:
        for block in stage.blocks:
            block.bn = nn.Identity()
    return model


def test_ofd_estimates_margins_without_a_batch_norm():
    student, teacher = student_teacher()
    d = build_distiller("ofd", student, without_bn(teacher))
    assert d.margin_sources == ("empirical",) * 3
    train = load_dataset("shapes", "train", size=40)
    d.bind_data(train)
    x, _ = train.batch(torch.arange(40))
    with FeatureExtractor(teacher, list(d.teacher_paths)) as fx, torch.no_grad():
        teacher(x)
    for path, margin in zip(d.teacher_paths, d.margins(), strict=True):
        expected = negative_mean(fx.tensor(path))
        assert torch.allclose(margin.flatten(), expected, atol=1e-5)
    # without a trainer, the first batch gives them
    d2 = build_distiller("ofd", student, teacher)
    d2(x[:8], torch.zeros(8, dtype=torch.long))
    assert d2.margins()[0].abs().sum() > 0 and not d2._pending
    # margins loaded from a checkpoint are kept
    d3 = build_distiller("ofd", student, teacher)
    d3.load_trainable_state_dict(d.trainable_state_dict())
    d3(x[:8], torch.zeros(8, dtype=torch.long))
    assert all(torch.equal(a, b) for a, b in zip(d3.margins(), d.margins(), strict=True))


def test_ofd_finds_the_batch_norm_that_ran_last_before_the_relu():
    # resnet8's blocks have a downsampling shortcut with its own batch norm, registered after
    # bn2 but run before it: the margin describes bn2, as in the authors' code
    found = find_bn_before(build_model("resnet8"), "layer2.0.relu_out:input", (3, 32, 32))
    assert found is not None and found[0] == "layer2.0.bn2"
    assert find_bn_before(build_model("cnn_tiny"), "stages.0", (3, 32, 32))[0] == (
        "stages.0.blocks.0.bn"
    )


# -- AB ----------------------------------------------------------------------------------------


def numpy_ab(s, t, mu):
    total = 0.0
    for idx in np.ndindex(*s.shape):
        if t[idx] > 0:
            total += max(mu - s[idx], 0.0) ** 2
        else:
            total += max(s[idx] + mu, 0.0) ** 2
    return total / s.shape[0]


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_loss_matches_numpy_and_vanishes_beyond_the_margin(margin):
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(3, 5, 2, 2)), rng.normal(size=(3, 5, 2, 2))
    t[0, 0, 0, 0] = 0.0  # t = 0 counts as "off"
    got = ab_loss(torch.tensor(s), torch.tensor(t), margin)
    assert got.item() == pytest.approx(numpy_ab(s, t, margin), rel=1e-10)
    t_ = torch.tensor(t)
    agreeing = torch.where(t_ > 0, margin + torch.rand_like(t_), -margin - torch.rand_like(t_))
    assert ab_loss(agreeing, t_, margin).item() == 0.0
    exactly = torch.where(t_ > 0, torch.full_like(t_, margin), torch.full_like(t_, -margin))
    assert ab_loss(exactly, t_, margin).item() == 0.0


def test_ab_stages_and_layer_weights():
    student, teacher = student_teacher()
    d = build_distiller("ab", student, teacher, init_epochs=1)
    x, y = batch()
    d.train()
    d.on_epoch_start(0, 3)
    _, losses = d(x, y)
    assert set(losses) == {"ab"}
    # RepDistiller's weighting: 2^(i-n+1), times 3/1000
    s_feats = d.student_features(x)[1]
    t_feats = [d.compute_teacher_outputs(x).features[p] for p in d.teacher_paths]
    connected = d.connect(s_feats)
    expected = 0.003 * sum(
        w * ab_loss(s, t).item()
        for w, s, t in zip((0.25, 0.5, 1.0), connected, t_feats, strict=True)
    )
    assert losses["ab"].item() == pytest.approx(expected, rel=1e-4)
    losses["ab"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None for p in d.connectors.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    d.on_epoch_start(1, 3)
    assert set(d(x, y)[1]) == {"ce"}  # AB's weight is zero after the initialisation
    both = build_distiller("ab", student, teacher, init_epochs=0, beta=1.0, kd_weight=0.5)
    assert set(both(x, y)[1]) == {"ce", "kd", "ab"}


# -- FT ----------------------------------------------------------------------------------------


def normalised(v):
    return v / math.sqrt(sum(x * x for x in v))


def numpy_ft(fs, ft, mode):
    total = 0.0
    for b in range(fs.shape[0]):
        if mode == "paper":
            s, t = normalised(fs[b].ravel()), normalised(ft[b].ravel())
            total += sum(abs(a - c) for a, c in zip(s, t, strict=True))
        else:
            s = normalised((fs[b] ** 2).mean(axis=0).ravel())
            t = normalised((ft[b] ** 2).mean(axis=0).ravel())
            total += sum(abs(a - c) for a, c in zip(s, t, strict=True)) / len(s)
    return total / fs.shape[0]


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_ft_loss_matches_numpy(mode):
    rng = np.random.default_rng(5)
    fs, ft = rng.normal(size=(3, 4, 3, 2)), rng.normal(size=(3, 4, 3, 2))
    got = ft_loss(torch.tensor(fs), torch.tensor(ft), mode)
    assert got.item() == pytest.approx(numpy_ft(fs, ft, mode), rel=1e-10)
    # scale invariant per sample, zero for proportional factors
    assert ft_loss(torch.tensor(ft) * 3.0, torch.tensor(ft), mode).item() == pytest.approx(
        0, abs=1e-12
    )
    with pytest.raises(ValueError):
        ft_loss(torch.tensor(fs), torch.tensor(ft), "other")


def test_ft_stage_one_trains_only_the_paraphraser():
    student, teacher = student_teacher()
    d = build_distiller("ft", student, teacher, init_epochs=1)
    x, y = batch()
    d.train()
    d.on_epoch_start(0, 2)
    stats = student.stages[0].blocks[0].bn.running_mean.clone()
    _, losses = d(x, y)
    assert set(losses) == {"paraphrase"}
    losses["paraphrase"].backward()
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is None for p in d.translator.parameters())
    assert all(p.grad is not None for p in d.paraphraser.parameters())
    assert torch.equal(stats, student.stages[0].blocks[0].bn.running_mean)
    t = d.compute_teacher_outputs(x).features[d.teacher_paths[0]]
    assert losses["paraphrase"].item() == pytest.approx(
        ((d.paraphraser(t) - t) ** 2).mean().item(), rel=1e-5
    )

    d.zero_grad(set_to_none=True)
    d.on_epoch_start(1, 2)
    _, losses = d(x, y)
    assert set(losses) == {"ce", "ft"}
    losses["ft"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None for p in d.translator.parameters())
    assert all(p.grad is None for p in d.paraphraser.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # the factor: 128 * 0.5 channels at the teacher's 4x4, the translator's output resized to it
    s_feat = d.student_features(x)[1][0]
    with torch.no_grad():
        target = d.paraphraser.encoder(t)
    factor = d.translator(s_feat)
    assert target.shape == (4, 64, 4, 4) and factor.shape == (4, 64, 8, 8)
    expected = 200 * ft_loss(nn.functional.adaptive_avg_pool2d(factor, 4), target)
    assert losses["ft"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_ft_rejects_unknown_mode():
    student, teacher = student_teacher()
    with pytest.raises(ConfigError):
        build_distiller("ft", student, teacher, mode="l2")


# -- ReviewKD ----------------------------------------------------------------------------------


def pool(x, level):
    b, c, h, w = x.shape
    return x.reshape(b, c, level, h // level, level, w // level).mean(axis=(3, 5))


def numpy_hcl(fs, ft):
    h = fs.shape[2]
    losses, weights = [((fs - ft) ** 2).mean()], [1.0]
    for level in (4, 2, 1):
        if level < h:
            losses.append(((pool(fs, level) - pool(ft, level)) ** 2).mean())
            weights.append(weights[-1] / 2)
    return sum(w * v for w, v in zip(weights, losses, strict=True)) / sum(weights), weights


@pytest.mark.parametrize(
    ("size", "weights"),
    [(8, [1, 0.5, 0.25, 0.125]), (4, [1, 0.5, 0.25]), (2, [1, 0.5]), (1, [1])],
)
def test_hcl_loss_matches_numpy(size, weights):
    rng = np.random.default_rng(size)
    fs, ft = rng.normal(size=(2, 3, size, size)), rng.normal(size=(2, 3, size, size))
    expected, used = numpy_hcl(fs, ft)
    assert used == weights
    assert hcl_loss(torch.tensor(fs), torch.tensor(ft)).item() == pytest.approx(expected, rel=1e-10)
    assert hcl_loss(torch.tensor(ft), torch.tensor(ft)).item() == 0.0


def test_reviewkd_fusion_shapes_gradients_and_warmup():
    student, teacher = student_teacher()
    d = build_distiller("reviewkd", student, teacher)
    assert [abf.attention is None for abf in d.abfs] == [False, False, True]  # deepest: no fusion
    x, y = batch()
    d.train()
    outputs = d.review(d.student_features(x)[1])
    assert [tuple(o.shape[1:]) for o in outputs] == [tuple(s) for s in d.teacher_shapes]
    d.on_epoch_start(1, 240)
    assert d.warmup == pytest.approx(2 / 20)
    _, losses = d(x, y)
    assert set(losses) == {"ce", "reviewkd"}
    t_feats = [d.compute_teacher_outputs(x).features[p] for p in d.teacher_paths]
    review = sum(hcl_loss(o, t).item() for o, t in zip(outputs, t_feats, strict=True))
    assert losses["reviewkd"].item() == pytest.approx(0.1 * review, rel=1e-4)
    losses["reviewkd"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None for p in d.abfs.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    d.on_epoch_start(30, 240)
    assert d.warmup == 1.0


def test_ofd_gradients_reach_student_and_connectors_only():
    student, teacher = student_teacher()
    d = build_distiller("ofd", student, teacher)
    x, y = batch()
    d.train()
    _, losses = d(x, y)
    assert set(losses) == {"ce", "ofd"}
    losses["ofd"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None for p in d.connectors.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # layer weights 1/4, 1/2, 1 (deepest) and the 1/1000 of the authors' CIFAR code
    connected = d.connect(d.student_features(x)[1])
    t_feats = [d.compute_teacher_outputs(x).features[p] for p in d.teacher_paths]
    expected = 1e-3 * sum(
        w * ofd_loss(s, t, m).item()
        for w, s, t, m in zip((0.25, 0.5, 1.0), connected, t_feats, d.margins(), strict=True)
    )
    assert losses["ofd"].item() == pytest.approx(expected, rel=1e-4)


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs", "first", "last"),
    [
        ("ofd", {}, {"ce", "ofd"}, {"ce", "ofd"}),
        ("reviewkd", {}, {"ce", "reviewkd"}, {"ce", "reviewkd"}),
        ("ft", {"init_epochs": 1}, {"paraphrase"}, {"ce", "ft"}),
        ("ab", {"init_epochs": 1}, {"ab"}, {"ce"}),
    ],
)
def test_trains_through_build_distiller(method, kwargs, first, last):
    train = load_dataset("shapes", "train", size=160)
    test = load_dataset("shapes", "test", size=40)
    student, teacher = student_teacher()
    d = build_distiller(method, student, teacher.eval(), **kwargs)
    result = fit(d, train, test, epochs=2, batch_size=32)
    assert set(result.history[0]["losses"]) == first
    assert set(result.history[1]["losses"]) == last
    for record in result.history:
        assert all(np.isfinite(v) for v in record["losses"].values())
