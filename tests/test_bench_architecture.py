"""Chapter 5's suite on the schemes runner, at smoke scale: the schemes suite's rows unchanged
by the runner's generalisation (checked against runs written out here), the architecture
catalogue's rows, their extra columns against independent computations, chains and their
costs, the validation split and training overrides, the search driver and the published
numbers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from kdtutor.bench.architecture import (
    ADAMW,
    ARCHITECTURE,
    ARCHITECTURE_COLUMNS,
    FAMILY,
    PARTS,
    PUBLISHED_ARCHITECTURE,
    TEACHER,
    VIT_ALONE,
    default_budget,
    deit_schemes,
    page_rows,
    pilot_choice,
    run_architecture_suite,
    run_search,
    searched_schemes,
)
from kdtutor.bench.cost import network_flops, run_cost, teacher_cost
from kdtutor.bench.knowledge import PRESETS, method_hparams, preset_data, run_one
from kdtutor.bench.schemes import (
    EXTRA_COLUMNS,
    SCHEME_COLUMNS,
    SCHEMES,
    Scheme,
    load_schemes,
    run_scheme,
    run_schemes_suite,
)
from kdtutor.bench.significance import decode_correct, encode_correct
from kdtutor.errors import KDTutorError, UnknownNameError
from kdtutor.methods import build_distiller, get_method
from kdtutor.models import build_model, model_summary
from kdtutor.search import SearchSpace
from kdtutor.seeding import seed_everything
from kdtutor.specs import build_from_spec
from kdtutor.train import fit
from kdtutor.zoo import get_recipe, load_teacher

torch.set_num_threads(1)

SMOKE = PRESETS["smoke"]
TIMES = ("seconds", "train_seconds", "prior_seconds", "total_seconds")
CHOSEN = ["scratch", "kd_w32", "eskd_5", "takd_w16", "takd_w16_w8", "vit_pilot_adamw"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("architecture")
    mp = pytest.MonkeyPatch()
    mp.setenv("KDTUTOR_CACHE", str(folder / "cache"))
    out = folder / "architecture.csv"
    rows = run_architecture_suite("smoke", schemes=CHOSEN, out=out, log=None)
    yield out, rows
    mp.undo()


def by_method(rows):
    return {r["method"]: r for r in rows}


def settings(epochs=None, **train):
    return {"epochs": epochs or SMOKE.epochs, "batch_size": SMOKE.batch_size, "lr": SMOKE.lr,
            "schedule": SMOKE.schedule, "milestones": SMOKE.milestones,
            "augment": SMOKE.augment, **SMOKE.train, **train}  # fmt: skip


def flags_of(network, data):
    """Logits of ``network`` (in eval mode) on every image of ``data`` and its right/wrong flags."""
    outs, labels = [], []
    was = getattr(network, "training", None)
    if was is not None:
        network.eval()
    with torch.no_grad():
        for start in range(0, len(data), 512):
            x, y = data.batch(range(start, min(start + 512, len(data))))
            outs.append(network(x).float())
            labels.append(y)
    if was:
        network.train()
    out = torch.cat(outs)
    return out, (out.argmax(1) == torch.cat(labels)).numpy()


def trained(method, student, teacher, *, seed=0, split="test", epochs=None, hparams=None,
            **train):  # fmt: skip
    """One run written out: seed, build, distil, fit (the smoke preset's settings)."""
    data = preset_data(SMOKE, "train")
    seed_everything(seed)
    network = build_from_spec(student, num_classes=10, in_channels=3)
    values = {**method_hparams(method, epochs or SMOKE.epochs, len(data)), **(hparams or {})}
    distiller = build_distiller(method, network, teacher, values, input_shape=(3, 32, 32))
    result = fit(distiller, data, preset_data(SMOKE, split), seed=seed,
                 **settings(epochs, **train))  # fmt: skip
    return distiller, result


# -- the schemes suite is unchanged ---------------------------------------------------------------
def scheme_rows_by_hand(label, seed=0):
    """The schemes suite's rows of one scheme (no Born-Again, no scratch teacher), from a run
    written out here: each network scored on the test split, the costs from ``run_cost``
    and ``teacher_cost``, the row spelled out column by column."""
    scheme = next(s for s in SCHEMES if s.label == label)
    pair = SMOKE.pairs[0]
    teacher = load_teacher(pair.teacher) if scheme.teacher == "zoo" else None
    student = scheme.student or pair.student
    distiller, result = trained(scheme.method, student, teacher, seed=seed,
                                hparams=scheme.hparams)  # fmt: skip
    train, test = preset_data(SMOKE, "train"), preset_data(SMOKE, "test")
    cost = run_cost(distiller, train, result, batch_size=SMOKE.batch_size,
                    teacher_cached=teacher is not None)  # fmt: skip
    prior = teacher_cost(pair.teacher).flops if teacher is not None else 0.0
    rows = []
    networks = dict(distiller.eval_networks())
    distiller.eval()
    for name, network in networks.items():
        _, correct = flags_of(network, test)
        curve = [h["test"][name]["accuracy"] if "test" in h else h["test_acc"]
                 for h in result.history]  # fmt: skip
        peers = scheme.hparams.get("peers", ())
        arch = student
        if name == "peer2" and peers:
            arch = peers[0]
        if name == "ensemble" and peers:
            arch = "+".join((student, *peers))
        best = max(float(f"{v:.2f}") for v in curve)
        rows.append({
            "pair": pair.label, "teacher": pair.teacher if teacher is not None else "",
            "student": arch, "method": f"{label}/{name}", "family": get_method(scheme.method).family,
            "seed": seed, "best_acc": round(best, 4),
            "best_epoch": [float(f"{v:.2f}") for v in curve].index(best) + 1,
            "last_acc": round(100 * float(correct.mean()), 4),
            "hparams": ";".join(f"{k}={v}" for k, v in sorted(scheme.hparams.items())),
            "correct": encode_correct(correct), "scheme": label, "network": name,
            "epochs": SMOKE.epochs, "train_flops": f"{cost.flops:.12g}",
            "prior_flops": f"{prior:.12g}", "total_flops": f"{cost.flops + prior:.12g}",
            "infer_flops": f"{network_flops(network, (3, 32, 32)):.12g}",
            "curve": ";".join(f"{v:.2f}" for v in curve),
        })  # fmt: skip
    return rows


def test_the_schemes_suites_rows_are_those_of_runs_written_out_here(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))
    chosen = ["scratch", "kd", "scratch_r8", "dml2_mixed"]
    out = tmp_path / "schemes.csv"
    rows = run_schemes_suite("smoke", schemes=chosen, out=out, log=None)
    header_line = next(line for line in out.read_text().splitlines() if not line.startswith("#"))
    assert tuple(header_line.split(",")) == SCHEME_COLUMNS  # no extra column in this suite
    expected = [row for label in chosen for row in scheme_rows_by_hand(label)]
    assert [r["method"] for r in rows] == [r["method"] for r in expected]
    for row, want in zip(rows, expected, strict=True):
        assert set(row) == set(SCHEME_COLUMNS)
        assert {k: v for k, v in row.items() if k not in TIMES} == want, row["method"]


