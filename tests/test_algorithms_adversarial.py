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
from torch import Tensor, nn

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


# -- target="logits" (the default) is what it was ------------------------------------------------
def test_the_logits_target_keeps_its_defaults_groups_and_checkpoint_keys():
    """The defaults, the student group and the checkpoint's keys of the logits target are
    those of the method before ``target`` existed (an old checkpoint still loads)."""
    teacher, student = mlp(1, (64,)), mlp(0)
    d = build_distiller("adversarial", student, teacher)
    hp = d.hparams
    assert (hp.ce_weight, hp.kd_weight, hp.T, hp.adv_weight) == (0.1, 0.9, 4.0, 0.1)
    assert (hp.condition, hp.d_hidden, hp.d_lr, hp.target) == (False, 64, 2e-4, "logits")
    assert d.connector is None and tuple(d.teacher_feature_paths()) == ()
    assert d.discriminator[0].in_features == 10
    cond = build_distiller("adversarial", mlp(0), teacher, target="logits", condition=True)
    assert cond.discriminator[0].in_features == 20  # [z ; onehot(y)]
    assert [id(p) for p in d.optimizer_groups()["student"].params] == [
        id(p) for p in student.parameters()
    ]
    keys = set(d.trainable_state_dict())
    expected = {f"student.{k}" for k in student.state_dict()}
    expected |= {f"discriminator.{k}" for k in d.discriminator.state_dict()}
    assert keys == expected


