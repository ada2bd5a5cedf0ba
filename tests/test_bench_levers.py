"""kdtutor bench --levers: the CPU speed levers measured side by side (smoke preset)."""

import json
import statistics

import pytest

from kdtutor.bench.levers import LEVERS, summarize_runs
from kdtutor.cli import main
from kdtutor.train.config import cpu_bf16_supported


def test_levers_smoke_through_the_cli(tmp_path, capsys):
    out = tmp_path / "levers.json"
    assert main(["bench", "--levers", "--preset", "smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    levers = {r["lever"] for r in result["steps"]}
    assert "fp32" in levers and ("bf16" in levers) == cpu_bf16_supported()
    base = next(r["ms_per_step"] for r in result["steps"] if r["lever"] == "fp32")
    for row in result["steps"]:
        assert row["speedup"] == pytest.approx(base / row["ms_per_step"])
    assert result["provenance"]["cpu_bf16"] == cpu_bf16_supported()
    assert "KD runs" in capsys.readouterr().out


def test_a_lever_the_config_does_not_know_is_impossible():
    from kdtutor.train import TrainConfig

    for fields in LEVERS.values():
        TrainConfig(**fields).validate()


def test_run_summary_is_mean_std_and_speedup_over_fp32():
    rows = [
        {"student": "s", "lever": lever, "best_acc": b, "last_acc": b - 1, "s_per_epoch": t}
        for lever, b, t in [
            ("fp32", 80, 2.0),
            ("fp32", 82, 2.2),
            ("bf16", 81, 1.0),
            ("bf16", 79, 1.2),
        ]
    ]
    summary = {r["lever"]: r for r in summarize_runs(rows)}
    assert summary["fp32"]["best_mean"] == 81 and summary["bf16"]["best_mean"] == 80
    assert summary["bf16"]["best_std"] == pytest.approx(statistics.stdev([81, 79]))
    assert summary["bf16"]["speedup"] == pytest.approx(2.1 / 1.1)
