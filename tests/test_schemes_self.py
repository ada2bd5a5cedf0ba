"""Self-distillation schemes CS-KD and Born-Again Networks: CS-KD's partner table and loss
against NumPy, no gradient through the partners, a bit-identical resume; BAN generations
(the teacher untouched, the ensemble against NumPy, other architectures refused)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from _resume import interrupted_then_resumed
from torch import nn
from torch.utils.data import DataLoader

from kdtutor.cli import main
from kdtutor.data import ArrayDataset
from kdtutor.errors import KDTutorError, ShapeMismatchError
from kdtutor.losses.schemes import ensemble_log_probs
from kdtutor.methods import build_distiller, get_method
from kdtutor.methods.cskd import class_partners
from kdtutor.models import build_model
from kdtutor.seeding import seed_everything
from kdtutor.train import fit
from kdtutor.train.evaluation import predict_logits

torch.set_num_threads(1)


# -- helpers -----------------------------------------------------------------------------------
def toy_data(targets):
    """An ArrayDataset of 1x2x2 images whose pixels all equal the image's index (mean 0, std 1,
    so the network reads index / 255)."""
    n = len(targets)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    classes = [str(c) for c in range(max(targets) + 1)]
    return ArrayDataset(images, torch.tensor(targets), classes, "toy", mean=(0.0,), std=(1.0,))


class Table(nn.Module):
    """A 'network' whose logits for image i are row i of a table: fixed logits to test with."""

    def __init__(self, logits):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(logits, dtype=torch.float64).clone())

    def forward(self, x):
        return self.table[torch.round(x[:, 0, 0, 0] * 255).long()]


def np_softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


TOY_TARGETS = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 0, 1, 2, 0]  # class 3: one image


# -- CS-KD: the partner table ----------------------------------------------------------------
def test_partners_share_the_label_and_are_other_images(tiny_data):
    targets = tiny_data.train.targets
    for seed, epoch in [(0, 0), (0, 1), (5, 3)]:
        partners = class_partners(targets, seed, epoch)
        assert partners.dtype == torch.int64 and partners.shape == targets.shape
        assert torch.equal(targets[partners], targets)
        assert not bool((partners == torch.arange(len(targets))).any())


def test_partners_are_deterministic_per_seed_and_epoch_and_change_otherwise(tiny_data):
    targets = tiny_data.train.targets
    first = class_partners(targets, 3, 2)
    assert torch.equal(first, class_partners(targets, 3, 2))
    assert not torch.equal(first, class_partners(targets, 3, 1))  # another epoch
    assert not torch.equal(first, class_partners(targets, 4, 2))  # another seed


def test_small_classes_two_images_pair_each_other_one_image_pairs_itself():
    targets = torch.tensor([5, 1, 5, 0, 1, 1, 1])  # class 5: {0, 2}; class 0: {3}
    for epoch in range(4):
        partners = class_partners(targets, 0, epoch)
        assert (partners[0].item(), partners[2].item(), partners[3].item()) == (2, 0, 3)
        assert partners[[1, 4, 5, 6]].tolist() != [1, 4, 5, 6]
        assert torch.equal(targets[partners], targets)


def test_partners_are_uniform_over_the_other_images_or_the_whole_class_with_include_self():
    targets = torch.tensor([0, 0, 0, 1])
    draws = torch.stack([class_partners(targets, 7, e) for e in range(600)])
    counts = torch.bincount(draws[:, 0], minlength=3).tolist()
    assert counts[0] == 0 and 240 < counts[1] < 360 and 240 < counts[2] < 360  # p = 1/2 each
    draws = torch.stack([class_partners(targets, 7, e, include_self=True) for e in range(600)])
    counts = torch.bincount(draws[:, 0], minlength=3).tolist()
    assert all(150 < c < 250 for c in counts)  # p = 1/3 each, the image itself included
    assert torch.equal(targets[draws[0]], targets)


def test_the_distiller_draws_its_epoch_table_from_the_run_seed(tiny_data):
    torch.manual_seed(0)
    d = build_distiller("cskd", build_model("cnn_tiny"))
    fit(d, tiny_data.train, epochs=2, batch_size=100, seed=3)
    assert torch.equal(d.partners, class_partners(tiny_data.train.targets, 3, 1))
    d.bind_data(tiny_data.train, seed=9)
    assert torch.equal(d.partners, class_partners(tiny_data.train.targets, 9, 0))
    d.on_epoch_start(4, 5)
    assert torch.equal(d.partners, class_partners(tiny_data.train.targets, 9, 4))


# -- CS-KD: the loss ----------------------------------------------------------------------------
def numpy_cskd(table, targets, anchors, partners, T, kd_weight, ce_weight):
    z, zp, y = table[anchors], table[partners[anchors]], targets[anchors]
    log_p = np.log(np_softmax(z))
    ce = -log_p[np.arange(len(anchors)), y].mean()
    q, log_q = np_softmax(zp / T), np.log(np_softmax(zp / T))
    kl = (q * (log_q - np.log(np_softmax(z / T)))).sum(axis=1).mean()
    return ce_weight * ce, kd_weight * T * T * kl


@pytest.mark.parametrize(("T", "kd_weight", "ce_weight"), [(4.0, 1.0, 1.0), (2.0, 3.0, 0.5)])
def test_cskd_loss_on_fixed_logits_matches_numpy(T, kd_weight, ce_weight):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(TOY_TARGETS), 5)) * 2
    data = toy_data(TOY_TARGETS)
    d = build_distiller("cskd", Table(table), T=T, kd_weight=kd_weight, ce_weight=ce_weight)
    d.bind_data(data, seed=1)
    d.on_epoch_start(2, 3)
    anchors = torch.tensor([0, 3, 5, 9, 11, 13])
    x, y = data.batch(anchors)
    logits, losses = d(x, y, anchors)
    assert list(losses) == ["ce", "kd"]
    np.testing.assert_array_equal(logits.detach().numpy(), table[anchors.numpy()])  # anchors only
    ce, kd = numpy_cskd(
        table, np.array(TOY_TARGETS), anchors.numpy(), d.partners.numpy(), T, kd_weight, ce_weight
    )
    assert losses["ce"].item() == pytest.approx(ce, rel=1e-12)
    assert losses["kd"].item() == pytest.approx(kd, rel=1e-12)
    assert losses["kd"].item() > 0


def test_cskd_reads_cache_rows_modulo_the_dataset_size():
    table = np.random.default_rng(1).normal(size=(len(TOY_TARGETS), 5))
    data = toy_data(TOY_TARGETS)
    d = build_distiller("cskd", Table(table))
    d.bind_data(data, seed=0)
    anchors = torch.tensor([1, 4, 6])
    x, y = data.batch(anchors)
    _, plain = d(x, y, anchors)
    _, viewed = d(x, y, anchors + 2 * len(data))  # fixed view 2: rows = 2 * N + index
    assert plain["kd"].item() == viewed["kd"].item()


def test_pair_logits_get_no_gradient():
    """The gradient is the anchors' own: (softmax(z) - onehot(y)) ce_w / B + kd_w T
    (softmax(z/T) - q) / B on each anchor's row, exactly zero on rows used only as partners."""
    rng = np.random.default_rng(2)
    table = rng.normal(size=(len(TOY_TARGETS), 4))
    data = toy_data(TOY_TARGETS)
    T, kd_weight, ce_weight = 3.0, 2.0, 0.7
    student = Table(table)
    d = build_distiller("cskd", student, T=T, kd_weight=kd_weight, ce_weight=ce_weight)
    d.bind_data(data, seed=4)
    anchors = torch.tensor([0, 3, 5, 6])
    partners = d.partners[anchors]
    assert set(partners.tolist()) - set(anchors.tolist()), "some partner is not an anchor"
    x, y = data.batch(anchors)
    _, losses = d(x, y, anchors)
    sum(losses.values()).backward()
    expected = np.zeros_like(table)
    z, zp = table[anchors.numpy()], table[partners.numpy()]
    onehot = np.eye(4)[y.numpy()]
    grad = ce_weight * (np_softmax(z) - onehot) + kd_weight * T * (
        np_softmax(z / T) - np_softmax(zp / T)
    )
    expected[anchors.numpy()] = grad / len(anchors)
    np.testing.assert_allclose(student.table.grad.numpy(), expected, rtol=1e-10, atol=1e-15)
    only_partners = sorted(set(partners.tolist()) - set(anchors.tolist()))
    assert not student.table.grad[only_partners].any()


