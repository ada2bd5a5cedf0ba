"""Bad input gets a clear error: one table of cases, each with the exception type it must raise
and words its message must contain (the problem and the fix). See issue 7."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kdtutor.bench.knowledge import run_suite
from kdtutor.cache import CacheRefusedError
from kdtutor.cli import main
from kdtutor.config import ConfigError
from kdtutor.connectors import build_connector
from kdtutor.data import load_dataset
from kdtutor.errors import (
    CheckpointError,
    ChecksumError,
    DataFormatError,
    DataNotFoundError,
    KDTutorError,
    NonFiniteLossError,
    NotAModelError,
    ShapeMismatchError,
    UnknownNameError,
)
from kdtutor.features import FeatureExtractor
from kdtutor.io import atomic_write_json, safe_load
from kdtutor.launch import RunFolderError
from kdtutor.methods import build_distiller
from kdtutor.models import build_model
from kdtutor.models.common import FeatureAttributeError
from kdtutor.models.trained_on import IncompatibleTeacherError
from kdtutor.train import fit, parse_seeds
from kdtutor.zoo import load_teacher


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Path], object]
    error: type[BaseException]
    needles: tuple[str, ...]  # the problem and the fix, as words of the message


def tiny_train(n: int = 32):
    return load_dataset("shapes", "train", size=n)


def tiny():
    return build_model("cnn_tiny")


def medium():
    return build_model("cnn_medium")


class _NaNLoss(nn.Module):
    """A student whose logits become NaN after its first epoch (two steps of 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build_model("cnn_tiny")
        self.num_classes = 10
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.net(x)
        return out * float("nan") if self.calls > 2 else out


def _nan_run(tmp: Path):
    checkpoint = tmp / "ck.pt"
    try:
        fit(_NaNLoss(), tiny_train(64), epochs=3, batch_size=32, checkpoint=checkpoint)
    finally:
        assert not list(tmp.glob("*.tmp*")), "a partial file was left behind"


def _corrupt_checkpoint(tmp: Path):
    path = tmp / "ck.pt"
    fit(tiny(), tiny_train(), epochs=1, batch_size=32, checkpoint=path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return fit(tiny(), tiny_train(), epochs=2, batch_size=32, resume=path)


def _checkpoint_for_another_model(tmp: Path):
    path = tmp / "ck.pt"
    fit(tiny(), tiny_train(), epochs=1, batch_size=32, checkpoint=path)
    return fit(build_model("cnn_micro"), tiny_train(), epochs=2, batch_size=32, resume=path)


class _Evil:
    def __reduce__(self):
        return (print, ("this code ran while loading",))


def _pickle_with_code(tmp: Path):
    path = tmp / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": _Evil()}, path)
    return safe_load(path)


def _tampered_zoo(tmp: Path, monkeypatch_env):
    source = Path(__file__).resolve().parents[1] / "kdtutor" / "zoo_data"
    zoo = tmp / "zoo"
    shutil.copytree(source, zoo)
    weights = zoo / "mnist5k_cnn.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch_env("KDTUTOR_ZOO", str(zoo))
    return load_teacher("mnist5k_cnn")


def _read_only_results(tmp: Path):
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        atomic_write_json(folder / "r.json", {"a": 1})
    finally:
        folder.chmod(0o700)


def _with_cache_file(tmp: Path):
    blocker = tmp / "not-a-folder"
    blocker.write_text("x")
    with mock.patch.dict(os.environ, {"KDTUTOR_CACHE": str(blocker)}):
        return fit(
            build_distiller("kd", tiny(), medium()), tiny_train(), epochs=1, cache_location="disk"
        )


def _diverging_run(tmp: Path):
    """One step whose loss is finite but whose update overflows the weights to infinity."""
    x = torch.full((16, 3, 32, 32), 1e6)
    y = torch.arange(16) % 10
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    model.num_classes = 10
    return fit(
        model, TensorDataset(x, y), epochs=1, batch_size=16, lr=1e36, momentum=0.0, weight_decay=0.0
    )


def _corrupt_image_folder(tmp: Path):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = tmp / "pets" / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(folder / f"{i}.png")
    (tmp / "pets" / "train" / "dog" / "broken.png").write_bytes(b"not a png at all")
    return load_dataset(f"folder:{tmp / 'pets'}", "train")


def _weights_of_another_model(tmp: Path):
    from kdtutor.specs import build_from_spec
    from kdtutor.train.recorder import save_student

    save_student(build_model("cnn_small"), tmp / "w.pt", {"model": "cnn_small"})
    return build_from_spec(f"cnn_tiny:{tmp / 'w.pt'}", num_classes=10, in_channels=3)


def _run_folder_twice(tmp: Path):
    from kdtutor.experiment import Experiment
    from kdtutor.launch import prepare_run_folder

    (tmp / "run").mkdir()
    (tmp / "run" / "metrics.jsonl").write_text("")
    assert Experiment(dataset="shapes", student="cnn_tiny")  # a valid one, for contrast
    return prepare_run_folder(tmp / "run", resume=False, overwrite=False)


def _experiment_file(tmp: Path, text: str):
    from kdtutor.experiment import load_experiment

    (tmp / "exp.yaml").write_text(text)
    return load_experiment(tmp / "exp.yaml")


CASES = [
    Case("unknown dataset", lambda t: load_dataset("shapez"), UnknownNameError,
         ("unknown dataset", "shapes")),
    Case("unknown model", lambda t: build_model("resnet9"), UnknownNameError,
         ("unknown model", "Did you mean")),
    Case("unknown method", lambda t: build_distiller("fitnets", tiny(), medium()), UnknownNameError,
         ("unknown method", "fitnet")),
    Case("unknown preset", lambda t: run_suite("boook", out=t / "x.csv"), UnknownNameError,
         ("unknown preset", "book")),
    Case("unknown connector kind", lambda t: build_distiller("fitnet", tiny(), medium(),
         connector="conv3x3"), ConfigError, ("connector", "auto")),
    Case("missing KDTUTOR_DATA", lambda t: load_dataset("cifar10", root=t / "nowhere"),
         DataNotFoundError, ("cifar", "KDTUTOR_DATA")),
    Case("empty KDTUTOR_DATA folder", lambda t: load_dataset("cifar100", root=t),
         DataNotFoundError, ("not found", "download")),
    Case("wrong num_classes", lambda t: build_distiller("kd", build_model("cnn_tiny", num_classes=5),
         medium()), ShapeMismatchError, ("5 classes", "num_classes=10")),
    Case("different input channels", lambda t: build_distiller("at", build_model("cnn_tiny",
         in_channels=1), medium(), input_shape=(1, 28, 28)), ShapeMismatchError,
         ("1-channel", "teacher takes 3", "in_channels=3")),
    Case("data of another shape", lambda t: fit(build_distiller("at", tiny(), medium()),
         load_dataset("mnist5k", size=32), epochs=1), ShapeMismatchError,
         ("takes 3-channel images but the data has 1", "in_channels=1")),
    Case("feature path that does not exist", lambda t: FeatureExtractor(tiny(), ["stages.7"]),
         UnknownNameError, ("unknown feature path", "list_paths")),
    Case("student feature path that does not exist", lambda t: build_distiller("at", tiny(),
         medium(), student_paths=("layer9",), teacher_paths=("stages.1",)), UnknownNameError,
         ("layer9", "Valid feature paths")),
    Case("feature shapes no connector can match", lambda t: build_connector((16, 8, 8), (64,)),
         ShapeMismatchError, ("(16, 8, 8)", "(64,)", "same kind")),
    Case("map paired with a vector", lambda t: build_distiller("fitnet", tiny(), medium(),
         student_paths=("stages.1",), teacher_paths=("flatten",)), ShapeMismatchError,
         ("both must be feature maps", "feature_shapes")),
    Case("paths that do not pair up", lambda t: build_distiller("at", tiny(), medium(),
         student_paths=("stages.0", "stages.1"), teacher_paths=("stages.0",)), ConfigError,
         ("pair up", "both or neither")),
    Case("teacher without the requested stage", lambda t: build_distiller("at", tiny(),
         nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
        )),
         FeatureAttributeError, ("no stage_names", "teacher_paths")),
    Case("zero temperature", lambda t: build_distiller("kd", tiny(), medium(), T=0),
         ConfigError, ("T must be > 0",)),
    Case("negative temperature", lambda t: build_distiller("dkd", tiny(), medium(), T=-4),
         ConfigError, ("T must be > 0",)),
    Case("zero epochs", lambda t: fit(tiny(), tiny_train(), epochs=0), ConfigError,
         ("epochs must be > 0",)),
    Case("negative batch size", lambda t: fit(tiny(), tiny_train(), batch_size=-1), ConfigError,
         ("batch_size must be > 0",)),
    Case("zero learning rate", lambda t: fit(tiny(), tiny_train(), lr=0.0), ConfigError,
         ("lr must be > 0",)),
    Case("malformed seeds", lambda t: parse_seeds("0,one,2"), ConfigError,
         ("could not read seeds", "'0,1,2'")),
    Case("repeated seeds", lambda t: parse_seeds("1,1"), ConfigError, ("repeat",)),
    Case("config with an unknown key", lambda t: fit(tiny(), tiny_train(), config={"epoch": 2}),
         ConfigError, ("unknown key 'epoch'", "Did you mean 'epochs'")),
    Case("config value of the wrong type", lambda t: build_distiller("kd", tiny(), medium(),
         T="four"), ConfigError, ("T must be", "'four'")),
    Case("checkpoint for another model", _checkpoint_for_another_model, CheckpointError,
         ("another model", "same student architecture")),
    Case("truncated checkpoint", _corrupt_checkpoint, CheckpointError,
         ("truncated or corrupt", "re-create")),
    Case("missing checkpoint", lambda t: fit(tiny(), tiny_train(), resume=t / "none.pt"),
         CheckpointError, ("does not exist", "Check the path")),
    Case("pickle that carries code", _pickle_with_code, CheckpointError,
         ("refused", "weights_only=True", "state_dict")),
    Case("results in a read-only folder", _read_only_results, KDTutorError,
         ("not writable", "Choose a folder")),
    Case("suite results in a missing folder", lambda t: run_suite("smoke", out=t / "no" / "x.csv"),
         KDTutorError, ("does not exist",)),
    Case("empty training split", lambda t: fit(tiny(), load_dataset("shapes", size=32).__class__(
         torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.long),
         [str(i) for i in range(10)], "empty", mean=(0.5,) * 3, std=(0.2,) * 3), epochs=1),
         KDTutorError, ("training split is empty", "size")),
    Case("cache insisted on with random augmentation", lambda t: fit(build_distiller("kd", tiny(),
         medium()), tiny_train(), epochs=1, augment="crop_flip", cache=True), CacheRefusedError,
         ("random", "cache_views", "cache=False")),
    Case("cached views without random augmentation", lambda t: fit(build_distiller("kd", tiny(),
         medium()), tiny_train(), epochs=1, cache_views=2), ValueError,
         ("need a random augmentation", "views=0")),
    Case("unknown cache dtype", lambda t: fit(tiny(), tiny_train(), epochs=1, cache_dtype="int8"),
         ConfigError, ("cache_dtype", "float16")),
    Case("unknown cache location", lambda t: fit(tiny(), tiny_train(), epochs=1,
         cache_location="cloud"), ConfigError, ("cache_location", "disk")),
    Case("negative loader workers", lambda t: fit(tiny(), tiny_train(), epochs=1, workers=-1),
         ConfigError, ("workers",)),
    Case("NaN loss during training", _nan_run, NonFiniteLossError,
         ("became nan", "epoch 2", "Lower the learning rate", "last good checkpoint")),
    Case("method needing a teacher without one", lambda t: build_distiller("crd", tiny()),
         KDTutorError, ("needs a teacher", "scratch")),
    Case("a device that is not present", lambda t: fit(tiny(), tiny_train(), epochs=1,
         device="cuda:7"), ConfigError, ("is not present", "cpu")),
    Case("a device name torch does not know", lambda t: fit(tiny(), tiny_train(), epochs=1,
         device="tpu"), ConfigError, ("unknown device 'tpu'", "cuda:N")),
    Case("unknown compile backend", lambda t: fit(tiny(), tiny_train(), epochs=1,
         compile="turbo"), UnknownNameError, ("compile backend 'turbo'", "inductor")),
    Case("a cache folder that is a file", _with_cache_file, KDTutorError,
         ("which is a file", "KDTUTOR_CACHE")),
    Case("all loss weights zero", lambda t: fit(build_distiller("kd", tiny(), medium(),
         ce_weight=0, kd_weight=0), tiny_train(), epochs=1), KDTutorError,
         ("zero gradient", "nothing would train", "positive weight")),
    Case("weights that overflow in an epoch of one step", _diverging_run, NonFiniteLossError,
         ("became NaN or infinite", "epoch 1", "Lower the learning rate")),
    Case("a learning rate that is not a number", lambda t: fit(tiny(), tiny_train(), epochs=1,
         lr=float("nan")), ConfigError, ("train.lr", "nan")),
    Case("a teacher given as a string", lambda t: build_distiller("kd", tiny(),
         "shapes_cnn_large"), NotAModelError, ("must be an nn.Module", "load_teacher")),
    Case("a student whose class count differs from the labels", lambda t: fit(
         build_model("cnn_tiny", num_classes=5), tiny_train(), epochs=1), ShapeMismatchError,
         ("5 outputs", "10 classes", "num_classes=10")),
    Case("a test split with another image shape", lambda t: fit(tiny(), tiny_train(),
         load_dataset("mnist5k", "test", size=16), epochs=1), ShapeMismatchError,
         ("test split's images are 1x28x28", "same options")),
    Case("fit without training data", lambda t: fit(tiny(), None), KDTutorError,
         ("give fit() a training set", "data-free")),
    Case("a zoo teacher on another dataset", lambda t: fit(build_distiller("kd",
         build_model("cnn_tiny", in_channels=1), load_teacher("mnist5k_cnn")), tiny_train(),
         epochs=1), IncompatibleTeacherError, ("trained on 'mnist5k'", "kdtutor zoo list")),
    Case("a step schedule without milestones", lambda t: fit(tiny(), tiny_train(), epochs=1,
         schedule="step"), ConfigError, ("needs milestones", "schedule='constant'")),
    Case("a corrupt image in a folder dataset", _corrupt_image_folder, DataFormatError,
         ("broken.png", "corrupt")),
    Case("weights of another architecture", _weights_of_another_model, CheckpointError,
         ("holds a 'cnn_small' model", "cnn_small:")),
    Case("a run folder that holds a run", _run_folder_twice, RunFolderError,
         ("already holds a run", "--resume", "--overwrite")),
    Case("an unknown key in an experiment file", lambda t: _experiment_file(t,
         "dataset: shapes\nstudnet: cnn_tiny\n"), ConfigError, ("unknown key 'studnet'",
         "Did you mean 'student'")),
    Case("an experiment file that is not a mapping", lambda t: _experiment_file(t, "- a\n- b\n"),
         ConfigError, ("must hold a mapping", "dataset:")),
]  # fmt: skip


