"""The dense tasks of chapter 8 (``depth``, ``superres``, ``keypoints``) against direct
computations: numpy loops over images and pixels, planted heatmap peaks, hand-made cases.

The task modules are imported inside the tests, and the task registry is restored after
each one: importing a module registers its task, and the package doctest of
``kdtutor.tasks`` lists the registered tasks (it must not depend on the order tests run in).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from kdtutor.errors import ShapeMismatchError
from kdtutor.tasks import base, get_task

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_task_registry():
    saved = dict(base._TASKS)
    yield
    base._TASKS.clear()
    base._TASKS.update(saved)


def feed(task, pairs):
    """Score (outputs, targets) batches with a task, as the trainer's evaluation does."""
    metrics = task.metrics()
    for outputs, y in pairs:
        task.update(metrics, outputs, y)
    return task.compute(metrics)


@pytest.mark.parametrize(
    ("module", "cls", "primary", "higher"),
    [
        ("depth", "Depth", "absrel", False),
        ("superres", "SuperResolution", "psnr_y", True),
        ("keypoints", "Keypoints", "pck02", True),
    ],
)
def test_the_dense_tasks_register_under_their_names(module, cls, primary, higher):
    mod = importlib.reload(importlib.import_module(f"kdtutor.tasks.{module}"))
    task = get_task(module)
    assert type(task) is getattr(mod, cls)
    assert task.primary == primary and task.primary in task.metric_names
    assert task.higher_is_better is higher
    assert set(mod.__all__) <= set(dir(mod))


# --- depth -----------------------------------------------------------------------------------


def depth_batches(seed: int = 0):
    """7 depth maps in batches of 3 and 4, each image with its own error level."""
    gen = torch.Generator().manual_seed(seed)
    target = 4 + 8 * torch.rand(7, 1, 12, 16, generator=gen)
    level = torch.tensor([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8]).reshape(7, 1, 1, 1)
    pred = target * torch.exp(level * torch.randn(7, 1, 12, 16, generator=gen))
    return pred, target, [(pred[:3], target[:3]), (pred[3:], target[3:])]


def test_depth_metrics_equal_a_loop_over_images_and_pixels():
    from kdtutor.tasks.depth import Depth

    pred, target, batches = depth_batches()
    scores = feed(Depth(), batches)
    p, t = pred.double().numpy(), target.double().numpy()
    absrel, n, rmses, close = 0.0, 0, [], 0
    for i in range(len(p)):
        sq = 0.0
        for d_hat, d in zip(p[i].ravel(), t[i].ravel(), strict=True):
            absrel += abs(d_hat - d) / d
            sq += (d_hat - d) ** 2
            close += max(d_hat / d, d / d_hat) < 1.25
            n += 1
        rmses.append(math.sqrt(sq / p[i].size))
    assert scores["absrel"] == pytest.approx(absrel / n, rel=1e-9)
    assert scores["rmse"] == pytest.approx(np.mean(rmses), rel=1e-9)
    assert scores["delta1"] == pytest.approx(close / n, rel=1e-12)
    assert 0.0 < scores["delta1"] < 1.0  # the case is not degenerate
    # the per-image RMSE is not torchmetrics' pooled one on this split
    pooled = math.sqrt(float(((pred.double() - target.double()) ** 2).mean()))
    assert abs(scores["rmse"] - pooled) > 0.05


def test_depth_absrel_is_torchmetrics_mape_and_delta_boundaries():
    from torchmetrics import MeanAbsolutePercentageError

    from kdtutor.tasks.depth import Depth, delta_accuracy

    pred, target, batches = depth_batches(1)
    mape = MeanAbsolutePercentageError()
    mape.update(pred.flatten(), target.flatten())
    assert feed(Depth(), batches)["absrel"] == pytest.approx(float(mape.compute()), rel=1e-6)
    t = torch.full((5,), 8.0)
    p = torch.tensor([8.0, 9.9, 10.0, 6.5, -1.0])  # ratios 1, 1.2375, 1.25 (not <), 1.23, <= 0
    assert delta_accuracy(p, t).tolist() == [True, True, False, True, False]


