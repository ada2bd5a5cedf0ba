"""Chapter 8's second-part distillers (design note applications.md, 3.5-3.8): face
(``face_scratch``, ``face_kd``, ``face_rkd``), super-resolution (``sr_scratch``, ``sr_kd``,
``fakd``), video (``mars``) and lanes (``lane_scratch``, ``sad``, ``lane_kd``).

Each loss is checked against NumPy (or, for the reused RKD losses, against the functions
called directly with the weights), the features each method reads against the stand-in
networks run by hand, one ``fit`` epoch of every method on a few samples of its task's data,
and the refusals of bad hyperparameters and networks. The stand-in networks follow the
documented output contracts: an embedding ``(B, D)``; an SR image 4x the LR input; logits of
a 5-D clip; ``{"out", "exist"}`` for lanes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdtutor.config import ConfigError, from_dict
from kdtutor.data import ArrayDataset
from kdtutor.data.clips import clips_dataset
from kdtutor.data.faces import render_faces
from kdtutor.data.roads import roads_dataset
from kdtutor.data.tasks import sr_pairs
from kdtutor.errors import KDTutorError, ShapeMismatchError, UnknownNameError
from kdtutor.losses.applications import (
    existence_kd_loss,
    fakd_loss,
    sad_attention,
    sad_loss,
    spatial_affinity,
)
from kdtutor.losses.dense import pixel_kd_loss
from kdtutor.losses.relation import rkd_angle_loss, rkd_distance_loss
from kdtutor.methods import build_distiller, get_method
from kdtutor.methods._applications import CosineHead, paths_by_depth, time_steps
from kdtutor.models.common import FeatureAttributeError
from kdtutor.train import fit

torch.set_num_threads(1)

METHODS = (
    "face_scratch",
    "face_kd",
    "face_rkd",
    "sr_scratch",
    "sr_kd",
    "fakd",
    "mars",
    "lane_scratch",
    "sad",
    "lane_kd",
)


# -- stand-in networks with the documented output contracts --------------------------------
class FaceNet(nn.Module):
    """An L2-normalised embedding ``(B, dim)``; ``head`` (a trained teacher's) is not called."""

    def __init__(self, dim: int, width: int = 4, num_ids: int | None = None) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.embed = nn.Linear(width, dim)
        self.named_paths = {"embedding": "embed"}  # before the L2 normalisation
        if num_ids:
            self.head = CosineHead(dim, num_ids, s=16.0)

    def forward(self, x):
        return F.normalize(self.embed(self.trunk(x)), dim=1)


class Block(nn.Module):
    def __init__(self, f: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(f, f, 3, padding=1), nn.ReLU(), nn.Conv2d(f, f, 3, padding=1)
        )

    def forward(self, x):
        return x + self.body(x)


class SRNet(nn.Module):
    """EDSR-like: head, residual blocks (``stage_names``), sub-pixel x4 tail."""

    def __init__(self, feats: int, blocks: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, feats, 3, padding=1)
        self.body = nn.Sequential(*[Block(feats) for _ in range(blocks)])
        self.tail = nn.Sequential(nn.Conv2d(feats, 48, 3, padding=1), nn.PixelShuffle(4))
        self.stage_names = tuple(f"body.{i}" for i in range(blocks))

    def forward(self, x):
        return self.tail(self.body(self.head(x)))

    def blocks(self, x):
        """Every block's output, computed by hand."""
        h, outs = self.head(x), []
        for block in self.body:
            h = block(h)
            outs.append(h)
        return outs


class C3D(nn.Module):
    """A 3D network on all frames of ``(B, T, 3, H, W)``; ``t2`` halves time, ``pool``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU())
        self.t2 = nn.Sequential(nn.Conv3d(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.fc = nn.Linear(6, 10)
        self.num_classes = 10

    def forward(self, x):
        return self.fc(self.pool(self.t2(self.conv1(x.transpose(1, 2)))))


class TimeMean(nn.Module):
    def forward(self, x):
        return x.mean(2)


class TSN(nn.Module):
    """A 2D network on frames 0, 2, 4, 6, a temporal Conv1d, an average over time (``pool``);
    records what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.frame = nn.Sequential(
            nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.temporal = nn.Conv1d(4, 5, 3, padding=1)
        self.pool = TimeMean()
        self.fc = nn.Linear(5, 10)
        self.num_classes = 10
        self.seen: torch.Tensor | None = None

    def frames(self, x):
        frames = x[:, ::2]
        b, t = frames.shape[:2]
        return self.frame(frames.flatten(0, 1)).reshape(b, t, -1).transpose(1, 2)  # (B, C, T)

    def forward(self, x):
        self.seen = x
        return self.fc(self.pool(torch.relu(self.temporal(self.frames(x)))))


class LaneNet(nn.Module):
    """Stages at /2, /4, /8, /16 (``stage_names``), slot logits at /2 (``classifier``)
    upsampled x2 to ``out``, existence from the pooled bottleneck."""

    def __init__(self, w=(3, 4, 5, 6), logits_path: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 2, 1), nn.ReLU())
        self.s1 = nn.Sequential(nn.Conv2d(w[0], w[1], 3, 2, 1), nn.ReLU())
        self.s2 = nn.Sequential(nn.Conv2d(w[1], w[2], 3, 2, 1), nn.ReLU())
        self.s3 = nn.Sequential(nn.Conv2d(w[2], w[3], 3, 2, 1), nn.ReLU())
        self.lateral = nn.Conv2d(w[3], w[0], 1)
        self.classifier = nn.Conv2d(w[0], 5, 1)
        self.exist = nn.Linear(w[3], 4)
        self.stage_names = ("stem", "s1", "s2", "s3")
        if logits_path:
            self.logits_path = "classifier"

    def parts(self, x):
        a = self.stem(x)
        b = self.s1(a)
        c = self.s2(b)
        d = self.s3(c)
        up = F.interpolate(self.lateral(d), size=a.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(a + up)
        out = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {
            "stages": (a, b, c, d),
            "logits": logits,
            "out": out,
            "exist": self.exist(d.mean((2, 3))),
        }

    def forward(self, x):
        p = self.parts(x)
        return {"out": p["out"], "exist": p["exist"]}


def terms(distiller, x, y):
    """The distiller's outputs and its losses as floats."""
    out, losses = distiller(x, y)
    return out, {k: float(v.detach()) for k, v in losses.items()}


def seeded(make, seed: int):
    torch.manual_seed(seed)
    return make()


# -- NumPy references ----------------------------------------------------------------------
def np_(t) -> np.ndarray:
    return t.detach().double().numpy()


def np_cosine_logits(e, w, s):
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return s * e @ w.T


def np_log_softmax(z, axis=1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_ce(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y].mean()


def np_kd(zs, zt, T):
    ls, lt = np_log_softmax(zs / T), np_log_softmax(zt / T)
    return T * T * (np.exp(lt) * (lt - ls)).sum(1).mean()


def np_sa(f, eps=1e-7):
    """Spatial affinity by explicit loops over positions."""
    b, c, h, w = f.shape
    flat = f.reshape(b, c, h * w)
    out = np.zeros((b, h * w, h * w))
    for n in range(b):
        for i in range(h * w):
            for j in range(h * w):
                fi, fj = flat[n, :, i], flat[n, :, j]
                out[n, i, j] = fi @ fj / ((np.sqrt(fi @ fi) + eps) * (np.sqrt(fj @ fj) + eps))
    return out


def np_bilinear(a, out_h, out_w):
    """Bilinear resize of a (H, W) map with half-pixel centres (align_corners=False)."""

    def axis(out, size):
        src = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), size - 1)
        i1 = np.minimum(i0 + 1, size - 1)
        return i0, i1, src - i0

    y0, y1, ly = axis(out_h, a.shape[0])
    x0, x1, lx = axis(out_w, a.shape[1])
    top = a[y0][:, x0] * (1 - lx) + a[y0][:, x1] * lx
    bottom = a[y1][:, x0] * (1 - lx) + a[y1][:, x1] * lx
    return top * (1 - ly)[:, None] + bottom * ly[:, None]


def np_sad_map(f, size):
    """sum_c A_c^2 -> bilinear -> softmax over positions, one sample at a time."""
    out = []
    for sample in f:
        a = np_bilinear((sample**2).sum(0), *size).reshape(-1)
        e = np.exp(a - a.max())
        out.append((e / e.sum()).reshape(size))
    return np.stack(out)


def np_bce_logits(z, target):
    p = 1 / (1 + np.exp(-z))
    return -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean()


def np_lane_ce(logits, mask, background_weight):
    """Weighted pixel cross entropy: sum w_y (-log p_y) / sum w_y."""
    logp = np_log_softmax(logits, axis=1)
    b, h, w = mask.shape
    num = den = 0.0
    for n in range(b):
        for i in range(h):
            for j in range(w):
                k = mask[n, i, j]
                wk = background_weight if k == 0 else 1.0
                num += -wk * logp[n, k, i, j]
                den += wk
    return num / den


# -- face ----------------------------------------------------------------------------------
def test_the_cosine_head_and_the_normalised_softmax_match_numpy():
    torch.manual_seed(0)
    head = CosineHead(6, 5, s=16.0)
    e = torch.randn(7, 6)
    assert np.allclose(np_(head(e)), np_cosine_logits(np_(e), np_(head.weight), 16.0), atol=1e-5)
    assert float(head(e).detach().abs().max()) <= 16.0 + 1e-4
    d = build_distiller("face_scratch", seeded(lambda: FaceNet(6), 1), num_ids=5, s=10.0)
    x, y = torch.randn(7, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0, 1])
    out, losses = terms(d, x, y)
    assert set(losses) == {"ce"} and out.shape == (7, 6)
    assert torch.equal(out, d.student(x))  # the deployed output: the embedding
    logits = np_cosine_logits(np_(d.student(x)), np_(d.head.weight), 10.0)
    assert losses["ce"] == pytest.approx(np_ce(logits, y.numpy()), abs=1e-5)
    assert not any(n.startswith("head") for n, _ in d.student.named_parameters())
    assert any(p is d.head.weight for p in d.trainable_parameters())


