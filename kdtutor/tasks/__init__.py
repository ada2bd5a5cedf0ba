"""Tasks: what a batch's targets are, how they collate and move, and how a task is scored.

Classification is the default; detection, segmentation and dense regression (depth,
keypoint heatmaps, super-resolution) follow torchvision's and torchmetrics' conventions, so
what a reader knows of those libraries carries over; retrieval scores embeddings by recall@k
and lanes by F1 of matched lanes. ``fit(..., task="detection")`` picks one by name; a dataset
may also name its task in a ``task`` attribute.

>>> from kdtutor.tasks import get_task, list_tasks
>>> list_tasks()  # doctest: +NORMALIZE_WHITESPACE
['classification', 'depth', 'detection', 'keypoints', 'lanes', 'regression', 'retrieval',
 'segmentation', 'superres']
>>> get_task("segmentation").primary
'miou'
"""

from .base import Task, get_task, list_tasks, move_to
from .classification import Classification
from .depth import Depth
from .detection import Detection
from .keypoints import Keypoints
from .lanes import Lanes
from .regression import Regression
from .retrieval import Retrieval
from .segmentation import Segmentation
from .superres import SuperResolution

__all__ = [
    "Classification",
    "Depth",
    "Detection",
    "Keypoints",
    "Lanes",
    "Regression",
    "Retrieval",
    "Segmentation",
    "SuperResolution",
    "Task",
    "get_task",
    "list_tasks",
    "move_to",
]
