"""The grown contract, each capability proved by a minimal example on real data at smoke scale.

The distillers here are written in the test, in a few lines each, the way a method author
would: the trainer is the package's one ``fit``, untouched by any of them. The real methods
(DML, adversarial KD, DAFL, LwF, detection and segmentation KD) live with their chapters.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _resume import interrupted_then_resumed
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdtutor.cache import TeacherOutputs
from kdtutor.config import ConfigError
from kdtutor.data import Batch, load_dataset
from kdtutor.data.scenes import ScenesDataset
from kdtutor.errors import KDTutorError
from kdtutor.losses.response import kd_loss
from kdtutor.methods import Distiller, build_distiller
from kdtutor.models import build_model
from kdtutor.train import (
    OptimizerGroup,
    evaluate,
    fit,
    fit_sequence,
    predict_logits,
)
from kdtutor.zoo import load_teacher


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k", "train").subset(1000), load_dataset("mnist5k", "test").subset(
        500
    )


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=10, in_channels=1, image_size=28, hidden=(64,))


# -- several networks: two online peers ---------------------------------------------------------
class TwoPeers(Distiller):
    """Deep mutual learning in its smallest form (Zhang et al. 2018): each peer learns from the
    labels and from the other's (detached) softened predictions."""

    name = "two_peers_demo"
    requires_teacher = False

    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__(a)
        self.peer = b

    def forward(self, x, y, index=None):
        za, zb = self.student(x), self.peer(x)
        return za, {
            "ce_a": F.cross_entropy(za, y),
            "ce_b": F.cross_entropy(zb, y),
            "kl_a": kd_loss(za, zb.detach(), 1.0),
            "kl_b": kd_loss(zb, za.detach(), 1.0),
        }

    def eval_networks(self):
        def ensemble(x):
            return (self.student(x).softmax(1) + self.peer(x).softmax(1)).log()

        return {"peer_a": self.student, "peer_b": self.peer, "ensemble": ensemble}


def test_two_peers_train_through_fit_and_each_is_evaluated(mnist):
    train, test = mnist
    a0, b0 = mlp(0), mlp(1)
    d = TwoPeers(copy.deepcopy(a0), copy.deepcopy(b0))
    result = fit(d, train, test, epochs=2, batch_size=64)
    scores = result.history[-1]["test"]
    assert set(scores) == {"peer_a", "peer_b", "ensemble"}
    # both peers were trained by the one optimizer over trainable_parameters()
    for trained, start in ((d.student, a0), (d.peer, b0)):
        before = start.state_dict()
        assert all(not torch.equal(v, before[k]) for k, v in trained.state_dict().items())
    # each reported score agrees with an independent count over the peer's own logits
    for name, net in (("peer_a", d.student), ("peer_b", d.peer)):
        logits, labels = predict_logits(net, test)
        expected = 100.0 * int((logits.argmax(1) == labels).sum()) / len(labels)
        assert scores[name]["accuracy"] == pytest.approx(expected, abs=1e-9)
        assert expected > 70.0
    assert result.history[-1]["test_acc"] == scores["peer_a"]["accuracy"]  # the first network


# -- its own optimizer: a discriminator stepped in alternation ----------------------------------
class WithDiscriminator(Distiller):
    """Adversarial KD in its smallest form: a discriminator tells teacher from student logits
    (its own Adam optimizer), then the student is stepped to fool it, beside CE and KD."""

    name = "discriminator_demo"

    def __init__(self, student, teacher):
        super().__init__(student, teacher)
        self.discriminator = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 1))

    def trainable_parameters(self):
        return self.student.parameters()

    def optimizer_groups(self):
        return {
            "student": OptimizerGroup(list(self.student.parameters())),
            "discriminator": OptimizerGroup(
                list(self.discriminator.parameters()), optimizer="adam", lr=1e-3, betas=(0.5, 0.999)
            ),
        }

    def train_step(self, batch, steps):
        logits = self.student(batch.x)
        teacher = self.teacher_outputs(batch.x, batch.rows).logits
        real, fake = self.discriminator(teacher), self.discriminator(logits.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        steps.step("discriminator", {"disc": d_loss})
        fooled = self.discriminator(logits)
        losses = {
            "ce": F.cross_entropy(logits, batch.y),
            "kd": kd_loss(logits, teacher, 4.0),
            "adv": 0.1 * F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled)),
        }
        steps.step("student", losses)
        return logits, {**losses, "disc": d_loss.detach()}


