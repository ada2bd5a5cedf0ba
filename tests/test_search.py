"""Searched students (kdtutor.search): the space counted by hand, the FLOPs budget against
``model_summary`` on real networks, random search and successive halving against
hand-worked examples with fake scorers, the memo (sharing, resume), determinism, bad input,
and one real 1-epoch KD scoring of two candidates on 256 ``shapes`` images.
"""

from __future__ import annotations

import csv
import itertools
import random
from math import comb

import pytest
import torch

from kdtutor.errors import KDTutorError
from kdtutor.models import build_model, model_summary
from kdtutor.search import (
    MEMO_COLUMNS,
    SEARCH_COLUMNS,
    Candidate,
    ScoreMemo,
    SearchSpace,
    halving_schedule,
    kd_score,
    pareto_front,
    random_search,
    successive_halving,
)
from kdtutor.specs import build_from_spec, format_model_spec

torch.set_num_threads(1)


def tiny_space(**overrides) -> SearchSpace:
    """2-stage CNNs of widths {8, 16} and 1 or 2 blocks a stage, ResNet-8s of widths {8, 16}."""
    options = dict(
        convnet_stages=(2,),
        widths=(8, 16),
        blocks=(1, 2),
        resnet_depths=(8,),
        resnet_widths=(8, 16),
    )
    return SearchSpace(**{**options, **overrides})


def fake_pool(n: int) -> list[Candidate]:
    """``n`` distinct candidates (never built: the fake scorers only read their index)."""
    return [Candidate("convnet", (("widths", (8 + i,)),), 1000 + i, 100 + i) for i in range(n)]


def index(candidate: Candidate) -> int:
    return dict(candidate.kwargs)["widths"][0] - 8


class TableScorer:
    """Scores from a table ``{(index, epochs): score}``, counting every call."""

    label = "table"

    def __init__(self, table):
        self.table = table
        self.calls: list[tuple[int, int]] = []

    def __call__(self, candidate, epochs):
        self.calls.append((index(candidate), epochs))
        return self.table[(index(candidate), epochs)]


# -------------------------------------------------------------------- the space


def test_the_tiny_space_is_enumerated_as_counted_by_hand():
    # 2-stage widths, non-decreasing from {8, 16}: (8,8), (8,16), (16,16); blocks: 2**2 = 4
    # per widths; ResNet-8 widths (w1, w1, w2, w3) with w1 <= w2 <= w3 from {8, 16}: 4
    expected = [
        f"convnet(blocks_per_stage={b},stem_stride=2,widths={w})"
        for w in ("(8,8)", "(8,16)", "(16,16)")
        for b in ("(1,1)", "(1,2)", "(2,1)", "(2,2)")
    ] + [
        "resnet8(stem_stride=2,widths=(8,8,8,8))",
        "resnet8(stem_stride=2,widths=(8,8,8,16))",
        "resnet8(stem_stride=2,widths=(8,8,16,16))",
        "resnet8(stem_stride=2,widths=(16,16,16,16))",
    ]
    space = tiny_space()
    assert len(space) == 16
    assert [c.spec for c in space.candidates()] == expected


def test_the_default_space_holds_4102_architectures():
    # 3 stages: C(7+2, 3) = 84 width sequences x 2**3 block choices; 4 stages: C(10, 4) =
    # 210 x 2**4; ResNets: C(5+2, 3) = 35 width triples x 2 depths
    assert 84 * 8 + 210 * 16 + 35 * 2 == 4102
    assert (comb(9, 3), comb(10, 4), comb(7, 3)) == (84, 210, 35)
    space = SearchSpace()
    assert len(space) == 4102
    architectures = space.architectures()
    assert len({repr(a) for a in architectures}) == 4102
    convnets = [kw for model, kw in architectures if model == "convnet"]
    assert all(list(kw["widths"]) == sorted(kw["widths"]) for kw in convnets)
    assert sum(model.startswith("resnet") for model, _ in architectures) == 70
    # the hand-designed students lie in the space
    assert (
        "convnet",
        {"blocks_per_stage": (1, 1, 1), "stem_stride": 2, "widths": (16, 32, 64)},
    ) in (architectures)
    assert ("resnet8", {"stem_stride": 2, "widths": (8, 8, 16, 32)}) in architectures


