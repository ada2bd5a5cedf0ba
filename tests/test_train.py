"""The trainer: history, schedules, teacher-output cache, non-finite losses, bit-identical resume."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _resume import interrupted_then_resumed

from kdtutor.cache import CacheRefusedError, cache_key, clear_memory_cache
from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.errors import CheckpointError, NonFiniteLossError
from kdtutor.methods import Distiller, build_distiller
from kdtutor.models import build_model
from kdtutor.train import TrainConfig, fit, lr_factor, parse_seeds, run_seeds


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train", size=300), load_dataset("digits", "test", size=100)


def net(hidden=(32,), dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return build_model(
        "mlp", num_classes=10, in_channels=1, image_size=8, hidden=hidden, dropout=dropout
    )


def teacher_net():
    return net(hidden=(64, 64), seed=123).eval()


def test_history_records_each_loss_and_summary(digits):
    result = fit(build_distiller("kd", net(), teacher_net()), *digits, epochs=3, batch_size=64)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for record in result.history:
        assert set(record["losses"]) == {"ce", "kd"}
        assert record["loss"] == pytest.approx(sum(record["losses"].values()))
        assert 0 <= record["train_acc"] <= 100 and 0 <= record["test_acc"] <= 100
        assert record["seconds"] > record["eval_seconds"] > 0
    accs = [h["test_acc"] for h in result.history]
    assert result.best_acc == max(accs) and result.last_acc == accs[-1]
    assert result.history[result.best_epoch - 1]["test_acc"] == result.best_acc


def test_schedules():
    cos = TrainConfig(epochs=10, lr=0.1)
    assert lr_factor(0, cos) == 1.0 and lr_factor(5, cos) == pytest.approx(0.5)
    step = TrainConfig(epochs=240, schedule="step", milestones=(150, 180, 210))
    assert [lr_factor(e, step) for e in (149, 150, 180, 239)] == pytest.approx(
        [1, 0.1, 0.01, 0.001]
    )
    warm = TrainConfig(epochs=10, warmup_epochs=2, schedule="constant")
    assert [lr_factor(e, warm) for e in (0, 1, 2)] == pytest.approx([1 / 3, 2 / 3, 1])


def test_recorded_lr_follows_cosine(digits):
    result = fit(net(), *digits, epochs=4, lr=0.2, batch_size=100)
    lrs = [h["lr"] for h in result.history]
    assert lrs == pytest.approx([0.2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"batch_size": -1},
        {"lr": 0},
        {"optimizer": "rmsprop"},
        {"milestones": (0,)},
        {"epoch": 3},
    ],
)
def test_bad_config_is_a_clear_error(digits, bad):
    with pytest.raises(ConfigError):
        fit(net(), *digits, **bad)


def test_cache_hit_identical_and_skips_teacher(digits):
    clear_memory_cache()
    train, test = digits
    teacher = teacher_net()
    d = build_distiller("kd", net(), teacher)
    cache = d.cache_teacher(train, None, mode=True)
    idx = torch.tensor([5, 0, 299, 17])
    x, _ = train.batch(idx)
    with torch.no_grad():
        direct = teacher(x)
    assert torch.equal(cache.lookup(idx).logits, direct)
    assert torch.equal(d.teacher_outputs(x, idx).logits, direct)

    d = build_distiller("kd", net(), teacher)
    fit(d, train, test, epochs=3, batch_size=50, cache=True, amp=False)  # the cache above: fp32
    assert (
        d.teacher_forward_calls == 0
    )  # the cache built above for the same teacher and data was reused
    clear_memory_cache()
    d = build_distiller("kd", net(), teacher)
    fit(d, train, test, epochs=3, batch_size=50, cache=True)
    assert d.teacher_forward_calls == 1  # one pass over 300 images (batch 512) to fill the cache
    d = build_distiller("kd", net(), teacher)
    fit(d, train, test, epochs=3, batch_size=50, cache=False)
    assert d.teacher_forward_calls == 3 * 6  # every batch of every epoch


def test_cache_gives_same_training_as_no_cache(digits):
    """In float32 the teacher's outputs do not depend on its batch, so the cache changes
    nothing; under bfloat16 autocast they may, by bfloat16's rounding."""
    clear_memory_cache()
    results = []
    for cache in (True, False):
        d = build_distiller("kd", net(), teacher_net())
        fit(d, *digits, epochs=2, batch_size=64, cache=cache, amp=False)
        results.append(d.student.state_dict())
    assert all(torch.allclose(results[0][k], results[1][k], atol=1e-6) for k in results[0])


