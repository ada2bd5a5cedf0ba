"""kdtutor.models: published parameter counts, forward shapes, feature paths, summaries, errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from kdtutor.errors import CheckpointError, UnknownNameError
from kdtutor.models import (
    FeatureAttributeError,
    ModelInfo,
    build_model,
    count_parameters,
    format_summary_table,
    list_models,
    model_info,
    model_summary,
    register_model,
    stage_names,
)
from kdtutor.models import registry as registry_module

# RepDistiller's CIFAR-100 models (100 classes), as listed in REFERENCES.md.
PUBLISHED_PARAMS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "mobilenetv2": 812_836,
    "shufflenetv1": 949_258,
    "shufflenetv2": 1_355_528,
}


@pytest.fixture(autouse=True)
def _seed_and_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def input_size(name: str) -> int:
    return 28 if name.startswith("mlp") else 32


def split_path(path: str) -> tuple[str, bool]:
    """``"a.b:input"`` -> ``("a.b", True)``; ``"a.b"`` -> ``("a.b", False)``."""
    if path.endswith(":input"):
        return path.removesuffix(":input"), True
    return path, False


def capture(
    model: nn.Module, paths: list[str], x: Tensor
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Run ``model(x)`` with our own hooks; return logits, the value at each path, and module outputs."""
    seen: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}
    handles = []
    for path in paths:
        module_path, want_input = split_path(path)
        module = model.get_submodule(module_path)

        def hook(
            mod: nn.Module,
            args: tuple[Tensor, ...],
            out: Tensor,
            path: str = path,
            want_input: bool = want_input,
        ) -> None:
            seen[path] = (args[0] if want_input else out).clone()
            outputs[path] = out.clone()

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, seen, outputs


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(("name", "expected"), sorted(PUBLISHED_PARAMS.items()))
def test_parameter_count_matches_repdistiller(name: str, expected: int) -> None:
    model = build_model(name, num_classes=100)
    count = count_parameters(model)
    assert count == pytest.approx(expected, rel=0.02)
    assert count == expected, f"{name}: {count:,} parameters vs RepDistiller's {expected:,}"


def test_every_repdistiller_model_is_registered() -> None:
    assert set(PUBLISHED_PARAMS) <= set(list_models())


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("cnn_large", 800_000, 1_200_000),
        ("cnn_medium", 200_000, 300_000),
        ("cnn_small", 30_000, 45_000),
        ("cnn_tiny", 8_000, 12_000),
        ("cnn_micro", 2_000, 3_000),
    ],
)
def test_small_cnn_presets_have_their_advertised_size(name: str, low: int, high: int) -> None:
    model = build_model(name, num_classes=10)
    assert low <= count_parameters(model) <= high
    if name == "cnn_large":  # cheap despite its size: it downsamples early
        flops = model_summary(model, (1, 3, 32, 32), latency_runs=0).flops_per_sample
        assert flops <= 60e6


# --------------------------------------------------------------------------- forward and paths


# the classifiers: chapter 8's dense networks (kdtutor.models.dense, family "dense") have
# their own tests (tests/test_models_dense.py) and join the registry once that module is imported
@pytest.mark.parametrize("name", [n for n in list_models() if model_info(n).family != "dense"])
def test_forward_shape_and_feature_paths(name: str) -> None:
    for channels in (1, 3):
        model = build_model(name, num_classes=7, in_channels=channels).eval()
        assert model.num_classes == 7
        assert isinstance(model.stage_names, tuple) and model.stage_names
        assert isinstance(model.preact_stage_names, tuple)
        assert stage_names(model) == model.stage_names
        size = input_size(name)
        x = torch.randn(2, channels, size, size)
        paths = [*model.stage_names, *model.preact_stage_names, model.embedding_path]
        for path in model.preact_stage_names:
            assert path.endswith(":input"), path
        logits, seen, outputs = capture(model, paths, x)
        assert logits.shape == (2, 7)
        assert torch.isfinite(logits).all()
        for path in paths:
            assert path in seen, f"{name}: no forward call reached {path}"
            value = seen[path]
            assert isinstance(value, Tensor) and value.shape[0] == 2 and torch.isfinite(value).all()
        for path in model.preact_stage_names:
            module = model.get_submodule(split_path(path)[0])
            if isinstance(module, nn.ReLU):  # the dedicated ReLU: its input is the pre-activation
                assert not module.inplace
                assert (seen[path] < 0).any(), (
                    f"{name}: {path} has no negative value, is it pre-ReLU?"
                )
                assert_close(outputs[path], F.relu(seen[path]))
        embedding = seen[model.embedding_path]
        assert embedding.dim() == 2
        module_path, is_input = split_path(model.embedding_path)
        if is_input:  # the classifier's input: applying the classifier gives the logits
            with torch.no_grad():
                assert_close(model.get_submodule(module_path)(embedding), logits)


