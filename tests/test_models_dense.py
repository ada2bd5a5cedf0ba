"""The networks of chapter 8 (``kdtutor.models.dense``): registration, shapes on the data's
real inputs, parameter counts, FCOS's contract, Normalize, the video student's frames, the
feature paths and the errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdtutor.errors import ShapeMismatchError
from kdtutor.features import FeatureExtractor, ModuleNotCalledError
from kdtutor.models import build_model, count_parameters, list_models

torch.set_num_threads(1)

# Imported inside the tests, not at collection: test_models.py parametrizes over every
# registered name when it is collected, and the dense networks are not classifiers.
dense = None  # the module, set by the fixture below


@pytest.fixture(autouse=True, scope="module")
def _dense_registered():
    global dense
    import kdtutor.models.dense as module

    dense = module


NAMES = {
    "fcos_t", "fcos_s", "lraspp_t", "lraspp_s", "depth_t", "depth_s", "pose_t", "pose_s",
    "facenet_t", "facenet_s", "edsr_t", "edsr_s", "c3d_t", "tsn_s", "lanenet_t", "lanenet_s",
}  # fmt: skip

# name -> (build kwargs, input shape of one sample)
INPUTS = {
    "fcos_t": ({"num_classes": 4}, (3, 64, 64)),
    "fcos_s": ({"num_classes": 4}, (3, 64, 64)),
    "lraspp_t": ({"num_classes": 4}, (3, 64, 64)),
    "lraspp_s": ({"num_classes": 4}, (3, 64, 64)),
    "depth_t": ({}, (3, 64, 64)),
    "depth_s": ({}, (3, 64, 64)),
    "pose_t": ({}, (3, 32, 32)),
    "pose_s": ({}, (3, 32, 32)),
    "facenet_t": ({"num_classes": 1000}, (3, 32, 32)),
    "facenet_s": ({"num_classes": 1000}, (3, 32, 32)),
    "edsr_t": ({}, (3, 16, 16)),
    "edsr_s": ({}, (3, 16, 16)),
    "c3d_t": ({"num_classes": 10}, (8, 3, 32, 32)),
    "tsn_s": ({"num_classes": 10}, (8, 3, 32, 32)),
    "lanenet_t": ({}, (3, 48, 128)),
    "lanenet_s": ({}, (3, 48, 128)),
}

# Measured here (sum of p.numel()). The design note (section 3) gives 824 k / 221 k for FCOS
# and 481 k / 79 k for LRASPP: those are these networks at K = 11 (ten classes + background,
# the paired style), with the encoder's 2-conv stem for LRASPP (see the next table). The
# encoder-decoders are 9 w^2 + 2 w below the design's 483 k / 75 k / 300 k (w = widths[0]:
# 9,280 / 592 / 2,336) for the same reason (the probes' stem had a second conv-BN; the
# design's text, followed here, has one).
# Faces (1,334 k / 92 k with 1,000 identities), EDSR (272 k / 26 k) and video (432 k / 83 k)
# match the design exactly.
COUNTS = {
    ("fcos_t", 4): 819_881,
    ("fcos_t", 11): 823_920,  # design: 824 k
    ("fcos_s", 4): 219_097,
    ("fcos_s", 11): 221_120,  # design: 221 k
    ("lraspp_t", 4): 470_696,
    ("lraspp_t", 11): 471_606,
    ("lraspp_s", 4): 77_616,
    ("lraspp_s", 11): 77_966,
    ("depth_t", None): 473_345,
    ("depth_s", None): 74_849,
    ("pose_t", None): 473_444,
    ("pose_s", None): 74_876,
    ("facenet_t", 1000): 1_334_368,  # design: 1,334 k
    ("facenet_s", 1000): 91_984,  # design: 92 k
    ("edsr_t", None): 271_536,  # design: 272 k
    ("edsr_s", None): 25_968,  # design: 26 k
    ("c3d_t", 10): 431_802,  # design: 432 k
    ("tsn_s", 10): 83_034,  # design: 83 k
    ("lanenet_t", None): 298_505,
    ("lanenet_s", None): 75_145,
}

# With stem_convs=2 (the probes' encoder), the design's counts come out exactly.
DESIGN_STEM_COUNTS = {
    ("lraspp_t", 11): 480_886,  # design: 481 k
    ("lraspp_s", 11): 78_558,  # design: 79 k
    ("depth_t", None): 482_625,  # design: 483 k
    ("depth_s", None): 75_441,  # design: 75 k
    ("lanenet_t", None): 300_841,  # design: 300 k
}


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    options = {**INPUTS[name][0], **kwargs}
    return build_model(name, **options)


def batch(name: str, n: int = 2) -> torch.Tensor:
    return torch.rand(n, *INPUTS[name][1], generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def samples():
    """One real sample of every generator the models are for (shapes, dtype, range)."""
    from kdtutor.data.clips import clips_dataset
    from kdtutor.data.faces import faces_dataset
    from kdtutor.data.roads import roads_dataset
    from kdtutor.data.scenes import ScenesDataset
    from kdtutor.data.tasks import sr_pairs

    return {
        "scene": ScenesDataset(2, task="detection")[0],
        "face": faces_dataset("test", size=2, cache=False)[0],
        "clip": clips_dataset("test", 2, cache=False)[0],
        "road": roads_dataset("test", 2, cache=False)[0],
        "sr": sr_pairs("test", 2, cache=False)[0],
    }


# -- registration ----------------------------------------------------------------------------


def test_every_name_is_registered_on_import_and_builds():
    assert set(list_models(family="dense")) == NAMES
    for name in sorted(NAMES):
        model = build_model(name)  # build_model's own defaults (num_classes=10)
        for attribute in ("stage_names", "preact_stage_names", "embedding_path", "num_classes"):
            assert hasattr(model, attribute), (name, attribute)
        modules = dict(model.named_modules())
        for path in (*model.stage_names, *model.preact_stage_names, model.embedding_path,
                     *model.named_paths.values()):  # fmt: skip
            assert path.removesuffix(":input") in modules, (name, path)


@pytest.mark.parametrize(("name", "classes"), sorted(COUNTS))
def test_parameter_counts(name, classes):
    kwargs = {} if classes is None else {"num_classes": classes}
    model = build(name, **kwargs)
    assert count_parameters(model) == COUNTS[name, classes]
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "classes"), sorted(DESIGN_STEM_COUNTS))
def test_a_two_conv_stem_gives_the_design_notes_counts(name, classes):
    kwargs = {"stem_convs": 2} if classes is None else {"stem_convs": 2, "num_classes": classes}
    model = build(name, **kwargs)
    assert count_parameters(model) == DESIGN_STEM_COUNTS[name, classes]
    encoder = model.backbone if hasattr(model, "backbone") else model.enc
    # the extra parameters are exactly one 3x3 conv and one batch norm at the stem's width
    w0 = encoder.widths[0]
    assert DESIGN_STEM_COUNTS[name, classes] - COUNTS[name, classes] == 9 * w0 * w0 + 2 * w0


# -- outputs on the generators' real inputs ----------------------------------------------------


def test_outputs_on_real_samples(samples):
    torch.manual_seed(0)
    scene, _ = samples["scene"]
    assert scene.shape == (3, 64, 64)
    with torch.no_grad():
        seg = build("lraspp_s").eval()(scene[None])
        assert list(seg) == ["out"] and seg["out"].shape == (1, 4, 64, 64)
        depth = build("depth_s").eval()(scene[None])
        assert depth.shape == (1, 1, 64, 64) and bool((depth > 0).all())
        crop = F.interpolate(scene[None, :, :32, :32], size=(32, 32))
        assert build("pose_s").eval()(crop).shape == (1, 4, 16, 16)
        face, _ = samples["face"]
        assert face.shape == (3, 32, 32)
        assert build("facenet_s").eval()(face[None]).shape == (1, 64)
        lr, hr = samples["sr"]
        assert build("edsr_s").eval()(lr[None]).shape == (1, *hr.shape) == (1, 3, 64, 64)
        clip, _ = samples["clip"]
        assert clip.shape == (8, 3, 32, 32)
        for name in ("c3d_t", "tsn_s"):
            assert build(name).eval()(clip[None]).shape == (1, 10)
        road, target = samples["road"]
        lanes = build("lanenet_s").eval()(road[None])
        assert set(lanes) == {"out", "exist"}
        assert lanes["out"].shape == (1, 5, *road.shape[1:]) == (1, 5, 48, 128)
        assert lanes["exist"].shape == (1, *target["exist"].shape) == (1, 4)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lraspp_t", {"out": (2, 4, 64, 64)}),
        ("depth_t", (2, 1, 64, 64)),
        ("pose_t", (2, 4, 16, 16)),
        ("facenet_t", (2, 128)),
        ("edsr_t", (2, 3, 64, 64)),
        ("c3d_t", (2, 10)),
        ("lanenet_t", {"out": (2, 5, 48, 128), "exist": (2, 4)}),
    ],
)
def test_teacher_output_shapes(name, expected):
    with torch.no_grad():
        out = build(name).eval()(batch(name))
    if isinstance(expected, dict):
        assert isinstance(out, dict) and {k: tuple(v.shape) for k, v in out.items()} == expected
    else:
        assert isinstance(out, torch.Tensor) and tuple(out.shape) == expected


@pytest.mark.parametrize("name", ["lraspp_s", "depth_s", "pose_s", "lanenet_s"])
def test_the_full_resolution_output_is_the_upsampled_half_resolution_map(name):
    model = build(name).eval()
    x = batch(name)
    logits_path = model.named_paths["logits"]
    with torch.no_grad(), FeatureExtractor(model, [logits_path]) as fx:
        out = model(x)
    small = fx[logits_path]
    expected_size = {"lraspp_s": 16, "depth_s": 32, "pose_s": 16, "lanenet_s": (24, 64)}[name]
    size = (expected_size, expected_size) if isinstance(expected_size, int) else expected_size
    assert small.shape[-2:] == size
    if name == "pose_s":  # the heatmaps are the head's output, no upsampling
        torch.testing.assert_close(out, small, rtol=0, atol=0)
        return
    up = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    if name == "depth_s":
        up = up.exp()
    out = out["out"] if isinstance(out, dict) else out
    torch.testing.assert_close(out, up, rtol=0, atol=0)


def test_every_student_parameter_gets_a_gradient():
    for name in ("fcos_s", "lraspp_s", "depth_s", "pose_s", "facenet_s", "edsr_s", "tsn_s",
                 "lanenet_s", "c3d_t"):  # fmt: skip
        model = build(name).train()
        x = batch(name, 3)
        if name == "fcos_s":
            targets = [
                {"boxes": torch.tensor([[4.0, 6.0, 30.0, 28.0]]), "labels": torch.tensor([1])}
            ] * 3
            loss = sum(model(list(x), targets).values())
        else:
            out = model(x)
            out = sum(v.sum() for v in out.values()) if isinstance(out, dict) else out.sum()
            loss = out if name != "facenet_s" else out + model.head(model.embedding(x)).sum()
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, (name, missing)


# -- detection ---------------------------------------------------------------------------------


def test_fcos_train_mode_returns_torchvisions_losses_and_eval_mode_detections(samples):
    from kdtutor.data.scenes import ScenesDataset

    data = ScenesDataset(3, task="detection")
    images = [data[i][0] for i in range(3)]
    targets = [data[i][1] for i in range(3)]
    model = build("fcos_s").train()
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert torch.equal(  # a batch tensor works as the list does
        model(torch.stack(images), targets)["classification"], losses["classification"]
    )
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert isinstance(detections, list) and len(detections) == 3
    for d in detections:
        assert set(d) == {"boxes", "scores", "labels"}
        n = d["boxes"].shape[0]
        assert d["boxes"].shape == (n, 4) and d["scores"].shape == (n,) == d["labels"].shape
        assert n <= 50 and d["labels"].dtype == torch.int64
        assert bool((d["scores"] >= 0.05).all())


def test_fcos_transform_is_the_identity_on_64_pixel_scenes(samples):
    model = build("fcos_t")
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    targets = [{"boxes": torch.tensor([[3.0, 5.0, 20.0, 40.0]]), "labels": torch.tensor([2])}] * 3
    for mode in (model.train, model.eval):
        mode()
        image_list, out_targets = model.transform(images, [dict(t) for t in targets])
        assert image_list.tensors.shape == (3, 3, 64, 64)
        assert image_list.image_sizes == [(64, 64)] * 3
        assert torch.equal(image_list.tensors, torch.stack(images))  # max difference 0
        assert all(
            torch.equal(o["boxes"], t["boxes"]) for o, t in zip(out_targets, targets, strict=True)
        )


def test_fcos_feature_paths_are_the_fpn_levels():
    model = build("fcos_t").eval()
    paths = [*model.stage_names, model.embedding_path]
    with torch.no_grad(), FeatureExtractor(model, paths) as fx:
        model(list(batch("fcos_t")))
    shapes = [tuple(fx[p].shape) for p in paths]
    assert shapes == [(2, 64, 8, 8), (2, 64, 4, 4), (2, 64, 2, 2), (2, 128, 2, 2)]
    # the levels the head reads: P3 + P4 + P5 = 64 + 16 + 4 = 84 locations per image
    features = model.backbone(batch("fcos_t"))
    assert sum(f.shape[-1] * f.shape[-2] for f in features.values()) == 84
    assert [model.named_paths[f"fpn.{i}"] for i in range(3)] == list(model.stage_names)


def test_fcos_refuses_a_head_width_groupnorm_cannot_take_and_bad_images():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("fcos_s", fpn_channels=16)
    model = build("fcos_s").eval()
    with pytest.raises(ShapeMismatchError, match=r"images \(3, H, W\)"):
        model([torch.rand(1, 64, 64)])
    with pytest.raises(ShapeMismatchError, match="list of images"):
        model(torch.rand(3, 64, 64))


# -- Normalize ---------------------------------------------------------------------------------


def test_normalize_against_the_formula_and_its_buffers_travel():
    mean, std = [0.2, 0.4, 0.6], [0.5, 0.25, 0.1]
    norm = dense.Normalize(mean, std)
    x = torch.rand(2, 3, 4, 5)
    expected = np.empty((2, 3, 4, 5), np.float32)
    for c in range(3):  # per channel, by hand
        expected[:, c] = (x[:, c].numpy() - mean[c]) / std[c]
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(norm.inverse(norm(x)), x)
    clip = torch.rand(2, 8, 3, 4, 4)  # clips: channels third from the end
    np.testing.assert_allclose(
        norm(clip)[:, 5, 1].numpy(), (clip[:, 5, 1].numpy() - 0.4) / 0.25, rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match="positive"):
        dense.Normalize([0.0], [0.0])
    with pytest.raises(ValueError, match="one length"):
        dense.Normalize([0.0, 0.0], [1.0])
    with pytest.raises(ShapeMismatchError, match="3-channel"):
        norm(torch.rand(2, 1, 4, 4))


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_model_keeps_its_statistics_in_its_state_dict(name):
    stats = {"mean": [0.1, 0.2, 0.3], "std": [0.9, 0.8, 0.7]}
    model = build(name, **stats)
    state = model.state_dict()
    keys = [k for k in state if k.endswith("normalize.mean") or k.endswith("normalize.std")]
    assert len(keys) == 2, keys
    mean_key = next(k for k in keys if k.endswith("mean"))
    assert state[mean_key].flatten().tolist() == pytest.approx(stats["mean"])
    fresh = build(name)  # default statistics 0 / 1, overwritten by loading
    fresh.load_state_dict(state)
    assert torch.equal(fresh.state_dict()[mean_key], state[mean_key])
    with pytest.raises(ValueError, match="in_channels"):
        build(name, mean=[0.0], std=[1.0])


def test_the_statistics_change_the_output():
    x = batch("lraspp_s")
    plain = build("lraspp_s").eval()
    shifted = build("lraspp_s", mean=[0.5] * 3, std=[0.25] * 3).eval()
    with torch.no_grad():
        out = shifted(x)["out"]
        torch.testing.assert_close(out, plain((x - 0.5) / 0.25)["out"])
        assert not torch.allclose(out, plain(x)["out"], atol=1e-3)
    sr_plain, sr_shifted = build("edsr_s").eval(), build("edsr_s", mean=[0.5] * 3).eval()
    with torch.no_grad():  # EDSR adds the mean back at its output (EDSR's add_mean)
        torch.testing.assert_close(
            sr_shifted(x[..., :16, :16]), sr_plain(x[..., :16, :16] - 0.5) + 0.5
        )


# -- video -------------------------------------------------------------------------------------


def test_tsn_reads_only_frames_0_2_4_6():
    model = build("tsn_s").eval()
    clip = batch("tsn_s")
    with torch.no_grad():
        out = model(clip)
        odd = clip.clone()
        odd[:, 1::2] = torch.rand_like(odd[:, 1::2])
        assert torch.equal(model(odd), out)
        frame2 = clip.clone()
        frame2[:, 2] = torch.rand_like(frame2[:, 2])
        assert not torch.allclose(model(frame2), out)
    with torch.no_grad(), FeatureExtractor(model, ["frame.stem:input"]) as fx:
        model(clip)
    assert fx["frame.stem:input"].shape == (2 * 4, 3, 32, 32)  # 4 frames per clip, folded


def test_c3d_reads_every_frame_and_has_a_t2_map_of_four_steps():
    model = build("c3d_t").eval()
    clip = batch("c3d_t")
    with torch.no_grad(), FeatureExtractor(model, ["t2", "pool"]) as fx:
        out = model(clip)
        other = clip.clone()
        other[:, 7] = torch.rand_like(other[:, 7])
        assert not torch.allclose(model(other), out)
    assert fx["t2"].shape == (2, 32, 4, 8, 8) and fx["pool"].shape == (2, 128)


def test_clips_in_the_wrong_layout_or_too_short_are_refused():
    clip = batch("c3d_t")
    for name in ("c3d_t", "tsn_s"):
        model = build(name).eval()
        with pytest.raises(ShapeMismatchError, match=r"\(B, C, T, H, W\)"):
            model(clip.transpose(1, 2))
        with pytest.raises(ShapeMismatchError, match="5 dimensions"):
            model(clip[0])
    with pytest.raises(ShapeMismatchError, match="frames"):
        build("tsn_s")(clip[:, :4])


# -- faces -------------------------------------------------------------------------------------


def test_cosine_head_against_numpy():
    head = dense.CosineHead(5, 7, s=16)
    e = torch.randn(3, 5)
    w = head.weight.detach().numpy().astype(np.float64)
    x = e.numpy().astype(np.float64)
    expected = np.empty((3, 7))
    for i in range(3):
        for j in range(7):
            expected[i, j] = 16 * (x[i] @ w[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(w[j]))
    np.testing.assert_allclose(head(e).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert head.weight.shape == (7, 5) and count_parameters(head) == 35  # no bias
    with pytest.raises(ShapeMismatchError, match=r"\(B, 5\)"):
        head(torch.randn(3, 4))


def test_facenet_outputs_unit_embeddings_and_keeps_its_head_out_of_forward():
    model = build("facenet_s").eval()
    x = batch("facenet_s")
    with torch.no_grad(), FeatureExtractor(model, ["bn", "head"]) as fx:
        e = model(x)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(e, F.normalize(fx["bn"], dim=1))
    assert fx.calls["head"] == 0
    with pytest.raises(ModuleNotCalledError):
        fx["head"]
    assert model.head(model.embedding(x)).shape == (2, 1000) and model.num_classes == 1000
    bare = build("facenet_s", with_head=False)  # for a distiller that brings its own head
    assert bare.head is None and "head" not in bare.named_paths
    assert count_parameters(bare) == COUNTS["facenet_s", 1000] - 64 * 1000 == 27_984


# -- feature paths -----------------------------------------------------------------------------

# name -> stage shapes, embedding shape, {named path: shape}, for a batch of 2
FEATURES = {
    "lraspp_t": (
        [(2, 32, 32, 32), (2, 64, 16, 16), (2, 96, 8, 8), (2, 128, 4, 4)],
        (2, 128, 4, 4),
        {"logits": (2, 4, 16, 16), "low": (2, 64, 16, 16), "high": (2, 128, 4, 4)},
    ),
    "lraspp_s": (
        [(2, 8, 32, 32), (2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4)],
        (2, 64, 4, 4),
        {"logits": (2, 4, 16, 16), "low": (2, 16, 16, 16), "high": (2, 64, 4, 4)},
    ),
    "depth_t": (
        [(2, 32, 32, 32), (2, 64, 16, 16), (2, 96, 8, 8), (2, 128, 4, 4)],
        (2, 128, 4, 4),
        {"logits": (2, 1, 32, 32), "bottleneck": (2, 128, 4, 4), "decoder": (2, 32, 32, 32)},
    ),
    "pose_s": (
        [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)],
        (2, 64, 2, 2),
        {"logits": (2, 4, 16, 16), "bottleneck": (2, 64, 2, 2), "decoder": (2, 8, 16, 16)},
    ),
    "lanenet_t": (
        [(2, 16, 24, 64), (2, 32, 12, 32), (2, 64, 6, 16), (2, 128, 3, 8)],
        (2, 128),
        {"logits": (2, 5, 24, 64), "exist": (2, 4), "bottleneck": (2, 128, 3, 8)},
    ),
    "facenet_t": (
        [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)],
        (2, 128),
        {"embedding": (2, 128), "pooled": (2, 256)},
    ),
    "facenet_s": (
        [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4)],
        (2, 64),
        {"embedding": (2, 64), "pooled": (2, 64)},
    ),
    "edsr_t": (
        [(2, 48, 16, 16)] * 6,
        (2, 48, 16, 16),
        {"fakd.0": (2, 48, 16, 16), "fakd.1": (2, 48, 16, 16), "fakd.2": (2, 48, 16, 16)},
    ),
    "c3d_t": (
        [(2, 16, 8, 16, 16), (2, 32, 4, 8, 8), (2, 64, 2, 4, 4), (2, 128, 1, 2, 2)],
        (2, 128),
        {"pool": (2, 128), "t2": (2, 32, 4, 8, 8)},
    ),
    "tsn_s": (
        [(8, 16, 16, 16), (8, 32, 8, 8), (8, 64, 4, 4)],  # 2 clips x 4 frames
        (2, 64),
        {"pool": (2, 64), "frames": (2, 64, 4)},
    ),
}


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_feature_paths_resolve_with_the_documented_shapes(name):
    stages, embedding, named = FEATURES[name]
    model = build(name).eval()
    paths = [
        *model.stage_names, *model.preact_stage_names, model.embedding_path,
        *(model.named_paths[k] for k in named),
    ]  # fmt: skip
    with torch.no_grad(), FeatureExtractor(model, paths) as fx:
        model(batch(name))
    assert [tuple(fx[p].shape) for p in model.stage_names] == stages
    if model.preact_stage_names:  # the pre-ReLU map has its stage's shape
        assert [tuple(fx[p].shape) for p in model.preact_stage_names] == stages
        assert any(bool((fx[p] < 0).any()) for p in model.preact_stage_names)
    assert tuple(fx[model.embedding_path].shape) == embedding
    assert {k: tuple(fx[model.named_paths[k]].shape) for k in named} == named


def test_fakd_features_sit_at_thirds_of_the_body():
    assert build("edsr_t").named_paths == {
        "fakd.0": "body.1",
        "fakd.1": "body.3",
        "fakd.2": "body.5",
    }
    assert build("edsr_s").named_paths == {
        "fakd.0": "body.0",
        "fakd.1": "body.2",
        "fakd.2": "body.3",
    }


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NAMES - {"fcos_t", "fcos_s"}))
def test_a_wrong_channel_count_names_the_fix(name):
    model = build(name).eval()
    x = batch(name)
    wrong = x[..., :1, :, :]
    with pytest.raises(ShapeMismatchError, match=r"3-channel|in_channels"):
        model(wrong)


@pytest.mark.parametrize("name", ["lraspp_s", "depth_s", "pose_s", "lanenet_s"])
def test_a_size_the_encoder_cannot_halve_four_times_is_refused(name):
    model = build(name).eval()
    with pytest.raises(ShapeMismatchError, match="multiples of 16"):
        model(torch.rand(1, 3, 60, 60))
    with pytest.raises(ShapeMismatchError, match="batch"):
        model(torch.rand(3, 64, 64))


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="4 channel counts"):
        build_model("depth_s", widths=(8, 16, 32))
    with pytest.raises(ValueError, match="stem_stride"):
        dense.SceneEncoder(stem_stride=8)
    with pytest.raises(ValueError, match="outputs"):
        dense.SceneEncoder(outputs=("s4",))
    with pytest.raises(ValueError, match="plain CNN"):
        build_model("facenet_s", trunk="resnet8")
    with pytest.raises(ValueError, match="frames"):
        build_model("tsn_s", frames=(0, -1))
