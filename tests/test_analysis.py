"""kdtutor.analysis against independent NumPy computations."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdtutor.analysis import (
    class_similarity_matrix,
    entropy,
    kd_gradient_norms,
    mean_entropy_by_temperature,
    most_similar_other_class,
    predict_logits,
    soft_targets,
)
from kdtutor.data import ArrayDataset
from kdtutor.errors import ShapeMismatchError


def np_softmax(z: np.ndarray, T: float) -> np.ndarray:
    e = np.exp((z - z.max(axis=-1, keepdims=True)) / T)
    return e / e.sum(axis=-1, keepdims=True)


def np_entropy(p: np.ndarray) -> np.ndarray:
    out = np.zeros(p.shape[:-1])
    for idx in np.ndindex(*p.shape[:-1]):
        out[idx] = -sum(v * math.log(v) for v in p[idx] if v > 0)
    return out


@pytest.fixture
def logits():
    return np.random.default_rng(0).normal(size=(50, 6)) * 4


@pytest.mark.parametrize("T", [0.5, 1.0, 3.0, 20.0])
def test_soft_targets_match_numpy(logits, T):
    got = soft_targets(torch.tensor(logits), T).numpy()
    np.testing.assert_allclose(got, np_softmax(logits, T), rtol=1e-12)


@pytest.mark.parametrize("T", [0.0, -1.0, float("inf"), float("nan")])
def test_soft_targets_reject_bad_temperature(T):
    with pytest.raises(ValueError, match="temperature"):
        soft_targets(torch.zeros(2, 3), T)


def test_entropy_matches_numpy_and_limits(logits):
    p = np_softmax(logits, 2.0)
    np.testing.assert_allclose(entropy(torch.tensor(p)).numpy(), np_entropy(p), rtol=1e-12)
    assert entropy(torch.tensor([1.0, 0.0, 0.0])).item() == 0.0  # 0 log 0 counts as 0
    assert entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8))


def test_mean_entropy_by_temperature(logits):
    temps = [1, 2, 5, 20]
    got = mean_entropy_by_temperature(torch.tensor(logits), temps).numpy()
    expected = [np_entropy(np_softmax(logits, T)).mean() for T in temps]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert np.all(np.diff(got) > 0)  # softer with T
    assert got[-1] < math.log(6)


def _toy_dataset(n_per_class: int = 6, classes: int = 3) -> ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (n_per_class * classes, 1, 4, 4), generator=gen, dtype=torch.uint8
    )
    targets = torch.arange(n_per_class * classes) % classes
    return ArrayDataset(images, targets, [f"c{i}" for i in range(classes)], "toy")


def test_class_similarity_matrix_from_logits(logits):
    labels = np.arange(50) % 6
    got = class_similarity_matrix(torch.tensor(logits), torch.tensor(labels), T=3.0).numpy()
    p = np_softmax(logits, 3.0)
    expected = np.stack([p[labels == c].mean(axis=0) for c in range(6)])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


def test_class_similarity_matrix_from_model_and_dataset():
    data = _toy_dataset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).train()
    got = class_similarity_matrix(model, data, T=2.0)
    assert model.training  # mode restored
    with torch.no_grad():
        z = model(data.batch(torch.arange(len(data)))[0]).numpy().astype(np.float64)
    labels = data.targets.numpy()
    p = np_softmax(z, 2.0)
    expected = np.stack([p[labels == c].mean(axis=0) for c in range(3)])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    # logits + dataset gives the same
    logits, y = predict_logits(model, data, batch_size=5)
    assert torch.equal(y, data.targets)
    torch.testing.assert_close(class_similarity_matrix(logits, data, T=2.0), got)


def test_class_similarity_matrix_errors():
    with pytest.raises(ShapeMismatchError):
        class_similarity_matrix(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="dataset"):
        class_similarity_matrix(nn.Linear(2, 2), torch.zeros(2, dtype=torch.long))


def test_most_similar_other_class():
    m = torch.tensor([[0.9, 0.02, 0.08], [0.3, 0.6, 0.1], [0.01, 0.2, 0.79]])
    assert most_similar_other_class(m).tolist() == [2, 0, 1]
    with pytest.raises(ShapeMismatchError):
        most_similar_other_class(torch.zeros(2, 3))


def np_kd_grad(zs: np.ndarray, zt: np.ndarray, T: float, scaled: bool) -> np.ndarray:
    """d/dzs of (T^2) * mean_i KL(p_t || p_s) = (T^2) * (p_s - p_t) / (T B)."""
    g = (np_softmax(zs, T) - np_softmax(zt, T)) / (T * zs.shape[0])
    return g * T**2 if scaled else g


@pytest.mark.parametrize("scaled", [True, False])
def test_kd_gradient_norms_match_closed_form(scaled):
    rng = np.random.default_rng(1)
    zs, zt = rng.normal(size=(16, 10)) * 3, rng.normal(size=(16, 10)) * 3
    temps = [1.0, 2.0, 4.0, 8.0, 16.0]
    got = kd_gradient_norms(torch.tensor(zs), torch.tensor(zt), temps, scale_by_t2=scaled).numpy()
    expected = [np.linalg.norm(np_kd_grad(zs, zt, T, scaled)) for T in temps]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_kd_gradient_norms_do_not_touch_inputs():
    zs = torch.randn(4, 5, requires_grad=True)
    kd_gradient_norms(zs, torch.randn(4, 5), [2.0])
    assert zs.grad is None