def test_depth_skips_pixels_without_depth_and_checks_shapes():
    from kdtutor.tasks.depth import Depth

    target = torch.full((2, 1, 4, 4), 5.0)
    target[0, 0, 0, :] = 0.0  # no depth on one row of the first image
    pred = torch.full((2, 1, 4, 4), 6.0)
    pred[0, 0, 0, :] = 100.0  # ignored
    scores = feed(Depth(), [(pred, target)])
    assert scores == pytest.approx({"absrel": 0.2, "rmse": 1.0, "delta1": 1.0})
    assert feed(Depth(), [(pred[:, 0], target)]) == pytest.approx(scores)  # (B, H, W) output
    with pytest.raises(ShapeMismatchError, match="one depth per pixel"):
        feed(Depth(), [(pred[:, :, :2], target)])


def test_depth_runs_through_evaluation_and_picks_the_lowest_epoch():
    from kdtutor.tasks.depth import Depth
    from kdtutor.train.config import TrainConfig
    from kdtutor.train.evaluation import evaluate_networks
    from kdtutor.train.loop import _summarize

    pred, target, _ = depth_batches(2)
    data = torch.utils.data.TensorDataset(pred, target)
    scores = evaluate_networks(nn.Identity(), data, task=Depth(), batch_size=3, device="cpu")
    assert scores["model"] == pytest.approx(feed(Depth(), [(pred, target)]), rel=1e-9)
    history = [
        {"epoch": e + 1, "test_absrel": v, "seconds": 1.0} for e, v in enumerate([0.3, 0.1, 0.2])
    ]
    result = _summarize("depth_scratch", history, TrainConfig(), Depth())
    assert result.best_epoch == 2 and result.best_acc == 0.1 and result.metric == "absrel"


# --- super-resolution ------------------------------------------------------------------------


def sr_batches(seed: int = 0):
    """6 HR images (8-bit levels) and outputs with per-image noise levels, out of range in
    places (quantisation clamps them)."""
    gen = torch.Generator().manual_seed(seed)
    hr = torch.randint(0, 256, (6, 3, 24, 20), generator=gen).float() / 255
    noise = torch.tensor([0.01, 0.02, 0.05, 0.1, 0.2, 0.3]).reshape(6, 1, 1, 1)
    sr = hr + noise * torch.randn(6, 3, 24, 20, generator=gen)
    return sr, hr, [(sr[:4], hr[:4]), (sr[4:], hr[4:])]


def numpy_y(image: np.ndarray) -> np.ndarray:
    """Y of one (3, H, W) image in [0, 1], pixel by pixel (BT.601, EDSR's coefficients)."""
    out = np.empty(image.shape[1:])
    for r in range(image.shape[1]):
        for c in range(image.shape[2]):
            red, green, blue = image[:, r, c]
            out[r, c] = (65.738 * red + 129.057 * green + 25.064 * blue) / 256 + 16 / 255
    return out


