"""Pure loss functions, one family per file (no training loop inside)."""

from .relation import (
    cc_correlation,
    cc_loss,
    crd_nce_from_scores,
    crd_nce_loss,
    irg_edges,
    irg_losses,
    momentum_update,
    pairwise_distances,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    sp_loss,
)
from .response import dist_loss, dkd_loss, kd_loss, soft_cross_entropy

__all__ = [
    "cc_correlation",
    "cc_loss",
    "crd_nce_from_scores",
    "crd_nce_loss",
    "dist_loss",
    "dkd_loss",
    "irg_edges",
    "irg_losses",
    "kd_loss",
    "momentum_update",
    "pairwise_distances",
    "pkt_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "soft_cross_entropy",
    "sp_loss",
]