@pytest.mark.parametrize(
    "name", ["resnet20", "resnet8x4", "vgg8", "shufflenetv1", "cnn_small", "mlp_30"]
)
def test_preactivation_is_the_stage_output_before_its_relu(name: str) -> None:
    model = build_model(name, num_classes=5, in_channels=3).eval()
    size = input_size(name)
    paths = [*model.stage_names, *model.preact_stage_names]
    _, seen, _ = capture(model, paths, torch.randn(2, 3, size, size))
    assert len(model.stage_names) == len(model.preact_stage_names)
    for stage, preact in zip(model.stage_names, model.preact_stage_names, strict=True):
        assert_close(seen[stage], F.relu(seen[preact]))


def test_cifar_resnet_feature_paths_follow_repdistiller() -> None:
    model = build_model("resnet20", num_classes=100)
    assert model.stage_names == ("layer1", "layer2", "layer3")
    assert model.preact_stage_names == tuple(f"layer{i}.2.relu_out:input" for i in (1, 2, 3))
    assert model.embedding_path == "fc:input"
    _, seen, _ = capture(model.eval(), list(model.stage_names), torch.randn(2, 3, 32, 32))
    assert [tuple(seen[s].shape[1:]) for s in model.stage_names] == [
        (16, 32, 32),
        (32, 16, 16),
        (64, 8, 8),
    ]


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("cnn_small", (2, 1, 8, 8)),
        ("cnn_micro", (2, 1, 28, 28)),
        ("resnet8", (2, 1, 8, 8)),
        ("vit_tiny", (2, 3, 28, 28)),
    ],
)
def test_other_input_sizes(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, num_classes=4, in_channels=shape[1]).eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (2, 4)


def test_mlp_presets_and_input_size_check() -> None:
    teacher = build_model("mlp_1200", num_classes=10, in_channels=1)
    assert [layer.linear.out_features for layer in teacher.hidden] == [1200, 1200]
    assert teacher.hidden[0].dropout.p == 0.5 and teacher.input_dropout.p == 0.2
    student = build_model("mlp_800", num_classes=10, in_channels=1)
    assert count_parameters(student) == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    assert student.hidden[0].dropout.p == 0.0
    custom = build_model("mlp", in_channels=1, hidden=(50,), image_size=8)
    assert custom.input_size == 64
    with pytest.raises(ValueError, match="image_size"):
        student(torch.randn(2, 1, 32, 32))


