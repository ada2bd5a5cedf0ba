"""kdtutor.compression: pruning, int8 quantization and low-rank factorization, checked independently.

The references here are written from the definitions (numpy SVD, hand-made masks, hand counts),
not from the functions under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from kdtutor.compression import (
    dynamic_int8,
    factorized_conv2d,
    factorized_linear,
    low_rank_factorize,
    magnitude_prune,
    make_permanent,
    measure_latency,
    sparsity,
    static_int8,
    stored_size_mb,
)
from kdtutor.models import build_model, count_parameters


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    ).eval()


def prunable_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


# --------------------------------------------------------------------------------------------
# pruning
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("amount", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_global_pruning_removes_the_requested_fraction(amount):
    model = small_cnn()
    pruned = magnitude_prune(model, amount)
    total = sum(w.numel() for w in prunable_weights(model))
    assert sparsity(pruned) == pytest.approx(round(amount * total) / total, abs=1e-12)
    assert sparsity(model) == 0.0, "the input model must not change"


def test_global_pruning_equals_zeroing_small_weights_by_hand():
    model = small_cnn()
    pruned = magnitude_prune(model, 0.6)
    by_hand = small_cnn()
    weights = prunable_weights(by_hand)
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    k = round(0.6 * magnitudes.numel())
    threshold = magnitudes.sort().values[k - 1]  # the k-th smallest magnitude goes too
    with torch.no_grad():
        for w in weights:
            w.mul_(w.abs() > threshold)
    x = torch.randn(4, 3, 12, 12)
    assert_close(pruned(x), by_hand(x))
    assert all(not hasattr(m, "weight_mask") for m in pruned.modules()), "masks folded in"


def test_layer_pruning_prunes_each_layer_by_the_same_fraction():
    pruned = magnitude_prune(small_cnn(), 0.5, scope="layer")
    for w in prunable_weights(pruned):
        assert int((w == 0).sum()) == round(0.5 * w.numel())


def test_pruning_with_masks_kept_stays_sparse_after_a_training_step():
    model = magnitude_prune(small_cnn(), 0.7, permanent=False)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(8, 3, 12, 12)).square().mean().backward()
    optimizer.step()
    assert sparsity(model) == pytest.approx(0.7, abs=1e-2)
    make_permanent(model)
    assert not any(hasattr(m, "weight_mask") or hasattr(m, "weight_orig") for m in model.modules())
    assert all(isinstance(w, nn.Parameter) for w in prunable_weights(model))
    assert sparsity(model) == pytest.approx(0.7, abs=1e-2)


def test_pruning_rejects_bad_arguments():
    with pytest.raises(ValueError, match="amount"):
        magnitude_prune(small_cnn(), 1.5)
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune(small_cnn(), 0.5, scope="channel")
    with pytest.raises(ValueError, match="no"):
        magnitude_prune(nn.Sequential(nn.ReLU()), 0.5)


# --------------------------------------------------------------------------------------------
# low-rank factorization
# --------------------------------------------------------------------------------------------
def test_full_rank_factorization_reproduces_the_outputs():
    model = small_cnn()
    full = low_rank_factorize(model, 1.0, only_if_smaller=False)
    assert isinstance(full[0], nn.Sequential) and isinstance(full[7], nn.Sequential)
    x = torch.randn(4, 3, 12, 12)
    assert_close(full(x), model(x), atol=1e-5, rtol=1e-4)


def test_rank_r_linear_weight_is_the_numpy_truncated_svd():
    torch.manual_seed(1)
    layer = nn.Linear(12, 9)
    r = 4
    thin = factorized_linear(layer, r)
    w = layer.weight.detach().double().numpy()
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    expected = (u[:, :r] * s[:r]) @ vt[:r]
    product = (thin[1].weight @ thin[0].weight).detach().double().numpy()
    np.testing.assert_allclose(product, expected, atol=1e-5)
    assert_close(thin[1].bias, layer.bias)


def test_rank_r_conv_kernel_is_the_numpy_truncated_svd_of_the_flattened_filters():
    torch.manual_seed(2)
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=1)
    r = 3
    thin = factorized_conv2d(conv, r)
    w = conv.weight.detach().double().numpy().reshape(7, -1)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    expected = (u[:, :r] * s[:r]) @ vt[:r]
    a = thin[1].weight.detach().double().numpy().reshape(7, r)
    b = thin[0].weight.detach().double().numpy().reshape(r, -1)
    np.testing.assert_allclose(a @ b, expected, atol=1e-5)
    # and the two convolutions compute the convolution with the rank-r kernel
    x = torch.randn(2, 5, 9, 9)
    low = torch.from_numpy(expected).float().reshape(conv.weight.shape)
    want = nn.functional.conv2d(x, low, conv.bias, stride=2, padding=1)
    assert_close(thin(x), want, atol=1e-5, rtol=1e-4)


def test_parameter_counts_after_factorization_by_hand():
    model = small_mlp()  # Linear(20, 64), Linear(64, 64), Linear(64, 4)
    half = low_rank_factorize(model, 0.5)
    # ranks: ceil(0.5 * min) = 10, 32, 2; weights r * (in + out), biases unchanged
    weights = 10 * (20 + 64) + 32 * (64 + 64) + 2 * (64 + 4)
    biases = 64 + 64 + 4
    assert count_parameters(half) == weights + biases
    # a layer whose factorization would be larger is left alone by default
    # rho = 0.6: ranks 12, 39, 3; 12 * 84 < 20 * 64, 39 * 128 > 64 * 64, 3 * 68 < 64 * 4
    kept = low_rank_factorize(model, 0.6)
    assert isinstance(kept[0], nn.Sequential) and isinstance(kept[4], nn.Sequential)
    assert isinstance(kept[2], nn.Linear)


def test_conv_parameter_count_after_factorization_by_hand():
    conv = nn.Sequential(nn.Conv2d(16, 32, 3))
    thin = low_rank_factorize(conv, 0.25)  # r = ceil(0.25 * min(32, 144)) = 8
    assert count_parameters(thin) == 8 * (16 * 9) + 8 * 32 + 32


def test_factorization_rejects_bad_rank_fraction():
    with pytest.raises(ValueError, match="rank_fraction"):
        low_rank_factorize(small_mlp(), 0.0)


# --------------------------------------------------------------------------------------------
# quantization and measuring
# --------------------------------------------------------------------------------------------
def test_dynamic_int8_is_close_to_float_and_smaller():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    quantized = dynamic_int8(model)
    x = torch.randn(16, 256)
    with torch.no_grad():
        ref, out = model(x), quantized(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert stored_size_mb(model) / stored_size_mb(quantized) > 3
    assert isinstance(model[0], nn.Linear), "the input model must not change"


def test_dynamic_int8_leaves_convolutions_in_float():
    quantized = dynamic_int8(small_cnn())
    assert type(quantized[0]) is nn.Conv2d
    assert type(quantized[7]) is not nn.Linear


def test_static_int8_quantizes_a_cnn():
    model = small_cnn()
    torch.manual_seed(4)
    calibration = [torch.randn(16, 3, 12, 12) for _ in range(4)]
    quantized = static_int8(model, calibration)
    x = calibration[0]
    with torch.no_grad():
        ref, out = model(x), quantized(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 1e-3
    assert stored_size_mb(quantized) < stored_size_mb(model)


def test_static_int8_needs_calibration_data():
    with pytest.raises(ValueError, match="calibration"):
        static_int8(small_cnn(), [])


def test_measure_latency_reports_quartiles_and_restores_state():
    model = build_model("cnn_micro", num_classes=10).train()
    threads = torch.get_num_threads()
    result = measure_latency(model, (2, 3, 32, 32), runs=5, warmup=1, threads=1)
    assert result["min_ms"] <= result["q1_ms"] <= result["median_ms"] <= result["q3_ms"]
    assert result["per_sample_ms"] == pytest.approx(result["median_ms"] / 2)
    assert result["threads"] == 1 and result["batch"] == 2 and result["runs"] == 5
    assert torch.get_num_threads() == threads and model.training
