"""Figure helpers the book uses: labelled heatmaps and line plots with a consistent look.

The helpers draw on a matplotlib ``Axes`` you pass in (object-oriented API only), so they
work with any backend, including the non-interactive ``Agg`` used to execute notebooks and
tests; only :func:`subplots` touches ``pyplot``, and nothing here calls ``show()``.

>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import numpy as np
>>> from kdtutor.plots import subplots, heatmap
>>> fig, ax = subplots(size=(4, 3))
>>> _ = heatmap(ax, np.eye(2), row_labels=["a", "b"], col_labels=["a", "b"],
...             xlabel="predicted", ylabel="true", cbar_label="probability")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullLocator

__all__ = ["heatmap", "line_plot", "outline_cells", "subplots"]

#: Font size of axis labels; tick labels and annotations are a little smaller.
FONT_SIZE = 11


def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def subplots(
    nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = (6.0, 4.0), **kwargs: Any
) -> tuple[Figure, Any]:
    """``plt.subplots`` with a constrained layout and the book's font size.

    Args:
        nrows: Rows of axes.
        ncols: Columns of axes.
        size: Figure size in inches ``(width, height)``.
        **kwargs: Passed to ``plt.subplots`` (e.g. ``sharey=True``).

    Returns:
        ``(figure, axes)`` as ``plt.subplots`` returns them.
    """
    import matplotlib.pyplot as plt

    with plt.rc_context({"font.size": FONT_SIZE}):
        return plt.subplots(nrows, ncols, figsize=size, layout="constrained", **kwargs)


def heatmap(
    ax: Axes,
    matrix: Any,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    xlabel: str,
    ylabel: str,
    cbar_label: str,
    title: str | None = None,
    annotate: bool = True,
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    rotate_xticks: bool = False,
) -> AxesImage:
    """A labelled heatmap with a colour bar and, optionally, the value written in each cell.

    Row ``i`` of ``matrix`` is drawn at the i-th tick from the top, column ``j`` at the j-th
    tick from the left. Annotations are white on dark cells and black on light ones.

    Args:
        ax: The axes to draw on.
        matrix: ``(R, C)`` values (array-like or tensor).
        row_labels: ``R`` tick labels of the y axis.
        col_labels: ``C`` tick labels of the x axis.
        xlabel: Label of the x axis (what the columns are).
        ylabel: Label of the y axis (what the rows are).
        cbar_label: Label of the colour bar (what the colour means, with units).
        title: Optional axes title.
        annotate: Write each value in its cell.
        fmt: Format of the annotations.
        cmap: Matplotlib colour map.
        vmin: Lower end of the colour scale (default: the minimum).
        vmax: Upper end of the colour scale (default: the maximum).
        rotate_xticks: Turn the x tick labels by 45 degrees (long class names).

    Returns:
        The image, e.g. for a shared colour bar.
    """
    values = _as_array(matrix)
    if values.ndim != 2 or values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"matrix of shape {values.shape} does not match {len(row_labels)} row labels and "
            f"{len(col_labels)} column labels."
        )
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels))
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
    if rotate_xticks:
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    ax.set_ylabel(ylabel, fontsize=FONT_SIZE)
    if title:
        ax.set_title(title, fontsize=FONT_SIZE)
    bar = ax.figure.colorbar(image, ax=ax)
    bar.set_label(cbar_label, fontsize=FONT_SIZE)
    if annotate:
        lo, hi = image.get_clim()
        middle = (lo + hi) / 2
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    fmt.format(v),
                    ha="center",
                    va="center",
                    fontsize=FONT_SIZE - 2,
                    color="white" if v < middle else "black",
                )
    return image


def outline_cells(
    ax: Axes,
    cells: Iterable[tuple[int, int]],
    *,
    color: str = "red",
    linewidth: float = 2.0,
    label: str | None = None,
) -> None:
    """Draw a rectangle around each ``(row, column)`` cell of a heatmap.

    Args:
        ax: Axes holding a heatmap drawn by :func:`heatmap` (or ``imshow``).
        cells: ``(row, column)`` indices to outline.
        color: Edge colour.
        linewidth: Edge width in points.
        label: Legend entry for the outlines (given once, to the first rectangle).
    """
    for n, (i, j) in enumerate(cells):
        ax.add_patch(
            Rectangle(
                (j - 0.5, i - 0.5),
                1,
                1,
                fill=False,
                edgecolor=color,
                linewidth=linewidth,
                label=label if n == 0 else None,
            )
        )


def line_plot(
    ax: Axes,
    x: Any,
    series: Mapping[str, Any],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    markers: bool = True,
    legend_loc: str = "best",
) -> None:
    """One line per named series over a shared x axis, with a legend and a light grid.

    Args:
        ax: The axes to draw on.
        x: ``(N,)`` x values.
        series: Legend label -> ``(N,)`` y values.
        xlabel: Label of the x axis.
        ylabel: Label of the y axis.
        title: Optional axes title.
        logx: Logarithmic x axis (base 2, with the x values as ticks).
        logy: Logarithmic y axis.
        markers: Mark each point.
        legend_loc: Where the legend goes (matplotlib's ``loc``).
    """
    xs = _as_array(x)
    for name, ys in series.items():
        ax.plot(xs, _as_array(ys), marker="o" if markers else None, label=name)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, labels=[f"{v:g}" for v in xs])
        ax.xaxis.set_minor_locator(NullLocator())
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    ax.set_ylabel(ylabel, fontsize=FONT_SIZE)
    if title:
        ax.set_title(title, fontsize=FONT_SIZE)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(loc=legend_loc)
