"""DeiT (Touvron et al., 2021): the hard and soft terms against NumPy, the distillation token
and its head, the inference modes against hand computations, a frozen teacher, a smoke run
with the zoo teacher, bit-identical resume and the refusals."""

import copy
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _resume import interrupted_then_resumed

from kdtutor.cache import clear_memory_cache
from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError, ShapeMismatchError
from kdtutor.methods import build_distiller, get_method
from kdtutor.methods.deit import (
    DEIT_INFERENCE,
    DEIT_STUDENT,
    DeiT,
    _combine,
    deit_hard_loss,
    deit_losses,
    deit_soft_loss,
    deit_student,
)
from kdtutor.models import build_model
from kdtutor.seeding import seed_everything
from kdtutor.train import fit
from kdtutor.train.evaluation import evaluate_networks

torch.set_num_threads(1)

# Fixed logits: 4 samples, 5 classes; row 2 of the teacher has a tie (first index wins).
ZS = np.array(
    [
        [1.5, -0.3, 0.2, 2.1, -1.0],
        [0.0, 0.4, -0.7, 0.9, 0.3],
        [-2.0, 1.1, 0.5, 0.0, 0.8],
        [0.6, 0.6, -0.2, -1.4, 2.2],
    ]
)
ZT = np.array(
    [
        [0.3, 2.5, -0.1, 1.0, 0.0],
        [1.2, -0.5, 0.7, 0.1, -1.1],
        [0.4, 0.9, 0.9, -0.3, 0.2],
        [-1.0, 0.0, 3.0, 0.5, 1.5],
    ]
)
Y = np.array([3, 0, 1, 4])


def t(a, dtype=torch.float32):
    return torch.tensor(a, dtype=dtype)


def np_log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def np_ce(z, y, eps=0.0):
    """Cross entropy against (1 - eps) one-hot + eps / K, written with an explicit target."""
    k = z.shape[1]
    q = np.full(z.shape, eps / k)
    q[np.arange(len(y)), y] += 1 - eps
    return float(-(q * np_log_softmax(z)).sum(axis=1).mean())


def np_kl(zs, zt, tau, divide_by_classes=False):
    """tau^2 * mean over samples of sum_k p_t (log p_t - log p_s), with loops."""
    total = 0.0
    for row_s, row_t in zip(zs / tau, zt / tau, strict=True):
        p_t = np.exp(row_t - row_t.max())
        p_t /= p_t.sum()
        p_s = np.exp(row_s - row_s.max())
        p_s /= p_s.sum()
        total += sum(a * (np.log(a) - np.log(b)) for a, b in zip(p_t, p_s, strict=True))
    value = tau**2 * total / zs.shape[0]
    return value / zs.shape[1] if divide_by_classes else value


def small_vit(token=True, **kwargs):
    options = {"patch_size": 8, "dim": 32, "depth": 2, "heads": 2, **kwargs}
    return build_model("vit_tiny", distill_token=token, **options)


# -- the losses ------------------------------------------------------------------------------
def test_hard_loss_is_cross_entropy_with_the_teacher_argmax():
    y_t = np.array([1, 0, 1, 2])  # row 2 ties classes 1 and 2: the first is taken
    assert (ZT.argmax(axis=1) == y_t).all()
    expected = np_ce(ZS, y_t)
    assert deit_hard_loss(t(ZS), t(ZT)).item() == pytest.approx(expected, rel=1e-6)
    # float64 is exact to the last digits
    assert deit_hard_loss(t(ZS, torch.float64), t(ZT, torch.float64)).item() == pytest.approx(
        expected, rel=1e-12
    )
    # the hard label is the teacher's decision: scaling its logits changes nothing
    assert deit_hard_loss(t(ZS), t(10 * ZT)).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_soft_loss_against_numpy_both_reductions(tau):
    batchmean = deit_soft_loss(t(ZS, torch.float64), t(ZT, torch.float64), tau)
    code = deit_soft_loss(t(ZS, torch.float64), t(ZT, torch.float64), tau, reduction="code")
    assert batchmean.item() == pytest.approx(np_kl(ZS, ZT, tau), rel=1e-12)
    assert code.item() == pytest.approx(np_kl(ZS, ZT, tau, divide_by_classes=True), rel=1e-12)
    # the code's form is torch's legacy element-wise mean of the KL (losses.py's comment)
    elementwise = F.kl_div(
        F.log_softmax(t(ZS) / tau, 1),
        F.log_softmax(t(ZT) / tau, 1),
        reduction="none",
        log_target=True,
    )
    legacy = elementwise.mean()
    assert deit_soft_loss(t(ZS), t(ZT), tau, reduction="code").item() == pytest.approx(
        tau**2 * legacy.item(), rel=1e-5
    )
    assert deit_soft_loss(t(ZT), t(ZT), tau).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("distillation", ["hard", "soft"])
