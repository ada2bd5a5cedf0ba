"""Compression beside distillation: magnitude pruning, int8 quantization, low-rank factorization.

The introduction chapter puts knowledge distillation next to the three other classic ways of
making a trained network cheaper, applied here to the *same* trained model so that their costs
can be measured side by side:

* :func:`magnitude_prune` zeroes the weights of smallest magnitude (Han et al. 2015);
* :func:`dynamic_int8` stores ``nn.Linear`` weights in 8-bit integers and quantizes the
  activations on the fly; :func:`static_int8` also quantizes convolutions, with activation
  ranges calibrated on data beforehand (Jacob et al. 2018);
* :func:`low_rank_factorize` replaces each weight matrix by a product of two thin ones from its
  truncated SVD (Denton et al. 2014).

Every function returns a modified *copy* and leaves its input untouched. The helpers
:func:`sparsity`, :func:`stored_size_mb` and :func:`measure_latency` measure what the
transformations change; parameters and FLOPs come from :func:`kdtutor.models.model_summary`.

The int8 functions use PyTorch's ``torch.ao.quantization`` (eager dynamic quantization and FX
graph-mode static quantization). PyTorch deprecates that namespace in favour of the separate
``torchao`` package; the deprecation warnings are silenced at the call sites below (only
there) and the kernels they run (fbgemm / x86 on CPU) are the ones ``torchao`` also lowers to.

References:
    Han, S., Pool, J., Tran, J., Dally, W. (2015). Learning both Weights and Connections for
    Efficient Neural Networks. NeurIPS.
    Jacob, B., Kligys, S., Chen, B., Zhu, M., Tang, M., Howard, A., Adam, H., Kalenichenko, D.
    (2018). Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
    Inference. CVPR.
    Denton, E., Zaremba, W., Bruna, J., LeCun, Y., Fergus, R. (2014). Exploiting Linear
    Structure Within Convolutional Networks for Efficient Evaluation. NeurIPS.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import statistics
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from .features import evaluating

__all__ = [
    "PRUNABLE",
    "dynamic_int8",
    "factorized_conv2d",
    "factorized_linear",
    "low_rank_factorize",
    "magnitude_prune",
    "make_permanent",
    "measure_latency",
    "sparsity",
    "static_int8",
    "stored_size_mb",
]

#: The layer types whose ``weight`` pruning and factorization act on.
PRUNABLE: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


# --------------------------------------------------------------------------------------------
# pruning
# --------------------------------------------------------------------------------------------
def _weighted_layers(
    model: nn.Module, layer_types: tuple[type[nn.Module], ...]
) -> list[tuple[str, nn.Module]]:
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, layer_types) and isinstance(getattr(module, "weight", None), Tensor)
    ]


def magnitude_prune(
    model: nn.Module,
    amount: float,
    *,
    scope: Literal["global", "layer"] = "global",
    layer_types: tuple[type[nn.Module], ...] = PRUNABLE,
    permanent: bool = True,
) -> nn.Module:
    r"""A copy of ``model`` whose smallest-magnitude weights are set to zero.

    Unstructured magnitude pruning (Han et al. 2015): a weight survives when its magnitude
    reaches a threshold :math:`\tau`,

    .. math::

        w' = w \cdot \mathbb{1}\left[\,|w| \ge \tau\,\right],

    where :math:`\tau` is chosen so that a fraction ``amount`` of the weights is removed:
    over all the layers' weights pooled together for ``scope="global"`` (so layers with many
    small weights lose more than others), or separately in each layer for ``scope="layer"``
    (every layer loses the same fraction). Han et al. set a threshold per layer from the
    standard deviation of its weights and then retrain the survivors; this function does only
    the pruning step, with :mod:`torch.nn.utils.prune` (``global_unstructured`` or
    ``l1_unstructured``), which removes exactly ``round(amount * n)`` weights.

    Only the ``weight`` of ``layer_types`` modules is pruned (biases and batch-norm parameters
    are left). With ``permanent=True`` the pruning masks are folded into the weights
    (:func:`torch.nn.utils.prune.remove`), leaving an ordinary model whose tensors are as large
    as before but contain zeros: the dense kernels run exactly as fast. With
    ``permanent=False`` the masks stay attached (``weight = weight_orig * weight_mask``), so that
    fine-tuning keeps the pruned weights at zero; fold them in afterwards with
    :func:`make_permanent`. Measure the result with :func:`sparsity`.

    Args:
        model: The trained model (left unchanged).
        amount: Fraction of weights to remove, in ``[0, 1]``.
        scope: ``"global"`` (one threshold for all layers) or ``"layer"`` (one per layer).
        layer_types: Module types whose ``weight`` is pruned.
        permanent: Fold the masks into the weights (default) or keep them attached.

    Returns:
        The pruned copy, in the training mode of ``model``.

    Example:
        >>> pruned = magnitude_prune(build_model("cnn_small"), 0.5)  # doctest: +SKIP
        >>> round(sparsity(pruned), 3)  # doctest: +SKIP
        0.5
    """
    if not 0.0 <= float(amount) <= 1.0:
        raise ValueError(f"amount must be a fraction in [0, 1], got {amount}.")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}.")
    pruned = copy.deepcopy(model)
    layers = _weighted_layers(pruned, layer_types)
    if not layers:
        names = ", ".join(t.__name__ for t in layer_types)
        raise ValueError(f"the model has no {names} layers with a weight to prune.")
    if scope == "global":
        prune.global_unstructured(
            [(module, "weight") for _, module in layers],
            pruning_method=prune.L1Unstructured,
            amount=float(amount),
        )
    else:
        for _, module in layers:
            prune.l1_unstructured(module, "weight", amount=float(amount))
    if permanent:
        for _, module in layers:
            prune.remove(module, "weight")
    return pruned


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every attached pruning mask into its weight, in place, and return ``model``.

    After ``magnitude_prune(..., permanent=False)`` and fine-tuning, this turns each
    ``weight_orig * weight_mask`` pair back into a plain ``weight`` parameter (zeros included)
    with :func:`torch.nn.utils.prune.remove`. Modules without masks are left alone.
    """
    for module in model.modules():
        masked = [
            name.removesuffix("_mask")
            for name, _ in module.named_buffers(recurse=False)
            if name.endswith("_mask")
        ]
        for name in masked:
            if hasattr(module, f"{name}_orig"):
                prune.remove(module, name)
    return model


