"""The teachers of chapter 8 (applications): one per task, trained on procedural data.

Eight recipes (design note ``docs/design/applications.md``, sections 2.6 and 4), all in the
zoo's folder ``applications`` with its own ``manifest.json`` (read only by chapter 8):

==================  ==============  ==================  ====================================
teacher             model           task                data (:func:`~kdtutor.data.task_splits.task_split`)
==================  ==============  ==================  ====================================
``scenes_fcos``     ``fcos_t``      ``detection``       4,000 / 2,000 64-px scenes
``scenes_lraspp``   ``lraspp_t``    ``segmentation``    the same scenes, class masks
``scenes_depth``    ``depth_t``     ``depth``           the same scenes, depth maps
``scenes_pose``     ``pose_t``      ``keypoints``       32-px crops of every object (~8,000)
``faces_cnn``       ``facenet_t``   ``retrieval``       20,000 faces of 1,000 identities;
                                                        2,000 of 200 unseen ones
``shapes_edsr``     ``edsr_t``      ``superres``        4,000 / 2,000 x4 pairs (LR 16 px)
``clips_c3d``       ``c3d_t``       ``classification``  8,000 / 2,000 8-frame clips
``roads_lane``      ``lanenet_t``   ``lanes``           4,000 / 2,000 48 x 128 roads
==================  ==============  ==================  ====================================

**Recipes** (design note 4.2 and 4.3): the book's optimiser (SGD, momentum 0.9, lr 0.05,
weight decay 5e-4, cosine to zero) at each task's student batch, for the epochs the budget
gives the teachers (40 for the scene tasks and the lanes, 30 for faces and clips, 50 for
super-resolution); detection SGD lr 0.01 at batch 16 with gradients clipped to norm 35 (FGD's
FCOS config, as the design note quotes it; not re-read here); super-resolution Adam lr 1e-3,
cosine, no weight decay (ours: FAKD's script trains 200 epochs at 1e-4 on 192-px patches).
No augmentation (procedural data is plentiful, and every teacher output stays cacheable).
Every score is the task's primary metric on the test split, the last epoch's.

**How a teacher of another task trains.** ``kdtutor.zoo.train_teacher`` trains whatever the
provider's ``build`` returns with ``fit``, and ``fit`` trains a plain network with
``scratch`` (a cross entropy), which fits classification only. So :func:`build` returns a
:class:`TeacherTraining`: a :class:`~kdtutor.methods.Distiller` around the network that
trains it with its task's supervised baseline (the losses the chapter's students train
with alone): ``det_scratch`` (FCOS's own losses), ``seg_scratch``, ``depth_scratch``,
``pose_scratch``, ``face_scratch`` (a normalised softmax, NormFace ``s = 16``),
``sr_scratch`` (L1), ``scratch`` (clips) and ``lane_scratch``. Its state dict *is* the
network's (same keys), so the weights file is the network's, and its ``eval()`` returns the
network: ``zoo._load_weights`` (``model.load_state_dict(...)``, then ``return
model.eval()``) and so :func:`~kdtutor.zoo.load_teacher` give the bare network, never the
wrapper. This leans on that line of ``zoo.py`` (a test pins it); a provider hook
``trainer(recipe, model)`` called by ``train_teacher`` would make the wrapper unnecessary.

**The face teacher** is ``facenet_t`` built *with* its cosine head (``CosineHead(128, 1000,
s=16)``, a module of the network that its ``forward`` never calls). It trains with
``face_scratch``'s normalised softmax, whose head is replaced by the network's own, so the
head that trains is the one saved with the network (``teacher.head``): what the face
distillers read for the teacher's identity logits. Its forward gives the L2-normalised
embedding, which the ``retrieval`` task scores on the 200 unseen test identities.

**Normalisation.** Each network holds the train split's per-channel statistics
(:func:`~kdtutor.data.task_splits.split_stats`, the first 2,000 inputs) in its fixed
``Normalize``; the faces come standardised already (an ``ArrayDataset``), so theirs is the
identity. The statistics are buffers in the state dict: a loaded teacher normalises its own
inputs.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..methods.base import Distiller
from ..methods.hparams import HParams
from ..models.trained_on import TrainedOn
from ..zoo import ZooRecipe

__all__ = [
    "BASELINES",
    "FOLDER",
    "RECIPES",
    "TeacherTraining",
    "build",
    "datasets",
    "input_shape",
    "output_count",
    "trained_on",
]

FOLDER = "applications"
"""The zoo's subfolder of these teachers (with its own ``manifest.json``)."""

_PROVIDER = "kdtutor.zoo_recipes.applications"

