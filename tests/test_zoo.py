"""Teacher zoo: train from a recipe, checksum on load, clear errors."""

import json

import pytest
import torch

from kdtutor import zoo
from kdtutor.errors import ChecksumError, UnknownNameError
from kdtutor.io import sha256_file


@pytest.fixture()
def tiny_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_ZOO", str(tmp_path))
    recipe = zoo.ZooRecipe(
        name="digits_tiny",
        model="mlp",
        dataset="digits",
        description="test teacher",
        model_kwargs={"hidden": (16,), "image_size": 8},
        train={"epochs": 1, "batch_size": 64},
    )
    monkeypatch.setitem(zoo.RECIPES, recipe.name, recipe)
    return tmp_path, recipe


def test_train_ship_and_load(tiny_zoo):
    folder, recipe = tiny_zoo
    entry = zoo.train_teacher(recipe.name, log=None)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (
        manifest[recipe.name]["sha256"] == sha256_file(folder / "digits_tiny.pt") == entry["sha256"]
    )
    teacher = zoo.load_teacher("zoo:digits_tiny")
    assert not teacher.training
    blob = torch.load(folder / "digits_tiny.pt", weights_only=True)
    assert all(
        v.dtype == torch.float16 for v in blob["state_dict"].values() if v.is_floating_point()
    )
    assert entry["test_acc"] > 10 and entry["train_seconds"] >= 0


def test_checksum_mismatch_is_an_error_naming_the_file(tiny_zoo):
    folder, recipe = tiny_zoo
    zoo.train_teacher(recipe.name, log=None)
    path = folder / "digits_tiny.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        ChecksumError, match=r"digits_tiny\.pt has sha256 .* but the manifest expects"
    ):
        zoo.load_teacher(recipe.name)


def test_missing_weights_say_how_to_train(tiny_zoo):
    with pytest.raises(zoo.ZooError, match="kdtutor zoo train digits_tiny"):
        zoo.load_teacher("digits_tiny")


def test_unknown_teacher_suggests():
    with pytest.raises(UnknownNameError, match="shapes_cnn_large"):
        zoo.get_recipe("shapes_cnn_larg")


def test_shipped_teachers_verify():
    """Every teacher in the repository's manifest matches its sha256 and loads."""
    names = sorted(zoo.read_manifest())
    assert names, "kdtutor/zoo_data/manifest.json lists no shipped teacher"
    total = 0
    for name in names:
        total += zoo.verify(name).stat().st_size
        model = zoo.load_teacher(name)
        assert sum(p.numel() for p in model.parameters()) == zoo.read_manifest()[name]["params"]
    assert total <= 30 * 2**20
