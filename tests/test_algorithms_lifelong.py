"""Lifelong distillation (design note algorithms.md, sections 1.2 and 2.8): LwF (Li & Hoiem
2017) and iCaRL (Rebuffi et al. 2017), their losses, the exemplar memory and its order of
events under ``fit_sequence``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from kdtutor.config import ConfigError
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError, ShapeMismatchError
from kdtutor.losses.lifelong import (
    herding,
    icarl_loss,
    lwf_distillation,
    lwf_loss,
    nme_scores,
)
from kdtutor.methods import build_distiller, get_method
from kdtutor.methods._memory import ExemplarMemory, MemoryDataset, embed, with_memory
from kdtutor.methods.icarl import ICaRL, ICaRLHParams
from kdtutor.models import build_model
from kdtutor.train import fit_sequence

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k", "train").subset(1000), load_dataset("mnist5k", "test").subset(
        500
    )


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=10, in_channels=1, image_size=28, hidden=(64,))


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# -- losses --------------------------------------------------------------------------------------
def test_lwf_loss_is_task_ce_plus_soft_ce_on_old_heads_without_t_squared():
    rng = np.random.default_rng(0)
    z, zo = rng.normal(size=(6, 10)) * 2, rng.normal(size=(6, 10)) * 2
    old, new = [0, 1, 2], [3, 4]
    y = np.array([3, 4, 4, 3, 3, 4])
    T = 2.0
    # CE over the new task's two outputs, labels 3 -> 0, 4 -> 1
    p_new = np_softmax(z[:, new])
    ce_task = -np.log(p_new[np.arange(6), y - 3]).mean()
    # soft CE between the old heads' softened outputs, no T^2
    target, q = np_softmax(zo[:, old] / T), np_softmax(z[:, old] / T)
    distill = -(target * np.log(q)).sum(1).mean()
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    got = lwf_loss(t(z), t(zo), torch.tensor(y), old, new, T=T, lamb=1.0)
    assert got.item() == pytest.approx(ce_task + distill, rel=1e-10)
    got = lwf_loss(t(z), t(zo), torch.tensor(y), old, new, T=T, lamb=0.5, ce_scope="all")
    ce_all = -np.log(np_softmax(z)[np.arange(6), y]).mean()
    assert got.item() == pytest.approx(ce_all + 0.5 * distill, rel=1e-10)
    # FACIL's form: softmax^(1/T) renormalised (its cross_entropy(exp=1/T)) is the same target
    p = np_softmax(zo[:, old]) ** (1 / T)
    assert np.allclose(p / p.sum(1, keepdims=True), target)
    # only the old heads matter: changing the previous model's new-class logits changes nothing
    zo2 = zo.copy()
    zo2[:, new] += 5.0
    assert lwf_distillation(t(z), t(zo2), old, T).item() == pytest.approx(distill, rel=1e-10)


def test_icarl_loss_is_one_bce_with_old_targets_from_the_previous_model():
    rng = np.random.default_rng(1)
    z, zo = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    y = np.array([3, 4, 3, 5, 4])
    old = [0, 1, 2]
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    target = np.eye(6)[y]
    target[:, old] = sig(zo[:, old])
    s = sig(z)
    expected = -(target * np.log(s) + (1 - target) * np.log(1 - s)).mean()
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    assert icarl_loss(t(z), t(zo), torch.tensor(y), old).item() == pytest.approx(expected)
    no_old = -(np.eye(6)[y] * np.log(s) + (1 - np.eye(6)[y]) * np.log(1 - s)).mean()
    assert icarl_loss(t(z), None, torch.tensor(y), []).item() == pytest.approx(no_old)


# -- herding and the nearest-mean classifier -----------------------------------------------------
def test_herding_picks_the_hand_worked_exemplars_in_order():
    # Unit rows r0 (1, 0), r1 (0, 1), r2 (0.6, 0.8), r3 (0.28, 0.96); mean mu = (0.47, 0.69).
    # For unit f, ||v - f||^2 = |v|^2 + 1 - 2 v.f, so each step maximises v.f with v = k mu - sum:
    #  k=1: v = mu:                 r0 .47, r1 .69, r2 .834, r3 .794       -> r2
    #  k=2: v = 2mu - r2 = (.34, .58):  r0 .34, r1 .58, r3 .652            -> r3
    #  k=3: v = 3mu - r2 - r3 = (.53, .31): r0 .53, r1 .31                 -> r0, then r1.
    # (Sorting by distance to mu would give r2, r3, r1, r0: herding differs at step 3.)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.28, 0.96]])
    assert herding(f, 4).tolist() == [2, 3, 0, 1]
    assert herding(f, 2).tolist() == [2, 3]  # a smaller memory keeps the prefix
    scaled = f * torch.tensor([[5.0], [1.0], [2.0], [0.5]])  # normalised first: same choice
    assert herding(scaled, 4).tolist() == [2, 3, 0, 1]


def test_nme_scores_pick_the_nearest_normalised_mean():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(7, 5))
    means = rng.normal(size=(4, 5))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    means[2] = np.nan  # a class without exemplars
    phi = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    dist = np.array([[np.sum((p - m) ** 2) for m in means] for p in phi])
    expected = np.nanargmin(dist, axis=1)
    scores = nme_scores(torch.tensor(feats), torch.tensor(means))
    assert scores.argmax(1).tolist() == expected.tolist()
    finite = ~np.isnan(dist)
    assert np.allclose(-scores.numpy()[finite], dist[finite])
    assert torch.isinf(scores[:, 2]).all()


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        self.fc = nn.Linear(3, 4)
        self.embedding_path = "body"
        self.num_classes = 4

    def forward(self, x):
        return self.fc(self.body(x))


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: list[int]) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def test_memory_herds_each_class_and_its_means_match_numpy():
    torch.manual_seed(4)
    x = torch.randn(12, 1, 2, 2)
    data = Pairs(x, [0] * 6 + [1] * 6)
    model = Toy()
    memory = ExemplarMemory(total=6)
    memory.update(model, data)
    assert memory.classes == [0, 1] and len(memory) == 6
    phi = model.body(x).detach()
    for c in (0, 1):
        rows = torch.arange(6) + 6 * c
        assert memory.exemplars[c][1].tolist() == rows[herding(phi[rows], 3)].tolist()
    # class means: mean of normalised exemplar features, normalised again
    means = memory.class_means(model).numpy()
    for c in (0, 1):
        f = phi[memory.exemplars[c][1]].numpy()
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        m = f.mean(0)
        assert np.allclose(means[c], m / np.linalg.norm(m), atol=1e-6)
    assert np.isnan(means[2:]).all() and means.shape == (4, 3)
    # the memory is a dataset of its exemplars, class by class in ranked order
    first = memory.exemplars[0][1][0].item()
    assert torch.equal(memory[0][0], x[first]) and memory[0][1] == 0
    assert memory[5][1] == 1


# -- the order of events under fit_sequence -----------------------------------------------------
def test_task_i_trains_on_the_memory_updated_with_task_i_minus_1s_model(mnist):
    train, test = mnist
    groups = ([0, 1], [2, 3], [4, 5])
    splits = [(train.select_classes(g), test.select_classes(g)) for g in groups]
    memory = ExemplarMemory(total=20)
    tasks = [(with_memory(tr, memory), te) for tr, te in splits]
    seen: list[dict] = []
    snapshots: list[nn.Module] = []

    class Recorded(ICaRL):
        def bind_data(self, train_data):  # called by fit when it starts reading the split
            super().bind_data(train_data)
            seen.append(
                {"length": len(train_data), "classes": memory.classes, "updates": memory.updates}
            )

    def make(i, previous):
        if previous is not None:
            snapshots.append(copy.deepcopy(previous))
            memory.update(previous, splits[i - 1][0])
        student = copy.deepcopy(previous) if previous is not None else mlp(0)
        hp = ICaRLHParams(old_classes=tuple(memory.classes))
        return Recorded(student, previous, hp, memory=memory)

    fit_sequence(make, tasks, epochs=1, batch_size=64)
    n = [len(tr) for tr, _ in splits]
    assert [s["updates"] for s in seen] == [0, 1, 2]
    assert [s["classes"] for s in seen] == [[], [0, 1], [0, 1, 2, 3]]
    assert [s["length"] for s in seen] == [n[0], n[1] + 20, n[2] + 20]
    # the exemplars of task 1's classes were herded on task 1's model (the one task 2 got)
    tr1 = splits[1][0]
    for c in (2, 3):
        rows = torch.nonzero(tr1.targets == c).flatten()
        phi = embed(snapshots[1], tr1.batch(rows)[0])
        assert memory.exemplars[c][1].tolist() == rows[herding(phi, 5)].tolist()
    # task 0's classes were herded on task 0's model, then cut to the prefix of 5
    tr0 = splits[0][0]
    rows = torch.nonzero(tr0.targets == 0).flatten()
    phi = embed(snapshots[0], tr0.batch(rows)[0])
    assert memory.exemplars[0][1].tolist() == rows[herding(phi, 10)][:5].tolist()


# -- smoke runs ----------------------------------------------------------------------------------
def test_two_task_lwf_and_icarl_runs_remember_and_learn(mnist):
    train, test = mnist
    groups = ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    splits = [(train.select_classes(g), test.select_classes(g)) for g in groups]
    teachers: list[torch.Tensor] = []
    probe = test.batch(torch.arange(32))[0]

    def make_lwf(i, previous):
        if previous is None:
            return build_distiller("lwf", mlp(0), None, new_classes=groups[0])
        with torch.no_grad():
            teachers.append(previous(probe).clone())  # the old heads, recorded before the task
        return build_distiller(
            "lwf", copy.deepcopy(previous), previous, old_classes=groups[0], new_classes=groups[1]
        )

    made: list = []

    def make_lwf_recorded(i, previous):
        made.append(make_lwf(i, previous))
        return made[-1]

    lwf = fit_sequence(make_lwf_recorded, splits, epochs=2, batch_size=64, lr=0.05)
    with torch.no_grad():  # the teacher is task 1's final model, unchanged by task 2
        assert torch.equal(made[1].teacher(probe), teachers[0])
        assert not torch.equal(made[1].student(probe), teachers[0])
    assert lwf.accuracy[0][0] > 80.0 and lwf.accuracy[1][1] > 80.0
    assert set(lwf.results[1].history[-1]["losses"]) == {"ce", "lwf"}
    assert all(np.isfinite(r.history[-1]["loss"]) for r in lwf.results)

    memory = ExemplarMemory(total=50)
    tasks = [(with_memory(tr, memory), te) for tr, te in splits]
    made = []

    def make_icarl(i, previous):
        if previous is not None:
            with torch.no_grad():
                teachers.append(previous(probe).clone())
            memory.update(previous, splits[i - 1][0])
        student = copy.deepcopy(previous) if previous is not None else mlp(0)
        made.append(
            ICaRL(student, previous, ICaRLHParams(old_classes=tuple(memory.classes)), memory=memory)
        )
        return made[-1]

    icarl = fit_sequence(make_icarl, tasks, epochs=2, batch_size=64, lr=0.05)
    last = icarl.results[1].history[-1]
    assert set(last["test"]) == {"student", "nme"} and set(last["losses"]) == {"icarl"}
    assert icarl.accuracy[0][0] > 80.0 and icarl.accuracy[1][1] > 50.0
    assert icarl.accuracy[1][0] > 0.0  # rehearsal keeps some of task 1 (finetuning: ~0)
    assert last["test"]["nme"]["accuracy"] > 50.0
    with torch.no_grad():  # the memory update did not change the teacher either
        assert torch.equal(made[1].teacher(probe), teachers[1])


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_is_refused_with_a_fix():
    student = mlp(0)
    with pytest.raises(ConfigError, match="ce_scope"):
        build_distiller("lwf", student, None, new_classes=[0], ce_scope="heads")
    with pytest.raises(ConfigError, match="new_classes is empty"):
        build_distiller("lwf", student, None)
    with pytest.raises(ConfigError, match="both old_classes and new_classes"):
        build_distiller("lwf", student, mlp(1), old_classes=[0, 1], new_classes=[1, 2])
    with pytest.raises(KDTutorError, match="teacher=previous"):
        build_distiller("lwf", student, None, old_classes=[0], new_classes=[1])
    with pytest.raises(ConfigError, match="num_classes"):
        build_distiller("lwf", student, None, new_classes=[10, 11])
    with pytest.raises(KDTutorError, match="teacher=previous"):
        ICaRL(student, None, ICaRLHParams(old_classes=(0,)))
    with pytest.raises(KDTutorError, match="ExemplarMemory"):
        ICaRL(student, None, memory=[1, 2])  # type: ignore[arg-type]
    z = torch.zeros(2, 10)
    with pytest.raises(KDTutorError, match="not among this task's classes"):
        lwf_loss(z, None, torch.tensor([0, 5]), [], [5, 6])
    with pytest.raises(ShapeMismatchError):
        lwf_distillation(z, torch.zeros(2, 9), [0], 2.0)
    with pytest.raises(KDTutorError, match=r"0\.\.9"):
        lwf_distillation(z, z, [12], 2.0)
    with pytest.raises(KDTutorError, match="cannot pick 5"):
        herding(torch.randn(3, 2), 5)
    with pytest.raises(ShapeMismatchError):
        nme_scores(torch.randn(2, 3), torch.randn(4, 5))
    with pytest.raises(KDTutorError, match="positive int"):
        ExemplarMemory(total=0)
    memory = ExemplarMemory(total=4)
    with pytest.raises(KDTutorError, match="ExemplarMemory"):
        with_memory([(torch.zeros(1), 0)], memory="memory")  # type: ignore[arg-type]
    data = Pairs(torch.randn(4, 1, 2, 2), [0, 0, 1, 1])
    with pytest.raises(KDTutorError, match="own training split"):
        memory.update(Toy(), with_memory(data, memory))
    with pytest.raises(KDTutorError, match="embedding_path"):
        memory.update(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), data)
    with pytest.raises(KDTutorError, match="no images"):
        memory.update(Toy(), data, classes=[3])
    with pytest.raises(KDTutorError, match="empty"):
        memory.class_means(Toy())
    assert isinstance(with_memory(data, memory), MemoryDataset)
    assert get_method("lwf").family == get_method("icarl").family == "lifelong"