def test_superres_psnr_is_the_mean_of_per_image_psnrs_on_shaved_y():
    from torchmetrics.functional.image import structural_similarity_index_measure

    from kdtutor.tasks.superres import SuperResolution

    sr, hr, batches = sr_batches()
    scale = 3
    scores = feed(SuperResolution(scale=scale), batches)
    psnr_y, psnr_rgb, ys_sr, ys_hr = [], [], [], []
    for s, h in zip(sr.double().numpy(), hr.double().numpy(), strict=True):
        s = np.round(np.clip(s, 0, 1) * 255) / 255  # EDSR's quantize
        y_s, y_h = numpy_y(s)[scale:-scale, scale:-scale], numpy_y(h)[scale:-scale, scale:-scale]
        psnr_y.append(10 * math.log10(1.0 / np.mean((y_s - y_h) ** 2)))
        diff = s[:, scale:-scale, scale:-scale] - h[:, scale:-scale, scale:-scale]
        psnr_rgb.append(10 * math.log10(1.0 / np.mean(diff**2)))
        ys_sr.append(y_s)
        ys_hr.append(y_h)
    # torchmetrics multiplies by 10 / ln(10) taken in float32: equal to 1e-7 relative
    assert scores["psnr_y"] == pytest.approx(np.mean(psnr_y), rel=1e-6)
    assert scores["psnr"] == pytest.approx(np.mean(psnr_rgb), rel=1e-6)
    ssim = structural_similarity_index_measure(
        torch.tensor(np.stack(ys_sr))[:, None],
        torch.tensor(np.stack(ys_hr))[:, None],
        data_range=1.0,
    )
    assert scores["ssim_y"] == pytest.approx(float(ssim), abs=1e-6)  # the task's is float32
    assert 0.0 < scores["ssim_y"] < 1.0 and scores["psnr_y"] > scores["psnr"]  # Y is narrower


def test_superres_per_image_mean_differs_from_the_pooled_psnr():
    from kdtutor.tasks import Regression
    from kdtutor.tasks.superres import SuperResolution

    sr, hr, batches = sr_batches(1)
    per_image = feed(SuperResolution(scale=0, quantize=False), batches)["psnr"]
    pooled = feed(Regression(), batches)["psnr"]
    mse = ((sr - hr) ** 2).double().flatten(1).mean(1)
    assert per_image == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-6)
    assert pooled == pytest.approx(float(10 * torch.log10(1 / mse.mean())), abs=1e-4)
    assert per_image - pooled > 1.0


def test_y_conversion_matches_matlab_rgb2ycbcr_and_shave_and_quantize():
    from kdtutor.tasks.superres import quantize, rgb_to_y, shave

    rgb = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    matlab = (
        16 + 65.481 * rgb[:, 0] + 128.553 * rgb[:, 1] + 24.966 * rgb[:, 2]
    ) / 255  # rgb2ycbcr, doubles in [0, 1]
    assert torch.allclose(rgb_to_y(rgb)[:, 0], matlab, atol=2e-6)
    assert shave(rgb, 2).shape == (2, 3, 1, 3) and shave(rgb, 0) is rgb
    q = quantize(torch.tensor([-0.2, 0.5, 0.50196, 1.3]))
    assert q.mul(255).tolist() == pytest.approx([0.0, 128.0, 128.0, 255.0])
    with pytest.raises(ShapeMismatchError):
        rgb_to_y(rgb[:, :2])


# --- keypoints -------------------------------------------------------------------------------


def numpy_decode(heatmaps: np.ndarray) -> np.ndarray:
    """pytorch-pose's ``get_preds`` + ``final_preds`` shift, written as its loops (1-based
    coordinates there, 0-based here)."""
    b, j, h, w = heatmaps.shape
    out = np.zeros((b, j, 2))
    for n in range(b):
        for k in range(j):
            hm = heatmaps[n, k]
            best, px, py = -np.inf, 0, 0
            for r in range(h):
                for c in range(w):
                    if hm[r, c] > best:
                        best, px, py = hm[r, c], c, r
            x, y = float(px), float(py)
            if 0 < px < w - 1 and 0 < py < h - 1:  # pytorch-pose: px > 1 and px < res[0] ...
                x += 0.25 * np.sign(hm[py, px + 1] - hm[py, px - 1])
                y += 0.25 * np.sign(hm[py + 1, px] - hm[py - 1, px])
            out[n, k] = x, y
    return out


def gaussian_maps(points: torch.Tensor, size: int = 16, sigma: float = 1.0) -> torch.Tensor:
    """Heatmaps ``(B, J, size, size)`` with a Gaussian at each ``(x, y)`` of ``points``."""
    grid = torch.arange(size, dtype=torch.float32)
    dx = grid.reshape(1, 1, 1, size) - points[..., 0, None, None]
    dy = grid.reshape(1, 1, size, 1) - points[..., 1, None, None]
    return torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))


