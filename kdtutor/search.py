"""Searched students: a small architecture search where each candidate is scored by a short
distillation run, under a FLOPs budget.

NAS-based KD looks for the student that distils best from a given teacher. AKD (Liu et al.
2020, "Search to Distill") runs a neural architecture search whose reward is guided by KD,
under latency targets on ImageNet; DNA (Li et al. 2020) splits a supernet into blocks and
supervises the block-wise search with the teacher's blocks. This module keeps only the
skeleton: a space of a few thousand plain CNNs and CIFAR ResNets, a FLOPs budget measured
with :func:`kdtutor.models.model_summary`, and two ways to spend a fixed number of training
epochs on a pool of candidates, each candidate trained for real (no supernet, no controller)
and scored by its accuracy on validation images after a short KD run:

* **random search** (Bergstra & Bengio 2012): every candidate of the pool (or ``n`` drawn
  without replacement) is trained for ``epochs`` and the best score wins;
* **successive halving** (Karnin et al. 2013's algorithm, brought to hyperparameter search by
  Jamieson & Talwalkar 2016; here in the geometric form with a factor :math:`\\eta` that
  Hyperband, Li et al. 2018, made common): rung :math:`k` trains :math:`n_k` candidates for
  :math:`r_k` epochs and keeps the best :math:`n_{k+1} = \\lfloor n_k / \\eta \\rfloor`;
  :math:`r_k = r_0 \\eta^k` (capped at the maximum), except in the last rung, the one that
  keeps a single winner, which trains for ``max_epochs`` (our variant: the geometric rule
  would give it :math:`r_0 \\eta^k`, 18 epochs below). With 27 candidates,
  :math:`\\eta = 3` and 2 to 20 epochs: 27 at 2 epochs, 9 at 6, 3 at 20,
  :math:`27 \\cdot 2 + 9 \\cdot 6 + 3 \\cdot 20 = 168` candidate-epochs, what random
  search spends on 28 candidates at 6 epochs.

Both strategies read and write a :class:`ScoreMemo` keyed by (scorer, architecture, epochs),
kept in a CSV file when given a path: a killed search resumes where it stopped, and two
strategies on one pool share the evaluations they have in common.

An architecture is named by its model spec string (:func:`kdtutor.specs.format_model_spec`),
e.g. ``convnet(blocks_per_stage=(1,1,1),stem_stride=2,widths=(16,32,64))``, which
``kdtutor distill --student "<spec>"`` and :func:`kdtutor.specs.build_from_spec` build.

References:
    Liu, Y., Jia, X., Tan, M., Vemulapalli, R., Zhu, Y., Green, B., Wang, X. (2020). Search
    to Distill: Pearls are Everywhere but not the Eyes. CVPR.
    Li, C., Peng, J., Yuan, L., Wang, G., Liang, X., Lin, L., Chang, X. (2020). Block-wisely
    Supervised Neural Architecture Search with Knowledge Distillation. CVPR.
    Jamieson, K., Talwalkar, A. (2016). Non-stochastic Best Arm Identification and
    Hyperparameter Optimization. AISTATS.
    Li, L., Jamieson, K., DeSalvo, G., Rostamizadeh, A., Talwalkar, A. (2018). Hyperband: A
    Novel Bandit-Based Approach to Hyperparameter Optimization. JMLR.
    Bergstra, J., Bengio, Y. (2012). Random Search for Hyper-Parameter Optimization. JMLR.
"""

from __future__ import annotations

import csv
import functools
import itertools
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import KDTutorError
from .specs import ModelSpec, build_from_spec, format_model_spec, parse_model_spec

__all__ = [
    "MEMO_COLUMNS",
    "SEARCH_COLUMNS",
    "Candidate",
    "KDScorer",
    "ScoreMemo",
    "Scorer",
    "SearchResult",
    "SearchSpace",
    "halving_schedule",
    "kd_score",
    "pareto_front",
    "random_search",
    "successive_halving",
]

Scorer = Callable[["Candidate", int], float]
"""``score(candidate, epochs) -> accuracy``: trains the candidate for ``epochs`` and returns
its score (higher is better), e.g. :func:`kd_score`'s validation accuracy in percent."""

SEARCH_COLUMNS = (
    "strategy", "rung", "spec", "model", "flops", "params", "epochs", "score",
    "kept", "reused", "budget_spent",
)  # fmt: skip
"""The columns of ``SearchResult.rows``: ``kept`` marks the candidates a rung promoted
(the winner in the last rung and in random search), ``reused`` the scores read from the memo
instead of trained, ``budget_spent`` the strategy's candidate-epochs up to and including the
row (reused rows counted at their nominal cost)."""

MEMO_COLUMNS = ("scorer", "spec", "epochs", "score", "flops", "params", "seconds")
"""The columns of a :class:`ScoreMemo`'s CSV file, one row per scored (architecture, epochs)."""


