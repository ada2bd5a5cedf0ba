"""FeatureExtractor: values against hand-run submodules, gradients, hook hygiene, errors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from kdtutor.errors import KDTutorError, UnknownNameError
from kdtutor.features import (
    FeatureExtractor,
    FeatureNotRequestedError,
    FeatureTypeError,
    ModuleNotCalledError,
    evaluating,
    feature_shapes,
    list_paths,
    probe_features,
)


def make_sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 4, 3, padding=1),
            relu1=nn.ReLU(),
            layer2=nn.Sequential(
                nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()
            ),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(8, 5),
        )
    )


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)) + x)


class Pair(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.mean(dim=(2, 3)), x.amax(dim=(2, 3))


class TinyNet(nn.Module):
    """A custom forward: functional ReLUs, a shared module, a tuple output, an optional head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.blocks = nn.ModuleList([Block(6), Block(6)])
        self.shared = nn.Conv2d(6, 6, 1)
        self.pair = Pair()
        self.head = nn.Linear(12, 4)
        self.aux = nn.Linear(6, 4)  # only used when use_aux is set

    def forward(self, x: Tensor, use_aux: bool = False) -> Tensor:
        x = F.relu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        x = self.shared(F.relu(self.shared(x)))  # the same module twice
        mean, peak = self.pair(x)
        logits = self.head(torch.cat([mean, peak], dim=1))
        if use_aux:
            logits = logits + self.aux(mean)
        return logits


def all_hooks(model: nn.Module) -> int:
    """Number of forward (pre-)hooks registered anywhere in ``model``.

    Also checks that torch's side tables (hooks taking kwargs) hold no stale entries.
    """
    for m in model.modules():
        assert set(m._forward_hooks_with_kwargs) <= set(m._forward_hooks)
        assert set(m._forward_pre_hooks_with_kwargs) <= set(m._forward_pre_hooks)
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_sequential_outputs_match_submodules_run_by_hand() -> None:
    model = make_sequential().eval()
    x = torch.randn(2, 3, 8, 8)
    with FeatureExtractor(model, ["layer2", "layer2.0", "relu1:input", "fc:input"]) as fx:
        logits = model(x)
    pre = model.conv1(x)
    h = model.relu1(pre)
    conv2 = model.layer2[0](h)
    layer2 = model.layer2(h)
    embedding = model.flatten(model.pool(layer2))
    assert_close(fx["layer2.0"], conv2)
    assert_close(fx["layer2"], layer2)
    assert_close(fx["relu1:input"], pre)  # pre-activation: what the ReLU was fed
    assert_close(fx["fc:input"], embedding)  # the pooled embedding
    assert_close(model.fc(fx["fc:input"]), logits)
    assert list(fx.features) == ["layer2", "layer2.0", "relu1:input", "fc:input"]
    assert fx.tensor("layer2") is fx["layer2"]
    assert fx.calls == {"layer2": 1, "layer2.0": 1, "relu1:input": 1, "fc:input": 1}


def test_custom_forward_shared_module_tuple_output() -> None:
    model = TinyNet().eval()
    x = torch.randn(3, 3, 6, 6)
    paths = ["blocks.1", "blocks.0.conv", "shared", "shared:input", "pair", "head:input"]
    with FeatureExtractor(model, paths) as fx:
        model(x)
    h0 = F.relu(model.stem(x))
    b0 = model.blocks[0](h0)
    b1 = model.blocks[1](b0)
    first = model.shared(b1)
    second_in = F.relu(first)
    second = model.shared(second_in)
    mean, peak = second.mean(dim=(2, 3)), second.amax(dim=(2, 3))
    assert_close(fx["blocks.0.conv"], model.blocks[0].conv(h0))
    assert_close(fx["blocks.1"], b1)
    # a shared module keeps the last call and counts the calls
    assert fx.calls["shared"] == 2 and fx.calls["shared:input"] == 2
    assert_close(fx["shared"], second)
    assert_close(fx["shared:input"], second_in)
    assert_close(fx["head:input"], torch.cat([mean, peak], dim=1))
    # a tuple output is stored as returned; tensor() refuses it clearly
    assert isinstance(fx["pair"], tuple) and len(fx["pair"]) == 2
    assert_close(fx["pair"][1], peak)
    with pytest.raises(FeatureTypeError, match=r"'pair' is a tuple of 2.*not a tensor"):
        fx.tensor("pair")