def test_face_kd_terms_match_numpy():
    student = seeded(lambda: FaceNet(4, width=3), 2)
    teacher = seeded(lambda: FaceNet(6, width=5, num_ids=5), 3)
    d = build_distiller(
        "face_kd", student, teacher, num_ids=5, ce_weight=0.5, kd_weight=0.7, emb_weight=0.3, T=2.0
    )
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 4])
    _, losses = terms(d, x, y)
    assert set(losses) == {"ce", "kd", "emb"}
    e_s, e_t = np_(student(x)), np_(teacher(x))
    z_s = np_cosine_logits(e_s, np_(d.head.weight), 16.0)
    z_t = np_cosine_logits(e_t, np_(teacher.head.weight), 16.0)
    assert losses["ce"] == pytest.approx(0.5 * np_ce(z_s, y.numpy()), abs=1e-5)
    assert losses["kd"] == pytest.approx(0.7 * np_kd(z_s, z_t, 2.0), abs=1e-5)
    linear = d.connector[0]
    mapped = e_s @ np_(linear.weight).T + np_(linear.bias)
    cos = (mapped * e_t).sum(1) / np.linalg.norm(mapped, axis=1) / np.linalg.norm(e_t, axis=1)
    assert losses["emb"] == pytest.approx(0.3 * (1 - cos).mean(), abs=1e-5)
    # the teacher's outputs the cache would keep: its head's logits and its embedding
    cached = d.compute_teacher_outputs(x)
    assert np.allclose(np_(cached.logits), z_t, atol=1e-5)
    assert np.allclose(np_(cached.features["embedding"]), e_t, atol=1e-6)


