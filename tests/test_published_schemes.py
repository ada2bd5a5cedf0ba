"""The published scheme gains: keyed by the suite's scheme labels, and each gain recomputed by
hand from the numbers its source prints (error rates turned into accuracies)."""

import pytest

from kdtutor.bench import schemes
from kdtutor.bench.schemes import PUBLISHED_SCHEME_GAINS, SCHEMES


def entry(label, network):
    matches = [e for e in PUBLISHED_SCHEME_GAINS[label] if e["network"] == network]
    assert len(matches) == 1, (label, network)
    return matches[0]


def test_it_is_public_and_keyed_by_scheme_labels():
    assert "PUBLISHED_SCHEME_GAINS" in schemes.__all__
    labels = {s.label for s in SCHEMES}
    assert set(PUBLISHED_SCHEME_GAINS) <= labels
    assert set(PUBLISHED_SCHEME_GAINS) == {"dml2", "dml4", "one", "byot", "cskd", "tfkd_self"}
    # no verified published number for these
    for label in ("ban", "kdcl_naive", "kdcl_minlogit", "dml2_mixed", "kd", "scratch"):
        assert label not in PUBLISHED_SCHEME_GAINS


def test_gains_from_accuracies_by_hand():
    # DML, PaddleSlim re-implementation, MobileNet pair: 73.65 -> 76.32
    assert entry("dml2", "MobileNet")["gain"] == pytest.approx(2.67, abs=1e-9)
    # Self-KD-Lib, ResNet-50, cross entropy alone 77.79
    assert entry("byot", "ResNet-50")["gain"] == pytest.approx(79.76 - 77.79, abs=1e-9)
    assert entry("cskd", "ResNet-50")["gain"] == pytest.approx(2.20, abs=1e-9)
    # Tf-KD self-training, the authors' repository
    assert entry("tfkd_self", "MobileNetV2")["gain"] == pytest.approx(2.58, abs=1e-9)
    assert entry("tfkd_self", "ResNet18")["gain"] == pytest.approx(1.23, abs=1e-9)
    assert entry("tfkd_self", "ResNeXt29-8x64d")["gain"] == pytest.approx(1.05, abs=1e-9)


def test_gains_from_error_rates_by_hand():
    # MCL-OKD README, top-1 error: the gain in accuracy is the drop in error
    r32 = entry("dml4", "ResNet-32")
    assert (r32["alone"], r32["distilled"]) == (pytest.approx(71.09), pytest.approx(75.08))
    assert r32["gain"] == pytest.approx(3.99, abs=1e-9)
    assert entry("dml4", "ResNet-110")["gain"] == pytest.approx(23.62 - 21.51, abs=1e-9)
    assert entry("one", "ResNet-32")["gain"] == pytest.approx(3.17, abs=1e-9)
    r110 = entry("one", "ResNet-110")
    assert r110["alone"] == pytest.approx(76.38) and r110["distilled"] == pytest.approx(77.81)
    assert r110["gain"] == pytest.approx(1.43, abs=1e-9)


def test_every_entry_is_consistent_and_sourced():
    for label, entries in PUBLISHED_SCHEME_GAINS.items():
        assert entries, label
        for e in entries:
            assert set(e) == {
                "network",
                "dataset",
                "alone",
                "distilled",
                "gain",
                "quoted",
                "source",
            }
            assert e["dataset"] == "CIFAR-100"
            assert 0 < e["alone"] < e["distilled"] < 100, (label, e)
            assert e["gain"] == pytest.approx(e["distilled"] - e["alone"], abs=1e-9)
            assert isinstance(e["source"], str) and "/" in e["source"], (label, e)
            # the quoted numbers give back the accuracies: as printed, or 100 - error
            kind, numbers = e["quoted"].removeprefix("top-1 ").split(" ", 1)
            before, after = (float(v) for v in numbers.split(" -> "))
            if kind == "error":
                before, after = 100 - before, 100 - after
            else:
                assert kind == "accuracy", e["quoted"]
            assert (e["alone"], e["distilled"]) == (pytest.approx(before), pytest.approx(after))