BASELINES: dict[str, str] = {
    "detection": "det_scratch",
    "segmentation": "seg_scratch",
    "depth": "depth_scratch",
    "keypoints": "pose_scratch",
    "retrieval": "face_scratch",
    "superres": "sr_scratch",
    "classification": "scratch",
    "lanes": "lane_scratch",
}
"""The method a teacher of each task trains with (its supervised baseline; detection:
FCOS's own losses, ``det_scratch``)."""

_BOOK: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
}


def _recipe(
    name: str, model: str, dataset: str, task: str, description: str, **train: Any
) -> ZooRecipe:
    return ZooRecipe(
        name=name,
        model=model,
        dataset=dataset,
        description=description,
        train={**_BOOK, **train},
        task=task,
        folder=FOLDER,
        provider=_PROVIDER,
    )


RECIPES: dict[str, ZooRecipe] = {
    r.name: r
    for r in [
        _recipe(
            "scenes_fcos", "fcos_t", "scenes", "detection",
            "an FCOS detector (encoder 32-128, FPN 64, 3 head convs; ~820k) on the 64-px "
            "scenes: chapter 8's detection teacher",
            epochs=40, batch_size=16, lr=0.01, max_grad_norm=35.0,
        ),
        _recipe(
            "scenes_lraspp", "lraspp_t", "scenes", "segmentation",
            "an LR-ASPP segmenter (encoder 32-128, inter 64; ~471k) on the 64-px scenes: "
            "chapter 8's segmentation teacher",
            epochs=40, batch_size=32,
        ),
        _recipe(
            "scenes_depth", "depth_t", "scenes", "depth",
            "a stride-2 encoder-decoder (32-128; ~473k) predicting log-depth on the 64-px "
            "scenes: chapter 8's depth teacher",
            epochs=40, batch_size=32,
        ),
        _recipe(
            "scenes_pose", "pose_t", "scenes", "keypoints",
            "a stride-2 encoder-decoder (32-128; ~473k) predicting 4 heatmaps at 16 x 16 on "
            "32-px crops of the scenes' objects: chapter 8's pose teacher",
            epochs=40, batch_size=32,
        ),
        _recipe(
            "faces_cnn", "facenet_t", "faces", "retrieval",
            "cnn_large's trunk with a 128-d embedding and its 1,000-identity cosine head "
            "(~1.33M), normalised softmax on the faces: chapter 8's face teacher",
            epochs=30, batch_size=64,
        ),
        _recipe(
            "shapes_edsr", "edsr_t", "sr", "superres",
            "an EDSR-style x4 network (48 features, 6 blocks; ~272k) on shapes images at "
            "64 px from their bicubic 16-px reductions: chapter 8's super-resolution teacher",
            epochs=50, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0,
        ),
        _recipe(
            "clips_c3d", "c3d_t", "clips", "classification",
            "a small 3D CNN (six Conv3d, 16-128; ~432k) on the 8-frame action clips: "
            "chapter 8's video teacher",
            epochs=30, batch_size=32,
        ),
        _recipe(
            "roads_lane", "lanenet_t", "roads", "lanes",
            "a stride-2 encoder-decoder (16-128; ~299k) with 5 slot logits and 4 existence "
            "logits on the 48 x 128 roads: chapter 8's lane teacher",
            epochs=40, batch_size=32,
        ),
    ]
}  # fmt: skip
"""The eight teachers of chapter 8, by name (found by :func:`kdtutor.zoo.get_recipe`)."""


def output_count(recipe: ZooRecipe) -> int:
    """What the teacher's ``num_classes`` is: classes with the background (detection,
    segmentation: 4), 1 (depth), keypoint slots (pose: 4), training identities (faces:
    1,000), image channels (super-resolution: 3), actions (clips: 10), background and lane
    slots (lanes: 5)."""
    from ..data.clips import ACTIONS
    from ..data.faces import FACE_SPLITS
    from ..data.roads import LANE_SLOTS
    from ..data.scenes import NUM_KEYPOINTS, SCENE_CLASSES

    counts = {
        "detection": len(SCENE_CLASSES),
        "segmentation": len(SCENE_CLASSES),
        "depth": 1,
        "keypoints": NUM_KEYPOINTS,
        "retrieval": FACE_SPLITS["train"][1],
        "superres": 3,
        "classification": len(ACTIONS),
        "lanes": 1 + len(LANE_SLOTS),
    }
    return counts[recipe.task]


