"""Graph-based (MHGD) and attention-based (attnkd) distillation: losses against NumPy or
loops, stages, clipping, the teacher kept fixed, short fits, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError, ShapeMismatchError
from kdtutor.features import FeatureExtractor
from kdtutor.losses.attention import attention_kl, qkv_relation_loss, split_qkv
from kdtutor.losses.graph import (
    align_vectors,
    estimator_loss,
    graph_kl,
    right_singular_vectors,
)
from kdtutor.methods import build_distiller
from kdtutor.methods.attnkd import attention_maps
from kdtutor.methods.mhgd import MultiHeadGraph, clipped_surrogate, mhgd_graphs
from kdtutor.models import build_model
from kdtutor.train import fit

torch.set_num_threads(1)


def test_singular_vectors_match_numpy_svd_up_to_sign_in_descending_order():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.float64)  # HW=16 > C=5
    v = right_singular_vectors(x, 3)
    assert v.shape == (3, 3, 5)
    for b in range(3):
        m = x[b].reshape(5, 16).T.numpy()  # (HW, C)
        _, s, vt = np.linalg.svd(m, full_matrices=False)
        assert np.all(np.diff(s) < 0)
        for i in range(3):
            assert abs(float(np.dot(v[b, i].numpy(), vt[i]))) == pytest.approx(1.0, abs=1e-9)


def test_a_vector_is_its_own_direction_and_k_is_capped():
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]], dtype=torch.float64)
    v = right_singular_vectors(x, 4)
    assert v.shape == (2, 1, 2)
    expected = np.array([[0.6, 0.8], [0.0, -1.0]])
    assert np.allclose(np.abs((v[:, 0].numpy() * expected).sum(-1)), 1.0)
    assert right_singular_vectors(torch.randn(2, 6, 1, 2), 4).shape == (2, 2, 6)  # min(HW, C)


def test_singular_vector_gradient_passes_a_finite_difference_check():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, dtype=torch.float64)

    def f(inp):  # sign-invariant, so finite differences see a smooth function
        v = right_singular_vectors(inp, 2)
        return ((v * w.unsqueeze(0)).sum(-1) ** 2).sum()

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)


def test_degenerate_maps_give_finite_gradients():
    # rank-deficient (HW=2 < C=5: three zero eigenvalues) and exactly repeated singular values
    x1 = torch.zeros(1, 5, 1, 2)
    x1[0, 0, 0, 0], x1[0, 1, 0, 1] = 2.0, 1.0
    x2 = torch.eye(4).reshape(1, 4, 2, 2)  # all singular values equal
    for x in (x1, x2):
        x = x.clone().requires_grad_(True)
        v = right_singular_vectors(x, 4)
        (v.sum(-1) ** 2).sum().backward()
        assert torch.isfinite(x.grad).all()
    # the leading vector of x1 is the first channel's axis
    v = right_singular_vectors(x1, 1)
    assert abs(float(v[0, 0, 0])) == pytest.approx(1.0)


def test_align_picks_the_largest_absolute_cosine_and_makes_it_positive():
    torch.manual_seed(1)
    s = torch.nn.functional.normalize(torch.randn(4, 3, 6), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(4, 2, 6), dim=-1)
    out = align_vectors(s, t)
    for b in range(4):
        for j in range(2):
            cos = [float(s[b, i] @ t[b, j]) for i in range(3)]
            best = max(range(3), key=lambda i: abs(cos[i]))
            expected = s[b, best] * (1 if cos[best] >= 0 else -1)
            assert torch.allclose(out[b, j], expected)
            assert float(out[b, j] @ t[b, j]) >= 0


def test_graph_kl_is_the_summed_kl_of_tanh_softmax_rows_student_first():
    rng = np.random.default_rng(0)
    gs, gt = rng.normal(size=(2, 3, 3)) * 2, rng.normal(size=(2, 3, 3)) * 2
    total = 0.0
    for h in range(2):
        for i in range(3):
            p = np.exp(np.tanh(gs[h, i])) / np.exp(np.tanh(gs[h, i])).sum()
            q = np.exp(np.tanh(gt[h, i])) / np.exp(np.tanh(gt[h, i])).sum()
            total += float((p * np.log(p / q)).sum())
    got = graph_kl(torch.tensor(gs), torch.tensor(gt))
    assert float(got) == pytest.approx(total, rel=1e-10)
    assert float(graph_kl(torch.tensor(gt), torch.tensor(gs))) != pytest.approx(total)
    assert float(graph_kl(torch.tensor(gs), torch.tensor(gs))) == pytest.approx(0.0, abs=1e-12)


def test_estimator_loss_is_one_minus_mean_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert float(estimator_loss(a, b)) == pytest.approx(0.5)


def test_graph_equals_an_explicit_loop_over_heads():
    torch.manual_seed(2)
    m = MultiHeadGraph(6, 4, heads=3).double().eval()
    for bn in (m.sender[1], m.receiver[1]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    v, vp = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        g = m(v, vp)
        s_all = (m.sender[0](v) - m.sender[1].running_mean) / torch.sqrt(
            m.sender[1].running_var + 1e-5
        )
        r_all = (m.receiver[0](vp) - m.receiver[1].running_mean) / torch.sqrt(
            m.receiver[1].running_var + 1e-5
        )
    w = m.width
    for h in range(3):
        idx = [d * 3 + h for d in range(w)]  # the code's [B, D, heads] layout
        for i in range(5):
            for j in range(5):
                expected = float(s_all[i, idx] @ r_all[j, idx])
                assert float(g[h, i, j]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_surrogate_gradient_is_the_per_parameter_clipped_transfer_gradient():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    params = list(net.parameters())
    out = net(x)
    task = (out[:, 0] ** 2).mean()
    transfer = 50.0 * (out[:, 1] - 3).pow(2).sum()
    g_task = torch.autograd.grad(task, params, retain_graph=True)
    g_tr = torch.autograd.grad(transfer, params, retain_graph=True)
    sur = clipped_surrogate(params, task, transfer, 0.5)
    g_sur = torch.autograd.grad(sur, params)
    clipped_any = False
    for gt, gd, gs in zip(g_task, g_tr, g_sur, strict=True):
        limit = 0.5 * math.sqrt(float((gt**2).sum()))
        norm = math.sqrt(float((gd**2).sum()))
        expected = gd * (limit / norm) if norm > limit else gd
        clipped_any |= norm > limit
        assert torch.allclose(gs, expected, rtol=1e-10, atol=1e-14)
    assert clipped_any


@pytest.fixture(scope="module")
def shapes_small():
    return load_dataset("shapes", "train", size=64)


def make(**kw):
    torch.manual_seed(0)
    return build_distiller("mhgd", build_model("cnn_tiny"), build_model("cnn_medium"), **kw)


def test_init_stage_trains_the_attention_network_only(shapes_small):
    d = make(init_epochs=1)
    student0 = {k: v.clone() for k, v in d.student.state_dict().items()}
    graphs0 = [p.clone() for p in d.graphs.parameters()]
    teacher0 = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    result = fit(d, shapes_small, epochs=1, batch_size=32, lr=0.05)
    assert set(result.history[0]["losses"]) == {"mha"}
    for k, v in d.student.state_dict().items():
        assert torch.equal(v, student0[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(graphs0, d.graphs.parameters(), strict=True))
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, teacher0[k]), k


@pytest.mark.parametrize("clip", ["code", "none"])
def test_two_stages_through_fit_keep_the_teacher_and_mha_fixed(shapes_small, clip):
    d = make(init_epochs=1, clip=clip)
    teacher0 = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    result = fit(d, shapes_small, epochs=2, batch_size=32, lr=0.05)
    assert set(result.history[1]["losses"]) == {"ce", "mhgd"}
    assert all(math.isfinite(v) for v in result.history[1]["losses"].values())
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, teacher0[k]), k
    assert all(p.grad is None for p in d.teacher.parameters())
    assert all(not p.requires_grad for p in d.graphs.parameters())
    x = shapes_small.images[:8].float() / 255
    g_t, g_s = mhgd_graphs(d, x)
    assert g_t.shape == g_s.shape == (8, 8, 8)


def test_stage_two_graph_loss_reaches_the_student_not_the_teacher():
    d = make(init_epochs=0)
    d.on_epoch_start(0, 1)
    d.train()
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    _, losses = d(x, y)
    losses["mhgd"].backward()
    assert all(p.grad is None for p in d.teacher.parameters())
    assert all(p.grad is None for p in d.graphs.parameters())
    grads = [p.grad for p in d.student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="two"):
        make(student_paths=("stages.2",), teacher_paths=("stages.2",))
    with pytest.raises(ConfigError, match="clip"):
        make(clip="sometimes")
    with pytest.raises(ConfigError, match="compress"):
        make(compress="qr")
    with pytest.raises(ShapeMismatchError, match="same"):
        graph_kl(torch.zeros(2, 3, 3), torch.zeros(2, 4, 4))
    with pytest.raises(ShapeMismatchError, match=r"\(B, C, H, W\)"):
        right_singular_vectors(torch.zeros(2, 3, 4), 1)
    with pytest.raises(ShapeMismatchError, match="connector"):
        align_vectors(torch.zeros(2, 4, 5), torch.zeros(2, 1, 6))
    assert issubclass(ShapeMismatchError, KDTutorError)


# -- attention-based (attnkd) ---------------------------------------------------------------


def test_attention_kl_equals_numpy_row_kl_and_is_zero_for_equal_maps():
    rng = np.random.default_rng(4)
    a_s = rng.dirichlet(np.ones(5), size=(2, 3, 5))
    a_t = rng.dirichlet(np.ones(5), size=(2, 3, 5))
    total = 0.0
    for b in range(2):
        for h in range(3):
            for n in range(5):
                total += float((a_t[b, h, n] * np.log(a_t[b, h, n] / a_s[b, h, n])).sum())
    got = attention_kl(torch.tensor(a_s), torch.tensor(a_t))
    assert float(got) == pytest.approx(total / (2 * 3 * 5), rel=1e-10)
    assert float(attention_kl(torch.tensor(a_t), torch.tensor(a_t))) == pytest.approx(
        0.0, abs=1e-12
    )


def test_relation_loss_equals_a_loop_over_the_nine_pairs():
    rng = np.random.default_rng(5)
    s = [rng.normal(size=(2, 4, 6)) for _ in range(3)]
    t = [rng.normal(size=(2, 4, 8)) for _ in range(3)]

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    total = 0.0
    for i in range(3):
        for j in range(3):
            ps = softmax(s[i] @ s[j].transpose(0, 2, 1) / np.sqrt(6))
            pt = softmax(t[i] @ t[j].transpose(0, 2, 1) / np.sqrt(8))
            total += float(-(pt * np.log(ps)).sum(-1).mean())
    got = qkv_relation_loss(tuple(map(torch.tensor, s)), tuple(map(torch.tensor, t)))
    assert float(got) == pytest.approx(total / 9, rel=1e-10)


def vit(**kw):
    return build_model("vit_tiny", patch_size=8, **kw)


def test_the_attn_drop_hook_captures_softmax_of_q_k_from_qkv():
    torch.manual_seed(6)
    model = vit(dim=48, depth=2, heads=3).eval()
    x = torch.rand(2, 3, 32, 32)
    with FeatureExtractor(model, ["blocks.1.attn.attn_drop", "blocks.1.attn.qkv"]) as fx:
        model(x)
    probs, qkv = fx.tensor("blocks.1.attn.attn_drop"), fx.tensor("blocks.1.attn.qkv")
    q, k, _ = split_qkv(qkv)
    q = q.reshape(2, 17, 3, 16).transpose(1, 2)
    k = k.reshape(2, 17, 3, 16).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1)
    assert probs.shape == (2, 3, 17, 17)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(attention_maps(model, x, 1), expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["probs", "relation"])
def test_attnkd_fits_and_the_teacher_gets_no_gradient(shapes_small, mode):
    torch.manual_seed(0)
    teacher = vit(dim=48, depth=2, heads=3)
    d = build_distiller("attnkd", vit(dim=24, depth=2, heads=3), teacher, mode=mode)
    assert d.teacher_paths[0].startswith("blocks.1.attn.")
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    d.train()
    _, losses = d(x, y)
    assert set(losses) == {"ce", "attn", "kd"}
    losses["attn"].backward()
    assert all(p.grad is None for p in d.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.student.parameters())
    teacher0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = fit(d, shapes_small, epochs=1, batch_size=32, lr=0.05)
    assert all(math.isfinite(v) for v in result.history[0]["losses"].values())
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, teacher0[k]), k


def test_attnkd_bad_input_is_refused():
    with pytest.raises(ShapeMismatchError, match="heads"):
        build_distiller("attnkd", vit(dim=24, depth=1, heads=2), vit(dim=48, depth=1, heads=3))
    with pytest.raises(KDTutorError, match="attn_drop"):
        build_distiller("attnkd", build_model("cnn_tiny"), vit(dim=48, depth=1))
    with pytest.raises(ConfigError, match="mode"):
        build_distiller("attnkd", vit(depth=1), vit(depth=1), mode="maps")
    with pytest.raises(ConfigError, match="out of range"):
        build_distiller("attnkd", vit(depth=1), vit(depth=1), teacher_block=3)
    with pytest.raises(ShapeMismatchError, match="tokens"):
        attention_kl(torch.zeros(1, 3, 5, 5), torch.zeros(1, 3, 4, 4))