def test_schemes_keep_todays_defaults():
    for scheme in SCHEMES:
        assert scheme.chain == () and scheme.train == {} and scheme.split == "test"
        assert scheme.teacher in ("none", "zoo", "scratch")


# -- the catalogue ------------------------------------------------------------------------------
def test_every_entry_names_a_method_a_buildable_student_and_a_known_teacher():
    labels = [s.label for s in ARCHITECTURE]
    assert len(labels) == len(set(labels))
    assert set(itertools.chain.from_iterable(PARTS.values())) == set(labels)
    for scheme in ARCHITECTURE:
        get_method(scheme.method)
        for spec in (scheme.student or "cnn_wide_s2", *scheme.chain):
            build_from_spec(spec, num_classes=10, in_channels=3)
        if scheme.teacher.startswith("zoo:"):
            assert get_recipe(scheme.teacher).dataset == "shapes"
    assert {s.method for s in ARCHITECTURE if s.chain} == {"takd"}
    assert all(s.split == "val" for s in ARCHITECTURE if s.label.startswith("vit_pilot"))


def test_the_gap_part_teaches_both_students_from_every_width_of_the_family():
    """The capacity-gap rows: each student taught by the family's four widths, whose zoo
    recipes are cnn_large's design at other widths with cnn_large's own recipe."""
    gap = [s for s in ARCHITECTURE if s.label in PARTS["gap"] and s.method == "kd"]
    assert {s.label for s in gap} == {
        f"kd_{w}{s}" for w in ("w8", "w16", "w32", "w48") for s in ("", "_tiny")
    }
    assert {s.teacher for s in gap if s.label.startswith("kd_w32")} == {TEACHER}
    for scheme in (s for s in gap if not s.label.startswith("kd_w32")):
        recipe = get_recipe(scheme.teacher)
        width = scheme.teacher.removeprefix("zoo:shapes_cnn_")
        assert recipe.train == get_recipe("shapes_cnn_large").train
        family = build_from_spec(FAMILY[width], num_classes=10, in_channels=3)
        assert family.state_dict().keys() == (
            build_model(recipe.model, **recipe.model_kwargs).state_dict().keys()
        )


