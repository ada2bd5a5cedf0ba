"""The detection distillers of chapter 8 (``det_kd``, ``fgd``) on tiny torchvision FCOS models.

Each loss is checked against an independent computation (NumPy loops over boxes and cells, the
authors' square-root form, a NumPy GcBlock); the unrolled detector pass against the model's
own losses; one ``fit`` epoch of each method; the teacher-output cache against no cache.
The detectors are built here from torchvision's pieces (3 FPN levels, as the book's
``fcos_s``/``fcos_t``, at tiny widths), independently of ``kdtutor.models.dense``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from kdtutor.config import ConfigError
from kdtutor.data.scenes import ScenesDataset
from kdtutor.errors import KDTutorError, NotAModelError, ShapeMismatchError
from kdtutor.losses.detection import (
    det_cls_kd,
    fgd_attention,
    fgd_masks,
    masked_hint_loss,
)
from kdtutor.methods import build_distiller, get_method
from kdtutor.methods._detection import (
    boxes_on_level,
    detector_forward,
    run_detector,
    teacher_detector_outputs,
)
from kdtutor.methods.fgd import GcBlock
from kdtutor.tasks.detection import Detection
from kdtutor.train import fit

torch.set_num_threads(1)

K = ScenesDataset.num_classes  # 4: torchvision counts the background


class TinyFPNBackbone(nn.Module):
    """A stride-4 stem, three stride-2 stages (C3-C5 at /8, /16, /32) and torchvision's FPN."""

    def __init__(self, width: int, fpn: int) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU())

        from torchvision.ops import FeaturePyramidNetwork

        self.stem = nn.Sequential(block(3, width), block(width, width))
        self.c3, self.c4, self.c5 = block(width, width), block(width, width), block(width, width)
        self.fpn = FeaturePyramidNetwork([width] * 3, fpn)
        self.out_channels = fpn

    def forward(self, x):
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        return self.fpn(OrderedDict([("0", c3), ("1", c4), ("2", self.c5(c4))]))


