"""The demo table's metrics: pooled ratios, and undefined ones reported as such."""

from orpo.cli.demo import _cell
from orpo.lab.demo.table import summarise


def _run(tp, fp, fn, pref):
    n = len(tp)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "critical_fn": [0] * n,
        "n_critical": [0] * n,
        "clean": [0] * n,
        "approved": [0] * n,
        "valid_format": [1] * n,
        "pref_correct": pref,
        "f1": [0.5] * n,
    }


def test_ratios_pool_every_seed_and_snippet():
    runs = [_run([1, 2], [1, 0], [1, 0], [1, 0]), _run([0, 1], [0, 2], [2, 1], [1, 1])]
    m = summarise(runs)
    assert m["recall"]["value"] == 4 / 8  # tp 4 of tp + fn 8
    assert m["precision"]["value"] == 4 / 7  # tp 4 of tp + fp 7
    assert m["preference_accuracy"]["value"] == 3 / 4
    assert m["f1"]["value"] == 0.5  # the mean of each review's f1 over seeds and snippets
    assert m["precision"]["denominator"] == 7 and _cell(m["precision"]).startswith("0.57 [")


def test_precision_without_any_finding_is_undefined_not_perfect():
    m = summarise([_run([0, 0], [0, 0], [2, 1], [0, 1])])
    assert m["recall"]["value"] == 0.0
    assert m["precision"]["denominator"] == 0  # no finding made: the 1.0 is only a convention
    assert _cell(m["precision"]) == "undefined" and _cell(m["recall"]).startswith("0.00 [")