def test_module_not_called_raises_clear_key_error() -> None:
    model = TinyNet().eval()
    x = torch.randn(2, 3, 6, 6)
    fx = FeatureExtractor(model, ["aux", "aux:input", "head"])
    with pytest.raises(ModuleNotCalledError, match="no forward pass"):
        fx["aux"]
    with fx:
        model(x, use_aux=True)
        assert "aux" in fx and fx.calls["aux"] == 1
        model(x)  # a new pass: values of the previous one are dropped
    assert "aux" not in fx and fx.calls["aux"] == 0
    assert list(fx.features) == ["head"]
    with pytest.raises(KeyError) as info:
        fx["aux:input"]
    assert isinstance(info.value, ModuleNotCalledError)
    assert isinstance(info.value, KDTutorError)
    assert "'aux' was not called during the last forward pass" in str(info.value)
    with pytest.raises(FeatureNotRequestedError, match="Did you mean 'head'"):
        fx["haed"]


def test_each_forward_overwrites_and_clear_empties() -> None:
    model = make_sequential().eval()
    with FeatureExtractor(model, ["fc:input"]) as fx:
        model(torch.randn(2, 3, 8, 8))
        model(torch.randn(5, 3, 8, 8))
        assert fx["fc:input"].shape == (5, 8)
        assert fx.calls["fc:input"] == 1
        fx.clear()
        assert fx.features == {} and fx.calls["fc:input"] == 0
        with pytest.raises(ModuleNotCalledError):
            fx["fc:input"]


def test_gradients_flow_unless_detached() -> None:
    model = make_sequential()
    x = torch.randn(2, 3, 8, 8)
    with FeatureExtractor(model, ["layer2", "relu1:input"]) as fx:
        model(x)
    (fx["layer2"].square().sum() + fx["relu1:input"].sum()).backward()
    for param in [model.conv1.weight, model.layer2[0].weight, model.layer2[1].weight]:
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert model.fc.weight.grad is None  # after layer2: not on the path of the loss

    model.zero_grad(set_to_none=True)
    with FeatureExtractor(model, ["layer2", "relu1:input", "pool"], detach=True) as fx:
        out = model(x)
    for path in fx.paths:
        assert not fx[path].requires_grad and fx[path].grad_fn is None
    assert out.requires_grad  # the model's own output keeps its graph
    with pytest.raises(RuntimeError):
        fx["layer2"].sum().backward()


def test_detach_reaches_into_tuples() -> None:
    model = TinyNet()
    with FeatureExtractor(model, ["pair"], detach=True) as fx:
        model(torch.randn(2, 3, 6, 6))
    assert all(not t.requires_grad for t in fx["pair"])


def test_hooks_removed_on_exit_even_after_an_exception() -> None:
    model = TinyNet()
    paths = ["stem", "blocks.0.bn:input", "shared", "pair"]
    assert all_hooks(model) == 0
    with FeatureExtractor(model, paths) as fx:
        assert fx.attached and all_hooks(model) == len(paths) + 1  # + the root's pass marker
    assert not fx.attached and all_hooks(model) == 0

    with pytest.raises(RuntimeError, match="boom"), FeatureExtractor(model, paths):
        model(torch.randn(1, 3, 6, 6))
        raise RuntimeError("boom")
    assert all_hooks(model) == 0
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())

    fx = FeatureExtractor(model, paths).attach()
    fx.attach()  # idempotent
    assert all_hooks(model) == len(paths) + 1
    model(torch.randn(1, 3, 6, 6))
    fx.remove()
    fx.remove()
    assert all_hooks(model) == 0
    assert fx["stem"].shape == (1, 6, 6, 6)  # values stay readable after removal


def test_nested_and_reentrant_extractors() -> None:
    model = make_sequential().eval()
    x = torch.randn(2, 3, 8, 8)
    outer = FeatureExtractor(model, ["layer2", "fc"])
    inner = FeatureExtractor(model, ["layer2", "relu1:input"], detach=True)
    with outer:
        with inner:
            model(x)
            assert_close(inner["layer2"], outer["layer2"])
            assert inner["layer2"] is not outer["layer2"]
        assert all_hooks(model) == 3  # only the outer extractor's
        model(x[:1])
        assert outer["fc"].shape == (1, 5)
        assert inner["layer2"].shape[0] == 2  # the inner one no longer listens
        with outer:  # re-entering the same extractor keeps its hooks until the outer exit
            pass
        assert outer.attached
    assert all_hooks(model) == 0


