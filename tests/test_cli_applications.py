"""``kdtutor distill --task TASK`` on chapter 8's data (design note applications.md, section
2.4): one tiny run per task family, with an untrained teacher saved here as NAME:weights.pt
(or a ``*_scratch`` method), the refusal of a method of another task, ``kdtutor methods
--task`` and ``kdtutor models`` listing the dense networks."""

from __future__ import annotations

import json

import pytest
import torch

import kdtutor.models.dense  # noqa: F401  (registers the networks the teachers are built from)
from kdtutor.cli import main
from kdtutor.data.task_splits import split_stats
from kdtutor.experiment import Experiment
from kdtutor.models import build_model
from kdtutor.tasks import get_task

torch.set_num_threads(1)

STATS = "mean=(0.5,0.5,0.5),std=(0.25,0.25,0.25)"
"""Fixed statistics in the student specs (no split statistics to render in most tests)."""


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """A disk cache of this module's own (the task splits and statistics it renders)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KDTUTOR_CACHE", str(tmp_path_factory.mktemp("cli_applications")))
    yield
    mp.undo()


def saved_teacher(tmp_path, name: str, outputs: int) -> str:
    """An untrained ``name`` saved as a plain state dict: the ``NAME:weights.pt`` spec."""
    torch.manual_seed(7)
    model = build_model(name, num_classes=outputs)
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return f"{name}:{path}"


# dataset, task, student, method, teacher (name, outputs) or None, test size
CASES = [
    ("scenes", "detection", "fcos_s", "det_kd", ("fcos_s", 4), 8),
    ("scenes", "segmentation", "lraspp_s", "cwd", ("lraspp_s", 4), 8),
    ("scenes", "depth", "depth_s", "depth_kd", ("depth_s", 1), 8),
    ("scenes", "keypoints", "pose_s", "fpd", ("pose_s", 4), 8),
    ("faces", "retrieval", "facenet_s", "face_kd", ("facenet_s", 1000), 400),
    ("sr", "superres", "edsr_s", "sr_scratch", None, 8),
    ("clips", "classification", "tsn_s", "kd", ("tsn_s", 10), 8),
    ("roads", "lanes", "lanenet_s", "lane_kd", ("lanenet_s", 5), 8),
]


@pytest.mark.parametrize(("dataset", "task", "student", "method", "teacher", "test_size"), CASES)
def test_distill_trains_a_student_of_every_task(
    dataset, task, student, method, teacher, test_size, tmp_path, capsys
):
    out = tmp_path / "r.json"
    spec = student if dataset == "faces" else f"{student}({STATS})"
    argv = ["distill", "--task", task, "--dataset", dataset, "--student", spec,
            "--method", method, "--epochs", "1", "--train-size", "16", "--test-size",
            str(test_size), "--batch-size", "8", "--out", str(out)]  # fmt: skip
    if teacher is not None:
        argv += ["--teacher", saved_teacher(tmp_path, *teacher)]
    assert main(argv) == 0, capsys.readouterr().err
    payload = json.loads(out.read_text())
    assert payload["experiment"]["task"] == task
    assert payload["runs"][0]["metric"] == get_task(task).primary
    assert len(payload["runs"][0]["history"]) == 1


def test_the_run_folder_records_the_task_and_a_saved_student_reloads(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["distill", "--task", "segmentation", "--dataset", "scenes", "--student",
            f"lraspp_s({STATS})", "--method", "seg_scratch", "--epochs", "1", "--train-size",
            "8", "--test-size", "8", "--batch-size", "8", "--run-dir", str(run),
            "--save-student"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "task: segmentation" in (run / "config.yaml").read_text()
    # the saved student is a teacher of this data (its file says segmentation of scenes)
    argv2 = ["distill", "--task", "segmentation", "--dataset", "scenes", "--student",
             f"lraspp_s({STATS})", "--method", "skd", "--teacher",
             f"lraspp_s({STATS}):{run / 'student-seed0.pt'}", "--epochs", "1", "--train-size", "8",
             "--test-size", "8", "--batch-size", "8"]  # fmt: skip
    assert main(argv2) == 0, capsys.readouterr().err
    # resuming reads the task back from config.yaml
    assert main(["distill", "--run-dir", str(run), "--resume"]) == 0, capsys.readouterr().err


def test_a_dense_student_gets_the_splits_statistics(tmp_path, monkeypatch, capsys):
    import kdtutor.launch as launch

    built = {}
    real = launch._build_network

    def spy(spec, loaded, *, role, stats=True):
        built[role] = real(spec, loaded, role=role, stats=stats)
        return built[role]

    monkeypatch.setattr(launch, "_build_network", spy)
    argv = ["distill", "--task", "depth", "--dataset", "scenes", "--student", "depth_s",
            "--method", "depth_scratch", "--epochs", "1", "--train-size", "8", "--test-size",
            "8", "--batch-size", "8"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    mean, std = split_stats("scenes", "depth")
    normalize = built["student"].normalize
    torch.testing.assert_close(normalize.mean.flatten().double(), torch.tensor(mean).double())
    torch.testing.assert_close(normalize.std.flatten().double(), torch.tensor(std).double())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "detection", "--dataset", "scenes", "--student", "fcos_s", "--method", "kd",
          "--teacher", "fcos_s"],
         "method 'kd' is a classification method, but the experiment's task is 'detection'"),
        (["--task", "detection", "--dataset", "scenes", "--student", "fcos_s", "--method", "kd",
          "--teacher", "fcos_s"], "`kdtutor methods --task detection`"),
        (["--dataset", "scenes", "--student", "fcos_s", "--method", "det_kd", "--teacher",
          "fcos_s"], "method 'det_kd' is a detection method, but the experiment's task is "
                     "'classification'"),
        (["--dataset", "scenes", "--task", "classification", "--student", "fcos_s",
          "--method", "scratch"], "serves the tasks detection, segmentation, depth, keypoints"),
        (["--task", "segmentation", "--dataset", "shapes", "--student", "lraspp_s",
          "--method", "seg_scratch"], "needs one of chapter 8's datasets (scenes)"),
        (["--task", "detectoin", "--dataset", "scenes", "--student", "fcos_s", "--method",
          "det_kd"], "unknown task 'detectoin'. Did you mean 'detection'"),
        (["--task", "lanes", "--dataset", "roads", "--student", "lanenet_s", "--method",
          "lane_kd"], "use --method lane_scratch to train the student alone"),
    ],
)  # fmt: skip
def test_distill_refuses_a_method_of_another_task_in_one_line(argv, message, capsys):
    assert main(["distill", "--epochs", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_experiment_names_a_known_task():
    assert Experiment(dataset="shapes", student="cnn_tiny").task == "classification"
    with pytest.raises(ValueError, match="unknown task 'pose'"):
        Experiment(dataset="scenes", student="pose_s", task="pose")


def test_methods_lists_the_methods_of_one_task(capsys):
    assert main(["methods", "--task", "detection"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "det_kd",
        "det_scratch",
        "fgd",
    ]
    assert main(["methods", "--task", "keypoints"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "fpd",
        "pose_scratch",
    ]
    assert main(["methods", "--task", "classification"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {"kd", "scratch", "mars", "dkd"} <= names and not {"fgd", "sad"} & names
    assert main(["methods", "--task", "keypoint"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_models_lists_the_dense_networks(capsys):
    assert main(["models", "--family", "dense"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == {
        "fcos_t", "fcos_s", "lraspp_t", "lraspp_s", "depth_t", "depth_s", "pose_t", "pose_s",
        "facenet_t", "facenet_s", "edsr_t", "edsr_s", "c3d_t", "tsn_s", "lanenet_t",
        "lanenet_s",
    }  # fmt: skip
    # parameters as the model itself counts them (10 classes, the command's default)
    assert int(lines["tsn_s"][2].replace(",", "")) == sum(
        p.numel() for p in build_model("tsn_s", num_classes=10).parameters()
    )


def test_a_faces_test_split_without_two_images_of_one_identity_is_refused(capsys):
    # the test split deals its 200 identities in turn: 300 images hold each at most twice,
    # 200 at most once, and then recall@k has no positive to find
    argv = ["distill", "--task", "retrieval", "--dataset", "faces", "--student", "facenet_s",
            "--method", "face_scratch", "--epochs", "1", "--train-size", "16", "--test-size",
            "200", "--batch-size", "8"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no two images of one identity" in err and "--test-size of at least 400" in err
