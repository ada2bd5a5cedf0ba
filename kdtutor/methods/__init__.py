"""Distillation methods behind one contract (:class:`Distiller`), registered by name."""

from . import dist, dkd, kd, scratch  # noqa: F401  (registers the methods)
from .base import Distiller, HParams, TeacherOutputs
from .registry import build_distiller, get_method, list_methods, register_method

__all__ = [
    "Distiller",
    "HParams",
    "TeacherOutputs",
    "build_distiller",
    "get_method",
    "list_methods",
    "register_method",
]
