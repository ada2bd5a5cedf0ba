"""Relation-based methods (RKD, SP, CC, PKT, CRD, IRG) and Tf-KD: each loss against an
independent loop / NumPy computation, their invariances, CRD's memory bank, where gradients
flow, and one epoch of training through build_distiller + fit."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError
from kdtutor.losses import (
    cc_correlation,
    cc_loss,
    crd_nce_loss,
    irg_losses,
    kd_loss,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    sp_loss,
)
from kdtutor.losses.response import tfkd_reg_loss
from kdtutor.methods import build_distiller, get_method
from kdtutor.models import build_model
from kdtutor.train import fit


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


# ------------------------------------------------------------------------------------ RKD
def loop_distances(x):
    n = len(x)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            d[i, j] = math.sqrt(sum((x[i] - x[j]) ** 2))
    return d / d[d > 0].mean()


def loop_rkd_distance(s, t):
    ds, dt = loop_distances(s), loop_distances(t)
    n = len(s)
    return sum(huber(ds[i, j], dt[i, j]) for i in range(n) for j in range(n)) / n**2


def loop_angles(x):
    n = len(x)
    a = np.zeros((n, n, n))
    for v in range(n):  # the vertex of the angle
        for i in range(n):
            for k in range(n):
                if i != v and k != v:
                    u, w = x[i] - x[v], x[k] - x[v]
                    a[v, i, k] = u @ w / (np.linalg.norm(u) * np.linalg.norm(w))
    return a


def loop_rkd_angle(s, t):
    a_s, a_t = loop_angles(s), loop_angles(t)
    return sum(huber(p, q) for p, q in zip(a_s.ravel(), a_t.ravel(), strict=True)) / len(s) ** 3


def test_rkd_losses_match_loops():
    s, t = rand(6, 5, seed=1), rand(6, 9, seed=2) * 3
    assert rkd_distance_loss(t64(s), t64(t)).item() == pytest.approx(
        loop_rkd_distance(s, t), rel=1e-9
    )
    assert rkd_angle_loss(t64(s), t64(t)).item() == pytest.approx(loop_rkd_angle(s, t), rel=1e-9)


def test_rkd_invariant_to_scale_rotation_translation_and_zero_at_teacher():
    s, t = t64(rand(7, 4, seed=3)), t64(rand(7, 6, seed=4))
    rotation, _ = torch.linalg.qr(t64(rand(4, 4, seed=5)))
    moved = 3.7 * s @ rotation + 2.0
    for loss in (rkd_distance_loss, rkd_angle_loss):
        assert loss(moved, t).item() == pytest.approx(loss(s, t).item(), rel=1e-9)
        assert loss(s, 5.0 * s).item() == pytest.approx(0.0, abs=1e-12)


def test_a_batch_of_one_has_no_relations():
    """A last, incomplete batch of one sample must not crash training: the losses are zero."""
    s, t = torch.randn(1, 5, requires_grad=True), torch.randn(1, 7)
    for loss in (rkd_distance_loss, rkd_angle_loss, sp_loss, pkt_loss, cc_loss):
        assert loss(s, t).item() == pytest.approx(0.0, abs=1e-12)
    assert cc_loss(s, torch.randn(1, 5), mode="code").item() == 0.0
    _, edge, transform = irg_losses(s, t, torch.randn(1, 3), torch.randn(1, 3))
    assert edge.item() == transform.item() == 0.0


# ------------------------------------------------------------------------------------- SP
def loop_sp(s, t):
    n = len(s)

    def gram(x):
        g = np.array([[sum(x[i] * x[j]) for j in range(n)] for i in range(n)])
        return np.array([row / math.sqrt(sum(row**2)) for row in g])

    gs, gt = gram(s.reshape(n, -1)), gram(t.reshape(n, -1))
    return sum((gs[i, j] - gt[i, j]) ** 2 for i in range(n) for j in range(n)) / n**2


def test_sp_matches_loops_scale_invariant_zero_at_teacher():
    s, t = rand(5, 2, 3, 3, seed=6), rand(5, 4, 2, 2, seed=7)
    assert sp_loss(t64(s), t64(t)).item() == pytest.approx(loop_sp(s, t), rel=1e-9)
    assert sp_loss(t64(s) * 11.0, t64(t)).item() == pytest.approx(loop_sp(s, t), rel=1e-9)
    assert sp_loss(t64(t), t64(t)).item() == pytest.approx(0.0, abs=1e-15)


# ------------------------------------------------------------------------------------- CC
def exact_rbf(x, gamma):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    return np.array(
        [[math.exp(-gamma * sum((x[i] - x[j]) ** 2)) for j in range(n)] for i in range(n)]
    )


@pytest.mark.parametrize(("gamma", "order", "tol"), [(0.01, 2, 1e-5), (0.4, 10, 1e-8)])
def test_cc_taylor_approaches_exact_rbf(gamma, order, tol):
    f = rand(6, 8, seed=8)
    approx = cc_correlation(t64(f), gamma, order).numpy()
    np.testing.assert_allclose(approx, exact_rbf(f, gamma), atol=tol)
    # the loss is the mean squared difference of the two correlation matrices
    g = rand(6, 3, seed=9)
    expected = ((exact_rbf(f, gamma) - exact_rbf(g, gamma)) ** 2).mean()
    got = cc_loss(t64(f), t64(g), gamma=gamma, order=order).item()
    assert got == pytest.approx(expected, rel=1e-3 if order == 2 else 1e-6)


def test_cc_code_mode_matches_loops():
    s, t = rand(5, 4, seed=10), rand(5, 4, seed=11)
    d = abs(s - t)
    expected = sum(sum(d[i] * d[i + 1]) for i in range(4)) / 4
    assert cc_loss(t64(s), t64(t), mode="code").item() == pytest.approx(expected, rel=1e-12)
    assert cc_loss(t64(s), t64(s), mode="paper").item() == 0.0


# ------------------------------------------------------------------------------------ PKT
def loop_pkt(s, t, eps=1e-7):
    n = len(s)

    def cond(x):
        x = np.array([r / (np.linalg.norm(r) + eps) for r in x])
        sim = np.array([[(x[i] @ x[j] + 1) / 2 for j in range(n)] for i in range(n)])
        return np.array([row / row.sum() for row in sim])

    p, q = cond(t), cond(s)
    total = 0.0
    for i in range(n):
        for j in range(n):
            total += p[i, j] * math.log((p[i, j] + eps) / (q[i, j] + eps))
    return total / n**2


def test_pkt_matches_loops_and_zero_at_teacher():
    s, t = rand(6, 5, seed=12), rand(6, 3, seed=13)
    assert pkt_loss(t64(s), t64(t)).item() == pytest.approx(loop_pkt(s, t), rel=1e-9)
    assert pkt_loss(t64(t) * 4, t64(t)).item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------ IRG
def numpy_irg(es, et, zs, zt):
    def edges(x):
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return d / d.max()

    mse = lambda a, b: ((a - b) ** 2).mean()  # noqa: E731
    a_es, a_et, a_zs, a_zt = edges(es), edges(et), edges(zs), edges(zt)
    return (
        mse(zs, zt),
        mse(a_es, a_et) + mse(a_zs, a_zt),
        mse(a_zs - a_es, a_zt - a_et),
    )


def test_irg_matches_numpy_and_zero_at_teacher():
    es, et, zs, zt = (
        rand(6, 4, seed=14),
        rand(6, 7, seed=15),
        rand(6, 3, seed=16),
        rand(6, 3, seed=17),
    )
    got = [v.item() for v in irg_losses(t64(es), t64(et), t64(zs), t64(zt))]
    assert got == pytest.approx(numpy_irg(es, et, zs, zt), rel=1e-9)
    same = irg_losses(t64(et), t64(et), t64(zt), t64(zt))
    assert [v.item() for v in same] == pytest.approx([0, 0, 0], abs=1e-15)


# ------------------------------------------------------------------------------------ CRD
def numpy_nce(anchor, bank, pos_idx, neg_idx, z, n_data, tau):
    k = neg_idx.shape[1]
    total = 0.0
    for b in range(len(anchor)):
        p = math.exp(anchor[b] @ bank[pos_idx[b]] / tau) / z
        total += math.log(p / (p + k / n_data))
        for j in neg_idx[b]:
            p = math.exp(anchor[b] @ bank[j] / tau) / z
            total += math.log(1 - p / (p + k / n_data))
    return -total / len(anchor)


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_crd_nce_matches_numpy():
    n, b, k, tau, z = 20, 4, 6, 0.07, 37.5
    bank, anchor = unit(rand(n, 8, seed=18)), unit(rand(b, 8, seed=19))
    pos = np.array([3, 0, 11, 19])
    neg = np.random.default_rng(20).integers(0, n, size=(b, k))
    got = crd_nce_loss(t64(anchor), t64(bank[pos]), t64(bank[neg]), z, n, tau).item()
    assert got == pytest.approx(numpy_nce(anchor, bank, pos, neg, z, n, tau), rel=1e-9)


@pytest.fixture(scope="module")
def small_train():
    return load_dataset("shapes", "train", size=64)


def crd_distiller(small_train, **kw):
    torch.manual_seed(0)
    d = build_distiller("crd", build_model("cnn_tiny"), build_model("cnn_medium"), **kw)
    d.bind_data(small_train)
    return d


def test_crd_method_uses_the_pure_nce_and_updates_its_memory(small_train):
    d = crd_distiller(small_train, num_negatives=10)
    assert d.memory_student.shape == (64, 128) and d.num_negatives == 10
    x, y = small_train.batch(torch.arange(8, 16))
    index = torch.arange(8, 16)
    old_s, old_t = d.memory_student.clone(), d.memory_teacher.clone()
    torch.manual_seed(1)
    neg = d.sample_negatives(index)
    assert not (neg == index[:, None]).any() and neg.min() >= 0 and neg.max() < 64
    d.train()
    torch.manual_seed(1)  # the same negatives inside forward
    _, losses = d(x, y, index)
    with torch.no_grad():
        v_s = F.normalize(d.embed_s(d.student_features(x)[1][0]), dim=1)
        v_t = F.normalize(d.embed_t(d.compute_teacher_outputs(x).features["flatten"]), dim=1)
        expected = crd_nce_loss(v_t, old_s[index], old_s[neg], d.nce_z[0], 64) + crd_nce_loss(
            v_s, old_t[index], old_t[neg], d.nce_z[1], 64
        )
    assert (d.nce_z > 0).all()
    assert losses["crd"].item() == pytest.approx(0.8 * expected.item(), rel=1e-5)
    # memory: rows of the batch moved towards the new embeddings, unit norm, others untouched
    for bank, old, v in ((d.memory_student, old_s, v_s), (d.memory_teacher, old_t, v_t)):
        assert torch.allclose(bank.norm(dim=1), torch.ones(64), atol=1e-6)
        rows = bank[index]
        assert ((rows * v).sum(1) > (old[index] * v).sum(1)).all()
        rest = torch.ones(64, dtype=torch.bool)
        rest[index] = False
        assert torch.equal(bank[rest], old[rest])


def test_crd_class_negatives_and_checkpoint_round_trip(small_train):
    d = crd_distiller(small_train, num_negatives=32, negatives="class")
    index = torch.arange(10)
    neg = d.sample_negatives(index)
    assert (small_train.targets[neg] != small_train.targets[index][:, None]).all()
    state = d.trainable_state_dict()
    assert {"memory_student", "memory_teacher", "nce_z"} <= set(state)
    fresh = build_distiller("crd", build_model("cnn_tiny"), build_model("cnn_medium"))
    fresh.load_trainable_state_dict(state)  # banks resized to the checkpoint's
    assert torch.equal(fresh.memory_teacher, d.memory_teacher)


def test_crd_errors_and_clipped_negatives(small_train):
    d = build_distiller("crd", build_model("cnn_tiny"), build_model("cnn_medium"))
    x, y = small_train.batch(torch.arange(4))
    with pytest.raises(KDTutorError, match="bind_data"):
        d(x, y, torch.arange(4))
    with pytest.warns(UserWarning, match="63 negatives"):
        d.bind_data(small_train)
    assert d.num_negatives == 63
    with pytest.raises(KDTutorError, match="dataset index"):
        d(x, y)


# ------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize(
    ("method", "own"),
    [
        ("rkd", []),
        ("sp", []),
        ("cc", ["embed_s", "embed_t"]),
        ("pkt", []),
        ("crd", ["embed_s", "embed_t"]),
        ("irg", []),
    ],
)
def test_gradients_reach_student_and_own_modules_not_teacher(method, own, small_train):
    torch.manual_seed(0)
    teacher = build_model("cnn_medium")
    kw = {"num_negatives": 16} if method == "crd" else {}
    d = build_distiller(method, build_model("cnn_tiny"), teacher, **kw)
    d.bind_data(small_train)
    d.train()
    index = torch.arange(16)
    x, y = small_train.batch(index)
    _, losses = d(x, y, index)
    relation = sum(v for k, v in losses.items() if k != "ce")
    relation.backward()
    assert d.student.stages[0].blocks[0].conv.weight.grad.abs().sum() > 0
    for name in own:
        assert getattr(d, name).weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert teacher_ids.isdisjoint(id(p) for p in d.trainable_parameters())


# ---------------------------------------------------------------------------------- Tf-KD
def numpy_tfkd_reg(z, y, a, temp):
    k = z.shape[1]
    total = 0.0
    for i in range(len(y)):
        virtual = np.full(k, (1 - a) / (k - 1))
        virtual[y[i]] = a
        p = np.exp(virtual / temp) / np.exp(virtual / temp).sum()
        log_q = z[i] - z[i].max() - math.log(np.exp(z[i] - z[i].max()).sum())
        total += sum(p * (np.log(p) - log_q))
    return total / len(y)


def test_tfkd_reg_loss_matches_numpy():
    z, y = rand(5, 7, seed=21) * 3, np.array([0, 6, 2, 2, 4])
    got = tfkd_reg_loss(t64(z), torch.tensor(y), 0.99, 20.0).item()
    assert got == pytest.approx(numpy_tfkd_reg(z, y, 0.99, 20.0), rel=1e-9)


def test_tfkd_modes_and_teacher_handling():
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    student = build_model("cnn_tiny")
    d = build_distiller("tfkd", student)  # reg: no teacher needed
    assert d.teacher is None and d.hparams.resolved() == (0.1, 20.0, 1.0)
    d.eval()
    z, losses = d(x, y)
    assert losses["ce"].item() == pytest.approx(0.9 * F.cross_entropy(z, y).item(), rel=1e-6)
    assert losses["tfkd"].item() == pytest.approx(
        0.1 * tfkd_reg_loss(z, y, 0.99, 20.0).item(), rel=1e-6
    )
    with pytest.raises(KDTutorError, match="needs a teacher"):
        build_distiller("tfkd", build_model("cnn_tiny"), mode="self")
    with pytest.warns(UserWarning, match="ignored"):
        assert (
            build_distiller("tfkd", build_model("cnn_tiny"), build_model("cnn_tiny")).teacher
            is None
        )
    pretrained = copy.deepcopy(student)
    d = build_distiller("tfkd", build_model("cnn_tiny"), pretrained, mode="self").eval()
    z, losses = d(x, y)
    alpha, temp, mult = d.hparams.resolved()
    assert (alpha, temp, mult) == (0.95, 6.0, 0.5)
    expected = alpha * mult * kd_loss(z, pretrained(x), temp)
    assert losses["tfkd"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert get_method("tfkd").paper.startswith("Yuan")


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def shapes_train():
    return load_dataset("shapes", "train", size=256)


@pytest.fixture(scope="module")
def shared_teacher():
    torch.manual_seed(0)
    return build_model("cnn_medium")


@pytest.mark.parametrize(
    ("method", "keys", "kw"),
    [
        ("rkd", {"ce", "rkd_distance", "rkd_angle"}, {}),
        ("sp", {"ce", "sp"}, {}),
        ("cc", {"ce", "cc"}, {}),
        ("cc", {"ce", "cc", "kd"}, {"mode": "code", "kd_weight": 1.0}),
        ("pkt", {"ce", "pkt"}, {}),
        ("crd", {"ce", "crd"}, {"num_negatives": 64}),
        ("irg", {"ce", "irg_vertex", "irg_edge", "irg_transform"}, {}),
        ("tfkd", {"ce", "tfkd"}, {}),
    ],
)
def test_one_epoch_through_fit(method, keys, kw, shapes_train, shared_teacher):
    torch.manual_seed(0)
    teacher = None if method == "tfkd" else shared_teacher
    d = build_distiller(method, build_model("cnn_tiny"), teacher, **kw)
    result = fit(d, shapes_train, epochs=1, batch_size=64, lr=0.05)
    losses = result.history[0]["losses"]
    assert set(losses) == keys
    assert all(math.isfinite(v) for v in losses.values())
    assert get_method(method).paper
