"""Multi-teacher distillation (design note algorithms.md, 1.2 and 2.2): the teacher ensemble,
the four ways of combining teachers against NumPy loops, training, caching, resume and
refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _resume import interrupted_then_resumed
from torch import nn

from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError, NotAModelError, ShapeMismatchError, UnknownNameError
from kdtutor.features import FeatureExtractor
from kdtutor.losses.multi_teacher import multi_teacher_kd, per_teacher_kl, teacher_weights
from kdtutor.losses.response import kd_loss
from kdtutor.methods import build_distiller
from kdtutor.methods._teachers import STACK_PATH, TeacherEnsemble
from kdtutor.models import build_model
from kdtutor.train import fit
from kdtutor.zoo import load_teacher

torch.set_num_threads(1)


def mlp(seed: int, hidden: tuple[int, ...] = (32,), classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=classes, in_channels=1, image_size=28, hidden=hidden)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k", "train").subset(300), load_dataset("mnist5k", "test").subset(200)


# -- NumPy references, written with loops over samples and teachers ---------------------------
def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def np_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * (np.log(pi) - np.log(qi)) for pi, qi in zip(p, q, strict=True)))


def np_weights(stack: np.ndarray, y: np.ndarray, combine: str) -> np.ndarray:
    b, m, _ = stack.shape
    w = np.zeros((b, m))
    for i in range(b):
        if combine in ("mean_targets", "mean_losses"):
            w[i] = 1.0 / m
        elif combine == "ebkd":
            h = [-sum(p * np.log(p) for p in np_softmax(stack[i, k])) for k in range(m)]
            w[i] = [1.0 - h[k] / sum(h) for k in range(m)]
        else:
            ce = [-np.log(np_softmax(stack[i, k])[y[i]]) for k in range(m)]
            w[i] = [(1.0 - np.exp(c) / sum(np.exp(ce))) / (m - 1) for c in ce]
    return w


def np_loss(zs: np.ndarray, stack: np.ndarray, y: np.ndarray, T: float, combine: str) -> float:
    b, m, _ = stack.shape
    if combine == "mean_targets":
        total = 0.0
        for i in range(b):
            p_bar = sum(np_softmax(stack[i, k] / T) for k in range(m)) / m
            total += np_kl(p_bar, np_softmax(zs[i] / T))
        return T * T * total / b
    w = np_weights(stack, y, combine)
    if combine == "mean_losses":
        w = w * m
    total = 0.0
    for i in range(b):
        for k in range(m):
            total += w[i, k] * T * T * np_kl(np_softmax(stack[i, k] / T), np_softmax(zs[i] / T))
    return total / (b * m)


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 10)) * 2, rng.normal(size=(6, 3, 10)) * 3, rng.integers(0, 10, 6)


@pytest.mark.parametrize("combine", ["mean_targets", "mean_losses", "ebkd", "camkd"])
def test_each_combination_equals_a_numpy_loop(logits, combine):
    zs, stack, y = logits
    got = multi_teacher_kd(
        torch.from_numpy(zs), torch.from_numpy(stack), 3.0, combine, torch.from_numpy(y)
    )
    assert got.item() == pytest.approx(np_loss(zs, stack, y, 3.0, combine), rel=1e-10)
    w = teacher_weights(torch.from_numpy(stack), torch.from_numpy(y), combine).numpy()
    np.testing.assert_allclose(w, np_weights(stack, y, combine), rtol=1e-12)


def test_camkd_weights_sum_to_one_and_favour_the_teacher_closer_to_the_label(logits):
    _, stack, y = logits
    stack = torch.from_numpy(stack)
    w = teacher_weights(stack, torch.from_numpy(y), "camkd")
    torch.testing.assert_close(w.sum(1), torch.ones(6, dtype=torch.float64))
    ce = torch.nn.functional.cross_entropy(
        stack.transpose(1, 2), torch.from_numpy(y)[:, None].expand(6, 3), reduction="none"
    )
    assert torch.equal(w.argmax(1), ce.argmin(1))
    ebkd = teacher_weights(stack, None, "ebkd")
    torch.testing.assert_close(ebkd.sum(1), torch.full((6,), 2.0, dtype=torch.float64))


def test_one_teacher_mean_targets_is_hinton_kd(logits):
    zs, stack, _ = logits
    zs, zt = torch.from_numpy(zs), torch.from_numpy(stack[:, :1])
    assert multi_teacher_kd(zs, zt, 4.0).item() == pytest.approx(
        kd_loss(zs, zt[:, 0], 4.0).item(), rel=1e-10
    )
    # and mean_losses of identical teachers is KD too
    same = zt.expand(-1, 3, -1)
    assert multi_teacher_kd(zs, same, 4.0, "mean_losses").item() == pytest.approx(
        kd_loss(zs, zt[:, 0], 4.0).item(), rel=1e-10
    )
    assert per_teacher_kl(zs, same, 4.0).shape == (6, 3)


def test_losses_refuse_bad_shapes_and_names(logits):
    zs, stack, y = (torch.from_numpy(a) for a in logits)
    with pytest.raises(ShapeMismatchError, match=r"\(B, M, K\)"):
        multi_teacher_kd(zs, stack[:, 0], 4.0)
    with pytest.raises(ShapeMismatchError, match="same batch and class count"):
        multi_teacher_kd(zs[:, :5], stack, 4.0)
    with pytest.raises(UnknownNameError, match="mean_targets"):
        multi_teacher_kd(zs, stack, 4.0, "average")
    with pytest.raises(ShapeMismatchError, match="one label per sample"):
        multi_teacher_kd(zs, stack, 4.0, "camkd")
    with pytest.raises(ShapeMismatchError, match="at least 2"):
        teacher_weights(stack[:, :1], y, "camkd")


# -- the teacher ensemble ----------------------------------------------------------------------
def test_ensemble_forward_is_the_mean_of_softmaxes_and_stacks_every_member():
    members = [mlp(1), mlp(2, (16,)), mlp(3, (8, 8))]
    ens = TeacherEnsemble(members)
    x = torch.randn(5, 1, 28, 28)
    with FeatureExtractor(ens, [STACK_PATH], detach=True) as fx:
        out = ens(x)
        stack = fx.features[STACK_PATH]
    with torch.no_grad():
        each = [m(x).double().numpy() for m in members]
    expected = np.log(
        np.array([[np_softmax(z[i]) for i in range(5)] for z in each]).mean(0)
    )  # (5, 10)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert stack.shape == (5, 3, 10)
    for k in range(3):
        np.testing.assert_allclose(stack[:, k].numpy(), each[k], rtol=1e-6)
    assert ens.num_classes == 10 and len(ens) == 3
    assert all(not p.requires_grad for p in ens.parameters())
    ens.train()
    assert not any(m.training for m in ens.modules())


def test_ensemble_refuses_mismatched_members():
    with pytest.raises(ShapeMismatchError, match="class counts"):
        TeacherEnsemble([mlp(0), mlp(1, classes=5)])
    cnn1 = build_model("cnn_tiny", num_classes=10, in_channels=1)
    cnn3 = build_model("cnn_tiny", num_classes=10, in_channels=3)
    with pytest.raises(ShapeMismatchError, match="channel counts"):
        TeacherEnsemble([cnn1, cnn3])
    with pytest.raises(NotAModelError, match="member 1"):
        TeacherEnsemble([mlp(0), "mnist5k_cnn"])  # type: ignore[list-item]
    with pytest.raises(KDTutorError, match="at least one"):
        TeacherEnsemble([])


def test_ensemble_keeps_trained_on_only_when_members_agree():
    a, b = load_teacher("mnist5k_mlp"), load_teacher("mnist5k_cnn")
    assert TeacherEnsemble([a, b]).trained_on == a.trained_on
    assert not hasattr(TeacherEnsemble([a, mlp(0)]), "trained_on")


def test_the_cache_holds_every_member_in_one_row(mnist):
    train, _ = mnist
    members = [load_teacher("mnist5k_mlp"), load_teacher("mnist5k_cnn")]
    d = build_distiller("mtkd", mlp(0), TeacherEnsemble(members), combine="camkd")
    cache = d.cache_teacher(train)
    assert cache is not None
    calls = d.teacher_forward_calls
    rows = torch.tensor([0, 7, 299])
    out = d.teacher_outputs(torch.zeros(3, 1, 28, 28), rows)  # looked up, not computed
    assert d.teacher_forward_calls == calls
    x = torch.stack([train[int(i)][0] for i in rows])
    with torch.no_grad():
        for k, m in enumerate(members):
            torch.testing.assert_close(out.features[STACK_PATH][:, k], m(x), rtol=1e-5, atol=1e-5)


def test_mtkd_forward_trains_and_resumes_bit_identically(mnist, tmp_path):
    train, test = mnist
    members = [load_teacher("mnist5k_mlp"), load_teacher("mnist5k_cnn")]

    def make():
        return build_distiller("mtkd", mlp(0), TeacherEnsemble(members), combine="camkd", T=2.0)

    d = make()
    x, y = (
        torch.stack([train[i][0] for i in range(8)]),
        torch.tensor([train[i][1] for i in range(8)]),
    )
    _, losses = d(x, y)
    with torch.no_grad():
        zs = d.student(x).double().numpy()
        stack = np.stack([m(x).double().numpy() for m in members], 1)
    assert losses["kd"].item() == pytest.approx(
        np_loss(zs, stack, y.numpy(), 2.0, "camkd"), rel=1e-5
    )

    kw = {"epochs": 2, "batch_size": 100}
    full = fit(d, train, test, checkpoint=tmp_path / "full.pt", **kw)
    assert set(full.history[-1]["losses"]) == {"ce", "kd"}
    assert set(full.history[-1]["test"]) == {"student", "ensemble"}
    interrupted_then_resumed(
        make, train, test, tmp_path, after=1, full=(d, full), same=("test_acc",), **kw
    )


def test_named_zoo_teachers_join_the_given_one():
    d = build_distiller("mtkd", mlp(0), load_teacher("mnist5k_mlp"), teachers=["mnist5k_cnn"])
    assert isinstance(d.teacher, TeacherEnsemble) and len(d.teacher) == 2
    ens = TeacherEnsemble([mlp(1), mlp(2)])
    kept = build_distiller("mtkd", mlp(0), ens)
    assert kept.teacher is ens
    single = build_distiller("mtkd", mlp(0), copy.deepcopy(ens.members[0]))
    assert len(single.teacher) == 1


def test_mtkd_refuses_bad_settings():
    with pytest.raises(ConfigError, match="combine must be one of"):
        build_distiller("mtkd", mlp(0), mlp(1), combine="average")
    with pytest.raises(ConfigError, match="at least 2"):
        build_distiller("mtkd", mlp(0), mlp(1), combine="camkd")
    with pytest.raises(UnknownNameError):
        build_distiller("mtkd", mlp(0), mlp(1), teachers=["no_such_teacher"])
    with pytest.raises(ShapeMismatchError, match="num_classes"):
        build_distiller("mtkd", mlp(0, classes=5), TeacherEnsemble([mlp(1), mlp(2)]))
