"""Speed features that must not change results: loader threads, sharding, fixed views, disk and
float16 teacher caches, and the GPU options (which do nothing on CPU)."""

import json
import warnings

import numpy as np
import pytest
import torch

from kdtutor.cache import (
    cache_key,
    clear_memory_cache,
    disk_cache_folder,
    open_disk_cache,
)
from kdtutor.config import ConfigError
from kdtutor.data import BatchLoader, load_dataset
from kdtutor.data.transforms import FixedViews, RandomCropFlip, build_augment
from kdtutor.errors import KDTutorError
from kdtutor.methods import build_distiller
from kdtutor.models import build_model
from kdtutor.train import TrainConfig, fit, resolve_runtime, run_seeds


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train", size=300), load_dataset("digits", "test", size=100)


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", "train", size=96)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))
    clear_memory_cache()
    yield
    clear_memory_cache()


def net(seed=0, hidden=(32,)):
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=hidden)


def teacher_net():
    return net(seed=123, hidden=(64, 64)).eval()


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn_micro", num_classes=10)


def batches(loader, epoch=0):
    return list(loader.set_epoch(epoch))


# -- loader ------------------------------------------------------------------------------------


def test_augmentation_stream_is_drawn_per_batch_in_order(shapes):
    """The loader draws each batch's crop/flip from one generator in batch order, exactly as
    calling the transform batch after batch would (so runs made before the loader drew its
    parameters up front reproduce)."""
    from kdtutor.data._random import mix_seed

    loader = BatchLoader(shapes, 20, shuffle=True, seed=4, augment="crop_flip")
    got = batches(loader, epoch=2)
    generator = torch.Generator().manual_seed(mix_seed(4, 2, 2))
    transform = RandomCropFlip()
    order = loader.order()
    for b, batch in enumerate(got):
        index = order[b * 20 : (b + 1) * 20]
        x, _ = shapes.batch(index)
        assert torch.equal(batch.index, index)
        assert torch.equal(batch.x, transform(x, generator))


@pytest.mark.parametrize("augment", [None, "crop_flip"])
def test_worker_threads_give_the_same_batches(shapes, augment):
    plain = batches(BatchLoader(shapes, 16, shuffle=True, seed=1, augment=augment), 3)
    threaded = batches(BatchLoader(shapes, 16, shuffle=True, seed=1, augment=augment, workers=3), 3)
    assert len(plain) == len(threaded) == 6
    for a, b in zip(plain, threaded, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.index, b.index)


def test_shards_partition_each_global_batch(shapes):
    whole = batches(BatchLoader(shapes, 20, shuffle=True, seed=2, augment="crop_flip"), 1)
    parts = [
        batches(BatchLoader(shapes, 20, shuffle=True, seed=2, augment="crop_flip", shard=(r, 3)), 1)
        for r in range(3)
    ]
    # 96 = 4 x 20 + 16: five global batches, each split 3 ways
    assert all(len(p) == len(whole) == 5 for p in parts)
    for b, full in enumerate(whole):
        for r in range(3):
            part = parts[r][b]
            assert torch.equal(part.index, full.index[r::3])
            assert torch.equal(part.x, full.x[r::3])  # the same crop and flip as one process
            assert part.global_size == len(full.index)


def test_a_last_batch_smaller_than_the_process_count_is_dropped(shapes):
    ds = shapes.subset(41)  # 2 x 20 + 1
    assert len(BatchLoader(ds, 20, shard=(0, 2))) == 2
    assert len(BatchLoader(ds, 20)) == 3
    assert len(BatchLoader(ds, 20, shard=(1, 2), drop_last=True)) == 2
    assert sum(len(b.index) for b in BatchLoader(ds, 20, shard=(1, 2))) == 20
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(ds, 20, shard=(2, 2))
    with pytest.raises(ValueError, match="workers"):
        BatchLoader(ds, 20, workers=-1)


# -- fixed views -------------------------------------------------------------------------------


