"""The command line, end to end, and its behaviour on misuse."""

import json
import math
import subprocess
import sys

import pytest

from kdtutor.cli import main


def test_distill_kd_on_shapes_smoke_end_to_end(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdtutor",
            "distill",
            "--dataset",
            "shapes",
            "--teacher",
            "zoo:shapes_cnn_large",
            "--student",
            "cnn_tiny",
            "--method",
            "kd",
            "--epochs",
            "1",
            "--seeds",
            "0,1",
            "--scale",
            "smoke",
            "--set",
            "T=4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "method kd" in proc.stdout and "mean" in proc.stdout
    data = json.loads(out.read_text())
    assert data["method"] == "kd" and data["seeds"] == [0, 1] and data["hparams"] == {"T": 4}
    assert len(data["runs"]) == 2 and set(data["runs"][0]["history"][0]["losses"]) == {"ce", "kd"}
    assert 0 <= data["best_mean"] <= 100


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["distill", "--dataset", "shapes", "--student", "cnn_tiny", "--method", "kdd"],
            "Did you mean 'kd'",
        ),
        (
            ["distill", "--dataset", "shapez", "--student", "cnn_tiny", "--method", "scratch"],
            "unknown dataset",
        ),
        (
            ["distill", "--dataset", "digits", "--student", "cnn_tiny", "--method", "kd"],
            "needs a teacher",
        ),
        (
            [
                "distill",
                "--dataset",
                "digits",
                "--student",
                "x",
                "--seeds",
                "a,b",
                "--method",
                "scratch",
            ],
            "seeds",
        ),
        (["zoo", "train"], "needs a teacher name"),
        (["zoo", "verify", "nope"], "unknown zoo teacher"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["distill"],
        ["distill", "--dataset", "shapes", "--student", "cnn_tiny", "--epochs", "0"],
        ["frobnicate"],
        [],
    ],
)
def test_argparse_misuse_prints_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: kdtutor" in capsys.readouterr().err


def test_listing_commands(capsys):
    assert main(["methods"]) == 0
    assert "Hinton" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "shapes" in out and "mnist5k" in out and "KDTUTOR_DATA" in out
    assert main(["models", "--family", "small_cnn"]) == 0
    assert "cnn_large" in capsys.readouterr().out
    assert main(["zoo", "list"]) == 0
    assert "shapes_cnn_large" in capsys.readouterr().out


@pytest.mark.parametrize(
    "method",
    [
        "kd", "dkd", "dist", "tfkd", "fitnet", "at", "nst", "ft", "ab", "fsp", "vid", "ofd",
        "reviewkd", "rkd", "sp", "cc", "pkt", "crd", "irg",
    ],
)  # fmt: skip
def test_every_method_distils_through_the_cli_on_shapes(method, tmp_path, capsys):
    from kdtutor.methods import get_method

    teacher = "zoo:shapes_cnn_large" if get_method(method).requires_teacher else "none"
    sets = ["--set", "num_negatives=32"] if method == "crd" else []
    out = tmp_path / "r.json"
    argv = ["distill", "--dataset", "shapes", "--teacher", teacher, "--student", "cnn_tiny",
            "--method", method, "--epochs", "1", "--train-size", "96", "--test-size", "32",
            "--scale", "smoke", "--out", str(out), *sets]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    runs = json.loads(out.read_text())["runs"]
    losses = runs[0]["history"][0]["losses"]
    assert losses and all(math.isfinite(v) for v in losses.values())