def test_a_discriminator_has_its_own_optimizer_and_resumes_bit_identically(mnist, tmp_path):
    train, test = mnist
    teacher = load_teacher("mnist5k_mlp")

    def make():
        return WithDiscriminator(mlp(0), teacher)

    d = make()
    disc_start = copy.deepcopy(d.discriminator.state_dict())
    kw = {"epochs": 3, "batch_size": 100}
    full = fit(d, train, test, checkpoint=tmp_path / "full.pt", **kw)
    assert {"ce", "kd", "adv", "disc"} <= set(full.history[-1]["losses"])
    assert not torch.equal(d.discriminator[0].weight, disc_start["0.weight"])
    saved = torch.load(tmp_path / "full.pt", weights_only=True)
    assert set(saved["optimizers"]) == {"student", "discriminator"}
    assert "exp_avg" in next(iter(saved["optimizers"]["discriminator"]["state"].values()))
    assert full.best_acc > 70.0
    # interrupted once epoch 1's checkpoint is written
    runs = interrupted_then_resumed(
        make, train, test, tmp_path, after=1, full=(d, full), same=("test_acc",), **kw
    )
    assert torch.equal(d.discriminator[2].weight, runs.resumed.discriminator[2].weight)


def test_stepping_an_undeclared_group_is_a_clear_error(mnist):
    class Wrong(TwoPeers):
        def train_step(self, batch, steps):
            outputs, losses = steps.forward(batch)
            steps.step("generator", losses)
            return outputs, losses

    with pytest.raises(KDTutorError, match=r"'generator'.*declares \['student'\]"):
        fit(Wrong(mlp(0), mlp(1)), mnist[0].subset(64), None, epochs=1)


# -- no data: a generator feeds the student ----------------------------------------------------
class Generator(nn.Module):
    def __init__(self, z: int = 64):
        super().__init__()
        self.z = z
        self.fc = nn.Linear(z, 64 * 7 * 7)
        self.net = nn.Sequential(
            nn.BatchNorm2d(64),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(64, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(32, 1, 3, padding=1),
            nn.BatchNorm2d(1, affine=False),
        )

    def forward(self, z):
        return self.net(self.fc(z).view(-1, 64, 7, 7))


class GeneratorFed(Distiller):
    """Data-free KD in the style of DAFL (Chen et al. 2019): a generator is stepped to make
    inputs the teacher classifies confidently (one-hot loss) and evenly (information
    entropy), then the student is stepped to match the teacher on them."""

    name = "generator_fed_demo"

    def __init__(self, student, teacher):
        super().__init__(student, teacher)
        self.generator = Generator()

    def optimizer_groups(self):
        return {
            "student": OptimizerGroup(list(self.student.parameters())),
            "generator": OptimizerGroup(
                list(self.generator.parameters()),
                optimizer="adam",
                lr=1e-2,
                weight_decay=0.0,
                schedule="constant",
            ),
        }

    def synthesize_batch(self, batch_size):
        return Batch(torch.randn(batch_size, self.generator.z), None, None)

    def train_step(self, batch, steps):
        images = self.generator(batch.x)
        t = self.teacher(images)
        p = t.softmax(1).mean(0)
        g = {"onehot": F.cross_entropy(t, t.argmax(1)), "info": 5.0 * (p * p.log()).sum()}
        steps.step("generator", g)
        x = images.detach()
        losses = {"kd": kd_loss(self.student(x), self.compute_teacher_outputs(x).logits, 4.0)}
        steps.step("student", losses)
        return None, {**{k: v.detach() for k, v in g.items()}, **losses}


def test_a_generator_fed_data_free_run_ends_above_chance(mnist):
    _, test = mnist
    torch.manual_seed(0)
    student = build_model("cnn_small", num_classes=10, in_channels=1)
    d = GeneratorFed(student, load_teacher("mnist5k_cnn"))
    result = fit(
        d, None, test, epochs=4, steps_per_epoch=50, batch_size=64,
        optimizer="adam", lr=2e-3, weight_decay=0.0,
    )  # fmt: skip
    assert "train_acc" not in result.history[-1]  # no labels, no train score
    assert {"onehot", "info", "kd"} == set(result.history[-1]["losses"])
    assert d.teacher_cache is None  # nothing to cache: new inputs every step
    assert result.best_acc > 20.0  # chance is 10% on ten balanced classes


def test_data_free_needs_steps_and_data_methods_need_data(mnist):
    student = build_model("cnn_micro", num_classes=10, in_channels=1)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        fit(GeneratorFed(student, load_teacher("mnist5k_cnn")), None, mnist[1], epochs=1)
    with pytest.raises(KDTutorError, match="trains on data"):
        fit(mlp(0), None, mnist[1], epochs=1, steps_per_epoch=2)
    with pytest.raises(ConfigError, match="data-free"):
        fit(mlp(0), mnist[0], None, epochs=1, steps_per_epoch=2)


# -- tasks beyond classification ----------------------------------------------------------------
def tiny_detector() -> nn.Module:
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    backbone = nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU()
    )
    backbone.out_channels = 32
    return FCOS(
        backbone,
        num_classes=ScenesDataset.num_classes,
        min_size=64,
        max_size=64,
        anchor_generator=AnchorGenerator(sizes=((16,),), aspect_ratios=((1.0,),)),
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
    )