def test_fixed_views_are_fixed_and_drawn_per_view(shapes):
    augment = build_augment("crop_flip")
    views = FixedViews(augment, len(shapes), 3, seed=7)
    from kdtutor.data._random import mix_seed

    index = torch.tensor([5, 0, 95, 5])
    x, _ = shapes.batch(index)
    for v in range(3):
        expected_params = augment.sample(
            len(shapes), torch.Generator().manual_seed(mix_seed(7, v, 3))
        )
        expected = augment.apply(x, *(p[index] for p in expected_params))
        assert torch.equal(views.apply(x, torch.full((4,), v), index), expected)
    assert "views=3" in views.describe() and "seed=7" in views.describe()
    with pytest.raises(ValueError, match="random augmentation"):
        FixedViews(build_augment(None), 10, 2)
    with pytest.raises(ValueError, match="positive"):
        FixedViews(augment, 10, 0)


def test_loader_with_views_shows_only_those_views(shapes):
    views = FixedViews(build_augment("crop_flip"), len(shapes), 2)
    loader = BatchLoader(shapes, 32, shuffle=True, seed=0, views=views)
    seen: dict[int, set[bytes]] = {}
    for epoch in range(6):
        for batch in loader.set_epoch(epoch):
            assert batch.view is not None and set(batch.view.tolist()) <= {0, 1}
            for i, image in zip(batch.index.tolist(), batch.x, strict=True):
                seen.setdefault(i, set()).add(image.numpy().tobytes())
    assert max(len(s) for s in seen.values()) <= 2  # never a third variant
    assert sum(len(s) == 2 for s in seen.values()) > len(shapes) // 2  # both views get shown


# -- caches ------------------------------------------------------------------------------------


def test_disk_cache_float32_equals_the_teacher_and_is_reused(digits):
    train, _ = digits
    teacher = teacher_net()
    d = build_distiller("kd", net(), teacher)
    cache = d.cache_teacher(train, None, mode=True, location="disk")
    assert cache.location == "disk" and isinstance(cache.logits, np.memmap)
    key = cache_key(teacher, train, None, [])
    folder = disk_cache_folder(key)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["key"] == key and meta["n"] == len(train) and meta["dtype"] == "float32"
    idx = torch.tensor([7, 0, 299, 7])
    x, _ = train.batch(idx)
    with torch.no_grad():
        direct = teacher(x)
    assert torch.equal(cache.lookup(idx).logits, direct)
    # a new process: nothing in memory, the files are opened and the teacher never runs
    clear_memory_cache()
    d2 = build_distiller("kd", net(), teacher)
    fit(d2, train, None, epochs=1, batch_size=64, cache=True, cache_location="disk", amp=False)
    assert d2.teacher_forward_calls == 0


def test_float16_cache_rounds_to_half_precision(digits):
    train, _ = digits
    teacher = teacher_net()
    for location in ("memory", "disk"):
        d = build_distiller("kd", net(), teacher)
        cache = d.cache_teacher(train, None, mode=True, location=location, dtype="float16")
        assert cache.logits.dtype in (torch.float16, np.float16)
        x, _ = train.batch(torch.arange(len(train)))
        with torch.no_grad():
            direct = teacher(x)
        got = cache.lookup(torch.arange(len(train))).logits
        assert got.dtype == torch.float32
        assert torch.equal(got, direct.half().float())  # rounded once, nothing else
    assert cache_key(teacher, train, None, [], dtype="float16") != cache_key(
        teacher, train, None, []
    )


def test_disk_cache_keeps_features_for_feature_methods(shapes):
    teacher = small_cnn(seed=5).eval()
    d = build_distiller("at", small_cnn(), teacher, input_shape=(3, 32, 32))
    cache = d.cache_teacher(shapes, None, mode=True, location="disk")
    assert set(cache.features) == set(d.teacher_feature_paths())
    idx = torch.tensor([3, 1, 90])
    x, _ = shapes.batch(idx)
    direct = d.compute_teacher_outputs(x)
    got = cache.lookup(idx)
    assert torch.equal(got.logits, direct.logits)
    for k in direct.features:
        assert torch.equal(got.features[k], direct.features[k])


