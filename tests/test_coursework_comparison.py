"""check_spearman: a correct implementation passes; typical mistakes fail with their name."""

import pytest
from scipy import stats

from kdtutor.bench import spearman
from kdtutor.coursework.comparison import SpearmanCheckError, check_spearman, reference_spearman


def scipy_spearman(x, y):
    return float(stats.spearmanr(x, y).statistic)


def pearson_raw(x, y):
    return float(stats.pearsonr(x, y).statistic)


def ordinal_ranks(x, y):
    rank = lambda v: stats.rankdata(v, method="ordinal")  # noqa: E731
    return float(stats.pearsonr(rank(x), rank(y)).statistic)


def closed_form_with_ties(x, y):
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    n = len(x)
    return 1 - 6 * float(((rx - ry) ** 2).sum()) / (n * (n * n - 1))


def flipped(x, y):
    return -scipy_spearman(x, y)


@pytest.mark.parametrize("fn", [spearman, scipy_spearman])
def test_correct_implementations_pass(fn, capsys):
    assert check_spearman(fn)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fn", "needle"),
    [
        (pearson_raw, "raw values"),
        (ordinal_ranks, "ties broken by position"),
        (closed_form_with_ties, "closed form"),
        (flipped, "sign flipped"),
    ],
)
def test_mistakes_fail_with_their_name(fn, needle):
    with pytest.raises(SpearmanCheckError, match=needle):
        check_spearman(fn)
    assert check_spearman(fn, raise_on_failure=False, verbose=False) is False


def test_non_number_is_refused():
    with pytest.raises(SpearmanCheckError, match="one number"):
        check_spearman(lambda x, y: [1.0])


@pytest.mark.parametrize(
    ("x", "y"), [([1, 2, 2, 5], [3, 1, 2, 2]), ([0.5, 0.1, 0.9], [1.0, 2.0, 3.0])]
)
def test_reference_matches_scipy(x, y):
    assert reference_spearman(x, y) == pytest.approx(scipy_spearman(x, y))