class DetectorAlone(Distiller):
    """A torchvision detector trained on its own losses (training mode returns them)."""

    name = "detector_alone_demo"
    requires_teacher = False

    def forward(self, x, y, index=None):
        return None, self.student(list(x), y)


def test_a_detection_run_goes_through_fit_with_torchmetrics_map():
    torch.manual_seed(0)
    train, test = ScenesDataset(48, seed=0), ScenesDataset(16, seed=1)
    d = DetectorAlone(tiny_detector())
    result = fit(d, train, test, epochs=2, batch_size=16, lr=0.01)
    with pytest.raises(KDTutorError, match="lists of boxes"):  # a detector teacher: no cache
        fit(DetectorAlone(tiny_detector(), tiny_detector()), train, None, epochs=1, cache=True)
    record = result.history[-1]
    assert {"classification", "bbox_regression", "bbox_ctrness"} == set(record["losses"])
    assert result.metric == "map_50" and "test_map50" in record
    scores = record["test"]["student"]
    assert set(scores) == {"map_50", "map"} and 0.0 <= scores["map"] <= scores["map_50"] <= 100.0
    # the same number from torchmetrics called directly on the detector's predictions
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(backend="pycocotools")
    d.eval()
    with torch.no_grad():
        for i in range(len(test)):
            x, target = test[i]
            metric.update(d.student([x]), [target])
    assert 100.0 * float(metric.compute()["map_50"]) == pytest.approx(scores["map_50"], abs=1e-6)


class DetectorHeadKD(DetectorAlone):
    """A detection distiller that caches tensors (the teacher's pooled backbone features in
    place of its lists of boxes), as a detection KD method caches its head outputs."""

    name = "detector_head_demo"
    requires_teacher = True
    tensor_teacher_outputs = True

    def compute_teacher_outputs(self, x):
        self.teacher_forward_calls += 1
        with torch.no_grad():
            pooled = self.teacher.backbone(x).mean(dim=(2, 3))
        return TeacherOutputs(pooled)

    def forward(self, x, y, index=None):
        pooled = self.teacher_outputs(x, index).logits
        student = self.student.backbone(x).mean(dim=(2, 3))
        losses = self.student(list(x), y)
        losses["hint"] = F.mse_loss(student, pooled)
        return None, losses


def test_a_distiller_of_tensor_teacher_outputs_is_cached_on_detection():
    torch.manual_seed(0)
    train = ScenesDataset(32, seed=0)
    d = DetectorHeadKD(tiny_detector(), tiny_detector())
    fit(d, train, None, epochs=2, batch_size=16, lr=0.01, cache=True)
    cached_calls = d.teacher_forward_calls
    d = DetectorHeadKD(tiny_detector(), tiny_detector())
    fit(d, train, None, epochs=2, batch_size=16, lr=0.01, cache=False)
    assert d.teacher_forward_calls == 2 * len(train) // 16  # every step of both epochs
    # cached: one pass over the training set fills the cache, no step runs the teacher
    assert 1 <= cached_calls <= len(train) // 16


class PixelNet(nn.Module):
    def __init__(self, classes: int = ScenesDataset.num_classes):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        return self.head(self.body(x))