def test_vit_distillation_token_heads_are_hookable() -> None:
    plain = build_model("vit_tiny", num_classes=10)
    assert plain.head_dist is None and not plain.distill_token
    model = build_model("vit_tiny", num_classes=10, distill_token=True).eval()
    assert isinstance(model.head_dist, nn.Linear)
    assert model.pos_embed.shape[1] == 2 + (32 // 4) ** 2
    assert [name for name, _ in model.named_children() if name == "blocks"] and model.stage_names[
        0
    ] == "blocks.0"
    logits, seen, _ = capture(model, ["head", "head_dist"], torch.randn(2, 3, 32, 32))
    assert seen["head"].shape == seen["head_dist"].shape == (2, 10)
    assert not torch.allclose(seen["head"], seen["head_dist"])
    assert_close(logits, (seen["head"] + seen["head_dist"]) / 2)
    cls_logits, dist_logits = model.forward_heads(torch.zeros(1, 3, 32, 32))
    assert dist_logits is not None and cls_logits.shape == dist_logits.shape == (1, 10)


# --------------------------------------------------------------------------- summary


def test_summary_flops_of_a_linear_layer() -> None:
    model = nn.Sequential(nn.Linear(10, 5))
    summary = model_summary(model, input_shape=(3, 10), latency_runs=0)
    assert summary.flops_per_sample == 2 * 10 * 5
    assert summary.flops == 3 * 2 * 10 * 5
    assert summary.params == summary.trainable_params == 10 * 5 + 5
    assert summary.size_mb == pytest.approx(55 * 4 / 2**20)
    assert summary.latency_ms is None


def test_summary_flops_of_a_conv_layer_and_training_mode_restored() -> None:
    c_in, c_out, k, h, w = 3, 4, 3, 8, 8
    model = nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=1, bias=False), nn.BatchNorm2d(c_out))
    model.train()
    summary = model_summary(model, input_shape=(2, c_in, h, w), latency_runs=2, name="conv")
    assert summary.flops_per_sample == 2 * c_in * c_out * k * k * h * w
    assert model.training and all(m.training for m in model.modules())
    assert summary.latency_ms is not None and summary.latency_ms > 0
    # buffers count in the size: BN's running mean/var (float32) and num_batches_tracked (int64)
    assert summary.size_mb == pytest.approx(
        (c_in * c_out * k * k + 2 * c_out + 2 * c_out) * 4 / 2**20 + 8 / 2**20
    )
    table = format_summary_table(
        [summary, model_summary(nn.Linear(4, 2), (1, 4), 0, name="linear")]
    )
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].split()[:2] == ["model", "params"]
    assert (
        lines[2].startswith("conv")
        and lines[3].startswith("linear")
        and lines[3].rstrip().endswith("-")
    )


def test_count_parameters_trainable_only() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == 15 + 8
    assert count_parameters(model, trainable_only=True) == 8


# --------------------------------------------------------------------------- registry and errors


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet8x4'"):
        build_model("resnet8x5")
    with pytest.raises(ValueError, match="wrn_40_2"):  # UnknownNameError is a ValueError
        model_info("wrn_40_3")


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1.*number of classes"):
        build_model("resnet8", num_classes=0)
    with pytest.raises(ValueError, match=r"in_channels must be an integer >= 1.*1 for grey"):
        build_model("resnet8", in_channels=-1)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet8", num_classes=True)
    with pytest.raises(TypeError, match=r"'resnet8' does not take 'widht'.*widths"):
        build_model("resnet8", widht=2)


def test_presets_accept_overrides_and_ignore_image_size() -> None:
    model = build_model("cnn_small", dropout=0.3, image_size=32)
    assert model.dropout.p == 0.3
    assert build_model("resnet8", image_size=64).num_classes == 10
    assert build_model("resnet8", depth=14).layer1.__len__() == 2


def test_list_and_info() -> None:
    names = list_models()
    assert names == sorted(names) and not any(n.startswith("tv:") for n in names)
    assert set(list_models(family="wrn")) == {
        "wrn_16_1",
        "wrn_16_2",
        "wrn_40_1",
        "wrn_40_2",
    }
    info = model_info("resnet8x4")
    assert isinstance(info, ModelInfo) and info.family == "cifar_resnet"
    assert "He et al. 2016" in info.paper and info.description
    assert "Touvron et al. 2021" in model_info("vit_tiny").paper
    assert "Hinton" in model_info("mlp_1200").paper
    assert model_info("tv:resnet18").family == "torchvision"
    families = {model_info(n).family for n in names}
    # chapter 8's networks join the registry when kdtutor.models.dense is imported
    import sys

    assert ("dense" in families) == ("kdtutor.models.dense" in sys.modules)
    assert families - {"dense"} == {
        "cifar_resnet",
        "wrn",
        "vgg",
        "mobilenetv2",
        "shufflenet",
        "mlp",
        "small_cnn",
        "vit",
    }


