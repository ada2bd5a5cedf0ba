"""Chapter 5's commands at smoke scale: ``kdtutor bench --suite architecture``, ``kdtutor
chain`` and ``kdtutor search``, their results checked against the package's own runs, and
their refusals of bad input (exit status 2, one clear line, no traceback)."""

from __future__ import annotations

import csv
import json
import shlex

import pytest
import torch

from kdtutor.bench.architecture import (
    ARCHITECTURE_COLUMNS,
    FAMILY,
    deit_schemes,
    run_architecture_suite,
    searched_schemes,
    suite_command,
)
from kdtutor.bench.knowledge import PRESETS, run_one
from kdtutor.bench.schemes import SCHEME_COLUMNS, load_schemes
from kdtutor.cli import _architecture_extra, build_parser, main

torch.set_num_threads(1)

W8 = FAMILY["w8"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))


def header(path):
    return tuple(next(line for line in path.read_text().splitlines() if not line.startswith("#"))
                 .split(","))  # fmt: skip


def test_bench_architecture_writes_its_columns_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "architecture.csv"
    argv = ["bench", "--suite", "architecture", "--preset", "smoke", "--schemes",
            "scratch,kd_w32", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "scheme/network" in printed and "kd_w32/student" in printed
    assert header(out) == ARCHITECTURE_COLUMNS
    rows = {r["method"]: r for r in load_schemes(out)[0]}
    assert set(rows) == {"scratch/student", "kd_w32/student"}
    assert (
        rows["kd_w32/student"]["correct"]
        == run_one(PRESETS["smoke"].pairs[0], "kd", 0, PRESETS["smoke"])["correct"]
    )
    table = printed[printed.index("scheme/network") :]
    kd_line = next(line for line in table.splitlines() if line.startswith("kd_w32/student"))
    assert f"{rows['kd_w32/student']['teacher_acc']:.2f}" in kd_line


def test_deit_and_searched_options_add_the_rows_the_package_would_run(tmp_path, capsys):
    """``--deit adamw`` runs deit_schemes("adamw")'s rows and ``--searched TAG=SPEC``
    searched_schemes(SPEC, TAG)'s: the same predictions image by image as the package's
    own suite given those schemes."""
    out = tmp_path / "cli.csv"
    argv = ["bench", "--suite", "architecture", "--preset", "smoke", "--seeds", "0",
            "--deit", "adamw", "--searched", f"mini={W8}", "--schemes", "vit_alone,kd_mini",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    cli = {r["method"]: r for r in load_schemes(out)[0]}
    assert set(cli) == {"vit_alone/student", "kd_mini/student"}
    assert cli["kd_mini/student"]["student"] == W8
    extra = (*deit_schemes("adamw"), *searched_schemes(W8, "mini"))
    package = run_architecture_suite(
        "smoke", schemes=["vit_alone", "kd_mini"], extra=extra, seeds=[0],
        out=tmp_path / "package.csv", log=None,
    )  # fmt: skip
    for row in package:
        assert cli[row["method"]]["correct"] == row["correct"], row["method"]
        assert cli[row["method"]]["hparams"] == row["hparams"]


def test_the_suite_command_of_a_page_makes_the_rows_it_names():
    """suite_command's flags, parsed by the CLI, give back the extra schemes it was given."""
    extra = (*deit_schemes("adamw"), *searched_schemes(W8, "halving"))
    command = suite_command(["kd_w48", "deit_soft", "scratch_halving"], extra)
    argv = shlex.split(command)
    assert argv[:2] == ["kdtutor", "bench"]
    args = build_parser().parse_args(argv[1:])
    assert args.schemes == "kd_w48,deit_soft,scratch_halving" and args.jobs == 2
    assert sorted(map(repr, _architecture_extra(args))) == sorted(map(repr, extra))
    assert "--deit" not in suite_command(["kd_w48"], extra)
    assert "--deit sgd" in suite_command(["vit_alone"], deit_schemes("sgd"))


def test_bench_schemes_still_writes_the_schemes_columns(tmp_path, capsys):
    out = tmp_path / "schemes.csv"
    argv = ["bench", "--suite", "schemes", "--preset", "smoke", "--schemes", "scratch",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert header(out) == SCHEME_COLUMNS
    assert "scratch/student" in capsys.readouterr().out


def test_chain_all_paths_one_of_which_is_plain_kd_and_stores_its_stages(tmp_path, capsys):
    out, store = tmp_path / "chain.json", tmp_path / "store"
    argv = ["chain", "zoo:shapes_cnn_large", W8, "cnn_wide_s2", "--preset", "smoke",
            "--all-paths", "--store", str(store), "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [p["path"] for p in report["paths"]] == [
        ["zoo:shapes_cnn_large", "cnn_wide_s2"],
        ["zoo:shapes_cnn_large", W8, "cnn_wide_s2"],
    ]
    assert report["method"] == "takd" and report["teacher"]["params"] == 1_175_786
    # the direct path is TAKD's one step, KD's loss: the knowledge suite's KD run
    direct = report["paths"][0]["stages"][0]
    knowledge = run_one(PRESETS["smoke"].pairs[0], "kd", 0, PRESETS["smoke"])
    assert direct["test_acc"] == pytest.approx(knowledge["last_acc"], abs=1e-3)
    assert direct["params"] == 24_346 and not direct["stored"]
    assert report["paths"][1]["stages"][0]["params"] == 74_498
    assert printed.count("path zoo:shapes_cnn_large") == 2
    # again: every stage comes from the store, with the same accuracy
    assert main([*argv[:-3], "-q"]) == 0
    assert capsys.readouterr().out.count("stored") == 3


def test_search_prints_the_winner_and_keeps_its_scores(tmp_path, capsys):
    memo = tmp_path / "search.csv"
    argv = ["search", "--preset", "smoke", "--pool", "4", "--eta", "2", "--out", str(memo), "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    with memo.open() as handle:
        scores = list(csv.DictReader(handle))
    assert len(scores) == 4 + 2  # 4 candidates at 1 epoch, the best 2 at 2
    best = max((r for r in scores if r["epochs"] == "2"), key=lambda r: float(r["score"]))
    assert f"best: {best['spec']}" in printed
    assert f'--student "{best["spec"]}"' in printed
    assert all(float(r["flops"]) <= 1_618_560 for r in scores)  # resnet8_half_s2's FLOPs
    argv = ["search", "--preset", "smoke", "--pool", "4", "--strategy", "random",
            "--out", str(memo), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert "0 trained now" in capsys.readouterr().out  # the 1-epoch scores are shared


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chain", "cnn_large", "cnn_wide_s2", "--preset", "smoke"], "untrained network"),
        (["chain", "zoo:shapes_cnn_large", "cnn_wide_s2", "--all-paths"], "needs assistants"),
        (["chain", "zoo:shapes_cnn_large", "cnn_wdie_s2", "--preset", "smoke"], "cnn_wide_s2"),
        (["chain", "zoo:shapes_cnn_large", "cnn_wide_s2", "--method", "scratch",
          "--preset", "smoke"], "trains without a teacher"),
        (["chain", "zoo:nope", "cnn_wide_s2", "--preset", "smoke"], "unknown zoo teacher"),
        (["chain", "zoo:shapes_cnn_large", "cnn_wide_s2", "--out", "/no/such/dir/x.json"],
         "does not exist"),
        (["search", "--strategy", "random", "--eta", "3", "--preset", "smoke"], "--epochs"),
        (["search", "--strategy", "halving", "--epochs", "3", "--preset", "smoke"],
         "--min-epochs"),
        (["search", "--teacher", "cnn_large", "--preset", "smoke"], "untrained"),
        (["search", "--preset", "smoke", "--out", "/no/such/dir/s.csv"], "does not exist"),
        (["bench", "--suite", "architecture", "--preset", "mnist5k"], "smoke or book"),
        (["bench", "--suite", "architecture", "--preset", "smoke", "--methods", "kd"],
         "--schemes"),
        (["bench", "--suite", "architecture", "--preset", "smoke", "--schemes", "kd_w33"],
         "Did you mean 'kd_w32'"),
        (["bench", "--suite", "architecture", "--preset", "smoke", "--searched", "w8"],
         "TAG=SPEC"),
        (["bench", "--suite", "architecture", "--preset", "smoke", "--searched",
          "w8=cnn_tiny:w.pt"], "registry model spec"),
        (["bench", "--suite", "schemes", "--preset", "smoke", "--deit", "sgd"],
         "--suite architecture only"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["chain"],
        ["chain", "zoo:shapes_cnn_large"],
        ["chain", "zoo:shapes_cnn_large", "cnn_wide_s2", "--store", "s", "--no-store"],
        ["search", "--strategy", "evolution"],
        ["search", "--pool", "0"],
        ["search", "--budget-mflops", "-1"],
    ],
)
def test_argparse_misuse_prints_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: kdtutor" in capsys.readouterr().err
