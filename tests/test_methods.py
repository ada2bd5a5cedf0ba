"""The Distiller contract: registry, hyperparameters, a frozen teacher, KD's losses."""

import copy

import pytest
import torch
import torch.nn.functional as F

from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError, ShapeMismatchError, UnknownNameError
from kdtutor.methods import Distiller, LossWeights, build_distiller, get_method, list_methods
from kdtutor.models import build_model
from kdtutor.train import fit


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train", size=256), load_dataset("digits", "test", size=128)


def mlp(classes=10, hidden=(32,)):
    return build_model("mlp", num_classes=classes, in_channels=1, image_size=8, hidden=hidden)


def test_registry_lists_and_suggests():
    assert {"scratch", "kd"} <= set(list_methods())
    assert get_method("kd").paper.startswith("Hinton")
    with pytest.raises(UnknownNameError, match="Did you mean 'kd'"):
        get_method("kdd")


def test_hparams_defaults_overrides_and_errors():
    teacher = mlp()
    d = build_distiller("kd", mlp(), teacher)
    assert (d.hparams.T, d.hparams.ce_weight, d.hparams.kd_weight) == (4.0, 0.1, 0.9)
    d = build_distiller("kd", mlp(), teacher, {"T": 20}, ce_weight=0.5)
    assert (d.hparams.T, d.hparams.ce_weight) == (20.0, 0.5)
    with pytest.raises(ConfigError, match=r"unknown key 'alpha'.*'alpha' is now 'ce_weight'"):
        build_distiller("kd", mlp(), teacher, alpha=0.5)
    with pytest.raises(ConfigError, match="unknown key 'temperature'"):
        build_distiller("kd", mlp(), teacher, temperature=3)
    with pytest.raises(ConfigError, match="T must be > 0"):
        build_distiller("kd", mlp(), teacher, T=-1)
    with pytest.raises(KDTutorError, match="needs a teacher"):
        build_distiller("kd", mlp())
    with pytest.raises(ShapeMismatchError, match="num_classes=10"):
        build_distiller("kd", mlp(classes=5), teacher)


def test_every_method_names_its_family_and_shares_the_loss_weights():
    for name in list_methods():
        cls = get_method(name)
        families = {
            "baseline", "response", "feature", "relation", "online", "self", "architecture",
            "adversarial", "multi_teacher", "cross_modal", "graph", "attention", "data_free",
            "quantized", "lifelong", "application",
        }  # fmt: skip
        assert cls.family in families, name
        # scratch and tfkd have no CE weight of their own (see their docstrings); chapter 8's
        # application methods train on their task's own losses (FCOS, L1, heatmap MSE ...)
        if cls.family != "application" and name not in ("scratch", "tfkd"):
            assert issubclass(cls.hparams_cls, LossWeights), name
    assert get_method("ft").scaled_hparams(120) == {"init_epochs": 15}
    assert get_method("ft").scaled_hparams(240) == {}
    assert get_method("crd").scaled_hparams(8, n_train=100) == {"num_negatives": 99}
    assert get_method("crd").scaled_hparams(8) == {}


def test_kd_term_added_to_any_method_with_kd_weight():
    torch.manual_seed(0)
    student, teacher = mlp(), mlp(hidden=(64,))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    plain = build_distiller("dist", student, teacher)
    _, without = plain(x, y)
    _, with_kd = build_distiller("dist", student, teacher, kd_weight=0.5, T=2.0)(x, y)
    assert list(without) == ["ce", "inter", "intra"]
    assert list(with_kd) == ["ce", "inter", "intra", "kd"]
    zs, zt = student(x), teacher(x)
    p_t = torch.softmax(zt / 2, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(zs / 2, 1))).sum(1).mean()
    assert with_kd["kd"].item() == pytest.approx(0.5 * 4 * kl.item(), rel=1e-5)


def test_kd_forward_is_weighted_ce_plus_kd():
    torch.manual_seed(0)
    student, teacher = mlp(), mlp(hidden=(64,))
    d = build_distiller("kd", student, teacher, T=3.0, ce_weight=0.3, kd_weight=0.7)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    d.train()
    _logits, losses = d(x, y)
    assert set(losses) == {"ce", "kd"}
    zs, zt = student(x), teacher(x)
    p_t = torch.softmax(zt / 3, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(zs / 3, 1))).sum(1).mean()
    assert losses["ce"].item() == pytest.approx(0.3 * F.cross_entropy(zs, y).item(), rel=1e-5)
    assert losses["kd"].item() == pytest.approx(0.7 * 9 * kl.item(), rel=1e-5)


def test_teacher_frozen_and_in_eval_mode(digits):
    train, test = digits
    teacher = build_model(
        "mlp", num_classes=10, in_channels=1, image_size=8, hidden=(64,), dropout=0.5
    )
    before = copy.deepcopy(teacher.state_dict())
    d = build_distiller("kd", mlp(), teacher)
    d.train()
    assert not d.teacher.training and d.student.training
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert teacher_ids.isdisjoint(id(p) for p in d.trainable_parameters())
    assert all(not p.requires_grad for p in teacher.parameters())
    fit(d, train, test, epochs=2, batch_size=32, cache=False)
    assert not teacher.training
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in teacher.parameters())


def test_scratch_needs_no_teacher_and_trains(digits):
    train, test = digits
    torch.manual_seed(0)
    result = fit(build_distiller("scratch", mlp()), train, test, epochs=3, batch_size=32, lr=0.1)
    assert result.history[-1]["losses"]["ce"] < result.history[0]["losses"]["ce"]
    assert result.best_acc > 30  # far above chance (10%) after three epochs


def test_custom_distiller_subclass_plugs_into_trainer(digits):
    """A method is a loss function plus a small class; the trainer needs nothing else."""

    class Half(Distiller):
        name = "half-ce"
        requires_teacher = False

        def forward(self, x, y, index=None):
            logits = self.student(x)
            return logits, {"half_ce": 0.5 * F.cross_entropy(logits, y)}

    result = fit(Half(mlp()), digits[0], digits[1], epochs=1, batch_size=64)
    assert "half_ce" in result.history[0]["losses"]


def test_each_method_lives_in_the_module_of_its_name_and_loads_on_first_use():
    """The registry imports ``kdtutor.methods.<name>`` when ``<name>`` is first asked for, so
    each method module must register exactly the method of its name; a fresh interpreter
    that builds KD imports no other method's module."""
    import importlib
    import subprocess
    import sys

    from kdtutor.methods.registry import method_modules

    for module in method_modules():
        importlib.import_module(f"kdtutor.methods.{module}")
        assert module in list_methods(), f"kdtutor/methods/{module}.py registers no {module!r}"
        assert get_method(module).__module__ == f"kdtutor.methods.{module}"
    code = (
        "import sys\n"
        "from kdtutor.methods import get_method\n"
        "get_method('kd')\n"
        "loaded = sorted(m.rpartition('.')[2] for m in sys.modules\n"
        "                if m.startswith('kdtutor.methods.'))\n"
        "print(' '.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "kd" in loaded
    assert not loaded & (set(method_modules()) - {"kd"}), loaded