def test_face_kd_without_kd_needs_no_teacher_head_and_refuses_a_missing_one():
    student, bare = FaceNet(4), FaceNet(6)
    d = build_distiller("face_kd", student, bare, num_ids=5, kd_weight=0.0)
    _, losses = d(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"ce", "emb"}
    with pytest.raises(KDTutorError, match="identity head"):
        build_distiller("face_kd", FaceNet(4), FaceNet(6), num_ids=5)
    with pytest.raises(ShapeMismatchError, match="num_ids=7"):
        build_distiller("face_kd", FaceNet(4), FaceNet(6, num_ids=7), num_ids=5)


def test_face_rkd_weights_reach_the_reused_rkd_losses_on_the_chosen_embedding():
    assert get_method("face_rkd").hparams_cls().distance_weight == 1.0
    assert get_method("face_rkd").hparams_cls().angle_weight == 2.0
    student = seeded(lambda: FaceNet(4, width=3), 4)
    teacher = seeded(lambda: FaceNet(6, width=5), 5)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 3
    # student_path: the embedding before the L2 normalisation (RKD's recipe)
    d = build_distiller(
        "face_rkd", student, teacher, distance_weight=1.5, angle_weight=2.5, student_path="embed"
    )
    _, losses = terms(d, x, y)
    assert set(losses) == {"rkd_distance", "rkd_angle"}  # no label term
    with torch.no_grad():
        raw, t = student.embed(student.trunk(x)), teacher(x)
    assert losses["rkd_distance"] == pytest.approx(1.5 * float(rkd_distance_loss(raw, t)))
    assert losses["rkd_angle"] == pytest.approx(2.5 * float(rkd_angle_loss(raw, t)))
    normalised = F.normalize(raw, dim=1)
    assert float(rkd_angle_loss(normalised, t)) != pytest.approx(float(rkd_angle_loss(raw, t)))
    assert d.head is None
    # by default RKD reads the embedding the student names (unnormalised), the others its output
    assert build_distiller("face_rkd", student, teacher).student_path == "embed"
    assert build_distiller("face_scratch", student).student_path == ""
    output = build_distiller("face_rkd", student, teacher, student_path="trunk.3", num_ids=3)
    assert output.student_dim == 3
    with_ce = build_distiller("face_rkd", student, teacher, ce_weight=0.2, num_ids=3)
    assert set(with_ce(x, y)[1]) == {"rkd_distance", "rkd_angle", "ce"}