def test_the_logits_target_trains_three_steps_as_a_hand_written_loop():
    """Three steps of target='logits' (D on the logits, then the student) against plain
    torch optimizers and the GAN losses written as log-sigmoids."""
    teacher, student = mlp(1, (64,)), mlp(0)
    d = build_distiller("adversarial", student, teacher, target="logits", adv_weight=0.3)
    s_ref, d_ref = copy.deepcopy(d.student), copy.deepcopy(d.discriminator)
    groups = d.optimizer_groups()
    opt_s = torch.optim.SGD(groups["student"].params, lr=0.05, momentum=0.9)
    opt_d = torch.optim.Adam(groups["discriminator"].params, lr=2e-4, betas=(0.5, 0.999))
    ref_s = torch.optim.SGD(s_ref.parameters(), lr=0.05, momentum=0.9)
    ref_d = torch.optim.Adam(d_ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    steps = Steps(d, {"student": opt_s, "discriminator": opt_d})
    torch.manual_seed(5)
    batches = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(3)]
    d.train()
    for x, y in batches:
        _, logged = d.train_step(Batch(x, y, None), steps)
        zt = teacher(x).detach()
        zs = s_ref(x)
        d_loss = (
            -F.logsigmoid(d_ref(zt)[:, 0]).mean() - F.logsigmoid(-d_ref(zs.detach())[:, 0]).mean()
        )
        ref_d.zero_grad()
        d_loss.backward()
        ref_d.step()
        adv = -F.logsigmoid(d_ref(zs)[:, 0]).mean()
        kl = F.kl_div(F.log_softmax(zs / 4, 1), F.softmax(zt / 4, 1), reduction="batchmean")
        s_loss = 0.1 * F.cross_entropy(zs, y) + 0.9 * 16 * kl + 0.3 * adv
        ref_s.zero_grad()
        s_loss.backward()
        ref_s.step()
        assert logged["disc"].item() == pytest.approx(d_loss.item(), rel=1e-5)
        assert logged["adv"].item() == pytest.approx(0.3 * adv.item(), rel=1e-5)
    for a, b in zip(d.student.parameters(), s_ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(d.discriminator.parameters(), d_ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)


# -- target="features" ------------------------------------------------------------------------
def _hooked(model: nn.Module, path: str, x: Tensor) -> tuple[Tensor, Tensor]:
    """``model(x)`` and the output of its submodule ``path``, by a plain forward hook."""
    seen: list[Tensor] = []
    handle = model.get_submodule(path).register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        out = model(x)
    finally:
        handle.remove()
    return out, seen[0]


def test_the_discriminator_reads_the_teachers_embedding_width(tiny_pair):
    teacher, student = tiny_pair
    d = build_distiller("adversarial", student, teacher, target="features")
    with torch.no_grad():
        _, f_t = _hooked(teacher.eval(), "flatten", torch.zeros(2, 3, 32, 32))
        _, f_s = _hooked(student.eval(), "flatten", torch.zeros(2, 3, 32, 32))
    assert f_t.shape[1] == 128 and f_s.shape[1] == 32  # cnn_medium and cnn_tiny
    assert d.discriminator[0].in_features == f_t.shape[1]
    assert isinstance(d.connector[0], nn.Linear)
    assert (d.connector[0].in_features, d.connector[0].out_features) == (32, 128)
    assert tuple(d.teacher_feature_paths()) == ("flatten",)
    cond = build_distiller("adversarial", student, teacher, target="features", condition=True)
    assert cond.discriminator[0].in_features == 128 + 10  # [f ; onehot(y)]
    # the connector is linear even where the widths agree ("auto" would add nothing)
    same = build_distiller("adversarial", build_model("cnn_tiny"), build_model("cnn_tiny"),
                           target="features")  # fmt: skip
    assert isinstance(same.connector[0], nn.Linear)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _d_numpy(disc: nn.Sequential, u: np.ndarray) -> np.ndarray:
    """The discriminator MLP written out in NumPy (float64): one logit per row."""
    h = u
    for i in (0, 2):
        h = h @ _np(disc[i].weight).T + _np(disc[i].bias)
        h = np.where(h > 0, h, 0.2 * h)
    return (h @ _np(disc[4].weight).T + _np(disc[4].bias))[:, 0]


@pytest.mark.parametrize("condition", [False, True])
def test_the_feature_losses_equal_a_numpy_computation(condition):
    """adv = BCE-with-logits(D(c(f_s)), 1) and L_D = BCE(D(f_t), 1) + BCE(D(c(f_s)), 0),
    with f_s, f_t, the connector and D all written out in NumPy."""
    teacher, student = load_teacher("mnist5k_mlp"), mlp(0)
    d = build_distiller("adversarial", student, teacher, target="features",
                        condition=condition, adv_weight=0.7, input_shape=(1, 28, 28))  # fmt: skip
    with torch.no_grad():
        d.discriminator[-1].bias.fill_(0.2)  # away from D = 0
    torch.manual_seed(4)
    x, y = torch.randn(12, 1, 28, 28), torch.randint(0, 10, (12,))
    d.eval()  # the teacher's dropout is off anyway; eval keeps the hand computation exact
    _, losses = d(x, y)
    assert set(losses) == {"ce", "kd", "adv"}

    flat = _np(x.reshape(12, -1))
    lin = student.hidden[0].linear
    f_s = np.maximum(flat @ _np(lin.weight).T + _np(lin.bias), 0)
    u_s = f_s @ _np(d.connector[0].weight).T + _np(d.connector[0].bias)
    f_t = flat
    for layer in teacher.hidden:
        f_t = np.maximum(f_t @ _np(layer.linear.weight).T + _np(layer.linear.bias), 0)
    assert f_t.shape == (12, 1200) and u_s.shape == (12, 1200)
    if condition:
        onehot = np.eye(10)[y.numpy()]
        u_s, f_t = np.concatenate([u_s, onehot], 1), np.concatenate([f_t, onehot], 1)
    fake, real = _d_numpy(d.discriminator, u_s), _d_numpy(d.discriminator, f_t)
    adv = np.logaddexp(0.0, -fake).mean()  # -log sigmoid(D), the BCE against 1
    assert losses["adv"].item() == pytest.approx(0.7 * adv, rel=1e-5)
    disc = np.logaddexp(0.0, -real).mean() + np.logaddexp(0.0, fake).mean()
    z_s, f_s_t = _hooked(d.student, "hidden.0.relu", x)
    z_t, f_t_t = _hooked(teacher, "hidden.1.relu", x)
    got = d.discriminator_loss(z_s, z_t, y, fake=d.connector(f_s_t), real=f_t_t)
    assert got.item() == pytest.approx(disc, rel=1e-5)
    # and with the BCE of torch.nn.functional, as the brief of the target states it
    bce = F.binary_cross_entropy_with_logits(
        torch.from_numpy(fake), torch.ones(12, dtype=torch.float64)
    )
    assert losses["adv"].item() == pytest.approx(0.7 * bce.item(), rel=1e-5)


@pytest.mark.parametrize("condition", [False, True])
def test_one_feature_step_is_the_discriminator_then_the_student_and_connector(condition):
    """One train_step with target='features' against a hand-written loop: D steps alone on
    the detached connector output, then the student and the connector (one SGD group) step
    against the updated D, which they do not step."""
    teacher, student = load_teacher("mnist5k_mlp"), mlp(0)
    d = build_distiller("adversarial", student, teacher, target="features",
                        condition=condition, adv_weight=0.5, input_shape=(1, 28, 28))  # fmt: skip
    groups = d.optimizer_groups()
    conn_ids = [id(p) for p in d.connector.parameters()]
    disc_ids = {id(p) for p in d.discriminator.parameters()}
    student_ids = [id(p) for p in groups["student"].params]
    assert student_ids == [id(p) for p in student.parameters()] + conn_ids
    assert {id(p) for p in groups["discriminator"].params} == disc_ids
    assert disc_ids.isdisjoint(student_ids)
    g = groups["discriminator"]
    assert (g.optimizer, g.lr, g.betas, g.weight_decay, g.schedule) == (
        "adam", 2e-4, (0.5, 0.999), 0.0, "constant"
    )  # fmt: skip
    s_ref, c_ref, d_ref = (copy.deepcopy(m) for m in (d.student, d.connector, d.discriminator))
    conn_before = [p.detach().clone() for p in d.connector.parameters()]
    opt_s = torch.optim.SGD(groups["student"].params, lr=0.1)
    opt_d = torch.optim.Adam(groups["discriminator"].params, lr=2e-4, betas=(0.5, 0.999))
    torch.manual_seed(3)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    d.train()
    _, logged = d.train_step(
        Batch(x, y, None), Steps(d, {"student": opt_s, "discriminator": opt_d})
    )
    assert set(logged) == {"ce", "kd", "adv", "disc"}

    ref_s = torch.optim.SGD([*s_ref.parameters(), *c_ref.parameters()], lr=0.1)
    ref_d = torch.optim.Adam(d_ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    with torch.no_grad():
        zt, f_t = _hooked(teacher, "hidden.1.relu", x)
    zs, f_s = _hooked(s_ref, "hidden.0.relu", x)
    u_s = c_ref(f_s)

    def inp(u):
        return torch.cat([u, F.one_hot(y, 10).float()], 1) if condition else u

    d_loss = (
        -F.logsigmoid(d_ref(inp(f_t))[:, 0]).mean()
        - F.logsigmoid(-d_ref(inp(u_s.detach()))[:, 0]).mean()
    )
    ref_d.zero_grad()
    d_loss.backward()
    ref_d.step()
    p_t = F.softmax(zt / 4, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(zs / 4, 1))).sum(1).mean()
    adv = -F.logsigmoid(d_ref(inp(u_s))[:, 0]).mean()
    s_loss = 0.1 * F.cross_entropy(zs, y) + 0.9 * 16 * kl + 0.5 * adv
    ref_s.zero_grad()
    s_loss.backward()
    ref_s.step()

    assert logged["disc"].item() == pytest.approx(d_loss.item(), rel=1e-5)
    assert logged["adv"].item() == pytest.approx(0.5 * adv.item(), rel=1e-5)
    for mine, ref in ((d.discriminator, d_ref), (d.student, s_ref), (d.connector, c_ref)):
        for a, b in zip(mine.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(a, b)
    assert all(  # the connector trained (with the student)
        not torch.equal(a, b) for a, b in zip(d.connector.parameters(), conn_before, strict=True)
    )
    # the student's losses leave no gradient in D, D's loss none in the student or connector
    d.zero_grad(set_to_none=True)
    zs, u_s = d.student_forward(x)
    sum(d.student_losses(zs, zt, y, fake=u_s).values()).backward()
    assert all(p.grad is None for p in d.discriminator.parameters())
    assert all(p.grad is not None for p in d.connector.parameters())
    d.zero_grad(set_to_none=True)
    zs, u_s = d.student_forward(x)
    d.discriminator_loss(zs, zt, y, fake=u_s, real=f_t).backward()
    assert all(p.grad is None for p in [*d.student.parameters(), *d.connector.parameters()])


def test_the_teachers_embedding_comes_from_the_cache(mnist):
    train, _ = mnist
    teacher = load_teacher("mnist5k_mlp")
    d = build_distiller("adversarial", mlp(0), teacher, target="features", input_shape=(1, 28, 28))
    cache = d.cache_teacher(train, None, mode=True)
    assert cache is not None and set(cache.features) == {"hidden.1.relu"}
    calls = d.teacher_forward_calls
    rows = torch.tensor([3, 0, 299])
    out = d.teacher_outputs(torch.zeros(3, 1, 28, 28), rows)  # looked up, not computed
    assert d.teacher_forward_calls == calls
    x, _ = train.batch(rows)
    with torch.no_grad():
        _, f_t = _hooked(teacher, "hidden.1.relu", x)
    torch.testing.assert_close(d.teacher_side(out), f_t)
    d.teacher_cache = None


def test_the_feature_target_trains_through_fit_and_resumes(tiny_data, tmp_path):
    from kdtutor.cache import clear_memory_cache

    train, test = tiny_data

    def make():
        torch.manual_seed(0)
        teacher, student = build_model("cnn_medium"), build_model("cnn_tiny")
        return build_distiller("adversarial", student, teacher, target="features")

    clear_memory_cache()
    d = make()
    conn = [p.detach().clone() for p in d.connector.parameters()]
    disc = [p.detach().clone() for p in d.discriminator.parameters()]
    curve: list[float] = []
    kw = {"epochs": 2, "batch_size": 50}
    full = fit(d, train, test, checkpoint=tmp_path / "full.pt", cache=True,
               on_epoch=lambda *_: curve.append(discriminator_accuracy(d, test, n=40)), **kw)  # fmt: skip
    assert d.teacher_forward_calls == 1  # one pass over the 200 images fills the cache
    for epoch in full.history:
        assert set(epoch["losses"]) == {"ce", "kd", "adv", "disc"}
        assert all(np.isfinite(v) for v in epoch["losses"].values())
    assert len(curve) == 2 and all(0.0 <= c <= 100.0 for c in curve)
    assert all(not torch.equal(a, b) for a, b in zip(d.connector.parameters(), conn, strict=True))
    assert all(
        not torch.equal(a, b) for a, b in zip(d.discriminator.parameters(), disc, strict=True)
    )
    saved = torch.load(tmp_path / "full.pt", weights_only=True)
    assert set(saved["optimizers"]) == {"student", "discriminator"}
    assert {"connector.0.weight", "connector.0.bias"} <= set(saved["model"])
    interrupted_then_resumed(
        make, train, test, tmp_path, after=1, full=(d, full), same=("test_acc",), **kw
    )


def test_discriminator_accuracy_on_features_counts_hand_computed_outputs(mnist):
    _, test = mnist
    teacher = load_teacher("mnist5k_mlp")
    d = build_distiller("adversarial", mlp(0), teacher, target="features", input_shape=(1, 28, 28))
    with torch.no_grad():
        d.discriminator[-1].bias.fill_(-0.05)
    data = test.subset(50)
    acc = discriminator_accuracy(d, data, n=50)
    with torch.no_grad():
        x = torch.stack([data[i][0] for i in range(50)])
        _, f_t = _hooked(teacher, "hidden.1.relu", x)
        _, f_s = _hooked(d.student, "hidden.0.relu", x)
        real = d.discriminator(f_t)[:, 0]
        fake = d.discriminator(d.connector(f_s))[:, 0]
    expected = 100.0 * (int((real > 0).sum()) + int((fake <= 0).sum())) / 100
    assert acc == pytest.approx(expected, abs=1e-9)


def test_bad_targets_and_feature_settings_are_refused():
    with pytest.raises(ConfigError, match=r"target must be one of logits, features.*'pixels'"):
        build_distiller("adversarial", mlp(0), mlp(1), target="pixels")
    with pytest.raises(ConfigError, match="need target='features'"):
        build_distiller("adversarial", mlp(0), mlp(1), student_paths=("fc",), teacher_paths=("fc",))
    with pytest.raises(ConfigError, match="one pair"):
        build_distiller("adversarial", mlp(0), mlp(1), target="features",
                        student_paths=("a", "b"), teacher_paths=("c", "d"))  # fmt: skip
    with pytest.raises(ConfigError, match="init_epochs must be 0"):
        build_distiller("adversarial", mlp(0), mlp(1), init_epochs=2)
    with pytest.raises(ConfigError, match="connector must be one of"):
        build_distiller("adversarial", mlp(0), mlp(1), target="features", connector="mlp")
    torch.manual_seed(0)
    cnn_t, cnn_s = build_model("cnn_medium"), build_model("cnn_tiny")
    with pytest.raises(ShapeMismatchError, match="reads vectors"):  # stage maps, not embeddings
        build_distiller("adversarial", cnn_s, cnn_t, target="features", connector="conv",
                        student_paths=(cnn_s.stage_names[-1],),
                        teacher_paths=(cnn_t.stage_names[-1],))  # fmt: skip
    d = build_distiller("adversarial", mlp(0), mlp(1), target="features")  # guessed (784,)
    with pytest.raises(ShapeMismatchError, match=r"input_shape=\(1, 28, 28\)"):
        d.bind_data(load_dataset("mnist5k", "test").subset(10))
    # without num_classes, features can be read unconditioned; conditioning needs the count
    bare_s = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 10))
    bare_t = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    paths = {"student_paths": ("2",), "teacher_paths": ("2",), "input_shape": (1, 28, 28)}
    d = build_distiller("adversarial", bare_s, bare_t, target="features", **paths)
    assert d.discriminator[0].in_features == 16
    with pytest.raises(KDTutorError, match="num_classes"):
        build_distiller("adversarial", bare_s, bare_t, target="features", condition=True, **paths)