class SearchError(KDTutorError, ValueError):
    """A search given bad input: an empty or duplicated pool, a bad budget or schedule, a
    scorer that returns no number, or a memo file made for other candidates."""


# ---------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    """One architecture of a search, with its measured costs.

    Attributes:
        model: A registry name (``"convnet"``, ``"resnet8"``, ...).
        kwargs: Options of the model's builder as sorted ``(key, value)`` pairs.
        flops: Forward FLOPs of one image (:func:`kdtutor.models.model_summary`).
        params: Parameters.
    """

    model: str
    kwargs: tuple[tuple[str, Any], ...]
    flops: int
    params: int

    @property
    def spec(self) -> str:
        """The architecture's canonical spec string, e.g.
        ``"resnet8(stem_stride=2,widths=(8,8,16,32))"``."""
        return format_model_spec(self.model, dict(self.kwargs))

    @property
    def family(self) -> str:
        """The registry family of the model (``"small_cnn"``, ``"cifar_resnet"``, ...)."""
        from .models import model_info

        return model_info(self.model).family

    def build(self, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        """The network, randomly initialised (seed torch first for a given initialisation)."""
        return build_from_spec(
            ModelSpec("registry", self.model, None, self.kwargs),
            num_classes=num_classes,
            in_channels=in_channels,
        )

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
    ) -> Candidate:
        """The candidate a spec string names, its FLOPs and parameters measured for one
        image of ``input_shape`` (e.g. a hand-designed student, ``"cnn_wide_s2"``)."""
        parsed = parse_model_spec(spec)
        if parsed.kind != "registry" or parsed.weights is not None:
            raise SearchError(
                f"a search candidate is a registry model with options, e.g. "
                f"'convnet(widths=(8,16,32))', not {spec!r} (no zoo:, timm: or weights)."
            )
        flops, params = _measure(parsed.name, parsed.kwargs, _shape(input_shape), num_classes)
        return cls(parsed.name, parsed.kwargs, flops, params)


@functools.cache
def _measure(
    model: str, kwargs: tuple[tuple[str, Any], ...], input_shape: tuple[int, ...], classes: int
) -> tuple[int, int]:
    """FLOPs and parameters of one image, by model_summary on a network built on the meta
    device (no memory, no initialisation: FlopCounterMode counts from the shapes alone)."""
    from .models import model_summary

    spec = ModelSpec("registry", model, None, kwargs)
    with torch.device("meta"):
        network = build_from_spec(spec, num_classes=classes, in_channels=input_shape[0])
    summary = model_summary(network, (1, *input_shape), latency_runs=0)
    return int(summary.flops), int(summary.params)


def _shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(_is_int(s) and s >= 1 for s in shape):
        raise SearchError(
            f"input_shape must be one image's (channels, height, width), e.g. (3, 32, 32), "
            f"got {input_shape!r}."
        )
    return shape


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choices(values: Iterable[Any], what: str, example: str) -> tuple[int, ...]:
    try:
        values = tuple(values)
    except TypeError:
        raise SearchError(f"{what} must be a tuple of integers, e.g. {example}.") from None
    if not all(_is_int(v) and v >= 1 for v in values):
        raise SearchError(f"{what} must be positive integers, e.g. {example}, got {values!r}.")
    if len(set(values)) != len(values):
        raise SearchError(f"{what} lists a value twice ({values!r}): give each value once.")
    return tuple(sorted(values))


class SearchSpace:
    """Stride-2 plain CNNs and CIFAR ResNets, enumerated, with their FLOPs measured.

    * ``convnet`` students with ``S`` stages for each ``S`` in ``convnet_stages``, the stage
      widths a non-decreasing sequence from ``widths`` and each stage's block count from
      ``blocks``: :math:`\\binom{|W| + S - 1}{S} |B|^S` networks per stage count;
    * CIFAR ResNets ``resnet<d>`` for each depth ``d`` in ``resnet_depths``, with widths
      ``(w1, w1, w2, w3)`` (the stem as wide as the first stage), ``w1 <= w2 <= w3`` from
      ``resnet_widths``: :math:`\\binom{|W_r| + 2}{3}` networks per depth.

    All take ``stem_stride`` (2: the book-scale students' stem). The default space holds
    :math:`84 \\cdot 8 + 210 \\cdot 16 + 2 \\cdot 35 = 4{,}102` architectures, among them
    ``cnn_wide_s2`` (``widths=(16,32,64)``, one block each) and ``resnet8_half_s2``
    (``resnet8``, ``widths=(8,8,16,32)``).

    Args:
        convnet_stages: Stage counts of the plain CNNs (``()``: none).
        widths: Stage widths of the plain CNNs.
        blocks: Blocks per stage of the plain CNNs.
        resnet_depths: ResNet depths ``6n + 2`` with a registered ``resnet<d>`` (``()``: none).
        resnet_widths: Stage widths of the ResNets.
        stem_stride: Stride of every network's first convolution.
        input_shape: One image's shape, for the FLOPs.
        num_classes: Classes, for the FLOPs and parameters of the classifier.

    Example:
        >>> space = SearchSpace(convnet_stages=(2,), widths=(8, 16), blocks=(1,),
        ...                     resnet_depths=())
        >>> len(space)
        3
        >>> space.architectures()[1]
        ('convnet', {'blocks_per_stage': (1, 1), 'stem_stride': 2, 'widths': (8, 16)})
    """

    def __init__(
        self,
        *,
        convnet_stages: Sequence[int] = (3, 4),
        widths: Sequence[int] = (8, 12, 16, 24, 32, 48, 64),
        blocks: Sequence[int] = (1, 2),
        resnet_depths: Sequence[int] = (8, 14),
        resnet_widths: Sequence[int] = (8, 12, 16, 24, 32),
        stem_stride: int = 2,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
    ) -> None:
        from .models import list_models

        self.convnet_stages = _choices(convnet_stages, "convnet_stages", "(3, 4)")
        self.widths = _choices(widths, "widths", "(8, 16, 32)")
        self.blocks = _choices(blocks, "blocks", "(1, 2)")
        self.resnet_depths = _choices(resnet_depths, "resnet_depths", "(8, 14)")
        self.resnet_widths = _choices(resnet_widths, "resnet_widths", "(8, 16, 32)")
        if self.convnet_stages and not (self.widths and self.blocks):
            raise SearchError("plain CNNs need at least one value in widths and in blocks.")
        if self.resnet_depths and not self.resnet_widths:
            raise SearchError("ResNets need at least one value in resnet_widths.")
        if not self.convnet_stages and not self.resnet_depths:
            raise SearchError(
                "the space is empty: give convnet_stages, resnet_depths or both, e.g. "
                "SearchSpace(convnet_stages=(3,), resnet_depths=(8,))."
            )
        registered = set(list_models("cifar_resnet"))
        for depth in self.resnet_depths:
            if (depth - 2) % 6 or f"resnet{depth}" not in registered:
                known = sorted(
                    int(n[6:]) for n in registered if n[6:].isdigit() and n.startswith("resnet")
                )
                raise SearchError(
                    f"resnet_depths: no CIFAR ResNet of depth {depth}; the registered depths "
                    f"are {known}."
                )
        if not (_is_int(stem_stride) and stem_stride >= 1):
            raise SearchError(f"stem_stride must be a positive integer, got {stem_stride!r}.")
        if not (_is_int(num_classes) and num_classes >= 1):
            raise SearchError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.stem_stride = stem_stride
        self.input_shape = _shape(input_shape)
        self.num_classes = num_classes
        self._architectures = self.architectures()
        self._measured: dict[int, Candidate] = {}

    def architectures(self) -> list[tuple[str, dict[str, Any]]]:
        """Every architecture as ``(model, kwargs)``, in a fixed order (plain CNNs by stage
        count, widths, blocks; then ResNets by depth and widths), without building any."""
        out: list[tuple[str, dict[str, Any]]] = []
        for stages in self.convnet_stages:
            for widths in itertools.combinations_with_replacement(self.widths, stages):
                for blocks in itertools.product(self.blocks, repeat=stages):
                    out.append(
                        (
                            "convnet",
                            {
                                "blocks_per_stage": blocks,
                                "stem_stride": self.stem_stride,
                                "widths": widths,
                            },
                        )
                    )
        for depth in self.resnet_depths:
            for w1, w2, w3 in itertools.combinations_with_replacement(self.resnet_widths, 3):
                out.append(
                    (
                        f"resnet{depth}",
                        {"stem_stride": self.stem_stride, "widths": (w1, w1, w2, w3)},
                    )
                )
        return out

    def __len__(self) -> int:
        return len(self._architectures)

    def candidate(self, index: int) -> Candidate:
        """Architecture ``index`` of :meth:`architectures` with its FLOPs and parameters
        (measured once: :func:`kdtutor.models.model_summary` on a network built on the meta
        device, so nothing is allocated or initialised)."""
        if index not in self._measured:
            model, kwargs = self._architectures[index]
            options = tuple(sorted(kwargs.items()))
            flops, params = _measure(model, options, self.input_shape, self.num_classes)
            self._measured[index] = Candidate(model, options, flops, params)
        return self._measured[index]

    def candidates(self) -> list[Candidate]:
        """Every architecture with its FLOPs and parameters, in the order of
        :meth:`architectures` (about 10-100 ms a network: the default space takes minutes
        once, then it is memoised)."""
        return [self.candidate(i) for i in range(len(self._architectures))]

    def feasible(self, max_flops: float, min_flops: float = 0.0) -> list[Candidate]:
        """The candidates with ``min_flops <= flops <= max_flops`` (FLOPs of one image), in
        the order of :meth:`architectures`."""
        _check_budget(max_flops, min_flops)
        return [c for c in self.candidates() if min_flops <= c.flops <= max_flops]

    def sample(
        self, n: int, max_flops: float, seed: int = 0, min_flops: float = 0.0
    ) -> list[Candidate]:
        """``n`` distinct candidates within the FLOPs budget, drawn with a seeded generator:
        each draw picks a family (``small_cnn`` or ``cifar_resnet``) with equal chance among
        those with candidates left, then a candidate uniformly among that family's feasible
        ones, without replacement (so the few ResNets within a budget are not drowned by
        thousands of plain CNNs).

        Only what is drawn is measured: within the chosen family a draw takes random untried
        architectures until one fits the budget, discarding those that do not (the first
        feasible architecture of a uniformly random order is uniform among the feasible
        ones); a family with none left is dropped and the family drawn again. A pool of 28
        from the default space costs about a hundred measurements, not 4,102.

        Raises:
            SearchError: ``n`` below 1 or above the number of feasible candidates (the
                message gives that number), or a bad budget or seed.
        """
        from .models import model_info

        _check_budget(max_flops, min_flops)
        if not (_is_int(seed) and seed >= 0):
            raise SearchError(f"seed must be a non-negative integer, got {seed!r}.")
        if not (_is_int(n) and 1 <= n <= len(self._architectures)):
            raise SearchError(
                f"cannot draw {n!r} candidates from a space of {len(self._architectures)} "
                "architectures: ask for at least 1 and at most that."
            )
        left: dict[str, list[int]] = {}
        for index, (model, _) in enumerate(self._architectures):
            left.setdefault(model_info(model).family, []).append(index)
        rng = random.Random(seed)
        drawn: list[Candidate] = []
        while len(drawn) < n:
            families = sorted(f for f, untried in left.items() if untried)
            if not families:
                raise SearchError(
                    f"cannot draw {n} candidates: only {len(drawn)} architectures of the space "
                    f"lie within [{min_flops:g}, {max_flops:g}] FLOPs. Ask for at most "
                    f"{len(drawn)}, or widen the budget."
                )
            untried = left[rng.choice(families)]
            while untried:  # the family's first feasible architecture in a random order
                candidate = self.candidate(untried.pop(rng.randrange(len(untried))))
                if min_flops <= candidate.flops <= max_flops:
                    drawn.append(candidate)
                    break
        return drawn


def _check_budget(max_flops: float, min_flops: float) -> None:
    for name, value in (("max_flops", max_flops), ("min_flops", min_flops)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise SearchError(f"{name} must be a number of FLOPs, e.g. 1.62e6, got {value!r}.")
    if max_flops <= 0 or min_flops < 0 or min_flops > max_flops:
        raise SearchError(
            f"the FLOPs budget needs 0 <= min_flops <= max_flops and max_flops > 0, got "
            f"min_flops={min_flops:g}, max_flops={max_flops:g}."
        )


# ---------------------------------------------------------------------------- the memo


class ScoreMemo:
    """Scores already computed, keyed by ``(scorer, spec, epochs)``; with a ``path``, kept in
    a CSV file (:data:`MEMO_COLUMNS`) that every new score is appended to at once.

    Opening an existing file resumes from it: its rows of this ``scorer`` are read (rows of
    other scorers are kept in the file and ignored), and a last line cut short by a kill
    is dropped. A row whose FLOPs or parameters differ from the candidate's was made for
    another input shape or class count, and is refused when looked up.

    Args:
        path: The CSV file (created with its header if missing), or ``None`` for a memo
            held in memory only.
        scorer: The scorer's label (``KDScorer.label``): rows of another label never
            answer this memo.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, scorer: str = "score"):
        if not isinstance(scorer, str) or not scorer:
            raise SearchError(f"a memo's scorer label must be a non-empty string, got {scorer!r}.")
        self.path = None if path is None else Path(path)
        self.scorer = scorer
        self._scores: dict[tuple[str, int], tuple[float, int, int, float]] = {}
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def __len__(self) -> int:
        return len(self._scores)

    def get(self, candidate: Candidate, epochs: int) -> float | None:
        """The recorded score of ``candidate`` after ``epochs`` epochs, or ``None``."""
        hit = self._scores.get((candidate.spec, epochs))
        if hit is None:
            return None
        score, flops, params, _ = hit
        if (flops, params) != (candidate.flops, candidate.params):
            where = f" in {self.path}" if self.path else ""
            raise SearchError(
                f"the memo{where} records {candidate.spec} with {flops:,} FLOPs and {params:,} "
                f"parameters, but this search measures {candidate.flops:,} and "
                f"{candidate.params:,}: the file was made for another input shape or class "
                "count. Use a new memo file for this search."
            )
        return score

    def put(self, candidate: Candidate, epochs: int, score: float, seconds: float = 0.0) -> None:
        """Record a score (and append it to the file at once)."""
        key = (candidate.spec, epochs)
        self._scores[key] = (score, candidate.flops, candidate.params, seconds)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(MEMO_COLUMNS)
            writer.writerow(
                (
                    self.scorer,
                    candidate.spec,
                    epochs,
                    repr(float(score)),
                    candidate.flops,
                    candidate.params,
                    f"{seconds:.3f}",
                )
            )

    def _load(self, path: Path) -> None:
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            keep = raw.rfind(b"\n") + 1
            warnings.warn(
                f"{path}: the last line was cut short (a killed search?) and is dropped: "
                f"{raw[keep:][:80]!r}",
                stacklevel=3,
            )
            with path.open("r+b") as handle:
                handle.truncate(keep)
            raw = raw[:keep]
        lines = raw.decode("utf-8").splitlines()
        if not lines:
            return
        reader = csv.reader(lines)
        header = tuple(next(reader))
        if header != MEMO_COLUMNS:
            raise SearchError(
                f"{path} is not a search memo: its header is {','.join(header)!r}, expected "
                f"{','.join(MEMO_COLUMNS)!r}. Give the CSV a search wrote, or a new path."
            )
        for number, row in enumerate(reader, start=2):
            if len(row) != len(MEMO_COLUMNS):
                raise SearchError(
                    f"{path}, line {number}: {len(row)} fields instead of "
                    f"{len(MEMO_COLUMNS)}; delete or repair that line."
                )
            scorer, spec, epochs, score, flops, params, seconds = row
            if scorer != self.scorer:
                continue
            try:
                key = (format_model_spec(*_name_and_options(spec)), int(epochs))
                value = (float(score), int(flops), int(params), float(seconds))
            except (KDTutorError, ValueError) as exc:
                raise SearchError(
                    f"{path}, line {number}: cannot read {row!r} ({exc}); delete or repair "
                    "that line."
                ) from None
            if not math.isfinite(value[0]):
                raise SearchError(
                    f"{path}, line {number}: the score {score!r} is not a finite number; "
                    "delete that line to score the candidate again."
                )
            known = self._scores.get(key)
            if known is not None and known[:3] != value[:3]:
                raise SearchError(
                    f"{path}, line {number}: {spec} at {epochs} epochs is recorded twice with "
                    f"different results ({known[0]} and {value[0]}); keep one of the lines."
                )
            self._scores.setdefault(key, value)


