"""Adversarial distillation (design note algorithms.md, 2.1): the GAN losses against explicit
``log sigma`` formulas, the discriminator and the student stepped in order with their own
optimizers (against a hand-written loop), the accuracy probe, resume and refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _resume import interrupted_then_resumed
from torch import nn

from kdtutor.config import ConfigError
from kdtutor.data import Batch, load_dataset
from kdtutor.errors import KDTutorError, ShapeMismatchError
from kdtutor.losses.adversarial import conditioned_input, gan_d_loss, gan_g_loss
from kdtutor.methods import build_distiller, get_method
from kdtutor.methods.adversarial import AdversarialKD, discriminator_accuracy
from kdtutor.methods.steps import Steps
from kdtutor.models import build_model
from kdtutor.train import fit
from kdtutor.zoo import load_teacher

torch.set_num_threads(1)


def mlp(seed: int, hidden: tuple[int, ...] = (32,)) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=10, in_channels=1, image_size=28, hidden=hidden)


@pytest.fixture(scope="module")
def mnist():
    train = load_dataset("mnist5k", "train").subset(300)
    test = load_dataset("mnist5k", "test").subset(200)
    return train, test


def _log_sigmoid(v: np.ndarray) -> np.ndarray:
    return -np.log1p(np.exp(-v))


def test_gan_losses_equal_explicit_log_sigmoid_formulas():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(7, 1)) * 3, rng.normal(size=(7, 1)) * 3
    d = gan_d_loss(torch.from_numpy(real), torch.from_numpy(fake))
    expected = -_log_sigmoid(real).mean() - np.log1p(-1 / (1 + np.exp(-fake))).mean()
    assert d.dtype == torch.float64
    assert d.item() == pytest.approx(expected, rel=1e-12)
    g = gan_g_loss(torch.from_numpy(fake[:, 0]))  # (B,) is accepted too
    assert g.item() == pytest.approx(-_log_sigmoid(fake).mean(), rel=1e-12)
    # a perfect discriminator has a loss near 0, a fooled one near 2 log 2 at D = 0
    zero = torch.zeros(5, dtype=torch.float64)
    assert gan_d_loss(zero, zero).item() == pytest.approx(2 * np.log(2), rel=1e-12)


def test_conditioned_input_appends_the_one_hot_label():
    z = torch.arange(6.0).view(2, 3)
    out = conditioned_input(z, torch.tensor([2, 0]))
    assert out.tolist() == [[0, 1, 2, 0, 0, 1], [3, 4, 5, 1, 0, 0]]
    assert conditioned_input(z) is z
    with pytest.raises(ShapeMismatchError, match="one class index per row"):
        conditioned_input(z, torch.tensor([1, 2, 0]))
    with pytest.raises(ShapeMismatchError, match=r"one logit per sample"):
        gan_g_loss(torch.zeros(4, 2))


@pytest.mark.parametrize("condition", [False, True])
def test_one_step_is_the_discriminator_then_the_student_as_a_hand_written_loop(condition):
    teacher, student = mlp(1, (64,)), mlp(0)
    d = build_distiller("adversarial", student, teacher, condition=condition, adv_weight=0.5)
    assert isinstance(d, AdversarialKD)
    # the copies a hand-written loop steps
    s_ref, d_ref = copy.deepcopy(d.student), copy.deepcopy(d.discriminator)
    groups = d.optimizer_groups()
    assert set(groups) == {"student", "discriminator"}
    assert {id(p) for p in groups["student"].params} == {id(p) for p in student.parameters()}
    disc_ids = {id(p) for p in d.discriminator.parameters()}
    assert {id(p) for p in groups["discriminator"].params} == disc_ids
    assert disc_ids.isdisjoint(id(p) for p in d.trainable_parameters())
    g = groups["discriminator"]
    assert (g.optimizer, g.lr, g.betas, g.weight_decay, g.schedule) == (
        "adam", 2e-4, (0.5, 0.999), 0.0, "constant"
    )  # fmt: skip
    opt_s = torch.optim.SGD(groups["student"].params, lr=0.1)
    opt_d = torch.optim.Adam(groups["discriminator"].params, lr=2e-4, betas=(0.5, 0.999))
    torch.manual_seed(3)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    d.train()
    _, logged = d.train_step(
        Batch(x, y, None), Steps(d, {"student": opt_s, "discriminator": opt_d})
    )
    assert set(logged) == {"ce", "kd", "adv", "disc"}

    # the same step written out: D first, on detached student logits ...
    ref_opt_s = torch.optim.SGD(s_ref.parameters(), lr=0.1)
    ref_opt_d = torch.optim.Adam(d_ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    zt = teacher(x).detach()
    zs = s_ref(x)

    def inp(z):
        return torch.cat([z, F.one_hot(y, 10).float()], 1) if condition else z

    real, fake = d_ref(inp(zt))[:, 0], d_ref(inp(zs.detach()))[:, 0]
    d_loss = -F.logsigmoid(real).mean() - F.logsigmoid(-fake).mean()
    ref_opt_d.zero_grad()
    d_loss.backward()
    ref_opt_d.step()
    # ... then the student against the updated D, whose parameters it does not step
    fooled = d_ref(inp(zs))[:, 0]
    p_t = F.softmax(zt / 4, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(zs / 4, 1))).sum(1).mean()
    s_loss = 0.1 * F.cross_entropy(zs, y) + 0.9 * 16 * kl - 0.5 * F.logsigmoid(fooled).mean()
    ref_opt_s.zero_grad()
    s_loss.backward()
    ref_opt_s.step()

    assert logged["disc"].item() == pytest.approx(d_loss.item(), rel=1e-5)
    total = sum(v.item() for k, v in logged.items() if k != "disc")
    assert total == pytest.approx(s_loss.item(), rel=1e-5)
    for a, b in zip(d.discriminator.parameters(), d_ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(d.student.parameters(), s_ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    # the student's step left no gradient in D, D's step none in the student
    assert any(
        p.grad is not None and p.grad.any() for p in d.discriminator.parameters()
    )  # own step
    d.discriminator.zero_grad(set_to_none=True)
    d.student.zero_grad(set_to_none=True)
    losses = d.student_losses(d.student(x), zt, y)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in d.discriminator.parameters())
    assert all(p.requires_grad for p in d.discriminator.parameters())  # restored
    d.student.zero_grad(set_to_none=True)
    d.discriminator_loss(d.student(x), zt, y).backward()
    assert all(p.grad is None for p in d.student.parameters())


def test_discriminator_accuracy_counts_hand_computed_outputs(mnist):
    _, test = mnist
    d = build_distiller("adversarial", mlp(0), load_teacher("mnist5k_mlp"))
    with torch.no_grad():
        d.discriminator[-1].bias.fill_(0.3)  # some outputs on each side of 0
    data = test.subset(50)
    acc = discriminator_accuracy(d, data, n=50)
    with torch.no_grad():
        x = torch.stack([data[i][0] for i in range(50)])
        real = d.discriminator(d.teacher(x))[:, 0]
        fake = d.discriminator(d.student(x))[:, 0]
    expected = 100.0 * (sum(float(r) > 0 for r in real) + sum(float(f) <= 0 for f in fake)) / 100
    assert acc == pytest.approx(expected, abs=1e-9)
    with pytest.raises(KDTutorError, match="adversarial distiller"):
        discriminator_accuracy(build_distiller("kd", mlp(0), mlp(1)), data)  # type: ignore[arg-type]


def test_trains_through_fit_and_resumes_bit_identically(mnist, tmp_path):
    train, test = mnist
    teacher = load_teacher("mnist5k_mlp")

    def make():
        return build_distiller("adversarial", mlp(0), teacher)

    d = make()
    d_start = copy.deepcopy(d.discriminator.state_dict())
    curve: list[float] = []
    kw = {"epochs": 2, "batch_size": 100}
    full = fit(d, train, test, checkpoint=tmp_path / "full.pt",
               on_epoch=lambda *_: curve.append(discriminator_accuracy(d, test, n=100)), **kw)  # fmt: skip
    assert {"ce", "kd", "adv", "disc"} == set(full.history[-1]["losses"])
    assert len(curve) == 2 and all(0.0 <= c <= 100.0 for c in curve)
    assert not torch.equal(d.discriminator[0].weight, d_start["0.weight"])
    saved = torch.load(tmp_path / "full.pt", weights_only=True)
    assert set(saved["optimizers"]) == {"student", "discriminator"}
    interrupted_then_resumed(
        make, train, test, tmp_path, after=1, full=(d, full), same=("test_acc",), **kw
    )


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="adv_weight"):
        build_distiller("adversarial", mlp(0), mlp(1), adv_weight=-1)
    with pytest.raises(ConfigError, match="all 0"):
        build_distiller("adversarial", mlp(0), mlp(1), ce_weight=0, kd_weight=0, adv_weight=0)
    with pytest.raises(KDTutorError, match="needs a teacher"):
        build_distiller("adversarial", mlp(0))
    bare = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(KDTutorError, match="num_classes"):
        build_distiller("adversarial", bare, copy.deepcopy(bare))
    cls = get_method("adversarial")
    assert cls.supports_ddp is False and cls.family == "adversarial"