def input_shape(recipe: ZooRecipe) -> tuple[int, ...]:
    """One input of the teacher: ``(3, 64, 64)`` scenes, ``(3, 32, 32)`` crops and faces,
    ``(3, 16, 16)`` LR images, ``(8, 3, 32, 32)`` clips, ``(3, 48, 128)`` roads."""
    shapes = {
        "detection": (3, 64, 64),
        "segmentation": (3, 64, 64),
        "depth": (3, 64, 64),
        "keypoints": (3, 32, 32),
        "retrieval": (3, 32, 32),
        "superres": (3, 16, 16),
        "classification": (8, 3, 32, 32),
        "lanes": (3, 48, 128),
    }
    return shapes[recipe.task]


class TeacherTraining(Distiller):
    """A zoo teacher in training: its network, trained with its task's supervised baseline.

    ``forward(x, y)`` is the baseline's (:data:`BASELINES`; detection: ``det_scratch``, FCOS's
    own losses ``{"classification", "bbox_regression", "bbox_ctrness"}``, outputs ``None``), so ``fit``
    trains it as any distiller. Two things make it stand in for the network in
    :func:`kdtutor.zoo.train_teacher`: :meth:`state_dict` and :meth:`load_state_dict` are
    the network's (no ``student.`` prefix: the weights file is the network's), and
    :meth:`eval` returns the network after switching every module to eval mode (the zoo loads
    weights into what ``build`` returns and hands back ``model.eval()``). Not a registered
    method: it exists for the zoo.

    Args:
        network: The teacher network (trained in place).
        task: Its task (a key of :data:`BASELINES`).

    Raises:
        KeyError: A task without a baseline.
    """

    name = "zoo_teacher"
    family = "baseline"
    paper = "the zoo's supervised training of a teacher (its task's baseline)"
    hparams_cls = HParams
    requires_teacher = False

    def __init__(self, network: nn.Module, task: str) -> None:
        from ..methods import build_distiller

        super().__init__(network)
        self.task = task
        options: dict[str, Any] = {}
        head = getattr(network, "head", None) if task == "retrieval" else None
        if head is not None:
            options = {"num_ids": head.num_classes, "s": head.s}
        self.method: Distiller = build_distiller(BASELINES[task], network, **options)
        if head is not None:  # train the network's own head: it ships with the teacher
            self.method.head = head

    def forward(self, x: Any, y: Any, index: Tensor | None = None) -> tuple[Any, dict[str, Tensor]]:
        """The baseline's outputs and losses on a batch (detection: ``(None, losses)``)."""
        return self.method(x, y, index)

    def bind_data(self, train_data: Any) -> None:
        self.method.bind_data(train_data)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.method.on_epoch_start(epoch, epochs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The network's state dict (what the zoo saves)."""
        return self.student.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load the network's state dict into the network."""
        return self.student.load_state_dict(state_dict, strict=strict, assign=assign)

    def eval(self) -> nn.Module:  # type: ignore[override]
        """Switch to eval mode and return the **network** (see the class docstring)."""
        super().eval()
        return self.student


def build(recipe: ZooRecipe) -> TeacherTraining:
    """The recipe's network, randomly initialised, in its :class:`TeacherTraining`.

    The network is ``build_model(recipe.model, num_classes=output_count(recipe), mean,
    std, **recipe.model_kwargs)`` with the train split's statistics
    (:func:`~kdtutor.data.task_splits.split_stats`); the face network keeps its cosine head.
    """
    import kdtutor.models.dense  # noqa: F401  (registers the networks)

    from ..data.task_splits import split_stats
    from ..models import build_model

    mean, std = split_stats(recipe.dataset, recipe.task)
    network = build_model(
        recipe.model, num_classes=output_count(recipe), mean=mean, std=std, **recipe.model_kwargs
    )
    return TeacherTraining(network, recipe.task)


def datasets(recipe: ZooRecipe) -> tuple[Any, Any]:
    """The recipe's ``(train, test)`` splits: ``task_split(recipe.dataset, recipe.task,
    split)`` at the default sizes (:data:`~kdtutor.data.task_splits.TASK_SIZES`)."""
    from ..data.task_splits import task_split

    return (
        task_split(recipe.dataset, recipe.task, "train"),
        task_split(recipe.dataset, recipe.task, "test"),
    )


def trained_on(recipe: ZooRecipe) -> TrainedOn:
    """``TrainedOn(dataset, output_count, input_shape)``: what ``fit``'s check compares with
    the run's data (for classification runs: the class count, and the dataset name and image
    shape where the data has them; the clips teacher passes on the clips' 10 actions)."""
    return TrainedOn(recipe.dataset, output_count(recipe), input_shape(recipe))
