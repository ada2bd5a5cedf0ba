"""Data-free distillation: DAFL (Chen et al. 2019) and DeepInversion (Yin et al. 2020)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _resume import interrupted_then_resumed
from torch import nn

from kdtutor.config import ConfigError
from kdtutor.data import Batch
from kdtutor.errors import KDTutorError, ShapeMismatchError, UnknownNameError
from kdtutor.losses.data_free import (
    activation_loss,
    adi_competition_loss,
    bn_statistics_loss,
    information_entropy_loss,
    one_hot_loss,
    total_variation_loss,
)
from kdtutor.losses.response import kd_loss
from kdtutor.methods import build_distiller
from kdtutor.methods.deepinversion import invert, synthetic_dataset
from kdtutor.methods.steps import Steps
from kdtutor.models import build_model
from kdtutor.train import fit

torch.set_num_threads(1)


def _np(t):
    return t.detach().double().numpy()


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# -- losses against NumPy ------------------------------------------------------------------------
def test_one_hot_loss_is_the_cross_entropy_with_the_teachers_own_argmax():
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(1)) * 3
    a = _np(z)
    expected = np.mean(np.log(np.exp(a).sum(1)) - a.max(1))  # label = argmax: z_y = max z
    assert float(one_hot_loss(z)) == pytest.approx(expected, rel=1e-6)


def test_activation_loss_is_minus_the_mean_absolute_feature():
    f = torch.randn(6, 9, generator=torch.Generator().manual_seed(2))
    expected = -sum(abs(v) for v in _np(f).ravel()) / f.numel()
    assert float(activation_loss(f)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("base, log", [("e", np.log), ("10", np.log10)])
def test_information_entropy_loss_is_minus_the_entropy_of_the_mean_prediction(base, log):
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(3)) * 2
    p = _softmax(_np(z)).mean(0)
    assert float(information_entropy_loss(z, base)) == pytest.approx((p * log(p)).sum(), rel=1e-6)
    # its minimum is the uniform mean prediction: -log K
    flat = torch.zeros(3, 4)
    assert float(information_entropy_loss(flat, base)) == pytest.approx(-log(4.0), rel=1e-6)


def test_bn_statistics_loss_matches_explicit_per_layer_mean_and_biased_variance():
    g = torch.Generator().manual_seed(4)
    inputs = [torch.randn(5, 3, 4, 4, generator=g) * 2 + 1, torch.randn(5, 6, 2, 2, generator=g)]
    means = [torch.randn(3, generator=g), torch.randn(6, generator=g)]
    vars_ = [torch.rand(3, generator=g) + 0.5, torch.rand(6, generator=g) + 0.5]
    expected = 0.0
    for x, m, v in zip(inputs, means, vars_, strict=True):
        a = _np(x)
        for_channel = [a[:, c].ravel() for c in range(a.shape[1])]
        mu = np.array([ch.sum() / ch.size for ch in for_channel])
        var = np.array([((ch - ch.mean()) ** 2).sum() / ch.size for ch in for_channel])
        expected += np.sqrt(((var - _np(v)) ** 2).sum()) + np.sqrt(((mu - _np(m)) ** 2).sum())
    assert float(bn_statistics_loss(inputs, means, vars_)) == pytest.approx(expected, rel=1e-5)


def test_total_variation_loss_matches_explicit_neighbour_differences():
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(5))
    a = _np(x)
    _, _, h, w = a.shape
    sums = [0.0, 0.0, 0.0, 0.0]
    for i in range(h):
        for j in range(w):
            if j + 1 < w:
                sums[0] += ((a[:, :, i, j] - a[:, :, i, j + 1]) ** 2).sum()
            if i + 1 < h:
                sums[1] += ((a[:, :, i, j] - a[:, :, i + 1, j]) ** 2).sum()
            if i + 1 < h and j >= 1:  # anti-diagonal
                sums[2] += ((a[:, :, i + 1, j - 1] - a[:, :, i, j]) ** 2).sum()
            if i + 1 < h and j + 1 < w:
                sums[3] += ((a[:, :, i, j] - a[:, :, i + 1, j + 1]) ** 2).sum()
    expected = sum(np.sqrt(s) for s in sums)
    assert float(total_variation_loss(x)) == pytest.approx(expected, rel=1e-6)


def test_adi_competition_loss_is_one_minus_the_clamped_jensen_shannon_divergence():
    g = torch.Generator().manual_seed(6)
    zs, zt = torch.randn(4, 5, generator=g) * 4, torch.randn(4, 5, generator=g) * 4
    p, q = _softmax(_np(zs) / 3), _softmax(_np(zt) / 3)
    m = np.clip((p + q) / 2, 0.01, 0.99)
    p, q = np.clip(p, 0.01, 0.99), np.clip(q, 0.01, 0.99)
    js = (
        0.5 * (m * (np.log(m) - np.log(p))).sum() / 4
        + 0.5 * (m * (np.log(m) - np.log(q))).sum() / 4
    )
    expected = 1.0 - min(max(js, 0.0), 1.0)
    assert float(adi_competition_loss(zs, zt)) == pytest.approx(expected, rel=1e-6)
    assert float(adi_competition_loss(zt, zt)) == pytest.approx(1.0)


def test_losses_refuse_bad_input():
    with pytest.raises(ShapeMismatchError, match="logits"):
        one_hot_loss(torch.randn(2, 3, 4))
    with pytest.raises(UnknownNameError, match="base"):
        information_entropy_loss(torch.randn(2, 3), "2")
    with pytest.raises(ShapeMismatchError, match="channels"):
        bn_statistics_loss([torch.randn(2, 3, 4, 4)], [torch.zeros(4)], [torch.ones(4)])
    with pytest.raises(ShapeMismatchError, match="one running mean"):
        bn_statistics_loss([torch.randn(2, 3, 4, 4)], [], [])
    with pytest.raises(ShapeMismatchError, match="B, C, H, W"):
        total_variation_loss(torch.randn(3, 4, 4))


# -- DAFL ----------------------------------------------------------------------------------------
def _dafl(**hp):
    torch.manual_seed(0)
    teacher, student = build_model("cnn_medium"), build_model("cnn_tiny")
    return build_distiller("dafl", student, teacher, gen_width=8, latent=16, **hp)


def _optimizers(d):
    # SGD: the same gradients give the same update (Adam would blow the float noise of the
    # near-zero gradients of the generator's conv biases, which BatchNorm cancels, up to +-lr)
    return {name: torch.optim.SGD(g.params, lr=g.lr) for name, g in d.optimizer_groups().items()}


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_dafls_generator_then_student_steps_equal_the_codes_joint_step(mode):
    d = _dafl(mode=mode, lr_g=1e-2, lr_s=1e-2)
    ref = copy.deepcopy(d)
    teacher_before = copy.deepcopy(d.teacher.state_dict())
    order = []
    opts = _optimizers(d)
    for name, opt in opts.items():
        opt.register_step_post_hook(lambda *_, name=name: order.append(name))
    torch.manual_seed(1)
    batch = d.synthesize_batch(8)
    d.train()
    _, logged = d.train_step(batch, Steps(d, opts))
    assert order == ["generator", "student"]
    assert set(logged) == {"onehot", "entropy", "activation", "kd"}

    # the official DAFL-train.py: one backward of the sum, then both optimizers step
    ref.train()
    ref_opts = _optimizers(ref)
    images = ref.generator(batch.x)
    feats = {}
    hook = ref.teacher.flatten.register_forward_hook(lambda m, i, o: feats.update(f=o))
    t = ref.teacher(images)
    hook.remove()
    p = t.softmax(1).mean(0)
    log = torch.log10 if mode == "code" else torch.log
    s = ref.student(images.detach())
    kl = F.kl_div(F.log_softmax(s, 1), F.softmax(t.detach(), 1), reduction="sum") / 8
    loss = F.cross_entropy(t, t.argmax(1)) + 5 * (p * log(p)).sum() - 0.1 * feats["f"].abs().mean()
    for opt in ref_opts.values():
        opt.zero_grad()
    (loss + kl).backward()
    for opt in ref_opts.values():
        opt.step()
    assert float(logged["kd"]) == pytest.approx(float(kl.detach()), rel=1e-5)
    for (k, a), (_, b) in zip(d.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # teacher (and its BN statistics) untouched
    assert all(p.grad is None for p in d.teacher.parameters())


def test_the_kd_on_noise_baseline_has_no_generator_and_steps_only_the_student():
    d = _dafl(generator="noise")
    assert d.generator is None and set(d.optimizer_groups()) == {"student"}
    opts = _optimizers(d)
    _, logged = d.train_step(d.synthesize_batch(4), Steps(d, opts))
    assert set(logged) == {"kd"}
    torch.manual_seed(5)
    batch = d.synthesize_batch(4)
    torch.manual_seed(6)
    noise = torch.randn(4, 3, 32, 32)  # what generate() draws after the same seed
    torch.manual_seed(6)
    torch.testing.assert_close(d.generate(batch.x), noise)
    with torch.no_grad():
        expected = kd_loss(d.student(noise), d.teacher(noise), 1.0)
        manual = (
            F.kl_div(
                F.log_softmax(d.student(noise), 1), F.softmax(d.teacher(noise), 1), reduction="sum"
            )
            / 4
        )
    torch.testing.assert_close(expected, manual)


def test_dafl_smoke_run_trains_the_generator_and_leaves_the_teacher(tiny_data, tmp_path):
    d = _dafl()
    teacher_before = copy.deepcopy(d.teacher.state_dict())
    gen_before = copy.deepcopy(d.generator.state_dict())
    result = fit(d, None, tiny_data.test, epochs=2, steps_per_epoch=3, batch_size=16)
    assert {"onehot", "entropy", "activation", "kd"} == set(result.history[-1]["losses"])
    assert d.teacher_cache is None
    assert not torch.equal(d.generator.fc.weight, gen_before["fc.weight"])
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_dafl_resumes_bit_identically(tiny_data, tmp_path):
    test = tiny_data.test
    kw = {"epochs": 3, "steps_per_epoch": 2, "batch_size": 8}
    d = _dafl()
    full = fit(d, None, test, checkpoint=tmp_path / "full.pt", **kw)
    saved = torch.load(tmp_path / "full.pt", weights_only=True)
    assert set(saved["optimizers"]) == {"student", "generator"}
    interrupted_then_resumed(
        _dafl, None, test, tmp_path, after=1, full=(d, full), same=("test_acc",), **kw
    )


def test_dafl_refuses_bad_input(tiny_data):
    with pytest.raises(ConfigError, match="mode"):
        _dafl(mode="paperish")
    with pytest.raises(ConfigError, match="multiple of 4"):
        _dafl(img_size=30)
    with pytest.raises(ConfigError, match="generator"):
        _dafl(generator="gan")
    with pytest.raises(ConfigError, match="no labels"):
        _dafl(ce_weight=0.5)
    with pytest.raises(KDTutorError):
        _dafl(feature_path="no.such.module")
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        fit(_dafl(), None, tiny_data.test, epochs=1)
    with pytest.raises(KDTutorError, match="data-free"):
        _dafl()(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    with pytest.raises(KDTutorError, match="needs a teacher"):
        build_distiller("dafl", build_model("cnn_tiny"))


# -- DeepInversion -------------------------------------------------------------------------------
def test_invert_keeps_the_best_batch_and_never_trains_the_teacher():
    torch.manual_seed(0)
    teacher = build_model("cnn_medium")
    teacher.train()
    before = copy.deepcopy(teacher.state_dict())
    # lr so large that every step makes the loss worse: the best batch is the initial noise
    images, targets = invert(teacher, 6, batch=4, iters=3, lr=1e4, seed=7, img_size=16)
    g = torch.Generator().manual_seed(7)
    noise = torch.cat(
        [torch.randn(4, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)]
    )
    assert torch.equal(images, noise)
    assert targets.tolist() == [0, 1, 2, 3, 4, 5]
    assert teacher.training  # mode restored
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    # a sensible learning rate lowers the loss: the images move
    moved, _ = invert(teacher, 4, batch=4, iters=5, lr=0.05, seed=7, img_size=16)
    assert not torch.equal(moved, noise[:4])
    again, _ = invert(teacher, 4, batch=4, iters=5, lr=0.05, seed=7, img_size=16)
    assert torch.equal(moved, again)  # seeded


def test_the_pool_is_uint8_and_round_trips_through_normalize(tiny_data):
    like = tiny_data.train
    pool = synthetic_dataset(like.normalize(like.images[:8]), like.targets[:8], like, seed=3)
    assert pool.images.dtype == torch.uint8
    assert torch.equal(pool.images, like.images[:8])
    assert pool.split == "deepinversion-seed3" and pool.name == like.name
    with pytest.raises(ShapeMismatchError, match="channels"):
        synthetic_dataset(torch.zeros(2, 1, 8, 8), torch.zeros(2), like)


def test_deepinversion_distiller_smoke_run(tiny_data):
    torch.manual_seed(0)
    d = build_distiller(
        "deepinversion", build_model("cnn_tiny"), build_model("cnn_medium"),
        pool=8, iters=2, batch=8, img_size=16,
    )  # fmt: skip
    before = copy.deepcopy(d.teacher.state_dict())
    result = fit(d, None, tiny_data.test, epochs=1, steps_per_epoch=2, batch_size=4)
    assert d.pool_images.shape == (8, 3, 16, 16)
    assert "kd" in result.history[-1]["losses"]
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    batch = d.synthesize_batch(4)
    assert isinstance(batch, Batch) and batch.y.dtype == torch.int64


def test_invert_refuses_bad_input():
    no_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    no_bn.num_classes = 10
    with pytest.raises(KDTutorError, match="BatchNorm2d"):
        invert(no_bn, 2, iters=1, img_size=8)
    teacher = build_model("cnn_medium")
    with pytest.raises(ConfigError, match="student"):
        invert(teacher, 2, iters=1, cig=0.1)
    with pytest.raises(ConfigError):
        invert(teacher, 0, iters=1)
    with pytest.raises(ConfigError):
        build_distiller("deepinversion", build_model("cnn_tiny"), teacher, pool=0)
