"""Distillation methods behind one contract (:class:`Distiller`), registered by name.

Every module of this package that defines a method registers it on import; they are all
imported here, so ``build_distiller`` and ``kdtutor methods`` see every method.
"""

import importlib
import pkgutil

from .base import Distiller, HParams, TeacherOutputs
from .feature_base import FeatureDistiller, FeatureHParams
from .hparams import LossWeights
from .registry import build_distiller, get_method, list_methods, register_method
from .steps import OptimizerGroup, Steps

_INFRASTRUCTURE = {"base", "feature_base", "hparams", "registry", "steps"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Distiller",
    "FeatureDistiller",
    "FeatureHParams",
    "HParams",
    "LossWeights",
    "OptimizerGroup",
    "Steps",
    "TeacherOutputs",
    "build_distiller",
    "get_method",
    "list_methods",
    "register_method",
]
