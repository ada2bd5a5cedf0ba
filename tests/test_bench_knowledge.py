"""The knowledge suite: statistics, published numbers, CSV results, resume and the CLI."""

import math

import pytest
from scipy import stats as scipy_stats

from kdtutor.bench import PUBLISHED_CIFAR100, mean_std, published_gains, rank, spearman
from kdtutor.bench.knowledge import (
    KNOWLEDGE_METHODS,
    PRESETS,
    compare_with_published,
    load_results,
    method_hparams,
    run_suite,
    summarize,
)
from kdtutor.bench.significance import decode_correct, mcnemar_exact
from kdtutor.cli import main
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError, UnknownNameError
from kdtutor.methods import get_method, list_methods


def test_every_suite_method_is_registered_with_its_paper():
    assert set(KNOWLEDGE_METHODS) <= set(list_methods())
    for name in KNOWLEDGE_METHODS[1:]:  # all but the scratch baseline
        cls = get_method(name)
        assert cls.paper and "(" in cls.paper, f"{name} needs 'Authors (year). Title'"
        assert cls.__doc__ and len(cls.__doc__) > 40, f"{name} needs a docstring with its formula"


def test_methods_command_lists_every_method_with_its_paper(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in KNOWLEDGE_METHODS:
        line = next(line for line in out.splitlines() if line.split()[0] == name)
        assert get_method(name).paper in line


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]),
        ([3, 1, 2, 2, 5, 0.5], [1, 2, 2, 3, 9, 4]),
        ([0.1, 0.4, -2.0, 3.3], [4.0, -1.0, 2.0, 2.0]),
    ],
)
def test_spearman_matches_scipy_with_ties(x, y):
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)


