"""Nothing is lost when training is killed (issue 7): SIGKILL a training process at random
moments, again and again; after every kill the checkpoint and the results file on disk are
complete (the previous or the new version, never a partial one), and ``resume=`` continues
from where the last complete checkpoint left off until the run finishes."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdtutor.io import safe_load
from kdtutor.train import CHECKPOINT_FORMAT

SCRIPT = r"""
import sys
import torch
from kdtutor.data import load_dataset
from kdtutor.io import atomic_write_json
from kdtutor.models import build_model
from kdtutor.train import fit

torch.set_num_threads(1)
folder = sys.argv[1]
checkpoint, results = f"{folder}/run.pt", f"{folder}/results.json"
resume = checkpoint if len(sys.argv) > 2 else None
train = load_dataset("digits", "train", size=64)
history = []

def log(line):
    history.append(line)
    atomic_write_json(results, {"lines": history, "padding": "x" * 200_000})

fit(build_model("cnn_micro", num_classes=10, in_channels=1), train, epochs=EPOCHS,
    batch_size=16, checkpoint=checkpoint, resume=resume, log=log, progress=False)
print("finished")
"""

EPOCHS = 150
TRIALS = 8


def _launch(folder: Path, resume: bool) -> subprocess.Popen:
    script = folder / "train.py"
    script.write_text(SCRIPT.replace("EPOCHS", str(EPOCHS)))
    argv = [sys.executable, str(script), str(folder)] + (["resume"] if resume else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _check_files(folder: Path) -> int:
    """Every file is complete or a hidden temporary; returns the checkpoint's epoch (or -1)."""
    for path in folder.iterdir():
        if path.name not in {"train.py", "run.pt", "results.json"}:
            assert path.name.startswith((".run.pt.", ".results.json.")), path.name
            assert path.name.endswith(".tmp"), path.name
    if (folder / "results.json").exists():
        data = json.loads((folder / "results.json").read_text())  # complete JSON, or it raises
        assert len(data["padding"]) == 200_000
    if not (folder / "run.pt").exists():
        return -1
    ckpt = safe_load(folder / "run.pt")  # a truncated file would raise CheckpointError
    assert ckpt["format"] == CHECKPOINT_FORMAT
    assert len(ckpt["history"]) == ckpt["epoch"] + 1
    return int(ckpt["epoch"])


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_at_random_moments_never_leaves_a_partial_file(tmp_path):
    rng = random.Random(7)
    epochs_seen = []
    outcomes = []
    for _trial in range(TRIALS):
        before = (tmp_path / "run.pt").stat().st_mtime_ns if (tmp_path / "run.pt").exists() else 0
        proc = _launch(tmp_path, resume=before > 0)
        # wait until this process has written a checkpoint, then kill it at a random moment
        # while it trains and writes one checkpoint and one 200 kB JSON file per epoch
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            path = tmp_path / "run.pt"
            if path.exists() and path.stat().st_mtime_ns != before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            outcomes.append("killed")
        else:
            outcomes.append("finished")
        proc.wait(timeout=60)
        epochs_seen.append(_check_files(tmp_path))
        if outcomes[-1] == "finished":
            break
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    print(f"outcomes {outcomes}, checkpoint epochs {epochs_seen}, temporaries left {leftovers}")
    # the checkpoint only moves forward, and the killed runs made progress overall
    assert epochs_seen == sorted(epochs_seen) and epochs_seen[0] >= 0, epochs_seen
    assert outcomes.count("killed") >= 3, outcomes
    # resume until done
    proc = _launch(tmp_path, resume=(tmp_path / "run.pt").exists())
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert _check_files(tmp_path) == EPOCHS - 1
    history = safe_load(tmp_path / "run.pt")["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))


def test_every_file_the_package_writes_goes_through_the_atomic_writers():
    """Only kdtutor/io.py opens files for writing; everything else calls its atomic helpers
    (checkpoints, zoo weights and manifest, results JSON/CSV, disk caches). ``torch.save`` and
    ``np.savez`` are allowed only into in-memory buffers."""
    import ast

    root = Path(__file__).resolve().parents[1] / "kdtutor"
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "io.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", "")
            )
            if name in {"write_text", "write_bytes", "savefig"}:
                offenders.append(f"{path.name}:{node.lineno} {name}")
            if name == "open" and any(
                isinstance(a, ast.Constant)
                and isinstance(a.value, str)
                and set(a.value) & {"w", "a"}
                for a in [*node.args[1:], *(k.value for k in node.keywords if k.arg == "mode")]
            ):
                offenders.append(f"{path.name}:{node.lineno} open for writing")
            if name in {"save", "savez"} and node.args:
                target = node.args[1] if name == "save" and len(node.args) > 1 else node.args[0]
                if not (isinstance(target, ast.Name) and target.id == "buffer"):
                    offenders.append(f"{path.name}:{node.lineno} {name} to a file")
    assert not offenders, offenders