# -- super-resolution ----------------------------------------------------------------------
def test_spatial_affinity_matches_numpy_loops_and_ignores_the_width():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 3, 4)
    f[0, :, 0, 0] = 0.0  # a zero position: eps keeps it finite
    assert np.allclose(np_(spatial_affinity(f)), np_sa(np_(f)), atol=1e-6)
    wide = torch.cat([f, torch.zeros(2, 5, 3, 4)], 1)  # extra zero channels: same affinities
    assert torch.allclose(spatial_affinity(wide), spatial_affinity(f))
    s = [torch.randn(2, 3, 3, 4), torch.randn(2, 2, 2, 2)]
    t = [torch.randn(2, 5, 3, 4), torch.randn(2, 7, 2, 2)]
    expected = sum(np.abs(np_sa(np_(a)) - np_sa(np_(b))).mean() for a, b in zip(s, t, strict=True))
    assert float(fakd_loss(s, t)) == pytest.approx(expected, abs=1e-6)


def test_the_three_sr_losses_match_numpy():
    torch.manual_seed(0)
    student, teacher = seeded(lambda: SRNet(3, 4), 6), seeded(lambda: SRNet(5, 6), 7)
    x, hr = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16)
    s_np, hr_np = np_(student(x)), np_(hr)
    with torch.no_grad():
        t_np = np_(teacher(x))
    _, scratch = terms(build_distiller("sr_scratch", student), x, hr)
    assert scratch["l1"] == pytest.approx(np.abs(s_np - hr_np).mean(), abs=1e-6)
    _, kd = terms(build_distiller("sr_kd", student, teacher, alpha=0.3), x, hr)
    assert kd["l1"] == pytest.approx(0.7 * np.abs(s_np - hr_np).mean(), abs=1e-6)
    assert kd["ts"] == pytest.approx(0.3 * np.abs(s_np - t_np).mean(), abs=1e-6)
    d = build_distiller("fakd", student, teacher, beta=4.0, input_shape=(3, 4, 4))
    # relative depths 1/3, 2/3, 1: blocks 1, 3, 4 of the student, 2, 4, 6 of the teacher
    assert d.student_paths == ("body.0", "body.2", "body.3")
    assert d.teacher_paths == ("body.1", "body.3", "body.5")
    _, fa = terms(d, x, hr)
    assert set(fa) == {"l1", "ts", "fa"} and fa["ts"] == pytest.approx(
        0.5 * np.abs(s_np - t_np).mean(), abs=1e-6
    )
    sb, tb = student.blocks(x), teacher.blocks(x)
    expected = sum(
        np.abs(np_sa(np_(sb[i])) - np_sa(np_(tb[j]))).mean() for i, j in ((0, 1), (2, 3), (3, 5))
    )
    assert fa["fa"] == pytest.approx(4.0 * expected, abs=1e-5)
    cached = d.compute_teacher_outputs(x)
    assert set(cached.features) == set(d.teacher_paths)
    assert torch.allclose(cached.features["body.3"], tb[3].detach())


