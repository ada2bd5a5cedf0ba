"""``kdtutor bench --speed``: the hand-written baseline loop and the side-by-side timing engine.

No assertion on the measured numbers: the machine is shared and noisy; these tests check that
the engine runs, reports consistently and that the baseline computes kdtutor's KD loss.
"""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from kdtutor.bench.plain import plain_kd_epoch
from kdtutor.bench.speed import (
    SPEED_PRESETS,
    VARIANTS,
    SpeedPreset,
    default_speed_path,
    format_speed_table,
    run_speed,
)
from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError, UnknownNameError
from kdtutor.methods import build_distiller
from kdtutor.models import build_model
from kdtutor.zoo import load_teacher


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed") / "speed_smoke.json"
    lines = []
    result = run_speed("smoke", device="cpu", out=out, command="test", log=lines.append)
    return result, out, lines


def test_smoke_run_reports_every_variant_with_consistent_ratios(smoke):
    result, _, lines = smoke
    spec = SPEED_PRESETS["smoke"]
    assert list(result["variants"]) == list(VARIANTS)
    for v in result["variants"].values():
        assert len(v["epochs_s"]) == spec.epochs
        assert v["median_s"] > 0 and v["min_s"] <= v["median_s"] <= v["max_s"]
        assert v["images_per_s"] == pytest.approx(result["images_per_epoch"] / v["median_s"])
        assert v["peak_rss_mb"] > 0 and v["rss_growth_mb"] >= 0
        assert v["cuda_max_allocated_mb"] is None
        assert v["spread"] == v["max_s"] / v["min_s"]
        assert math.isfinite(v["last_loss"])
    med = {k: v["median_s"] for k, v in result["variants"].items()}
    ratios = result["ratios"]
    assert ratios["kdtutor/hand"]["value"] == med["kdtutor"] / med["hand"]
    assert ratios["kdtutor+cache/scratch"]["value"] == med["kdtutor+cache"] / med["scratch"]
    assert ratios["kdtutor+cache/kdtutor"]["value"] == med["kdtutor+cache"] / med["kdtutor"]
    assert ratios["kdtutor/hand"]["target"] == 1.05
    assert ratios["kdtutor+cache/scratch"]["target"] == 1.15
    for r in ratios.values():
        if r["target"] is not None:
            assert r["pass"] == (r["value"] <= r["target"])
    assert result["cache_build_seconds"] > 0
    assert result["noisy"] == any(
        v["median_s"] > 1.5 * v["min_s"] for v in result["variants"].values()
    )
    assert result["provenance"]["command"] == "test"
    assert result["provenance"]["device"] == "cpu"
    assert result["images_per_epoch"] == spec.train_size
    assert len(lines) == spec.warmup + spec.epochs + 1  # one per round, then "wrote ..."


def test_smoke_json_is_written_and_the_table_names_everything(smoke):
    result, out, _ = smoke
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    table = format_speed_table(result)
    for name in VARIANTS:
        assert any(line.startswith(name + " ") for line in table.splitlines())
    assert "kdtutor/hand" in table and "target <= 1.05" in table
    assert "kdtutor+cache/scratch" in table and "target <= 1.15" in table
    assert ("PASS" in table) or ("MISS" in table)


def test_a_custom_preset_runs_and_torch_threads_are_restored():
    before = torch.get_num_threads()
    threads = 2 if before != 2 else 1
    tiny = SpeedPreset(
        "tiny", "mnist5k", "mnist5k_cnn", "cnn_tiny", 64, 32, epochs=1, warmup=0, threads=threads
    )
    result = run_speed(tiny, device="cpu", log=None)
    assert result["provenance"]["threads"] == threads
    assert result["preset"]["name"] == "tiny"
    assert torch.get_num_threads() == before


def test_bad_preset_values_are_refused():
    with pytest.raises(ConfigError, match=r"speed\.epochs must be > 0"):
        SpeedPreset("bad", "mnist5k", "mnist5k_cnn", "cnn_tiny", 64, 32, epochs=0)


def test_plain_loop_computes_kdtutors_kd_loss_on_one_batch():
    train = load_dataset("mnist5k", "train", size=64)
    teacher = load_teacher("mnist5k_cnn")
    torch.manual_seed(0)
    student = build_model("cnn_tiny", num_classes=10, in_channels=1)
    x, y = train.batch(torch.arange(len(train)))

    # kdtutor: the kd distiller's named losses on the batch, before any step
    distiller = build_distiller("kd", copy.deepcopy(student), teacher).train()
    _, losses = distiller(x, y)
    kdtutor_loss = float(sum(v.detach() for v in losses.values()))

    # independent: the formula with log_target KL written out by hand
    with torch.no_grad():
        s, t = student.train()(x), teacher(x)
        p_t = F.softmax(t / 4.0, dim=1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / 4.0, dim=1))).sum(1).mean()
        by_hand = float(0.1 * F.cross_entropy(s, y) + 0.9 * 16.0 * kl)

    # the plain loop: one step over the whole batch returns the loss taken before its step
    plain_student = copy.deepcopy(student)
    optimizer = torch.optim.SGD(plain_student.parameters(), lr=0.05)
    plain_loss = plain_kd_epoch(
        plain_student, teacher, x, y, optimizer, batch_size=len(train), device="cpu"
    )
    assert plain_loss == pytest.approx(kdtutor_loss, rel=1e-5)
    assert plain_loss == pytest.approx(by_hand, rel=1e-5)
    # and it stepped
    before = dict(student.named_parameters())
    assert any(not torch.equal(p, before[k]) for k, p in plain_student.named_parameters())


def test_plain_loop_trains():
    train = load_dataset("mnist5k", "train", size=128)
    teacher = load_teacher("mnist5k_cnn")
    torch.manual_seed(0)
    student = build_model("cnn_tiny", num_classes=10, in_channels=1)
    x, y = train.batch(torch.arange(len(train)))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    losses = [
        plain_kd_epoch(
            student, teacher, x, y, optimizer, batch_size=16, generator=generator, device="cpu"
        )
        for _ in range(8)
    ]
    assert losses[-1] < 0.75 * losses[0], losses  # about 14.2 -> 7.4


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(UnknownNameError, match=r"speed preset 'smok'.*'smoke'"):
        run_speed("smok", log=None)


def test_missing_output_folder_is_refused_before_running(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(KDTutorError, match=str(missing)):
        run_speed("smoke", device="cpu", out=missing / "speed.json", log=None)


def test_default_path_honours_kdtutor_results(monkeypatch, tmp_path):
    monkeypatch.setenv("KDTUTOR_RESULTS", str(tmp_path))
    assert default_speed_path("book") == tmp_path / "speed_book.json"
    monkeypatch.delenv("KDTUTOR_RESULTS")
    assert default_speed_path("smoke").parts[-3:] == ("data", "results", "speed_smoke.json")


def test_cli_speed_smoke_prints_the_table_and_writes_json(tmp_path, capsys):
    from kdtutor.cli import main

    out = tmp_path / "speed.json"
    assert main(["bench", "--speed", "--preset", "smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kdtutor/hand" in printed and "kdtutor+cache/scratch" in printed
    assert json.loads(out.read_text())["preset"]["name"] == "smoke"
    assert main(["bench", "--speed", "--preset", "mnist5k", "--out", str(out)]) == 2
