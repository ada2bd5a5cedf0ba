"""The CIFAR-100 teachers of RepDistiller's pairs and the ``repdistiller`` preset, on fake data.

The fake CIFAR-100 is written in the exact on-disk format of the "CIFAR-100 python version"
that :func:`kdtutor.data.real.folder_dataset` reads through torchvision: a
``cifar-100-python/`` folder holding the pickles ``train`` and ``test`` (dicts with ``data``,
a uint8 array of N x 3072 CHW pixels, ``fine_labels``, ``coarse_labels``, ``filenames``,
``batch_label``) and ``meta`` (``fine_label_names``, ``coarse_label_names``), 200 train and
100 test random images. torchvision compares each file's md5 with the real dataset's, which a
fake file cannot match, and kdtutor has no reader of its own (it reads the folder datasets
only through torchvision). So the tests replace only that md5 comparison
(``torchvision.datasets.cifar.check_integrity``) by an "is the file there" check, and
everything else (the file checks of kdtutor, torchvision's unpickling and reshaping, the
labels and class names) runs as it does on the real files.

The teacher is the real ``cifar100_resnet56`` recipe (no smaller stand-in): one epoch on 200
images takes a few seconds on one CPU core. Weights and manifest go to
``$KDTUTOR_DATA/teachers`` in a temporary folder; the package's ``kdtutor/zoo_data`` is checked to be
untouched. Nothing here reaches the network.
"""

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from kdtutor import zoo
from kdtutor.bench.knowledge import (
    PRESETS,
    REPDISTILLER_PAIRS,
    default_results_path,
    get_preset,
    load_pair_teacher,
    load_results,
    run_suite,
)
from kdtutor.cli import build_parser, main
from kdtutor.data import clear_cache, load_dataset
from kdtutor.errors import ChecksumError, DataNotFoundError
from kdtutor.io import sha256_file

REPO_ZOO = Path(__file__).resolve().parents[1] / "kdtutor" / "zoo_data"
TEACHERS = ("cifar100_wrn_40_2", "cifar100_resnet56", "cifar100_resnet32x4", "cifar100_vgg13")