def test_a_segmentation_run_goes_through_fit_with_jaccard_index():
    torch.manual_seed(0)
    train = ScenesDataset(64, seed=0, task="segmentation")
    test = ScenesDataset(16, seed=1, task="segmentation")
    net = PixelNet()
    result = fit(net, train, test, epochs=2, batch_size=16, lr=0.05)  # scratch: pixel-wise CE
    record = result.history[-1]
    assert result.metric == "miou" and set(record["test"]["student"]) == {"miou", "pixel_accuracy"}
    assert 0.0 < record["test_miou"] <= 100.0 and "train_miou" in record
    # mIoU written out: per class |pred & true| / |pred | true|, averaged over present classes
    images = torch.stack([test[i][0] for i in range(len(test))])
    masks = torch.stack([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        pred = net.eval()(images).argmax(1)
    ious = []
    for c in range(ScenesDataset.num_classes):
        union = ((pred == c) | (masks == c)).sum().item()
        if union:
            ious.append(((pred == c) & (masks == c)).sum().item() / union)
    assert record["test_miou"] == pytest.approx(100.0 * sum(ious) / len(ious), abs=1e-4)
    pixels = 100.0 * (pred == masks).float().mean().item()
    assert record["test"]["student"]["pixel_accuracy"] == pytest.approx(pixels, abs=1e-4)


# -- sequences of tasks -------------------------------------------------------------------------
def test_a_two_step_class_incremental_run_reports_every_task_seen(mnist):
    train, test = mnist
    groups = ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    tasks = [(train.select_classes(g), test.select_classes(g)) for g in groups]
    assert set(tasks[1][0].targets.tolist()) == set(groups[1])

    def make(i, previous):
        if previous is None:
            return mlp(0)
        # LwF-style (Li & Hoiem 2017): CE on the new labels + KD from the frozen last model
        return build_distiller(
            "kd", copy.deepcopy(previous), previous, T=2.0, ce_weight=1.0, kd_weight=0.3
        )

    seen = fit_sequence(make, tasks, epochs=2, batch_size=64)
    assert len(seen.accuracy) == 2 and seen.accuracy[0][1] is None
    assert seen.accuracy[0][0] > 80.0  # five classes learnt in the first step (chance: 20%)
    assert seen.accuracy[1][1] > 50.0  # the second step learnt its classes
    final = seen.results[1]
    assert seen.accuracy[1][1] == pytest.approx(final.last_acc)  # fit's own test score
    assert seen.forgetting == [seen.accuracy[0][0] - seen.accuracy[1][0]]
    assert seen.average[1] == pytest.approx((seen.accuracy[1][0] + seen.accuracy[1][1]) / 2)


# -- any dataset ---------------------------------------------------------------------------------
def test_a_torch_dataset_trains_exactly_like_the_array_dataset(mnist):
    train, test = mnist
    images, labels = train.batch(torch.arange(len(train)))
    as_torch = TensorDataset(images, labels)
    runs = [fit(mlp(0), data, test, epochs=2, batch_size=64) for data in (train, as_torch)]
    assert runs[0].history[-1]["test_acc"] == runs[1].history[-1]["test_acc"]
    assert runs[0].history[-1]["loss"] == pytest.approx(runs[1].history[-1]["loss"], abs=1e-6)


def test_the_teacher_cache_works_for_a_torch_dataset(mnist):
    from kdtutor.cache import clear_memory_cache

    train, test = mnist
    images, labels = train.batch(torch.arange(len(train)))
    teacher = load_teacher("mnist5k_mlp")
    runs = []
    for data in (train, TensorDataset(images, labels)):
        clear_memory_cache()
        d = build_distiller("kd", mlp(0), teacher)
        runs.append(fit(d, data, test, epochs=2, batch_size=64, cache=True))
        assert d.teacher_forward_calls == 2  # 1,000 samples in teacher batches of 512, once
    assert runs[0].history[-1]["loss"] == pytest.approx(runs[1].history[-1]["loss"], abs=1e-6)
    assert runs[0].history[-1]["test_acc"] == runs[1].history[-1]["test_acc"]


def test_a_dataloader_trains_and_the_cache_says_why_it_is_off(mnist, caplog):
    train, test = mnist
    images, labels = train.batch(torch.arange(len(train)))
    loader = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True)
    d = build_distiller("kd", mlp(0), load_teacher("mnist5k_mlp"))
    with caplog.at_level("INFO", logger="kdtutor.train"):
        result = fit(d, loader, test, epochs=1)
    assert "cache off" in caplog.text and "DataLoader" in caplog.text
    assert d.teacher_forward_calls == len(loader)  # the teacher ran on every batch
    assert result.best_acc > 50.0
    with pytest.raises(KDTutorError, match=r"cache refused.*DataLoader"):
        fit(d, loader, test, epochs=1, cache=True)
    assert evaluate(d, test) == pytest.approx(evaluate(d.student, test))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (None, "trains on data"),
        ("mnist5k", "load_dataset\\('mnist5k', 'train'\\)"),
        (3, "must be a kdtutor ArrayDataset.*got int"),
        ([1, 2], "must be an \\(input, target\\) pair.*sample 0 is int"),
    ],
)
def test_fit_given_no_dataset_is_a_clear_error(bad, match):
    with pytest.raises(KDTutorError, match=match):
        fit(mlp(0), bad, None, epochs=1)


def test_fit_given_no_model_is_a_clear_error():
    with pytest.raises(KDTutorError, match=r"Distiller or an nn\.Module"):
        fit("kd", load_dataset("digits", "train"), None, epochs=1)