def test_paths_by_depth():
    names = [f"b{i}" for i in range(1, 9)]
    assert paths_by_depth(names[:6], 3) == ("b2", "b4", "b6")
    assert paths_by_depth(names[:4], 3) == ("b1", "b3", "b4")
    assert paths_by_depth(names[:3], 3) == ("b1", "b2", "b3")
    with pytest.raises(ConfigError):
        paths_by_depth(names[:2], 3)


# -- video ---------------------------------------------------------------------------------
def test_mars_terms_match_numpy_and_the_student_reads_the_whole_clip():
    student, teacher = seeded(TSN, 8), seeded(C3D, 9)
    d = build_distiller(
        "mars", student, teacher, temporal=True, student_time_path="temporal:input",
        temporal_alpha=3.0,
    )  # fmt: skip
    assert get_method("mars").hparams_cls().alpha == 50.0
    x, y = torch.rand(3, 8, 3, 16, 16), torch.tensor([1, 5, 9])
    logits, losses = terms(d, x, y)
    assert set(losses) == {"ce", "mars", "mars_time"}
    assert student.seen is x and logits.shape == (3, 10)
    frames = student.frames(x)  # (B, C, T) of frames 0, 2, 4, 6
    f_s = np_(student.pool(torch.relu(student.temporal(frames))))
    with torch.no_grad():
        t2 = teacher.t2(teacher.conv1(x.transpose(1, 2)))
    f_t = np_(teacher.pool(t2))
    p = d.connector[0]
    mapped = f_s @ np_(p.weight).T + np_(p.bias)
    assert losses["mars"] == pytest.approx(50.0 * ((mapped - f_t) ** 2).mean(), rel=1e-5)
    g_s = np_(frames).transpose(0, 2, 1)  # (B, T, C)
    g_t = np_(t2).mean(axis=(3, 4)).transpose(0, 2, 1)
    q = d.time_connector[0]
    mapped_t = g_s @ np_(q.weight).T + np_(q.bias)
    assert g_t.shape == (3, 4, 6)
    assert losses["mars_time"] == pytest.approx(3.0 * ((mapped_t - g_t) ** 2).mean(), rel=1e-5)
    assert losses["ce"] == pytest.approx(np_ce(np_(logits), y.numpy()), abs=1e-5)
    student.named_paths = {"frames": "temporal:input"}  # as kdtutor.models.dense's tsn_s
    named = build_distiller("mars", student, teacher, temporal=True)
    assert named.student_paths == ["pool", "temporal:input"]
    assert named.teacher_paths == ["pool", "t2"]
    kd = build_distiller("mars", student, teacher, kd_weight=0.5)
    assert set(kd(x, y)[1]) == {"ce", "mars", "kd"}


def test_time_steps_reads_every_layout():
    torch.manual_seed(0)
    g = torch.randn(2, 4, 3)  # (B, T, C)
    assert torch.equal(time_steps(g.transpose(1, 2), 2), g)
    assert torch.equal(time_steps(g.reshape(8, 3), 2), g)
    maps = torch.randn(2, 3, 4, 2, 2)
    assert torch.allclose(time_steps(maps, 2), maps.mean((3, 4)).transpose(1, 2))
    frames = torch.randn(8, 3, 2, 2)
    assert torch.allclose(time_steps(frames, 2), frames.mean((2, 3)).reshape(2, 4, 3))
    with pytest.raises(ShapeMismatchError):
        time_steps(torch.randn(3, 5), 2)


