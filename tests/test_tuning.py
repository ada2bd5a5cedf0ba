"""Equal tuning of the comparison (kdtutor.bench.tuning) and the presets' validation split."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdtutor.bench.knowledge import PRESETS, load_results, preset_data, run_suite
from kdtutor.bench.tuning import (
    FACTORS,
    load_tuning,
    run_tuned_suite,
    run_tuning,
    tunable_methods,
    tuned_factors,
    weights_for,
)
from kdtutor.cli import main
from kdtutor.data import load_dataset
from kdtutor.errors import DataNotFoundError, KDTutorError
from kdtutor.methods import get_method, list_methods

PAIR = "cnn_large->cnn_wide_s2"


def test_every_loss_weight_names_a_hyperparameter_of_its_method():
    for method in list_methods():
        cls = get_method(method)
        fields = {f.name for f in dataclasses.fields(cls.hparams_cls)}
        assert set(cls.loss_weights) <= fields, (method, cls.loss_weights)
    assert "scratch" not in tunable_methods() and "tfkd" not in tunable_methods()
    assert {"kd", "ft", "dkd", "irg", "crd"} <= set(tunable_methods())


def test_weights_for_multiplies_every_published_loss_weight():
    # published: FT beta 200, DKD alpha 1 and beta 8, IRG 1 / 0.16 / 0.16, KD 0.9
    assert weights_for("ft", 0.1, 240, None) == pytest.approx({"beta": 20.0})
    assert weights_for("dkd", 10.0, 240, None) == pytest.approx({"alpha": 10.0, "beta": 80.0})
    assert weights_for("irg", 0.01, 240, None) == pytest.approx(
        {"w_vertex": 0.01, "w_edge": 0.0016, "w_transform": 0.0016}
    )
    assert weights_for("kd", 1.0, 240, None) == pytest.approx({"kd_weight": 0.9})
    assert FACTORS == (0.01, 0.1, 1.0, 10.0)


def test_tuned_factor_is_the_best_validation_score_ties_to_the_published():
    rows = [
        {"method": "ft", "factor": 0.01, "last_acc": 70.0},
        {"method": "ft", "factor": 0.1, "last_acc": 71.0},
        {"method": "ft", "factor": 1.0, "last_acc": 40.0},
        {"method": "kd", "factor": 0.1, "last_acc": 80.0},
        {"method": "kd", "factor": 1.0, "last_acc": 80.0},  # a tie: the published weights win
        {"method": "kd", "factor": 10.0, "last_acc": 80.0},
        {"method": "at", "factor": 0.01, "last_acc": 60.0},  # a tie at equal distance from 1:
        {"method": "at", "factor": 10.0, "last_acc": 60.0},  # the larger factor, by the rule
    ]
    assert tuned_factors(rows) == {"ft": 0.1, "kd": 1.0, "at": 10.0}


def test_validation_images_follow_the_training_images_and_are_never_trained_on():
    preset = PRESETS["smoke"]
    train, val, test = (preset_data(preset, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (256, 128, 128)
    whole = load_dataset("shapes", "train", size=256 + 128)
    assert torch.equal(train.images, whole.images[:256])
    assert torch.equal(val.images, whole.images[256:])
    assert val.mean == train.mean and val.std == train.std
    with pytest.raises(KDTutorError, match="split must be"):
        preset_data(preset, "validation")
    with pytest.raises(KDTutorError, match="no validation split"):
        preset_data(PRESETS["repdistiller"], "val")


def test_tuning_runs_resume_and_the_tuned_suite_reuses_published_runs(tmp_path):
    tuning_csv, published, tuned = tmp_path / "t.csv", tmp_path / "k.csv", tmp_path / "kt.csv"
    rows = run_tuning("smoke", methods=["kd", "ft"], factors=(0.1, 1.0), out=tuning_csv, log=None)
    assert sorted((r["method"], r["factor"]) for r in rows) == [
        ("ft", 0.1), ("ft", 1.0), ("kd", 0.1), ("kd", 1.0)
    ]  # fmt: skip
    loaded, header = load_tuning(tuning_csv)
    assert "validation" in header["accuracies"] and {r["pair"] for r in loaded} == {PAIR}
    ft_tenth = next(r for r in loaded if r["method"] == "ft" and r["factor"] == 0.1)
    assert "beta=20.0" in ft_tenth["hparams"]
    logs: list[str] = []
    run_tuning("smoke", methods=["kd", "ft"], factors=(0.1, 1.0), out=tuning_csv, log=logs.append)
    assert logs[0].startswith("0 tuning runs to do")

    # pretend FT's best factor is 0.1 and KD's is 1: KD's runs are copied, FT's re-run
    for r in loaded:
        r["last_acc"] = {("ft", 0.1): 90.0, ("kd", 1.0): 90.0}.get((r["method"], r["factor"]), 1.0)
    from kdtutor.bench.knowledge import write_results
    from kdtutor.bench.tuning import TUNING_COLUMNS

    write_results(tuning_csv, ["preset: smoke"], loaded, TUNING_COLUMNS)
    run_suite("smoke", methods=["kd", "ft"], pairs=[PAIR], out=published, log=None)
    logs = []
    out = run_tuned_suite(
        "smoke", methods=["kd", "ft"], pairs=[PAIR], tuning=tuning_csv, published=published,
        out=tuned, log=logs.append,
    )  # fmt: skip
    assert "1 runs to do" in logs[0] and "1 copied" in logs[0]
    by_method = {r["method"]: r for r in load_results(tuned)[0]}
    assert len(out) == 2 and "beta=20.0" in by_method["ft"]["hparams"]
    kd_published = next(r for r in load_results(published)[0] if r["method"] == "kd")
    assert by_method["kd"]["correct"] == kd_published["correct"]
    with pytest.raises(DataNotFoundError, match="--tune"):
        run_tuned_suite("smoke", tuning=tmp_path / "none.csv", out=tmp_path / "x.csv")


def test_tune_command_line(tmp_path, capsys):
    out = tmp_path / "t.csv"
    args = ["bench", "--suite", "knowledge", "--preset", "smoke", "--tune", "--methods", "kd"]
    assert main([*args, "--out", str(out)]) == 0
    assert "kd        tuned factor x" in capsys.readouterr().out
    assert len(load_tuning(out)[0]) == len(FACTORS)
    assert main([*args, "--seeds", "0,1", "--out", str(out)]) == 2
    assert "--tune runs seed 0" in capsys.readouterr().err
    with pytest.raises(KDTutorError, match="positive"):
        run_tuning("smoke", methods=["kd"], factors=(0.0,), out=out, log=None)
