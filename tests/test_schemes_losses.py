"""The losses of the online and self-distillation schemes against NumPy, and the peer helpers."""

import numpy as np
import pytest
import torch
from torch import nn

from kdtutor.errors import ShapeMismatchError, UnknownNameError
from kdtutor.losses.schemes import (
    byot_feature_loss,
    ensemble_log_probs,
    gated_ensemble,
    kdcl_teacher_logits,
    mutual_kl,
)
from kdtutor.methods._peers import build_peers, fresh_copy, frozen_bn_stats


def np_softmax(z, t=1.0):
    e = np.exp((z - z.max(axis=1, keepdims=True)) / t)
    return e / e.sum(axis=1, keepdims=True)


def np_kl(p, q):
    """Batch mean of sum_k p log(p / q)."""
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def test_mutual_kl_two_peers_is_the_kl_from_the_other_peer():
    z1 = torch.tensor([[2.0, 0.0, 0.0]])
    z2 = torch.tensor([[0.0, 1.0, 0.0]])
    p1, p2 = np_softmax(z1.numpy()), np_softmax(z2.numpy())
    assert mutual_kl(z1, [z2]).item() == pytest.approx(np_kl(p2, p1), rel=1e-6)
    assert mutual_kl(z2, [z1]).item() == pytest.approx(np_kl(p1, p2), rel=1e-6)


def test_mutual_kl_four_peers_averages_three_kls_at_a_temperature():
    gen = torch.Generator().manual_seed(0)
    z = [torch.randn(5, 4, generator=gen) for _ in range(4)]
    t = 2.0
    p = [np_softmax(x.numpy(), t) for x in z]
    expected = t**2 * np.mean([np_kl(p[i], p[0]) for i in (1, 2, 3)])
    assert mutual_kl(z[0], z[1:], t).item() == pytest.approx(expected, rel=1e-5)


def test_mutual_kl_sends_no_gradient_to_the_other_peers():
    z1 = torch.randn(3, 5, requires_grad=True)
    z2 = torch.randn(3, 5, requires_grad=True)
    mutual_kl(z1, [z2]).backward()
    assert z2.grad is None
    assert z1.grad is not None and z1.grad.abs().sum() > 0


def test_ensemble_log_probs_is_the_log_of_the_mean_softmax():
    gen = torch.Generator().manual_seed(1)
    z = [torch.randn(6, 3, generator=gen) * 5 for _ in range(3)]
    expected = np.log(np.mean([np_softmax(x.numpy()) for x in z], axis=0))
    np.testing.assert_allclose(ensemble_log_probs(z).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_ensemble_log_probs_stays_finite_for_a_certain_member():
    z = [torch.tensor([[1000.0, 0.0]]), torch.tensor([[0.0, 1000.0]])]
    out = ensemble_log_probs(z)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.exp().numpy(), [[0.5, 0.5]], atol=1e-6)


def test_gated_ensemble_against_a_loop():
    gen = torch.Generator().manual_seed(2)
    branches = torch.randn(3, 2, 4, generator=gen)
    gate = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    expected = np.zeros((2, 4))
    for b in range(2):
        for m in range(3):
            expected[b] += gate[b, m].item() * branches[m, b].numpy()
    np.testing.assert_allclose(gated_ensemble(branches, gate).numpy(), expected, rtol=1e-6)
    with pytest.raises(ShapeMismatchError, match=r"\(B, M\)"):
        gated_ensemble(branches, gate.T)