def test_the_familys_specs_are_cnn_large_at_other_widths():
    # parameter counts of the design note's probe (model_summary, appendix A)
    expected = {"w8": 74_498, "w16": 295_290, "w32": 1_175_786, "w48": 2_641_498}
    for width, params in expected.items():
        network = build_from_spec(FAMILY[width], num_classes=10, in_channels=3)
        assert model_summary(network, (1, 3, 32, 32), latency_runs=0).params == params
    large = build_model("cnn_large")
    w32 = build_from_spec("convnet(blocks_per_stage=2,stem_stride=2,widths=(32,64,128,256))",
                          num_classes=10, in_channels=3)  # fmt: skip
    assert [t.shape for t in large.state_dict().values()] == [
        t.shape for t in w32.state_dict().values()
    ]


# -- the suite's rows ---------------------------------------------------------------------------
def test_rows_have_every_column_and_are_grouped_by_student(suite):
    out, _ = suite
    rows, header = load_schemes(out)
    assert header["preset"] == "smoke"
    header_line = next(line for line in out.read_text().splitlines() if not line.startswith("#"))
    assert tuple(header_line.split(",")) == ARCHITECTURE_COLUMNS
    assert {r["method"] for r in rows} == {
        "scratch/student", "kd_w32/student", "eskd_5/student", "takd_w16/ta1",
        "takd_w16/student", "takd_w16_w8/ta1", "takd_w16_w8/ta2", "takd_w16_w8/student",
        "vit_pilot_adamw/student",
    }  # fmt: skip
    for row in rows:
        assert row["pair"] == row["student"]
        n = SMOKE.val_size if row["split"] == "val" else SMOKE.test_size
        flags = decode_correct(row["correct"], n)
        assert row["last_acc"] == pytest.approx(100 * flags.mean(), abs=1e-3), row["method"]
        assert row["total_flops"] == pytest.approx(
            row["prior_flops"] + row["train_flops"], rel=1e-9
        )
    rows = by_method(rows)
    assert rows["scratch/student"]["teacher"] == "" and rows["scratch/student"]["agreement"] is None
    assert rows["scratch/student"]["path"] == "cnn_wide_s2"
    assert rows["kd_w32/student"]["path"] == "shapes_cnn_large>cnn_wide_s2"
    assert rows["takd_w16_w8/student"]["path"] == (
        f"shapes_cnn_large>{FAMILY['w16']}>{FAMILY['w8']}>cnn_wide_s2"
    )
    assert rows["takd_w16_w8/ta2"]["student"] == FAMILY["w8"]
    assert rows["takd_w16_w8/ta2"]["teacher"] == FAMILY["w16"]


