"""Experiments as files (--config with overrides), run folders (--run-dir, --resume,
--overwrite, --save-student, metrics.jsonl, TensorBoard), user checkpoints on the command line,
teachers refused on other data, logging levels and ``kdtutor plot``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from kdtutor.cli import main
from kdtutor.config import ConfigError
from kdtutor.experiment import Experiment, apply_overrides, load_experiment
from kdtutor.models import build_model
from kdtutor.train import TrainConfig

EXPERIMENT = {
    "dataset": "shapes",
    "teacher": "zoo:shapes_cnn_large",
    "student": "cnn_tiny",
    "method": "kd",
    "hparams": {"T": 4},
    "seeds": [0],
    "train_size": 256,
    "test_size": 128,
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.05},
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))


def _write(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "kdtutor", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _start_until(argv: list[str], cwd: Path, run_dir: Path, lines: int) -> subprocess.Popen:
    """Start ``kdtutor ARGV`` and return once its metrics.jsonl holds ``lines`` epochs (or it
    ended, or 240 s passed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdtutor", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= lines:
            break
        time.sleep(0.02)
    return proc


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "eval_seconds")} for r in rows]


# -- the experiment file ---------------------------------------------------------------------
def test_overrides_reach_every_train_field_and_hparams():
    values = apply_overrides(EXPERIMENT, ["train.lr=0.1", "epochs=5", "hparams.T=8", "seeds=0-2"])
    assert values["train"]["lr"] == 0.1 and values["train"]["epochs"] == 5
    assert values["hparams"]["T"] == 8
    experiment = load_experiment(None, [], base=values)
    assert experiment.seeds == (0, 1, 2)
    # every TrainConfig field can be set by its bare name and lands in train, except a name
    # the experiment has too (``task``: the experiment's, which the run's data follow)
    shared = set(TrainConfig.__dataclass_fields__) & set(Experiment.__dataclass_fields__)
    assert shared == {"task"}
    for name in set(TrainConfig.__dataclass_fields__) - shared:
        assert name in apply_overrides({}, [f"{name}=1"])["train"]
    assert apply_overrides({}, ["task=depth"]) == {"task": "depth"}
    assert apply_overrides({}, ["train.task=depth"]) == {"train": {"task": "depth"}}
    assert EXPERIMENT["train"]["lr"] == 0.05  # the input is not changed


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.lrr=0.1"], "Did you mean 'lr'"),
        (["epochz=3"], "Did you mean 'epochs'"),
        (["train.schedule=step"], "needs milestones"),
        (["train.epochs=0"], "train.epochs must be > 0"),
        (["lr"], "KEY=VALUE"),
        (["dataset.name=x"], "only train.<field> and hparams.<name>"),
    ],
)
def test_inconsistent_or_unknown_settings_are_refused(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        load_experiment(None, overrides, base=EXPERIMENT)


def test_a_yaml_file_round_trips_through_the_run_folder(tmp_path):
    config = _write(tmp_path / "exp.yaml", EXPERIMENT)
    code = main(["distill", "--config", str(config), "epochs=1", "--run-dir", str(tmp_path / "r")])
    assert code == 0
    written = load_experiment(tmp_path / "r" / "config.yaml")
    assert written == load_experiment(config, ["epochs=1"])
    assert written.train["epochs"] == 1
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["experiment"]["train"]["epochs"] == 1
    assert results["scale"] == os.environ["KDTUTOR_SCALE"]  # resolved, not the file's None
    assert len(results["runs"][0]["history"]) == 1


def test_flags_win_over_the_file_and_overrides_over_flags(tmp_path):
    config = _write(tmp_path / "exp.yaml", EXPERIMENT)
    main(["distill", "--config", str(config), "--epochs", "2", "--lr", "0.2", "lr=0.3",
          "--run-dir", str(tmp_path / "r")])  # fmt: skip
    written = load_experiment(tmp_path / "r" / "config.yaml")
    assert (written.train["epochs"], written.train["lr"]) == (2, 0.3)


# -- run folders -----------------------------------------------------------------------------
def test_an_existing_run_is_never_overwritten_silently(tmp_path, capsys):
    config = _write(tmp_path / "exp.yaml", {**EXPERIMENT, "train": {"epochs": 1}})
    run = ["distill", "--config", str(config), "--run-dir", str(tmp_path / "r")]
    assert main(run) == 0
    before = (tmp_path / "r" / "last-seed0.pt").read_bytes()
    capsys.readouterr()
    assert main(run) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "r" / "last-seed0.pt").read_bytes() == before
    assert main([*run, "--overwrite"]) == 0
    assert len(_metrics(tmp_path / "r")) == 1  # the old lines are gone, not appended to
    assert main([*run, "--resume", "--overwrite"]) == 2
    # resuming with other settings is refused, naming the difference
    assert main([*run, "--resume", "lr=0.5"]) == 2
    assert "train.lr" in capsys.readouterr().err