# -- lanes ---------------------------------------------------------------------------------
def test_sad_maps_and_loss_match_numpy():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 4, 6)
    maps = sad_attention(f, (8, 12))
    assert np.allclose(np_(maps), np_sad_map(np_(f), (8, 12)), atol=1e-6)
    assert torch.allclose(maps.sum((1, 2)), torch.ones(2))
    feats = [torch.randn(2, 3, 8, 12, requires_grad=True), torch.randn(2, 4, 4, 6),
             torch.randn(2, 5, 2, 3, requires_grad=True)]  # fmt: skip
    m = [np_sad_map(np_(t), (8, 12)) for t in feats]
    expected = ((m[0] - m[1]) ** 2).mean() + ((m[1] - m[2]) ** 2).mean()
    loss = sad_loss(feats)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert feats[0].grad is not None and feats[0].grad.abs().sum() > 0
    assert feats[2].grad is None  # the deepest map is only ever a (detached) target


def test_lane_scratch_and_sad_terms_match_numpy():
    student = seeded(LaneNet, 10)
    x = torch.rand(2, 3, 16, 32)
    mask = torch.randint(0, 5, (2, 16, 32))
    y = {"mask": mask, "exist": torch.tensor([[1.0, 0, 1, 1], [0, 0, 1, 0]])}
    _, losses = terms(build_distiller("lane_scratch", student, background_weight=0.4), x, y)
    p = student.parts(x)
    assert losses["ce"] == pytest.approx(np_lane_ce(np_(p["out"]), mask.numpy(), 0.4), rel=1e-5)
    bce = np_bce_logits(np_(p["exist"]), y["exist"].numpy())
    assert losses["exist"] == pytest.approx(0.1 * bce, rel=1e-5)
    d = build_distiller("sad", student, sad_start=2)
    assert d.sad_paths == ("s1", "s2", "s3")  # the last three stages: /4, /8, /16
    d.on_epoch_start(1, 4)
    assert terms(d, x, y)[1]["sad"] == 0.0
    d.on_epoch_start(2, 4)
    _, losses = terms(d, x, y)
    maps = [np_sad_map(np_(s), (4, 8)) for s in p["stages"][1:]]  # common size: s1's (/4)
    expected = ((maps[0] - maps[1]) ** 2).mean() + ((maps[1] - maps[2]) ** 2).mean()
    assert losses["sad"] == pytest.approx(0.1 * expected, rel=1e-5)
    assert get_method("sad").scaled_hparams(10) == {"sad_start": 6}


def test_lane_kd_terms_match_numpy():
    student, teacher = seeded(LaneNet, 11), seeded(lambda: LaneNet((4, 5, 6, 7)), 12)
    x = torch.rand(2, 3, 16, 32)
    y = {
        "mask": torch.randint(0, 5, (2, 16, 32)),
        "exist": torch.tensor([[1.0, 0, 1, 1], [0, 0, 1, 0]]),
    }
    d = build_distiller("lane_kd", student, teacher, kd_weight=0.6, exist_kd_weight=0.2, T=2.0)
    _, losses = terms(d, x, y)
    assert set(losses) == {"ce", "exist", "kd", "exist_kd"}
    with torch.no_grad():
        ps, pt = student.parts(x), teacher.parts(x)
    zs = np_(ps["logits"]).transpose(0, 2, 3, 1).reshape(-1, 5)  # the /2 maps, one row a pixel
    zt = np_(pt["logits"]).transpose(0, 2, 3, 1).reshape(-1, 5)
    assert losses["kd"] == pytest.approx(0.6 * np_kd(zs, zt, 2.0), rel=1e-5)
    target = 1 / (1 + np.exp(-np_(pt["exist"])))
    assert losses["exist_kd"] == pytest.approx(
        0.2 * np_bce_logits(np_(ps["exist"]), target), rel=1e-5
    )
    cached = d.compute_teacher_outputs(x)
    assert cached.logits.shape == (2, 5, 8, 16) and set(cached.features) == {"exist"}
    # a student read at full resolution, a teacher's /2 map resized to it (bilinear)
    full = build_distiller("lane_kd", seeded(lambda: LaneNet(logits_path=False), 11), teacher)
    _, losses = terms(full, x, y)
    zt_full = np.stack([[np_bilinear(c, 16, 32) for c in sample] for sample in np_(pt["logits"])])
    expected = np_kd(np_(ps["out"]).transpose(0, 2, 3, 1).reshape(-1, 5),
                     zt_full.transpose(0, 2, 3, 1).reshape(-1, 5), 1.0)  # fmt: skip
    assert losses["kd"] == pytest.approx(expected, rel=1e-5)
    assert float(pixel_kd_loss(ps["logits"], pt["logits"], 2.0)) == pytest.approx(
        np_kd(zs, zt, 2.0), rel=1e-5
    )
    assert float(existence_kd_loss(ps["exist"], pt["exist"])) == pytest.approx(
        np_bce_logits(np_(ps["exist"]), target), rel=1e-5
    )


