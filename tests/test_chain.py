"""Chains of distillation (``kdtutor.chain``): a chain of one stage is plain KD, each stage is
taught by the previous stage's saved weights bit for bit, the store skips trained stages and
shares prefixes, bad input is refused before anything trains, and the schemes suite's
Born-Again rows (now a chain) are those of a hand-written loop of ``fit`` calls."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from kdtutor.chain import ChainStage, chain_paths, fit_chain
from kdtutor.config import ConfigError
from kdtutor.data import ArrayDataset
from kdtutor.errors import KDTutorError, NotAModelError, ShapeMismatchError, UnknownNameError
from kdtutor.methods import build_distiller
from kdtutor.models import build_model
from kdtutor.seeding import seed_everything
from kdtutor.train import fit

torch.set_num_threads(1)

SETTINGS = {"epochs": 1, "batch_size": 64, "lr": 0.05}


@pytest.fixture
def teacher():
    """A fixed (untrained) cnn_medium: any network teaches, and its outputs are what count."""
    torch.manual_seed(0)
    return build_model("cnn_medium")


def same_weights(a: torch.nn.Module | dict, b: torch.nn.Module | dict) -> bool:
    a = a if isinstance(a, dict) else a.state_dict()
    b = b if isinstance(b, dict) else b.state_dict()
    return set(a) == set(b) and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def by_hand(method, spec, teacher, data, *, seed, init_seed=None, **hparams):
    """One distillation run written out: seed, build, distil, fit."""
    seed_everything(seed if init_seed is None else init_seed)
    student = build_model(spec, num_classes=10)
    distiller = build_distiller(method, student, teacher, hparams)
    result = fit(distiller, data.train, data.test, seed=seed, **SETTINGS)
    return student, result


def never(*_):
    raise AssertionError("the chain trained before refusing its input")


# -- what a chain computes ----------------------------------------------------------------------
def test_a_chain_of_one_stage_is_plain_kd(tiny_data, teacher):
    stages = fit_chain(teacher, ["cnn_tiny"], *tiny_data, seed=3, **SETTINGS)
    assert len(stages) == 1 and isinstance(stages[0], ChainStage)
    student, result = by_hand("kd", "cnn_tiny", teacher, tiny_data, seed=3)
    assert same_weights(stages[0].network, student)
    assert [h["losses"] for h in stages[0].result.history] == [h["losses"] for h in result.history]
    assert stages[0].result.last_acc == result.last_acc
    assert stages[0].key == "" and stages[0].weights is None  # no store
    network = stages[0].network
    assert not network.training and not any(p.requires_grad for p in network.parameters())


def test_each_stage_is_taught_by_the_previous_stages_saved_weights(tiny_data, teacher, tmp_path):
    path = ["cnn_small", "cnn_tiny_s2", "cnn_tiny"]  # three architectures
    seen = []

    def on_stage(i, distiller, result):
        assert result is not None and distiller.name == "takd"
        # as fit left it: the student still trains (run_cost can count its step)
        assert all(p.requires_grad for p in distiller.student.parameters())
        seen.append({k: v.clone() for k, v in distiller.teacher.state_dict().items()})

    stages = fit_chain(teacher, path, *tiny_data, seed=1, store=tmp_path, on_stage=on_stage,
                       **SETTINGS)  # fmt: skip
    assert [s.spec for s in stages] == path and len(seen) == 3
    assert same_weights(seen[0], teacher)
    saved = [torch.load(s.weights, weights_only=True) for s in stages]
    for k in range(3):
        assert saved[k]["model"] == path[k] and saved[k]["chain_path"] == path[: k + 1]
        assert same_weights(saved[k]["state_dict"], stages[k].network)
    for k in (1, 2):
        assert same_weights(seen[k], saved[k - 1]["state_dict"])
    # stage 2 again by hand, from stage 1's file: the same weights
    previous = build_model("cnn_tiny_s2", num_classes=10, weights_path=stages[1].weights)
    student, _ = by_hand("takd", "cnn_tiny", previous.eval(), tiny_data, seed=1)
    assert same_weights(student, stages[2].network)


def test_born_again_seeds_give_each_stage_its_own_initialisation(tiny_data, teacher):
    seeds = []
    stages = fit_chain(
        teacher, ["cnn_tiny", "cnn_tiny"], *tiny_data, method="kd", seed=2,
        init_seed=lambda i: 2 + 1000 * (i + 1), on_stage=lambda i, d, r: seeds.append(i),
        **SETTINGS,
    )  # fmt: skip
    assert seeds == [0, 1]
    first, _ = by_hand("kd", "cnn_tiny", teacher, tiny_data, seed=2, init_seed=1002)
    assert same_weights(first, stages[0].network)
    second, _ = by_hand("kd", "cnn_tiny", stages[0].network, tiny_data, seed=2, init_seed=2002)
    assert same_weights(second, stages[1].network)


def test_chain_paths_lists_every_path_through_the_assistants():
    assert chain_paths([]) == [()]
    paths = chain_paths(["w48", "w16", "w8"])
    assert len(paths) == 2**3 and len(set(paths)) == 8 and paths[0] == ()
    for p in paths:  # order kept, and every prefix of a path listed before it
        assert list(p) == sorted(p, key=["w48", "w16", "w8"].index)
        for n in range(len(p)):
            assert paths.index(p[:n]) < paths.index(p)
    for bad in ("w16", ["w16", "w16"], ["w16", 3]):
        with pytest.raises(KDTutorError):
            chain_paths(bad)


# -- the store ----------------------------------------------------------------------------------
def test_the_store_skips_trained_stages_and_shares_prefixes(tiny_data, teacher, tmp_path):
    first = fit_chain(teacher, ["cnn_small", "cnn_tiny"], *tiny_data, store=tmp_path, **SETTINGS)
    assert all(s.result is not None for s in first)
    assert len({s.key for s in first}) == 2 and all(len(s.key) == 64 for s in first)
    stamps = {s.weights: s.weights.stat().st_mtime_ns for s in first}

    results = []
    again = fit_chain(teacher, ["cnn_small", "cnn_tiny"], *tiny_data, store=tmp_path,
                      on_stage=lambda i, d, r: results.append(r), on_epoch=never,
                      **SETTINGS)  # fmt: skip
    assert results == [None, None] and all(s.result is None for s in again)
    assert all(same_weights(a.network, b.network) for a, b in zip(first, again, strict=True))
    assert {s.weights: s.weights.stat().st_mtime_ns for s in again} == stamps

    # another path with the same first stage: the prefix is shared, the rest trained
    other = fit_chain(teacher, ["cnn_small", "cnn_tiny_s2"], *tiny_data, store=tmp_path,
                      **SETTINGS)  # fmt: skip
    assert other[0].result is None and other[0].key == first[0].key
    assert other[1].result is not None and other[1].key != first[1].key

    # whatever changes the weights changes the key: a stage trains again
    for change in ({"hparams": {"T": 2.0}}, {"seed": 5}, {"epochs": 2}, {"init_seed": lambda i: 9}):
        settings = {**SETTINGS, "store": tmp_path, **change}
        stages = fit_chain(teacher, ["cnn_small"], *tiny_data, **settings)
        assert stages[0].result is not None and stages[0].key != first[0].key, change
    # ... and what does not, does not
    stages = fit_chain(teacher, ["cnn_small"], tiny_data.train, None, store=tmp_path,
                       eval_batch_size=7, **SETTINGS)  # fmt: skip
    assert stages[0].result is None


def test_two_spellings_of_one_architecture_share_a_stored_stage(tiny_data, teacher, tmp_path):
    one = fit_chain(teacher, ["convnet(widths=(8, 16))"], *tiny_data, store=tmp_path,
                    **SETTINGS)  # fmt: skip
    two = fit_chain(teacher, ["convnet(widths=[8,16])"], *tiny_data, store=tmp_path,
                    **SETTINGS)  # fmt: skip
    assert one[0].result is not None and two[0].result is None
    assert one[0].key == two[0].key


def test_a_resumed_chain_trains_only_the_missing_stage_and_ends_where_a_whole_one_does(
    tiny_data, teacher, tmp_path
):
    whole = fit_chain(teacher, ["cnn_small", "cnn_tiny"], *tiny_data, store=tmp_path, **SETTINGS)
    whole[1].weights.unlink()  # the chain was stopped before its last stage was saved
    resumed = fit_chain(teacher, ["cnn_small", "cnn_tiny"], *tiny_data, store=tmp_path,
                        **SETTINGS)  # fmt: skip
    assert resumed[0].result is None and resumed[1].result is not None
    assert same_weights(resumed[1].network, whole[1].network)
    assert resumed[1].result.history == [
        {**h, "seconds": r["seconds"], "eval_seconds": r["eval_seconds"]}
        for h, r in zip(whole[1].result.history, resumed[1].result.history, strict=True)
    ]


def test_an_unreadable_or_foreign_store_file_is_trained_again_with_a_warning(
    tiny_data, teacher, tmp_path
):
    stages = fit_chain(teacher, ["cnn_small", "cnn_tiny"], *tiny_data, store=tmp_path, **SETTINGS)
    good = stages[0].network.state_dict()
    stages[0].weights.write_bytes(b"not a checkpoint")
    stages[1].weights.write_bytes(stages[0].weights.read_bytes())
    with pytest.warns(RuntimeWarning, match="unreadable chain stage"):
        again = fit_chain(teacher, ["cnn_small"], *tiny_data, store=tmp_path, **SETTINGS)
    assert again[0].result is not None and same_weights(again[0].network, good)
    # a file written for another stage (here: stage 0's, copied) is not loaded
    (tmp_path / f"{stages[1].key}.pt").write_bytes(stages[0].weights.read_bytes())
    with pytest.warns(RuntimeWarning, match="another stage"):
        again = fit_chain(teacher, ["cnn_small", "cnn_tiny"], *tiny_data, store=tmp_path,
                          **SETTINGS)  # fmt: skip
    assert again[0].result is None and again[1].result is not None
    assert same_weights(again[1].network, stages[1].network)


def test_store_true_keeps_stages_under_the_disk_cache(tiny_data, teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))
    stages = fit_chain(teacher, ["cnn_tiny"], *tiny_data, store=True, **SETTINGS)
    assert stages[0].weights.parent == tmp_path / "cache" / "chains"
    assert stages[0].weights.is_file()


# -- bad input ----------------------------------------------------------------------------------
def test_bad_input_is_refused_before_anything_trains(tiny_data, teacher, tmp_path):
    train, test = tiny_data
    five = ArrayDataset(train.images[:40], train.targets[:40] % 5, [str(c) for c in range(5)],
                        "shapes5")  # fmt: skip
    torch.manual_seed(0)
    tiny, teacher5 = build_model("cnn_tiny"), build_model("cnn_medium", num_classes=5)
    cases = [
        (dict(path=[]), KDTutorError, "no stages"),
        (dict(path="cnn_tiny"), KDTutorError, "list of model specs"),
        (dict(path=["cnn_tiny", 3]), KDTutorError, "stage 1 .* model spec string"),
        (dict(path=["cnn_small", "cnn_tinyy"]), UnknownNameError, "cnn_tinyy"),
        (dict(path=["zoo:shapes_cnn_large"]), KDTutorError, "trained already"),
        (dict(method="kdd"), UnknownNameError, "unknown method 'kdd'"),
        (dict(method="scratch"), KDTutorError, "trains without a teacher"),
        (dict(hparams={"temperature": 2}), ConfigError, "unknown key 'temperature'"),
        (dict(hparams={"T": -1.0}), ConfigError, "T must be > 0"),
        (dict(lr=-1.0), ConfigError, "lr must be > 0"),
        (dict(checkpoint=tmp_path / "c.pt"), KDTutorError, "store="),
        (dict(seed=-1), KDTutorError, "seed"),
        (dict(init_seed=lambda i: -i - 1), KDTutorError, r"init_seed\(0\)"),
        (dict(store=tmp_path / "f.txt"), KDTutorError, "is a file"),
        # BAN's rule (the same architecture) is checked before stage 0 trains
        (
            dict(method="ban", teacher=tiny, path=["cnn_tiny", "cnn_small"]),
            ShapeMismatchError,
            "ban's teacher must be the previous generation",
        ),
        (dict(train=five), ShapeMismatchError, "teacher predicts 10 classes .* has 5"),
        (dict(teacher=teacher5), ShapeMismatchError, "predicts 5 classes .* data has 10"),
        (dict(teacher="cnn_medium.pt"), UnknownNameError, "cnn_medium.pt"),
        (dict(teacher=[1, 2]), NotAModelError, "teacher must be"),
        (dict(train=DataLoader(train, batch_size=32), store=tmp_path), KDTutorError, "DataLoader"),
    ]
    (tmp_path / "f.txt").write_text("")
    for change, error, message in cases:
        args = {"teacher": teacher, "path": ["cnn_small", "cnn_tiny"], "train": train,
                "test": test, **SETTINGS, **change}  # fmt: skip
        with pytest.raises(error, match=message):
            fit_chain(args.pop("teacher"), args.pop("path"), args.pop("train"), args.pop("test"),
                      on_epoch=never, **args)  # fmt: skip


# -- the schemes suite's Born-Again chain -------------------------------------------------------
def born_again_by_hand(preset_name: str, seed: int) -> list[dict]:
    """The schemes suite's Born-Again rows from a loop of ``fit`` calls written out here:
    generation g (1..G) is a fresh ``cnn_wide_s2`` seeded ``seed + 1000 g``, distilled by BAN
    from generation g - 1 (generation 0: the saved ``scratch`` student), scored alone and as
    the ensemble of generations 0..g, and charged the generations before it."""
    from kdtutor.bench.cost import network_flops, run_cost
    from kdtutor.bench.knowledge import PRESETS, method_hparams, preset_data
    from kdtutor.bench.schemes import (
        _get_scheme,
        _network_rows,
        _scratch_cost,
        _weights_path,
    )
    from kdtutor.losses.schemes import ensemble_log_probs

    preset, scheme = PRESETS[preset_name], _get_scheme("ban")
    train, test = preset_data(preset, "train"), preset_data(preset, "test")
    shape = tuple(train.images.shape[1:])
    hparams = {**method_hparams("ban", preset.epochs, len(train)), **scheme.hparams}
    settings = dict(epochs=preset.epochs, batch_size=preset.batch_size, lr=preset.lr,
                    schedule=preset.schedule, milestones=preset.milestones,
                    augment=preset.augment, **preset.train)  # fmt: skip
    weights = _weights_path(preset_name, "scratch", seed)
    generation0 = build_model("cnn_wide_s2", num_classes=10, weights_path=weights)
    generations = [generation0.eval().requires_grad_(False)]
    prior = _scratch_cost(preset, "cnn_wide_s2", seed)
    single = network_flops(generation0, shape)
    rows = []
    for g in range(1, scheme.generations + 1):
        seed_everything(seed + 1000 * g)
        student = build_model("cnn_wide_s2", num_classes=10)
        distiller = build_distiller("ban", student, generations[-1], hparams, input_shape=shape)
        result = fit(distiller, train, test, seed=seed, **settings)
        cost = run_cost(distiller, train, result, batch_size=preset.batch_size)
        generations.append(student.eval().requires_grad_(False))
        members = list(generations)
        curve = ";".join(f"{h['test_acc']:.2f}" for h in result.history)
        new = _network_rows(
            distiller, preset, scheme, seed, curves={"student": curve}, train=cost, prior=prior,
            extra={"ensemble": lambda x, m=members: ensemble_log_probs([n(x) for n in m])},
            extra_flops={"ensemble": single * len(members)},
        )  # fmt: skip
        for row in new:
            row["network"] = f"gen{g}" if row["network"] == "student" else f"ens0-{g}"
            row["method"] = f"ban/{row['network']}"
        rows.extend(new)
        prior = prior + cost
    return rows


TIMES = ("seconds", "train_seconds", "prior_seconds", "total_seconds")


def test_born_again_rows_of_the_schemes_suite_are_those_of_a_loop_of_fit_calls(
    tmp_path, monkeypatch
):
    from kdtutor.bench.schemes import run_scheme

    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path))
    rows = run_scheme("ban", 0, "smoke", preset_name="smoke")  # trains and saves scratch too
    expected = born_again_by_hand("smoke", 0)
    assert [r["method"] for r in rows] == [
        "ban/gen1", "ban/ens0-1", "ban/gen2", "ban/ens0-2", "ban/gen3", "ban/ens0-3",
    ]  # fmt: skip
    assert [r["method"] for r in expected] == [r["method"] for r in rows]
    for row, want in zip(rows, expected, strict=True):
        assert set(row) == set(want)
        assert {k: v for k, v in row.items() if k not in TIMES} == {
            k: v for k, v in want.items() if k not in TIMES
        }, row["method"]