def test_deit_losses_weights_and_smooths_the_label_term_only(distillation):
    zc, zd = ZS, ZS[:, ::-1].copy()
    losses = deit_losses(
        t(zc),
        t(zd),
        t(ZT),
        torch.tensor(Y),
        distillation=distillation,
        ce_weight=0.3,
        kd_weight=0.7,
        T=2.0,
        label_smoothing=0.1,
    )
    assert list(losses) == ["ce", "dist"]
    assert losses["ce"].item() == pytest.approx(0.3 * np_ce(zc, Y, eps=0.1), rel=1e-5)
    teacher = np_ce(zd, ZT.argmax(axis=1)) if distillation == "hard" else np_kl(zd, ZT, 2.0)
    assert losses["dist"].item() == pytest.approx(0.7 * teacher, rel=1e-5)
    # kd_weight 0: no teacher term, no teacher logits needed
    alone = deit_losses(t(zc), t(zd), None, torch.tensor(Y), kd_weight=0.0, label_smoothing=0.0)
    assert list(alone) == ["ce"]
    assert alone["ce"].item() == pytest.approx(0.5 * np_ce(zc, Y), rel=1e-5)


def test_paper_hard_objective_is_the_default():
    """Eq. 3: 1/2 CE(z, y) + 1/2 CE(z, y_t), here with the smoothed label term."""
    losses = deit_losses(t(ZS), t(ZS), t(ZT), torch.tensor(Y))
    expected = 0.5 * np_ce(ZS, Y, eps=0.1) + 0.5 * np_ce(ZS, ZT.argmax(axis=1))
    assert sum(v.item() for v in losses.values()) == pytest.approx(expected, rel=1e-5)
    hp = get_method("deit").hparams_cls()
    assert (hp.ce_weight, hp.kd_weight, hp.T, hp.distillation, hp.token) == (
        0.5,
        0.5,
        1.0,
        "hard",
        True,
    )
    assert (hp.label_smoothing, hp.kl_reduction, hp.inference) == (0.1, "batchmean", "both")


# -- the distiller ---------------------------------------------------------------------------
def test_registered_as_an_architecture_method():
    cls = get_method("deit")
    assert cls is DeiT and cls.family == "architecture"
    assert cls.loss_weights == ("kd_weight",) and cls.paper.startswith("Touvron")
    assert DEIT_STUDENT == "vit_tiny(distill_token=True,patch_size=8)"
    student = deit_student()
    assert (student.distill_token, student.patch_size, student.pos_embed.shape[1]) == (True, 8, 18)


def test_forward_puts_labels_on_the_class_head_and_the_teacher_on_the_distillation_head():
    torch.manual_seed(0)
    student, teacher = small_vit(), build_model("cnn_small")
    d = build_distiller(
        "deit", student, teacher, distillation="soft", T=3.0, ce_weight=0.9, kd_weight=0.1
    )
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    d.train()
    outputs, losses = d(x, y)
    with torch.no_grad():
        zc, zd = (z.double().numpy() for z in student.forward_heads(x))
        zt = teacher(x).double().numpy()
    assert losses["ce"].item() == pytest.approx(0.9 * np_ce(zc, y.numpy(), eps=0.1), rel=1e-5)
    assert losses["dist"].item() == pytest.approx(0.1 * np_kl(zd, zt, 3.0), rel=1e-4)
    np.testing.assert_allclose(outputs.detach().double().numpy(), (zc + zd) / 2, atol=1e-6)