def test_the_teacher_and_mimicry_columns_against_a_computation_written_out(suite):
    """kd_w32's row: the teacher's accuracy, the agreement and the T = 4 KL on the training
    and test images, from a KD run made here and NumPy."""
    out, _ = suite
    row = by_method(load_schemes(out)[0])["kd_w32/student"]
    teacher = load_teacher("shapes_cnn_large")
    distiller, _ = trained("kd", "cnn_wide_s2", teacher)
    student = distiller.student
    for split, column in (("test", "kl_test"), ("train", "kl_train")):
        data = preset_data(SMOKE, split)
        zs, correct = flags_of(student, data)
        zt, teacher_correct = flags_of(teacher, data)
        zs, zt = zs.double().numpy() / 4, zt.double().numpy() / 4
        ps = np.exp(zs - zs.max(1, keepdims=True))
        ps /= ps.sum(1, keepdims=True)
        pt = np.exp(zt - zt.max(1, keepdims=True))
        pt /= pt.sum(1, keepdims=True)
        kl = 16 * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))
        assert row[column] == pytest.approx(kl, abs=2e-6)
        if split == "test":
            assert row["correct"] == encode_correct(correct)
            assert row["teacher_acc"] == pytest.approx(100 * teacher_correct.mean(), abs=1e-3)
            agree = 100 * np.mean(zs.argmax(1) == zt.argmax(1))
            assert row["agreement"] == pytest.approx(agree, abs=1e-3)
    assert row["teacher_params"] == sum(p.numel() for p in teacher.parameters())
    assert row["teacher_flops"] == pytest.approx(26.40e6, rel=5e-3)  # cnn_large: 26.40 MFLOPs


def test_a_kd_row_is_the_knowledge_suites_run_flag_for_flag(suite):
    out, _ = suite
    row = by_method(load_schemes(out)[0])["kd_w32/student"]
    knowledge = run_one(SMOKE.pairs[0], "kd", 0, SMOKE)
    assert row["correct"] == knowledge["correct"]
    assert row["last_acc"] == knowledge["last_acc"]


def test_chains_share_stages_charge_their_ancestors_and_pair_with_direct_kd(suite):
    out, _ = suite
    rows = by_method(load_schemes(out)[0])
    teacher = teacher_cost("shapes_cnn_large").flops
    kd, ta1, ta2 = rows["kd_w32/student"], rows["takd_w16_w8/ta1"], rows["takd_w16_w8/ta2"]
    assert kd["prior_flops"] == pytest.approx(teacher, rel=1e-9)
    # the w16 assistant of both chains is one stored stage: same flags, cost and curve
    for key in ("correct", "train_flops", "train_seconds", "curve", "prior_flops"):
        assert rows["takd_w16/ta1"][key] == ta1[key], key
    assert ta1["prior_flops"] == pytest.approx(teacher, rel=1e-9)
    assert ta2["prior_flops"] == pytest.approx(teacher + ta1["train_flops"], rel=1e-9)
    student = rows["takd_w16_w8/student"]
    assert student["prior_flops"] == pytest.approx(
        teacher + ta1["train_flops"] + ta2["train_flops"], rel=1e-9
    )
    # each stage's teacher is the stage before it, scored on the same images
    assert student["teacher_acc"] == pytest.approx(ta2["last_acc"], abs=1e-3)
    assert ta2["teacher_acc"] == pytest.approx(ta1["last_acc"], abs=1e-3)
    assert ta1["teacher_acc"] == pytest.approx(kd["teacher_acc"], abs=1e-3)
    assert student["teacher_params"] == 74_498 and ta2["teacher_params"] == 295_290


