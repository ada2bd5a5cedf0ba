"""The ``retrieval`` and ``lanes`` tasks of chapter 8 against direct computations: loops over
queries and pairs, brute-force threshold searches, per-pixel drawing, and hand-made lane
cases (a shifted lane, a missing lane, an extra lane, a matching only the Hungarian finds).

The task modules are imported inside the tests and the task registry is restored after each
one (see ``test_tasks_dense.py``).
"""

from __future__ import annotations

import importlib
import itertools
import math

import numpy as np
import pytest
import torch

from kdtutor.errors import ShapeMismatchError
from kdtutor.tasks import base, get_task

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_task_registry():
    saved = dict(base._TASKS)
    yield
    base._TASKS.clear()
    base._TASKS.update(saved)


@pytest.mark.parametrize(
    ("module", "cls", "primary"), [("retrieval", "Retrieval", "recall1"), ("lanes", "Lanes", "f1")]
)
def test_the_tasks_register_under_their_names(module, cls, primary):
    mod = importlib.reload(importlib.import_module(f"kdtutor.tasks.{module}"))
    task = get_task(module)
    assert type(task) is getattr(mod, cls)
    assert task.primary == primary and task.primary in task.metric_names
    assert task.higher_is_better
    assert set(mod.__all__) <= set(dir(mod))


# --- retrieval -------------------------------------------------------------------------------


def identities(n_ids: int = 30, per_id: int = 6, dim: int = 8, noise: float = 0.9, seed: int = 0):
    """Embeddings around one centre per identity; the noise makes recall@1 intermediate."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_ids, dim, generator=gen)
    labels = torch.arange(n_ids).repeat_interleave(per_id)
    embeddings = centres[labels] + noise * torch.randn(len(labels), dim, generator=gen)
    order = torch.randperm(len(labels), generator=gen)  # identities interleaved
    return embeddings[order], labels[order]


@pytest.mark.parametrize("normalize", [True, False])
def test_recall_at_k_equals_a_loop_over_queries(normalize):
    from kdtutor.tasks.retrieval import recall_at_k, similarity_matrix

    e, labels = identities()
    recall = recall_at_k(similarity_matrix(e, normalize), labels, (1, 5))
    x = e.double().numpy()
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = labels.numpy()
    hits = {1: 0, 5: 0}
    for q in range(len(x)):
        others = [g for g in range(len(x)) if g != q]
        if normalize:
            closeness = [float(x[q] @ x[g]) for g in others]
        else:
            closeness = [-float(((x[q] - x[g]) ** 2).sum()) for g in others]
        ranked = [others[i] for i in np.argsort(closeness)[::-1]]
        for k in hits:
            hits[k] += any(y[g] == y[q] for g in ranked[:k])
    assert recall[1] == pytest.approx(hits[1] / len(x), abs=1e-7)  # torchmetrics: float32
    assert recall[5] == pytest.approx(hits[5] / len(x), abs=1e-7)
    assert 0.2 < recall[1] < recall[5] < 1.0


def test_recall_equals_retrieval_hit_rate_over_all_pairs_without_self():
    """The design note's claim, and the truncation to the top max(k) of each query."""
    from torchmetrics.retrieval import RetrievalHitRate

    from kdtutor.tasks.retrieval import recall_at_k, similarity_matrix

    e, labels = identities(seed=1)
    sim = similarity_matrix(e)
    n = len(labels)
    off = ~torch.eye(n, dtype=torch.bool)
    queries = torch.arange(n)[:, None].expand(n, n)[off]
    relevant = (labels[:, None] == labels[None, :])[off]
    recall = recall_at_k(sim, labels, (1, 5))
    for k in (1, 5):
        full = RetrievalHitRate(top_k=k)
        full.update(sim[off], relevant, indexes=queries)
        assert recall[k] == pytest.approx(float(full.compute()), abs=1e-7)