@pytest.mark.parametrize("damage", ["meta", "truncate"])
def test_a_damaged_disk_cache_is_rebuilt_with_a_warning(digits, damage):
    train, _ = digits
    teacher = teacher_net()
    d = build_distiller("kd", net(), teacher)
    d.cache_teacher(train, None, mode=True, location="disk")
    folder = disk_cache_folder(cache_key(teacher, train, None, []))
    if damage == "meta":
        (folder / "meta.json").write_text("{not json")
    else:
        data = (folder / "logits.npy").read_bytes()
        (folder / "logits.npy").write_bytes(data[: len(data) // 2])
    clear_memory_cache()
    with pytest.warns(RuntimeWarning, match="unreadable teacher cache"):
        assert open_disk_cache(cache_key(teacher, train, None, [])) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cache = build_distiller("kd", net(), teacher).cache_teacher(
            train, None, mode=True, location="disk"
        )
    x, _ = train.batch(torch.arange(5))
    with torch.no_grad():
        assert torch.equal(cache.lookup(torch.arange(5)).logits, teacher(x))
    assert not list(folder.glob(".*.tmp"))


def test_views_cache_holds_the_teacher_on_each_view(shapes):
    teacher = small_cnn(seed=5).eval()
    views = FixedViews(build_augment("crop_flip"), len(shapes), 3)
    d = build_distiller("kd", small_cnn(), teacher)
    cache = d.cache_teacher(shapes, build_augment("crop_flip"), mode=True, views=views)
    assert cache.views == 3 and cache.logits.shape[0] == 3 * len(shapes)
    idx, view = torch.tensor([4, 4, 60, 0]), torch.tensor([0, 2, 1, 2])
    x, _ = shapes.batch(idx)
    with torch.no_grad():
        direct = teacher(views.apply(x, view, idx))
    rows = view * len(shapes) + idx  # what Batch.rows holds
    assert torch.allclose(cache.lookup(rows).logits, direct, atol=1e-5)
    with pytest.raises(KDTutorError, match="another dataset"):
        cache.lookup(rows + 3 * len(shapes))


def test_fit_with_views_runs_the_teacher_once_per_view(shapes):
    teacher = small_cnn(seed=5).eval()
    d = build_distiller("kd", small_cnn(), teacher)
    fit(d, shapes, None, epochs=3, batch_size=32, augment="crop_flip", cache_views=2)
    assert d.teacher_forward_calls == 2  # 96 images in one teacher batch, per view
    d = build_distiller("kd", small_cnn(), teacher)
    fit(d, shapes, None, epochs=3, batch_size=32, augment="crop_flip", cache=False)
    assert d.teacher_forward_calls == 3 * 3  # fresh augmentation: every batch of every epoch


def test_views_training_matches_running_the_teacher_on_the_same_views(shapes):
    """Caching fixed views changes which images the student sees, not the teacher's answers:
    a distiller without a cache that is shown the same fixed views trains identically."""
    teacher = small_cnn(seed=5).eval()
    states = []
    for cache in (True, False):
        d = build_distiller("kd", small_cnn(), teacher)
        views = FixedViews(build_augment("crop_flip"), len(shapes), 2)
        loader = BatchLoader(shapes, 32, shuffle=True, seed=0, views=views)
        if cache:
            d.cache_teacher(shapes, views.augment, mode=True, views=views)
        opt = torch.optim.SGD(d.trainable_parameters(), lr=0.05)
        d.train()
        for batch in loader.set_epoch(0):
            _, losses = d(batch.x, batch.y, batch.rows if cache else None)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        states.append(d.student.state_dict())
    assert all(torch.allclose(states[0][k], states[1][k], atol=1e-5) for k in states[0])


def test_cache_options_are_validated(digits):
    with pytest.raises(ConfigError, match="cache_dtype"):
        fit(net(), *digits, epochs=1, cache_dtype="int8")
    with pytest.raises(ConfigError, match="cache_location"):
        fit(net(), *digits, epochs=1, cache_location="cloud")
    with pytest.raises(ConfigError, match="cache_views"):
        fit(net(), *digits, epochs=1, cache_views=-1)


# -- GPU options -------------------------------------------------------------------------------


def test_runtime_defaults_are_off_on_cpu_and_on_with_cuda(monkeypatch):
    from kdtutor.train.config import cpu_bf16_supported

    cpu = resolve_runtime(TrainConfig(), torch.device("cpu"))
    assert (cpu.amp, cpu.channels_last, cpu.workers, cpu.pin_memory, cpu.compile_backend) == (
        False,
        False,
        0,
        False,
        None,
    )

    cpu_amp = resolve_runtime(TrainConfig(amp=True), torch.device("cpu"))
    assert cpu_amp.amp == cpu_bf16_supported() and cpu_amp.amp_dtype == torch.bfloat16
    assert not cpu_amp.grad_scaler
    fp16 = TrainConfig(amp=True, amp_dtype="float16")
    assert not resolve_runtime(fp16, torch.device("cpu")).amp  # float16 autocast: GPUs only
    import kdtutor.train.config as train_module

    monkeypatch.setattr(train_module, "_bf16_supported", lambda device: True)
    gpu = resolve_runtime(TrainConfig(), torch.device("cuda", 0))
    assert (gpu.amp, gpu.amp_dtype, gpu.channels_last, gpu.workers, gpu.pin_memory) == (
        True,
        torch.bfloat16,
        True,
        2,
        True,
    )
    assert not gpu.grad_scaler
    fp16 = resolve_runtime(TrainConfig(amp_dtype="float16"), torch.device("cuda"))
    assert fp16.amp_dtype == torch.float16 and fp16.grad_scaler
    monkeypatch.setattr(train_module, "_bf16_supported", lambda device: False)
    old_gpu = resolve_runtime(TrainConfig(), torch.device("cuda"))
    assert old_gpu.amp_dtype == torch.float16 and old_gpu.grad_scaler
    off = resolve_runtime(
        TrainConfig(amp=False, channels_last=False, workers=0, pin_memory=False, compile="eager"),
        torch.device("cuda"),
    )
    assert (off.amp, off.channels_last, off.workers, off.pin_memory) == (False, False, 0, False)
    assert off.compile_backend == "eager"
    assert (
        resolve_runtime(TrainConfig(compile=True), torch.device("cpu")).compile_backend
        == "inductor"
    )


def test_gpu_options_change_nothing_on_cpu(shapes):
    teacher = small_cnn(seed=5).eval()

    def train(**options):
        d = build_distiller("kd", small_cnn(), teacher)
        result = fit(d, shapes, None, epochs=2, batch_size=32, cache=False, **options)
        return d.student.state_dict(), result.history[-1]["loss"]

    fp32 = {"amp": False, "channels_last": False}
    base, loss = train(**fp32)
    gpu_only = {"amp": True, "amp_dtype": "float16", "pin_memory": True, "workers": 2}
    same, same_loss = train(**gpu_only, channels_last=False)
    assert loss == same_loss and all(torch.equal(base[k], same[k]) for k in base)
    # channels_last and compile reorder float sums, so they agree to rounding, not bit for bit:
    # compared after one step, before six SGD steps amplify the rounding (running_var once
    # drifted 1.3e-5 apart after two epochs on a fresh clone)
    one_step = {"epochs": 1, "batch_size": len(shapes), "cache": False}

    def step(**options):
        d = build_distiller("kd", small_cnn(), teacher)
        fit(d, shapes, None, **one_step, **options)
        return d.student.state_dict()

    base = step(**fp32)
    nhwc = step(amp=False, channels_last=True)
    assert all(torch.allclose(base[k], nhwc[k], atol=1e-5) for k in base)
    compiled = step(**fp32, compile="eager")
    assert all(torch.allclose(base[k], compiled[k], atol=1e-5) for k in base)


def test_bf16_autocast_on_cpu_is_recorded_and_keys_its_own_cache(shapes):
    from kdtutor.cache import clear_memory_cache
    from kdtutor.train.config import cpu_bf16_supported

    clear_memory_cache()
    teacher = small_cnn(seed=5).eval()
    runs, calls = [], []
    for options in ({}, {"amp": True, "channels_last": True}, {"amp": True}):
        d = build_distiller("kd", small_cnn(), teacher)
        runs.append(fit(d, shapes, None, epochs=1, batch_size=32, **options).runtime)
        calls.append(d.teacher_forward_calls)
    bf16 = "bfloat16" if cpu_bf16_supported() else False
    assert runs[0]["amp"] is False and runs[0]["channels_last"] is False
    assert runs[1]["amp"] == bf16 and runs[1]["channels_last"] is True
    # float32 and bfloat16 teachers give different outputs: each precision has its cache
    assert calls == [1, 1 if bf16 else 0, 0]


def test_checkpoint_path_per_seed(digits, tmp_path):
    run_seeds(
        lambda s: net(seed=s), *digits, seeds=[0, 1], epochs=1, checkpoint=tmp_path / "r-{seed}.pt"
    )
    assert (tmp_path / "r-0.pt").exists() and (tmp_path / "r-1.pt").exists()
    with pytest.raises(ConfigError, match=r"\{seed\}"):
        run_seeds(
            lambda s: net(seed=s), *digits, seeds=[0, 1], epochs=1, checkpoint=tmp_path / "r.pt"
        )


def test_cli_lists_and_clears_disk_caches(digits, tmp_path, capsys):
    from kdtutor.cli import main

    train, _ = digits
    teacher = teacher_net()
    build_distiller("kd", net(), teacher).cache_teacher(train, None, location="disk")
    build_distiller("kd", net(), teacher).cache_teacher(
        train, None, location="disk", dtype="float16"
    )
    (tmp_path / "cache" / "teacher" / "interrupted").mkdir()
    assert main(["cache", "list"]) == 0
    printed = capsys.readouterr().out
    assert ": 3" in printed and "300 images x 1 view(s), float16" in printed
    assert "300 images x 1 view(s), float32" in printed and "incomplete" in printed
    size = (disk_cache_folder(cache_key(teacher, train, None, [])) / "logits.npy").stat().st_size
    assert size == 128 + 300 * 10 * 4  # the .npy header, then 300 x 10 float32 logits
    assert main(["cache", "clear"]) == 0
    assert "deleted 3" in capsys.readouterr().out
    assert not list((tmp_path / "cache" / "teacher").iterdir())


def test_a_transform_without_sample_runs_whole_in_order(shapes):
    """A random transform that only implements __call__ still gets the epoch's generator, in
    batch order, but cannot run in loader threads or be sharded."""
    from kdtutor.data._random import mix_seed
    from kdtutor.data.transforms import BatchTransform

    class Noise(BatchTransform):
        deterministic = False

        def __call__(self, x, generator=None):
            return x + torch.randn(x.shape, generator=generator)

        def describe(self):
            return "Noise()"

    loader = BatchLoader(shapes, 40, shuffle=True, seed=5, augment=Noise())
    got = batches(loader, epoch=1)
    generator = torch.Generator().manual_seed(mix_seed(5, 1, 2))
    for batch in got:
        x, _ = shapes.batch(batch.index)
        assert torch.equal(batch.x, x + torch.randn(x.shape, generator=generator))
    for options in ({"workers": 2}, {"shard": (0, 2)}):
        with pytest.raises(ValueError, match="sample"):
            batches(BatchLoader(shapes, 40, augment=Noise(), **options))
