r"""Quantization-aware training (QAT) with PyTorch's own FX tooling, and int8 conversion (CPU).

A fake-quantized network trains in floating point but rounds, on every forward pass, each
weight and each activation to the grid of a :math:`b`-bit integer format
(:class:`torch.ao.quantization.FakeQuantize`):

.. math::

    \hat r = S\,\big(\operatorname{clamp}(\operatorname{round}(r/S) + Z,\; q_{\min},\; q_{\max})
        - Z\big),

with the scale :math:`S` and zero point :math:`Z` taken from the observed range of
:math:`r` (a moving average of its min and max for activations, per output channel and
symmetric, :math:`Z = 0`, for weights). The backward pass treats the rounding as the identity
inside :math:`[q_{\min}, q_{\max}]` (the straight-through estimator, Bengio, Léonard, Courville
2013), so the float "shadow" weights keep learning (Jacob et al. 2018). After training,
:func:`convert_int8` replaces every fused layer by an int8 kernel.

This module uses torch's FX graph mode QAT (``prepare_qat_fx``, ``convert_fx``), which
torch 2.14.1 still ships while announcing its removal (a ``DeprecationWarning`` pointing to
``torchao``'s PT2E flow, not a dependency here). That notice, and the two ``UserWarning`` s the
same calls print about ``reduce_range`` and quantized tensor creation, are silenced only around
those calls (``compression._quiet_torch_ao``), nowhere else: any other warning still shows.

* 8 bits: torch's default QAT mapping for ``backend`` (``get_default_qat_qconfig_mapping``).
* 4 bits: the same machinery with 4-bit ranges: activations ``quint8`` in :math:`[0, 15]`
  (``MovingAverageMinMaxObserver``), weights ``qint8`` in :math:`[-8, 7]`, per channel and
  symmetric (``MovingAveragePerChannelMinMaxObserver``): 16 levels each. No quantizer is
  written; converted, such a model runs int8 kernels whose values take 16 levels, so it is no
  smaller or faster than int8: :func:`packed_size_mb` gives the size a 4-bit packing would have.

See design note ``docs/design/algorithms.md``, section 2.7.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from .compression import _quiet_torch_ao
from .config import ConfigError
from .errors import KDTutorError, UnknownNameError

__all__ = [
    "BACKENDS",
    "BITS",
    "convert_int8",
    "example_input",
    "fake_quantizers",
    "freeze",
    "packed_size_mb",
    "prepare_qat",
    "qconfig_mapping",
]

BITS: tuple[int, ...] = (4, 8)
"""The bit widths :func:`qconfig_mapping` offers."""
BACKENDS: tuple[str, ...] = ("x86", "fbgemm", "onednn", "qnnpack")
"""The CPU quantized engines of torch 2.14.1 (``torch.backends.quantized.supported_engines``)."""

_KEPT_ATTRIBUTES = ("num_classes", "in_channels", "image_size", "trained_on")


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or bits not in BITS:
        raise ConfigError(
            f"bits={bits!r} is not offered: use one of {BITS} (8: torch's default QAT mapping, "
            "4: 16-level FakeQuantize ranges)."
        )


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UnknownNameError(
            f"unknown quantized backend {backend!r}: use one of {BACKENDS} ('x86' on Intel/AMD "
            "CPUs, 'qnnpack' on ARM)."
        )


def qconfig_mapping(bits: int = 8, backend: str = "x86") -> Any:
    """The ``QConfigMapping`` that fake-quantizes weights and activations to ``bits`` bits.

    Args:
        bits: 8 (torch's ``get_default_qat_qconfig_mapping(backend)``: activations ``quint8``,
            weights ``qint8`` per channel, symmetric) or 4 (activations in :math:`[0, 15]`,
            weights in :math:`[-8, 7]` per channel, symmetric: 16 levels each).
        backend: the quantized engine the model will run on (:data:`BACKENDS`).

    Returns:
        A ``torch.ao.quantization.QConfigMapping`` for ``prepare_qat_fx``.
    """
    _check_bits(bits)
    _check_backend(backend)
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
        get_default_qat_qconfig_mapping,
    )

    with _quiet_torch_ao():
        mapping = get_default_qat_qconfig_mapping(backend)
        if bits == 8:
            return mapping
        qconfig = QConfig(
            activation=FakeQuantize.with_args(
                observer=MovingAverageMinMaxObserver,
                quant_min=0,
                quant_max=2**bits - 1,
                dtype=torch.quint8,
                qscheme=torch.per_tensor_affine,
            ),
            weight=FakeQuantize.with_args(
                observer=MovingAveragePerChannelMinMaxObserver,
                quant_min=-(2 ** (bits - 1)),
                quant_max=2 ** (bits - 1) - 1,
                dtype=torch.qint8,
                qscheme=torch.per_channel_symmetric,
            ),
        )
        return mapping.set_global(qconfig)


def example_input(model: nn.Module, image_size: int = 32, batch: int = 2) -> Tensor:
    """A random input batch ``(batch, C, image_size, image_size)`` for tracing ``model``,
    with ``C`` its first convolution's input channels (3 when it has none)."""
    from .models.summary import first_in_channels

    channels = first_in_channels(model) or getattr(model, "in_channels", None) or 3
    return torch.randn(batch, int(channels), image_size, image_size)


