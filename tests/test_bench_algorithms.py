"""Chapter 6's suite at smoke scale (design note algorithms.md, section 4): the catalogue
(labels, methods, pending entries, the cost estimate), each runner against a run written out
here or an independent computation, the references copied from the knowledge suite, the
adversarial weight's grid, resume, the published figures and ``kdtutor bench --suite
algorithms`` with its refusals of bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import kdtutor.bench.algorithms as algorithms_module
from kdtutor.bench.algorithms import (
    ALGORITHM_COLUMNS,
    ALGORITHMS,
    FAMILIES,
    PUBLISHED_ALGORITHMS,
    RUNNERS,
    TASKS,
    VIT_PAIR,
    Algorithm,
    estimated_units,
    get_algorithm,
    load_algorithms,
    pending_algorithms,
    run_algorithm,
    run_algorithms_suite,
    select_algorithms,
)
from kdtutor.bench.cost import network_flops, teacher_cost
from kdtutor.bench.knowledge import PRESETS, load_results, preset_data, run_one, run_suite
from kdtutor.bench.report import gains_with_intervals
from kdtutor.bench.schemes import _scratch_cost, _weights_path
from kdtutor.bench.significance import decode_correct
from kdtutor.cli import main
from kdtutor.data.modalities import geometry_dataset
from kdtutor.errors import KDTutorError, UnknownNameError
from kdtutor.methods import build_distiller, get_method, list_methods
from kdtutor.methods.adversarial import AdversarialHParams
from kdtutor.methods.deepinversion import invert, synthetic_dataset
from kdtutor.models import build_model
from kdtutor.qat import packed_size_mb
from kdtutor.seeding import seed_everything
from kdtutor.specs import build_from_spec
from kdtutor.train import fit
from kdtutor.zoo import get_recipe, load_teacher

torch.set_num_threads(1)

SMOKE = PRESETS["smoke"]
NEED_ZOO = {"kd_resnet14", "kd_vit_p8", "mt_mean", "mt_ebkd", "mt_camkd", "vit_kd",
            "vit_attn_kd"}  # fmt: skip
"""The entries that need ``shapes_resnet14`` or ``shapes_vit_p8`` (chapter 6's zoo teachers)."""


@pytest.fixture(scope="module", autouse=True)
def _folders(tmp_path_factory):
    """A disk cache and a results folder of this module's own (saved fp32 students, no
    committed CSV read by accident)."""
    folder = tmp_path_factory.mktemp("algorithms")
    mp = pytest.MonkeyPatch()
    mp.setenv("KDTUTOR_CACHE", str(folder / "cache"))
    mp.setenv("KDTUTOR_RESULTS", str(folder / "results"))
    (folder / "results").mkdir()
    yield folder
    mp.undo()


def run(label, seed=0, **changes):
    """The rows of one catalogue entry at smoke scale, ``extra`` parsed."""
    algorithm = get_algorithm(label)
    if changes:
        algorithm = dataclasses.replace(algorithm, **changes)
    rows = run_algorithm(algorithm, seed, "smoke")
    assert all(tuple(row) == ALGORITHM_COLUMNS for row in rows)
    for row in rows:
        row["extra"] = json.loads(row["extra"])
    return {row["network"]: row for row in rows}


def flags(model, data):
    """Right/wrong per image of ``model`` (eval mode) on ``data``."""
    model.eval()
    with torch.no_grad():
        x, y = data.batch(torch.arange(len(data)))
        return (model(x).argmax(1) == y).numpy()


def settings(epochs=None, **changes):
    return {"epochs": epochs or SMOKE.epochs, "batch_size": SMOKE.batch_size, "lr": SMOKE.lr,
            "schedule": SMOKE.schedule, "milestones": SMOKE.milestones,
            "augment": SMOKE.augment, **SMOKE.train, **changes}  # fmt: skip


# -- the catalogue -------------------------------------------------------------------------------
def test_labels_are_unique_methods_registered_and_settings_accepted():
    labels = [a.label for a in ALGORITHMS]
    assert len(labels) == len(set(labels))
    assert {a.family for a in ALGORITHMS} == set(FAMILIES)
    assert {a.runner for a in ALGORITHMS} == set(RUNNERS)
    registered = set(list_methods())
    for algorithm in ALGORITHMS:
        assert algorithm.method in registered, algorithm.label
        cls = get_method(algorithm.method)
        if algorithm.family not in ("reference", "cross_modal"):
            assert cls.family == algorithm.family or algorithm.method in ("scratch", "kd")
        cls.hparams_cls(**algorithm.hparams)
        spec = algorithm.student or ("cnn_tiny" if algorithm.data == "mnist5k" else "cnn_wide_s2")
        build_from_spec(spec, num_classes=10, in_channels=1 if algorithm.data == "mnist5k" else 3)
    grid = [a for a in ALGORITHMS if a.grid == "adv_tune"]
    default = AdversarialHParams().adv_weight
    assert [a.options["factor"] for a in grid] == [0.01, 0.1, 1.0, 10.0]
    for a in grid:
        assert a.seeds == (0,) and a.split == "val"
        assert a.hparams["adv_weight"] == pytest.approx(default * a.options["factor"])
    assert get_algorithm("adv_logits").tuned_by == "adv_tune"


def test_pending_entries_are_those_whose_zoo_teachers_are_not_trained(monkeypatch):
    """An entry is pending exactly when a zoo teacher it loads is untrained, and says which
    and how to train it; with no teacher trained, every entry of :data:`NEED_ZOO` waits."""
    from kdtutor import zoo

    for teacher in ("shapes_resnet14", "shapes_vit_p8"):
        assert get_recipe(teacher).folder == "shapes"
    trained = {
        n: f
        for n, f in zoo.trained_teachers().items()
        if n not in {"shapes_resnet14", "shapes_vit_p8"}
    }
    monkeypatch.setattr(zoo, "trained_teachers", lambda: dict(trained))
    reasons = pending_algorithms()
    assert set(reasons) == NEED_ZOO
    for label in NEED_ZOO:
        entry = get_algorithm(label)
        uses = f"{entry.teacher} {entry.hparams.get('teachers', ())}"
        for teacher in ("shapes_resnet14", "shapes_vit_p8"):
            said = f"{teacher} is not trained (`kdtutor zoo train {teacher}`)" in reasons[label]
            assert said == (teacher in uses)
    with pytest.raises(KDTutorError, match="kdtutor zoo train shapes_vit_p8"):
        run_algorithm("vit_attn_kd", 0, "smoke")
    trained["shapes_resnet14"] = trained["shapes_vit_p8"] = zoo.zoo_dir() / "shapes"
    assert pending_algorithms() == {}


def test_the_cost_estimate_is_the_design_notes(monkeypatch):
    from kdtutor import zoo

    untrained = {"shapes_resnet14", "shapes_vit_p8"}
    trained = {n: f for n, f in zoo.trained_teachers().items() if n not in untrained}
    monkeypatch.setattr(zoo, "trained_teachers", lambda: dict(trained))
    per_family = {}
    for a in ALGORITHMS:
        if a.family != "reference":
            runs = a.units * len(a.seeds or (0, 1, 2))
            per_family[a.family] = per_family.get(a.family, 0.0) + runs
    expected = {"adversarial": 13.0, "multi_teacher": 15.6, "cross_modal": 12.9,
                "graph": 4.8, "attention": 18.6, "data_free": 36.6, "quantized": 9.6,
                "lifelong": 10.5}  # fmt: skip
    assert per_family == pytest.approx(expected)
    assert estimated_units() == pytest.approx(121.6)
    # without chapter 6's two zoo teachers: no multi-teacher rows, no ViT-teacher rows
    assert estimated_units(pending=False) == pytest.approx(121.6 - 15.6 - 4.2 * 3)


def test_selection_adds_the_grid_and_the_references_and_names_the_choices():
    quantized = [a.label for a in select_algorithms(["quantized"])]
    assert quantized[:4] == ["scratch", "kd", "at", "irg"] and "mnist_scratch" not in quantized
    assert {"ptq8", "qkd4"} <= set(quantized)
    free = [a.label for a in select_algorithms(["data_free"])]
    assert {"mnist_scratch", "mnist_kd", "mnist_dafl"} <= set(free)
    tuned = [a.label for a in select_algorithms(labels=["adv_logits"])]
    assert tuned == [*(f"adv_tune_x{f:g}" for f in (0.01, 0.1, 1, 10)), "adv_logits"]
    with pytest.raises(UnknownNameError, match=r"'quantised'.*'quantized'.*lifelong"):
        select_algorithms(["quantised"])
    with pytest.raises(UnknownNameError, match=r"'dalf'.*'dafl'"):
        select_algorithms(labels=["dalf"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label": "a/b"}, "without '/'"),
        ({"runner": "gan"}, "runner must be one of"),
        ({"family": "nas"}, "family must be one of"),
        ({"data": "cifar10"}, "data must be one of"),
        ({"grid": "adv_tune"}, "needs options"),
        ({"teacher": "resnet"}, "teacher must be"),
        ({"seeds": (-1,)}, "non-negative"),
    ],
)
def test_an_entry_that_cannot_describe_a_run_is_refused(changes, message):
    base = {"label": "x", "family": "graph", "runner": "plain", "method": "mhgd", "teacher": "zoo"}
    with pytest.raises(KDTutorError, match=message):
        Algorithm(**{**base, **changes})


# -- the runners ----------------------------------------------------------------------------------
def test_a_plain_reference_run_is_the_knowledge_suites_run():
    rows = run("kd")
    knowledge = run_one(SMOKE.pairs[0], "kd", 0, SMOKE)
    row = rows["student"]
    assert row["correct"] == knowledge["correct"]
    assert row["last_acc"] == pytest.approx(knowledge["last_acc"], abs=1e-3)
    assert (row["pair"], row["family"], row["method"]) == ("cnn_large->cnn_wide_s2",
                                                           "reference", "kd/student")  # fmt: skip
    assert float(row["prior_flops"]) == pytest.approx(teacher_cost("shapes_cnn_large").flops)


def test_the_adversarial_run_records_its_discriminator_after_every_epoch():
    row = run("adv_logits", options={"tuned_factor": 1.0})["student"]
    curve = row["extra"]["disc_acc"]
    assert len(curve) == SMOKE.epochs and all(0.0 <= v <= 100.0 for v in curve)
    assert row["extra"]["disc_images"] == SMOKE.val_size
    assert row["extra"]["tuned"] == {"grid": "adv_tune", "factor": 1.0}
    assert row["hparams"] == ""  # the method's default weight: no grid resolved here


def test_a_multi_teacher_run_scores_its_ensemble_and_its_teachers_weights():
    """Two copies of one teacher: CA-MKD weighs them 1/2 each, the ensemble is the teacher."""
    hparams = {"teachers": ("shapes_cnn_large",), "combine": "camkd"}
    twice = Algorithm("mt_twice", "multi_teacher", "plain", "mtkd", hparams, teacher="zoo")
    rows = {r["network"]: r for r in run_algorithm(twice, 0, "smoke")}
    assert set(rows) == {"student", "ensemble"}
    test = preset_data(SMOKE, "test")
    teacher_flags = flags(load_teacher("shapes_cnn_large"), test)
    ensemble = rows["ensemble"]
    assert np.array_equal(decode_correct(ensemble["correct"], len(test)), teacher_flags)
    assert ensemble["student"] == ensemble["teacher"] == "shapes_cnn_large+shapes_cnn_large"
    stats = json.loads(rows["student"]["extra"])["teachers"]
    assert stats["mean_weight"] == pytest.approx([0.5, 0.5])
    assert stats["accuracy"] == pytest.approx([100.0 * teacher_flags.mean()] * 2)
    assert float(ensemble["prior_flops"]) == pytest.approx(
        2 * teacher_cost("shapes_cnn_large").flops
    )


def test_dafl_is_a_data_free_fit_on_its_generated_batches():
    row = run("dafl")["student"]
    test = preset_data(SMOKE, "test")
    teacher = load_teacher("shapes_cnn_large")  # before seeding, as the runner loads it
    seed_everything(0)
    student = build_model("cnn_wide_s2", num_classes=10)
    hp = {**get_algorithm("dafl").hparams, "gen_width": 8, "img_size": 32}
    d = build_distiller("dafl", student, teacher, hp)  # the generator's weights: after seeding
    fit(d, None, test, seed=0, **settings(batch_size=32, steps_per_epoch=2))
    assert np.array_equal(decode_correct(row["correct"], len(test)), flags(d.student, test))
    assert row["extra"]["generated_images"] == 32 * 2 * 1
    noise = run("noise_kd")["student"]
    assert noise["extra"]["gen_width"] == 0
    assert float(row["train_flops"]) > float(noise["train_flops"]) > 0  # the generator's step


def test_deepinversion_trains_kd_on_the_pool_it_inverts():
    row = run("deepinversion")["student"]
    train, test = preset_data(SMOKE, "train"), preset_data(SMOKE, "test")
    teacher = load_teacher("shapes_cnn_large")
    images, targets = invert(teacher, 32, batch=16, iters=2, seed=0, num_classes=10)
    pool = synthetic_dataset(images, targets, like=train, seed=0)
    seed_everything(0)
    d = build_distiller("kd", build_model("cnn_wide_s2", num_classes=10), teacher,
                        {"ce_weight": 0.0, "kd_weight": 1.0, "T": 4.0})  # fmt: skip
    fit(d, pool, None, seed=0, **settings())
    assert np.array_equal(decode_correct(row["correct"], len(test)), flags(d.student, test))
    assert row["curve"] == "" and row["best_acc"] == row["last_acc"]  # scored once, at the end
    extra = row["extra"]
    assert (extra["pool"], extra["iters"]) == (32, 2)
    prior = float(row["prior_flops"]) - teacher_cost("shapes_cnn_large").flops
    assert prior == pytest.approx(float(extra["synthesis_flops"]), rel=1e-6) and prior > 0


def test_mnist_rows_follow_the_mnist5k_protocol_with_a_one_channel_student():
    row = run("mnist_noise_kd")["student"]
    assert (row["pair"], row["teacher"], row["student"]) == (
        "mnist5k:cnn_medium->cnn_tiny", "mnist5k_cnn", "cnn_tiny")  # fmt: skip
    tiny = build_model("cnn_tiny", num_classes=10, in_channels=1)
    assert float(row["infer_flops"]) == pytest.approx(network_flops(tiny, (1, 28, 28)))
    assert float(row["prior_flops"]) == pytest.approx(teacher_cost("mnist5k_cnn").flops)
    assert len(decode_correct(row["correct"], 128)) == 128  # the smoke mnist5k test split


def test_cross_modal_transfer_then_fine_tune_and_the_few_label_student_alone():
    rows = run("xm_gupta")
    assert set(rows) == {"transfer", "finetuned"}
    transfer, tuned = rows["transfer"], rows["finetuned"]
    assert transfer["pair"] == tuned["pair"] == "geometry:cnn_large->cnn_wide_s2"
    assert tuned["epochs"] == 4 == tuned["extra"]["finetune_epochs"]  # 4 steps of 64 labels
    assert float(tuned["prior_flops"]) == pytest.approx(
        float(transfer["prior_flops"]) + float(transfer["train_flops"])
    )
    few = run("geo_few")["student"]
    geometry = geometry_dataset("train", 256)
    seed_everything(0)
    alone = build_distiller("scratch", build_model("cnn_wide_s2", num_classes=10))
    fit(alone, geometry.subset(64), None, seed=0, **settings(epochs=4))
    test = geometry_dataset("test", SMOKE.test_size)
    assert np.array_equal(decode_correct(few["correct"], len(test)), flags(alone.student, test))


def test_quantization_starts_from_the_saved_fp32_student():
    ptq, qat = run("ptq4")["student"], run("qat8")["student"]
    weights = _weights_path("smoke", "scratch", 0)
    assert weights.exists()  # the schemes suite's scratch student, trained here when missing
    fp32 = build_model("cnn_wide_s2", num_classes=10, weights_path=weights)
    accuracy = 100.0 * flags(fp32, preset_data(SMOKE, "test")).mean()
    for row in (ptq, qat):
        assert row["extra"]["fp32_acc"] == pytest.approx(accuracy, abs=1e-3)
        assert row["extra"]["int8_mb"] < row["extra"]["fp32_mb"]
        assert set(row["extra"]["latency"]) == {"fp32", "int8"}
        assert row["teacher"] == ""  # neither uses the teacher: not charged
    assert (ptq["epochs"], qat["epochs"]) == (0, 2)
    qkd = run("qkd4")["student"]  # self-studying epoch, then co-studying: the teacher trains
    assert qkd["teacher"] == "shapes_cnn_large" and qkd["extra"]["bits"] == 4
    one_epoch = _scratch_cost(SMOKE, "cnn_wide_s2", 0).flops
    assert float(qkd["train_flops"]) > 10 * one_epoch
    params = sum(p.numel() for p in fp32.parameters())
    assert ptq["extra"]["packed_mb"] == pytest.approx(packed_size_mb(fp32, 4), abs=1e-6)
    assert ptq["extra"]["packed_mb"] == pytest.approx(params * 4 / 8 / 2**20, abs=1e-6)


def test_a_sequence_records_its_accuracy_matrix_and_icarl_its_nearest_mean_scores():
    rows = run("icarl")
    assert set(rows) == {"student", "nme"}
    extra = rows["student"]["extra"]
    test = preset_data(SMOKE, "test")
    correct = decode_correct(rows["student"]["correct"], len(test))
    labels = test.targets.numpy()
    for matrix in (extra["accuracy"], extra["nme_accuracy"]):
        assert [sum(v is not None for v in row) for row in matrix] == [1, 2, 3, 4, 5]
    # the last row of the matrix is the final student's per-task accuracy on the test split
    for j, task in enumerate(TASKS):
        mask = np.isin(labels, task)
        assert extra["accuracy"][-1][j] == pytest.approx(100 * correct[mask].mean(), abs=1e-3)
    nme = decode_correct(rows["nme"]["correct"], len(test))
    for j, task in enumerate(TASKS):
        mask = np.isin(labels, task)
        assert extra["nme_accuracy"][-1][j] == pytest.approx(100 * nme[mask].mean(), abs=1e-3)
    assert extra["average"][-1] == pytest.approx(np.mean(extra["accuracy"][-1]), abs=1e-3)
    final = extra["accuracy"][-1]
    assert extra["forgetting"] == pytest.approx(
        [max(r[j] for r in extra["accuracy"][j:]) - final[j] for j in range(4)], abs=1e-3
    )


# -- the suite ------------------------------------------------------------------------------------
def test_references_are_copied_quantized_rows_charged_and_a_second_call_runs_nothing(
    tmp_path, monkeypatch
):
    knowledge = tmp_path / "knowledge_smoke.csv"
    run_suite("smoke", methods=["scratch"], pairs=[SMOKE.pairs[0].label], out=knowledge,
              log=None)  # fmt: skip
    out, lines = tmp_path / "algorithms.csv", []
    rows = run_algorithms_suite("smoke", labels=["scratch", "ptq8"], out=out,
                                reuse={"shapes": knowledge}, log=lines.append)  # fmt: skip
    assert any("1 references copied" in line for line in lines)
    loaded, header = load_algorithms(out)
    assert header["preset"] == "smoke"
    by = {r["method"]: r for r in loaded}
    assert set(by) == {"scratch/student", "ptq8/student"}
    (source,) = load_results(knowledge)[0]
    scratch = by["scratch/student"]
    assert scratch["correct"] == source["correct"]
    assert scratch["extra"] == {"data": "shapes", "copied_from": "knowledge_smoke.csv"}
    assert scratch["train_seconds"] == pytest.approx(source["seconds"])
    ptq = by["ptq8/student"]
    assert ptq["prior_seconds"] == pytest.approx(scratch["train_seconds"], abs=0.02)
    (gain,) = gains_with_intervals(loaded, SMOKE.test_size, baseline="scratch/student")
    assert gain["method"] == "ptq8/student" and gain["pair"] == "cnn_large->cnn_wide_s2"
    assert gain["gain"] == pytest.approx(ptq["last_acc"] - scratch["last_acc"], abs=1e-6)
    before = out.read_bytes()

    def refuse(task):
        raise AssertionError(f"ran {task[0].label} again")

    monkeypatch.setattr(algorithms_module, "_run_task", refuse)
    again = run_algorithms_suite("smoke", labels=["scratch", "ptq8"], out=out,
                                 reuse={"shapes": knowledge}, log=None)  # fmt: skip
    assert len(again) == len(rows) == 2
    assert out.read_bytes() == before


def test_the_adversarial_weight_is_the_grids_choice_on_validation_images(tmp_path):
    out = tmp_path / "algorithms.csv"
    run_algorithms_suite("smoke", labels=["adv_logits"], out=out, log=None)
    rows = {r["scheme"]: r for r in load_algorithms(out)[0]}
    grid = [rows[f"adv_tune_x{f:g}"] for f in (0.01, 0.1, 1, 10)]
    # each grid run is the knowledge suite's run at that weight, scored on validation images
    by_hand = run_one(SMOKE.pairs[0], "adversarial", 0, SMOKE, {"adv_weight": 0.1}, "val")
    assert grid[2]["correct"] == by_hand["correct"]
    best = max(grid, key=lambda r: (r["last_acc"], -abs(math.log10(
        float(r["hparams"].split("=")[1]) / 0.1))))  # fmt: skip
    chosen = rows["adv_logits"]
    assert chosen["hparams"] == best["hparams"]
    factor = float(best["hparams"].split("=")[1]) / 0.1
    assert chosen["extra"]["tuned"]["factor"] == pytest.approx(factor)


def test_pending_entries_are_refused_by_label_and_family_and_skipped_otherwise(tmp_path):
    out = tmp_path / "algorithms.csv"
    with pytest.raises(KDTutorError, match="kdtutor zoo train shapes_resnet14"):
        run_algorithms_suite("smoke", labels=["mt_mean"], out=out, log=None)
    with pytest.raises(KDTutorError, match="no algorithm of family 'multi_teacher'"):
        run_algorithms_suite("smoke", families=["multi_teacher"], out=out, log=None)
    with pytest.raises(KDTutorError, match="preset 'smoke' or 'book'"):
        run_algorithms_suite("mnist5k", out=out, log=None)
    assert not out.exists()


def test_a_page_reads_a_smoke_suite_it_runs_now(monkeypatch, tmp_path):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))  # page_rows moves it
    rows, header = algorithms_module.page_rows("smoke", ["vit_scratch"])
    assert [r["method"] for r in rows] == ["vit_scratch/student"]
    assert header["command"] == "smoke page" and rows[0]["extra"]["optimizer"] == "sgd"


