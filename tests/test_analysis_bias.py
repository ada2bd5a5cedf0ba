"""kdtutor.analysis.bias: errors by class, shifting the bias of some classes, the final layer."""

import pytest
import torch
from torch import nn

from kdtutor.analysis import errors_by_class, final_linear, shift_class_bias
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError
from kdtutor.methods import build_distiller
from kdtutor.models import build_model


def test_shift_class_bias_changes_only_that_bias_and_shifts_the_logit_exactly():
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, hidden=(16,), image_size=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shifted = shift_class_bias(model, {3: 3.5})
    # the original is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # only fc.bias[3] differs, by exactly 3.5
    after = shifted.state_dict()
    for k, v in before.items():
        if k == "fc.bias":
            diff = after[k] - v
            assert diff[3].item() == pytest.approx(3.5)
            assert torch.count_nonzero(torch.cat([diff[:3], diff[4:]])) == 0
        else:
            assert torch.equal(after[k], v), k
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        delta = shifted(x) - model(x)
    expected = torch.zeros(5, 10)
    expected[:, 3] = 3.5
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=0)


def test_shift_several_classes_and_distillers():
    student = build_model("mlp", num_classes=10, in_channels=1, hidden=(8,), image_size=8)
    teacher = build_model("mlp", num_classes=10, in_channels=1, hidden=(8,), image_size=8)
    distiller = build_distiller("kd", student, teacher, T=20)
    shifted = shift_class_bias(distiller, {7: -7.6, 8: -7.6})
    diff = shifted.fc.bias - student.fc.bias
    assert diff[7].item() == pytest.approx(-7.6) and diff[8].item() == pytest.approx(-7.6)
    assert torch.count_nonzero(diff[:7]) == 0 and diff[9].item() == 0


def test_final_linear_finds_the_head_or_says_why_not():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    assert final_linear(seq) is seq[3]
    assert final_linear(seq, layer="1") is seq[1]
    with pytest.raises(KDTutorError, match=r"no nn\.Linear"):
        final_linear(nn.Sequential(nn.Flatten(), nn.ReLU()))
    with pytest.raises(KDTutorError, match="no bias"):
        final_linear(nn.Sequential(nn.Linear(4, 3, bias=False)))
    with pytest.raises(KDTutorError, match=r"not an nn\.Linear"):
        final_linear(seq, layer="2")
    with pytest.raises(KDTutorError, match="has no module"):
        final_linear(seq, layer="head")
    with pytest.raises(ValueError, match="class indices"):
        shift_class_bias(seq, {5: 1.0})


def test_errors_by_class_matches_a_hand_loop():
    torch.manual_seed(1)
    data = load_dataset("mnist5k", "test", size=300)
    model = build_model("mlp", num_classes=10, in_channels=1, hidden=(32,), image_size=28)
    counts = errors_by_class(model, data, batch_size=64)
    hand = [0] * 10
    model.eval()
    with torch.no_grad():
        for i in range(len(data)):
            x, y = data[i]
            if int(model(x.unsqueeze(0)).argmax()) != y:
                hand[y] += 1
    assert counts.tolist() == hand
    assert counts.dtype == torch.int64