def sparsity(model: nn.Module, layer_types: tuple[type[nn.Module], ...] = PRUNABLE) -> float:
    """Fraction of exactly-zero entries among the weights of the ``layer_types`` layers.

    Works on pruned models with or without their masks attached (it reads ``module.weight``,
    which is the masked tensor in both cases). Biases and normalisation layers are not counted.

    Args:
        model: Any model.
        layer_types: Module types whose ``weight`` is counted.

    Returns:
        Zeros divided by weights, in ``[0, 1]``.
    """
    zeros, total = 0, 0
    for _, module in _weighted_layers(model, layer_types):
        weight = module.weight
        zeros += int((weight == 0).sum())
        total += weight.numel()
    if total == 0:
        raise ValueError("the model has no layers of the given types with a weight.")
    return zeros / total


# --------------------------------------------------------------------------------------------
# quantization
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_torch_ao() -> Iterator[None]:
    """Silence the deprecation notices ``torch.ao.quantization`` prints on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.ao\.quantization is deprecated", category=Warning
        )
        warnings.filterwarnings(
            "ignore", message=r".*quantized tensor creation functions", category=UserWarning
        )
        warnings.filterwarnings(
            "ignore", message=r".*reduce_range will be deprecated", category=UserWarning
        )
        yield


def dynamic_int8(
    model: nn.Module, layer_types: tuple[type[nn.Module], ...] = (nn.Linear,)
) -> nn.Module:
    r"""A copy of ``model`` with dynamically quantized int8 ``nn.Linear`` layers (CPU only).

    Affine quantization (Jacob et al. 2018) maps a real value :math:`r` to an 8-bit integer
    :math:`q` through a scale :math:`S` and a zero point :math:`Z`:

    .. math::

        r \approx S\,(q - Z), \qquad q = \operatorname{clamp}\!\big(\operatorname{round}(r/S) + Z,\;
        q_{\min},\; q_{\max}\big).

    *Dynamic* quantization (:func:`torch.ao.quantization.quantize_dynamic`) converts the weights
    once (int8, per tensor), and at every call computes :math:`S, Z` of the incoming
    activations from their observed min and max, multiplies in integer arithmetic and returns
    float outputs. It needs no calibration data, but only layer types with a dynamic kernel are
    converted: ``nn.Linear`` (and recurrent layers), **not** convolutions. A CNN such as
    ``cnn_large``, whose parameters sit almost all in convolutions, is therefore barely changed
    (only its classifier): quantizing convolutions needs *static* quantization
    (:func:`static_int8`), in which activation ranges are fixed in advance from calibration
    data, batch norm is folded into the convolutions and tensors stay in int8 between layers.

    The quantized model runs on the CPU only, and its weights no longer appear in
    ``parameters()``: measure its size with :func:`stored_size_mb`.

    Args:
        model: A float model (left unchanged).
        layer_types: Module types to quantize; only types with a dynamic int8 kernel work.

    Returns:
        The quantized copy, in eval mode, on the CPU.
    """
    from torch.ao.quantization import quantize_dynamic

    float_model = copy.deepcopy(model).cpu().eval()
    with _quiet_torch_ao():
        return quantize_dynamic(float_model, set(layer_types), dtype=torch.qint8)


def static_int8(
    model: nn.Module,
    calibration: Iterable[Tensor],
    *,
    example_input: Tensor | None = None,
    backend: str = "x86",
) -> nn.Module:
    r"""A copy of ``model`` quantized to int8 after training, convolutions included (CPU only).

    Static post-training quantization with PyTorch's FX graph mode (``prepare_fx`` /
    ``convert_fx``), following Jacob et al. 2018's integer-only inference:

    1. the model is traced, and conv-BN-ReLU sequences are fused (batch norm folded into the
       convolution's weight and bias);
    2. observers are inserted and the model is run on the ``calibration`` batches, recording
       each activation's range, from which its scale :math:`S` and zero point :math:`Z` are
       fixed (:math:`r \approx S(q - Z)`, see :func:`dynamic_int8`); weights are quantized per
       output channel;
    3. every layer is replaced by an int8 kernel, with a single quantize at the input and a
       dequantize at the output, so the model still takes and returns float tensors.

    The model must be traceable by ``torch.fx`` (no data-dependent Python control flow), which
    kdtutor's CNNs and ResNets are. A few hundred calibration images are usually enough; they
    need no labels. The kernels depend on ``backend``, which is set globally
    (``torch.backends.quantized.engine``): ``"x86"`` (fbgemm and onednn) on Intel/AMD CPUs,
    ``"qnnpack"`` on ARM.

    Args:
        model: A float model in eval mode semantics (left unchanged).
        calibration: Batches of inputs (float tensors, normalised as in training).
        example_input: An input for tracing (default: the first calibration batch).
        backend: The quantized engine whose default configuration and kernels to use.

    Returns:
        The quantized copy, on the CPU.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if backend not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"quantized engine {backend!r} is not available here; this PyTorch supports "
            f"{torch.backends.quantized.supported_engines}."
        )
    torch.backends.quantized.engine = backend
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError("static_int8 needs at least one calibration batch of inputs.")
    example = (example_input if example_input is not None else first).cpu()
    float_model = copy.deepcopy(model).cpu().eval()
    with _quiet_torch_ao():
        prepared = prepare_fx(float_model, get_default_qconfig_mapping(backend), (example,))
        with torch.inference_mode():
            prepared(first.cpu())
            for batch in batches:
                prepared(batch.cpu())
        return convert_fx(prepared)


