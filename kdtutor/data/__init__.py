"""Datasets (offline), batch transforms and a deterministic loader.

>>> from kdtutor.data import load_dataset, BatchLoader
>>> train = load_dataset("shapes", "train", size=200)
>>> loader = BatchLoader(train, batch_size=64, shuffle=True, seed=0, augment="crop_flip")
>>> batch = next(iter(loader.set_epoch(0)))
>>> tuple(batch.x.shape), batch.y.dtype
((64, 3, 32, 32), torch.int64)
"""

from .arrays import ArrayDataset, channel_stats
from .diskcache import cache_dir
from .loader import Batch, BatchLoader
from .real import data_root, digits, folder_dataset, mnist5k
from .registry import (
    DatasetInfo,
    clear_cache,
    dataset_info,
    list_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from .shapes import CLASSES as SHAPES_CLASSES
from .shapes import ShapesConfig, make_shapes, shapes_dataset
from .transforms import AUGMENTATIONS, BatchTransform, Identity, RandomCropFlip, build_augment

__all__ = [
    "AUGMENTATIONS",
    "SHAPES_CLASSES",
    "ArrayDataset",
    "Batch",
    "BatchLoader",
    "BatchTransform",
    "DatasetInfo",
    "Identity",
    "RandomCropFlip",
    "ShapesConfig",
    "build_augment",
    "cache_dir",
    "channel_stats",
    "clear_cache",
    "data_root",
    "dataset_info",
    "digits",
    "folder_dataset",
    "list_datasets",
    "load_dataset",
    "make_shapes",
    "mnist5k",
    "register_dataset",
    "shapes_dataset",
    "unregister_dataset",
]