def test_a_shared_prefix_is_trained_once(tmp_path, monkeypatch):
    import kdtutor.train

    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path))
    calls = []
    real = kdtutor.train.fit

    def counting(distiller, *args, **kwargs):
        calls.append(distiller.student.__class__.__name__)
        return real(distiller, *args, **kwargs)

    monkeypatch.setattr(kdtutor.train, "fit", counting)
    first = run_scheme("takd_w16", 0, "smoke", catalogue=ARCHITECTURE)
    assert len(calls) == 2  # w16, then the student
    second = run_scheme("takd_w16_w8", 0, "smoke", catalogue=ARCHITECTURE)
    assert len(calls) == 4  # w8 and the student: w16 came from the store
    assert first[0]["correct"] == second[0]["correct"]


def test_a_validation_scheme_trains_with_its_overrides_on_the_validation_images(suite):
    out, _ = suite
    row = by_method(load_schemes(out)[0])["vit_pilot_adamw/student"]
    assert row["split"] == "val" and row["epochs"] == 5 and len(row["curve"]) == 5
    distiller, result = trained("scratch", VIT_ALONE, None, split="val", epochs=5,
                                hparams={"label_smoothing": 0.1}, **ADAMW)  # fmt: skip
    _, correct = flags_of(distiller.student, preset_data(SMOKE, "val"))
    assert row["correct"] == encode_correct(correct)
    assert row["curve"] == [float(f"{h['test_acc']:.2f}") for h in result.history]


def test_the_suite_resumes_without_running_again(suite):
    out, rows = suite
    before = out.read_text()
    again = run_architecture_suite("smoke", schemes=["scratch", "takd_w16"], out=out, log=None)
    assert out.read_text() == before and len(again) == len(rows)


def test_a_page_at_smoke_scale_runs_in_a_folder_of_its_own(monkeypatch, tmp_path):
    import os

    from kdtutor.bench.architecture import page_rows

    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "untouched"))
    rows, header = page_rows("smoke", ["scratch_tiny"])
    assert [r["method"] for r in rows] == ["scratch_tiny/student"]
    assert rows[0]["pair"] == "cnn_tiny_s2" and header["preset"] == "smoke"
    assert os.environ["KDTUTOR_CACHE"] != str(tmp_path / "untouched")


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"teacher": "teacher"}, "teacher must be"),
        ({"teacher": "zoo:"}, "teacher must be"),
        ({"teacher": "zoo", "chain": "cnn_small"}, "tuple of model specs"),
        ({"chain": ("cnn_small",)}, "starting from a teacher"),
        ({"teacher": "zoo", "chain": ("cnn_small",), "generations": 2}, "not both"),
        ({"split": "train"}, "split must be"),
        ({"train": {"epochs": 3}}, "Scheme\\(epochs"),
        ({"train": ["sgd"]}, "train must be a dict"),
        ({"label": "a/b"}, "without '/'"),
        ({"epochs": 0}, "positive integer"),
    ],
)
def test_a_bad_scheme_is_refused_when_built(fields, message):
    values = {"label": "x", "method": "kd", **fields}
    with pytest.raises(KDTutorError, match=message):
        Scheme(**values)


