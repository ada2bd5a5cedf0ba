"""AT, NST, FSP and VID: their losses against independent NumPy computations (float64, explicit
loops), their invariances, where gradients flow, clear errors, and one epoch of training each
through build_distiller + fit."""

import math

import numpy as np
import pytest
import torch

from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError, ShapeMismatchError
from kdtutor.losses.feature import (
    at_loss,
    attention_map,
    fsp_loss,
    fsp_matrix,
    nst_loss,
    vid_loss,
)
from kdtutor.methods import build_distiller
from kdtutor.methods.at import attention_map as at_attention_map
from kdtutor.models import build_model
from kdtutor.train import fit

METHODS = ["at", "nst", "fsp", "vid"]


# -- independent NumPy references ------------------------------------------------------------
def np_pool(x, size):
    """Average pooling of (B, C, H, W) to (h, w) by an integer factor, with explicit loops."""
    b, c, h, w = x.shape
    fh, fw = h // size[0], w // size[1]
    out = np.zeros((b, c, *size))
    for i in range(size[0]):
        for j in range(size[1]):
            out[:, :, i, j] = x[:, :, i * fh : (i + 1) * fh, j * fw : (j + 1) * fw].mean(
                axis=(2, 3)
            )
    return out


def np_match(a, b):
    size = (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))
    return np_pool(a, size), np_pool(b, size)


def np_attention(f, p=2.0):
    out = []
    for sample in f:
        q = np.zeros(sample.shape[1] * sample.shape[2])
        for channel in sample:
            q += np.abs(channel.ravel()) ** p
        out.append(q / math.sqrt(sum(v * v for v in q)))
    return np.stack(out)


def np_at(s, t, p, mode):
    s, t = np_match(s, t)
    qs, qt = np_attention(s, p), np_attention(t, p)
    if mode == "paper":
        return np.mean([math.sqrt(((qs[b] - qt[b]) ** 2).sum()) for b in range(len(qs))])
    return np.mean(
        [[(qs[b, k] - qt[b, k]) ** 2 for k in range(qs.shape[1])] for b in range(len(qs))]
    )


def np_nst(s, t):
    s, t = np_match(s, t)

    def units(x):
        return [[c.ravel() / np.linalg.norm(c.ravel()) for c in sample] for sample in x]

    us, ut = units(s), units(t)
    total = 0.0
    for b in range(len(us)):
        k_ss = np.mean([(u @ v) ** 2 for u in us[b] for v in us[b]])
        k_tt = np.mean([(u @ v) ** 2 for u in ut[b] for v in ut[b]])
        k_st = np.mean([(u @ v) ** 2 for u in us[b] for v in ut[b]])
        total += k_ss + k_tt - 2 * k_st
    return total / len(us)


def np_fsp(f1, f2):
    f1, f2 = np_match(f1, f2)
    b, c1, h, w = f1.shape
    g = np.zeros((b, c1, f2.shape[1]))
    for n in range(b):
        for i in range(c1):
            for j in range(f2.shape[1]):
                g[n, i, j] = sum(
                    f1[n, i, y, x] * f2[n, j, y, x] for y in range(h) for x in range(w)
                ) / (h * w)
    return g


def np_vid(mu, var, t):
    total, count = 0.0, 0
    for index in np.ndindex(*mu.shape):
        v = var[index[1]]
        total += 0.5 * (math.log(v) + (t[index] - mu[index]) ** 2 / v)
        count += 1
    return total / count


def rand(*shape, seed=0, positive=False):
    x = np.random.default_rng(seed).normal(size=shape)
    return np.abs(x) if positive else x


T = torch.tensor


# -- AT -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["paper", "code"])
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_at_matches_numpy(mode, p):
    s, t = rand(3, 4, 8, 8, seed=1), rand(3, 6, 4, 4, seed=2)  # channels and sizes differ
    assert at_loss(T(s), T(t), p, mode).item() == pytest.approx(np_at(s, t, p, mode), rel=1e-10)


def test_at_forms_differ_and_attention_map():
    s, t = rand(2, 4, 4, 4, seed=3), rand(2, 5, 4, 4, seed=4)
    paper, code = (at_loss(T(s), T(t), 2.0, m).item() for m in ("paper", "code"))
    assert paper != pytest.approx(code, rel=1e-3)
    q = attention_map(T(s))
    np.testing.assert_allclose(q.numpy(), np_attention(s), rtol=1e-12)
    np.testing.assert_allclose(q.norm(dim=1).numpy(), 1.0)
    assert attention_map(T(s), flatten=False).shape == (2, 4, 4)
    assert at_attention_map is attention_map  # the book imports it from the method module
    with pytest.raises(ValueError, match="paper"):
        at_loss(T(s), T(t), 2.0, "other")
    with pytest.raises(ShapeMismatchError, match=r"\(B, C, H, W\)"):
        attention_map(torch.randn(2, 5))


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_at_scale_invariant_and_zero_when_equal(mode):
    s, t = T(rand(2, 3, 4, 4, seed=5)), T(rand(2, 7, 4, 4, seed=6))
    ref = at_loss(s, t, 2.0, mode).item()
    assert at_loss(4.5 * s, 0.1 * t, 2.0, mode).item() == pytest.approx(ref, rel=1e-10)
    assert at_loss(s, s.clone(), 2.0, mode).item() == pytest.approx(0.0, abs=1e-12)