def test_decoding_recovers_a_planted_peak_to_a_quarter_pixel():
    from kdtutor.tasks.keypoints import decode_heatmaps

    gen = torch.Generator().manual_seed(0)
    points = 1.0 + 13.0 * torch.rand(20, 4, 2, generator=gen)  # interior, sub-pixel
    decoded = decode_heatmaps(gaussian_maps(points))
    err = (decoded - points).abs()
    assert float(err.max()) <= 0.25 + 1e-6
    assert float(err.mean()) < 0.15  # the shift helps: argmax alone averages 0.25
    assert float((decoded.round() - points).abs().mean()) > float(err.mean())


def test_decoding_equals_the_reference_loops_on_random_maps():
    from kdtutor.tasks.keypoints import decode_heatmaps

    gen = torch.Generator().manual_seed(1)
    maps = torch.rand(6, 4, 9, 11, generator=gen)
    maps[0, 0, 0, 5] = maps[1, 1, 4, 0] = maps[2, 2, 8, 10] = 5.0  # peaks on the borders
    assert np.array_equal(decode_heatmaps(maps).numpy(), numpy_decode(maps.numpy()))


def test_pck_equals_a_loop_over_samples_and_slots():
    from kdtutor.tasks.keypoints import Keypoints

    gen = torch.Generator().manual_seed(2)
    b, j = 40, 4
    true = 1.0 + 13.0 * torch.rand(b, j, 2, generator=gen)
    guess = (true + 2.5 * torch.randn(b, j, 2, generator=gen)).clamp(0, 15)
    weight = torch.ones(b, j)
    weight[::3, 3] = 0  # an unscored slot, as the triangle's 4th
    scale = 6.0 + 10.0 * torch.rand(b, generator=gen)
    targets = {
        "keypoints": torch.cat([true, torch.full((b, j, 1), 2.0)], -1),
        "weight": weight[..., None],
        "scale": scale,
        "heatmaps": gaussian_maps(true),
    }
    maps = gaussian_maps(guess)
    halves = [
        (maps[:25], {k: v[:25] for k, v in targets.items()}),
        (maps[25:], {k: v[25:] for k, v in targets.items()}),
    ]
    scores = feed(Keypoints(), halves)
    decoded = numpy_decode(maps.numpy())
    hits = {0.2: np.zeros(j), 0.1: np.zeros(j)}
    counted = np.zeros(j)
    for n in range(b):
        for k in range(j):
            if weight[n, k] == 0:
                continue
            counted[k] += 1
            d = math.dist(decoded[n, k], true[n, k].tolist()) / float(scale[n])
            for alpha in hits:
                hits[alpha][k] += d <= alpha
    assert scores["pck02"] == pytest.approx(100 * hits[0.2].sum() / counted.sum(), abs=1e-9)
    assert scores["pck01"] == pytest.approx(100 * hits[0.1].sum() / counted.sum(), abs=1e-9)
    for k in range(j):
        assert scores[f"pck02_slot{k}"] == pytest.approx(100 * hits[0.2][k] / counted[k], abs=1e-9)
    assert 0 < scores["pck01"] < scores["pck02"] < 100


def test_pck_counts_a_distance_of_exactly_alpha_times_the_side():
    from kdtutor.tasks.keypoints import pck_hits

    pred = torch.tensor([[[7.0, 5.0], [5.0, 7.01], [5.0, 5.0]]])
    true = torch.full((1, 3, 2), 5.0)
    assert pck_hits(pred, true, torch.tensor([10.0]), 0.2).tolist() == [[True, False, True]]