def test_unknown_path_suggests_closest_and_registers_nothing() -> None:
    model = make_sequential()
    with pytest.raises(UnknownNameError) as info:
        FeatureExtractor(model, ["conv1", "layr2"])
    message = str(info.value)
    assert "'layr2'" in message and "did you mean 'layer2'" in message
    assert "list_paths(model)" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, KDTutorError)
    assert all_hooks(model) == 0

    with pytest.raises(UnknownNameError, match="did you mean 'layer2:input'"):
        FeatureExtractor(model, ["layr2:input"])
    with pytest.raises(UnknownNameError, match=r"feature paths 'cnov1'.*'fcc'"):
        FeatureExtractor(model, ["cnov1", "fcc"])
    with pytest.raises(UnknownNameError):
        FeatureExtractor(model, [""])  # the root itself is not a feature path
    assert all_hooks(model) == 0


def test_bad_path_lists() -> None:
    model = make_sequential()
    with pytest.raises(ValueError, match="at least one"):
        FeatureExtractor(model, [])
    with pytest.raises(TypeError, match="strings"):
        FeatureExtractor(model, [2])  # type: ignore[list-item]
    fx = FeatureExtractor(model, ["fc", "conv1", "fc"])
    assert fx.paths == ("fc", "conv1")  # duplicates kept once, first occurrence
    assert FeatureExtractor(model, "fc").paths == ("fc",)


def test_list_paths() -> None:
    model = make_sequential()
    assert list_paths(model) == [
        "conv1", "relu1", "layer2", "layer2.0", "layer2.1", "layer2.2",
        "pool", "flatten", "fc",
    ]  # fmt: skip
    assert "layer2" not in list_paths(model, leaf_only=True)
    assert "" not in list_paths(model)
    assert "blocks.1.bn" in list_paths(TinyNet(), leaf_only=True)


def test_feature_shapes_and_modes_restored() -> None:
    model = make_sequential().train()
    model.layer2[1].eval()  # a frozen BatchNorm must stay in eval mode
    stats = model.layer2[1].running_mean.clone()
    shapes = feature_shapes(model, ["conv1", "layer2", "fc:input", "fc"], (2, 3, 16, 16))
    assert shapes == {
        "conv1": torch.Size([2, 4, 16, 16]),
        "layer2": torch.Size([2, 8, 8, 8]),
        "fc:input": torch.Size([2, 8]),
        "fc": torch.Size([2, 5]),
    }
    assert model.training and model.conv1.training and not model.layer2[1].training
    assert torch.equal(model.layer2[1].running_mean, stats)
    assert all_hooks(model) == 0 and torch.is_grad_enabled()
    with pytest.raises(FeatureTypeError):
        feature_shapes(TinyNet(), ["pair"], (1, 3, 6, 6))
    with pytest.raises(ModuleNotCalledError):
        feature_shapes(TinyNet(), ["aux"], (1, 3, 6, 6))


def test_evaluating_restores_mixed_modes_even_after_an_error() -> None:
    model = make_sequential().train()
    model.layer2[1].eval()  # a frozen BatchNorm inside a training model
    before = {name: m.training for name, m in model.named_modules()}
    with evaluating(model) as inside:
        assert inside is model
        assert not any(m.training for m in model.modules())
    assert {name: m.training for name, m in model.named_modules()} == before
    with pytest.raises(RuntimeError, match="boom"), evaluating(model):
        raise RuntimeError("boom")
    assert {name: m.training for name, m in model.named_modules()} == before
    # nested: the inner block restores the submodule, the outer one the rest
    with evaluating(model):
        with evaluating(model.layer2):
            pass
        assert not model.layer2.training
    assert {name: m.training for name, m in model.named_modules()} == before
    model.eval()
    with evaluating(model):
        pass
    assert not any(m.training for m in model.modules())


def test_probe_features_runs_in_eval_mode_without_gradients() -> None:
    model = make_sequential().train()
    stats = model.layer2[1].running_mean.clone()
    x = torch.randn(2, 3, 16, 16)
    out, features = probe_features(model, x, ["layer2", "fc:input"])
    assert list(features) == ["layer2", "fc:input"]
    with evaluating(model), torch.no_grad():
        expected = model(x)
    assert_close(out, expected)
    assert not out.requires_grad and not features["layer2"].requires_grad
    assert features["fc:input"].shape == (2, 8)
    assert torch.equal(model.layer2[1].running_mean, stats)  # batch norm did not update
    assert model.training and all_hooks(model) == 0 and torch.is_grad_enabled()


def test_docstring_examples_run() -> None:
    import doctest

    import kdtutor.features

    result = doctest.testmod(kdtutor.features, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