def test_cskd_without_kd_weight_is_plain_cross_entropy_and_needs_no_pairs():
    table = np.random.default_rng(3).normal(size=(len(TOY_TARGETS), 4))
    data = toy_data(TOY_TARGETS)
    d = build_distiller("cskd", Table(table), kd_weight=0.0)
    x, y = data.batch([0, 1, 2])
    _, losses = d(x, y)  # no data bound, no index: nothing to pair
    assert list(losses) == ["ce"]


def test_cskd_errors_name_the_problem_and_the_fix(tiny_data):
    d = build_distiller("cskd", build_model("cnn_tiny"))
    x, y = tiny_data.train.batch([0, 1])
    with pytest.raises(KDTutorError, match="bind_data"):
        d(x, y, torch.tensor([0, 1]))
    with pytest.raises(KDTutorError, match="needs an ArrayDataset"):
        d.bind_data(torch.utils.data.TensorDataset(x, y))
    with pytest.raises(KDTutorError, match="needs an ArrayDataset"):
        fit(d, DataLoader(tiny_data.train, batch_size=50), epochs=1)
    d.bind_data(tiny_data.train)
    with pytest.raises(KDTutorError, match="no index"):
        d(x, y)
    with pytest.raises(KDTutorError, match="pair_augment"):
        build_distiller("cskd", build_model("cnn_tiny"), pair_augment="crop_flipp")
    with pytest.warns(UserWarning, match="needs no teacher"):
        ignored = build_distiller("cskd", build_model("cnn_tiny"), build_model("cnn_tiny"))
    assert ignored.teacher is None