def test_keypoints_run_through_evaluation_with_dict_targets():
    from kdtutor.tasks.keypoints import Keypoints

    class Samples(torch.utils.data.Dataset):
        def __init__(self, points):
            self.points = points

        def __len__(self):
            return len(self.points)

        def __getitem__(self, i):
            maps = gaussian_maps(self.points[i : i + 1])[0]
            target = {
                "heatmaps": maps,
                "keypoints": self.points[i],
                "weight": torch.ones(4, 1),
                "scale": torch.tensor(8.0),
            }
            return maps, target

    from kdtutor.train.evaluation import evaluate_networks

    points = 2.0 + 12.0 * torch.rand(10, 4, 2, generator=torch.Generator().manual_seed(4))
    scores = evaluate_networks(nn.Identity(), Samples(points), task=Keypoints(), batch_size=4)
    _, batch = Keypoints().collate([Samples(points)[i] for i in range(3)])
    assert Keypoints().batch_size(batch) == 3 and len(batch) == 4  # len counts the dict's keys
    assert scores["model"]["pck02"] == 100.0 and scores["model"]["pck01"] == 100.0
    wrong = {"keypoints": points[:2], "weight": torch.ones(2, 4), "scale": torch.full((2,), 8.0)}
    with pytest.raises(ShapeMismatchError, match="one heatmap per slot"):
        feed(Keypoints(), [(gaussian_maps(points[:2, :3]), wrong)])


# --- the training loop on dict targets --------------------------------------------------------
class _KeypointSamples(torch.utils.data.Dataset):
    """Heatmaps as inputs, keypoints targets as a dict of four tensors."""

    def __init__(self, n: int, seed: int = 5):
        gen = torch.Generator().manual_seed(seed)
        self.points = 2.0 + 12.0 * torch.rand(n, 4, 2, generator=gen)
        self.maps = gaussian_maps(self.points)

    def __len__(self):
        return len(self.points)

    def __getitem__(self, i):
        target = {
            "heatmaps": self.maps[i],
            "keypoints": self.points[i],
            "weight": torch.ones(4, 1),
            "scale": torch.tensor(8.0),
        }
        return self.maps[i], target


def test_fit_weighs_dict_target_batches_by_their_samples_and_prints_the_task_unit():
    """7 samples in batches of 3, 3, 1 and a frozen net (lr 1e-12): the epoch's loss is the mean
    over samples of each sample's loss, computed here one sample at a time. Weighing by
    ``len`` of the dict (4 keys) would give the mean of the three batch means instead."""
    from kdtutor.methods import Distiller
    from kdtutor.train import fit

    class HeatmapMSE(Distiller):
        name = "heatmap_mse_demo"
        requires_teacher = False

        def forward(self, x, y, index=None):
            out = self.student(x)
            return out, {"mse": ((out - y["heatmaps"]) ** 2).mean()}

    torch.manual_seed(0)
    net = nn.Conv2d(4, 4, 3, padding=1)
    data = _KeypointSamples(7)
    lines: list[str] = []
    result = fit(
        HeatmapMSE(net), data, data, task="keypoints", epochs=1, batch_size=3, lr=1e-12,
        momentum=0.0, weight_decay=0.0, log=lines.append,
    )  # fmt: skip
    with torch.no_grad():
        per_sample = [float(((net(x[None]) - y["heatmaps"][None]) ** 2).mean()) for x, y in data]
    assert result.history[0]["loss"] == pytest.approx(np.mean(per_sample), rel=1e-5)
    batch_means = [np.mean(per_sample[i : i + 3]) for i in (0, 3, 6)]
    assert abs(np.mean(batch_means) - np.mean(per_sample)) > 1e-4  # the weighting matters
    epoch_line = next(line for line in lines if line.startswith("epoch"))
    assert f"test {result.last_acc:.2f}%" in epoch_line


def test_the_epoch_line_prints_each_task_in_its_unit():
    from kdtutor.tasks.depth import Depth
    from kdtutor.tasks.superres import SuperResolution

    assert Depth().format_score(0.11549) == "0.115"
    assert SuperResolution().format_score(24.104) == "24.10 dB"
    assert get_task("classification").format_score(93.254) == "93.25%"
    assert get_task("regression").format_score(30.0) == "30.00 dB"