def test_a_bad_catalogue_or_run_is_refused_before_training(tmp_path):
    out = tmp_path / "x.csv"
    twice = (Scheme("a", "scratch"), Scheme("a", "kd", teacher="zoo"))
    with pytest.raises(KDTutorError, match="distinct labels"):
        run_schemes_suite("smoke", catalogue=twice, out=out, log=None)
    with pytest.raises(KDTutorError, match="columns"):
        run_schemes_suite("smoke", columns=("pair",), out=out, log=None)
    with pytest.raises(KDTutorError, match="pair_by"):
        run_schemes_suite("smoke", pair_by="teacher", out=out, log=None)
    with pytest.raises(UnknownNameError, match="zoo teacher"):
        run_schemes_suite("smoke", catalogue=(Scheme("a", "kd", teacher="zoo:nope"),),
                          out=out, log=None)  # fmt: skip
    with pytest.raises(UnknownNameError, match="model"):
        run_schemes_suite("smoke", catalogue=(Scheme("a", "scratch", student="cnn_wdie_s2"),),
                          out=out, log=None)  # fmt: skip
    with pytest.raises(KDTutorError, match="needs a teacher"):
        run_schemes_suite("smoke", catalogue=(Scheme("a", "kd"),), out=out, log=None)
    with pytest.raises(KDTutorError, match="trained on 'mnist5k'"):
        run_scheme(Scheme("a", "kd", teacher="zoo:mnist5k_cnn"), 0, "smoke")
    with pytest.raises(KDTutorError, match="preset 'smoke' or 'book'"):
        run_architecture_suite("mnist5k", out=out, log=None)
    with pytest.raises(KDTutorError, match="unknown parts"):
        run_architecture_suite("smoke", parts=["gapp"], out=out, log=None)
    assert not out.exists()


# -- helpers for the DeiT and search parts ------------------------------------------------------
def test_the_pilot_choice_and_deits_rows():
    rows = [{"method": "vit_pilot_sgd/student", "last_acc": 50.0},
            {"method": "vit_pilot_adamw/student", "last_acc": 61.0},
            {"method": "vit_pilot_adamw/student", "last_acc": 38.0}]  # fmt: skip
    assert pilot_choice(rows) == "sgd"  # 49.5 for AdamW on average
    rows[2]["last_acc"] = 41.0
    assert pilot_choice(rows) == "adamw"  # 51.0
    with pytest.raises(KDTutorError, match="run the pilot"):
        pilot_choice(rows[:1])
    alone, hard, soft = deit_schemes("adamw")
    assert alone.student == VIT_ALONE and alone.teacher == "none" and alone.train == ADAMW
    assert hard.method == soft.method == "deit" and hard.teacher == TEACHER
    assert dict(soft.hparams) == {"distillation": "soft", "ce_weight": 0.9, "kd_weight": 0.1,
                                  "T": 3.0}  # fmt: skip
    assert deit_schemes()[1].train == {}
    with pytest.raises(KDTutorError, match="optimizer"):
        deit_schemes("adam")
    kd, alone = searched_schemes("convnet(widths=(8,16,32))", "halving")
    assert (kd.label, kd.teacher, alone.label) == ("kd_halving", TEACHER, "scratch_halving")
    with pytest.raises(KDTutorError, match="registry model"):
        searched_schemes("zoo:shapes_cnn_large", "x")


def test_the_default_budget_is_the_largest_hand_designed_student():
    flops = [model_summary(build_model(p.student), (1, 3, 32, 32), latency_runs=0).flops
             for p in SMOKE.pairs]  # fmt: skip
    assert default_budget("smoke") == max(flops) == default_budget("book")


def test_a_search_scores_on_the_validation_images_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))
    space = SearchSpace(convnet_stages=(2,), widths=(8, 16), blocks=(1,), resnet_depths=())
    memo = tmp_path / "search.csv"
    result = run_search("smoke", pool=3, eta=3, out=memo, space=space)
    assert result.strategy == "halving" and result.trained == 6  # 3 candidates at 2 epochs
    again = run_search("smoke", strategy="random", pool=3, epochs=2, out=memo, space=space)
    assert again.trained == 0 and again.best.spec == result.best.spec
    # the winner's score is a 2-epoch KD run scored on the validation images
    teacher = load_teacher("shapes_cnn_large")
    _distiller, fitted = trained("kd", result.best.spec, teacher, split="val", epochs=2,
                                cache_location="disk")  # fmt: skip
    assert result.best_score == pytest.approx(fitted.last_acc, abs=1e-9)
    with pytest.raises(KDTutorError, match="other strategy"):
        run_search("smoke", strategy="random", min_epochs=2, out=memo, space=space)
    with pytest.raises(KDTutorError, match="untrained"):
        run_search("smoke", teacher="cnn_large", out=memo, space=space)
    with pytest.raises(KDTutorError, match="does not exist"):
        run_search("smoke", out=tmp_path / "no" / "s.csv", space=space)


