"""Chapter 8's dense distillers (design note applications.md, 3.2-3.4): ``skd`` (and its
``pixel`` label), ``cwd``, ``depth_kd``, ``fpd`` and the supervised baselines
``seg_scratch``, ``depth_scratch``, ``pose_scratch``.

Each loss against an independent computation (NumPy loops over pixels, channels, nodes and
slots), the methods wired to the maps read before upsampling (on tiny stand-ins with the
chapter's output contract: ``{"out": ...}`` and a ``classifier`` / ``high`` for
segmentation, a log-depth ``head`` and an ``enc.s3`` for depth, heatmaps for pose), one
``fit`` epoch of each with its task and the teacher cache, cached and uncached teacher
outputs giving the same losses, ``fpd(alpha=0)`` = ``pose_scratch`` exactly, and the
refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdtutor.config import ConfigError
from kdtutor.data.scenes import ScenesDataset
from kdtutor.errors import DataFormatError, KDTutorError, ShapeMismatchError, UnknownNameError
from kdtutor.losses.dense import (
    cwd_loss,
    fpd_loss,
    heatmap_mse,
    log_depth_kd_loss,
    log_depth_l1,
    pair_wise_loss,
    pixel_kd_loss,
    similarity_matrix,
)
from kdtutor.losses.feature import hint_loss
from kdtutor.losses.response import kd_loss
from kdtutor.methods import build_distiller, get_method
from kdtutor.tasks import get_task
from kdtutor.train import fit

torch.set_num_threads(1)

K = ScenesDataset.num_classes  # 4: background and three shapes


# -- NumPy references ------------------------------------------------------------------------
def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def np_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * (np.log(p) - np.log(q))).sum())


def np_pixel_kd(zs: np.ndarray, zt: np.ndarray) -> float:
    """The mean over images of (1 / HW) sum over pixels of KL(teacher || student)."""
    b, _, h, w = zs.shape
    per_image = []
    for n in range(b):
        total = 0.0
        for i in range(h):
            for j in range(w):
                total += np_kl(np_softmax(zt[n, :, i, j]), np_softmax(zs[n, :, i, j]))
        per_image.append(total / (h * w))
    return float(np.mean(per_image))


def np_cwd(zs: np.ndarray, zt: np.ndarray, tau: float) -> float:
    """tau^2 / C times the sum over channels of KL between softmaxes over locations, averaged
    over images."""
    b, c = zs.shape[:2]
    per_image = []
    for n in range(b):
        total = 0.0
        for k in range(c):
            p_t = np_softmax(zt[n, k].ravel() / tau)
            p_s = np_softmax(zs[n, k].ravel() / tau)
            total += np_kl(p_t, p_s)
        per_image.append(tau**2 * total / c)
    return float(np.mean(per_image))


def np_nodes(f: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """Max over each kernel window, the last window of a row or column cut at the edge."""
    b, c, h, w = f.shape
    rows, cols = math.ceil(h / kernel[0]), math.ceil(w / kernel[1])
    out = np.zeros((b, c, rows, cols))
    for r in range(rows):
        for s in range(cols):
            window = f[
                :, :, r * kernel[0] : (r + 1) * kernel[0], s * kernel[1] : (s + 1) * kernel[1]
            ]
            out[:, :, r, s] = window.max(axis=(2, 3))
    return out


def np_pair_wise(fs: np.ndarray, ft: np.ndarray, scale: float) -> float:
    h, w = ft.shape[-2:]
    kernel = (max(1, int(h * scale)), max(1, int(w * scale)))
    ns, nt = np_nodes(fs, kernel), np_nodes(ft, kernel)
    b = fs.shape[0]
    nodes = ns.shape[2] * ns.shape[3]
    total = 0.0
    for n in range(b):
        vs = ns[n].reshape(ns.shape[1], -1).T  # (N, C_s)
        vt = nt[n].reshape(nt.shape[1], -1).T
        for i in range(nodes):
            for j in range(nodes):
                a_s = (
                    vs[i]
                    @ vs[j]
                    / ((np.linalg.norm(vs[i]) + 1e-8) * (np.linalg.norm(vs[j]) + 1e-8))
                )
                a_t = (
                    vt[i]
                    @ vt[j]
                    / ((np.linalg.norm(vt[i]) + 1e-8) * (np.linalg.norm(vt[j]) + 1e-8))
                )
                total += (a_s - a_t) ** 2
    return total / (b * nodes**2)


# -- the losses ------------------------------------------------------------------------------
def test_pixel_kd_is_a_kl_per_pixel_and_kd_loss_on_one_row_per_pixel():
    gen = torch.Generator().manual_seed(0)
    zs = 2 * torch.randn(3, 5, 4, 6, generator=gen, dtype=torch.float64)
    zt = 2 * torch.randn(3, 5, 4, 6, generator=gen, dtype=torch.float64)
    loss = pixel_kd_loss(zs, zt)
    assert loss.item() == pytest.approx(np_pixel_kd(zs.numpy(), zt.numpy()), rel=1e-10)
    rows = (zs.permute(0, 2, 3, 1).reshape(-1, 5), zt.permute(0, 2, 3, 1).reshape(-1, 5))
    torch.testing.assert_close(loss, kd_loss(*rows, 1.0))
    assert pixel_kd_loss(zt, zt).item() == pytest.approx(0.0, abs=1e-12)


def test_pixel_kd_code_mode_is_b_times_the_paper_mode():
    """The authors' summed cross entropy / (H W): B times the paper's mean KL in gradient; in
    value B times (the KL plus the teacher's mean entropy per pixel, a constant)."""
    gen = torch.Generator().manual_seed(1)
    b = 4
    zs = torch.randn(b, 3, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(b, 3, 5, 5, generator=gen, dtype=torch.float64)
    paper = pixel_kd_loss(zs, zt, mode="paper")
    code = pixel_kd_loss(zs, zt, mode="code")
    (g_paper,) = torch.autograd.grad(paper, zs)
    (g_code,) = torch.autograd.grad(code, zs)
    torch.testing.assert_close(g_code, b * g_paper)
    p_t = zt.softmax(1).numpy()
    entropy = float(-(p_t * np.log(p_t)).sum(1).mean())  # mean over pixels of H(q_t)
    assert code.item() == pytest.approx(b * (paper.item() + entropy), rel=1e-10)
    with pytest.raises(ValueError, match="'paper' or 'code'"):
        pixel_kd_loss(zs, zt, mode="mean")


def test_cwd_is_a_kl_per_channel_and_kd_loss_on_one_row_per_channel():
    gen = torch.Generator().manual_seed(2)
    zs = 3 * torch.randn(2, 4, 5, 3, generator=gen, dtype=torch.float64)
    zt = 3 * torch.randn(2, 4, 5, 3, generator=gen, dtype=torch.float64)
    for tau in (1.0, 4.0):
        loss = cwd_loss(zs, zt, tau)
        assert loss.item() == pytest.approx(np_cwd(zs.numpy(), zt.numpy(), tau), rel=1e-10)
        torch.testing.assert_close(loss, kd_loss(zs.reshape(8, 15), zt.reshape(8, 15), tau))
    with pytest.raises(ShapeMismatchError, match="same resolution"):
        cwd_loss(zs, zt[..., :2])
    with pytest.raises(ShapeMismatchError, match=r"\(B, C, H, W\)"):
        cwd_loss(zs.flatten(2), zt.flatten(2))


def test_pair_wise_loss_is_an_explicit_double_loop_over_pooled_nodes():
    """Channels differ (5 and 7); a 5 x 6 map with scale 0.5 pools by 2 x 3 windows into
    3 x 2 nodes, the last row of nodes from a one-pixel-high window (ceil mode)."""
    gen = torch.Generator().manual_seed(3)
    fs = torch.randn(2, 5, 5, 6, generator=gen, dtype=torch.float64)
    ft = torch.randn(2, 7, 5, 6, generator=gen, dtype=torch.float64)
    expected = np_pair_wise(fs.numpy(), ft.numpy(), 0.5)
    for detach_norm in (False, True):
        loss = pair_wise_loss(fs, ft, 0.5, detach_norm=detach_norm)
        assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert pair_wise_loss(ft, ft).item() == pytest.approx(0.0, abs=1e-12)
    assert pair_wise_loss(fs, ft, 1.0).item() == pytest.approx(0.0, abs=1e-12)  # one node
    with pytest.raises(ShapeMismatchError, match="node grids"):
        pair_wise_loss(fs[..., :2], ft)


def test_detached_norms_change_the_gradient_not_the_value():
    """The paper's cosine is invariant to rescaling a node, so its gradient at each node is
    orthogonal to the node's vector; the authors' detached norm breaks that."""
    gen = torch.Generator().manual_seed(4)
    f = torch.randn(2, 3, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.rand(2, 6, 6, generator=gen, dtype=torch.float64)
    radial = {}
    for detach_norm in (False, True):
        sim = similarity_matrix(f, detach_norm=detach_norm)
        (grad,) = torch.autograd.grad((sim - target).pow(2).sum(), f)
        radial[detach_norm] = (grad * f).sum(1).abs().max().item()  # per node: f_i . dL/df_i
    assert radial[False] < 1e-7 < 1e-2 < radial[True]
    sims = [similarity_matrix(f, detach_norm=d) for d in (False, True)]
    torch.testing.assert_close(sims[0], sims[1])


def test_depth_losses_against_numpy():
    gen = torch.Generator().manual_seed(5)
    pred = 4 + 8 * torch.rand(2, 1, 3, 4, generator=gen, dtype=torch.float64)
    target = 4 + 8 * torch.rand(2, 1, 3, 4, generator=gen, dtype=torch.float64)
    target[0, 0, 0, :2] = 0.0  # two pixels without depth
    p, t = pred.numpy().ravel(), target.numpy().ravel()
    valid = t > 0
    expected = np.abs(np.log(p[valid]) - np.log(t[valid])).mean()
    assert log_depth_l1(pred, target).item() == pytest.approx(expected, rel=1e-12)
    assert log_depth_l1(pred, target[:, 0]).item() == pytest.approx(expected, rel=1e-12)
    assert log_depth_l1(pred, torch.zeros_like(target)).item() == 0.0
    a, b = torch.log(pred), torch.log(target + 1)
    expected = np.abs(a.numpy() - b.numpy()).mean()
    assert log_depth_kd_loss(a, b).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ShapeMismatchError, match="one depth per pixel"):
        log_depth_l1(pred, target[..., :2])
    with pytest.raises(ShapeMismatchError, match="same resolution"):
        log_depth_kd_loss(a, b[..., :2])


def test_fpd_against_numpy_with_the_target_weight_mask():
    gen = torch.Generator().manual_seed(6)
    hs, ht, hg = (torch.rand(3, 4, 5, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    weight = torch.ones(3, 4, 1, dtype=torch.float64)
    weight[1, 3] = 0.0  # a triangle's empty fourth slot
    w = weight.numpy()[:, :, 0]

    def np_mse(a, b):
        total = 0.0
        for n in range(3):
            for j in range(4):
                total += ((w[n, j] * a[n, j] - w[n, j] * b[n, j]) ** 2).sum()
        return total / a.size

    s, t, g = hs.numpy(), ht.numpy(), hg.numpy()
    assert heatmap_mse(hs, hg, weight).item() == pytest.approx(np_mse(s, g), rel=1e-12)
    for alpha in (0.25, 0.5, 1.0):
        expected = alpha * np_mse(s, t) + (1 - alpha) * np_mse(s, g)
        assert fpd_loss(hs, ht, hg, weight, alpha).item() == pytest.approx(expected, rel=1e-12)
    assert torch.equal(fpd_loss(hs, ht, hg, weight, 0.0), heatmap_mse(hs, hg, weight))
    assert torch.equal(fpd_loss(hs, ht, hg, weight[..., 0], 0.0), heatmap_mse(hs, hg, weight))
    assert heatmap_mse(hs, hg).item() == pytest.approx(((s - g) ** 2).mean(), rel=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fpd_loss(hs, ht, hg, weight, 1.5)
    with pytest.raises(ShapeMismatchError, match="one heatmap per keypoint"):
        heatmap_mse(hs, hg[:, :3])
    with pytest.raises(ShapeMismatchError, match="one weight per heatmap"):
        heatmap_mse(hs, hg, weight[:2])


# -- stand-in networks with the chapter's output contracts ------------------------------------
class TinySeg(nn.Module):
    """LRASPP's contract in two convolutions: ``{"out": logits at the image size}``, the
    stride-4 feature ``high`` and the ``classifier`` whose output is the map before the x4
    bilinear upsampling."""

    def __init__(self, width: int, seed: int, classes: int = K):
        super().__init__()
        torch.manual_seed(seed)
        self.high = nn.Sequential(nn.Conv2d(3, width, 3, stride=4, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        z = self.classifier(self.high(x))
        return {"out": F.interpolate(z, size=x.shape[-2:], mode="bilinear", align_corners=False)}


class TinyDepth(nn.Module):
    """The depth nets' contract: a log-depth ``head`` at /2, upsampled x2 and exponentiated;
    a bottleneck ``enc.s3`` at /4."""

    def __init__(self, width: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.ModuleDict(
            {
                "s1": nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU()),
                "s3": nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU()),
            }
        )
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        f1 = self.enc["s1"](x)
        f3 = self.enc["s3"](f1)
        log_depth = self.head(f1 + F.interpolate(f3, scale_factor=2.0)) + 2.0
        return torch.exp(F.interpolate(log_depth, scale_factor=2.0, mode="bilinear"))


class TinyPose(nn.Module):
    """Heatmaps (B, 4, 16, 16) from 32-px crops."""

    def __init__(self, width: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, 4, 1)

    def forward(self, x):
        return self.head(self.body(x))


class PoseCrops(torch.utils.data.Dataset):
    """Random 32-px crops with the pose targets' format: Gaussian heatmaps (sigma 1) at
    integer keypoints, ``weight`` 0 for the fourth slot of every other crop, box side 12."""

    def __init__(self, n: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, 32, 32, generator=gen)
        self.points = torch.randint(2, 14, (n, 4, 2), generator=gen).float()
        u = torch.arange(16.0)
        dx = (u.view(1, 1, 1, 16) - self.points[..., 0, None, None]) ** 2
        dy = (u.view(1, 1, 16, 1) - self.points[..., 1, None, None]) ** 2
        self.maps = torch.exp(-(dx + dy) / 2.0)
        self.weight = torch.ones(n, 4, 1)
        self.weight[1::2, 3] = 0.0
        self.maps = self.maps * self.weight[..., None]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        target = {
            "heatmaps": self.maps[i],
            "keypoints": self.points[i],
            "weight": self.weight[i],
            "scale": torch.tensor(12.0),
        }
        return self.images[i], target


N = 12  # samples per training set: three steps of 4


@pytest.fixture(scope="module")
def data():
    return {
        "segmentation": ScenesDataset(N, seed=0, size=32, task="segmentation"),
        "depth": ScenesDataset(N, seed=0, size=32, task="depth"),
        "keypoints": PoseCrops(N),
    }


NETS = {"segmentation": TinySeg, "depth": TinyDepth, "keypoints": TinyPose}

# label -> (method, hparams); the task is the method's
RUNS = {
    "seg_scratch": ("seg_scratch", {}),
    "pixel": ("skd", {"pair_weight": 0.0}),
    "skd": ("skd", {}),
    "skd_code": ("skd", {"mode": "code", "detach_norm": True}),
    "cwd": ("cwd", {}),
    "depth_scratch": ("depth_scratch", {}),
    "depth_kd": ("depth_kd", {}),
    "depth_kd_hint": ("depth_kd", {"hint_weight": 1.0}),
    "pose_scratch": ("pose_scratch", {}),
    "fpd": ("fpd", {}),
}


def make(label: str):
    method, hparams = RUNS[label]
    cls = get_method(method)
    net = NETS[cls.task]
    teacher = net(8, seed=2) if cls.requires_teacher else None
    return build_distiller(method, net(4, seed=1), teacher, **hparams), cls.task


def first_batch(dataset, n: int = 4):
    return get_task(dataset_task(dataset)).collate([dataset[i] for i in range(n)])


def dataset_task(dataset) -> str:
    return "keypoints" if isinstance(dataset, PoseCrops) else dataset.task


# -- the methods -----------------------------------------------------------------------------
def test_skd_and_cwd_compare_the_maps_before_upsampling():
    student, teacher = TinySeg(4, seed=1), TinySeg(8, seed=2)
    x = torch.rand(2, 3, 32, 32)
    y = torch.randint(0, K, (2, 32, 32))
    y[0, :3] = 255  # ignored pixels
    with torch.no_grad():
        zs, zt = student.classifier(student.high(x)), teacher.classifier(teacher.high(x))
        fs, ft = student.high(x), teacher.high(x)
        ce = F.cross_entropy(student(x)["out"], y, ignore_index=255)
    assert zs.shape == (2, K, 8, 8)

    d = build_distiller("skd", student, teacher)
    outputs, losses = d(x, y)
    assert set(outputs) == {"out"} and list(losses) == ["ce", "pixel", "pair"]
    torch.testing.assert_close(losses["ce"], ce)
    torch.testing.assert_close(losses["pixel"], 10.0 * pixel_kd_loss(zs, zt))
    torch.testing.assert_close(losses["pair"], 0.5 * pair_wise_loss(fs, ft, 0.5))
    assert d.teacher_feature_paths() == ("classifier", "high")
    assert d.family == "application" and d.task == "segmentation"

    pixel = build_distiller("skd", student, teacher, pair_weight=0.0, mode="code")
    _, losses = pixel(x, y)
    assert list(losses) == ["ce", "pixel"]
    torch.testing.assert_close(losses["pixel"], 10.0 * pixel_kd_loss(zs, zt, mode="code"))
    assert pixel.teacher_feature_paths() == ("classifier",)  # no feature read nor cached
    assert pixel.compute_teacher_outputs(x).features == {}

    cwd = build_distiller("cwd", student, teacher)
    _, losses = cwd(x, y)
    assert list(losses) == ["ce", "cwd"]
    torch.testing.assert_close(losses["cwd"], 3.0 * cwd_loss(zs, zt, 4.0))
    torch.testing.assert_close(losses["ce"], ce)
    on_output = build_distiller("cwd", student, teacher, logits_path="")  # the upsampled map
    with torch.no_grad():
        expected = 3.0 * cwd_loss(student(x)["out"], teacher(x)["out"], 4.0)
    torch.testing.assert_close(on_output(x, y)[1]["cwd"], expected)

    _, losses = build_distiller("seg_scratch", student)(x, y)
    assert list(losses) == ["ce"]
    torch.testing.assert_close(losses["ce"], ce)


class NamedSeg(nn.Module):
    """The same contract with other module names, mapped by ``named_paths`` (as
    :mod:`kdtutor.models.dense` maps the design's ``"high"`` to ``backbone.s3``)."""

    def __init__(self, width: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, stride=4, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, K, 1)
        self.named_paths = {"classifier": "head", "high": "body"}

    def forward(self, x):
        z = self.head(self.body(x))
        return {"out": F.interpolate(z, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def test_paths_resolve_through_named_paths_per_network():
    student, teacher = TinySeg(4, seed=1), NamedSeg(8, seed=2)
    x = torch.rand(2, 3, 32, 32)
    y = torch.randint(0, K, (2, 32, 32))
    d = build_distiller("skd", student, teacher)
    assert d.student_paths == {"": "classifier", "high": "high"}
    assert d.teacher_paths == {"": "head", "high": "body"}
    assert d.teacher_feature_paths() == ("head", "body")
    out = d.compute_teacher_outputs(x)
    assert set(out.features) == {"high"}
    _, losses = d(x, y)
    with torch.no_grad():
        zs, zt = student.classifier(student.high(x)), teacher.head(teacher.body(x))
        fs, ft = student.high(x), teacher.body(x)
    torch.testing.assert_close(losses["pixel"], 10.0 * pixel_kd_loss(zs, zt))
    torch.testing.assert_close(losses["pair"], 0.5 * pair_wise_loss(fs, ft, 0.5))
    with pytest.raises(UnknownNameError, match=r"named_paths: classifier, high"):
        build_distiller("skd", NamedSeg(4, seed=1), teacher, feature_path="low")


def test_depth_kd_adds_the_response_on_log_depth_and_a_hint_through_a_connector():
    student, teacher = TinyDepth(4, seed=1), TinyDepth(8, seed=2)
    x = torch.rand(2, 3, 32, 32)
    y = 4 + 8 * torch.rand(2, 1, 32, 32)
    with torch.no_grad():

        def log_map(net):
            f1 = net.enc["s1"](x)
            return net.head(f1 + F.interpolate(net.enc["s3"](f1), scale_factor=2.0)) + 2.0

        ls, lt = log_map(student), log_map(teacher)
        depth = float(np.abs(np.log(student(x).numpy()) - np.log(y.numpy())).mean())
    assert ls.shape == (2, 1, 16, 16)
    d = build_distiller("depth_kd", student, teacher)
    _, losses = d(x, y)
    assert list(losses) == ["depth", "response"] and d.connector is None
    assert losses["depth"].item() == pytest.approx(depth, rel=1e-5)
    response = float(np.abs(ls.numpy() - lt.numpy()).mean())
    assert losses["response"].item() == pytest.approx(response, rel=1e-5)
    assert d.teacher_feature_paths() == ("head",)

    hinted = build_distiller("depth_kd", student, teacher, hint_weight=2.0)
    assert hinted.connector is not None
    assert [type(m).__name__ for m in hinted.connector] == ["Conv2d", "BatchNorm2d"]
    assert {id(p) for p in hinted.connector.parameters()} <= {
        id(p) for p in hinted.trainable_parameters()
    }
    hinted.eval()  # the connector's batch norm with its running statistics
    _, losses = hinted(x, y)
    assert list(losses) == ["depth", "response", "hint"]
    with torch.no_grad():
        expected = 2.0 * hint_loss(hinted.connector(student.enc["s3"](student.enc["s1"](x))),
                                   teacher.enc["s3"](teacher.enc["s1"](x)))  # fmt: skip
    torch.testing.assert_close(losses["hint"], expected)
    # the hint's spatial sizes follow the batch: 64-px inputs after a 32-px probe
    _, losses = hinted(torch.rand(2, 3, 64, 64), 4 + torch.rand(2, 1, 64, 64))
    assert torch.isfinite(losses["hint"])

    on_output = build_distiller("depth_kd", student, teacher, logits_path="")
    with torch.no_grad():
        expected = (student(x).log() - teacher(x).log()).abs().mean()
    torch.testing.assert_close(on_output(x, y)[1]["response"], expected)
    _, losses = build_distiller("depth_scratch", student)(x, y)
    assert list(losses) == ["depth"] and losses["depth"].item() == pytest.approx(depth, rel=1e-5)


def test_fpd_at_alpha_zero_is_pose_scratch_exactly(data):
    crops = data["keypoints"]
    x, y = first_batch(crops)
    student, teacher = TinyPose(4, seed=1), TinyPose(8, seed=2)
    _, scratch = build_distiller("pose_scratch", student)(x, y)
    fpd0 = build_distiller("fpd", student, teacher, alpha=0.0)
    _, zero = fpd0(x, y)
    assert list(zero) == list(scratch) == ["heatmap"] and fpd0.teacher_forward_calls == 0
    assert torch.equal(zero["heatmap"], scratch["heatmap"])
    _, mixed = build_distiller("fpd", student, teacher, alpha=0.25)(x, y)
    with torch.no_grad():
        expected = fpd_loss(student(x), teacher(x), y["heatmaps"], y["weight"], 0.25)
    torch.testing.assert_close(mixed["heatmap"] + mixed["fpd"], expected)
    _, one = build_distiller("fpd", student, teacher, alpha=1.0)(x, y)
    assert list(one) == ["fpd"]

    # one epoch each from the same weights and batch order: identical students
    s1, s2 = TinyPose(4, seed=3), TinyPose(4, seed=3)
    runs = []
    for d in (build_distiller("pose_scratch", s1), build_distiller("fpd", s2, teacher, alpha=0.0)):
        result = fit(d, crops, None, task="keypoints", epochs=1, batch_size=4, lr=0.5, cache=False)
        runs.append(result.history[0]["losses"])
    assert runs[0] == runs[1]
    assert all(torch.equal(a, b) for a, b in zip(s1.parameters(), s2.parameters(), strict=True))
    assert not torch.equal(s1.head.weight, TinyPose(4, seed=3).head.weight)  # it trained


@pytest.mark.parametrize("label", list(RUNS))
def test_one_fit_epoch_of_each_method_with_its_task_and_the_teacher_cache(data, label):
    d, task = make(label)
    train = data[task]
    teacher = d.teacher is not None
    result = fit(
        d, train, train, task=task, epochs=1, batch_size=4, lr=0.01, cache=True if teacher else False
    )  # fmt: skip
    losses = result.history[0]["losses"]
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    assert result.metric == get_task(task).primary and math.isfinite(result.last_acc)
    if teacher:  # cached: one pass over the 12 samples filled it (or an earlier test's cache
        assert d.teacher_forward_calls <= 1  # of the same teacher served it); no step ran it


@pytest.mark.parametrize("label", [k for k in RUNS if get_method(RUNS[k][0]).requires_teacher])
def test_cached_and_computed_teacher_outputs_give_the_same_first_batch_losses(data, label):
    d, task = make(label)
    train = data[task]
    x, y = first_batch(train)
    d.train()
    _, computed = d(x, y)
    cache = d.cache_teacher(train, mode=True)
    assert cache is not None and len(cache) == N
    calls, hits = d.teacher_forward_calls, cache.hits  # (a cache in memory is shared)
    _, cached = d(x, y, torch.arange(4))
    assert cache.hits == hits + 1 and d.teacher_forward_calls == calls
    assert list(cached) == list(computed)
    for name in computed:
        torch.testing.assert_close(cached[name], computed[name])
    d.teacher_cache = None


# -- refusals --------------------------------------------------------------------------------
def test_hyperparameters_are_validated():
    seg = TinySeg(4, seed=1), TinySeg(8, seed=2)
    depth = TinyDepth(4, seed=1), TinyDepth(8, seed=2)
    pose = TinyPose(4, seed=1), TinyPose(8, seed=2)
    cases = [
        ("skd", seg, {"mode": "mean"}, "'paper'"),
        ("skd", seg, {"pool_scale": 0.0}, r"pool_scale must be in \(0, 1\]"),
        ("skd", seg, {"pool_scale": 1.5}, r"pool_scale must be in \(0, 1\]"),
        ("skd", seg, {"pixel_weight": -1.0}, "pixel_weight must be >= 0"),
        ("skd", seg, {"feature_path": ""}, "needs a feature_path"),
        ("skd", seg, {"lambda_pa": 1.0}, "unknown key 'lambda_pa'"),
        ("cwd", seg, {"tau": 0.0}, "tau must be > 0"),
        ("cwd", seg, {"cwd_weight": -3.0}, "cwd_weight must be >= 0"),
        ("depth_kd", depth, {"connector": "mlp"}, "connector must be one of"),
        ("depth_kd", depth, {"hint_weight": 1.0, "feature_path": ""}, "needs a feature_path"),
        ("depth_kd", depth, {"response_weight": -1.0}, "depth_kd.response_weight must be >= 0"),
        ("fpd", pose, {"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ("fpd", pose, {"alpha": "half"}, "alpha must be float"),
        ("seg_scratch", seg[:1], {"ignore_index": -1}, "ignore_index must be >= 0"),
    ]
    for method, nets, hparams, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_distiller(method, *nets, **hparams)
    build_distiller("skd", *seg, pair_weight=0.0, feature_path="")  # pixel KD reads no feature
    with pytest.raises(KDTutorError, match="needs a teacher"):
        build_distiller("skd", seg[0])


def test_missing_layers_wrong_targets_and_mismatched_maps_are_refused(data):
    student, teacher = TinySeg(4, seed=1), TinySeg(8, seed=2)
    with pytest.raises(UnknownNameError, match=r"feature_path='hihg'.*Did you mean 'high'"):
        build_distiller("skd", student, teacher, feature_path="hihg")
    with pytest.raises(UnknownNameError, match=r"the teacher .*logits_path='0.classifier'"):
        build_distiller("cwd", nn.Sequential(TinySeg(4, 1)), teacher, logits_path="0.classifier")
    with pytest.raises(UnknownNameError, match="logits_path='head'"):
        build_distiller("cwd", student, teacher, logits_path="head")
    with pytest.raises(UnknownNameError, match=r"enc\.s3"):
        build_distiller("depth_kd", TinyDepth(4, 1), TinyPose(8, 2), hint_weight=1.0)

    x = torch.rand(2, 3, 32, 32)
    other = TinySeg(8, seed=2, classes=K + 1)
    with pytest.raises(ShapeMismatchError, match="same classes"):
        build_distiller("cwd", student, other)(x, torch.zeros(2, 32, 32, dtype=torch.long))
    with pytest.raises(ShapeMismatchError, match="do not fit masks"):
        build_distiller("seg_scratch", student)(x, torch.zeros(2, 16, 16, dtype=torch.long))

    crops = data["keypoints"]
    x, y = first_batch(crops)
    for method in ("fpd", "pose_scratch"):
        d = build_distiller(method, TinyPose(4, 1), TinyPose(8, 2) if method == "fpd" else None)
        with pytest.raises(DataFormatError, match="'heatmaps'"):
            d(x, y["keypoints"])
        with pytest.raises(DataFormatError, match=r"keys \['keypoints'\]"):
            d(x, {"keypoints": y["keypoints"]})


def test_the_methods_register_under_their_file_names_with_the_paper_defaults():
    expected = {
        "skd": ("segmentation", {"pixel_weight": 10.0, "pair_weight": 0.5, "pool_scale": 0.5}),
        "cwd": ("segmentation", {"tau": 4.0, "cwd_weight": 3.0}),
        "depth_kd": ("depth", {"response_weight": 1.0, "hint_weight": 0.0}),
        "fpd": ("keypoints", {"alpha": 0.5}),
        "seg_scratch": ("segmentation", {"ignore_index": 255}),
        "depth_scratch": ("depth", {}),
        "pose_scratch": ("keypoints", {"use_target_weight": True}),
    }
    for name, (task, defaults) in expected.items():
        cls = get_method(name)
        assert cls.__module__ == f"kdtutor.methods.{name}" and cls.name == name
        assert cls.task == task and cls.family == "application"
        hp = cls.hparams_cls()
        assert {k: getattr(hp, k) for k in defaults} == defaults
        assert set(cls.loss_weights) <= set(hp.as_dict())
        assert cls.requires_teacher == (not name.endswith("_scratch"))
