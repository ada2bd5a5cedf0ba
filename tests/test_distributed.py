"""DistributedDataParallel on CPU: ``torchrun`` with 2 gloo processes matches one process.

Both runs use the same global batch; every process takes its slice of each global batch, DDP
averages the gradients weighted by each slice's share, so the final weights agree with the
single-process run up to floating-point summation order. The student (a 30-30 MLP) has no
batch norm and no dropout: on CPU each process would normalise with its own half-batch
statistics (SyncBatchNorm needs GPUs) and draw its own dropout masks, which are real
differences, not errors.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

COMMON = [
    "distill",
    "--dataset", "mnist5k",
    "--teacher", "zoo:mnist5k_cnn",
    "--student", "mlp_30",
    "--method", "kd",
    "--epochs", "2",
    "--train-size", "320",
    "--test-size", "100",
    "--batch-size", "63",  # 320 = 5 x 63 + 5: the last global batch splits 3 + 2
    "--device", "cpu",
    "--amp", "off", "--no-channels-last",  # float32: equal up to summation order (bf16: not)
]  # fmt: skip


def _run(args: list[str], tmp_path: Path, processes: int) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "KDTUTOR_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    if processes == 1:
        command = [sys.executable, "-m", "kdtutor", *args]
    else:
        command = [
            sys.executable, "-m", "torch.distributed.run",
            "--standalone", f"--nproc_per_node={processes}",
            "-m", "kdtutor", *args,
        ]  # fmt: skip
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize(
    "extra",
    [[], ["--augment", "crop", "--cache-views", "2", "--cache-location", "disk"]],
    ids=["plain", "fixed-views-disk-cache"],
)
def test_two_gloo_processes_match_one_process(tmp_path, extra):
    one = _run([*COMMON, *extra, "--checkpoint", "one.pt", "--out", "one.json"], tmp_path, 1)
    assert one.returncode == 0, one.stderr
    two = _run([*COMMON, *extra, "--checkpoint", "two.pt", "--out", "two.json"], tmp_path, 2)
    assert two.returncode == 0, two.stderr
    a, b = _weights(tmp_path / "one.pt"), _weights(tmp_path / "two.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key
    # rank 0 alone reports and writes: one table, one results file, one checkpoint
    assert two.stdout.count("method kd") == 1
    ckpt = torch.load(tmp_path / "two.pt", weights_only=True)
    assert [h["epoch"] for h in ckpt["history"]] == [1, 2]
    one_hist = torch.load(tmp_path / "one.pt", weights_only=True)["history"]
    for h1, h2 in zip(one_hist, ckpt["history"], strict=True):
        assert h1["test_acc"] == h2["test_acc"]
        assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-5)  # summed over both processes
    assert (tmp_path / "two.json").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_crd_refuses_to_run_distributed(tmp_path):
    args = [a if a != "kd" else "crd" for a in COMMON]
    result = _run([*args, "--student", "cnn_tiny", "--epochs", "1"], tmp_path, 2)
    assert result.returncode != 0
    assert "memory banks" in result.stderr and "one process" in result.stderr


def test_zoo_train_under_torchrun_writes_once_from_rank_0(tmp_path, monkeypatch):
    import json
    import shutil

    zoo = tmp_path / "zoo"
    shutil.copytree(ROOT / "kdtutor" / "zoo_data", zoo)
    before = json.loads((zoo / "manifest.json").read_text())["mnist5k_mlp"]
    monkeypatch.setenv("KDTUTOR_ZOO", str(zoo))
    result = _run(["zoo", "train", "mnist5k_mlp", "--epochs", "1"], tmp_path, 2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"sha256"') == 1  # one entry printed, by rank 0
    after = json.loads((zoo / "manifest.json").read_text())["mnist5k_mlp"]
    assert after["train_config"]["epochs"] == 1 and after["sha256"] != before["sha256"]
    assert not list(zoo.glob(".*.tmp"))