def tiny_fcos(width=8, fpn=32, seed=0, levels=3, classes=K, size=64):
    """FCOS at 64 px, as the design's models but tiny (GroupNorm(32, C): C a multiple of 32)."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    torch.manual_seed(seed)
    sizes = ((2,), (4,), (8,), (16,))[:levels]
    return FCOS(
        TinyFPNBackbone(width, fpn),
        num_classes=classes,
        min_size=size,
        max_size=size,
        anchor_generator=AnchorGenerator(sizes, ((1.0,),) * levels),
        head=FCOSHead(fpn, 1, classes, num_convs=1),
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        score_thresh=0.05,
    )


def student():
    return tiny_fcos(8, 32, seed=0)


def teacher():
    return tiny_fcos(16, 64, seed=1)


@pytest.fixture(scope="module")
def batch():
    data = ScenesDataset(6, seed=0)
    return Detection().collate([data[i] for i in range(len(data))])


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np64(t):
    return t.detach().double().numpy()


# -- the unrolled detector ------------------------------------------------------------------------
def test_detector_forward_gives_the_models_own_losses_and_the_raw_outputs(batch):
    x, y = batch
    model = student().train()
    expected = model(list(x), y)
    losses, head, levels = detector_forward(model, x, y)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    for key, value in expected.items():
        assert torch.equal(losses[key], value), key
    # 8x8 + 4x4 + 2x2 = 84 locations at 64 px
    assert head["cls_logits"].shape == (6, 84, K)
    assert head["bbox_regression"].shape == (6, 84, 4)
    assert head["bbox_ctrness"].shape == (6, 84, 1)
    assert [tuple(f.shape) for f in levels] == [(6, 32, 8, 8), (6, 32, 4, 4), (6, 32, 2, 2)]
    # the teacher's pass: the same pieces in eval mode, tensors for the cache
    t = teacher().eval()
    out = teacher_detector_outputs(t, x)
    _, t_head, t_levels = detector_forward(t, x, None)
    assert torch.equal(out.logits, t_head["cls_logits"])
    assert sorted(out.features) == ["bbox_ctrness", "bbox_regression", "fpn.0", "fpn.1", "fpn.2"]
    assert torch.equal(out.features["fpn.2"], t_levels[2])
    with pytest.raises(KDTutorError, match="needs its targets"):
        run_detector(model, x, None)


def test_det_scratch_trains_on_the_detectors_own_losses_without_a_teacher(batch):
    x, y = batch
    model = student().train()
    expected = model(list(x), y)  # torchvision's own training branch
    d = build_distiller("det_scratch", model)
    assert d.teacher is None and not get_method("det_scratch").requires_teacher
    outputs, losses = d(x, y)
    assert outputs is None and set(losses) == set(expected)
    for key, value in expected.items():
        assert torch.equal(losses[key], value), key
    with pytest.raises(KDTutorError, match="detection dataset"):
        d(x, None)


# -- det_kd -------------------------------------------------------------------------------------
def numpy_soft_bce(zs, zt, T):
    p, q = sigmoid(zt / T), sigmoid(zs / T)
    per_class = -(p * np.log(q) + (1 - p) * np.log(1 - q))
    locations = zs.size // zs.shape[-1]
    return T * T * per_class.sum() / locations


def test_det_cls_kd_is_the_per_class_binary_cross_entropy_of_numpy():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(2, 7, 3, generator=g, requires_grad=True)
    zt = 3 * torch.randn(2, 7, 3, generator=g)
    for T in (1.0, 2.5):
        got = det_cls_kd(zs, zt, T).detach()
        assert float(got) == pytest.approx(numpy_soft_bce(np64(zs), np64(zt), T), rel=1e-6)
    # the teacher's entropy is a constant: at z_s = z_t the gradient vanishes, the value does not
    same = zt.clone().requires_grad_(True)
    value = det_cls_kd(same, zt, 2.0)
    value.backward()
    assert float(value.detach()) > 0 and float(same.grad.abs().max()) < 1e-7


def test_det_kd_soft_term_on_the_detectors_logits(batch):
    x, y = batch
    d = build_distiller("det_kd", student(), teacher(), T=2.0, kd_weight=0.5, hint_weight=0.0)
    d.train()
    _, losses = d(x, y)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness", "kd"}
    _, head, _ = detector_forward(d.student, x, y)
    zt = d.compute_teacher_outputs(x).logits
    expected = 0.5 * numpy_soft_bce(np64(head["cls_logits"]), np64(zt), 2.0)
    assert float(losses["kd"]) == pytest.approx(expected, rel=1e-5)
    assert len(d.connectors) == 0  # no hint, no connectors (no unused parameters)


def test_boxes_hint_is_a_masked_mse_over_the_cells_the_boxes_cover(batch):
    x, y = batch
    d = build_distiller("det_kd", student(), teacher(), kd_weight=0.0, hint_region="boxes")
    d.train()
    _, losses = d(x, y)
    assert "kd" not in losses
    p = run_detector(d.student, x, y)
    t_out = d.compute_teacher_outputs(x)
    expected = 0.0
    for k, feature in enumerate(p.features):
        a = np64(d.connectors[k](feature))
        ft = np64(t_out.features[f"fpn.{k}"])
        b_, c_, h_, w_ = a.shape
        stride = 64 // h_
        total, cells = 0.0, 0
        for b in range(b_):
            boxes = y[b]["boxes"].tolist()
            for i in range(h_):
                for j in range(w_):
                    covered = any(
                        min(x1, (j + 1) * stride) - max(x0, j * stride) > 0
                        and min(y1, (i + 1) * stride) - max(y0, i * stride) > 0
                        for x0, y0, x1, y1 in boxes
                    )
                    if covered:
                        total += ((a[b, :, i, j] - ft[b, :, i, j]) ** 2).sum()
                        cells += 1
        expected += total / (c_ * cells)
    assert float(losses["hint"]) == pytest.approx(expected, rel=1e-5)
    # no box at all: the term is 0, not NaN
    zeros = masked_hint_loss(torch.ones(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3))
    assert float(zeros) == 0.0


# -- FGD ----------------------------------------------------------------------------------------
def numpy_fgd_masks(boxes, h, w):
    """The authors' loop (f1da292): floor/ceil, both ends included, [h, w] indexing, max."""
    fg = np.zeros((len(boxes), h, w))
    bg = np.ones((len(boxes), h, w))
    for i, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in image_boxes:
            wmin, wmax = math.floor(x0), math.ceil(x1)
            hmin, hmax = math.floor(y0), math.ceil(y1)
            area = 1.0 / (hmax + 1 - hmin) / (wmax + 1 - wmin)
            region = fg[i, hmin : hmax + 1, wmin : wmax + 1]
            fg[i, hmin : hmax + 1, wmin : wmax + 1] = np.maximum(region, area)
        bg[i] = np.where(fg[i] > 0, 0, 1)
        if bg[i].sum():
            bg[i] /= bg[i].sum()
    return fg, bg