def test_there_are_at_least_fifty_cases():
    assert len(CASES) >= 55 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_raises_a_clear_error(case, tmp_path, monkeypatch):
    if case.name == "results in a read-only folder" and hasattr(__import__("os"), "geteuid"):
        if __import__("os").geteuid() == 0:
            pytest.skip("root ignores directory permissions")
    with pytest.raises(case.error) as info:
        case.call(tmp_path)
    message = " ".join(str(info.value).split())
    for needle in case.needles:
        assert needle in message, f"{case.name}: {needle!r} missing from: {message}"


def test_weights_whose_sha256_differs_from_the_manifest(tmp_path, monkeypatch):
    with pytest.raises(ChecksumError) as info:
        _tampered_zoo(tmp_path, monkeypatch.setenv)
    message = str(info.value)
    assert "sha256" in message and "git checkout" in message and "zoo train" in message


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["distill"], "the following arguments are required"),
        (["distill", "--dataset", "shapes", "--student", "cnn_tiny", "--epochs", "0"],
         "expected a positive integer"),
        (["distill", "--dataset", "shapes", "--student", "cnn_tiny", "--lr", "-1"],
         "expected a positive number"),
        (["bench", "--suite", "speed"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)  # fmt: skip
def test_cli_misuse_prints_usage_and_exits_nonzero(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: kdtutor" in err and needle in err and "Traceback" not in err


def test_cli_bad_values_give_one_line_and_exit_2(capsys):
    code = main(["distill", "--dataset", "shapes", "--student", "cnn_tiny", "--method", "kd",
                 "--teacher", "zoo:nope", "--scale", "smoke"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "Traceback" not in err
    assert json.dumps(err)  # printable


def test_every_load_in_the_package_is_weights_only():
    """Loading never runs code from a file: one torch.load, with weights_only=True, in io.py."""
    import ast

    root = Path(__file__).resolve().parents[1] / "kdtutor"
    loads = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = getattr(node.func.value, "id", None)
                if (owner, node.func.attr) in {("torch", "load"), ("pickle", "load"),
                                               ("pickle", "loads"), ("np", "load")}:  # fmt: skip
                    keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                    loads.append((path.name, node.func.attr, keywords))
    assert loads, "expected to find the package's loaders"
    for name, function, keywords in loads:
        if function == "load" and "weights_only" in keywords:
            assert keywords["weights_only"] is True, name
        elif function == "load" and "allow_pickle" in keywords:
            assert keywords["allow_pickle"] is False, name
        else:
            pytest.fail(f"{name} calls {function} without weights_only=True / allow_pickle=False")


def test_troubleshooting_page_lists_every_case():
    page = (Path(__file__).resolve().parents[1] / "book/appendix/troubleshooting.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| ")}
    for case in CASES:
        assert case.name in rows, f"add a row for {case.name!r} to the troubleshooting page"
        assert f"`{case.error.__name__}`" in rows[case.name], case.name
    for extra in ("weights whose sha256 differs from the manifest", "CLI misuse"):
        assert extra in rows


def test_read_only_folder_is_named_even_as_root(tmp_path, monkeypatch):
    """Root ignores permissions, so the branch is exercised by making os.access say no."""
    import kdtutor.io

    monkeypatch.setattr(kdtutor.io.os, "access", lambda *args, **kwargs: False)
    with pytest.raises(KDTutorError, match=r"not writable.*Choose a folder"):
        atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert not list(tmp_path.iterdir())


BASE = ["distill", "--dataset", "shapes", "--student", "cnn_tiny", "--scale", "smoke"]
CLI_CASES = [
    ([*BASE, "--device", "tpu"], "unknown device 'tpu'"),
    ([*BASE, "--compile", "turbo"], "compile backend 'turbo'"),
    ([*BASE, "--out", "{tmp}"], "is a folder"),
    ([*BASE, "--out", "{tmp}/x.pt", "--checkpoint", "{tmp}/x.pt"], "name the same file"),
    ([*BASE, "--run-dir", "{tmp}/r", "--resume", "--overwrite"], "exclude each other"),
    ([*BASE, "--run-dir", "{tmp}/r", "--resume"], "nothing to resume"),
    ([*BASE, "--save-student"], "needs --run-dir"),
    ([*BASE, "--teacher", "cnn_small:{tmp}/missing.pt"], "does not exist"),
    ([*BASE, "--teacher", "zoo:shapes_cnn_large:{tmp}/w.pt"], "carry their own weights"),
    ([*BASE, "--teacher", "zoo:mnist5k_cnn"], "trained on 'mnist5k'"),
    ([*BASE, "--config", "{tmp}/missing.yaml"], "does not exist"),
    ([*BASE, "train.lrr=0.1"], "Did you mean 'lr'"),
    (
        [
            "distill",
            "--dataset",
            "folder:{tmp}/none",
            "--student",
            "cnn_tiny",
            "--method",
            "scratch",
        ],
        "does not exist",
    ),
    (["plot", "{tmp}/missing"], "does not exist"),
]


@pytest.mark.parametrize(("argv", "needle"), CLI_CASES, ids=[c[1] for c in CLI_CASES])
def test_cli_bad_input_exits_2_with_one_line_before_training(argv, needle, tmp_path, capsys):
    before = sorted(tmp_path.rglob("*"))
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even a partial file