def make_fake_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` as the real dataset's pickles."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [i % 100 for i in range(n)]
        blob = {
            "filenames": [f"fake_{split}_{i}.png" for i in range(n)],
            "batch_label": f"fake {split} batch",
            "fine_labels": fine,
            "coarse_labels": [k // 5 for k in fine],
            "data": rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8),
        }
        with open(folder / split, "wb") as handle:
            pickle.dump(blob, handle, protocol=2)
    meta = {
        "fine_label_names": [f"class_{k:02d}" for k in range(100)],
        "coarse_label_names": [f"superclass_{k:02d}" for k in range(20)],
    }
    with open(folder / "meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return root


def _exists_only(fpath, md5=None):
    """Stands in for torchvision's md5 check, which no fake file can pass."""
    return os.path.isfile(fpath)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Fake CIFAR-100 in a temporary KDTUTOR_DATA, and `kdtutor zoo train cifar100_resnet56
    --epochs 1` run there once through the command line."""
    root = make_fake_cifar100(tmp_path_factory.mktemp("kdtutor_data"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tv_cifar, "check_integrity", _exists_only)
        mp.setenv("KDTUTOR_DATA", str(root))
        mp.delenv("KDTUTOR_ZOO", raising=False)
        before = _snapshot(REPO_ZOO)
        out = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = main(["zoo", "train", "cifar100_resnet56", "--epochs", "1"])
        seconds = time.perf_counter() - started
        yield SimpleNamespace(
            root=root,
            teachers=root / "teachers",
            code=code,
            stdout=out.getvalue(),
            repo_zoo_before=before,
            seconds=seconds,
        )
    clear_cache()


def test_fake_cifar100_loads_like_the_real_one(trained):
    train = load_dataset("cifar100", "train")
    test = load_dataset("cifar100", "test")
    assert len(train) == 200 and len(test) == 100
    assert tuple(train.images.shape[1:]) == (3, 32, 32) and train.images.dtype == torch.uint8
    assert train.num_classes == 100 and train.classes[0] == "class_00"
    assert sorted(set(train.targets.tolist())) == list(range(100))


def test_zoo_train_stores_weights_and_manifest_in_kdtutor_data(trained):
    assert trained.code == 0, trained.stdout
    assert trained.seconds < 60
    folder = trained.teachers
    assert sorted(p.name for p in folder.iterdir()) == ["cifar100_resnet56.pt", "manifest.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["cifar100_resnet56"]
    assert entry["sha256"] == sha256_file(folder / "cifar100_resnet56.pt")
    assert entry["model"] == "resnet56" and entry["dataset"] == "cifar100"
    assert entry["params"] == 861_620  # RepDistiller's resnet56 on 100 classes (REFERENCES.md)
    assert entry["published_acc"] == 72.34
    assert entry["command"] == "KDTUTOR_DATA=... kdtutor zoo train cifar100_resnet56 --epochs 1"
    # --epochs 1 keeps the recipe but shrinks the step schedule's milestones with it
    config = entry["train_config"]
    assert config["epochs"] == 1 and config["milestones"] == []
    assert {k: config[k] for k in ("lr", "batch_size", "weight_decay", "momentum")} == {
        "lr": 0.05,
        "batch_size": 64,
        "weight_decay": 5e-4,
        "momentum": 0.9,
    }
    blob = torch.load(folder / "cifar100_resnet56.pt", weights_only=True)
    assert all(
        v.dtype == torch.float16 for v in blob["state_dict"].values() if v.is_floating_point()
    )
    # the printed entry is the manifest's
    printed = trained.stdout[trained.stdout.index("{") :]
    assert json.loads(printed)["sha256"] == entry["sha256"]
    # the repository's zoo is untouched
    assert _snapshot(REPO_ZOO) == trained.repo_zoo_before
    assert "cifar100_resnet56" not in zoo.read_manifest()


def test_cifar100_recipes_follow_repdistiller():
    expected = {
        "epochs": 240,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "step",
        "milestones": (150, 180, 210),
        "gamma": 0.1,
        "augment": "crop_flip",
    }
    published = {"wrn_40_2": 75.61, "resnet56": 72.34, "resnet32x4": 79.42, "vgg13": 74.64}
    for name in TEACHERS:
        recipe = zoo.get_recipe(name)
        assert recipe.dataset == "cifar100" and recipe.train == expected
        assert recipe.published_acc == published[recipe.model]
        assert f"{recipe.published_acc:.2f}" in recipe.description
        assert zoo.is_external(recipe)
    assert not zoo.is_external(zoo.get_recipe("shapes_cnn_large"))
    assert zoo.scaled_milestones((150, 180, 210), 24) == (15, 18, 21)
    assert zoo.scaled_milestones((150, 180, 210), 1) == ()


def test_load_teacher_verifies_the_checksum(trained, tmp_path, monkeypatch):
    teacher = zoo.load_teacher("cifar100_resnet56")
    assert not teacher.training
    assert zoo.verify("zoo:cifar100_resnet56") == trained.teachers / "cifar100_resnet56.pt"
    # a copy with one flipped byte
    shutil.copytree(trained.teachers, tmp_path / "teachers")
    monkeypatch.setenv("KDTUTOR_DATA", str(tmp_path))
    path = tmp_path / "teachers" / "cifar100_resnet56.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="but the manifest expects") as err:
        zoo.load_teacher("cifar100_resnet56")
    message = str(err.value)
    assert f"KDTUTOR_DATA={tmp_path} kdtutor zoo train cifar100_resnet56" in message
    assert "git checkout" not in message  # these weights are not in git


def test_repdistiller_preset_loads_the_zoo_teacher(trained):
    pair = next(p for p in PRESETS["repdistiller"].pairs if p.teacher == "resnet56")
    teacher = load_pair_teacher(pair, "cifar100", 100)
    reference = zoo.load_teacher("cifar100_resnet56")
    for (name, a), b in zip(
        teacher.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # a teacher not trained yet: the error says exactly how to get it
    other = next(p for p in PRESETS["repdistiller"].pairs if p.teacher == "wrn_40_2")
    with pytest.raises(DataNotFoundError) as err:
        load_pair_teacher(other, "cifar100", 100)
    message = str(err.value)
    assert "cifar100_wrn_40_2" in message and "on a GPU" in message
    assert f"KDTUTOR_DATA={trained.root} kdtutor zoo train cifar100_wrn_40_2" in message
    assert isinstance(err.value, zoo.ZooError)


def test_legacy_plain_state_dict_is_still_read(tmp_path, monkeypatch):
    from kdtutor.models import build_model

    monkeypatch.setenv("KDTUTOR_DATA", str(tmp_path))
    (tmp_path / "teachers").mkdir()
    torch.manual_seed(0)
    model = build_model("vgg13", num_classes=100)
    torch.save(model.state_dict(), tmp_path / "teachers" / "vgg13_cifar100.pt")
    pair = next(p for p in REPDISTILLER_PAIRS if p.teacher == "vgg13")
    loaded = load_pair_teacher(pair, "cifar100", 100)
    assert not loaded.training
    for (name, a), b in zip(loaded.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_repdistiller_suite_runs_end_to_end_on_fake_data(trained, tmp_path):
    out = tmp_path / "knowledge_repdistiller.csv"
    rows = run_suite(
        "repdistiller",
        methods=["kd"],
        pairs=["resnet56->resnet20"],
        seeds=[0],
        epochs=1,
        out=out,
        log=None,
    )
    assert len(rows) == 1 and rows[0]["teacher"] == "resnet56"
    loaded, header = load_results(out)
    assert header["preset"] == "repdistiller" and header["epochs"].startswith("1 (preset: 240)")
    assert 0 <= loaded[0]["best_acc"] <= 100 and loaded[0]["last_acc"] <= loaded[0]["best_acc"]
    # `full` is the same preset and resumes the same file
    assert run_suite("full", methods=["kd"], pairs=["resnet56->resnet20"], seeds=[0], epochs=1,
                     out=out, log=None) == rows  # fmt: skip


def test_repdistiller_preset_is_the_published_protocol():
    preset = get_preset("repdistiller")
    assert get_preset("full") is preset
    assert preset.dataset == "cifar100" and preset.train_size is None and preset.test_size is None
    assert [(p.teacher, p.student) for p in preset.pairs] == [
        ("wrn_40_2", "wrn_16_2"),
        ("resnet56", "resnet20"),
        ("resnet32x4", "resnet8x4"),
        ("vgg13", "vgg8"),
    ]
    assert (preset.epochs, preset.batch_size, preset.lr) == (240, 64, 0.05)
    assert (preset.schedule, preset.milestones, preset.augment) == (
        "step",
        (150, 180, 210),
        "crop_flip",
    )
    assert preset.train == {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "gamma": 0.1}
    # no MobileNet / ShuffleNet student, so lr 0.01 applies to none of the four pairs
    assert not any(p.student.startswith(("mobilenet", "shufflenet")) for p in preset.pairs)
    assert preset.threads is None  # on a GPU torch's threads are left alone; fit picks CUDA
    assert preset.seeds == (0, 1, 2)
    for name in ("repdistiller", "full"):
        assert default_results_path(name).name == "knowledge_repdistiller.csv"
        args = build_parser().parse_args(["bench", "--suite", "knowledge", "--preset", name])
        assert args.preset == name


def test_missing_data_names_kdtutor_data_and_writes_nothing(tmp_path, monkeypatch, capsys):
    before = _snapshot(REPO_ZOO)
    monkeypatch.delenv("KDTUTOR_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="KDTUTOR_DATA"):
        zoo.train_teacher("cifar100_resnet56", epochs=1, log=None)
    with pytest.raises(DataNotFoundError) as err:
        zoo.load_teacher("cifar100_resnet56")
    assert "KDTUTOR_DATA is not set" in str(err.value)
    assert "kdtutor zoo train cifar100_resnet56" in str(err.value)
    # an empty data folder: the dataset error, and not a single file or folder written
    monkeypatch.setenv("KDTUTOR_DATA", str(tmp_path))
    assert main(["zoo", "train", "cifar100_resnet56", "--epochs", "1"]) == 2
    message = capsys.readouterr().err
    assert "cifar-100-python" in message and "KDTUTOR_DATA" in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataNotFoundError) as err:
        zoo.load_teacher("cifar100_vgg13")
    assert f"KDTUTOR_DATA={tmp_path} kdtutor zoo train cifar100_vgg13" in str(err.value)
    assert _snapshot(REPO_ZOO) == before


def test_zoo_list_and_verify_without_kdtutor_data(monkeypatch, capsys):
    monkeypatch.delenv("KDTUTOR_DATA", raising=False)
    monkeypatch.delenv("KDTUTOR_ZOO", raising=False)
    assert main(["zoo", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for name in TEACHERS:
        assert "not trained" in lines[name] and "$KDTUTOR_DATA/teachers" in lines[name]
    assert "72.34" in lines["cifar100_resnet56"]
    assert "shipped" in lines["shapes_cnn_large"]
    assert "shipped" in lines["shapes_cnn_w8"]  # a recipe module's teacher, in its own folder
    # verify with no name checks the shipped teachers only (the zoo's and its folders')
    assert main(["zoo", "verify"]) == 0
    verified = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert set(zoo.read_manifest()) < set(verified)
    assert verified == sorted(zoo.trained_teachers())


def test_zoo_list_and_verify_with_trained_teacher(trained, capsys):
    assert main(["zoo", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert " trained " in lines["cifar100_resnet56"]
    assert str(trained.teachers) in lines["cifar100_resnet56"]
    assert "not trained" in lines["cifar100_vgg13"]
    assert str(trained.teachers) in lines["cifar100_vgg13"]
    assert main(["zoo", "verify"]) == 0
    verified = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert "cifar100_resnet56" in verified and set(zoo.read_manifest()) < set(verified)
    assert verified == sorted(zoo.trained_teachers())
