"""The schemes suite at smoke scale: its rows, their costs (checked by arithmetic against the
pieces they add up from) and its resume."""

import itertools
import os

import numpy as np
import pytest

from kdtutor.bench.cost import teacher_cost
from kdtutor.bench.knowledge import PRESETS, preset_data
from kdtutor.bench.schemes import (
    SCHEME_COLUMNS,
    SCHEMES,
    _weights_path,
    load_schemes,
    run_schemes_suite,
)
from kdtutor.bench.significance import decode_correct
from kdtutor.errors import KDTutorError, UnknownNameError
from kdtutor.methods import list_methods
from kdtutor.models import build_model
from kdtutor.train import predict_logits

N_TEST = PRESETS["smoke"].test_size


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schemes")
    mp = pytest.MonkeyPatch()
    mp.setenv("KDTUTOR_CACHE", str(folder / "cache"))
    out = folder / "schemes.csv"
    chosen = ["tfkd_self", "ban", "kd", "dml2", "scratch"]
    rows = run_schemes_suite("smoke", schemes=chosen, out=out, log=None)
    yield out, rows, mp
    mp.undo()


def by_method(rows):
    return {r["method"]: r for r in rows}


def test_every_scheme_names_a_registered_method_and_a_known_teacher():
    for scheme in SCHEMES:
        assert scheme.method in list_methods(), scheme.label
        assert scheme.teacher in ("none", "zoo", "scratch"), scheme.label
    labels = [s.label for s in SCHEMES]
    assert len(labels) == len(set(labels))


def test_rows_name_each_network_with_every_column(suite):
    out, _, _ = suite
    loaded, header = load_schemes(out)
    assert header["preset"] == "smoke"
    methods = {r["method"] for r in loaded}
    expected = {
        "scratch/student", "kd/student", "dml2/peer1", "dml2/peer2", "dml2/ensemble",
        "tfkd_self/student", "ban/gen1", "ban/gen2", "ban/gen3",
        "ban/ens0-1", "ban/ens0-2", "ban/ens0-3",
    }  # fmt: skip
    assert methods == expected
    for row in loaded:
        assert set(SCHEME_COLUMNS) <= set(row), row["method"]


def test_accuracies_are_the_flags_they_were_computed_from(suite):
    out, _, _ = suite
    for row in load_schemes(out)[0]:
        flags = decode_correct(row["correct"], N_TEST)
        assert row["last_acc"] == pytest.approx(100 * flags.mean(), abs=1e-3), row["method"]
        if row["curve"]:
            assert len(row["curve"]) == row["epochs"]
            assert row["curve"][-1] == pytest.approx(row["last_acc"], abs=0.01)


def test_costs_add_up(suite):
    out, _, _ = suite
    rows = by_method(load_schemes(out)[0])
    scratch = rows["scratch/student"]
    assert scratch["prior_flops"] == 0
    # a two-peer DML trains two copies of the student: twice scratch, plus the sequential
    # update's one extra no-grad forward of the first peer (less than one more step)
    dml = rows["dml2/peer1"]
    assert 2 * scratch["train_flops"] < dml["train_flops"] < 3 * scratch["train_flops"]
    assert rows["dml2/ensemble"]["infer_flops"] == pytest.approx(2 * dml["infer_flops"])
    # offline KD is charged its teacher's training
    assert rows["kd/student"]["prior_flops"] == pytest.approx(
        teacher_cost("shapes_cnn_large").flops, rel=1e-5
    )
    # Tf-KD's self mode and Born-Again generation 1 are charged the scratch run; generation
    # g also the generations before it
    assert rows["tfkd_self/student"]["prior_flops"] == pytest.approx(
        scratch["train_flops"], rel=1e-5
    )
    gens = [rows[f"ban/gen{g}"] for g in (1, 2, 3)]
    assert gens[0]["prior_flops"] == pytest.approx(scratch["train_flops"], rel=1e-5)
    for before, after in itertools.pairwise(gens):
        assert after["prior_flops"] == pytest.approx(
            before["prior_flops"] + before["train_flops"], rel=1e-5
        )
    for row in rows.values():
        assert row["total_flops"] == pytest.approx(
            row["prior_flops"] + row["train_flops"], rel=1e-5
        )
    # an ensemble of generations 0..g runs g + 1 students
    for g in (1, 2, 3):
        assert rows[f"ban/ens0-{g}"]["infer_flops"] == pytest.approx(
            (g + 1) * scratch["infer_flops"]
        )
    assert rows["tfkd_self/student"]["prior_seconds"] == pytest.approx(
        scratch["train_seconds"], abs=0.02
    )


def test_generation_zero_is_the_saved_scratch_student(suite):
    """The weights the scratch scheme leaves for Born-Again and Tf-KD give back the scratch
    row's right/wrong flags, image by image."""
    out, _, _ = suite
    rows = by_method(load_schemes(out)[0])
    path = _weights_path("smoke", "scratch", 0)
    assert path.exists()
    student = build_model("cnn_wide_s2", num_classes=10, weights_path=path)
    logits, labels = predict_logits(student, preset_data(PRESETS["smoke"], "test"))
    flags = (logits.argmax(dim=1) == labels).numpy()
    np.testing.assert_array_equal(flags, decode_correct(rows["scratch/student"]["correct"], N_TEST))


def test_the_suite_resumes_without_running_again(suite):
    out, rows, _ = suite
    before = out.read_text()
    again = run_schemes_suite("smoke", schemes=["scratch", "dml2"], out=out, log=None)
    assert out.read_text() == before
    assert len(again) == len(rows)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(UnknownNameError, match="scheme"):
        run_schemes_suite("smoke", schemes=["dml3"], out=tmp_path / "x.csv", log=None)
    with pytest.raises(KDTutorError, match="does not exist"):
        run_schemes_suite("smoke", schemes=["scratch"], out=tmp_path / "no" / "x.csv", log=None)
    assert not (tmp_path / "x.csv").exists()


def test_a_page_at_smoke_scale_runs_its_schemes_in_a_folder_of_its_own(monkeypatch, tmp_path):
    from kdtutor.bench.schemes import page_rows

    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "untouched"))
    rows, header = page_rows("smoke", ["scratch"])
    assert {r["method"] for r in rows} == {"scratch/student"}
    assert header["preset"] == "smoke"
    cache = os.environ["KDTUTOR_CACHE"]
    assert cache != str(tmp_path / "untouched")
    assert _weights_path("smoke", "scratch", 0).is_relative_to(cache)
    assert not (tmp_path / "untouched").exists()