def test_register_model_adds_a_model_in_one_line() -> None:
    from kdtutor.models import set_feature_paths

    def tiny(num_classes: int = 10, in_channels: int = 3, width: int = 4) -> nn.Module:
        model = nn.Sequential()
        model.add_module("conv", nn.Conv2d(in_channels, width, 3))
        model.add_module("relu", nn.ReLU())
        model.add_module("pool", nn.AdaptiveAvgPool2d(1))
        model.add_module("flatten", nn.Flatten())
        model.add_module("fc", nn.Linear(width, num_classes))
        return set_feature_paths(
            model,
            stages=["relu"],
            preact=["relu:input"],
            embedding="fc:input",
            num_classes=num_classes,
        )

    try:
        register_model(
            "test_tiny",
            family="test",
            description="a test model",
            paper="none",
            defaults={"width": 6},
        )(tiny)
        model = build_model("test_tiny", num_classes=3)
        assert model.fc.in_features == 6 and "test_tiny" in list_models()
        with pytest.raises(ValueError, match="already registered"):
            register_model("test_tiny", family="test", description="", paper="")(tiny)
        with pytest.raises(ValueError, match="reserved"):
            register_model("tv:mine", family="test", description="", paper="")(tiny)
    finally:
        registry_module._REGISTRY.pop("test_tiny", None)
    assert "test_tiny" not in list_models()


def test_stage_names_helper_explains_a_plain_model() -> None:
    with pytest.raises(FeatureAttributeError, match=r"not built by kdtutor\.models\.build_model"):
        stage_names(nn.Sequential(nn.Linear(2, 2)))


# --------------------------------------------------------------------------- weights and torchvision


def test_weights_path_round_trip_and_mismatch(tmp_path) -> None:
    source = build_model("resnet8", num_classes=10)
    path = tmp_path / "resnet8.pt"
    torch.save(source.state_dict(), path)
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "nested.pt")
    for file in (path, tmp_path / "nested.pt"):
        loaded = build_model("resnet8", num_classes=10, weights_path=file)
        for (name, a), b in zip(
            source.state_dict().items(), loaded.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name
    with pytest.raises(
        CheckpointError, match=r"fc.weight: file \(10, 64\) vs model \(100, 64\).*num_classes"
    ):
        build_model("resnet8", num_classes=100, weights_path=path)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model("resnet8", weights_path=tmp_path / "missing.pt")


@pytest.mark.usefixtures("no_network")
def test_torchvision_resnet18_builds_offline_with_random_init() -> None:
    torch.manual_seed(1)
    first = build_model("tv:resnet18", num_classes=10)
    torch.manual_seed(2)
    second = build_model("tv:resnet18", num_classes=10)
    assert first.fc.out_features == 10
    assert not torch.equal(first.conv1.weight, second.conv1.weight)  # random, not pretrained
    assert first.stage_names == ("layer1", "layer2", "layer3", "layer4")
    assert first.embedding_path == "fc:input" and first.preact_stage_names == ()
    grey = build_model("tv:resnet18", num_classes=5, in_channels=1).eval()
    assert grey.conv1.in_channels == 1
    logits, seen, _ = capture(
        grey, [*grey.stage_names, grey.embedding_path], torch.randn(2, 1, 32, 32)
    )
    assert logits.shape == (2, 5) and seen["fc:input"].shape == (2, 512)
    assert seen["layer4"].shape == (2, 512, 1, 1)


@pytest.mark.usefixtures("no_network")
def test_torchvision_features_family_and_errors() -> None:
    model = build_model("tv:mobilenet_v3_small", num_classes=3, in_channels=1).eval()
    assert model.embedding_path == "classifier:input"
    logits, seen, _ = capture(
        model, [*model.stage_names, model.embedding_path], torch.randn(2, 1, 32, 32)
    )
    assert logits.shape == (2, 3) and len(seen) == len(model.stage_names) + 1
    with pytest.raises(UnknownNameError, match="Did you mean 'tv:resnet18'"):
        build_model("tv:resnt18")
    with pytest.raises(Exception, match="never downloads"):
        build_model("tv:resnet18", weights="DEFAULT")