# --------------------------------------------------------------------------------------------
# low-rank factorization
# --------------------------------------------------------------------------------------------
def _rank(rank_fraction: float, rows: int, cols: int) -> int:
    return max(1, min(rows, cols, math.ceil(rank_fraction * min(rows, cols))))


def _svd_factors(matrix: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``A`` (rows x r) and ``B`` (r x cols) with ``A @ B`` the rank-r truncated SVD of ``matrix``."""
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    a = u[:, :rank] * root
    b = root[:, None] * vh[:rank]
    return a.to(matrix.dtype), b.to(matrix.dtype)


def factorized_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    r"""Two thin linear layers whose product is the rank-``rank`` truncated SVD of ``layer``.

    With :math:`W = U \Sigma V^\top` (``out x in``) and :math:`U_r, \Sigma_r, V_r` its ``rank``
    leading singular triplets, :math:`W \approx (U_r\Sigma_r^{1/2})(\Sigma_r^{1/2}V_r^\top)`,
    the best rank-r approximation in Frobenius norm (Eckart-Young), used by Denton et al. 2014
    for fully connected layers. The result is ``Linear(in, r, bias=False)`` followed by
    ``Linear(r, out)`` (with the original bias): :math:`r(\text{in} + \text{out})` weights
    instead of :math:`\text{in}\cdot\text{out}`.
    """
    a, b = _svd_factors(layer.weight, rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(b)
        second.weight.copy_(a)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device)


def factorized_conv2d(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    r"""A ``k x k`` convolution to ``rank`` channels, then a ``1 x 1`` one, from a truncated SVD.

    The kernel :math:`K` (``C_out x C_in x k_h x k_w``) is reshaped to the matrix
    :math:`W = \operatorname{reshape}(K, C_{out}, C_{in} k_h k_w)` (one row per filter) and
    factorized as in :func:`factorized_linear`, :math:`W \approx A B` with :math:`A` of shape
    ``C_out x r`` and :math:`B` of shape ``r x C_in k_h k_w``. :math:`B` reshaped to
    ``r x C_in x k_h x k_w`` is a convolution with the original stride, padding and dilation
    onto ``r`` channels (``r`` basis filters); :math:`A` is a ``1 x 1`` convolution that mixes
    them into the ``C_out`` outputs and carries the bias. Weights:
    :math:`r(C_{in}k_hk_w + C_{out})` instead of :math:`C_{out}C_{in}k_hk_w`. This is the
    simplest of the linear-structure approximations Denton et al. 2014 study (their SVD of
    flattened filters); grouped convolutions are not supported.
    """
    if layer.groups != 1:
        raise ValueError("factorized_conv2d supports groups=1 convolutions only.")
    if layer.padding_mode != "zeros":
        raise ValueError("factorized_conv2d supports padding_mode='zeros' only.")
    out_channels, in_channels, kh, kw = layer.weight.shape
    a, b = _svd_factors(layer.weight.reshape(out_channels, -1), rank)
    first = nn.Conv2d(
        in_channels,
        rank,
        (kh, kw),
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        bias=False,
    )
    second = nn.Conv2d(rank, out_channels, 1, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(b.reshape(rank, in_channels, kh, kw))
        second.weight.copy_(a.reshape(out_channels, rank, 1, 1))
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device)


def _factorized_weights(layer: nn.Module, rank: int) -> int:
    rows = layer.weight.shape[0]
    cols = layer.weight[0].numel()
    return rank * (rows + cols)


def low_rank_factorize(
    model: nn.Module,
    rank_fraction: float,
    *,
    layer_types: tuple[type[nn.Module], ...] = PRUNABLE,
    only_if_smaller: bool = True,
) -> nn.Module:
    r"""A copy of ``model`` with each ``nn.Linear`` / ``nn.Conv2d`` replaced by two thin layers.

    Low-rank factorization after Denton et al. 2014: each weight matrix :math:`W`
    (``m x n``; a convolution's kernel flattened to one row per filter) is replaced by its
    truncated SVD of rank

    .. math::

        r = \max\!\big(1, \lceil \rho \min(m, n) \rceil\big), \qquad
        W \approx (U_r \Sigma_r^{1/2})(\Sigma_r^{1/2} V_r^\top),

    with :math:`\rho` = ``rank_fraction``, implemented as two layers
    (:func:`factorized_linear`, :func:`factorized_conv2d`). The layer's weights drop from
    :math:`mn` to :math:`r(m + n)`, and so do its multiply-adds; the approximation error is
    :math:`\|W - W_r\|_F^2 = \sum_{i > r}\sigma_i^2`. With ``only_if_smaller`` (default) a
    layer is left as it is when its factorized form would not have fewer weights (e.g. a
    narrow first convolution at a high rank); ``rank_fraction=1`` with ``only_if_smaller=False``
    reproduces the model's outputs up to rounding. Grouped convolutions are skipped.

    Args:
        model: The trained model (left unchanged).
        rank_fraction: :math:`\rho \in (0, 1]`, the kept fraction of each layer's full rank.
        layer_types: Module types to factorize (``nn.Linear`` and/or ``nn.Conv2d``).
        only_if_smaller: Skip layers where factorizing would not reduce the weight count.

    Returns:
        The factorized copy (fine-tune it to recover accuracy lost at low ranks).
    """
    if not 0.0 < float(rank_fraction) <= 1.0:
        raise ValueError(f"rank_fraction must be in (0, 1], got {rank_fraction}.")
    factorized = copy.deepcopy(model)
    replacements: list[tuple[str, nn.Module]] = []
    for name, module in _weighted_layers(factorized, layer_types):
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"):
            continue
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        rows, cols = module.weight.shape[0], module.weight[0].numel()
        rank = _rank(float(rank_fraction), rows, cols)
        if only_if_smaller and _factorized_weights(module, rank) >= rows * cols:
            continue
        new = (
            factorized_linear(module, rank)
            if isinstance(module, nn.Linear)
            else factorized_conv2d(module, rank)
        )
        new.train(module.training)
        replacements.append((name, new))
    for name, new in replacements:
        parent_name, _, child = name.rpartition(".")
        parent = factorized.get_submodule(parent_name) if parent_name else factorized
        setattr(parent, child, new)
    return factorized


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------
def stored_size_mb(model: nn.Module) -> float:
    """Megabytes (2**20 bytes) of ``model.state_dict()`` as written by ``torch.save``.

    Unlike ``model_summary(...).size_mb``, which adds up ``parameters()`` and ``buffers()``,
    this counts what a quantized model actually stores (its packed int8 weights are neither),
    plus a small serialization overhead. A pruned model stores as many bytes as before: zeros
    take the same room as any other float unless a sparse format is used.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 2**20


@contextlib.contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 32, 32),
    runs: int = 50,
    *,
    warmup: int = 5,
    threads: int | None = None,
) -> dict[str, Any]:
    """Wall time of an eval forward pass on the CPU: median and spread over ``runs`` repeats.

    :func:`kdtutor.models.model_summary` records one median latency beside parameters and
    FLOPs; this function adds what comparisons on a shared machine need: a fixed thread count,
    the spread (interquartile range) and the time per sample. The input is a batch of standard
    normal values of ``input_shape`` (batch first); the model runs under
    ``torch.inference_mode`` in eval mode (its training mode is restored afterwards).

    Args:
        model: The model (float or quantized), on the CPU.
        input_shape: Shape of the input batch, e.g. ``(64, 3, 32, 32)``.
        runs: Timed forward passes.
        warmup: Untimed passes before timing (allocations, kernel selection, caches).
        threads: Intra-op threads to use (``torch.set_num_threads``), restored afterwards;
            ``None`` keeps the current setting.

    Returns:
        A dict with ``median_ms``, ``q1_ms``, ``q3_ms`` (quartiles), ``min_ms`` (the fastest
        run: the least disturbed by other processes, so the steadiest for comparisons on a
        busy machine), ``per_sample_ms`` (median divided by the batch size), ``batch``,
        ``threads`` and ``runs``.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}.")
    shape = tuple(int(s) for s in input_shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    times: list[float] = []
    with evaluating(model), _num_threads(threads), torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
        used_threads = torch.get_num_threads()
    median = statistics.median(times)
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4)
    else:
        q1 = q3 = median
    return {
        "median_ms": median,
        "q1_ms": q1,
        "q3_ms": q3,
        "min_ms": min(times),
        "per_sample_ms": median / shape[0],
        "batch": shape[0],
        "threads": used_threads,
        "runs": runs,
    }