# long enough that the interrupt, sent after epoch 2, lands before the run ends even on a
# loaded machine (with 6 epochs it sometimes finished first)
EPOCHS = 12


def test_sigint_then_resume_equals_an_uninterrupted_run(tmp_path):
    config = _write(
        tmp_path / "exp.yaml", {**EXPERIMENT, "train_size": 1024, "train": {"epochs": EPOCHS}}
    )
    common = ["distill", "--config", str(config), "--save-student", "--no-tensorboard"]
    whole = _cli(*common, "--run-dir", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    proc = _start_until([*common, "--run-dir", "cut"], tmp_path, tmp_path / "cut", lines=2)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = len(_metrics(tmp_path / "cut"))
    assert 2 <= done < EPOCHS
    resumed = _cli("distill", "--run-dir", "cut", "--resume", "--save-student", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / "student-seed0.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "student-seed0.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _without_times(_metrics(tmp_path / "cut")) == _without_times(
        _metrics(tmp_path / "whole")
    )


def test_metrics_jsonl_holds_every_finished_epoch_after_a_kill(tmp_path):
    config = _write(
        tmp_path / "exp.yaml", {**EXPERIMENT, "train_size": 1024, "train": {"epochs": 8}}
    )
    argv = ["distill", "--config", str(config), "--run-dir", "r"]
    proc = _start_until(argv, tmp_path, tmp_path / "r", lines=3)
    proc.kill()
    proc.communicate()
    rows = _metrics(tmp_path / "r")  # every line parses
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) >= 3
    checkpoint = torch.load(tmp_path / "r" / "last-seed0.pt", weights_only=False)
    assert len(checkpoint["history"]) in (len(rows), len(rows) - 1)
    assert _cli("distill", "--run-dir", "r", "--resume", cwd=tmp_path).returncode == 0
    assert [r["epoch"] for r in _metrics(tmp_path / "r")] == list(range(1, 9))


def test_best_weights_and_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    config = _write(tmp_path / "exp.yaml", EXPERIMENT)
    assert main(["distill", "--config", str(config), "--run-dir", str(tmp_path / "r")]) == 0
    rows = _metrics(tmp_path / "r")
    best = max(rows, key=lambda r: r["test_acc"])
    saved = torch.load(tmp_path / "r" / "best-seed0.pt", weights_only=True)
    assert saved["epoch"] == min(r["epoch"] for r in rows if r["test_acc"] == best["test_acc"])
    assert saved["dataset"] == "shapes" and saved["model"] == "cnn_tiny"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "r" / "tensorboard" / "seed0"))
    events.Reload()
    loss = [e.value for e in events.Scalars("loss/total")]
    assert loss == pytest.approx([r["loss"] for r in rows], rel=1e-6)


