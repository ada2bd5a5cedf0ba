"""Early-stopped teachers (kdtutor.snapshots): ``fit``'s ``stop_after`` against the same run
trained to the end, snapshots against a direct run of the recipe, their records, cost and
refusals, and their use as a scheme's teacher and from the command line."""

from __future__ import annotations

import math

import pytest
import torch

from kdtutor import snapshots
from kdtutor.bench.architecture import ARCHITECTURE_COLUMNS
from kdtutor.bench.cost import teacher_cost
from kdtutor.bench.knowledge import PRESETS, preset_data
from kdtutor.bench.schemes import Scheme, run_schemes_suite
from kdtutor.cli import main
from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError
from kdtutor.models import build_model
from kdtutor.seeding import seed_everything
from kdtutor.specs import build_from_spec
from kdtutor.train import evaluate, fit
from kdtutor.train.config import TrainConfig
from kdtutor.zoo import MissingWeightsError, get_recipe

torch.set_num_threads(1)

W8 = "shapes_cnn_w8"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny():
    train = load_dataset("shapes", "train", size=192)
    test = load_dataset("shapes", "test", size=96)
    return train, test


def _recipe_run(train, test, epochs):
    """W8's recipe by hand: its model and seed, its settings, stopped after ``epochs``."""
    recipe = get_recipe(W8)
    seed_everything(recipe.seed)
    model = build_model(recipe.model, num_classes=10, in_channels=3, **recipe.model_kwargs)
    config = {**recipe.train, "seed": recipe.seed, "stop_after": epochs}
    return model, fit(model, train, test, config=config)


def test_stop_after_ends_the_run_where_the_full_schedule_has_it(tiny):
    train, test = tiny
    states, lrs = {}, []

    def keep(end):
        states[len(end.history)] = {k: v.clone() for k, v in end.student.state_dict().items()}

    settings = {"epochs": 4, "lr": 0.1, "batch_size": 64, "seed": 3, "schedule": "cosine"}
    seed_everything(3)
    full = build_model("cnn_tiny", num_classes=10, in_channels=3)
    history = fit(full, train, test, on_epoch=keep, **settings).history
    seed_everything(3)
    early = build_model("cnn_tiny", num_classes=10, in_channels=3)
    stopped = fit(early, train, test, stop_after=2, **settings).history
    assert len(stopped) == 2 and len(history) == 4
    lrs = [h["lr"] for h in stopped]
    # the cosine schedule of 4 epochs, not of 2: 0.1 then 0.1 (1 + cos(pi / 4)) / 2
    assert lrs == pytest.approx([0.1, 0.05 * (1 + math.cos(math.pi / 4))])
    for key, value in early.state_dict().items():
        torch.testing.assert_close(value, states[2][key], rtol=0, atol=0)
    assert [h["test_acc"] for h in stopped] == [h["test_acc"] for h in history[:2]]


@pytest.mark.parametrize(("value", "message"), [(0, "stop_after"), (5, "beyond the schedule")])
def test_stop_after_outside_the_schedule_is_refused(value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(epochs=4, stop_after=value).validate()


def test_snapshots_are_the_recipe_stopped_early_and_are_kept(tiny, monkeypatch):
    train, test = tiny
    records = snapshots.train_snapshots(W8, [2, 1], data=tiny, log=None)
    assert sorted(records) == [1, 2]
    assert records[1]["train_size"] == 192 and records[1]["schedule_epochs"] == 30
    for epoch in (1, 2):
        direct, result = _recipe_run(train, test, epoch)
        kept = snapshots.load_snapshot(f"{W8}@{epoch}", train_size=192)
        for key, value in direct.state_dict().items():
            torch.testing.assert_close(kept.state_dict()[key], value, rtol=0, atol=0)
        assert records[epoch]["test_acc"] == round(result.last_acc, 2)
        assert evaluate(kept, test) == pytest.approx(result.last_acc, abs=1e-9)
        assert not kept.training
    # kept: asking again trains nothing
    monkeypatch.setattr("kdtutor.train.fit", lambda *a, **k: pytest.fail("trained again"))
    assert snapshots.train_snapshots(W8, [1], data=tiny, log=None)[1] == records[1]


def test_a_snapshot_of_fewer_images_is_not_the_recipes_own(tiny):
    snapshots.train_snapshots(W8, [1], data=tiny, log=None)
    with pytest.raises(MissingWeightsError, match=f"kdtutor zoo train {W8} --snapshots 1"):
        snapshots.load_snapshot(f"{W8}@1")
    with pytest.raises(MissingWeightsError, match="--snapshots 1"):
        build_from_spec(f"zoo:{W8}@1", num_classes=10, in_channels=3, role="teacher")


def test_a_snapshot_costs_its_epochs_over_its_images(tiny):
    snapshots.train_snapshots(W8, [2], data=tiny, log=None)
    full = teacher_cost(W8).flops  # 30 epochs over the recipe's 20,000 images
    assert teacher_cost(f"zoo:{W8}@2", 192).flops == pytest.approx(full / (30 * 20_000) * 2 * 192)


@pytest.mark.parametrize(
    ("name", "message"),
    [(f"{W8}@30", "1 to 29"), (f"{W8}@0", "positive whole number"), (f"{W8}@x", "NAME@EPOCHS")],
)
def test_bad_snapshot_names_are_refused(name, message):
    with pytest.raises(KDTutorError, match=message):
        get_recipe(name)


def test_a_scheme_taught_by_a_snapshot_trains_it_once_on_the_presets_images(tmp_path):
    scheme = Scheme("kd_w8_e1", "kd", teacher=f"zoo:{W8}@1")
    rows = run_schemes_suite(
        "smoke", schemes=["kd_w8_e1"], seeds=[0], out=tmp_path / "s.csv", log=None,
        catalogue=(scheme,), columns=ARCHITECTURE_COLUMNS, pair_by="student",
    )  # fmt: skip
    preset = PRESETS["smoke"]
    size = len(preset_data(preset, "train"))
    record = snapshots.snapshot_record(f"{W8}@1", size)
    (row,) = rows
    assert row["teacher"] == f"{W8}@1"
    assert row["teacher_acc"] == pytest.approx(record["test_acc"], abs=0.01)
    assert float(row["prior_flops"]) == pytest.approx(teacher_cost(f"{W8}@1", size).flops)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["zoo", "train", W8, "--snapshots", "a,b"], "comma-separated"),
        (["zoo", "train", W8, "--snapshots", "2", "--epochs", "3"], "drop --epochs"),
        (["zoo", "train", W8, "--snapshots", "30"], "1 to 29"),
        (["zoo", "list", "--snapshots", "2"], "zoo train NAME"),
    ],
)
def test_cli_refuses_bad_snapshots(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
