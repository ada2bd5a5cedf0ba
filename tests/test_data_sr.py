"""kdtutor.data.tasks: the super-resolution pairs and the materialised splits they live in.

The LR images are checked against an antialiased bicubic reduction written out here in
numpy (Pillow's filter: Keys' kernel with a = -0.5, widened by the scale, renormalised at the
borders), itself checked against Pillow on float images; the HR images against the shapes
generator called with the documented settings.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from kdtutor.analysis.applications import sr_grid
from kdtutor.data.shapes import TEST_START, ShapesConfig, make_shapes
from kdtutor.data.tasks import (
    SPLIT_STARTS,
    SPLITS,
    SR_SIZES,
    SRPairs,
    bicubic_downscale,
    sr_pairs,
)
from kdtutor.tasks import get_task

matplotlib.use("Agg")
torch.set_num_threads(1)


# -- an independent antialiased bicubic ------------------------------------------------------
def keys_cubic(x, a=-0.5):
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def reduction_matrix(n_in, scale):
    """Rows: the weights of each output sample over the input samples (Pillow's ``precompute
    coeffs`` for a reduction: support 2 x scale, window clipped at the borders, renormalised)."""
    n_out = n_in // scale
    support = 2.0 * scale
    out = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        xs = np.arange(lo, hi)
        w = keys_cubic((xs - centre + 0.5) / scale)
        out[i, lo:hi] = w / w.sum()
    return out


def reference_lr(hr, scale):
    """float64 LR images in [0, 1] units (before rounding) from uint8 HR ``(N, C, H, W)``."""
    rows = reduction_matrix(hr.shape[2], scale)
    cols = reduction_matrix(hr.shape[3], scale)
    x = hr.astype(np.float64) / 255.0
    return np.clip(np.einsum("ih,nchw,jw->ncij", rows, x, cols), 0.0, 1.0)


def test_the_numpy_reference_is_pillows_bicubic_reduction():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (64, 48)).astype(np.float32)
    for scale in (2, 4):
        pillow = Image.fromarray(image, mode="F").resize(
            (48 // scale, 64 // scale), Image.Resampling.BICUBIC
        )
        ours = (
            reduction_matrix(64, scale) @ image.astype(np.float64) @ reduction_matrix(48, scale).T
        )
        np.testing.assert_allclose(np.asarray(pillow), ours, atol=2e-5)


def test_lr_is_the_rounded_antialiased_bicubic_reduction_of_hr():
    pairs = sr_pairs("test", 60, cache=False)
    hr, lr = pairs.hr.numpy(), pairs.lr.numpy()
    ref = 255.0 * reference_lr(hr, 4)
    assert np.abs(lr - ref).max() <= 0.5 + 1e-3, "every LR level is the nearest to the reference"
    assert (lr == np.rint(ref)).mean() > 0.999
    assert not np.array_equal(lr, hr[:, :, ::4, ::4]), "not a plain subsampling"
    # the reduction of a random image, at another scale, through the public function
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (3, 3, 24, 24), dtype=np.uint8)
    for scale in (2, 3):
        got = bicubic_downscale(noise, scale)
        assert got.dtype == np.uint8 and got.shape == (3, 3, 24 // scale, 24 // scale)
        assert np.abs(got - 255.0 * reference_lr(noise, scale)).max() <= 0.5 + 1e-3


def test_hr_images_are_noise_free_shapes_at_64_pixels_from_disjoint_index_ranges():
    config = ShapesConfig(image_size=64, noise_std_range=(0.0, 0.0))
    for split in SPLITS:
        pairs = sr_pairs(split, 12, seed=3, cache=False)
        images, labels = make_shapes(12, seed=3, start=SPLIT_STARTS[split], config=config)
        assert np.array_equal(pairs.hr.numpy(), images)
        assert torch.equal(pairs.labels, torch.from_numpy(labels))
    assert SPLIT_STARTS["test"] == TEST_START  # the test HR images are the shapes' test images
    starts = np.sort(list(SPLIT_STARTS.values()))
    assert (np.diff(starts) >= 10_000_000).all()
    noisy = make_shapes(12, seed=3, start=SPLIT_STARTS["test"], config=ShapesConfig(image_size=64))
    assert not np.array_equal(noisy[0], sr_pairs("test", 12, seed=3, cache=False).hr.numpy())


def test_samples_shapes_dtypes_and_ranges():
    pairs = sr_pairs("validation", 6, cache=False)
    assert isinstance(pairs, SRPairs) and len(pairs) == 6 and pairs.scale == 4
    assert pairs.lr.dtype == torch.uint8 and pairs.lr.shape == (6, 3, 16, 16)
    assert pairs.hr.dtype == torch.uint8 and pairs.hr.shape == (6, 3, 64, 64)
    lr, hr = pairs[2]
    assert lr.dtype == hr.dtype == torch.float32
    assert lr.shape == (3, 16, 16) and hr.shape == (3, 64, 64)
    assert torch.equal(lr, pairs.lr[2].float() / 255) and torch.equal(hr, pairs.hr[2].float() / 255)
    assert torch.equal(pairs[-1][1], pairs[5][1])
    with pytest.raises(IndexError):
        pairs[6]
    x, y = default_collate([pairs[i] for i in range(4)])
    assert x.shape == (4, 3, 16, 16) and y.shape == (4, 3, 64, 64)
    assert get_task(pairs.task).name == "regression"
    assert SR_SIZES == {"train": 4_000, "validation": 500, "test": 2_000}
    mean, std = pairs.channel_stats()
    assert len(mean) == len(std) == 3 and min(std) > 0
    x2 = sr_pairs("test", 2, scale=2, hr_size=32, cache=False)
    assert x2.lr.shape == (2, 3, 16, 16) and x2.hr.shape == (2, 3, 32, 32)


def test_pairs_are_deterministic_prefixes_with_a_content_fingerprint():
    a = sr_pairs("train", 10, seed=1, cache=False)
    b = sr_pairs("train", 6, seed=1, cache=False)
    assert torch.equal(a.hr[:6], b.hr) and torch.equal(a.lr[:6], b.lr)
    assert a.subset(6).fingerprint() == b.fingerprint()
    assert a.fingerprint() != b.fingerprint()
    assert sr_pairs("train", 6, seed=1, cache=False).fingerprint() == b.fingerprint()
    other = sr_pairs("train", 6, seed=2, cache=False)
    assert not torch.equal(other.hr, b.hr) and other.fingerprint() != b.fingerprint()
    picked = a.subset([7, 2])
    assert torch.equal(picked.hr, a.hr[[7, 2]]) and picked.fingerprint() != a.fingerprint()
    assert not torch.equal(sr_pairs("test", 6, seed=1, cache=False).hr, b.hr)


def test_the_disk_cache_is_written_read_and_survives_a_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path))
    first = sr_pairs("test", 8, cache=True)
    files = list((tmp_path / "sr").glob("*.npz"))
    assert len(files) == 1
    again = sr_pairs("test", 8, cache=True)
    assert torch.equal(first.lr, again.lr) and torch.equal(first.hr, again.hr)
    files[0].write_bytes(b"not an npz")
    with pytest.warns(RuntimeWarning, match="unreadable cache file"):
        third = sr_pairs("test", 8, cache=True)
    assert torch.equal(first.hr, third.hr)
    sr_pairs("test", 8, cache=False)
    assert len(list((tmp_path / "sr").glob("*.npz"))) == 1


def test_bad_arguments_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="'train', 'validation', 'test'"):
        sr_pairs("val", 4)
    with pytest.raises(ValueError, match="size must be an integer of at least 1"):
        sr_pairs("train", 0)
    with pytest.raises(ValueError, match="scale=3 must divide hr_size=64"):
        sr_pairs("train", 4, scale=3)
    with pytest.raises(ValueError, match="hr_size"):
        sr_pairs("train", 4, hr_size=4)
    with pytest.raises(ValueError, match="uint8"):
        bicubic_downscale(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="multiples of scale=3"):
        bicubic_downscale(np.zeros((1, 3, 8, 8), np.uint8), 3)
    with pytest.raises(ValueError, match="subset size"):
        sr_pairs("train", 4, cache=False).subset(5)


def test_the_sample_grid_shows_lr_bicubic_and_hr(tmp_path):
    fig = sr_grid([0, 2], split="test")
    axes = np.asarray(fig.axes).reshape(2, 3)
    assert axes[0, 0].get_title() == "LR 16x16"
    assert axes[0, 2].get_title() == "HR 64x64"
    pairs = sr_pairs("test", 3, cache=False)
    for row, index in zip(axes, [0, 2], strict=True):
        lr, hr = pairs[index]
        up = torch.nn.functional.interpolate(lr[None], scale_factor=4, mode="bicubic")[0]
        psnr = 10 * np.log10(1.0 / float(((up.clamp(0, 1) - hr) ** 2).mean()))
        assert row[1].get_title() == f"bicubic x4: {psnr:.1f} dB"
        assert np.allclose(np.asarray(row[2].images[0].get_array()), hr.permute(1, 2, 0).numpy())
        assert row[0].get_ylabel() == f"pair {index}\ny (px)"
    assert all(ax.get_xlabel() == "x (px)" for ax in axes[-1])
    path = tmp_path / "sr.png"
    fig.savefig(path, dpi=50)
    assert path.stat().st_size > 5_000
    with pytest.raises(ValueError, match="indices must not be empty"):
        sr_grid([])
