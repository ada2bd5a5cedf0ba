"""kdtutor.models.split: trunk + head give the model's outputs and FLOPs, share its parameters,
and refuse untraceable models, unknown stages and skip connections across the cut."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from kdtutor.errors import KDTutorError, UnknownNameError
from kdtutor.models import build_model, model_summary, set_feature_paths
from kdtutor.models.split import SplitError, split_at_stage

INPUT = (2, 3, 32, 32)  # the registry's CNNs are built for 32x32 colour images

# (model, stage): the default (last) stage and one in the middle, for the five families
CASES = [
    ("cnn_wide_s2", None),
    ("cnn_wide_s2", "stages.1"),
    ("cnn_tiny_s2", None),
    ("cnn_tiny_s2", "stages.1"),
    ("resnet8_half_s2", None),
    ("resnet8_half_s2", "layer2"),
    ("wrn_16_2", None),
    ("wrn_16_2", "block2"),
    ("mobilenetv2", None),
    ("mobilenetv2", "blocks.2"),
]


def built(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=10).eval()


@pytest.mark.parametrize(("name", "stage"), CASES)
def test_head_of_trunk_is_the_model(name: str, stage: str | None) -> None:
    model = built(name)
    trunk, head = split_at_stage(model, stage)
    x = torch.randn(INPUT)
    with torch.no_grad():
        h = trunk(x)
        assert_close(head(h), model(x))
    # the trunk ends where the stage starts: its output has the stage input's channels
    chosen = model.get_submodule(stage or model.stage_names[-1])
    first_conv = next(m for m in chosen.modules() if isinstance(m, nn.Conv2d))
    assert h.shape[1] == first_conv.in_channels


@pytest.mark.parametrize(
    "name", ["cnn_wide_s2", "cnn_tiny_s2", "resnet8_half_s2", "wrn_16_2", "mobilenetv2"]
)
def test_trunk_and_head_flops_add_up_to_the_models(name: str) -> None:
    # FlopCounterMode counts every convolution and matrix product of a forward. Each operation
    # of the model's forward lands in exactly one part, so the two counts must add up to the
    # model's: an operation dropped from both parts, or run in both, would break the sum, and
    # both parts doing real work shows the cut is not at either end.
    model = built(name)
    trunk, head = split_at_stage(model)
    with torch.no_grad():
        middle = tuple(trunk(torch.zeros(INPUT)).shape)
    whole = model_summary(model, INPUT, latency_runs=0).flops
    first = model_summary(trunk, INPUT, latency_runs=0).flops
    second = model_summary(head, middle, latency_runs=0).flops
    assert first > 0 and second > 0
    assert first + second == whole


def test_cnn_wide_s2_trunk_flops_by_hand() -> None:
    # 2 FLOPs per multiply-add, 3x3 convolutions, one image: stage 0 is 3 -> 16 channels on
    # the 16x16 output of the stride-2 stem, stage 1 pools to 8x8, then 16 -> 32 channels,
    # stage 2 pools to 4x4, then 32 -> 64; the classifier is 64 -> 10.
    stage0 = 2 * 16 * 16 * 16 * 3 * 9
    stage1 = 2 * 8 * 8 * 32 * 16 * 9
    stage2 = 2 * 4 * 4 * 64 * 32 * 9
    fc = 2 * 64 * 10
    model = built("cnn_wide_s2")
    for stage, trunk_flops in (("stages.1", stage0), ("stages.2", stage0 + stage1)):
        trunk, _ = split_at_stage(model, stage)
        assert model_summary(trunk, (1, 3, 32, 32), latency_runs=0).flops == trunk_flops
    _, head = split_at_stage(model)
    assert model_summary(head, (1, 32, 8, 8), latency_runs=0).flops == stage2 + fc
    assert (
        model_summary(model, (1, 3, 32, 32), latency_runs=0).flops == stage0 + stage1 + stage2 + fc
    )


def test_trunk_and_head_train_the_models_own_parameters() -> None:
    model = built("resnet8_half_s2")
    trunk, head = split_at_stage(model, "layer2")
    ids = {id(p) for p in model.parameters()}
    trunk_ids = {id(p) for p in trunk.parameters()}
    head_ids = {id(p) for p in head.parameters()}
    assert trunk_ids | head_ids == ids and not trunk_ids & head_ids
    assert head.get_submodule("fc").weight is model.fc.weight

    fc_before = model.fc.weight.detach().clone()
    stem_before = model.conv1.weight.detach().clone()
    x, y = torch.randn(INPUT), torch.tensor([1, 7])
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    F.cross_entropy(head(trunk(x)), y).backward()
    optimizer.step()
    assert not torch.equal(model.fc.weight, fc_before)  # the head's step moved the model
    assert torch.equal(model.conv1.weight, stem_before)  # the trunk's weights were not stepped
    assert model.conv1.weight.grad is not None  # ... but the gradient reached them
    with torch.no_grad():
        assert_close(head(trunk(x)), model(x))

    # ONE's branches are deep copies of the head: same function, parameters of their own
    branch = copy.deepcopy(head)
    assert not {id(p) for p in branch.parameters()} & ids
    with torch.no_grad():
        assert_close(branch(trunk(x)), model(x))


@pytest.mark.parametrize(("name", "cls"), [("vgg8", "VGG"), ("vit_tiny", "VisionTransformer")])
def test_untraceable_models_are_refused(name: str, cls: str) -> None:
    # both branch on the input's size in forward (VGG's extra pooling, ViT's position grid)
    with pytest.raises(
        SplitError, match=f"needs a traceable model; torch.fx could not trace {cls}"
    ) as info:
        split_at_stage(built(name))
    assert isinstance(info.value, KDTutorError)
    assert "control flow" in str(info.value) and "dml" in str(info.value)


def test_an_unknown_stage_is_refused_with_the_valid_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown stage 'layer4'.*layer1, layer2, layer3"):
        split_at_stage(built("resnet8_half_s2"), "layer4")


class LongSkip(nn.Module):
    """``c(b(a(x))) + a(x)``: the skip from ``a`` crosses a cut at ``c``, not one at ``b``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        set_feature_paths(self, stages=("a", "b", "c"), embedding="c", num_classes=4)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(x)
        return self.c(self.b(h)) + h


def test_a_skip_across_the_cut_is_refused_and_one_from_the_stage_input_is_not() -> None:
    model = LongSkip().eval()
    x = torch.randn(2, 3, 8, 8)
    trunk, head = split_at_stage(model, "b")  # the head reads b's input twice: allowed
    with torch.no_grad():
        assert_close(head(trunk(x)), model(x))
    with pytest.raises(SplitError, match=r"'add' .* reads the output of module 'a' \(before it\)"):
        split_at_stage(model, "c")


def test_a_stage_called_twice_is_refused() -> None:
    class Twice(LongSkip):
        def forward(self, x: Tensor) -> Tensor:
            return self.b(self.b(self.a(x)))

    with pytest.raises(SplitError, match="calls stage 'b' 2 times"):
        split_at_stage(Twice(), "b")