def test_fgd_masks_follow_the_authors_loop_over_boxes():
    boxes = [
        [(0.5, 0.5, 1.5, 1.5), (1.0, 0.0, 4.0, 2.0), (3.2, 1.7, 5.0, 3.0)],  # overlaps, edges
        [],
        [(0.0, 0.0, 5.0, 3.0)],  # the whole grid: no background left
        [(2.0, 0.25, 4.5, 0.75)],  # wide and flat: catches a transposed [w, h] mask
    ]
    fg, bg = fgd_masks([torch.tensor(b).reshape(-1, 4) for b in boxes], (3, 5))
    fg_np, bg_np = numpy_fgd_masks(boxes, 3, 5)
    np.testing.assert_allclose(fg.numpy(), fg_np, rtol=1e-6)
    np.testing.assert_allclose(bg.numpy(), bg_np, rtol=1e-6)
    # by hand: the flat box covers rows 0..1 and columns 2..5 (cut at 4), 1 / (2 * 4)
    assert fg[3, 0, 2] == pytest.approx(1 / 8) and fg[3, 2].sum() == 0 and fg[3, :, :2].sum() == 0
    # overlapping boxes take the larger value (the smaller box): 1/9 against 1/(3*5)
    assert fg[0, 1, 1] == pytest.approx(1 / 9)
    assert bg[1].sum() == pytest.approx(1.0) and bg[2].sum() == 0.0
    # on scene boxes projected on the three levels
    data = ScenesDataset(4, seed=3)
    scene_boxes = [data[i][1]["boxes"] for i in range(4)]
    for h in (8, 4, 2):
        on_level = [boxes_on_level(b, (64, 64), (h, h)) for b in scene_boxes]
        fg, bg = fgd_masks(on_level, (h, h))
        fg_np, bg_np = numpy_fgd_masks([(b * h / 64).tolist() for b in scene_boxes], h, h)
        np.testing.assert_allclose(fg.numpy(), fg_np, rtol=1e-6)
        np.testing.assert_allclose(bg.numpy(), bg_np, rtol=1e-6)


def numpy_softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def numpy_attention(f, T):
    b_, c_, h_, w_ = f.shape
    spatial, channel = np.zeros((b_, h_, w_)), np.zeros((b_, c_))
    for b in range(b_):
        a = np.abs(f[b])
        spatial[b] = h_ * w_ * numpy_softmax(a.mean(axis=0).ravel() / T).reshape(h_, w_)
        channel[b] = c_ * numpy_softmax(a.reshape(c_, -1).mean(axis=1) / T)
    return spatial, channel


def test_fgd_attention_against_numpy():
    f = torch.randn(2, 6, 3, 5, generator=torch.Generator().manual_seed(1))
    spatial, channel = fgd_attention(f, 0.8)
    s_np, c_np = numpy_attention(np64(f), 0.8)
    np.testing.assert_allclose(spatial.numpy(), s_np, rtol=1e-5)
    np.testing.assert_allclose(channel.numpy(), c_np, rtol=1e-5)
    assert spatial.mean(dim=(1, 2)).tolist() == pytest.approx([1.0, 1.0])


def numpy_gcblock(block: GcBlock, x):
    """R(F) = F + W2 relu(LN(W1 c + b1)) + b2, c the softmax-pooled context, in NumPy."""
    wk = np64(block.conv_mask.weight).reshape(-1)
    bk = float(block.conv_mask.bias)
    conv1, norm, _, conv2 = block.channel_add
    w1, b1 = np64(conv1.weight)[:, :, 0, 0], np64(conv1.bias)
    w2, b2 = np64(conv2.weight)[:, :, 0, 0], np64(conv2.bias)
    g, beta = np64(norm.weight).reshape(-1), np64(norm.bias).reshape(-1)
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        flat = x[b].reshape(x.shape[1], -1)  # (C, HW)
        weights = numpy_softmax(wk @ flat + bk)
        context = flat @ weights  # (C,)
        hidden = w1 @ context + b1
        hidden = (hidden - hidden.mean()) / np.sqrt(hidden.var() + norm.eps) * g + beta
        added = w2 @ np.maximum(hidden, 0) + b2
        out[b] = x[b] + added[:, None, None]
    return out


