"""Cut a model in two at a stage: a shared trunk and a head, ``head(trunk(x)) == model(x)``.

ONE (Lan, Zhu & Gong 2018, Knowledge Distillation by On-the-Fly Native Ensemble) shares the
first stages of a network and gives each branch its own copy of the last ones; BYOT (Zhang
et al. 2019, Be Your Own Teacher) prices each exit by the stages before it. Both need the
network cut at a stage boundary without rewriting its ``forward``.

:func:`split_at_stage` does it with ``torch.fx`` (Reed et al. 2022, torch.fx: Practical
Program Capture and Transformation for Deep Learning in Python): it records the model's
``forward`` as a graph in which the stage is one call, gives the calls before it to the trunk
(which returns the stage's input) and the stage and everything after it to the head. Both
parts are :class:`torch.fx.GraphModule` objects that hold the model's own submodules, not
copies, so training them trains the model in place; ``print(trunk.code)`` shows what each
part runs.
"""

from __future__ import annotations

from torch import fx, nn

from ..errors import KDTutorError, unknown_name
from .common import stage_names

__all__ = ["SplitError", "split_at_stage"]


class SplitError(KDTutorError, ValueError):
    """A model that cannot be cut at the stage asked for (not traceable, or a skip across)."""


class _StageTracer(fx.Tracer):
    """Traces only the forwards that contain the stage; every other submodule is one call."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return not self.stage.startswith(qualified_name + ".")


def _describe(node: fx.Node) -> str:
    if node.op == "placeholder":
        return f"the model's input {node.name!r}"
    if node.op == "call_module":
        return f"the output of module {node.target!r}"
    return f"{node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)})"


def split_at_stage(
    model: nn.Module, stage: str | None = None
) -> tuple[fx.GraphModule, fx.GraphModule]:
    r"""Split ``model`` into ``(trunk, head)`` at the input of ``stage``.

    The trunk runs everything ``forward`` does before calling ``stage`` and returns the
    stage's input :math:`h`; the head runs the stage and everything after it on :math:`h`:

    .. math:: \mathrm{head}(\mathrm{trunk}(x)) = \mathrm{model}(x).

    Both parts share the model's submodules and parameters (``nn.Sequential(trunk, head)``
    trains the model itself), and each operation of ``forward`` lands in exactly one part, so
    their FLOPs add up to the model's. ONE (Lan et al. 2018) copies the head into branches
    on one trunk; BYOT (Zhang et al. 2019) counts an exit's cost with the trunk before it.

    Only the forwards of ``model`` and of the modules that contain ``stage`` are traced (the
    stage and every other submodule are called as they are), so those forwards must not
    branch on tensor values or shapes; Python values they read, such as ``self.training``,
    are fixed as they were when this function ran.

    Args:
        model: A model with ``stage_names`` (built by :func:`kdtutor.models.build_model` or
            annotated with :func:`kdtutor.models.set_feature_paths`).
        stage: One of ``model.stage_names``; default the last one.

    Returns:
        ``(trunk, head)``, two :class:`torch.fx.GraphModule` objects.

    Raises:
        UnknownNameError: If ``stage`` is not one of the model's stage names.
        SplitError: If ``forward`` cannot be traced, does not call ``stage`` exactly once
            on one tensor, or if the head would read an activation computed before the split
            other than the stage's input (a skip connection across the cut).

    Example:
        >>> import torch
        >>> from kdtutor.models import build_model
        >>> model = build_model("cnn_wide_s2").eval()
        >>> trunk, head = split_at_stage(model, "stages.1")
        >>> x = torch.randn(2, 3, 32, 32)
        >>> tuple(trunk(x).shape)
        (2, 16, 16, 16)
        >>> torch.allclose(head(trunk(x)), model(x))
        True
    """
    names = stage_names(model)
    stage = names[-1] if stage is None else stage
    if stage not in names:
        raise unknown_name("stage", stage, names, "Split at one of the model's stage_names.")
    cls = type(model).__name__
    try:
        graph = _StageTracer(stage).trace(model)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise SplitError(
            f"split_at_stage needs a traceable model; torch.fx could not trace {cls}.forward "
            f"({type(exc).__name__}: {reason}). An `if` or loop on a tensor's values or shape "
            "cannot be traced: move it into a submodule that does not contain the stage, or "
            "use a method that keeps the model whole (e.g. dml instead of one)."
        ) from exc

    nodes = list(graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target == stage]
    if len(calls) != 1:
        raise SplitError(
            f"{cls}.forward calls stage {stage!r} {len(calls)} times; a split needs exactly one call."
        )
    cut = calls[0]
    if len(cut.args) != 1 or not isinstance(cut.args[0], fx.Node) or cut.kwargs:
        raise SplitError(f"stage {stage!r} must be called on one tensor to split {cls} there.")
    h = cut.args[0]
    before = nodes[: nodes.index(cut)]

    trunk_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in before:
        env[node] = trunk_graph.node_copy(node, env.__getitem__)
    trunk_graph.output(env[h])

    head_graph = fx.Graph()
    head_env = {h: head_graph.placeholder(h.name)}
    for user in nodes[len(before) :]:
        for node in user.all_input_nodes:
            if node in head_env:
                continue
            if node.op != "get_attr":  # a parameter or buffer is fetched again; else a skip
                raise SplitError(
                    f"cannot split {cls} at {stage!r}: {_describe(user)} (after the split) reads "
                    f"{_describe(node)} (before it), but the head receives only the input of "
                    f"{stage!r}. Split at a stage that no skip connection crosses."
                )
            head_env[node] = head_graph.node_copy(node)
        head_env[user] = head_graph.node_copy(user, head_env.__getitem__)

    return (
        fx.GraphModule(model, trunk_graph, class_name="Trunk"),
        fx.GraphModule(model, head_graph, class_name="Head"),
    )