def test_flops_and_params_equal_model_summary_of_the_built_networks():
    for candidate in tiny_space().candidates():
        network = build_from_spec(candidate.spec, num_classes=10, in_channels=3)
        summary = model_summary(network, (1, 3, 32, 32), latency_runs=0)
        assert (candidate.flops, candidate.params) == (summary.flops, summary.params)


def test_the_budget_filter_agrees_with_model_summary_at_the_boundary():
    space = tiny_space()
    measured = {}
    for model, kwargs in space.architectures():
        network = build_model(model, **kwargs)  # built and measured on the CPU, independently
        measured[format_model_spec(model, kwargs)] = model_summary(network, latency_runs=0).flops
    # 553,280 FLOPs is the cost of two candidates: the bound is inclusive
    limit = 553_280
    assert sum(f == limit for f in measured.values()) == 2
    assert [c.spec for c in space.feasible(limit)] == [s for s, f in measured.items() if f <= limit]
    inside = [c.spec for c in space.feasible(limit, min_flops=300_000)]
    assert inside == [s for s, f in measured.items() if 300_000 <= f <= limit]
    assert len(inside) == 5  # 479,392, 516,416, 553,120 and 553,280 twice


def test_the_hand_designed_students_cost_what_the_protocol_says():
    wide = Candidate.from_spec("cnn_wide_s2")
    resnet = Candidate.from_spec("resnet8_half_s2")
    assert (wide.params, resnet.params) == (24_346, 19_954)  # CONTRIBUTING: 24k and 20k
    assert wide.flops < resnet.flops < 1.62e6  # 1.4 and 1.6 MFLOPs


def test_sample_is_deterministic_distinct_and_within_budget():
    space = tiny_space()
    first = space.sample(6, max_flops=1e6, seed=3)
    assert [c.spec for c in first] == [c.spec for c in tiny_space().sample(6, 1e6, seed=3)]
    assert len({c.spec for c in first}) == 6
    assert all(c.flops <= 1e6 for c in first)
    orders = {tuple(c.spec for c in space.sample(6, 1e6, seed=s)) for s in range(6)}
    assert len(orders) > 1


def test_sample_of_every_feasible_candidate_is_a_permutation_of_them():
    space = tiny_space()
    feasible = {c.spec for c in space.feasible(1e6)}
    assert len(feasible) == 12
    assert {c.spec for c in space.sample(12, 1e6, seed=0)} == feasible
    with pytest.raises(KDTutorError, match="only 12 architectures"):
        space.sample(13, 1e6, seed=0)


def test_sample_draws_the_family_first():
    # 2 of the 12 candidates under 1e6 FLOPs are ResNets (17 %); a family-first draw starts
    # with a ResNet half the time (binomial sd over 200 seeds: 3.5 points)
    space = tiny_space()
    feasible = space.feasible(1e6)
    assert sum(c.model == "resnet8" for c in feasible) == 2
    firsts = [space.sample(1, 1e6, seed=s)[0] for s in range(400)]
    share = sum(c.model == "resnet8" for c in firsts) / 400
    assert 0.4 < share < 0.6
    # then uniformly within the family: each ResNet first about 100 times in 400 draws (sd
    # 8.7), each of the 10 plain CNNs about 20 times (sd 4.4)
    counts = {c.spec: sum(f.spec == c.spec for f in firsts) for c in feasible}
    assert all(
        (60 < k < 140) if spec.startswith("resnet") else (5 < k < 40) for spec, k in counts.items()
    )


# -------------------------------------------------------------------- strategies