def test_fgd_four_terms_against_a_direct_computation(batch):
    x, y = batch
    weights = {"alpha_fgd": 1.0, "beta_fgd": 2.0, "gamma_fgd": 3.0, "lambda_fgd": 0.5, "T": 0.7}
    d = build_distiller("fgd", student(), teacher(), **weights)
    d.train()
    with torch.no_grad():  # GcBlocks past step 0: their last convolutions are no longer zero
        for parts in d.levels:
            for block in (parts.gc_student, parts.gc_teacher):
                nn.init.normal_(block.channel_add[-1].weight, std=0.2)
                nn.init.normal_(block.channel_add[0].bias, std=0.2)
    _, losses = d(x, y)
    p = run_detector(d.student, x, y)
    t_out = d.compute_teacher_outputs(x)
    expected = {"fg": 0.0, "bg": 0.0, "at": 0.0, "global": 0.0}
    for k, feature in enumerate(p.features):
        parts = d.levels[k]
        fs, ft = np64(parts.align(feature)), np64(t_out.features[f"fpn.{k}"])
        b_, _, h_, w_ = ft.shape
        boxes = [(y[b]["boxes"] * h_ / 64).tolist() for b in range(b_)]
        fg, bg = numpy_fgd_masks(boxes, h_, w_)
        s_t, c_t = numpy_attention(ft, 0.7)
        s_s, c_s = numpy_attention(fs, 0.7)
        # the authors' form: square roots of the weights, then a summed squared error
        root = np.sqrt(s_t)[:, None] * np.sqrt(c_t)[:, :, None, None]
        for name, mask in (("fg", fg), ("bg", bg)):
            m = np.sqrt(mask)[:, None]
            expected[name] += ((fs * root * m - ft * root * m) ** 2).sum() / b_
        expected["at"] += (np.abs(c_s - c_t).sum() + np.abs(s_s - s_t).sum()) / b_
        gs, gt = numpy_gcblock(parts.gc_student, fs), numpy_gcblock(parts.gc_teacher, ft)
        expected["global"] += ((gs - gt) ** 2).sum() / b_
    for key, weight in (("fg", 1.0), ("bg", 2.0), ("at", 3.0), ("global", 0.5)):
        assert float(losses[f"fgd_{key}"]) == pytest.approx(weight * expected[key], rel=1e-4), key
    assert {"classification", "bbox_regression", "bbox_ctrness"} <= set(losses)


def test_fgd_gcblocks_start_as_the_identity_so_the_global_term_is_a_summed_mse(batch):
    x, y = batch
    d = build_distiller("fgd", student(), teacher())
    hp = d.hparams
    assert (hp.T, hp.alpha_fgd, hp.beta_fgd, hp.gamma_fgd, hp.lambda_fgd) == (
        0.8,
        0.0016,
        0.0008,
        0.0008,
        0.000008,
    )
    d.train()
    _, losses = d(x, y)
    p = run_detector(d.student, x, y)
    t_out = d.compute_teacher_outputs(x)
    expected = 0.0
    for k, feature in enumerate(p.features):
        fs = d.levels[k].align(feature)
        ft = t_out.features[f"fpn.{k}"]
        block = d.levels[k].gc_student
        assert torch.equal(block(fs), fs)  # zero-initialised last conv: R(F) = F
        expected += float(((ft - fs) ** 2).sum()) / len(ft)
        got = d.levels[k].gc_teacher.channel_add[-1].weight
        assert float(got.abs().max()) == 0.0
    assert float(losses["fgd_global"]) == pytest.approx(hp.lambda_fgd * expected, rel=1e-5)
    # the align conv exists because the widths differ (32 -> 64); equal widths need none
    assert isinstance(d.levels[0].align, nn.Conv2d)
    same = build_distiller("fgd", student(), tiny_fcos(16, 32, seed=1))
    assert isinstance(same.levels[0].align, nn.Identity)


