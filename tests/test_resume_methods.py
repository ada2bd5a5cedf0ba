"""Deterministic resume for a feature- and a relation-based method, cache on and off (issue 7):
interrupt after epoch 2 of 4, resume, and the final state equals the uninterrupted run's
bit for bit (student, connectors or embeddings, and CRD's memory banks)."""

import pytest
import torch
from _resume import interrupted_then_resumed

from kdtutor.cache import clear_memory_cache
from kdtutor.data import load_dataset
from kdtutor.methods import build_distiller
from kdtutor.models import build_model
from kdtutor.seeding import seed_everything


@pytest.fixture(scope="module")
def data():
    return load_dataset("shapes", "train", size=96), load_dataset("shapes", "test", size=32)


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize(
    ("method", "hparams"), [("at", {}), ("fitnet", {}), ("crd", {"num_negatives": 16})]
)
def test_resume_is_bit_identical(method, hparams, cache, data, tmp_path):
    clear_memory_cache()
    torch.set_num_threads(1)
    teacher = build_model("cnn_medium")
    cfg = {"epochs": 4, "batch_size": 32, "lr": 0.05, "cache": cache, "seed": 3}

    def make():
        seed_everything(11)
        return build_distiller(method, build_model("cnn_tiny"), teacher, hparams)

    runs = interrupted_then_resumed(make, *data, tmp_path, after=2, config=cfg)
    assert [h["epoch"] for h in runs.result.history] == [1, 2, 3, 4]