def prepare_qat(
    model: nn.Module,
    bits: int = 8,
    example: Tensor | None = None,
    *,
    backend: str = "x86",
) -> nn.Module:
    """A fake-quantized copy of ``model`` to train (``model`` itself is left unchanged).

    ``torch.fx`` traces a copy, fuses conv-BN(-ReLU) and linear-ReLU sequences into QAT modules
    (batch norm is folded into the convolution at every step, as Jacob et al. 2018 train it),
    and inserts a ``FakeQuantize`` after the input and each activation and before each weight
    (:func:`qconfig_mapping`). The copy is in training mode, on the CPU, and keeps the model's
    ``num_classes`` (and ``in_channels``, ``image_size``, ``trained_on``) attributes.

    Args:
        model: a float model traceable by ``torch.fx`` (no data-dependent control flow).
        bits: 8 or 4 (:data:`BITS`).
        example: an input batch for tracing (default: :func:`example_input` at 32 pixels).
        backend: the quantized engine (:data:`BACKENDS`).

    Returns:
        A ``torch.fx.GraphModule`` with fake quantization, in training mode.

    Raises:
        KDTutorError: when ``model`` is not an ``nn.Module``, or cannot be traced or run on
            ``example``.
    """
    if not isinstance(model, nn.Module):
        raise KDTutorError(
            f"prepare_qat needs an nn.Module, got {type(model).__name__}: build the student "
            "first, e.g. kdtutor.models.build_model('cnn_tiny')."
        )
    mapping = qconfig_mapping(bits, backend)
    float_model = copy.deepcopy(model).cpu().train()
    example = example_input(model) if example is None else example.detach().cpu()
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    try:
        with _quiet_torch_ao():
            prepared = prepare_qat_fx(float_model, mapping, (example,))
    except Exception as error:  # torch.fx raises several types for untraceable code
        raise KDTutorError(
            f"prepare_qat could not trace {type(model).__name__} with torch.fx "
            f"({type(error).__name__}: {error}). FX quantization needs a forward without "
            "data-dependent Python control flow; kdtutor's CNNs, ResNets and MLPs trace. Pass "
            "example= an input of the right shape if the default (3x32x32) is wrong."
        ) from error
    _observe_weights(prepared, example)
    for name in _KEPT_ATTRIBUTES:
        if hasattr(model, name):
            setattr(prepared, name, getattr(model, name))
    prepared.qat_bits = bits
    prepared.qat_backend = backend
    return prepared


def _observe_weights(prepared: nn.Module, example: Tensor) -> None:
    """Let the weight quantizers observe the weights once, nothing else changing.

    A per-channel observer holds empty ``min_val``/``max_val``/``scale`` buffers until its
    first forward, so a freshly prepared model's state has other shapes than a trained one's
    and a checkpoint could not be resumed into it. One eval-mode forward with only the weight
    observers on records the current weights' ranges: exactly what the first training step
    records again (a moving average of a value with itself is that value), while activation
    ranges and batch-norm statistics are left as they were.
    """
    quantizers = fake_quantizers(prepared)
    saved = {name: fq.observer_enabled.clone() for name, fq in quantizers.items()}
    training = prepared.training
    for name, fq in quantizers.items():
        if not name.endswith("weight_fake_quant"):
            fq.disable_observer()
    try:
        prepared.eval()
        with torch.no_grad():
            prepared(example)
    finally:
        for name, fq in quantizers.items():
            fq.observer_enabled.copy_(saved[name])
        prepared.train(training)


def fake_quantizers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``FakeQuantize`` in ``model``, by module path (weights: ``...weight_fake_quant``;
    activations: ``activation_post_process_i``)."""
    from torch.ao.quantization import FakeQuantizeBase

    return {n: m for n, m in model.named_modules() if isinstance(m, FakeQuantizeBase)}


def _check_prepared(model: nn.Module, what: str) -> None:
    if not fake_quantizers(model):
        raise KDTutorError(
            f"{what} needs a model made by kdtutor.qat.prepare_qat (it has no FakeQuantize "
            f"module); got a float {type(model).__name__}. Call prepare_qat(model, bits) first."
        )


def freeze(model: nn.Module, observers: bool = True, bn: bool = True) -> nn.Module:
    """Stop updating the quantization ranges and/or the batch-norm statistics, in place.

    Freezing the observers fixes each scale and zero point at their current values
    (``torch.ao.quantization.disable_observer``); freezing BN makes the fused conv-BN modules
    use their running statistics (``torch.ao.nn.intrinsic.qat.freeze_bn_stats``). Both are the
    usual last epochs of QAT (PyTorch's QAT recipe; Krishnamoorthi 2018). Returns ``model``.
    """
    _check_prepared(model, "freeze")
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats
    from torch.ao.quantization import disable_observer

    if observers:
        model.apply(disable_observer)
    if bn:
        model.apply(freeze_bn_stats)
    return model


def convert_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of a fake-quantized model (``convert_fx`` of a copy, in eval mode, CPU).

    Each fused layer becomes an int8 kernel with the scale and zero point its fake quantizers
    last held; inputs are quantized once and outputs dequantized, so the result still takes
    and returns float tensors. ``model`` is left unchanged.
    """
    _check_prepared(model, "convert_int8")
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared = copy.deepcopy(model).cpu().eval()
    with _quiet_torch_ao():
        converted = convert_fx(prepared)
    for name in _KEPT_ATTRIBUTES:
        if hasattr(model, name):
            setattr(converted, name, getattr(model, name))
    return converted.eval()


def packed_size_mb(model: nn.Module, bits: int) -> float:
    """Megabytes (2**20 bytes) of ``model``'s parameters stored at ``bits`` bits each:
    :math:`N\\,b / 8 / 2^{20}`, arithmetic only (torch has no 4-bit kernels on CPU)."""
    if bits <= 0:
        raise ConfigError(f"bits must be positive, got {bits}.")
    return sum(p.numel() for p in model.parameters()) * bits / 8 / 2**20