# -- published figures ---------------------------------------------------------------------------
def test_published_figures_name_their_source_and_status():
    assert set(PUBLISHED_ALGORITHMS) == set(FAMILIES) - {"reference"}
    assert PUBLISHED_ALGORITHMS["multi_teacher"] == PUBLISHED_ALGORITHMS["cross_modal"] == ()
    for family, entries in PUBLISHED_ALGORITHMS.items():
        for entry in entries:
            assert entry["family"] == family and entry["source"] and entry["quoted"]
            assert entry["verified"] == (entry["status"] == "verified")
            if entry["alone"] is not None and entry["distilled"] is not None:
                assert entry["gain"] == pytest.approx(entry["distilled"] - entry["alone"])
    dafl = {e["dataset"]: e["values"] for e in PUBLISHED_ALGORITHMS["data_free"] if "dafl" in
            e["values"] and "noise_kd" in e["values"]}  # fmt: skip
    assert dafl["MNIST"] == {"teacher": 98.91, "alone": 98.65, "kd": 98.91, "noise_kd": 88.01,
                             "dafl": 98.20}  # fmt: skip
    assert dafl["CIFAR-10"]["noise_kd"] == 14.89 and dafl["CIFAR-10"]["dafl"] == 92.22
    vitkd = PUBLISHED_ALGORITHMS["attention"][0]
    assert (vitkd["network"], vitkd["alone"], vitkd["distilled"]) == ("DeiT-Tiny", 74.42, 76.06)
    assert [e["values"]["gain"] for e in PUBLISHED_ALGORITHMS["graph"]] == [7.05]
    assert not PUBLISHED_ALGORITHMS["lifelong"][0]["verified"]