# -- CS-KD: training and resume -----------------------------------------------------------------
@pytest.mark.parametrize("pair_augment", [None, "crop_flip"])
def test_cskd_resumes_bit_identically(tiny_data, tmp_path, pair_augment):
    cfg = {"epochs": 2, "batch_size": 50, "lr": 0.05, "seed": 2}
    if pair_augment:
        cfg["augment"] = pair_augment

    def make():
        seed_everything(11)
        return build_distiller("cskd", build_model("cnn_tiny"), pair_augment=pair_augment)

    runs = interrupted_then_resumed(
        make, *tiny_data, tmp_path, after=1, same=("losses",), config=cfg
    )
    history = runs.full_result.history
    assert set(history[-1]["losses"]) == {"ce", "kd"} and history[-1]["losses"]["kd"] > 0


def test_cskd_trains_through_the_command_line(tmp_path):
    out = tmp_path / "results.json"
    code = main(["distill", "--dataset", "shapes", "--student", "cnn_tiny", "--method", "cskd",
                 "--teacher", "none", "--epochs", "1", "--train-size", "128", "--test-size", "64",
                 "--batch-size", "32", "--scale", "smoke", "--set", "kd_weight=2", "--out",
                 str(out), "-q"])  # fmt: skip
    assert code == 0
    data = json.loads(out.read_text())
    assert data["method"] == "cskd" and data["hparams"] == {"kd_weight": 2}
    assert set(data["runs"][0]["history"][0]["losses"]) == {"ce", "kd"}


def test_a_cskd_step_costs_a_scratch_step_plus_one_forward_of_the_partners(tiny_data):
    from kdtutor.bench.cost import step_flops
    from kdtutor.data import BatchLoader
    from kdtutor.models import model_summary

    batch = next(iter(BatchLoader(tiny_data.train, 32)))
    torch.manual_seed(0)
    student = build_model("cnn_wide_s2")
    cskd = build_distiller("cskd", student)
    cskd.bind_data(tiny_data.train)
    extra = step_flops(cskd, batch) - step_flops(build_distiller("scratch", student), batch)
    assert extra == 32 * model_summary(student, latency_runs=0).flops_per_sample