def test_kdcl_min_logit_against_loops():
    z1 = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    z2 = torch.tensor([[1.0, 2.0, -1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 2])
    out = kdcl_teacher_logits([z1, z2], y, "min_logit")
    expected = np.zeros((2, 3))
    for b in range(2):
        for c in range(3):
            expected[b, c] = min(z[b, c].item() - z[b, y[b]].item() for z in (z1, z2))
    np.testing.assert_allclose(out.numpy(), expected)
    # by hand for the first image: peer 1 shifted (0, -2, -3), peer 2 shifted (0, 1, -2)
    np.testing.assert_allclose(out[0].numpy(), [0.0, -2.0, -3.0])


def test_kdcl_min_logit_is_at_least_as_sure_of_the_label_as_every_peer():
    gen = torch.Generator().manual_seed(3)
    z = [torch.randn(20, 7, generator=gen) * 3 for _ in range(3)]
    y = torch.randint(0, 7, (20,), generator=gen)
    teacher = kdcl_teacher_logits(z, y, "min_logit").softmax(dim=1)
    rows = torch.arange(20)
    for peer in z:
        assert (teacher[rows, y] >= peer.softmax(dim=1)[rows, y] - 1e-6).all()
    assert torch.equal(kdcl_teacher_logits(z, y, "min_logit")[rows, y], torch.zeros(20))


def test_kdcl_naive_takes_the_best_peer_row_by_row_and_mean_averages():
    z1 = torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 1])
    # image 1: peer 1 is surer of class 0; image 2: peer 2 is surer of class 1
    out = kdcl_teacher_logits([z1, z2], y, "naive")
    np.testing.assert_allclose(out.numpy(), [[4.0, 0.0], [0.0, 3.0]])
    mean = kdcl_teacher_logits([z1, z2], y, "mean")
    np.testing.assert_allclose(mean.numpy(), [[2.5, 0.0], [0.0, 2.0]])


def test_kdcl_teacher_is_detached_and_names_are_checked():
    z = [torch.randn(2, 3, requires_grad=True) for _ in range(2)]
    assert not kdcl_teacher_logits(z, torch.tensor([0, 1]), "mean").requires_grad
    with pytest.raises(UnknownNameError, match="min_logit"):
        kdcl_teacher_logits(z, torch.tensor([0, 1]), "median")
    with pytest.raises(ShapeMismatchError, match="one label per image"):
        kdcl_teacher_logits(z, torch.tensor([0, 1, 2]), "mean")


def test_byot_feature_loss_code_mode_masks_and_sums():
    f = np.array([[1.0, -2.0, -1.0], [0.5, 0.0, -3.0]])
    t = np.array([[0.0, -1.0, 2.0], [-1.0, 0.0, -2.0]])
    mask = (f > 0) | (t > 0)
    expected = float(((f - t) ** 2 * mask).sum())
    # by hand: (1-0)^2 + (-1-2)^2 + (0.5+1)^2 = 1 + 9 + 2.25
    assert expected == pytest.approx(12.25)
    got = byot_feature_loss(torch.tensor(f), torch.tensor(t), "code")
    assert got.item() == pytest.approx(expected)
    paper = byot_feature_loss(torch.tensor(f), torch.tensor(t), "paper")
    assert paper.item() == pytest.approx(float(((f - t) ** 2).sum(axis=1).mean()))


def test_byot_feature_loss_detaches_the_deepest_features():
    f = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    byot_feature_loss(f, t).backward()
    assert t.grad is None and f.grad is not None
    with pytest.raises(ShapeMismatchError, match="channels"):
        byot_feature_loss(f, t[:, :2])


def test_fresh_copy_permutes_every_parameter_and_keeps_the_original():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 5))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    twin = fresh_copy(net)
    for name, p in twin.named_parameters():
        original = dict(net.named_parameters())[name]
        assert torch.equal(p.flatten().sort().values, original.flatten().sort().values)
        if original.unique().numel() > 1:
            assert not torch.equal(p, original), name
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert twin[0].weight.data_ptr() != net[0].weight.data_ptr()


def test_build_peers_by_name_and_by_count():
    from kdtutor.models import build_model

    student = build_model("cnn_tiny_s2", num_classes=10)
    by_name = build_peers(student, ["resnet8_half_s2"], 2, (3, 32, 32))
    assert len(by_name) == 1 and by_name[0].num_classes == 10
    assert by_name[0](torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    copies = build_peers(student, [], 3, (3, 32, 32))
    assert len(copies) == 2
    with pytest.raises(ValueError, match="at least 2"):
        build_peers(student, [], 1, (3, 32, 32))


def test_frozen_bn_stats_keeps_running_statistics():
    bn = nn.BatchNorm1d(3)
    bn.train()
    bn(torch.randn(8, 3))
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with frozen_bn_stats(bn):
        out = bn(torch.randn(8, 3) * 5 + 2)
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k
    # batch statistics were still used for the output: it is standardised per feature
    np.testing.assert_allclose(out.mean(dim=0).detach().numpy(), 0.0, atol=1e-5)
    assert bn.momentum == 0.1
    bn(torch.randn(8, 3))
    assert not torch.equal(bn.running_mean, before["running_mean"])