def test_distillation_token_is_a_separate_learned_parameter_read_by_its_head():
    torch.manual_seed(0)
    student = small_vit()
    d = build_distiller("deit", student, build_model("cnn_small"), ce_weight=0.0)
    params = dict(student.named_parameters())
    assert isinstance(student.dist_token, torch.nn.Parameter)
    assert student.dist_token.data_ptr() != student.cls_token.data_ptr()
    assert not torch.equal(student.dist_token, student.cls_token)
    trainable = {id(p) for p in d.trainable_parameters()}
    assert id(params["dist_token"]) in trainable and id(params["head_dist.weight"]) in trainable

    # head_dist reads the final state of token 1 (the distillation token), head token 0
    x = torch.randn(3, 3, 32, 32)
    seen = {}
    hooks = [
        getattr(student, name).register_forward_hook(
            lambda m, a, o, name=name: seen.__setitem__(name, a[0].detach())
        )
        for name in ("head", "head_dist")
    ]
    with torch.no_grad():
        tokens = student.forward_features(x)
        student.forward_heads(x)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(seen["head"], tokens[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(seen["head_dist"], tokens[:, 1], rtol=0, atol=0)

    # with the label term at weight 0, only the teacher term trains: it reaches the token and
    # head_dist, never the class head
    d.train()
    _, losses = d(x, torch.randint(0, 10, (3,)))
    sum(losses.values()).backward()
    assert student.head_dist.weight.grad.abs().sum() > 0
    assert student.dist_token.grad.abs().sum() > 0
    assert student.head.weight.grad.abs().sum() == 0
    # and moving the token moves the distillation head's logits
    with torch.no_grad():
        before = student.forward_heads(x)[1].clone()
        student.dist_token.add_(1.0)
        assert not torch.allclose(student.forward_heads(x)[1], before)


def test_each_inference_mode_against_a_hand_computation():
    torch.manual_seed(1)
    student = small_vit()
    x = torch.randn(12, 3, 32, 32)
    with torch.no_grad():
        zc, zd = (z.double().numpy() for z in student.forward_heads(x))
    pc, pd = np.exp(np_log_softmax(zc)), np.exp(np_log_softmax(zd))
    hand = {"cls": zc, "dist": zd, "both": (zc + zd) / 2, "both_prob": np.log((pc + pd) / 2)}
    for inference in DEIT_INFERENCE:
        d = build_distiller("deit", student, build_model("cnn_small"), inference=inference)
        networks = d.eval_networks()
        assert next(iter(networks)) == "student"
        assert set(networks) == {"student"} | (set(DEIT_INFERENCE) - {inference})
        d.eval()
        for name, network in networks.items():
            mode = inference if name == "student" else name
            np.testing.assert_allclose(network(x).double().numpy(), hand[mode], atol=1e-5)
    # the default equals the student's own forward (the code's logit mean), bit for bit
    d = build_distiller("deit", student, build_model("cnn_small")).eval()
    with torch.no_grad():
        assert torch.equal(d.predict(x), student(x))
    # the paper's softmax sum and the code's logit mean are two rules: they can disagree
    a, b = np.array([[10.0, 0.0, 0.0]]), np.array([[-12.0, 2.0, 0.0]])
    prob_sum = np.exp(np_log_softmax(a)) + np.exp(np_log_softmax(b))
    assert (((a + b) / 2).argmax(), prob_sum.argmax()) == (1, 0)
    za, zb = torch.tensor(a), torch.tensor(b)
    assert (
        _combine(za, zb, "both").argmax().item(),
        _combine(za, zb, "both_prob").argmax().item(),
    ) == (1, 0)


def test_one_forward_per_test_batch_scores_every_mode_as_separate_runs_would():
    torch.manual_seed(2)
    student = small_vit()
    teacher = build_model("cnn_small")
    data = load_dataset("shapes", "test", size=48, cache=False)
    d = build_distiller("deit", student, teacher)
    calls = []
    hook = student.blocks.register_forward_hook(lambda *a: calls.append(1))
    scores = evaluate_networks(d, data, batch_size=16)
    hook.remove()
    assert len(calls) == 3  # 3 batches: one student forward each serves the 4 networks
    assert list(scores) == ["student", "both_prob", "cls", "dist"]
    for name in ("both_prob", "cls", "dist"):  # each mode scored alone, as its run's student
        single = build_distiller("deit", student, teacher, inference=name)
        assert evaluate_networks(single, data, batch_size=16)["student"] == scores[name]
    # the memo never serves a stale answer: a changed parameter recomputes for the same x
    d.eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        first = d.predict_cls(x).clone()
        student.head.bias.add_(1.0)
        torch.testing.assert_close(d.predict_cls(x), first + 1.0)
    # and with gradients on (or in train mode) nothing is kept
    d.train()
    d.heads(x)
    assert d._memo is None


def test_the_teacher_gets_no_gradient_and_stays_unchanged(tiny_data):
    torch.manual_seed(3)
    teacher = build_model("cnn_small", dropout=0.5)
    before = copy.deepcopy(teacher.state_dict())
    for distillation in ("hard", "soft"):
        d = build_distiller("deit", small_vit(), teacher, distillation=distillation)
        x, y = torch.randn(5, 3, 32, 32), torch.randint(0, 10, (5,))
        d.train()
        assert not teacher.training
        _, losses = d(x, y)
        sum(losses.values()).backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert {id(p) for p in teacher.parameters()}.isdisjoint(
            id(p) for p in d.trainable_parameters()
        )
    fit(d, tiny_data.train, tiny_data.test, epochs=1, batch_size=50, cache=False)
    assert all(torch.equal(before[k], teacher.state_dict()[k]) for k in before)
    # the loss functions themselves detach the teacher's logits
    zt = t(ZT).requires_grad_()
    zs = t(ZS).requires_grad_()
    (deit_hard_loss(zs, zt) + deit_soft_loss(zs, zt, 2.0)).backward()
    assert zt.grad is None and zs.grad is not None


def test_without_the_token_both_terms_train_the_one_head():
    torch.manual_seed(4)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    teacher = build_model("cnn_small")
    for student in (small_vit(token=False), build_model("cnn_tiny")):
        d = build_distiller("deit", student, teacher, token=False, label_smoothing=0.0)
        d.train()
        outputs, losses = d(x, y)
        with torch.no_grad():
            z, zt = student(x).double().numpy(), teacher(x).double().numpy()
        assert losses["ce"].item() == pytest.approx(0.5 * np_ce(z, y.numpy()), rel=1e-5)
        assert losses["dist"].item() == pytest.approx(0.5 * np_ce(z, zt.argmax(axis=1)), rel=1e-5)
        np.testing.assert_allclose(outputs.detach().double().numpy(), z, atol=1e-6)
        assert list(d.eval_networks()) == ["student"]
        with torch.no_grad():
            assert torch.equal(d.eval().predict(x), student(x))


# -- runs ------------------------------------------------------------------------------------
def test_smoke_run_with_the_zoo_teacher_at_patch_8():
    from kdtutor.zoo import load_teacher

    clear_memory_cache()
    train = load_dataset("shapes", "train", size=256)
    test = load_dataset("shapes", "test", size=128)
    seed_everything(0)
    d = build_distiller("deit", deit_student(), load_teacher("shapes_cnn_large"))
    start = time.perf_counter()
    result = fit(d, train, test, epochs=1, batch_size=64, lr=0.05)
    seconds = time.perf_counter() - start
    record = result.history[0]
    assert set(record["losses"]) == {"ce", "dist"}
    assert all(np.isfinite(v) for v in record["losses"].values())
    assert set(record["test"]) == {"student", "both_prob", "cls", "dist"}
    assert record["test"]["student"]["accuracy"] == record["test_acc"]
    assert seconds < 60, f"the smoke run took {seconds:.1f} s"


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("distillation", ["hard", "soft"])
def test_resume_is_bit_identical(distillation, cache, tmp_path):
    clear_memory_cache()
    data = load_dataset("shapes", "train", size=96), load_dataset("shapes", "test", size=32)
    teacher = build_model("cnn_medium")
    cfg = {"epochs": 4, "batch_size": 32, "lr": 0.05, "cache": cache, "seed": 3}

    def make():
        seed_everything(11)
        return build_distiller("deit", small_vit(), teacher, distillation=distillation)

    runs = interrupted_then_resumed(
        make, *data, tmp_path, after=2, covers=("student.dist_token",), config=cfg
    )
    assert [h["epoch"] for h in runs.result.history] == [1, 2, 3, 4]


# -- refusals --------------------------------------------------------------------------------
def test_bad_input_is_refused_with_the_fix():
    teacher = build_model("cnn_small")
    with pytest.raises(KDTutorError, match=r"forward_heads.*distill_token=True"):
        build_distiller("deit", build_model("cnn_tiny"), teacher)
    with pytest.raises(KDTutorError, match=r"built without one.*distill_token=True"):
        build_distiller("deit", small_vit(token=False), teacher)
    with pytest.raises(KDTutorError, match=r"token=False.*without the token"):
        build_distiller("deit", small_vit(), teacher, token=False)
    with pytest.raises(KDTutorError, match="needs a teacher"):
        build_distiller("deit", small_vit())
    with pytest.raises(ShapeMismatchError, match="num_classes=10"):
        build_distiller("deit", small_vit(num_classes=5), teacher)
    with pytest.raises(ConfigError, match=r"distillation must be one of 'hard', 'soft'"):
        build_distiller("deit", small_vit(), teacher, distillation="medium")
    with pytest.raises(ConfigError, match=r"inference must be one of"):
        build_distiller("deit", small_vit(), teacher, inference="mean")
    with pytest.raises(ConfigError, match=r"kl_reduction must be one of"):
        build_distiller("deit", small_vit(), teacher, kl_reduction="sum")
    with pytest.raises(ConfigError, match=r"'alpha' is now 'kd_weight'"):
        build_distiller("deit", small_vit(), teacher, alpha=0.5)
    with pytest.raises(ConfigError, match=r"'tau' is now 'T'"):
        build_distiller("deit", small_vit(), teacher, tau=3)
    with pytest.raises(ConfigError, match=r"label_smoothing must be in \[0, 1\)"):
        build_distiller("deit", small_vit(), teacher, label_smoothing=1.0)
    with pytest.raises(ConfigError, match="label_smoothing must be >= 0"):
        build_distiller("deit", small_vit(), teacher, label_smoothing=-0.1)
    with pytest.raises(ConfigError, match="T must be > 0"):
        build_distiller("deit", small_vit(), teacher, T=0)
    # the loss functions
    z = torch.zeros(4, 5)
    with pytest.raises(ShapeMismatchError, match="same classes"):
        deit_hard_loss(z, torch.zeros(4, 6))
    with pytest.raises(ShapeMismatchError, match="same classes"):
        deit_soft_loss(z, torch.zeros(3, 5))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        deit_soft_loss(z, z, 0.0)
    with pytest.raises(ConfigError, match="reduction must be one of"):
        deit_soft_loss(z, z, reduction="mean")
    with pytest.raises(ShapeMismatchError, match=r"labels must be \(4,\)"):
        deit_losses(z, z, z, torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ShapeMismatchError, match="two heads"):
        deit_losses(z, torch.zeros(4, 6), z, torch.zeros(4, dtype=torch.long))
    with pytest.raises(KDTutorError, match="needs the teacher's logits"):
        deit_losses(z, z, None, torch.zeros(4, dtype=torch.long))
    with pytest.raises(KDTutorError, match="always has the distillation token"):
        deit_student(distill_token=False)

    class NoSecondHead(torch.nn.Module):  # a user's model whose forward_heads gives one head
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 32 * 32, 10)
            self.num_classes = 10

        def forward_heads(self, x):
            return self.fc(x.flatten(1)), None

        def forward(self, x):
            return self.forward_heads(x)[0]

    d = build_distiller("deit", NoSecondHead(), teacher)
    with pytest.raises(KDTutorError, match="no distillation-head logits"):
        d(torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