def test_cskd_and_ban_are_self_distillation_with_a_tunable_kd_weight():
    for name in ("cskd", "ban"):
        cls = get_method(name)
        assert cls.family == "self" and cls.loss_weights == ("kd_weight",)
    assert not get_method("cskd").requires_teacher and get_method("ban").requires_teacher
    hp = get_method("cskd").hparams_cls()
    assert (hp.T, hp.kd_weight, hp.ce_weight) == (4.0, 1.0, 1.0)
    hp = get_method("ban").hparams_cls()
    assert (hp.T, hp.kd_weight, hp.ce_weight) == (4.0, 0.9, 0.1)


# -- Born-Again Networks ------------------------------------------------------------------------
def _generation(g, teacher, data, epochs=1):
    seed_everything(1000 * g)
    student = build_model("cnn_tiny")
    method = "scratch" if teacher is None else "ban"
    fit(build_distiller(method, student, teacher), data.train, epochs=epochs, batch_size=50,
        lr=0.05, seed=0)  # fmt: skip
    return student


def test_ban_generation_trains_while_the_previous_stays_bit_identical(tiny_data):
    gen0 = _generation(0, None, tiny_data)
    gen0.zero_grad(set_to_none=True)  # its own training left the last step's gradients
    before = copy.deepcopy(gen0.state_dict())
    seed_everything(1000)
    gen1 = build_model("cnn_tiny")
    init = copy.deepcopy(gen1.state_dict())
    result = fit(build_distiller("ban", gen1, gen0), *tiny_data, epochs=2, batch_size=50)
    assert set(result.history[0]["losses"]) == {"ce", "kd"}
    after = gen0.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    assert all(p.grad is None for p in gen0.parameters())
    assert any(not torch.equal(init[k], v) for k, v in gen1.state_dict().items())


def test_ban_is_kd_with_the_previous_generation_as_teacher():
    torch.manual_seed(0)
    student, teacher = build_model("cnn_tiny"), build_model("cnn_tiny")
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    _, ban = build_distiller("ban", student, teacher, T=3.0)(x, y)
    _, kd = build_distiller("kd", student, teacher, T=3.0)(x, y)
    assert list(ban) == list(kd) == ["ce", "kd"]
    assert all(torch.equal(ban[k], kd[k]) for k in kd)


def test_ensemble_of_generations_matches_a_numpy_mean_of_softmaxes(tiny_data):
    generations = [_generation(0, None, tiny_data)]
    for g in (1, 2):
        generations.append(_generation(g, generations[-1], tiny_data))
    outputs = [predict_logits(net, tiny_data.test) for net in generations]
    labels = outputs[0][1]
    ensemble = ensemble_log_probs([logits for logits, _ in outputs])
    correct = (ensemble.argmax(1) == labels).numpy()
    accuracy = 100.0 * correct.mean()

    probs = np.mean([np_softmax(logits.double().numpy()) for logits, _ in outputs], axis=0)
    np.testing.assert_allclose(ensemble.exp().numpy(), probs, rtol=1e-5, atol=1e-6)
    np_correct = probs.argmax(1) == labels.numpy()
    np.testing.assert_array_equal(correct, np_correct)
    assert accuracy == pytest.approx(100.0 * np_correct.mean(), abs=1e-12)
    singles = [(logits.argmax(1) == labels).numpy() for logits, _ in outputs]
    assert any((correct != s).any() for s in singles)  # the ensemble is not one of its members


def test_ban_refuses_another_architecture_itself_and_no_teacher():
    student = build_model("cnn_tiny")
    with pytest.raises(ShapeMismatchError, match="use method 'kd'"):
        build_distiller("ban", student, build_model("cnn_medium"))
    with pytest.raises(ShapeMismatchError, match="only in the teacher"):
        build_distiller("ban", build_model("resnet8"), build_model("resnet14"))  # deeper
    with pytest.raises(ShapeMismatchError, match=r"teacher vs student shapes: \['conv1.weight"):
        build_distiller("ban", build_model("resnet8"), build_model("resnet8x4"))  # wider
    with pytest.raises(KDTutorError, match="is the student itself"):
        build_distiller("ban", student, student)
    with pytest.raises(KDTutorError, match="previous generation"):
        build_distiller("ban", student)
    assert all(p.requires_grad for p in student.parameters())  # never frozen by a refusal
    build_distiller("ban", student, copy.deepcopy(student))  # the same architecture: accepted