# -- one epoch of each method through fit ---------------------------------------------------
@pytest.fixture(scope="module")
def faces():
    ids, samples = np.repeat(np.arange(6), 3), np.tile(np.arange(3), 6)
    classes = [f"id{i}" for i in range(6)]
    train = ArrayDataset(
        torch.from_numpy(render_faces(ids, samples)), torch.from_numpy(ids), classes, name="faces"
    )
    test = ArrayDataset(
        torch.from_numpy(render_faces(ids + 1100, samples)), torch.from_numpy(ids), classes,
        name="faces", split="test", mean=train.mean, std=train.std,
    )  # fmt: skip
    return train, test


def _run(method, faces):
    if method.startswith("face"):
        teacher = None if method == "face_scratch" else seeded(lambda: FaceNet(6, 5, num_ids=6), 1)
        d = build_distiller(method, seeded(lambda: FaceNet(4), 0), teacher, num_ids=6)
        return d, faces, {"task": "retrieval", "batch_size": 6}
    if method in ("sr_scratch", "sr_kd", "fakd"):
        teacher = None if method == "sr_scratch" else seeded(lambda: SRNet(5, 6), 1)
        d = build_distiller(method, seeded(lambda: SRNet(3, 4), 0), teacher, input_shape=(3, 8, 8))
        data = (
            sr_pairs("train", 6, hr_size=32, cache=False),
            sr_pairs("test", 4, hr_size=32, cache=False),
        )
        return d, data, {"task": "superres", "batch_size": 3, "optimizer": "adam", "lr": 1e-3}
    if method == "mars":
        d = build_distiller("mars", seeded(TSN, 0), seeded(C3D, 1), temporal=True,
                            student_time_path="temporal:input")  # fmt: skip
        data = clips_dataset("train", 10, cache=False), clips_dataset("test", 10, cache=False)
        return d, data, {"task": "classification", "batch_size": 5}
    teacher = seeded(lambda: LaneNet((4, 5, 6, 7)), 1) if method == "lane_kd" else None
    extra = {"sad_start": 0} if method == "sad" else {}
    if method == "lane_kd":
        extra = {"sad_weight": 0.1, "sad_start": 0}
    d = build_distiller(method, seeded(LaneNet, 0), teacher, **extra)
    data = roads_dataset("train", 6, cache=False), roads_dataset("test", 4, cache=False)
    return d, data, {"task": "lanes", "batch_size": 3}


@pytest.mark.parametrize("method", METHODS)
def test_one_epoch_of_each_method_trains_with_finite_losses(method, faces):
    d, (train, test), options = _run(method, faces)
    assert get_method(method) is type(d) and d.name == method
    result = fit(d, train, test, epochs=1, **options)
    record = result.history[-1]
    assert record["losses"] and all(np.isfinite(v) for v in record["losses"].values())
    assert np.isfinite(record["loss"]) and np.isfinite(result.last_acc)
    if options["task"] == "classification":  # the clips: test accuracy, as any classifier
        assert "test_acc" in record
    else:
        primary = {"retrieval": "recall1", "superres": "psnr_y", "lanes": "f1"}[options["task"]]
        assert primary in record["test"]["student"]