def test_cache_key_tracks_teacher_data_and_transform(digits):
    train, _ = digits
    t1, t2 = teacher_net(), teacher_net()
    assert cache_key(t1, train, None, []) == cache_key(t2, train, None, [])
    with torch.no_grad():
        next(t2.parameters())[0, 0] += 1e-3
    assert cache_key(t1, train, None, []) != cache_key(t2, train, None, [])
    assert cache_key(t1, train, None, []) != cache_key(
        t1, load_dataset("digits", "train", size=299), None, []
    )
    assert cache_key(t1, train, None, []) != cache_key(t1, train, None, ["0"])


def test_cache_refused_under_random_augmentation():
    train = load_dataset("shapes", "train", size=64)
    teacher = build_model("cnn_micro", num_classes=10)
    d = build_distiller("kd", build_model("cnn_micro", num_classes=10), teacher)
    with pytest.raises(CacheRefusedError, match="random"):
        fit(d, train, epochs=1, batch_size=32, augment="crop_flip", cache=True)
    fit(d, train, epochs=1, batch_size=32, augment="crop_flip", cache="auto")
    assert d.teacher_forward_calls == 2  # auto: no cache, the teacher runs on each augmented batch


class Exploding(Distiller):
    name = "exploding"
    requires_teacher = False

    def forward(self, x, y, index=None):
        logits = self.student(x)
        bad = torch.tensor(float("nan")) if self.calls >= 3 else torch.tensor(0.0)
        self.calls += 1
        return logits, {"ce": F.cross_entropy(logits, y), "boom": bad}


def test_nan_loss_stops_with_step_and_name(digits, tmp_path):
    d = Exploding(net())
    d.calls = 0
    with pytest.raises(
        NonFiniteLossError, match=r"'boom' became nan at epoch 1, step 3.*learning rate"
    ):
        fit(d, *digits, epochs=2, batch_size=50, checkpoint=tmp_path / "ck.pt")


@pytest.mark.parametrize("cache", [True, False])
def test_resume_is_bit_identical(digits, tmp_path, cache):
    """Stop after epoch 2 of 5 and resume: the final weights equal the uninterrupted run's,
    and so does its history (the test accuracy of every epoch)."""
    clear_memory_cache()
    cfg = {"epochs": 5, "batch_size": 32, "lr": 0.05, "cache": cache, "seed": 7}

    def make():
        return build_distiller("kd", net(dropout=0.3, seed=1), teacher_net())

    runs = interrupted_then_resumed(
        make, *digits, tmp_path, after=2, same=("test_acc",), config=cfg
    )
    assert [h["epoch"] for h in runs.result.history] == [1, 2, 3, 4, 5]


def test_resume_into_another_model_is_refused(digits, tmp_path):
    path = tmp_path / "run.pt"
    fit(net(), *digits, epochs=1, checkpoint=path)
    with pytest.raises(CheckpointError, match="another model"):
        fit(net(hidden=(16,)), *digits, epochs=2, resume=path)
    with pytest.raises(CheckpointError, match="method 'scratch'"):
        fit(build_distiller("kd", net(), teacher_net()), *digits, epochs=2, resume=path)


def test_run_seeds_mean_and_std(digits):
    run = run_seeds(lambda s: net(seed=s), *digits, seeds=[0, 1, 2], epochs=1, batch_size=64)
    bests = np.array([r.best_acc for r in run.results])
    assert run.best == pytest.approx((bests.mean(), bests.std(ddof=1)))
    assert len({r.best_acc for r in run.results}) > 1 or bests.std() == 0


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds(5) == [5]
    for bad in ("", "a,b", "1,1", [-1], "0,-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_cache_works_with_batchnorm_teacher():
    """BatchNorm buffers include a 0-dim counter; the weights digest must hash it too."""
    train = load_dataset("shapes", "train", size=40)
    teacher = build_model("cnn_micro", num_classes=10).eval()
    d = build_distiller("kd", build_model("cnn_micro", num_classes=10), teacher)
    cache = d.cache_teacher(train, None, mode=True)
    x, _ = train.batch(torch.arange(40))
    with torch.no_grad():
        assert torch.equal(cache.lookup(torch.arange(40)).logits, teacher(x))
    before = cache_key(teacher, train, None, [])
    bn = next(m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.add_(0.5)
    assert cache_key(teacher, train, None, []) != before