def test_at_method_weights_per_form():
    student, teacher = build_model("cnn_tiny"), build_model("cnn_medium")
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    for mode in ("paper", "code"):
        d = build_distiller("at", student, teacher, mode=mode, beta=10.0)
        with torch.no_grad():
            _, fs = d.student_features(x)
            ft = [d.compute_teacher_outputs(x).features[p] for p in d.teacher_paths]
            losses = d.feature_losses(torch.zeros(4, 10), y, fs, ft, None, None)
        terms = [at_loss(a, b, 2.0, mode).item() for a, b in zip(fs, ft, strict=True)]
        sizes = [min(a.shape[2], b.shape[2]) ** 2 for a, b in zip(fs, ft, strict=True)]
        expected = (
            10.0 * sum(terms)
            if mode == "code"
            else sum(10.0 / (2 * n) * v for n, v in zip(sizes, terms, strict=True))
        )
        assert losses["at"].item() == pytest.approx(expected, rel=1e-5)
        assert set(losses) == {"ce", "at"}
    with pytest.raises(ConfigError, match="mode"):
        build_distiller("at", student, teacher, mode="squared")


# -- NST ------------------------------------------------------------------------------------
def test_nst_matches_numpy():
    s, t = rand(2, 3, 8, 8, seed=7), rand(2, 5, 4, 4, seed=8)
    assert nst_loss(T(s), T(t)).item() == pytest.approx(np_nst(s, t), rel=1e-10)


def test_nst_invariances_and_zero():
    s, t = T(rand(2, 3, 4, 4, seed=9)), T(rand(2, 4, 4, 4, seed=10))
    ref = nst_loss(s, t).item()
    assert ref > 0
    # each channel is normalised over space: any per-channel scale (even negative) cancels
    scale = T([3.0, -0.5, 20.0]).view(1, 3, 1, 1)
    assert nst_loss(scale * s, 7 * t).item() == pytest.approx(ref, rel=1e-10)
    assert nst_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    # MMD compares distributions of channels: their order does not matter
    assert nst_loss(s[:, [2, 0, 1]], s).item() == pytest.approx(0.0, abs=1e-12)


# -- FSP ------------------------------------------------------------------------------------
def test_fsp_matrix_and_loss_match_numpy():
    a, b = rand(2, 3, 4, 4, seed=11), rand(2, 5, 2, 2, seed=12)
    g = fsp_matrix(T(a), T(b))
    assert g.shape == (2, 3, 5)
    np.testing.assert_allclose(g.numpy(), np_fsp(a, b), rtol=1e-10)
    shapes = [(3, 4, 4), (5, 2, 2), (4, 2, 2)]
    s = [rand(2, *sh, seed=20 + i) for i, sh in enumerate(shapes)]
    t = [rand(2, *sh, seed=30 + i) for i, sh in enumerate(shapes)]
    expected = sum(
        ((np_fsp(s[i], s[i + 1]) - np_fsp(t[i], t[i + 1])) ** 2).mean() for i in range(2)
    )
    assert fsp_loss([T(v) for v in s], [T(v) for v in t]).item() == pytest.approx(
        expected, rel=1e-10
    )
    assert fsp_loss([T(v) for v in s], [T(v) for v in s]).item() == 0.0


def test_fsp_errors_name_the_fix():
    f = torch.randn(2, 3, 4, 4)
    with pytest.raises(ShapeMismatchError, match="at least 2"):
        fsp_loss([f], [f])
    with pytest.raises(ShapeMismatchError, match="connector"):
        fsp_loss([f, f], [torch.randn(2, 4, 4, 4), f])
    with pytest.raises(KDTutorError, match=r"at least 2 paired stages.*student_paths"):
        build_distiller(
            "fsp",
            build_model("cnn_tiny"),
            build_model("cnn_medium"),
            student_paths=("stages.2",),
            teacher_paths=("stages.3",),
        )


def test_fsp_two_stages():
    d = build_distiller("fsp", build_model("cnn_tiny"), build_model("cnn_medium"), init_epochs=1)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    d.on_epoch_start(0, 3)
    assert set(d(x, y)[1]) == {"fsp"}
    d.on_epoch_start(1, 3)
    assert set(d(x, y)[1]) == {"ce"}
    single = build_distiller("fsp", build_model("cnn_tiny"), build_model("cnn_medium"))
    assert set(single(x, y)[1]) == {"ce", "fsp"}


