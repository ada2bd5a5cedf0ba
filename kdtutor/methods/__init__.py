"""Distillation methods behind one contract (:class:`Distiller`), registered by name.

Every method lives in the module of its name (``kdtutor/methods/kd.py`` registers ``"kd"``)
and is imported the first time it is asked for (:func:`get_method`, :func:`build_distiller`);
:func:`list_methods` and ``kdtutor methods`` import them all.
"""

from .base import Distiller, HParams, TeacherOutputs
from .feature_base import FeatureDistiller, FeatureHParams
from .hparams import LossWeights
from .registry import build_distiller, get_method, list_methods, register_method
from .steps import OptimizerGroup, Steps

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
