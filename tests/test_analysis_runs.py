"""kdtutor.analysis.runs: the losses of every training step, mean loss curves over seeds."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdtutor.analysis import StepLosses, mean_loss_curves
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError
from kdtutor.methods import build_distiller
from kdtutor.models import build_model
from kdtutor.train import FitResult, fit


def test_step_losses_records_every_training_step_of_both_fitnet_stages():
    torch.manual_seed(0)
    train = load_dataset("shapes", "train", size=60)
    teacher = build_model("cnn_tiny").eval()
    distiller = build_distiller(
        "fitnet", build_model("cnn_micro"), teacher, init_epochs=1, ce_weight=0.1, kd_weight=0.9
    )
    with StepLosses(distiller) as recorder:
        fit(distiller, train, train, epochs=2, batch_size=32, cache=False)
    assert len(recorder.steps) == 4  # 2 epochs x 2 batches; evaluation is not recorded
    assert recorder.names == ["hint", "ce", "kd"]
    hint, ce = recorder.series("hint"), recorder.series("ce")
    assert all(math.isfinite(v) for v in hint[:2]) and all(math.isnan(v) for v in hint[2:])
    assert all(math.isnan(v) for v in ce[:2]) and all(math.isfinite(v) for v in ce[2:])
    # the hook is gone after the block
    distiller(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert len(recorder.steps) == 4


def test_step_losses_values_are_the_distillers_losses():
    torch.manual_seed(0)
    distiller = build_distiller("scratch", build_model("cnn_micro"))
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with StepLosses(distiller) as recorder:
        logits, losses = distiller(x, y)
        distiller.eval()
        distiller(x, y)  # eval-mode calls are not training steps
    assert recorder.steps == [{"ce": pytest.approx(float(F.cross_entropy(logits.detach(), y)))}]
    assert float(losses["ce"].detach()) == pytest.approx(recorder.steps[0]["ce"])


def test_step_losses_wants_a_distiller():
    with pytest.raises(TypeError, match="build_distiller"):
        StepLosses(build_model("cnn_micro"))


def _history(values):
    return [{"epoch": i + 1, "losses": {"ce": v, "kd": 2 * v}} for i, v in enumerate(values)]


def test_mean_loss_curves_averages_over_runs():
    runs = [_history([1.0, 0.5]), _history([3.0, 1.5])]
    curves = mean_loss_curves(runs)
    assert list(curves) == ["ce", "kd"]
    np.testing.assert_allclose(curves["ce"], [2.0, 1.0])
    np.testing.assert_allclose(curves["kd"], [4.0, 2.0])
    result = FitResult("kd", runs[0], best_acc=0.0, best_epoch=1, last_acc=0.0, seconds=0.0)
    np.testing.assert_allclose(mean_loss_curves([result])["ce"], [1.0, 0.5])


def test_mean_loss_curves_rejects_bad_input():
    with pytest.raises(KDTutorError):
        mean_loss_curves([])
    with pytest.raises(KDTutorError, match="different numbers of epochs"):
        mean_loss_curves([_history([1.0]), _history([1.0, 2.0])])
