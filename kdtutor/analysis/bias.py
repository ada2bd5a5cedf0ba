r"""A classifier's errors by class, and shifting the bias of some classes (a change of prior).

Hinton, Vinyals and Dean (2015, section 3) distil a student on a transfer set without any 3,
or with only 7s and 8s, and then move the bias of those classes in the student's last layer.
Adding :math:`\delta` to the bias of class :math:`c` adds exactly :math:`\delta` to the logit
:math:`z_c` of every input and changes nothing else: it multiplies the odds of class
:math:`c` against every other by :math:`e^\delta`, as a change of the class prior would.

* :func:`errors_by_class`: how many images of each true class a model gets wrong;
* :func:`shift_class_bias`: a copy of a model with the biases of some classes moved;
* :func:`final_linear`: the ``nn.Linear`` that produces a model's logits.

The chapter that reproduces the paper (``book/02-principles/hinton-mnist.ipynb``) writes
its protocol with these and :func:`kdtutor.train.fit`.

Reference:
    Hinton, G., Vinyals, O., Dean, J. (2015). Distilling the Knowledge in a Neural Network.
    NIPS Deep Learning Workshop. arXiv:1503.02531.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ..data import ArrayDataset
from ..errors import KDTutorError
from ..methods import Distiller
from ..train import predict_logits

__all__ = ["errors_by_class", "final_linear", "shift_class_bias"]

_HEAD_NAMES = ("fc", "classifier", "head", "linear")


def _check_classes(classes: Iterable[int], num_classes: int, what: str) -> list[int]:
    out = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes:
            raise ValueError(f"{what} must be class indices in [0, {num_classes}), got {c!r}.")
        out.append(int(c))
    return out


def final_linear(model: nn.Module, layer: str | None = None) -> nn.Linear:
    """The ``nn.Linear`` that produces the logits of ``model``.

    Looks, in order, at the module named ``layer`` (a dotted path) if given; at an attribute
    ``fc``, ``classifier``, ``head`` or ``linear`` (an ``nn.Linear``, or a container whose last
    ``nn.Linear`` is taken); else at the last ``nn.Linear`` registered in the model. A
    :class:`~kdtutor.methods.Distiller` is searched through its student.

    Raises:
        KDTutorError: No ``nn.Linear`` is found, the one found has no bias, or its number of
            outputs differs from the model's ``num_classes``.
    """
    if isinstance(model, Distiller):
        model = model.student
    if layer is not None:
        try:
            found = model.get_submodule(layer)
        except AttributeError:
            raise KDTutorError(
                f"{type(model).__name__} has no module {layer!r}. Its Linear layers: "
                f"{[n for n, m in model.named_modules() if isinstance(m, nn.Linear)]}."
            ) from None
        if not isinstance(found, nn.Linear):
            raise KDTutorError(f"module {layer!r} is a {type(found).__name__}, not an nn.Linear.")
        linear: nn.Linear | None = found
        where = layer
    else:
        linear, where = None, ""
        for name in _HEAD_NAMES:
            head = getattr(model, name, None)
            if isinstance(head, nn.Linear):
                linear, where = head, name
                break
            if isinstance(head, nn.Module):
                inner = [m for m in head.modules() if isinstance(m, nn.Linear)]
                if inner:
                    linear, where = inner[-1], name
                    break
        if linear is None:
            named = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            if not named:
                raise KDTutorError(
                    f"{type(model).__name__} has no nn.Linear layer, so there is no final bias to "
                    "shift. Pass layer='<dotted path>' naming the layer that produces the logits."
                )
            where, linear = named[-1]
    if linear.bias is None:
        raise KDTutorError(
            f"the final layer {where!r} of {type(model).__name__} has no bias (bias=False)."
        )
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int) and linear.out_features != num_classes:
        raise KDTutorError(
            f"the layer found ({where!r}, {linear.out_features} outputs) does not produce the "
            f"model's {num_classes} logits. Pass layer='<dotted path>' naming the right one."
        )
    return linear


@torch.no_grad()
def shift_class_bias(
    model: nn.Module, class_biases: Mapping[int, float], *, layer: str | None = None
) -> nn.Module:
    r"""A copy of ``model`` whose final-layer bias is shifted by ``class_biases[c]`` for class ``c``.

    Adding :math:`\delta` to the bias of class :math:`c` adds exactly :math:`\delta` to the
    logit :math:`z_c` of every input and changes nothing else: it moves the prior of the
    classifier towards (:math:`\delta > 0`) or away from class :math:`c`. Hinton et al. (2015)
    raise the bias of a class the student never saw (3) and lower those of the only classes it
    saw (7 and 8).

    Args:
        model: A classifier whose logits come from an ``nn.Linear`` (see :func:`final_linear`);
            a Distiller's student is used for a Distiller. It is not modified.
        class_biases: ``{class index: shift}``, e.g. ``{3: 3.5}`` or ``{7: -7.6, 8: -7.6}``.
        layer: Dotted path of the final layer, when it cannot be found automatically.

    Returns:
        The shifted copy, in the same train/eval mode as ``model``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x = torch.randn(2, 4)
        >>> (shift_class_bias(model, {1: 2.0})(x) - model(x)).round(decimals=4).tolist()
        [[0.0, 2.0, 0.0], [0.0, 2.0, 0.0]]
    """
    source = model.student if isinstance(model, Distiller) else model
    shifted = copy.deepcopy(source)
    linear = final_linear(shifted, layer)
    classes = _check_classes(class_biases, linear.out_features, "class_biases keys")
    assert linear.bias is not None
    for c in classes:
        linear.bias[c] += float(class_biases[c])
    return shifted


def errors_by_class(
    model: nn.Module,
    dataset: ArrayDataset,
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> Tensor:
    """How many images of each true class ``model`` misclassifies (argmax of its logits).

    The model runs in eval mode without gradients (:func:`kdtutor.train.predict_logits`).

    Returns:
        An int64 tensor of shape ``(num_classes,)``; its sum is the total number of errors.
    """
    logits, targets = predict_logits(model, dataset, batch_size=batch_size, device=device)
    wrong = logits.argmax(dim=1) != targets
    return torch.bincount(targets[wrong], minlength=dataset.num_classes)