# -- published numbers --------------------------------------------------------------------------
def test_published_numbers_are_sourced_and_their_gains_add_up():
    assert set(PUBLISHED_ARCHITECTURE) == {"gap", "search", "deit"}  # no TAKD: not verified
    fields = {"part", "dataset", "network", "setting", "top1", "baseline", "gain", "teacher",
              "teacher_top1", "flops", "params", "source"}  # fmt: skip
    for part, entries in PUBLISHED_ARCHITECTURE.items():
        for e in entries:
            assert set(e) == fields and e["part"] == part and e["source"]
            if e["baseline"] is None:
                assert e["gain"] is None
            else:
                assert e["gain"] == pytest.approx(e["top1"] - e["baseline"], abs=1e-9)
    deit = {(e["network"], e["setting"]): e for e in PUBLISHED_ARCHITECTURE["deit"]}
    assert deit["DeiT-Ti", "hard"]["gain"] == pytest.approx(2.1)  # 74.3 - 72.2
    assert deit["DeiT-B", "soft"]["gain"] == 0  # the soft row equals no distillation
    gap = {(e["network"], e["teacher"]): e for e in PUBLISHED_ARCHITECTURE["gap"]}
    # a less accurate teacher (80.0) teaches DeiT-B better than DeiT-B itself (81.8)
    assert gap["DeiT-B", "RegNetY-4GF"]["top1"] > gap["DeiT-B", "DeiT-B"]["top1"]
    assert gap["ResNet-18", "VGG-11"]["gain"] == pytest.approx(-2.03)
    dna = {e["network"]: e for e in PUBLISHED_ARCHITECTURE["search"]}
    assert (dna["DNA-a"]["flops"], dna["DNA-d"]["params"]) == (348e6, 6.4e6)


def test_extra_columns_are_the_architecture_suites():
    assert ARCHITECTURE_COLUMNS == (*SCHEME_COLUMNS, *EXTRA_COLUMNS)


def test_a_page_reads_the_book_csv_and_names_the_commands_for_rows_it_lacks(tmp_path, monkeypatch):
    """At book scale page_rows reads architecture_book.csv from the results folder, keeps the
    rows asked for, and refuses a scheme lacking a seed with the commands that make it."""
    monkeypatch.setenv("KDTUTOR_RESULTS", str(tmp_path))
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "architecture_book.csv"
    seeds = list(PRESETS["book"].seeds)
    run_architecture_suite("smoke", schemes=["scratch"], seeds=seeds, out=out, log=None)
    run_architecture_suite("smoke", schemes=["kd_w32"], seeds=seeds[:1], out=out, log=None)
    rows, header = page_rows("book", ["scratch"])
    assert sorted(int(r["seed"]) for r in rows) == seeds
    assert {r["scheme"] for r in rows} == {"scratch"} and header["preset"] == "smoke"
    with pytest.raises(KDTutorError) as info:
        page_rows("book", ["scratch", "kd_w32", "vit_alone"], extra=deit_schemes("adamw"),
                  before=["kdtutor zoo train shapes_cnn_w48"])  # fmt: skip
    message = str(info.value)
    assert "lacks rows of kd_w32, vit_alone" in message and "scratch," not in message
    assert message.index("kdtutor zoo train") < message.index("kdtutor bench")
    assert "--deit adamw --schemes kd_w32,vit_alone" in message