def test_halving_schedule_by_hand():
    assert halving_schedule(27, min_epochs=2, max_epochs=20, eta=3) == [(27, 2), (9, 6), (3, 20)]
    assert halving_schedule(28, min_epochs=2, max_epochs=20, eta=3) == [(28, 2), (9, 6), (3, 20)]
    assert halving_schedule(81, min_epochs=1, max_epochs=27, eta=3) == [
        (81, 1), (27, 3), (9, 9), (3, 27),
    ]  # fmt: skip
    assert halving_schedule(10, min_epochs=1, max_epochs=8, eta=2) == [(10, 1), (5, 2), (2, 8)]
    # rungs beyond max_epochs are capped: 2, 6, 18, 54 -> 20
    assert halving_schedule(243, min_epochs=2, max_epochs=20, eta=3) == [
        (243, 2), (81, 6), (27, 18), (9, 20), (3, 20),
    ]  # fmt: skip
    assert halving_schedule(3, min_epochs=2, max_epochs=20, eta=3) == [(3, 20)]
    assert halving_schedule(1, min_epochs=2, max_epochs=20) == [(1, 20)]


def halving_table() -> dict[tuple[int, int], float]:
    """27 candidates. At 2 epochs the score rises with the index (18..26 promoted); at 6
    epochs it falls (18, 19, 20 promoted: a rank reversal); at 20 epochs 19 is best."""
    table = {(i, 2): float(i) for i in range(27)}
    table.update({(i, 6): 100.0 - i for i in range(18, 27)})
    table.update({(18, 20): 50.0, (19, 20): 70.0, (20, 20): 60.0})
    return table


def test_successive_halving_against_a_hand_worked_example():
    pool, scorer = fake_pool(27), TableScorer(halving_table())
    result = successive_halving(pool, scorer, min_epochs=2, max_epochs=20, eta=3)
    rows = result.rows
    assert [tuple(r) for r in rows] == [SEARCH_COLUMNS] * len(rows)
    assert [(r["rung"], r["epochs"]) for r in rows] == [(0, 2)] * 27 + [(1, 6)] * 9 + [(2, 20)] * 3
    rung1 = [r["spec"] for r in rows if r["rung"] == 1]
    rung2 = [r["spec"] for r in rows if r["rung"] == 2]
    assert rung1 == [pool[i].spec for i in range(18, 27)]
    assert rung2 == [pool[i].spec for i in (18, 19, 20)]
    assert [r["spec"] for r in rows if r["kept"]] == rung1 + rung2 + [pool[19].spec]
    assert result.best == pool[19]
    assert result.best_score == 70.0
    assert result.budget == 27 * 2 + 9 * 6 + 3 * 20 == 168
    assert result.trained == 168
    assert rows[-1]["budget_spent"] == 168
    assert [r["budget_spent"] for r in rows[:3]] == [2, 4, 6]
    assert len(scorer.calls) == len(set(scorer.calls)) == 39


def test_random_search_scores_the_pool_and_keeps_the_best():
    pool = fake_pool(5)
    scorer = TableScorer({(i, 6): s for i, s in enumerate([3.0, 9.0, 1.0, 9.0, 2.0])})
    result = random_search(pool, scorer, epochs=6)
    assert [r["spec"] for r in result.rows] == [c.spec for c in pool]
    assert result.best == pool[1]  # a tie with pool[3]: the one scored first wins
    assert [r["kept"] for r in result.rows] == [False, True, False, False, False]
    assert (result.budget, result.trained, result.best_score) == (30, 30, 9.0)
    assert scorer.calls == [(i, 6) for i in range(5)]


def test_random_search_draws_without_replacement_and_by_seed():
    pool = fake_pool(20)
    table = {(i, 1): float(i % 7) for i in range(20)}
    runs = [random_search(pool, TableScorer(table), epochs=1, n=8, seed=s) for s in (0, 0, 1)]
    specs = [[r["spec"] for r in run.rows] for run in runs]
    assert len(set(specs[0])) == 8
    assert set(specs[0]) <= {c.spec for c in pool}
    assert specs[0] == specs[1]
    assert specs[0] != specs[2]
    # the draw is Python's seeded sample without replacement, written out here
    expected = [c.spec for c in random.Random(0).sample(pool, 8)]
    assert specs[0] == expected
    every = random_search(pool, TableScorer(table), epochs=1, n=20, seed=5)
    assert sorted(r["spec"] for r in every.rows) == sorted(c.spec for c in pool)


