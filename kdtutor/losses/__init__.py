"""Pure loss functions, one family per file (no training loop inside)."""

from .response import dist_loss, dkd_loss, kd_loss, soft_cross_entropy

__all__ = ["dist_loss", "dkd_loss", "kd_loss", "soft_cross_entropy"]
