"""The views suite: every variant runs, the summary is the mean of the runs, bad input is clear."""

import json

import numpy as np
import pytest

from kdtutor.bench.views import VIEWS_PRESETS, format_views_table, run_views, summarize_views
from kdtutor.cli import main
from kdtutor.errors import KDTutorError, UnknownNameError


def test_smoke_views_suite_writes_every_variant(tmp_path):
    out = tmp_path / "views.json"
    payload = run_views("smoke", out=out, log=None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    spec = VIEWS_PRESETS["smoke"]
    names = [r["variant"] for r in payload["summary"]]
    assert names[:2] == ["no augmentation (cached)", "fresh augmentation (no cache)"]
    assert len(names) == 2 + len(spec.views) and len(payload["runs"]) == len(names) * len(
        spec.seeds
    )
    for row in payload["summary"]:
        accs = [r["best_acc"] for r in payload["runs"] if r["variant"] == row["variant"]]
        assert row["best_mean"] == pytest.approx(np.mean(accs))
    table = format_views_table(payload)
    assert all(name in table for name in names)


def test_summary_mean_and_sample_std_by_hand():
    runs = [
        {"variant": "a", "best_acc": 90.0, "last_acc": 89.0, "seconds": 1.0},
        {"variant": "a", "best_acc": 92.0, "last_acc": 91.0, "seconds": 3.0},
        {"variant": "b", "best_acc": 50.0, "last_acc": 50.0, "seconds": 2.0},
    ]
    table = summarize_views(runs, ["b", "a", "missing"])
    assert [r["variant"] for r in table] == ["b", "a"]
    a = table[1]
    assert a["best_mean"] == 91.0 and a["best_std"] == pytest.approx(np.sqrt(2.0))
    assert a["seconds_mean"] == 2.0 and table[0]["best_std"] == 0.0


def test_views_bad_input(tmp_path):
    with pytest.raises(UnknownNameError, match="views preset"):
        run_views("huge", out=tmp_path / "x.json")
    with pytest.raises(KDTutorError, match="does not exist"):
        run_views("smoke", out=tmp_path / "missing" / "x.json")
    assert (
        main(
            ["bench", "--suite", "views", "--preset", "mnist5k", "--out", str(tmp_path / "y.json")]
        )
        == 2
    )
