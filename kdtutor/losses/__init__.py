"""Pure loss functions, one family per file (no training loop inside)."""

from .response import kd_loss, soft_cross_entropy

__all__ = ["kd_loss", "soft_cross_entropy"]