def test_verification_pairs_are_all_positives_and_as_many_negatives_in_balanced_folds():
    from kdtutor.tasks.retrieval import verification_pairs

    _, labels = identities(n_ids=20, per_id=5)
    i, j, same, fold = verification_pairs(labels)
    assert int(same.sum()) == 20 * 10 and int((~same).sum()) == 200
    assert bool((i < j).all()) and bool((labels[i] == labels[j]).eq(same).all())
    expected = {
        (a, b)
        for a in range(len(labels))
        for b in range(a + 1, len(labels))
        if labels[a] == labels[b]
    }
    assert set(zip(i[same].tolist(), j[same].tolist(), strict=True)) == expected
    assert len(set(zip(i[~same].tolist(), j[~same].tolist(), strict=True))) == 200  # distinct
    for k in range(10):
        assert int((same & (fold == k)).sum()) == 20 and int((~same & (fold == k)).sum()) == 20
    again = verification_pairs(labels)
    assert all(torch.equal(a, b) for a, b in zip((i, j, same, fold), again, strict=True))
    other = verification_pairs(labels, seed=1)
    assert not torch.equal(i[~same], other[0][~other[2]])


def brute_force_kfold(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> float:
    """For each fold: try every threshold between distinct training scores (and beyond both
    ends), keep the most accurate on the other folds (the highest on a tie), score the fold."""
    accuracies = []
    for k in sorted(set(fold.tolist())):
        train = fold != k
        values = sorted(set(scores[train].tolist()), reverse=True)
        candidates = [values[0] + 1.0] + [(a + b) / 2 for a, b in itertools.pairwise(values)]
        candidates.append(values[-1] - 1.0)
        best, best_acc = None, -1.0
        for t in candidates:
            correct = sum((s > t) == y for s, y in zip(scores[train], same[train], strict=True))
            acc = correct / int(train.sum())
            if acc > best_acc:
                best, best_acc = t, acc
        test = ~train
        correct = sum((s > best) == y for s, y in zip(scores[test], same[test], strict=True))
        accuracies.append(correct / int(test.sum()))
    return float(np.mean(accuracies))


def test_kfold_verification_accuracy_equals_a_brute_force_search():
    from kdtutor.tasks.retrieval import (
        kfold_verification_accuracy,
        similarity_matrix,
        verification_pairs,
    )

    e, labels = identities(n_ids=15, per_id=5, noise=1.3, seed=2)
    i, j, same, fold = verification_pairs(labels)
    scores = similarity_matrix(e)[i, j]
    ours = kfold_verification_accuracy(scores, same, fold)
    direct = brute_force_kfold(scores.numpy(), same.numpy(), fold.numpy())
    assert ours == pytest.approx(direct, abs=1e-12)
    assert 0.6 < ours < 0.99
    # ties: scores on a coarse grid, so thresholds can only fall between distinct values
    coarse = (scores * 4).round() / 4
    assert kfold_verification_accuracy(coarse, same, fold) == pytest.approx(
        brute_force_kfold(coarse.numpy(), same.numpy(), fold.numpy()), abs=1e-12
    )


def test_tar_at_far_equals_the_count_above_the_kth_negative_and_interpolates():
    from kdtutor.tasks.retrieval import tar_at_far

    gen = torch.Generator().manual_seed(3)
    positives = 1.0 + torch.randn(300, generator=gen, dtype=torch.float64)
    negatives = torch.randn(400, generator=gen, dtype=torch.float64)
    scores = torch.cat([positives, negatives])
    same = torch.cat([torch.ones(300, dtype=torch.bool), torch.zeros(400, dtype=torch.bool)])
    ranked = np.sort(negatives.numpy())[::-1]
    for far, k in ((0.01, 4), (0.1, 40), (0.0025, 1)):
        direct = float(np.mean(positives.numpy() > ranked[k]))  # k negatives accepted
        assert tar_at_far(scores, same, far) == pytest.approx(direct, abs=1e-12)
    # a tied positive/negative pair makes a diagonal segment: (0, 0.5) -> (0.5, 1)
    tied = torch.tensor([0.9, 0.7, 0.7, 0.2])
    tied_same = torch.tensor([True, True, False, False])
    assert tar_at_far(tied, tied_same, 0.25) == pytest.approx(0.75)
    assert tar_at_far(tied, tied_same, 0.0) == pytest.approx(0.5)
    assert tar_at_far(tied, tied_same, 1.0) == pytest.approx(1.0)


def test_the_retrieval_task_scores_the_whole_split_at_the_end():
    from kdtutor.tasks.retrieval import (
        Retrieval,
        kfold_verification_accuracy,
        recall_at_k,
        similarity_matrix,
        tar_at_far,
        verification_pairs,
    )

    e, labels = identities(seed=4)
    task = Retrieval()
    metrics = task.metrics()
    for start in range(0, len(labels), 64):
        task.update(metrics, e[start : start + 64], labels[start : start + 64])
    scores = task.compute(metrics)
    assert set(scores) == set(task.metric_names)
    sim = similarity_matrix(e)
    i, j, same, fold = verification_pairs(labels)
    assert scores["recall1"] == pytest.approx(100 * recall_at_k(sim, labels)[1])
    assert scores["verification_acc"] == pytest.approx(
        100 * kfold_verification_accuracy(sim[i, j], same, fold)
    )
    assert scores["tar_far_1e-2"] == pytest.approx(100 * tar_at_far(sim[i, j], same, 1e-2))
    separated, _ = identities(seed=4, noise=0.01)
    perfect = task.metrics()
    task.update(perfect, separated, labels)
    assert all(v == pytest.approx(100.0) for v in task.compute(perfect).values())
    with pytest.raises(ShapeMismatchError, match="embeddings"):
        task.update(task.metrics(), e[:5], labels[:4])


# --- lanes -----------------------------------------------------------------------------------

H, W = 48, 128
ROWS = torch.arange(4, 48, 4)  # 11 sample rows


def column(x: float, rows: torch.Tensor = ROWS) -> torch.Tensor:
    return torch.full((len(rows),), float(x))


def absent() -> torch.Tensor:
    return torch.full((len(ROWS),), -1.0)


def outputs_for(points: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits that decode to ``points`` ``(B, 4, R)``: a large logit for slot s at each point,
    all others 0 (probability 0.2 < 0.3 elsewhere), existence +-5."""
    b = points.shape[0]
    out = torch.zeros(b, 5, H, W)
    for n in range(b):
        for s in range(4):
            for r, x in enumerate(points[n, s].tolist()):
                if x >= 0:
                    out[n, s + 1, int(ROWS[r]), int(x)] = 10.0
    exist = torch.where((points >= 0).sum(-1) >= 2, 5.0, -5.0)
    return {"out": out, "exist": exist}


def lane_scenes() -> tuple[torch.Tensor, torch.Tensor]:
    """Five images of hand-made lanes, (true points, predicted points), each (5, 4, R)."""
    slant = torch.tensor([30.0 + 0.5 * float(r) for r in ROWS])
    true = torch.stack(
        [
            torch.stack([column(20), slant, absent(), absent()]),  # 0: both found exactly
            torch.stack([column(20), absent(), absent(), absent()]),  # 1: found 1 px off
            torch.stack([column(20), column(100), absent(), absent()]),  # 2: one missed
            torch.stack([column(60), absent(), absent(), absent()]),  # 3: an extra one
            torch.stack([absent(), absent(), absent(), absent()]),  # 4: no lane, one predicted
        ]
    )
    pred = torch.stack(
        [
            torch.stack([column(20), slant, absent(), absent()]),
            torch.stack([column(21), absent(), absent(), absent()]),
            torch.stack([column(20), absent(), absent(), absent()]),
            torch.stack([column(60), absent(), column(90), absent()]),
            torch.stack([absent(), column(40), absent(), absent()]),
        ]
    )
    return true, pred


def test_a_vertical_lane_is_drawn_three_pixels_wide():
    from kdtutor.tasks.lanes import draw_lanes, lane_iou

    lane = np.array([[20.0, 4.0], [20.0, 44.0]])
    mask = draw_lanes([lane], H, W, 3.0)[0]
    rows, cols = np.nonzero(mask)
    assert set(cols.tolist()) == {19, 20, 21} and (rows.min(), rows.max()) == (3, 45)
    assert mask.sum() == 43 * 3  # rows 3-45 (round caps of radius 1.5) x 3 columns
    shifted = draw_lanes([lane + np.array([1.0, 0.0])], H, W, 3.0)
    assert lane_iou(mask[None], shifted)[0, 0] == pytest.approx(0.5)  # 2 of 4 columns


def test_drawing_equals_a_per_pixel_distance_loop():
    from kdtutor.tasks.lanes import draw_lanes

    gen = np.random.default_rng(0)
    lanes = [
        np.stack([gen.uniform(0, 30, n), np.sort(gen.uniform(0, 20, n))], 1) for n in (2, 4, 6)
    ]
    lanes.append(np.array([[5.0, 5.0], [5.0, 5.0], [9.0, 12.0]]))  # a repeated point
    masks = draw_lanes(lanes, 20, 30, 3.0)
    for lane, mask in zip(lanes, masks, strict=True):
        for r in range(20):
            for c in range(30):
                best = math.inf
                for (x0, y0), (x1, y1) in itertools.pairwise(lane):
                    dx, dy = x1 - x0, y1 - y0
                    length2 = dx * dx + dy * dy
                    t = 0.0 if length2 == 0 else ((c - x0) * dx + (r - y0) * dy) / length2
                    t = min(1.0, max(0.0, t))
                    best = min(best, math.hypot(c - (x0 + t * dx), r - (y0 + t * dy)))
                assert mask[r, c] == (best <= 1.5), (r, c)


def test_culane_counts_on_hand_made_lanes():
    from kdtutor.tasks.lanes import culane_counts

    def lane(x, y0=4, y1=44):
        return np.array([[float(x), float(y)] for y in range(y0, y1 + 1, 4)])

    assert culane_counts([lane(20)], [lane(20)], H, W) == (1, 0, 0)
    assert culane_counts([lane(20)], [lane(21)], H, W) == (0, 1, 1)  # IoU 0.5 is not > 0.5
    assert culane_counts([lane(20)], [lane(21)], H, W, line=5.0) == (1, 0, 0)  # 4 of 6 columns
    assert culane_counts([lane(20), lane(100)], [lane(20)], H, W) == (1, 0, 1)  # missed
    assert culane_counts([lane(60)], [lane(60), lane(90)], H, W) == (1, 1, 0)  # extra
    assert culane_counts([], [lane(40)], H, W) == (0, 1, 0)
    assert culane_counts([lane(40)], [], H, W) == (0, 0, 1)


def test_culane_matching_maximises_the_summed_iou():
    """A greedy matching (best pair first) finds 1 true positive here, the Hungarian 2."""
    from kdtutor.tasks.lanes import culane_counts, draw_lanes, lane_iou

    def lane(y0, y1, x=20.0):
        return np.array([[x, float(y)] for y in range(y0, y1 + 1, 4)])

    a, b = lane(4, 44), lane(4, 24)
    p, q = lane(4, 40), lane(24, 44)
    iou = lane_iou(draw_lanes([a, b], H, W, 3.0), draw_lanes([p, q], H, W, 3.0))
    assert iou.argmax() == 0  # (a, p) is the best pair: greedy takes it, leaving (b, q)
    assert iou[1, 1] < 0.5 < min(iou[0, 1], iou[1, 0])
    assert iou[0, 1] + iou[1, 0] > iou[0, 0] + iou[1, 1]
    assert culane_counts([a, b], [p, q], H, W) == (2, 0, 0)


def official_tusimple(pred, gt, y_samples, pixel_thresh=2.0, pt_thresh=0.85):
    """TuSimple's ``LaneEval.bench`` (tusimple-benchmark ``evaluate/lane.py`` at ``365c4cd``),
    transcribed with the official sklearn fit and the threshold scaled to 128 px."""
    from sklearn.linear_model import LinearRegression

    if len(gt) + 2 < len(pred):
        return 0.0
    angles = []
    for x_gts in gt:
        xs, ys = np.array(x_gts), np.array(y_samples)
        xs, ys = xs[xs >= 0], ys[xs >= 0]
        if len(xs) > 1:
            theta = np.arctan(LinearRegression().fit(ys[:, None], xs).coef_[0])
        else:
            theta = 0
        angles.append(theta)
    threshs = [pixel_thresh / np.cos(angle) for angle in angles]
    line_accs = []
    for x_gts, thresh in zip(gt, threshs, strict=True):
        accs = []
        for x_preds in pred:
            p = np.array([v if v >= 0 else -100 for v in x_preds])
            g = np.array([v if v >= 0 else -100 for v in x_gts])
            accs.append(np.sum(np.where(np.abs(p - g) < thresh, 1.0, 0.0)) / len(g))
        line_accs.append(np.max(accs) if len(accs) > 0 else 0.0)
    s = sum(line_accs)
    if len(gt) > 4:
        s -= min(line_accs)
    return s / max(min(4.0, len(gt)), 1.0)


def test_tusimple_accuracy_equals_the_official_code_on_random_lanes():
    from kdtutor.tasks.lanes import tusimple_accuracy

    gen = np.random.default_rng(1)
    rows = ROWS.numpy().astype(float)
    for _ in range(60):
        n_true, n_pred = gen.integers(0, 5), gen.integers(0, 6)
        true = 20 + 80 * gen.random((n_true, 1)) + gen.normal(0, 4, (n_true, 1)) * rows / 10
        pred = np.concatenate([true, 20 + 80 * gen.random((n_pred, len(rows)))])[:n_pred]
        pred = pred + gen.normal(0, 1.5, pred.shape)
        true = np.where(gen.random(true.shape) < 0.15, -1.0, true)  # rows without the lane
        pred = np.where(gen.random(pred.shape) < 0.15, -1.0, pred)
        ours = tusimple_accuracy(true, pred, rows)
        assert ours == pytest.approx(official_tusimple(pred.tolist(), true.tolist(), rows))


def test_tusimple_tolerance_follows_the_lane_angle():
    from kdtutor.tasks.lanes import tusimple_accuracy

    rows = ROWS.numpy().astype(float)
    lane = 10.0 + rows  # 45 degrees: the tolerance is 2 / cos 45 = 2.83 px
    assert tusimple_accuracy(lane[None], (lane + 2.5)[None], rows) == 1.0
    assert tusimple_accuracy(lane[None], (lane + 3.0)[None], rows) == 0.0
    assert tusimple_accuracy((lane * 0 + 50)[None], (lane * 0 + 52.5)[None], rows) == 0.0


def test_decoding_keeps_confident_points_of_existing_slots_with_two_points():
    from kdtutor.tasks.lanes import decode_lanes

    true, _ = lane_scenes()
    out = outputs_for(true)
    assert torch.equal(decode_lanes(out["out"], out["exist"], ROWS), true)
    weak = {k: v.clone() for k, v in out.items()}
    weak["exist"][0, 0] = -0.1  # existence 0.475: the slot is dropped
    weak["out"][0, 2, int(ROWS[3]), :] = 0.0  # one row of the slant below 0.3: that point
    decoded = decode_lanes(weak["out"], weak["exist"], ROWS)
    assert bool((decoded[0, 0] == -1).all())
    assert decoded[0, 1, 3] == -1 and torch.equal(decoded[0, 1, 4:], true[0, 1, 4:])
    single = torch.full((1, 4, len(ROWS)), -1.0)
    single[0, 2, 5] = 64.0  # one point only: no lane
    lone = outputs_for(single)
    lone["exist"][:] = 5.0
    assert bool((decode_lanes(lone["out"], lone["exist"], ROWS) == -1).all())


def test_the_lanes_task_counts_hand_made_scenes():
    from kdtutor.tasks.lanes import Lanes

    true, pred = lane_scenes()
    task = Lanes(rows=ROWS)
    metrics = task.metrics()
    out = outputs_for(pred)
    exist = ((true >= 0).sum(-1) >= 2).float()
    for part in (slice(0, 2), slice(2, 5)):
        outputs = {k: v[part] for k, v in out.items()}
        task.update(metrics, outputs, {"points": true[part], "exist": exist[part]})
    scores = task.compute(metrics)
    tp, fp, fn = 2 + 0 + 1 + 1 + 0, 0 + 1 + 0 + 1 + 1, 0 + 1 + 1 + 0 + 0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert scores["precision"] == pytest.approx(100 * precision)
    assert scores["recall"] == pytest.approx(100 * recall)
    assert scores["f1"] == pytest.approx(100 * 2 * precision * recall / (precision + recall))
    # TuSimple: 1, 1 (1 px is within 2), 0.5, 1, 0 (no true lane scores 0, as the official code)
    assert scores["tusimple_acc"] == pytest.approx(100 * (1 + 1 + 0.5 + 1 + 0) / 5)
    assert task.batch_size({"points": true, "exist": exist, "mask": true[:, 0]}) == 5
    perfect = task.metrics()
    task.update(perfect, outputs_for(true), {"points": true})
    assert task.compute(perfect)["f1"] == 100.0
    with pytest.raises(ShapeMismatchError, match="sample rows"):
        Lanes(rows=ROWS[:5]).update(task.metrics(), out, {"points": true})