# -- the command line ------------------------------------------------------------------------------
def test_bench_algorithms_writes_its_columns_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "algorithms.csv"
    argv = ["bench", "--suite", "algorithms", "--preset", "smoke", "--labels", "vit_scratch",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    table = printed[printed.index("label/network") :]  # after the progress lines
    line = next(x for x in table.splitlines() if x.startswith("vit_scratch/student"))
    assert VIT_PAIR in line
    header = next(x for x in out.read_text().splitlines() if not x.startswith("#"))
    assert tuple(header.split(",")) == ALGORITHM_COLUMNS
    (row,) = load_algorithms(out)[0]
    assert row["extra"] == {"data": "shapes", "optimizer": "sgd"}
    assert f"{row['last_acc']:.2f}" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--families", "quantised"], "unknown family 'quantised'. Did you mean 'quantized'"),
        (["--families", "quantised"], "attention, cross_modal, data_free"),
        (["--labels", "dalf"], "unknown algorithm label 'dalf'. Did you mean 'dafl'"),
        (["--labels", "vit_kd"], "kdtutor zoo train shapes_vit_p8"),
        (["--labels", ","], "at least one name"),
        (["--preset", "mnist5k"], "smoke or book"),
        (["--methods", "kd"], "drop --methods"),
        (["--schemes", "kd"], "drop --schemes"),
    ],
)
def test_bench_algorithms_refuses_bad_input_in_one_line(argv, message, capsys, tmp_path):
    base = ["bench", "--suite", "algorithms", "--preset", "smoke", "--out",
            str(tmp_path / "a.csv")]  # fmt: skip
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_families_and_labels_belong_to_the_algorithms_suite(capsys):
    assert main(["bench", "--suite", "schemes", "--preset", "smoke", "--labels", "kd"]) == 2
    assert "--suite algorithms" in capsys.readouterr().err
