"""Super-resolution: a super-resolved image against the high-resolution one, scored as SR
papers do.

Outputs and targets are RGB images ``(B, 3, H, W)`` in [0, 1]. EDSR's benchmark convention
(thstkdgus35/EDSR-PyTorch ``src/utility.py: quantize`` and ``calc_psnr``, read in copies of
the file; the book's SR tables follow it):

* the output is clamped to [0, 1] and rounded to the 256 levels of an 8-bit image
  (``quantize``, what saving the image as a PNG does);
* PSNR is taken on the luma channel Y of ITU-R BT.601 (:func:`rgb_to_y`: ``Y = (65.738 R +
  129.057 G + 25.064 B) / 256 + 16 / 255``, EDSR's coefficients, equal to MATLAB's
  ``rgb2ycbcr`` to 5 digits), after shaving ``scale`` pixels off every border
  (:func:`shave`), with a peak of 1;
* each image is scored and the scores are averaged over images.

Metrics, all per image and averaged: ``psnr_y`` (primary) and ``psnr`` (RGB, same shave) from
torchmetrics' ``PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))`` (the ``dim`` makes it
the mean of per-image PSNRs, where the :class:`~kdtutor.tasks.Regression` task's default
pools the squared errors of the whole split first), and ``ssim_y`` from torchmetrics'
``StructuralSimilarityIndexMeasure(data_range=1.0)`` (Gaussian window 11, sigma 1.5) on the
shaved Y. PSNR in dB, SSIM a fraction.

>>> import torch
>>> from kdtutor.tasks.superres import rgb_to_y
>>> rgb_to_y(torch.ones(1, 3, 1, 1)).flatten()  # white: Y = 235 / 255
tensor([0.9216])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ShapeMismatchError
from .base import Task, register_task

__all__ = ["SuperResolution", "quantize", "rgb_to_y", "shave"]

_Y_COEFFS = (65.738 / 256, 129.057 / 256, 25.064 / 256)


def rgb_to_y(images: Tensor) -> Tensor:
    """The BT.601 luma of RGB images in [0, 1]: ``(65.738 R + 129.057 G + 25.064 B) / 256 +
    16 / 255``, in [16/255, 235/255] (EDSR's ``calc_psnr`` coefficients, applied there to
    the difference of two images, where the offset cancels).

    Args:
        images: ``(B, 3, H, W)``.

    Returns:
        ``(B, 1, H, W)``.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ShapeMismatchError(f"expected RGB images (B, 3, H, W), got {tuple(images.shape)}.")
    coeffs = images.new_tensor(_Y_COEFFS).reshape(1, 3, 1, 1)
    return (images * coeffs).sum(1, keepdim=True) + 16.0 / 255.0


def shave(images: Tensor, border: int) -> Tensor:
    """``images[..., border:-border, border:-border]`` (the whole image when ``border`` is 0):
    the frame SR benchmarks leave out, ``scale`` pixels wide in EDSR's ``calc_psnr``."""
    if border <= 0:
        return images
    return images[..., border:-border, border:-border]


def quantize(images: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to multiples of 1/255 (EDSR's ``utility.quantize`` with
    ``rgb_range = 1``)."""
    return images.clamp(0.0, 1.0).mul(255.0).round().div(255.0)


@register_task
class SuperResolution(Task):
    """Super-resolved images against high-resolution ones ``(B, 3, H, W)`` in [0, 1]:
    PSNR on Y (primary), SSIM on Y and PSNR on RGB, each per image after a ``scale``-pixel
    shave, averaged over images (EDSR's convention; torchmetrics computes each score, the
    Y conversion, the shave and the quantisation are written here).

    Args:
        scale: the upscaling factor, the width of the shaved border (4: x4 SR).
        quantize: round the outputs to 8-bit levels first, as EDSR does before scoring.
    """

    name = "superres"
    primary = "psnr_y"
    unit = " dB"
    short = "psnr_y"
    metric_names = ("psnr_y", "ssim_y", "psnr")

    def __init__(self, scale: int = 4, quantize: bool = True) -> None:
        self.scale = scale
        self.quantize = quantize

    def metrics(self) -> dict[str, Any]:
        from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

        metrics = {
            "psnr_y": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
            "ssim_y": StructuralSimilarityIndexMeasure(data_range=1.0),
            "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
        }
        for name in ("psnr_y", "psnr"):
            metrics[name].set_dtype(torch.float64)  # their states default to float32
        return metrics

    def update(self, metrics: dict[str, Any], outputs: Any, y: Any) -> None:
        pred = (outputs["out"] if isinstance(outputs, dict) else outputs).detach().double().cpu()
        target = y.double().cpu()
        if pred.shape != target.shape:
            raise ShapeMismatchError(
                f"super-resolved images {tuple(pred.shape)} do not match the high-resolution "
                f"targets {tuple(target.shape)}."
            )
        if self.quantize:
            pred = quantize(pred)
        pred_y, target_y = shave(rgb_to_y(pred), self.scale), shave(rgb_to_y(target), self.scale)
        metrics["psnr_y"].update(pred_y, target_y)
        metrics["ssim_y"].update(pred_y.float(), target_y.float())  # float64: 18x slower
        metrics["psnr"].update(shave(pred, self.scale), shave(target, self.scale))

    def compute(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {name: float(metric.compute()) for name, metric in metrics.items()}