def test_fsp_zero_for_identical_networks():
    torch.manual_seed(0)
    student = build_model("cnn_tiny")
    teacher = build_model("cnn_tiny")
    teacher.load_state_dict(student.state_dict())
    d = build_distiller("fsp", student, teacher)
    assert all(len(c) == 0 for c in d.connectors)  # equal shapes: identity connectors
    d.eval()  # batch norm in eval mode on both sides, so the features are identical
    _, losses = d(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    assert losses["fsp"].item() == pytest.approx(0.0, abs=1e-12)


# -- VID ------------------------------------------------------------------------------------
def test_vid_matches_numpy_and_is_minimal_at_the_residual_variance():
    mu, t = rand(2, 3, 2, 2, seed=13), rand(2, 3, 2, 2, seed=14)
    var = np.array([0.5, 2.0, 5.0])
    assert vid_loss(T(mu), T(var), T(t)).item() == pytest.approx(np_vid(mu, var, t), rel=1e-10)
    # for fixed residuals the loss is minimal at sigma_c^2 = mean_c (t - mu)^2
    best = ((t - mu) ** 2).mean(axis=(0, 2, 3))
    at_best = vid_loss(T(mu), T(best), T(t)).item()
    for factor in (0.8, 1.25):
        assert vid_loss(T(mu), T(best * factor), T(t)).item() > at_best
    # a perfect mean leaves only the variance term, 0.5 * mean(log sigma^2), negative here
    small = np.full(3, 0.1)
    assert vid_loss(T(t), T(small), T(t)).item() == pytest.approx(0.5 * math.log(0.1))
    with pytest.raises(ShapeMismatchError, match="one variance per channel"):
        vid_loss(T(mu), T(var[:2]), T(t))


def test_vid_method_modules_and_loss():
    torch.manual_seed(0)
    d = build_distiller("vid", build_model("cnn_tiny"), build_model("cnn_medium"))
    assert len(d.regressors) == len(d.log_scales) == len(d.student_paths) == 3
    for variance, (c, _, _) in zip(d.variances(), d.teacher_shapes, strict=True):
        assert variance.shape == (c,)
        np.testing.assert_allclose(variance.detach().numpy(), 5.0, rtol=1e-6)
    first = d.regressors[0]
    assert first[0].in_channels == d.student_shapes[0][0]
    assert first[-1].out_channels == first[0].out_channels == d.teacher_shapes[0][0]
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with torch.no_grad():
        _, fs = d.student_features(x)
        ft = [d.compute_teacher_outputs(x).features[p] for p in d.teacher_paths]
        losses = d.feature_losses(torch.zeros(4, 10), y, fs, ft, None, None)
        expected = 0.0
        for reg, var, s, t in zip(d.regressors, d.variances(), fs, ft, strict=True):
            s = torch.nn.functional.adaptive_avg_pool2d(s, t.shape[-2:])
            expected += np_vid(reg(s).double().numpy(), var.double().numpy(), t.double().numpy())
    assert losses["vid"].item() == pytest.approx(expected, rel=1e-5)


# -- every method -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_student_and_own_modules_not_teacher(method):
    torch.manual_seed(0)
    d = build_distiller(method, build_model("cnn_tiny"), build_model("cnn_medium"))
    _, losses = d(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    losses[method].backward()  # the distillation term alone (each method logs it by name)
    first_conv = next(m for m in d.student.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in d.teacher.parameters())
    assert not any(n.startswith("teacher.") for n, _ in _named_trainable(d))
    own = list(d.connectors.parameters())  # fsp's map the student's channels to the teacher's
    assert bool(own) == (method == "fsp")
    if method == "vid":
        own += list(d.regressors.parameters()) + list(d.log_scales.parameters())
    for p in own:
        assert p.grad is not None and p.grad.abs().sum() > 0


def _named_trainable(d):
    ids = {id(p) for p in d.trainable_parameters()}
    return [(n, p) for n, p in d.named_parameters() if id(p) in ids]


@pytest.fixture(scope="module")
def shapes_data():
    return load_dataset("shapes", "train", size=192), load_dataset("shapes", "test", size=64)


@pytest.mark.parametrize("method", METHODS)
def test_trains_one_epoch_through_build_distiller(method, shapes_data):
    torch.manual_seed(0)
    train, test = shapes_data
    d = build_distiller(method, build_model("cnn_tiny"), build_model("cnn_medium"))
    result = fit(d, train, test, epochs=1, batch_size=64, seed=0)
    losses = result.history[-1]["losses"]
    assert set(losses) == {"ce", method}
    assert all(np.isfinite(v) for v in losses.values())


def test_fsp_init_stage_through_fit(shapes_data):
    train, test = shapes_data
    d = build_distiller("fsp", build_model("cnn_tiny"), build_model("cnn_medium"), init_epochs=1)
    result = fit(d, train, test, epochs=2, batch_size=64, seed=0)
    assert [set(h["losses"]) for h in result.history] == [{"fsp"}, {"ce"}]
    assert all(np.isfinite(v) for h in result.history for v in h["losses"].values())
