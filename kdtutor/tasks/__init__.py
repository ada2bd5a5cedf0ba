"""Tasks: what a batch's targets are, how they collate and move, and how a task is scored.

Classification is the default; detection, segmentation and dense regression (depth,
keypoint heatmaps, super-resolution) follow torchvision's and torchmetrics' conventions, so
what a reader knows of those libraries carries over. ``fit(..., task="detection")`` picks one
by name; a dataset may also name its task in a ``task`` attribute.

>>> from kdtutor.tasks import get_task, list_tasks
>>> list_tasks()
['classification', 'detection', 'regression', 'segmentation']
>>> get_task("segmentation").primary
'miou'
"""

from .base import Task, get_task, list_tasks, move_to
from .classification import Classification
from .detection import Detection
from .regression import Regression
from .segmentation import Segmentation

__all__ = [
    "Classification",
    "Detection",
    "Regression",
    "Segmentation",
    "Task",
    "get_task",
    "list_tasks",
    "move_to",
]
