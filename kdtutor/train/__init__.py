"""Training: one loop for every method, its configuration, evaluation, checkpoints, seeds.

* :mod:`~kdtutor.train.config`: :class:`TrainConfig` and the device-dependent :class:`Runtime`;
* :mod:`~kdtutor.train.optim`: one optimizer and schedule per optimizer group of a distiller;
* :mod:`~kdtutor.train.loop`: :func:`fit` and :class:`FitResult`;
* :mod:`~kdtutor.train.evaluation`: scoring every network a distiller exposes;
* :mod:`~kdtutor.train.checkpoints`: atomic checkpoints and bit-identical resume;
* :mod:`~kdtutor.train.seeds`: :func:`run_seeds` and mean +- std;
* :mod:`~kdtutor.train.sequence`: :func:`fit_sequence` for sequences of tasks (lifelong).
"""

from ..methods import OptimizerGroup, Steps
from .checkpoints import CHECKPOINT_FORMAT
from .config import Runtime, TrainConfig, lr_factor, resolve_device, resolve_runtime
from .evaluation import evaluate, evaluate_networks, predict_logits
from .loop import FitResult, fit
from .optim import make_optimizer, make_scheduler
from .seeds import SeedsResult, parse_seeds, run_seeds
from .sequence import SequenceResult, fit_sequence

__all__ = [
    "CHECKPOINT_FORMAT",
    "FitResult",
    "OptimizerGroup",
    "Runtime",
    "SeedsResult",
    "SequenceResult",
    "Steps",
    "TrainConfig",
    "evaluate",
    "evaluate_networks",
    "fit",
    "fit_sequence",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "parse_seeds",
    "predict_logits",
    "resolve_device",
    "resolve_runtime",
    "run_seeds",
]