def test_halving_reuses_what_random_search_scored_on_the_same_pool():
    # the design note's allocation: random search scores all 28 at 6 epochs (168
    # candidate-epochs); halving on the first 27 then trains only rungs 0 and 2: 114
    pool = fake_pool(28)
    table = halving_table()
    table.update({(i, 6): 100.0 - i for i in range(28) if (i, 6) not in table})
    table[(27, 2)] = 0.0
    scorer = TableScorer(table)
    memo = ScoreMemo(scorer="table")
    searched = random_search(pool, scorer, epochs=6, memo=memo)
    assert searched.trained == 168
    halving = successive_halving(pool[:27], scorer, min_epochs=2, max_epochs=20, memo=memo)
    assert (halving.budget, halving.trained) == (168, 27 * 2 + 3 * 20)
    assert [r["reused"] for r in halving.rows] == [False] * 27 + [True] * 9 + [False] * 3
    assert len(scorer.calls) == len(set(scorer.calls)) == 28 + 27 + 3


def test_searches_are_deterministic():
    pool = fake_pool(27)
    first = successive_halving(pool, TableScorer(halving_table()), min_epochs=2, max_epochs=20)
    second = successive_halving(pool, TableScorer(halving_table()), min_epochs=2, max_epochs=20)
    assert first == second


def test_ties_in_halving_go_to_the_earlier_candidate():
    pool = fake_pool(6)
    table = {(i, 1): 5.0 for i in range(6)}
    table.update({(0, 4): 1.0, (1, 4): 1.0})
    result = successive_halving(pool, TableScorer(table), min_epochs=1, max_epochs=4, eta=3)
    assert [r["spec"] for r in result.rows if r["rung"] == 1] == [pool[0].spec, pool[1].spec]
    assert result.best == pool[0]


# -------------------------------------------------------------------- memo and resume


class Killed(Exception):
    pass


def test_a_killed_search_resumes_from_its_csv(tmp_path):
    path = tmp_path / "memo.csv"
    pool, table = fake_pool(27), halving_table()

    class KilledAfter(TableScorer):
        def __call__(self, candidate, epochs):
            if len(self.calls) == 30:
                raise Killed
            return super().__call__(candidate, epochs)

    with pytest.raises(Killed):
        successive_halving(pool, KilledAfter(table), min_epochs=2, max_epochs=20, memo=path)
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == MEMO_COLUMNS
    assert len(rows) == 1 + 30
    resumed_scorer = TableScorer(table)
    resumed = successive_halving(pool, resumed_scorer, min_epochs=2, max_epochs=20, memo=path)
    assert len(resumed_scorer.calls) == 39 - 30
    fresh = successive_halving(pool, TableScorer(table), min_epochs=2, max_epochs=20)
    strip = [{k: v for k, v in r.items() if k != "reused"} for r in resumed.rows]
    assert strip == [{k: v for k, v in r.items() if k != "reused"} for r in fresh.rows]
    # killed after rung 0 (27 x 2 epochs) and 3 of rung 1: 6 x 6 + 3 x 20 epochs remain
    assert (resumed.best, resumed.budget, resumed.trained) == (fresh.best, 168, 96)
    assert resumed.trained == sum(e for _, e in resumed_scorer.calls)
    again = TableScorer(table)
    successive_halving(pool, again, min_epochs=2, max_epochs=20, memo=path)
    assert again.calls == []


def test_a_line_cut_short_is_dropped_and_the_file_stays_well_formed(tmp_path):
    path = tmp_path / "memo.csv"
    pool = fake_pool(3)
    memo = ScoreMemo(path, scorer="table")
    memo.put(pool[0], 2, 50.0, 1.0)
    with path.open("a") as handle:
        handle.write('table,"convnet(widths=(9,))",2,4')  # killed mid-write
    with pytest.warns(UserWarning, match="cut short"):
        reopened = ScoreMemo(path, scorer="table")
    assert len(reopened) == 1
    assert reopened.get(pool[0], 2) == 50.0
    reopened.put(pool[1], 2, 40.0)
    assert ScoreMemo(path, scorer="table").get(pool[1], 2) == 40.0