def _name_and_options(spec: str) -> tuple[str, dict[str, Any]]:
    parsed = parse_model_spec(spec)
    if parsed.kind != "registry" or parsed.weights is not None:
        raise SearchError(f"{spec!r} is not a registry model's spec")
    return parsed.name, parsed.options


def _as_memo(memo: ScoreMemo | str | os.PathLike[str] | None, score: Scorer) -> ScoreMemo:
    if isinstance(memo, ScoreMemo):
        return memo
    label = getattr(score, "label", "score")
    if memo is None:
        return ScoreMemo(scorer=label)
    if isinstance(memo, (str, os.PathLike)):
        return ScoreMemo(memo, scorer=label)
    raise SearchError(f"memo must be a ScoreMemo, a CSV path or None, got {type(memo).__name__}.")


# ---------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class SearchResult:
    """What a search found and what it cost.

    Attributes:
        strategy: ``"random"`` or ``"halving"``.
        rows: One dict per evaluation, in the order they were made (:data:`SEARCH_COLUMNS`).
        best: The winning candidate.
        best_score: Its score in the last evaluation that ranked it.
        budget: Candidate-epochs the strategy allocates (the sum of ``epochs`` over rows).
        trained: Candidate-epochs actually trained by this call (rows not read from the memo).
    """

    strategy: str
    rows: tuple[dict[str, Any], ...]
    best: Candidate
    best_score: float
    budget: int
    trained: int