def test_rank_averages_ties_and_mean_std_by_hand():
    assert rank([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    mean, sd = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert sd == pytest.approx(
        math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert mean_std([3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2], [1])


def test_published_gains_by_hand():
    gains = published_gains()
    # KD over the student alone, four pairs (REFERENCES.md)
    by_hand = ((74.92 - 73.26) + (70.66 - 69.06) + (73.33 - 72.50) + (72.98 - 70.36)) / 4
    assert gains["kd"] == pytest.approx(by_hand)
    # FSP has no vgg number: three pairs only
    fsp = ((72.91 - 73.26) + (69.95 - 69.06) + (72.62 - 72.50)) / 3
    assert gains["fsp"] == pytest.approx(fsp)
    assert PUBLISHED_CIFAR100["resnet32x4->resnet8x4"]["crd"] == 75.51


def test_schedule_hparams_shrink_with_the_schedule():
    assert method_hparams("dkd", 8) == {"warmup_epochs": 1}
    assert method_hparams("ft", 120) == {"init_epochs": 15}
    assert method_hparams("kd", 8) == {}
    assert method_hparams("dkd", 240) == {}


def _rows():
    rows = []
    for pair, base in (("a->b", 80.0), ("c->d", 70.0)):
        for method, gain in (("scratch", 0.0), ("kd", 2.0), ("at", 1.0), ("crd", 3.0)):
            for seed, noise in enumerate((-0.5, 0.0, 0.5)):
                acc = base + gain + noise
                rows.append(
                    {"pair": pair, "method": method, "seed": seed, "best_acc": acc,
                     "last_acc": acc - 1, "seconds": 1.0}
                )  # fmt: skip
    return rows


def test_summarize_and_compare_with_published():
    table = summarize(_rows())
    kd = next(r for r in table if r["pair"] == "a->b" and r["method"] == "kd")
    assert kd["best_mean"] == pytest.approx(82.0) and kd["best_std"] == pytest.approx(0.5)
    assert kd["last_mean"] == pytest.approx(81.0) and kd["seeds"] == 3
    assert [r["method"] for r in table if r["pair"] == "a->b"] == ["scratch", "kd", "at", "crd"]
    comparison = compare_with_published(table)
    assert comparison.methods == ["kd", "at", "crd"]
    assert comparison.ours == pytest.approx([2.0, 1.0, 3.0])
    published = published_gains()
    expected = scipy_stats.spearmanr([2, 1, 3], [published[m] for m in ("kd", "at", "crd")])
    assert comparison.spearman == pytest.approx(expected.statistic)
    with pytest.raises(KDTutorError, match="scratch"):
        compare_with_published([r for r in table if r["method"] != "scratch"])


def test_suite_writes_csv_with_provenance_and_resumes(tmp_path):
    out = tmp_path / "k.csv"
    logs = []
    rows = run_suite(
        "smoke",
        methods=["scratch", "kd", "at", "crd"],
        pairs=["cnn_large->cnn_tiny_s2"],
        out=out,
        log=logs.append,
        command="test",
    )
    assert len(rows) == 4
    loaded, header = load_results(out)
    assert {"command", "commit", "date", "machine", "preset"} <= set(header)
    assert header["preset"] == "smoke" and header["command"] == "test"
    assert [r["method"] for r in loaded] == ["scratch", "kd", "at", "crd"]
    assert all(0 <= r["best_acc"] <= 100 and r["best_acc"] >= r["last_acc"] for r in loaded)
    # each row carries the final student's right/wrong flag per test image, which scores it
    n_test = len(load_dataset("shapes", "test", size=PRESETS["smoke"].test_size))
    for r in loaded:
        flags = decode_correct(r["correct"], n_test)
        assert 100 * flags.mean() == pytest.approx(r["last_acc"], abs=1e-3)
    assert mcnemar_exact(*(decode_correct(r["correct"], n_test) for r in loaded[:2])).p_value <= 1
    # a second call finds every run done and trains nothing
    again = run_suite("smoke", methods=["scratch", "kd"], pairs=["cnn_large->cnn_tiny_s2"],
                      out=out, log=logs.append)  # fmt: skip
    assert len(again) == 4 and logs[-1].startswith("0 runs to do")
    # a longer schedule goes to its own file, and the header says so
    longer = tmp_path / "k3.csv"
    run_suite("smoke", methods=["scratch"], pairs=["cnn_large->cnn_tiny_s2"], epochs=2, out=longer,
              log=None)  # fmt: skip
    rows, header = load_results(longer)
    assert header["epochs"].startswith("2") and rows[0]["best_epoch"] in (1, 2)


def test_suite_refuses_bad_names_and_other_presets_results(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'book'"):
        run_suite("bok", out=tmp_path / "x.csv")
    with pytest.raises(UnknownNameError, match="pair"):
        run_suite("smoke", pairs=["nope"], out=tmp_path / "x.csv")
    with pytest.raises(UnknownNameError, match="method"):
        run_suite("smoke", methods=["kdd"], out=tmp_path / "x.csv")
    with pytest.raises(KDTutorError, match="does not exist"):
        run_suite("smoke", out=tmp_path / "missing" / "x.csv")
    out = tmp_path / "k.csv"
    out.write_text("# preset: book\npair,method,seed,best_acc,best_epoch,last_acc,seconds\n")
    with pytest.raises(KDTutorError, match="preset 'book'"):
        run_suite("smoke", out=out, log=None)
    with pytest.raises(KDTutorError, match="--out"):
        run_suite("smoke", epochs=3)
    with pytest.raises(KDTutorError, match="kdtutor bench"):
        load_results(tmp_path / "none.csv")


def test_bench_cli_smoke(tmp_path, capsys):
    out = tmp_path / "k.csv"
    code = main(["bench", "--suite", "knowledge", "--preset", "smoke", "--methods",
                 "scratch,kd,rkd", "--pairs", "cnn_large->resnet8_half_s2", "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "rkd" in printed and "Spearman" in printed
    assert len(load_results(out)[0]) == 3
    assert main(["bench", "--suite", "knowledge", "--preset", "smoke", "--methods", "zzz"]) == 2


@pytest.mark.parametrize("preset", ["repdistiller", "full"])
def test_repdistiller_preset_explains_missing_data_and_teachers(preset, tmp_path, monkeypatch):
    from kdtutor.bench.knowledge import PRESETS, load_pair_teacher
    from kdtutor.errors import DataNotFoundError

    monkeypatch.delenv("KDTUTOR_DATA", raising=False)
    out = tmp_path / "full.csv"
    with pytest.raises(DataNotFoundError, match="KDTUTOR_DATA"):
        run_suite(preset, methods=["kd"], out=out, log=None)
    assert not out.exists()  # nothing half-written
    monkeypatch.setenv("KDTUTOR_DATA", str(tmp_path))
    pair = PRESETS[preset].pairs[0]
    with pytest.raises(DataNotFoundError, match=r"teachers") as err:
        load_pair_teacher(pair, "cifar100", 100)
    assert f"KDTUTOR_DATA={tmp_path} kdtutor zoo train cifar100_wrn_40_2` on a GPU" in str(
        err.value
    )
