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
    """Every teacher in the repository's manifests (the zoo's and its subfolders') matches its
    sha256 and loads, and the shipped weights stay within the repository's 30 MiB."""
    shipped = {n: f for n, f in zoo.trained_teachers().items() if f.is_relative_to(zoo.zoo_dir())}
    assert zoo.read_manifest(), "kdtutor/zoo_data/manifest.json lists no shipped teacher"
    assert set(zoo.read_manifest()) <= set(shipped)
    for name, folder in sorted(shipped.items()):
        zoo.verify(name)
        model = zoo.load_teacher(name)
        params = zoo.read_manifest(folder)[name]["params"]
        assert sum(p.numel() for p in model.parameters()) == params
    total = sum(p.stat().st_size for p in zoo.zoo_dir().rglob("*.pt"))
    assert total <= 30 * 2**20


# -- recipes of kdtutor.zoo_recipes: their own folder and manifest, a provider's hooks -----------
def test_more_recipes_are_found_by_name_and_listed():
    recipe = zoo.get_recipe("zoo:shapes_cnn_w16")
    assert recipe.folder == "shapes" and recipe.model_kwargs["widths"] == (16, 32, 64, 128)
    assert {"shapes_cnn_w8", "shapes_resnet14", "shapes_vit_p8"} <= set(zoo.list_teachers())
    assert zoo.recipe_dir(recipe) == zoo.zoo_dir() / "shapes"
    # the family differs from cnn_large's design in width only
    large = zoo._build(zoo.get_recipe("shapes_cnn_large"))
    w16 = zoo._build(recipe)
    assert [type(m) for m in large.modules()] == [type(m) for m in w16.modules()]
    assert sum(p.numel() for p in w16.parameters()) == 295_290


def test_unknown_teacher_suggests_from_every_recipe_module():
    with pytest.raises(UnknownNameError, match="shapes_cnn_w16"):
        zoo.get_recipe("shapes_cnn_w61")


@pytest.fixture()
def provided_zoo(tmp_path, monkeypatch):
    """A recipe in a subfolder whose provider builds the model and gives the data."""
    import sys
    import types

    from kdtutor.data import load_dataset
    from kdtutor.models import build_model
    from kdtutor.models.trained_on import TrainedOn

    calls = []
    provider = types.ModuleType("kdtutor_test_provider")

    def build(recipe):
        calls.append("build")
        return build_model("mlp", num_classes=10, in_channels=1, hidden=(8,), image_size=8)

    def datasets(recipe):
        calls.append("datasets")
        return load_dataset("digits", "train"), load_dataset("digits", "test")

    provider.build = build
    provider.datasets = datasets
    provider.trained_on = lambda recipe: TrainedOn("digits", 10, (1, 8, 8))
    monkeypatch.setitem(sys.modules, provider.__name__, provider)
    monkeypatch.setenv("KDTUTOR_ZOO", str(tmp_path))
    recipe = zoo.ZooRecipe(
        name="provided_tiny",
        model="provided",
        dataset="not_a_registered_dataset",
        description="test teacher of a provider",
        train={"epochs": 1, "batch_size": 64},
        folder="extra",
        provider=provider.__name__,
    )
    zoo.more_recipes.cache_clear()
    monkeypatch.setattr(zoo, "more_recipes", lambda: {recipe.name: recipe})
    return tmp_path, recipe, calls


def test_a_provided_recipe_trains_into_its_own_folder_and_manifest(provided_zoo):
    folder, recipe, calls = provided_zoo
    entry = zoo.train_teacher(recipe.name, log=None)
    assert calls[:2] == ["datasets", "build"]
    own = json.loads((folder / "extra" / "manifest.json").read_text())
    assert own[recipe.name]["sha256"] == sha256_file(folder / "extra" / "provided_tiny.pt")
    assert not (folder / "manifest.json").exists()  # the zoo's own manifest is untouched
    assert entry["task"] == "classification" and entry["metric"] == "accuracy"
    assert zoo.trained_teachers()[recipe.name] == folder / "extra"
    teacher = zoo.load_teacher(recipe.name)
    assert teacher.trained_on.dataset == "digits" and not teacher.training


def test_a_recipe_defined_twice_is_an_error(monkeypatch):
    from kdtutor.zoo_recipes import shapes

    zoo.more_recipes.cache_clear()
    monkeypatch.setitem(zoo.RECIPES, "shapes_cnn_w8", shapes.RECIPES["shapes_cnn_w8"])
    try:
        with pytest.raises(zoo.ZooError, match="'shapes_cnn_w8' is defined twice"):
            zoo.more_recipes()
    finally:
        zoo.more_recipes.cache_clear()
