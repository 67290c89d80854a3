"""Win rate, bootstrap interval and length-controlled win rate against hand-derived values, and the
LC win rate against alpaca_eval's own ``length_controlled_minimal`` fit on the same annotations."""

import sys
import types

import numpy as np
import pytest

from orpo.evaluation.stats import bootstrap_interval, length_controlled, scores_of, summarise, win_rate


def test_win_rate_counts_ties_as_half():
    """B wins 2, ties 1, loses 1 of 4: (2 + 0.5) / 4 = 62.5%."""
    s = scores_of(["B", "tie", "A", "B"])
    assert s.tolist() == [1.0, 0.5, 0.0, 1.0]
    assert win_rate(s) == pytest.approx(62.5)
    with pytest.raises(ValueError, match="one of"):
        scores_of(["B", "maybe"])


def test_bootstrap_interval_of_two_items_spans_the_extremes():
    """Scores {0, 100}: a resample mean is 0, 50 or 100 with probability 1/4, 1/2, 1/4, so with 1,000
    resamples the 2.5th percentile is 0 and the 97.5th is 100 (P(fewer than 25 zeros) ~ 1e-70)."""
    assert bootstrap_interval(np.array([0.0, 100.0]), seed=0) == (0.0, 100.0)
    # A constant has a zero-width interval.
    assert bootstrap_interval(np.full(7, 50.0)) == (50.0, 50.0)


def test_bootstrap_interval_matches_the_normal_approximation_on_many_items():
    """400 items at 75%: half-width ~ 1.96 * sqrt(0.75 * 0.25 / 400) * 100 = 4.24 points."""
    s = np.array([100.0, 100.0, 100.0, 0.0] * 100)
    low, high = bootstrap_interval(s, seed=1)
    assert low < 75.0 < high
    assert (high - low) / 2 == pytest.approx(4.24, rel=0.15)
    # Seeded: the same seed gives the same interval, another seed another one.
    assert bootstrap_interval(s, seed=1) == (low, high) != bootstrap_interval(s, seed=2)


def test_lc_without_length_differences_is_the_win_rate_with_the_mean_standard_error():
    """Equal lengths: t = 0 for every item, the GLM is intercept-only, sigmoid(w_model) = mean score
    = 75%, and the sandwich standard error reduces to sqrt(sum (s - 0.75)^2) / n = sqrt(3.75) / 20."""
    s = np.array([1.0, 1.0, 1.0, 0.0] * 5)
    lc = length_controlled(s, np.full(20, 40), np.full(20, 40))
    assert lc.win_rate == pytest.approx(75.0, abs=0.01)
    assert lc.standard_error == pytest.approx(100 * np.sqrt(3.75) / 20, abs=0.01)


def test_lc_removes_a_win_rate_that_only_comes_from_length():
    """30 items where B is longer (B wins 24) and 10 where B is shorter (B wins 2): raw 26/40 = 65%.
    The lengths take two symmetric values, so the GLM fits each group's rate: w_model + w_len*t =
    logit(0.8) and w_model - w_len*t = logit(0.2), hence w_model = 0: at equal length B wins 50%."""
    s = np.array([1.0] * 24 + [0.0] * 6 + [1.0] * 2 + [0.0] * 8)
    len_a = np.array([10] * 30 + [30] * 10)
    len_b = np.array([30] * 30 + [10] * 10)
    assert win_rate(s) == pytest.approx(65.0)
    lc = length_controlled(s, len_a, len_b)
    assert lc.win_rate == pytest.approx(50.0, abs=0.5)
    assert lc.w_length < 0  # A longer than B (d > 0) makes B's win less likely


def test_summary_counts_and_too_few_items_for_lc():
    summary = summarise(["B", "B", "A", "tie"], [5, 5, 5, 5], [6, 6, 6, 6])
    assert (summary.n, summary.wins, summary.ties, summary.losses) == (4, 2, 1, 1)
    assert summary.win_rate == pytest.approx(62.5)
    assert summary.lc_win_rate is None  # 5-fold cross-validation needs 5 items
    assert summary.lc_note == "4 items; its 5-fold cross-validation needs 5"


