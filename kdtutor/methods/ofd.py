r"""OFD: a comprehensive overhaul of feature distillation (Heo, Kim, Yun, Park, Kwak, Choi, 2019).

The student's pre-ReLU stage features, mapped by a 1x1 conv + BN connector, are pulled
towards the teacher's pre-ReLU features through the *margin ReLU* :math:`\max(t, m_c)` and the
partial L2 distance of :func:`~kdtutor.losses.feature.ofd_loss`. The per-channel margin
:math:`m_c = \mathbb{E}[t_c \mid t_c < 0]` is computed once, when the distiller is built:

* analytically (:func:`~kdtutor.losses.feature.ofd_margin`) from the batch norm that produces
  the teacher's pre-activation, as the authors' code does. That batch norm is found by running
  the teacher once: the last ``BatchNorm1d/2d`` that runs, inside the parent module of the
  hooked module, before the hooked module gets its input, and that has the feature's number
  of channels. In a ResNet block the pre-activation is ``bn2(...) + shortcut``, so the margin
  then describes ``bn2`` alone, as in the authors' code (``get_bn_before_relu``);
* otherwise empirically (:func:`~kdtutor.losses.feature.negative_mean`) from the teacher's
  features on the first ``margin_samples`` training images, when the trainer binds the data
  (or, without a trainer, from the first training batch).

:attr:`OFD.margin_sources` says which one each layer used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import non_negative, positive
from ..features import INPUT_SUFFIX, evaluating, probe_features
from ..losses.feature import negative_mean, ofd_loss, ofd_margin
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["OFD", "OFDHParams", "find_bn_before"]


@dataclass(frozen=True)
class OFDHParams(FeatureHParams):
    """Defaults: mdistiller's CIFAR-100 OFD (``CE_WEIGHT`` 1, ``FEAT_WEIGHT`` 0.001, 1x1 conv +
    BN connectors), which is the authors' CIFAR code: the distillation sum divided by the batch
    size and by 1000, layer :math:`i` of :math:`n` down-weighted by :math:`2^{n-i-1}`.
    ``margin_samples``: training images used to estimate margins empirically (only for
    teachers without a batch norm before the hooked ReLU)."""

    connector: str = "conv"
    beta: float = 1e-3
    margin_samples: int = 256

    def validate(self) -> None:
        super().validate()
        non_negative("beta", self.beta, "ofd")
        positive("margin_samples", self.margin_samples, "ofd")


def find_bn_before(
    model: nn.Module, path: str, input_shape: tuple[int, ...]
) -> tuple[str, nn.modules.batchnorm._BatchNorm] | None:
    """The batch norm whose output feeds the feature at ``path`` (see the module docstring).

    Runs ``model`` once in eval mode on zeros of ``input_shape``; returns ``(name, module)``
    of the last batch norm that ran inside the parent of the hooked module before the hooked
    module's input (``path`` ends in ``":input"``) or output was produced, or ``None``.
    """
    name = path[: -len(INPUT_SUFFIX)] if path.endswith(INPUT_SUFFIX) else path
    target = model.get_submodule(name)
    parent = name.rpartition(".")[0]
    scope = model.get_submodule(parent) if parent else model
    names = {id(m): f"{parent}.{n}" if parent else n for n, m in scope.named_modules()}
    state: dict[str, nn.modules.batchnorm._BatchNorm | None] = {"last": None, "found": None}

    def seen_bn(module: nn.Module, args: object, output: object) -> None:
        state["last"] = module  # type: ignore[assignment]

    def reached(*_: object) -> None:
        if state["found"] is None:
            state["found"] = state["last"]

    handles = [
        m.register_forward_hook(seen_bn)
        for m in scope.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if path.endswith(INPUT_SUFFIX):
        handles.append(target.register_forward_pre_hook(reached))
    else:
        handles.append(target.register_forward_hook(reached))
    try:
        with evaluating(model), torch.no_grad():
            model(torch.zeros(2, *input_shape, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    bn = state["found"]
    return None if bn is None else (names[id(bn)], bn)


@register_method
class OFD(FeatureDistiller):
    r"""OFD: :math:`\mathcal{L} = \lambda_{CE}\,\mathrm{CE} + \beta \sum_{i=1}^{n}
    2^{-(n-i)}\,\mathcal{L}_{OFD}\big(r_i(s_i),\, t_i;\, m_i\big)`, over the pre-ReLU stage
    features (deepest layer :math:`i = n` with weight 1), where :math:`r_i` is a 1x1 conv + BN
    connector and :math:`\mathcal{L}_{OFD}` the partial L2 distance to the margin-ReLU target
    :math:`\max(t, m)` (:func:`~kdtutor.losses.feature.ofd_loss`).

    Deviation: the authors' code and mdistiller pool the *teacher* feature to the student's
    spatial size; here the connector resizes the *student* feature to the teacher's (the
    library's convention for every connector-based method).
    """

    name = "ofd"
    family = "feature"
    paper = (
        "Heo, Kim, Yun, Park, Kwak, Choi (2019). A Comprehensive Overhaul of Feature Distillation"
    )
    hparams_cls = OFDHParams
    path_policy = "preact"

    def build_modules(self) -> None:
        sources: list[str] = []
        self._pending: list[int] = []
        assert self.teacher is not None
        for i, (path, shape) in enumerate(
            zip(self.teacher_paths, self.teacher_shapes, strict=True)
        ):
            found = find_bn_before(self.teacher, path, self.input_shape)
            view = (shape[0],) + (1,) * (len(shape) - 1)
            if found is not None and found[1].num_features == shape[0] and found[1].affine:
                bn_name, bn = found
                margin = ofd_margin(bn.weight, bn.bias).view(view)
                sources.append(f"bn:{bn_name}")
            else:
                margin = torch.zeros(view)
                sources.append("empirical")
                self._pending.append(i)
            self.register_buffer(f"margin{i}", margin)
        self.margin_sources: tuple[str, ...] = tuple(sources)

    def margins(self) -> list[Tensor]:
        """The per-channel margins, one tensor per teacher path, shaped (C, 1, 1) or (C,)."""
        return [getattr(self, f"margin{i}") for i in range(len(self.teacher_paths))]

    def _set_empirical(self, features: list[Tensor]) -> None:
        for i in self._pending:
            margin = getattr(self, f"margin{i}")
            margin.copy_(negative_mean(features[i]).view_as(margin))
        self._pending = []

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        super().load_trainable_state_dict(state)
        self._pending = []  # the checkpoint's margins are the ones to keep

    def bind_data(self, train_data: Any) -> None:
        super().bind_data(train_data)
        if not self._pending or not hasattr(train_data, "batch"):
            return
        assert self.teacher is not None
        n = min(len(train_data), self.hparams.margin_samples)
        device = next(self.teacher.parameters()).device
        chunks: list[list[Tensor]] = [[] for _ in self.teacher_paths]
        for start in range(0, n, 128):
            x, _ = train_data.batch(torch.arange(start, min(start + 128, n)))
            _, features = probe_features(self.teacher, x.to(device), self.teacher_paths)
            for i, path in enumerate(self.teacher_paths):
                chunks[i].append(features[path].cpu())
        self._set_empirical([torch.cat(c) for c in chunks])

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        if self._pending:  # no bind_data: estimate from the first batch
            self._set_empirical([t.detach() for t in teacher_features])
        connected = self.connect(student_features)
        n = len(connected)
        distill = sum(
            ofd_loss(s, t, m) / 2 ** (n - i - 1)
            for i, (s, t, m) in enumerate(
                zip(connected, teacher_features, self.margins(), strict=True)
            )
        )
        return hp.weighted_losses(logits, y, teacher_logits, {"ofd": hp.beta * distill})