def _check_pool(candidates: Sequence[Candidate]) -> list[Candidate]:
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Iterable):
        raise SearchError(
            f"candidates must be a list of Candidate (SearchSpace.sample(...)), got "
            f"{type(candidates).__name__}."
        )
    pool = list(candidates)
    if not pool:
        raise SearchError("the candidate pool is empty: draw some with SearchSpace.sample(n, ...).")
    seen: set[str] = set()
    for candidate in pool:
        if not isinstance(candidate, Candidate):
            raise SearchError(
                f"the pool holds a {type(candidate).__name__}, not a Candidate: build one with "
                "Candidate.from_spec(spec) or SearchSpace.sample(...)."
            )
        if candidate.spec in seen:
            raise SearchError(
                f"the pool holds {candidate.spec} twice: a search scores each architecture "
                "once; remove the duplicate."
            )
        seen.add(candidate.spec)
    return pool


def _check_epochs(value: Any, name: str) -> int:
    if not (_is_int(value) and value >= 1):
        raise SearchError(f"{name} must be a positive number of epochs, got {value!r}.")
    return value


def _evaluate(
    candidate: Candidate, epochs: int, score: Scorer, memo: ScoreMemo
) -> tuple[float, bool]:
    known = memo.get(candidate, epochs)
    if known is not None:
        return known, True
    start = time.perf_counter()
    value = score(candidate, epochs)
    seconds = time.perf_counter() - start
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchError(
            f"the scorer returned {value!r} for {candidate.spec} at {epochs} epochs: it must "
            "return a finite number (higher is better), e.g. a validation accuracy."
        )
    memo.put(candidate, epochs, float(value), seconds)
    return float(value), False