# -- models and checkpoints on the command line ----------------------------------------------
def test_a_saved_student_loads_with_build_model_and_teaches_through_the_cli(tmp_path, capsys):
    config = _write(
        tmp_path / "exp.yaml",
        {**EXPERIMENT, "teacher": None, "method": "scratch", "student": "cnn_small", "hparams": {}},
    )
    assert main(["distill", "--config", str(config), "--run-dir", str(tmp_path / "t"),
                 "--save-student"]) == 0  # fmt: skip
    weights = tmp_path / "t" / "student-seed0.pt"
    model = build_model("cnn_small", num_classes=10, weights_path=weights)
    saved = torch.load(weights, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    capsys.readouterr()
    code = main(["distill", "--config", str(config), "method=kd", "hparams.T=4",
                 "--teacher", f"cnn_small:{weights}", "--student", "cnn_tiny", "--run-dir",
                 str(tmp_path / "s")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    # the architecture is checked before training: these weights are not a cnn_tiny
    code = main(["distill", "--config", str(config), "method=kd", "--teacher",
                 f"cnn_tiny:{weights}"])  # fmt: skip
    assert code == 2
    assert "holds a 'cnn_small' model" in capsys.readouterr().err
    # and what it was trained on: shapes, not mnist5k
    code = main(["distill", "--dataset", "mnist5k", "--train-size", "64", "--test-size", "32",
                 "--student", "cnn_tiny", "--teacher", f"cnn_small:{weights}"])  # fmt: skip
    assert code == 2
    assert "3-channel" in capsys.readouterr().err


def test_a_zoo_teacher_is_refused_on_another_dataset(capsys):
    code = main(["distill", "--dataset", "mnist5k", "--train-size", "64", "--test-size", "32",
                 "--student", "cnn_tiny", "--teacher", "zoo:shapes_cnn_large"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "trained on 'shapes', this run uses 'mnist5k'" in err
    assert "Traceback" not in err


def test_a_timm_model_builds_offline():
    pytest.importorskip("timm")
    from kdtutor.specs import build_from_spec

    model = build_from_spec("timm:resnet18", num_classes=7, in_channels=1, role="student")
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)


# -- logging and plots -----------------------------------------------------------------------
def test_verbosity_flags_set_the_log_level(tmp_path):
    config = _write(tmp_path / "exp.yaml", {**EXPERIMENT, "train": {"epochs": 2}})
    quiet = _cli("distill", "--config", str(config), "-q", cwd=tmp_path)
    normal = _cli("distill", "--config", str(config), cwd=tmp_path)
    verbose = _cli("distill", "--config", str(config), "-v", cwd=tmp_path)
    assert "seed 0:" not in quiet.stderr and "epoch" not in quiet.stderr
    assert "seed 0:" in normal.stderr and "epoch   1" not in normal.stderr
    assert "epoch   1" in verbose.stderr and "epoch   2" in verbose.stderr
    assert all(p.returncode == 0 and "method kd" in p.stdout for p in (quiet, normal, verbose))


def test_plot_draws_the_learning_curves_of_a_run(tmp_path, capsys):
    config = _write(tmp_path / "exp.yaml", {**EXPERIMENT, "train": {"epochs": 2}})
    out = tmp_path / "results.json"
    assert main(["distill", "--config", str(config), "--run-dir", str(tmp_path / "r"),
                 "--out", str(out)]) == 0  # fmt: skip
    assert main(["plot", str(tmp_path / "r")]) == 0
    assert main(["plot", str(out), "--out", str(tmp_path / "c.png")]) == 0
    from kdtutor.curves import plot_learning_curves

    fig = plot_learning_curves(tmp_path / "r")
    loss_ax, score_ax = fig.axes
    assert loss_ax.get_xlabel() == "epoch" and score_ax.get_ylabel() == "test acc"
    assert list(loss_ax.lines[0].get_ydata()) == [r["loss"] for r in _metrics(tmp_path / "r")]
    assert (tmp_path / "r" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(tmp_path / "nothing")]) == 2


def test_experiment_is_a_frozen_validated_dataclass():
    with pytest.raises(ConfigError, match="unknown key 'studnet'"):
        load_experiment(None, [], base={**EXPERIMENT, "studnet": "x"})
    experiment = Experiment(dataset="shapes", student="cnn_tiny", seeds="0,1")
    assert experiment.seeds == (0, 1)
