"""Atomic writes, safe loading and flat typed configs."""

import dataclasses
import os
import pickle

import pytest
import torch

from kdtutor.config import ConfigError, from_dict
from kdtutor.errors import CheckpointError, KDTutorError
from kdtutor.io import atomic_save, atomic_write_text, safe_load, sha256_file


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_text(target, "old")

    def explode(handle):
        handle.write(b"partial")
        raise RuntimeError("boom")

    from kdtutor.io import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind


def test_atomic_write_into_missing_folder_names_it(tmp_path):
    with pytest.raises(KDTutorError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "x.txt", "x")


def test_safe_load_round_trip_and_checksum(tmp_path):
    path = tmp_path / "w.pt"
    atomic_save({"w": torch.arange(3.0)}, path)
    assert torch.equal(safe_load(path)["w"], torch.arange(3.0))
    import hashlib

    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_safe_load_truncated(tmp_path):
    path = tmp_path / "w.pt"
    atomic_save({"w": torch.randn(100, 100)}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        safe_load(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_safe_load_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"x": _Evil()}, handle)
    with pytest.raises(CheckpointError, match="was refused"):
        safe_load(path)


def test_safe_load_missing(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        safe_load(tmp_path / "missing.pt")


@dataclasses.dataclass(frozen=True)
class Demo:
    T: float = 4.0
    epochs: int = 3
    name: str = "x"
    milestones: tuple[int, ...] = ()
    device: str | None = None


def test_from_dict_converts_and_validates():
    demo = from_dict(Demo, {"T": 2, "milestones": [1, 2], "device": None})
    assert demo.T == 2.0 and isinstance(demo.T, float) and demo.milestones == (1, 2)
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        from_dict(Demo, {"epocs": 3})
    with pytest.raises(ConfigError, match=r"Demo\.epochs must be int"):
        from_dict(Demo, {"epochs": "three"})
    with pytest.raises(ConfigError, match="must be float"):
        from_dict(Demo, {"T": True})


def test_atomic_write_gives_normal_permissions(tmp_path):
    fresh = tmp_path / "new.txt"
    atomic_write_text(fresh, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~mask
    fresh.chmod(0o640)
    atomic_write_text(fresh, "y")
    assert fresh.stat().st_mode & 0o777 == 0o640