def _ranked(rung: list[Candidate], scores: dict[str, float], order: dict[str, int]) -> list:
    """The rung best first; ties go to the candidate earlier in the pool."""
    return sorted(rung, key=lambda c: (-scores[c.spec], order[c.spec]))


def _row(
    strategy: str, rung: int, candidate: Candidate, epochs: int, score: float, reused: bool
) -> dict[str, Any]:
    return {
        "strategy": strategy,
        "rung": rung,
        "spec": candidate.spec,
        "model": candidate.model,
        "flops": candidate.flops,
        "params": candidate.params,
        "epochs": epochs,
        "score": score,
        "kept": False,
        "reused": reused,
        "budget_spent": 0,
    }


def _finish(strategy: str, rows: list[dict[str, Any]], best: Candidate) -> SearchResult:
    spent = 0
    for row in rows:
        spent += row["epochs"]
        row["budget_spent"] = spent
    final = [r for r in rows if r["spec"] == best.spec][-1]
    return SearchResult(
        strategy,
        tuple(rows),
        best,
        final["score"],
        spent,
        sum(r["epochs"] for r in rows if not r["reused"]),
    )


def random_search(
    candidates: Sequence[Candidate],
    score: Scorer,
    *,
    epochs: int,
    n: int | None = None,
    seed: int = 0,
    memo: ScoreMemo | str | os.PathLike[str] | None = None,
) -> SearchResult:
    """Random search: score ``n`` candidates of the pool, each at ``epochs``, keep the best.

    With ``n`` given, the ``n`` candidates are drawn from the pool without replacement by a
    generator seeded with ``seed`` and scored in the order drawn; with ``n=None`` the whole
    pool is scored in its order (a pool from :meth:`SearchSpace.sample` is already a random
    draw). Ties go to the candidate scored first. Bergstra & Bengio (2012).

    Args:
        candidates: The pool (distinct architectures).
        score: ``score(candidate, epochs) -> float``, higher is better.
        epochs: Training epochs of every evaluation.
        n: How many candidates to score (``None``: all).
        seed: Seeds the draw of ``n`` candidates.
        memo: A :class:`ScoreMemo`, a CSV path (resumes from it) or ``None``.

    Returns:
        A :class:`SearchResult` with one row per candidate; budget ``n * epochs``.

    Example:
        >>> space = SearchSpace(convnet_stages=(2,), widths=(8, 16), blocks=(1,),
        ...                     resnet_depths=())
        >>> fake = lambda candidate, epochs: float(candidate.params % 97)
        >>> result = random_search(space.candidates(), fake, epochs=2)
        >>> result.budget, result.best.spec
        (6, 'convnet(blocks_per_stage=(1,1),stem_stride=2,widths=(16,16))')
    """
    pool = _check_pool(candidates)
    epochs = _check_epochs(epochs, "epochs")
    if not (_is_int(seed) and seed >= 0):
        raise SearchError(f"seed must be a non-negative integer, got {seed!r}.")
    if n is not None:
        if not (_is_int(n) and 1 <= n <= len(pool)):
            raise SearchError(
                f"random search cannot draw {n!r} of {len(pool)} candidates without "
                f"replacement: ask for 1 to {len(pool)}, or n=None for all of them."
            )
        pool = random.Random(seed).sample(pool, n)
    store = _as_memo(memo, score)
    rows, scores = [], {}
    for candidate in pool:
        value, reused = _evaluate(candidate, epochs, score, store)
        scores[candidate.spec] = value
        rows.append(_row("random", 0, candidate, epochs, value, reused))
    order = {c.spec: i for i, c in enumerate(pool)}
    best = _ranked(pool, scores, order)[0]
    next(r for r in rows if r["spec"] == best.spec)["kept"] = True
    return _finish("random", rows, best)


