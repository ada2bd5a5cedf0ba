"""Fully connected networks on flattened images, as in Hinton et al. 2015's MNIST experiments.

Hinton, Vinyals and Dean distil a 1200-1200 ReLU MLP, regularised with dropout (Hinton et al.
2012: 20% on the inputs, 50% on the hidden units), into an 800-800 MLP trained without
regularisation: the teacher makes 67 test errors on MNIST, the student 146 alone and 74 when
distilled at T=20. The presets here are those two networks plus a tiny one:

* ``mlp_1200``: 1200-1200, dropout 0.5, input dropout 0.2 (Hinton's teacher);
* ``mlp_800``: 800-800, no dropout (Hinton's student);
* ``mlp_30``: 30-30, no dropout (a deliberately weak student).

Not reproduced: the max-norm weight constraint and input jitter of the original teacher.

References:
    Hinton, G., Vinyals, O., Dean, J. (2015). Distilling the Knowledge in a Neural Network.
    NIPS Deep Learning Workshop.
    Hinton, G., Srivastava, N., Krizhevsky, A., Sutskever, I., Salakhutdinov, R. (2012).
    Improving neural networks by preventing co-adaptation of feature detectors. arXiv:1207.0580.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .common import check_positive_int, set_feature_paths
from .registry import register_model

__all__ = ["MLP", "HiddenLayer", "mlp"]

_PAPER = "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network (NIPS DL Workshop); dropout of Hinton et al. 2012"


class HiddenLayer(nn.Module):
    """``dropout(relu(linear(x)))``, with the ReLU as its own module for hooks."""

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.relu(self.linear(x)))


class MLP(nn.Module):
    """A ReLU multilayer perceptron on flattened images.

    Modules: ``flatten``, ``input_dropout``, ``hidden.0 ... hidden.{k-1}`` (each
    :class:`HiddenLayer`: ``linear``, ``relu``, ``dropout``), ``fc``.

    Feature paths: the stages are the hidden ReLUs (``hidden.i.relu``), the pre-activations
    their inputs, and the embedding is the last hidden activation before dropout.

    Args:
        input_size: Number of input features (channels x height x width).
        hidden: Widths of the hidden layers (may be empty: a linear classifier).
        num_classes: Number of classes.
        dropout: Dropout probability after each hidden layer.
        input_dropout: Dropout probability on the inputs.
    """

    def __init__(
        self,
        input_size: int,
        hidden: Sequence[int] = (1200, 1200),
        num_classes: int = 10,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for p, name in ((dropout, "dropout"), (input_dropout, "input_dropout")):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}.")
        self.input_size = input_size
        self.flatten = nn.Flatten()
        self.input_dropout = nn.Dropout(input_dropout)
        layers = []
        features = input_size
        for width in hidden:
            check_positive_int(width, "every hidden width")
            layers.append(HiddenLayer(features, width, dropout))
            features = width
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(features, num_classes)
        stages = tuple(f"hidden.{i}.relu" for i in range(len(layers)))
        set_feature_paths(
            self,
            stages=stages,
            preact=tuple(f"{path}:input" for path in stages),
            embedding=stages[-1] if stages else "fc:input",
            num_classes=num_classes,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        if x.shape[1] != self.input_size:
            raise ValueError(
                f"this MLP expects {self.input_size} input features per sample but got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}). Build it with the image_size and in_channels of "
                "your data, e.g. build_model('mlp', in_channels=1, image_size=28)."
            )
        return self.fc(self.hidden(self.input_dropout(x)))


@register_model(
    "mlp_30",
    family="mlp",
    description="A 30-30 ReLU MLP without dropout: a deliberately small student.",
    paper=_PAPER,
    defaults={"hidden": (30, 30)},
)
@register_model(
    "mlp_800",
    family="mlp",
    description="Hinton et al. 2015's student: an 800-800 ReLU MLP without regularisation.",
    paper=_PAPER,
    defaults={"hidden": (800, 800)},
)
@register_model(
    "mlp_1200",
    family="mlp",
    description="Hinton et al. 2015's teacher: a 1200-1200 ReLU MLP, dropout 0.5 on hidden units and 0.2 on inputs.",
    paper=_PAPER,
    defaults={"hidden": (1200, 1200), "dropout": 0.5, "input_dropout": 0.2},
)
@register_model(
    "mlp",
    family="mlp",
    description="A configurable ReLU MLP on flattened images (hidden=(1200, 1200) by default).",
    paper=_PAPER,
)
def mlp(
    num_classes: int = 10,
    in_channels: int = 3,
    hidden: Sequence[int] = (1200, 1200),
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    image_size: int | Sequence[int] = 28,
) -> MLP:
    """Build an :class:`MLP` for ``in_channels x image_size x image_size`` inputs.

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images (1 for MNIST).
        hidden: Widths of the hidden layers.
        dropout: Dropout probability after each hidden layer.
        input_dropout: Dropout probability on the input pixels.
        image_size: Height and width of the inputs: one int (square) or ``(height, width)``.

    Returns:
        The model, with PyTorch's default initialisation.
    """
    if isinstance(image_size, int):
        height = width = image_size
    else:
        height, width = image_size
    for value, name in ((height, "image_size"), (width, "image_size")):
        check_positive_int(
            value, name, "Pass the height and width of your images, e.g. image_size=28."
        )
    return MLP(in_channels * height * width, tuple(hidden), num_classes, dropout, input_dropout)