def test_rows_of_another_scorer_do_not_answer(tmp_path):
    path = tmp_path / "memo.csv"
    pool = fake_pool(2)
    ScoreMemo(path, scorer="kd seed=0").put(pool[0], 2, 50.0)
    other = ScoreMemo(path, scorer="scratch seed=0")
    assert other.get(pool[0], 2) is None
    other.put(pool[0], 2, 30.0)
    assert ScoreMemo(path, scorer="kd seed=0").get(pool[0], 2) == 50.0
    assert ScoreMemo(path, scorer="scratch seed=0").get(pool[0], 2) == 30.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b,c\n", "not a search memo"),
        (",".join(MEMO_COLUMNS) + "\ntable,convnet,2\n", "line 2: 3 fields"),
        (",".join(MEMO_COLUMNS) + '\ntable,"convnet(widths=(8,))",two,1,1000,100,0\n', "line 2"),
        (",".join(MEMO_COLUMNS) + '\ntable,"convnet(widths=(8,))",2,nan,1000,100,0\n', "finite"),
        (",".join(MEMO_COLUMNS) + "\ntable,os.system('x'),2,1,1000,100,0\n", "line 2"),
        (
            ",".join(MEMO_COLUMNS)
            + '\ntable,"convnet(widths=(8,))",2,1.0,1000,100,0'
            + '\ntable,"convnet(widths=(8,))",2,2.0,1000,100,0\n',
            "recorded twice",
        ),
    ],
)
def test_a_bad_memo_file_is_refused(tmp_path, content, message):
    path = tmp_path / "memo.csv"
    path.write_text(content)
    with pytest.raises(KDTutorError, match=message):
        ScoreMemo(path, scorer="table")


def test_a_memo_made_for_other_costs_is_refused(tmp_path):
    path = tmp_path / "memo.csv"
    pool = fake_pool(1)
    ScoreMemo(path, scorer="table").put(pool[0], 2, 50.0)
    changed = Candidate(pool[0].model, pool[0].kwargs, pool[0].flops * 4, pool[0].params)
    with pytest.raises(KDTutorError, match="another input shape or class count"):
        ScoreMemo(path, scorer="table").get(changed, 2)


# -------------------------------------------------------------------- pareto front


def test_pareto_front_equals_a_brute_force_front():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 25)
        cost = [float(rng.randint(1, 8)) for _ in range(n)]  # small grids: ties and duplicates
        acc = [float(rng.randint(50, 58)) for _ in range(n)]
        brute = [
            i
            for i in range(n)
            if not any(
                cost[j] <= cost[i] and acc[j] >= acc[i] and (cost[j], acc[j]) != (cost[i], acc[i])
                for j in range(n)
            )
        ]
        assert sorted(pareto_front(cost, acc)) == brute


# -------------------------------------------------------------------- bad input


def test_bad_pools_and_settings_are_refused():
    pool = fake_pool(4)
    scorer = TableScorer({})
    with pytest.raises(KDTutorError, match="empty"):
        random_search([], scorer, epochs=1)
    with pytest.raises(KDTutorError, match="twice"):
        random_search([pool[0], pool[1], pool[0]], scorer, epochs=1)
    with pytest.raises(KDTutorError, match="not a Candidate"):
        random_search(["convnet"], scorer, epochs=1)
    with pytest.raises(KDTutorError, match="list of Candidate"):
        random_search("convnet", scorer, epochs=1)
    with pytest.raises(KDTutorError, match="positive number of epochs"):
        random_search(pool, scorer, epochs=0)
    with pytest.raises(KDTutorError, match="without replacement"):
        random_search(pool, scorer, epochs=1, n=5)
    with pytest.raises(KDTutorError, match="without replacement"):
        random_search(pool, scorer, epochs=1, n=0)
    with pytest.raises(KDTutorError, match="eta"):
        successive_halving(pool, scorer, min_epochs=1, max_epochs=4, eta=1)
    with pytest.raises(KDTutorError, match="exceeds max_epochs"):
        successive_halving(pool, scorer, min_epochs=6, max_epochs=2)
    with pytest.raises(KDTutorError, match="memo must be"):
        random_search(pool, scorer, epochs=1, memo=3)
    assert scorer.calls == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "high", None, True])
