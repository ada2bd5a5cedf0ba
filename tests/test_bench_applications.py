"""Chapter 8's suite (design note applications.md, sections 4.2-4.4 and 5): the protocol and
the catalogue as the design's tables give them, the smoke suite's rows (columns, provenance,
per-image statistics that give the score back, resume by task, label and seed), the gains
against hand-made cases and numpy, the published figures, and the refusals of bad input,
also through ``kdtutor bench --suite applications``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import kdtutor.bench.applications as apps
from kdtutor.bench.applications import (
    APP_PROTOCOL,
    APPLICATION_COLUMNS,
    APPLICATIONS,
    BICUBIC,
    GAIN_COLUMNS,
    PUBLISHED_APPLICATIONS,
    Application,
    application_gains,
    estimated_units,
    get_application,
    load_applications,
    per_image_score,
    run_application,
    run_applications_suite,
    select_applications,
    task_protocol,
    write_application_gains,
)
from kdtutor.cli import main
from kdtutor.data.diskcache import cache_dir, save_npz
from kdtutor.data.task_splits import TASK_SIZES, task_split
from kdtutor.errors import DataNotFoundError, KDTutorError, UnknownNameError
from kdtutor.launch import _method_task
from kdtutor.methods import get_method
from kdtutor.zoo_recipes.applications import RECIPES

torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def _folders(tmp_path_factory):
    """A disk cache, a results folder and an empty zoo of this module's own (no committed
    CSV read by accident; no application teacher trained, whatever the real zoo holds)."""
    folder = tmp_path_factory.mktemp("applications")
    mp = pytest.MonkeyPatch()
    mp.setenv("KDTUTOR_CACHE", str(folder / "cache"))
    mp.setenv("KDTUTOR_RESULTS", str(folder / "results"))
    mp.setenv("KDTUTOR_ZOO", str(folder / "zoo"))
    for name in ("results", "zoo"):
        (folder / name).mkdir()
    yield folder
    mp.undo()


# -- the protocol and the catalogue --------------------------------------------------------------
def test_the_protocol_is_the_design_notes_table():
    table = {  # task: (data, batch, epochs, ratio, U per scratch run), design note 4.2
        "detection": ("scenes", 16, 20, 11.0, 2.42),
        "segmentation": ("scenes", 32, 20, 5.5, 1.21),
        "depth": ("scenes", 32, 20, 4.7, 1.03),
        "pose": ("scenes", 32, 20, 2.2, 0.97),
        "face": ("faces", 64, 20, 0.84, 0.92),
        "superres": ("sr", 32, 25, 4.0, 1.10),
        "video": ("clips", 32, 15, 5.0, 1.65),
        "lanes": ("roads", 32, 20, 10.3, 2.27),
    }
    assert list(APP_PROTOCOL) == list(table)
    for task, (data, batch, epochs, ratio, units) in table.items():
        p = APP_PROTOCOL[task]
        assert (p.dataset, p.batch_size, p.epochs, p.ratio, p.units) == (data, batch, epochs,
                                                                         ratio, units)  # fmt: skip
        assert dict(p.sizes) == TASK_SIZES[data] and p.eval_size == 500
        assert p.teacher in RECIPES and RECIPES[p.teacher].task == p.task_name
    steps = {t: APP_PROTOCOL[t].image_steps for t in table}
    assert steps == {"detection": 80_000, "segmentation": 80_000, "depth": 80_000,
                     "pose": 160_000, "face": 400_000, "superres": 100_000,
                     "video": 120_000, "lanes": 80_000}  # fmt: skip
    # the design's U per scratch run is its image-steps x ratio / 400,000 x 1.10, to 0.02
    for p in APP_PROTOCOL.values():
        assert p.units == pytest.approx(p.image_steps * p.ratio / 400_000 * 1.10, abs=0.02)
    assert APP_PROTOCOL["detection"].train == {"lr": 0.01, "max_grad_norm": 35.0}
    smoke = task_protocol("face", "smoke")
    assert (smoke.epochs, smoke.batch_size, smoke.sizes["test"]) == (1, 8, 400)


def test_the_catalogue_holds_the_labels_of_table_4_3():
    labels = {  # design note 4.3, without the grids
        "detection": ["scratch", "kd_cls", "fpn_hint", "fgd"],
        "segmentation": ["scratch", "pixel", "skd", "cwd"],
        "depth": ["scratch", "depth_kd", "depth_kd_hint"],
        "pose": ["scratch", "fpd"],
        "face": ["scratch", "kd", "emb", "rkd"],
        "superres": ["bicubic", "scratch", "sr_kd", "fakd"],
        "video": ["scratch", "kd", "mars", "kd_mars"],
        "lanes": ["scratch", "sad", "lane_kd", "sad_kd"],
    }
    main_rows = [a for a in APPLICATIONS if not a.grid]
    assert {t: [a.label for a in main_rows if a.task == t] for t in labels} == labels
    grids = [a for a in APPLICATIONS if a.grid]
    assert len(grids) == 13 and all(a.seeds == (0,) for a in grids)
    assert len([a for a in main_rows if a.method != BICUBIC]) * 3 == 84
    for a in APPLICATIONS:
        assert a.student == APP_PROTOCOL[a.task].student
        if a.method == BICUBIC:
            assert a.teacher == "none"
            continue
        method = get_method(a.method)
        assert _method_task(method) == APP_PROTOCOL[a.task].task_name, a
        assert (a.teacher == "none") == (not method.requires_teacher), a
        if a.teacher != "none":
            assert a.teacher == f"zoo:{APP_PROTOCOL[a.task].teacher}"
    # the settings that make the labels what the design says they are
    assert get_application("detection", "kd_cls").hparams == {"hint_weight": 0.0}
    assert get_application("detection", "fpn_hint_x3").hparams == {
        "kd_weight": 0.0,
        "hint_weight": 3.0,
    }
    assert get_application("segmentation", "pixel").hparams == {"pair_weight": 0.0}
    assert get_application("face", "emb_x0.3").hparams == {"kd_weight": 0.0, "emb_weight": 0.3}
    assert get_application("pose", "fpd_alpha0.25").hparams == {"alpha": 0.25}
    # the budget: 134 U of students and 22.2 U of grids (design note 4.3)
    assert estimated_units(main_rows) == pytest.approx(134.0, abs=0.6)
    assert estimated_units(grids) == pytest.approx(22.2, abs=0.3)


def test_selection_and_the_catalogues_refusals():
    chosen = select_applications(["depth", "pose"], ["scratch"])
    assert [(a.task, a.label) for a in chosen] == [("depth", "scratch"), ("pose", "scratch")]
    with pytest.raises(UnknownNameError, match=r"unknown application task 'detecton'\. Did you"):
        select_applications(["detecton"])
    with pytest.raises(UnknownNameError, match="unknown depth label 'fgd'"):
        select_applications(["depth"], ["fgd"])
    with pytest.raises(KDTutorError, match="lists of names"):
        select_applications("depth")
    with pytest.raises(UnknownNameError, match=r"unknown lanes label 'sad_k'\. Did you mean"):
        get_application("lanes", "sad_k")
    with pytest.raises(KDTutorError, match="'none' or 'zoo:<name>'"):
        Application("depth", "x", "depth_kd", teacher="depth_t")
    with pytest.raises(UnknownNameError, match="unknown applications preset 'full'"):
        task_protocol("depth", "full")
    with pytest.raises(KDTutorError, match="'kd' is a classification method, but the task is "
                                           "scored as 'depth'"):  # fmt: skip
        run_application(Application("depth", "x", "kd", teacher="zoo:scenes_depth"), 0, "smoke")


def test_published_figures_carry_their_source_and_status():
    assert list(PUBLISHED_APPLICATIONS) == list(APP_PROTOCOL)
    assert PUBLISHED_APPLICATIONS["depth"] == ()
    statuses = {"verified", "REF", "not verified"}
    for task, entries in PUBLISHED_APPLICATIONS.items():
        for e in entries:
            assert e["task"] == task and e["source"] and e["status"] in statuses and e["scale"]
            if e["alone"] is not None and e["distilled"] is not None:
                assert e["gain"] == pytest.approx(e["distilled"] - e["alone"])
    fcos = next(e for e in PUBLISHED_APPLICATIONS["detection"] if "FCOS" in e["setting"])
    assert (fcos["alone"], fcos["distilled"], fcos["status"]) == (38.5, 42.7, "verified")
    sad = PUBLISHED_APPLICATIONS["lanes"][0]
    assert sad["values"]["culane_f1_enet_sad"] == 72.0


# -- the smoke suite -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(_folders):
    """The smoke suite on three tasks, seed 0: (rows as loaded, the CSV, its text)."""
    out = _folders / "results" / "applications_smoke.csv"
    run_applications_suite("smoke", tasks=["segmentation", "superres", "video"], out=out,
                           log=None, command="test")  # fmt: skip
    return load_applications(out), out, out.read_text()


def test_the_smoke_suite_writes_its_columns_with_provenance(smoke):
    (rows, header), _, text = smoke
    columns = next(line for line in text.splitlines() if not line.startswith("#"))
    assert tuple(columns.split(",")) == APPLICATION_COLUMNS
    assert header["command"] == "test" and header["preset"] == "smoke"
    assert {"commit", "date", "machine"} <= set(header)
    assert [(r["task"], r["label"]) for r in rows] == [
        (a.task, a.label) for a in APPLICATIONS
        if a.task in ("segmentation", "superres", "video")
    ]  # fmt: skip
    for row in rows:
        protocol = APP_PROTOCOL[row["task"]]
        assert row["seed"] == 0 and row["metric"] == protocol.metric
        assert row["pair"] == protocol.pair and row["student"] == protocol.student
        assert row["extra"]["metrics"][row["metric"]] == pytest.approx(row["score"], abs=1e-6)
        assert row["teacher"] == ("none" if row["method"] in ("seg_scratch", "sr_scratch",
                                                              "scratch", BICUBIC)
                                  else f"random:{protocol.smoke_teacher}")  # fmt: skip
        assert len(row["extra"]["curve"]) == (0 if row["method"] == BICUBIC else 1)
        if row["method"] != BICUBIC:
            assert (cache_dir() / row["extra"]["weights"]).is_file()
            assert row["flops_step"] > 0 and row["extra"]["params"] > 0
    seg = next(r for r in rows if r["label"] == "skd")
    assert seg["hparams"]["pixel_weight"] == 10.0 and len(seg["extra"]["per_class_iou"]) == 4


def test_per_image_statistics_give_the_score_back(smoke):
    """The task's metrics (torchmetrics: JaccardIndex, PSNR, accuracy) against the score
    recomputed from the per-image statistics stored for each row."""
    (rows, _), _, _ = smoke
    for row in rows:
        with np.load(cache_dir() / row["extra"]["stats"]) as data:
            stats = {k: data[k] for k in data.files if k != "key"}
        assert per_image_score(row["task"], stats) == pytest.approx(row["score"], abs=1e-5)
        assert len(next(iter(stats.values()))) == row["extra"]["images"] == 16
    bicubic = next(r for r in rows if r["label"] == "bicubic")
    scratch = next(r for r in rows if r["task"] == "superres" and r["label"] == "scratch")
    assert bicubic["score"] > scratch["score"]  # one epoch of an untrained EDSR loses


def test_the_suite_resumes_without_running_a_finished_run_again(smoke, monkeypatch):
    (rows, _), out, text = smoke
    ran = []

    def fake(entry, seed, preset):
        ran.append((entry.task, entry.label, seed))
        row = dict.fromkeys(APPLICATION_COLUMNS, "")
        row.update(task=entry.task, label=entry.label, seed=seed, score=1.0, best_score=1.0,
                   best_epoch=1, seconds=0.0, flops_step=0.0, metric="accuracy")  # fmt: skip
        return row

    monkeypatch.setattr(apps, "run_application", fake)
    again = run_applications_suite("smoke", tasks=["segmentation", "superres", "video"],
                                   out=out, log=None, command="test")  # fmt: skip
    assert ran == [] and len(again) == len(rows)
    assert out.read_text() == text  # nothing to do: not even rewritten
    more = run_applications_suite("smoke", tasks=["video", "superres"], labels=["scratch"],
                                  seeds=[0, 1], out=out, log=None)  # fmt: skip
    assert ran == [("superres", "scratch", 1), ("video", "scratch", 1)]
    assert len(more) == len(rows) + 2
    with pytest.raises(KDTutorError, match="holds results of preset 'smoke', not 'book'"):
        run_applications_suite("book", tasks=["video"], labels=["scratch"], out=out, log=None)


def test_the_book_preset_names_the_zoo_command_of_a_missing_teacher(tmp_path):
    with pytest.raises(KDTutorError, match="`kdtutor zoo train scenes_depth`"):
        run_applications_suite("book", tasks=["depth"], out=tmp_path / "a.csv", log=None)
    with pytest.raises(KDTutorError, match="`kdtutor zoo train roads_lane`"):
        run_application(get_application("lanes", "lane_kd"), 0, "book")
    assert not (tmp_path / "a.csv").exists()  # refused before anything ran or was written


# -- per-image statistics of detection and lanes ---------------------------------------------------
def test_detection_statistics_round_trip_through_cocoeval():
    """Ground-truth boxes as detections on even images, none on odd ones: the stored
    detections give the task's own mAP back, and all of them give 100."""
    test = task_split("scenes", "detection", "test", 6)
    targets = [test[i][1] for i in range(len(test))]
    seen = iter(range(len(test)))

    def network(x):
        out = []
        for _ in range(len(x)):
            i = next(seen)
            t = (
                targets[i]
                if i % 2 == 0
                else {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
            )
            out.append({"boxes": t["boxes"].float(), "labels": t["labels"],
                        "scores": torch.full((len(t["labels"]),), 0.9)})  # fmt: skip
        return out

    metrics, stats = apps._score(network, test, "detection")
    assert 0 < metrics["map"] < 100
    assert per_image_score("detection", stats) == pytest.approx(metrics["map"], abs=1e-9)
    even = np.arange(0, len(test), 2)
    assert apps._detection_map(stats, even, "map") == pytest.approx(100.0)
    assert stats["det_image"].tolist() == [i for i, t in enumerate(targets) if i % 2 == 0
                                           for _ in t["labels"]]  # fmt: skip


def test_lane_statistics_are_the_tasks_counts_per_road():
    """Slot logits peaked at the true points (rounded): the F1 pooled from the per-road TP,
    FP, FN is the task's F1 (well above 0: the counts are not all zero)."""
    from kdtutor.tasks.lanes import default_rows

    test = task_split("roads", "lanes", "test", 6)
    targets = [test[i][1] for i in range(len(test))]
    seen = iter(range(len(test)))
    rows = default_rows(48, targets[0]["points"].shape[-1])

    def network(x):
        idx = [next(seen) for _ in range(len(x))]
        out = torch.zeros(len(idx), 5, 48, 128)
        out[:, 0] = 5.0  # background everywhere but at the true points
        for b, i in enumerate(idx):
            for slot, columns in enumerate(targets[i]["points"]):
                for r, column in zip(rows.tolist(), columns.tolist(), strict=True):
                    if column >= 0:
                        out[b, slot + 1, r, round(column)] = 20.0
        exist = torch.stack([targets[i]["exist"] for i in idx])
        return {"out": out, "exist": 20.0 * exist - 10.0}

    metrics, stats = apps._score(network, test, "lanes")
    assert metrics["f1"] > 50
    assert per_image_score("lanes", stats) == pytest.approx(metrics["f1"], abs=1e-9)
    tp, fp, fn = (int(stats[k].sum()) for k in ("tp", "fp", "fn"))
    assert metrics["precision"] == pytest.approx(100.0 * tp / (tp + fp))
    assert metrics["recall"] == pytest.approx(100.0 * tp / (tp + fn))


# -- gains -----------------------------------------------------------------------------------------
def _rows(task, runs, preset="hand"):
    """Rows and per-image statistics written by hand: ``runs`` maps (label, seed) to the
    statistics' arrays."""
    rows = []
    for (label, seed), stats in runs.items():
        relative = apps._stats_path(preset, task, label, seed)
        save_npz(cache_dir() / relative, apps._stats_key(preset, task, label, seed), **stats)
        rows.append({"task": task, "label": label, "seed": seed, "method": label,
                     "extra": json.dumps({"stats": relative.as_posix()})})  # fmt: skip
    return rows


def test_a_constant_per_image_gain_has_a_degenerate_interval_and_numpys_seed_std():
    rng = np.random.default_rng(0)
    offsets = {0: 0.5, 1: 0.8, 2: 0.1}  # each seed's constant gain over its scratch run, dB
    runs = {}
    for seed, offset in offsets.items():
        base = rng.normal(25.0, 2.0, 50)
        runs["scratch", seed] = {"psnr_y": base}
        runs["fakd", seed] = {"psnr_y": base + offset}
    (gain,) = application_gains(_rows("superres", runs), "superres", n_resamples=200)
    # every resample of the images moves each seed's two scores alike: the mean over seeds
    # of their difference is the mean offset on every resample
    mean = np.mean(list(offsets.values()))
    assert gain["gain"] == pytest.approx(mean, abs=1e-9)
    assert gain["low"] == pytest.approx(mean, abs=1e-9)
    assert gain["high"] == pytest.approx(mean, abs=1e-9)
    assert gain["gain_std"] == pytest.approx(np.std(list(offsets.values()), ddof=1), abs=1e-9)
    assert (gain["seeds"], gain["images"], gain["higher_is_better"]) == (3, 50, True)
    scores = [runs["fakd", s]["psnr_y"].mean() for s in offsets]
    assert gain["score"] == pytest.approx(np.mean(scores))
    assert gain["score_std"] == pytest.approx(np.std(scores, ddof=1))


def test_a_paired_bootstrap_interval_has_the_normal_width():
    """Right/wrong flags on 2,000 clips: the percentile interval of the paired gain is
    about +-1.96 standard errors of the per-clip differences (computed here by numpy)."""
    rng = np.random.default_rng(1)
    base = rng.random(2000) < 0.6
    better = base | (rng.random(2000) < 0.15)
    worse = better & (rng.random(2000) < 0.95)
    runs = {("scratch", 0): {"correct": base}, ("kd", 0): {"correct": worse}}
    (gain,) = application_gains(_rows("video", runs), "video")
    diff = 100.0 * (worse.astype(float) - base.astype(float))
    assert gain["gain"] == pytest.approx(diff.mean())
    half = 1.96 * diff.std(ddof=1) / math.sqrt(diff.size)
    assert gain["low"] < gain["gain"] < gain["high"]
    assert (gain["high"] - gain["low"]) / (2 * half) == pytest.approx(1.0, abs=0.1)
    assert (gain["high"] + gain["low"]) / 2 == pytest.approx(gain["gain"], abs=0.2 * half)


def test_segmentation_gains_pool_intersections_and_unions_by_class():
    inter_s = np.array([[10, 0, 4, 0], [20, 0, 0, 0]])
    union_s = np.array([[20, 0, 8, 0], [30, 5, 0, 0]])  # class 3 absent from both: left out
    inter_k = np.array([[15, 0, 6, 0], [25, 1, 0, 0]])
    union_k = np.array([[20, 0, 8, 0], [30, 5, 0, 0]])
    runs = {("scratch", 0): {"intersection": inter_s, "union": union_s},
            ("cwd", 0): {"intersection": inter_k, "union": union_k}}  # fmt: skip
    (gain,) = application_gains(_rows("segmentation", runs), "segmentation", n_resamples=50)
    scratch = 100 * np.mean([30 / 50, 0 / 5, 4 / 8])
    cwd = 100 * np.mean([40 / 50, 1 / 5, 6 / 8])
    assert gain["baseline_score"] == pytest.approx(scratch)
    assert gain["gain"] == pytest.approx(cwd - scratch)


def test_depth_gains_keep_the_direction_of_absrel():
    runs = {("scratch", 0): {"abs_rel_sum": np.array([2.0, 4.0]), "pixels": np.array([10, 10])},
            ("depth_kd", 0): {"abs_rel_sum": np.array([1.0, 2.0]),
                              "pixels": np.array([10, 10])}}  # fmt: skip
    (gain,) = application_gains(_rows("depth", runs), "depth", n_resamples=20)
    assert gain["gain"] == pytest.approx(0.15 - 0.30) and gain["higher_is_better"] is False


def test_detection_gains_resample_cocoeval():
    """Three scenes: the ground truth as detections against no detections is +100 points of
    mAP on every resample; two identical runs differ by 0."""
    test = task_split("scenes", "detection", "test", 3)
    gts = [test[i][1] for i in range(3)]
    image = np.concatenate([np.full(len(t["labels"]), i) for i, t in enumerate(gts)])
    boxes = np.concatenate([t["boxes"].numpy() for t in gts]).reshape(-1, 4)
    labels = np.concatenate([t["labels"].numpy() for t in gts])
    truth = {"gt_image": image, "gt_boxes": boxes, "gt_labels": labels,
             "images": np.asarray(3)}  # fmt: skip
    perfect = {**truth, "det_image": image, "det_boxes": boxes, "det_labels": labels,
               "det_scores": np.ones(len(labels), np.float32)}  # fmt: skip
    empty = {**truth, "det_image": np.zeros(0, np.int64), "det_boxes": np.zeros((0, 4)),
             "det_labels": np.zeros(0, np.int64), "det_scores": np.zeros(0)}  # fmt: skip
    runs = {("scratch", 0): empty, ("fgd", 0): perfect, ("kd_cls", 0): empty}
    fgd, kd_cls = application_gains(_rows("detection", runs), "detection", n_resamples=4)
    assert (fgd["gain"], fgd["low"], fgd["high"]) == pytest.approx((100.0, 100.0, 100.0))
    assert (kd_cls["gain"], kd_cls["low"], kd_cls["high"]) == pytest.approx((0.0, 0.0, 0.0))


def test_gains_refuse_what_they_cannot_compute(smoke, tmp_path):
    (rows, _), _, _ = smoke
    with pytest.raises(UnknownNameError, match="unknown application task"):
        application_gains(rows, "posture")
    with pytest.raises(KDTutorError, match="no rows of the task 'lanes'"):
        application_gains(rows, "lanes")
    no_scratch = [r for r in rows if r["task"] == "video" and r["label"] != "scratch"]
    with pytest.raises(KDTutorError, match="no 'scratch' rows of the task 'video'"):
        application_gains(no_scratch, "video")
    lost = [dict(r, extra={"stats": "applications/smoke/video/gone-seed0.npz"})
            if r["label"] == "kd" else r for r in rows]  # fmt: skip
    with pytest.raises(DataNotFoundError, match="statistics of video/kd seed 0 are missing"):
        application_gains(lost, "video")
    gains = write_application_gains(rows, tmp_path / "gains.csv", preset="smoke",
                                    command="test", log=None)  # fmt: skip
    text = (tmp_path / "gains.csv").read_text()
    assert tuple(next(x for x in text.splitlines() if not x.startswith("#")).split(",")) == (
        GAIN_COLUMNS
    )
    assert {(g["task"], g["label"]) for g in gains} == {
        (r["task"], r["label"]) for r in rows if r["label"] != "scratch"
    }


# -- the command line ------------------------------------------------------------------------------
def test_bench_applications_writes_its_csv_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "a.csv"
    argv = ["bench", "--suite", "applications", "--preset", "smoke", "--tasks", "pose",
            "--labels", "scratch,fpd", "--seeds", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    rows, header = load_applications(out)
    assert [r["label"] for r in rows] == ["scratch", "fpd"]
    assert header["command"].startswith("kdtutor ")
    line = next(x for x in printed.splitlines() if x.startswith("pose") and " fpd " in x)
    assert f"{rows[1]['score']:.3f}" in line and "pck02" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "detecton"], "unknown application task 'detecton'. Did you mean"),
        (["--tasks", "depth", "--labels", "fgd"], "unknown depth label 'fgd'"),
        (["--tasks", ","], "at least one name"),
        (["--preset", "mnist5k"], "smoke or book"),
        (["--methods", "kd"], "drop --methods"),
        (["--families", "quantized"], "--families chooses runs of --suite algorithms"),
        (["--preset", "book", "--tasks", "video"], "`kdtutor zoo train clips_c3d`"),
    ],
)
def test_bench_applications_refuses_bad_input_in_one_line(argv, message, capsys, tmp_path):
    base = ["bench", "--suite", "applications", "--preset", "smoke", "--out",
            str(tmp_path / "a.csv")]  # fmt: skip
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_tasks_belong_to_the_applications_suite(capsys):
    assert main(["bench", "--suite", "schemes", "--preset", "smoke", "--tasks", "depth"]) == 2
    assert "--suite applications" in capsys.readouterr().err