# -- through the engine ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, hparams, keys",
    [
        ("det_scratch", {}, set()),
        ("det_kd", {}, {"kd", "hint"}),
        ("det_kd", {"hint_region": "boxes"}, {"kd", "hint"}),
        ("fgd", {}, {"fgd_fg", "fgd_bg", "fgd_at", "fgd_global"}),
    ],
)
def test_one_fit_epoch_of_each_method(method, hparams, keys):
    t = None if method == "det_scratch" else teacher()
    d = build_distiller(method, student(), t, **hparams)
    test = ScenesDataset(4, seed=1) if method in ("fgd", "det_scratch") else None
    result = fit(d, ScenesDataset(16, seed=0), test, epochs=1, batch_size=8, lr=0.01)
    record = result.history[-1]
    assert set(record["losses"]) == {"classification", "bbox_regression", "bbox_ctrness"} | keys
    assert all(math.isfinite(v) for v in record["losses"].values())
    # one pass fills the cache (none when this process's memory cache already holds the
    # same teacher's outputs on the same data: det_kd and fgd share it); no step runs it
    assert d.teacher_forward_calls <= 1
    if test is not None:
        assert set(record["test"]["student"]) == {"map_50", "map"}
    d.eval()
    out = d.predict(torch.stack([ScenesDataset(2, seed=2)[i][0] for i in range(2)]))
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}


@pytest.mark.parametrize("method", ["det_kd", "fgd"])
def test_the_teacher_cache_gives_the_same_losses_as_the_teacher(method):
    train = ScenesDataset(8, seed=0)
    runs = {}
    for cache in (True, False):
        d = (
            build_distiller(method, student(), teacher(), hint_region="boxes")
            if (method == "det_kd")
            else build_distiller(method, student(), teacher())
        )
        result = fit(d, train, None, epochs=2, batch_size=8, lr=0.01, cache=cache, seed=0)
        runs[cache] = ([r["losses"] for r in result.history], d.teacher_forward_calls)
    assert runs[True][1] <= 1 and runs[False][1] == 2  # at most the cache's pass; one a step
    for cached, direct in zip(runs[True][0], runs[False][0], strict=True):
        assert cached == pytest.approx(direct, rel=1e-5)
    # the cached rows are the teacher's outputs
    d = build_distiller(method, student(), teacher())
    cache = d.cache_teacher(train)
    rows = torch.tensor([5, 1, 2])
    x = torch.stack([train[int(i)][0] for i in rows])
    looked_up, computed = cache.lookup(rows), d.compute_teacher_outputs(x)
    torch.testing.assert_close(looked_up.logits, computed.logits)
    assert sorted(looked_up.features) == sorted(computed.features)
    for key, value in computed.features.items():
        torch.testing.assert_close(looked_up.features[key], value)


def test_registry_and_the_task_contract():
    for name in ("det_scratch", "det_kd", "fgd"):
        cls = get_method(name)
        assert cls.name == name and cls.task == "detection" and cls.family == "application"
        assert cls.tensor_teacher_outputs is True


# -- bad input ----------------------------------------------------------------------------------
def test_bad_hyperparameters_and_models_are_refused_with_the_fix(batch):
    x, y = batch
    s, t = student(), teacher()
    with pytest.raises(ConfigError, match="hint_region"):
        build_distiller("det_kd", s, t, hint_region="box")
    with pytest.raises(ConfigError, match="T must be > 0"):
        build_distiller("det_kd", s, t, T=0.0)
    with pytest.raises(ConfigError, match="kd_weight must be >= 0"):
        build_distiller("det_kd", s, t, kd_weight=-1.0)
    with pytest.raises(ConfigError, match="alpha_fgd must be >= 0"):
        build_distiller("fgd", s, t, alpha_fgd=-0.1)
    with pytest.raises(ConfigError, match="unknown key 'temp'"):
        build_distiller("fgd", s, t, temp=0.5)
    with pytest.raises(NotAModelError, match="one-stage detector"):
        build_distiller("fgd", nn.Conv2d(3, 8, 3), t)
    with pytest.raises(NotAModelError, match="one-stage detector"):
        build_distiller("det_kd", s, nn.Conv2d(3, 8, 3))
    with pytest.raises(ShapeMismatchError, match="FPN levels"):
        build_distiller("fgd", tiny_fcos(levels=2), t)
    with pytest.raises(ShapeMismatchError, match="classes"):
        build_distiller("det_kd", tiny_fcos(classes=3), t)
    with pytest.raises(KDTutorError, match="needs a teacher"):
        build_distiller("fgd", s)
    d = build_distiller("det_kd", s, t)
    with pytest.raises(KDTutorError, match="detection dataset"):
        d(x, None)
    # a teacher that resizes its input predicts at other locations
    d = build_distiller("fgd", student(), tiny_fcos(16, 64, seed=1, size=96))
    with pytest.raises(ShapeMismatchError, match="same locations"):
        d.train()(x, y)