def halving_schedule(
    n: int, *, min_epochs: int, max_epochs: int, eta: int = 3
) -> list[tuple[int, int]]:
    """The rungs of :func:`successive_halving` on ``n`` candidates, as ``(candidates,
    epochs)`` pairs.

    Rung :math:`k` holds :math:`n_k = \\lfloor n_{k-1} / \\eta \\rfloor` candidates (:math:`n_0
    = n`) and trains them for :math:`\\min(r_0 \\eta^k, R)` epochs (:math:`r_0` =
    ``min_epochs``, :math:`R` = ``max_epochs``); the last rung is the one that would keep a
    single candidate (:math:`\\lfloor n_k / \\eta \\rfloor \\le 1`), and it trains for
    :math:`R` epochs.

    Example:
        >>> halving_schedule(27, min_epochs=2, max_epochs=20, eta=3)
        [(27, 2), (9, 6), (3, 20)]
        >>> sum(n * r for n, r in halving_schedule(27, min_epochs=2, max_epochs=20))
        168
    """
    if not (_is_int(n) and n >= 1):
        raise SearchError(f"successive halving needs at least one candidate, got n={n!r}.")
    min_epochs = _check_epochs(min_epochs, "min_epochs")
    max_epochs = _check_epochs(max_epochs, "max_epochs")
    if not (_is_int(eta) and eta >= 2):
        raise SearchError(
            f"eta must be an integer of at least 2 (keep 1/eta of each rung), got {eta!r}."
        )
    if min_epochs > max_epochs:
        raise SearchError(
            f"min_epochs ({min_epochs}) exceeds max_epochs ({max_epochs}): the first rung "
            "trains for min_epochs, the last for max_epochs."
        )
    sizes = [n]
    while sizes[-1] // eta > 1:
        sizes.append(sizes[-1] // eta)
    epochs = [min(min_epochs * eta**k, max_epochs) for k in range(len(sizes) - 1)]
    return list(zip(sizes, [*epochs, max_epochs], strict=True))


def successive_halving(
    candidates: Sequence[Candidate],
    score: Scorer,
    *,
    min_epochs: int,
    max_epochs: int,
    eta: int = 3,
    memo: ScoreMemo | str | os.PathLike[str] | None = None,
) -> SearchResult:
    """Successive halving: train many candidates briefly, the best longer, the best of
    those longest (Jamieson & Talwalkar 2016; the rungs of :func:`halving_schedule`).

    Each rung scores its candidates in pool order, then keeps the best :math:`\\lfloor n_k /
    \\eta \\rfloor` (ties: earlier in the pool) for the next rung; the best of the last rung
    wins. Every score is a fresh run of the given length (a complete schedule of ``epochs``
    epochs, not a continuation), so a score the memo holds, e.g. from a random search at the
    same length on the same pool, is reused instead of trained.

    Args:
        candidates: The pool (distinct architectures).
        score: ``score(candidate, epochs) -> float``, higher is better.
        min_epochs: Epochs of the first rung.
        max_epochs: Epochs of the last rung.
        eta: Keep one candidate in ``eta`` at each rung.
        memo: A :class:`ScoreMemo`, a CSV path (resumes from it) or ``None``.

    Returns:
        A :class:`SearchResult`: rows rung by rung, ``kept`` marking the promoted ones.
    """
    pool = _check_pool(candidates)
    schedule = halving_schedule(len(pool), min_epochs=min_epochs, max_epochs=max_epochs, eta=eta)
    store = _as_memo(memo, score)
    order = {c.spec: i for i, c in enumerate(pool)}
    rows: list[dict[str, Any]] = []
    rung_pool = pool
    best = pool[0]
    for rung, (_, epochs) in enumerate(schedule):
        scores: dict[str, float] = {}
        first = len(rows)
        for candidate in rung_pool:
            value, reused = _evaluate(candidate, epochs, score, store)
            scores[candidate.spec] = value
            rows.append(_row("halving", rung, candidate, epochs, value, reused))
        keep = schedule[rung + 1][0] if rung + 1 < len(schedule) else 1
        ranked = _ranked(rung_pool, scores, order)
        kept = {c.spec for c in ranked[:keep]}
        for row in rows[first:]:
            row["kept"] = row["spec"] in kept
        best = ranked[0]
        rung_pool = [c for c in rung_pool if c.spec in kept]
    return _finish("halving", rows, best)


def pareto_front(cost: Sequence[float], acc: Sequence[float]) -> list[int]:
    """Indices of the points no other point dominates (lower or equal cost and higher or
    equal accuracy, one of them strictly), sorted by cost, then by index.

    Example:
        >>> pareto_front([1.0, 2.0, 3.0, 2.5], [60.0, 70.0, 65.0, 71.0])
        [0, 1, 3]
    """
    cost, acc = list(cost), list(acc)
    if len(cost) != len(acc):
        raise SearchError(f"cost and acc differ in length ({len(cost)} and {len(acc)}).")
    values = [*cost, *acc]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise SearchError("cost and acc must be finite numbers.")
    order = sorted(range(len(cost)), key=lambda i: (cost[i], -acc[i], i))
    front: list[int] = []
    best_acc = -math.inf
    best_cost = math.nan
    for i in order:
        if acc[i] > best_acc:
            front.append(i)
            best_acc, best_cost = acc[i], cost[i]
        elif acc[i] == best_acc and cost[i] == best_cost:
            front.append(i)  # an exact duplicate of a front point is not dominated
    return sorted(front, key=lambda i: (cost[i], i))


# ---------------------------------------------------------------------------- the KD scorer


class KDScorer:
    """Scores a candidate by a short distillation run: the candidate is built after
    ``seed_everything(seed)``, distilled from ``teacher`` by ``method`` with ``fit(...,
    epochs=epochs)`` (a complete schedule of that length) on ``train``, and scored by its
    last-epoch accuracy on ``val`` (validation images, never the test set).

    Build it with :func:`kd_score`. ``label`` names everything that changes a score
    besides the architecture and the epochs (method, seed, teacher weights, data sizes,
    settings), and keys the :class:`ScoreMemo` rows it writes.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        train: Any,
        val: Any,
        *,
        method: str = "kd",
        hparams: Mapping[str, Any] | None = None,
        seed: int = 0,
        **fit_kwargs: Any,
    ) -> None:
        from .cache import weights_digest
        from .methods import get_method

        cls = get_method(method)
        if cls.requires_teacher and not isinstance(teacher, nn.Module):
            raise SearchError(
                f"method {method!r} needs a trained teacher network, got "
                f"{type(teacher).__name__}: load one with kdtutor.zoo.load_teacher(...), or "
                "score candidates alone with method='scratch'."
            )
        for data, split in ((train, "train"), (val, "val")):
            missing = [a for a in ("images", "num_classes", "in_channels") if not hasattr(data, a)]
            if missing:
                raise SearchError(
                    f"kd_score's {split} data must be an ArrayDataset (kdtutor.data."
                    f"load_dataset or bench.knowledge.preset_data), got {type(data).__name__}."
                )
        taken = sorted({"epochs", "seed"} & set(fit_kwargs))
        if taken:
            raise SearchError(
                f"kd_score sets {' and '.join(taken)} itself (the search chooses the epochs, "
                "seed= the seed); drop them from the fit settings."
            )
        if not (_is_int(seed) and seed >= 0):
            raise SearchError(f"seed must be a non-negative integer, got {seed!r}.")
        self.teacher = teacher
        self.train = train
        self.val = val
        self.method = method
        self.hparams = dict(hparams or {})
        self.seed = seed
        self.fit_kwargs = fit_kwargs
        settings = " ".join(f"{k}={v!r}" for k, v in sorted({**self.hparams, **fit_kwargs}.items()))
        teacher_id = weights_digest(teacher)[:12] if teacher is not None else "none"
        self.label = (
            f"{method} seed={seed} teacher={teacher_id} train={len(train)} val={len(val)}"
            + (f" {settings}" if settings else "")
        )

    def __call__(self, candidate: Candidate, epochs: int) -> float:
        from .methods import build_distiller, get_method
        from .seeding import seed_everything
        from .train import fit

        seed_everything(self.seed)
        student = candidate.build(self.train.num_classes, self.train.in_channels)
        values = {
            **get_method(self.method).scaled_hparams(epochs, len(self.train)),
            **self.hparams,
        }
        distiller = build_distiller(
            self.method,
            student,
            self.teacher,
            values,
            input_shape=tuple(self.train.images.shape[1:]),
        )
        result = fit(
            distiller, self.train, self.val, epochs=epochs, seed=self.seed, **self.fit_kwargs
        )
        return float(result.last_acc)

    def __repr__(self) -> str:
        return f"KDScorer({self.label})"


def kd_score(
    teacher: nn.Module | None,
    train: Any,
    val: Any,
    *,
    method: str = "kd",
    hparams: Mapping[str, Any] | None = None,
    seed: int = 0,
    **fit_kwargs: Any,
) -> KDScorer:
    """A scorer that distils each candidate for the given epochs and returns its accuracy
    on ``val`` (see :class:`KDScorer`).

    Args:
        teacher: The trained teacher (``None`` for ``method="scratch"``).
        train: Training images (an ``ArrayDataset``).
        val: Validation images the score is measured on (never the test split).
        method: A registered method (``"kd"``: Hinton et al. 2015, the loss
            :math:`(1-\\alpha)\\,\\mathrm{CE}(z_s, y) + \\alpha T^2\\,\\mathrm{KL}(p_t^T \\| p_s^T)`
            with KD's defaults; ``"scratch"``: the candidate alone).
        hparams: The method's hyperparameters (defaults: the paper's).
        seed: Seeds every candidate's initialisation and batch order alike.
        **fit_kwargs: Settings of :func:`kdtutor.train.fit` (``batch_size``, ``lr``,
            ``cache_location="disk"`` to fill the teacher's outputs once for the whole
            search, ...), never ``epochs`` or ``seed``.

    Example:
        >>> score = kd_score(teacher, train, val, batch_size=64)  # doctest: +SKIP
        >>> result = successive_halving(pool, score, min_epochs=2, max_epochs=20,
        ...                             memo="search.csv")  # doctest: +SKIP
    """
    return KDScorer(teacher, train, val, method=method, hparams=hparams, seed=seed, **fit_kwargs)