def test_the_teacher_runs_only_to_fill_the_cache(faces):
    _, (train, _), options = _run("fakd", faces)
    teacher = seeded(lambda: SRNet(5, 6), 99)  # a teacher no other test has cached
    d = build_distiller("fakd", seeded(lambda: SRNet(3, 4), 0), teacher, input_shape=(3, 8, 8))
    fit(d, train, None, epochs=2, cache=True, **options)
    assert d.teacher_forward_calls == 1  # one pass over 6 samples, no step runs the teacher
    kd, rkd = _run("face_kd", faces)[0], _run("face_rkd", faces)[0]
    assert kd.teacher_feature_paths() != rkd.teacher_feature_paths()  # never one cache


# -- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "hparams", "match"),
    [
        ("sr_kd", {"alpha": 1.5}, "alpha"),
        ("fakd", {"student_paths": ("body.0",)}, "pair up"),
        ("fakd", {"beta": -1.0}, "beta"),
        ("face_scratch", {"num_ids": 0}, "num_ids"),
        ("face_kd", {"s": 0.0}, "scale"),
        ("face_kd", {"connector": "conv3"}, "connector"),
        ("face_rkd", {"angle_weight": -2.0}, "angle_weight"),
        ("mars", {"alpha": -1.0}, "alpha"),
        ("sad", {"sad_paths": ("s1",)}, "two blocks"),
        ("sad", {"sad_start": -1}, "sad_start"),
        ("lane_kd", {"T": 0.0}, "T"),
        ("lane_scratch", {"background_weight": -0.4}, "background_weight"),
        ("lane_kd", {"tau": 1.0}, "tau"),
    ],
)
def test_bad_hyperparameters_are_refused(method, hparams, match):
    cls = get_method(method)
    with pytest.raises(ConfigError, match=match):
        from_dict(cls.hparams_cls, hparams, what=f"method {method!r}").validate()


def test_networks_without_what_a_method_reads_are_refused(faces):
    with pytest.raises(UnknownNameError, match="student_path"):
        build_distiller("face_scratch", FaceNet(4), student_path="nope")
    with pytest.raises(FeatureAttributeError, match="student_paths"):
        build_distiller(
            "fakd",
            nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.PixelShuffle(4)),
            SRNet(3, 3),
            input_shape=(3, 8, 8),
        )
    with pytest.raises(ShapeMismatchError, match="same resolution"):
        build_distiller(
            "fakd",
            SRNet(3, 2),
            SRNet(3, 2),
            student_paths=("head",),
            teacher_paths=("tail.1",),
            input_shape=(3, 8, 8),
        )
    with pytest.raises(UnknownNameError, match="student_path"):
        build_distiller("mars", TSN(), C3D(), student_path="pooling")
    with pytest.raises(ConfigError, match="student_time_path"):
        build_distiller("mars", TSN(), C3D(), temporal=True)  # no path, none named
    with pytest.raises(ShapeMismatchError, match="time steps"):
        build_distiller(
            "mars",
            TSN(),
            C3D(),
            temporal=True,
            student_time_path="temporal:input",
            teacher_time_path="conv1",
        )
    with pytest.raises(FeatureAttributeError, match="sad_paths"):
        build_distiller("sad", nn.Conv2d(3, 5, 1))
    with pytest.raises(ShapeMismatchError, match="embedding"):
        build_distiller("face_scratch", nn.Conv2d(3, 4, 3))
    with pytest.raises(ShapeMismatchError, match="'out'"):
        build_distiller("lane_scratch", nn.Conv2d(3, 5, 1))(
            torch.rand(1, 3, 8, 8),
            {"mask": torch.zeros(1, 8, 8, dtype=torch.long), "exist": torch.zeros(1, 4)},
        )
    train, test = faces
    with pytest.raises(ShapeMismatchError, match="num_ids=6"):
        fit(
            build_distiller("face_scratch", FaceNet(4), num_ids=4),
            train,
            test,
            epochs=1,
            task="retrieval",
        )
    assert all(
        issubclass(e, KDTutorError)
        for e in (ConfigError, UnknownNameError, ShapeMismatchError, FeatureAttributeError)
    )