def test_lc_is_undefined_when_b_is_shorter_on_every_item_by_about_as_much():
    """Seen on SmolLM2 (a tuned run's short reviews against the base's 48-token prose): every
    length difference ~7 std above 0, so every t_i = tanh(d_i / std) is 1.0000 and the length weight is
    collinear with the model weight; the fit printed "55.5 +- 14612.9". Now: undefined, with why."""
    rng = np.random.default_rng(0)
    len_a = np.full(100, 200)
    len_b = len_a - rng.normal(178, 25, size=100).round().astype(int)
    verdicts = ["B"] * 11 + ["tie"] * 89
    summary = summarise(verdicts, list(len_a), list(len_b))
    assert summary.win_rate == pytest.approx(55.5)
    assert summary.lc_win_rate is None and summary.lc_standard_error is None
    assert summary.lc_note.startswith("B's answers are shorter than A's on every item by about as much")
    # Equal lengths everywhere are not that case: the LC rate is the plain one (no length term).
    same = summarise(verdicts, [40] * 100, [40] * 100)
    assert same.lc_note is None and same.lc_win_rate == pytest.approx(55.5, abs=0.5)
    # B longer on every item by exactly the same amount: no spread at all, also undefined.
    assert "longer" in summarise(verdicts, [40] * 100, [90] * 100).lc_note


def _annotations(n=120, seed=0):
    """Realistic annotations: B's answers are longer on average and the judge likes length a bit."""
    rng = np.random.default_rng(seed)
    len_a = rng.integers(200, 1200, n)
    len_b = (len_a * rng.uniform(0.6, 2.0, n)).astype(int)
    logit = 0.3 + 1.2 * np.tanh((len_b - len_a) / 400)
    p = 1 / (1 + np.exp(-logit))
    u = rng.uniform(size=n)
    verdicts = np.where(u < p - 0.05, "B", np.where(u < p + 0.05, "tie", "A"))
    return verdicts.tolist(), len_a, len_b


def _alpaca_glm():
    """alpaca_eval's GLM module, or skip. alpaca_eval 0.6.6 imports ``pkg_resources`` (gone from
    setuptools >= 81) only to compare version strings; give it those two functions if it is missing."""
    pytest.importorskip("pandas")
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from importlib.metadata import version

        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        shim.get_distribution = lambda name: types.SimpleNamespace(version=version(name))
        sys.modules["pkg_resources"] = shim
    try:
        from alpaca_eval.metrics import glm_winrate
    except Exception as err:  # not installed, or its imports fail offline
        pytest.skip(
            f"alpaca_eval is not importable here ({type(err).__name__}: {err}); install the dev extra"
        )
    return glm_winrate


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lc_equals_alpaca_evals_length_controlled_minimal(seed, tmp_path, monkeypatch):
    """Same annotations through alpaca_eval's ``get_length_controlled_winrate`` (glm_name
    ``length_controlled_minimal``). Its Hub download (instruction difficulty, unused by the minimal
    formula) is replaced by a local table of zeros, so nothing leaves the machine."""
    import pandas as pd

    glm = _alpaca_glm()
    verdicts, len_a, len_b = _annotations(seed=seed)
    n = len(verdicts)
    table = tmp_path / "df_gamed.csv"
    pd.DataFrame({"index": range(n), "instruction_difficulty": 0.0, "model": "x"}).to_csv(table, index=False)
    monkeypatch.setattr(glm, "hf_hub_download", lambda **kwargs: str(table))
    preference = {"A": 1.0, "B": 2.0, "tie": 0.0}  # alpaca_eval: 1 = output_1 (baseline) wins, 0 = tie
    annotations = pd.DataFrame(
        {
            "index": range(n),
            "output_1": ["a" * k for k in len_a],
            "output_2": ["b" * k for k in len_b],
            "generator_1": "base",
            "generator_2": "tuned",
            "annotator": "judge",
            "preference": [preference[v] for v in verdicts],
        }
    )
    theirs = glm.get_length_controlled_winrate(
        annotations,
        glm_name="length_controlled_minimal",
        save_weights_dir=None,
        is_warn_extreme_changes=False,
    )
    ours = summarise(verdicts, len_a.tolist(), len_b.tolist())
    assert ours.win_rate == pytest.approx(theirs["win_rate"], abs=1e-6)
    print(
        f"seed {seed}: ours {ours.lc_win_rate:.4f} alpaca_eval {theirs['length_controlled_winrate']:.4f} raw {ours.win_rate:.2f}"
    )
    assert ours.lc_win_rate == pytest.approx(theirs["length_controlled_winrate"], abs=0.5)
    # The length term must matter here, else the comparison proves little.
    assert abs(ours.lc_win_rate - ours.win_rate) > 2.0