def test_a_scorer_that_returns_no_number_is_refused(bad):
    with pytest.raises(KDTutorError, match="finite number"):
        random_search(fake_pool(2), lambda c, e: bad, epochs=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"widths": (8, 0)}, "positive integers"),
        ({"widths": (8, 8)}, "twice"),
        ({"blocks": 2}, "tuple of integers"),
        ({"resnet_depths": (10,)}, "no CIFAR ResNet of depth 10"),
        ({"resnet_depths": (26,)}, "no CIFAR ResNet of depth 26"),
        ({"convnet_stages": (), "resnet_depths": ()}, "empty"),
        ({"input_shape": (32, 32)}, "channels, height, width"),
        ({"stem_stride": 0}, "stem_stride"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_a_bad_space_is_refused(options, message):
    with pytest.raises(KDTutorError, match=message):
        tiny_space(**options)


def test_a_bad_budget_or_draw_is_refused():
    space = tiny_space()
    with pytest.raises(KDTutorError, match="FLOPs budget"):
        space.feasible(-1)
    with pytest.raises(KDTutorError, match="FLOPs budget"):
        space.feasible(1e5, min_flops=1e6)
    with pytest.raises(KDTutorError, match="number of FLOPs"):
        space.feasible("1e6")
    with pytest.raises(KDTutorError, match="at least 1"):
        space.sample(0, 1e6)
    with pytest.raises(KDTutorError, match="seed"):
        space.sample(2, 1e6, seed=-1)
    with pytest.raises(KDTutorError, match="registry model"):
        Candidate.from_spec("zoo:shapes_cnn_large")


def test_kd_score_refuses_what_it_cannot_use(tiny_data):
    teacher = build_model("cnn_tiny")
    with pytest.raises(KDTutorError, match="needs a trained teacher"):
        kd_score(None, tiny_data.train, tiny_data.test)
    with pytest.raises(KDTutorError, match="sets epochs itself"):
        kd_score(teacher, tiny_data.train, tiny_data.test, epochs=3)
    with pytest.raises(KDTutorError, match="ArrayDataset"):
        kd_score(teacher, [(0, 1)], tiny_data.test)
    with pytest.raises(KDTutorError, match="unknown method"):
        kd_score(teacher, tiny_data.train, tiny_data.test, method="kdd")


# -------------------------------------------------------------------- a real search


def test_two_candidates_scored_by_a_one_epoch_kd_run(tmp_path):
    from kdtutor.bench.knowledge import PRESETS, preset_data
    from kdtutor.zoo import load_teacher

    preset = PRESETS["smoke"]  # the book protocol on 256 training and 128 validation images
    train, val = preset_data(preset, "train"), preset_data(preset, "val")
    assert (len(train), len(val)) == (256, 128)
    score = kd_score(load_teacher("shapes_cnn_large"), train, val, batch_size=64)
    pool = [
        Candidate.from_spec("convnet(blocks_per_stage=1,stem_stride=2,widths=(16,32,64))"),
        Candidate.from_spec("resnet8(stem_stride=2,widths=(8,8,16,32))"),
    ]
    path = tmp_path / "search.csv"
    result = random_search(pool, score, epochs=1, memo=path)
    scores = [row["score"] for row in result.rows]
    assert all(0.0 <= s <= 100.0 for s in scores)
    assert all(s * 128 / 100 == round(s * 128 / 100) for s in scores)  # k of 128 images right
    assert result.best.spec == pool[scores.index(max(scores))].spec
    assert [row["flops"] for row in result.rows] == [1_402_112, 1_618_560]
    # the same seed gives the same score (a fresh run, not the memo)
    assert score(pool[0], 1) == scores[0]
    with path.open() as handle:
        memo = list(csv.DictReader(handle))
    assert [row["scorer"] for row in memo] == [score.label] * 2
    assert score.label.startswith("kd seed=0 teacher=")
    again = random_search(pool, score, epochs=1, memo=path)
    assert again.trained == 0
    assert [r["score"] for r in again.rows] == scores


def test_every_space_candidate_round_trips_through_its_spec():
    for candidate in itertools.islice(tiny_space().candidates(), 0, None, 3):
        again = Candidate.from_spec(candidate.spec)
        assert again == candidate
