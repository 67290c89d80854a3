"""Win rates and how far to trust them: ties as half, a bootstrap interval, a length-controlled rate.

Every quantity here is "B against A" (A: the baseline, e.g. the base model; B: the candidate, e.g.
the tuned one) and is reported in percent, as AlpacaEval and Arena-Hard report them.

Per item the judge's verdict becomes a score ``s_i``: 1 when B wins, 0.5 for a tie, 0 when A wins.

- ``win_rate = 100 * mean(s)``: ties count as half a win (AlpacaEval's rule).
- ``bootstrap_interval``: resample the n items with replacement 1,000 times (seeded), take the mean
  of each resample, and report the 2.5th and 97.5th percentiles (Arena-Hard's interval). It says how
  much the win rate would move on another draw of prompts of the same kind.
- ``length_controlled``: AlpacaEval 2's length-controlled win rate (Dubois et al. 2024,
  arXiv:2404.04475) with its ``length_controlled_minimal`` GLM. With ``d_i`` = characters of A's
  answer minus characters of B's (alpaca_eval's ``len(output_1) - len(output_2)``, baseline first)
  and ``t_i = tanh(d_i / std(d))`` (sample std, ddof 1)::

      P(B wins item i) = sigmoid(w_len * t_i + w_model)

  fitted to the soft labels ``s_i`` (each item enters twice: label 1 weighted ``s_i``, label 0
  weighted ``1 - s_i``) by L1-penalised logistic regression without intercept, the penalty
  ``C`` chosen among ``logspace(-4, 4, 10)`` by 5-fold cross-validation over items (log loss on the
  soft labels), then refitted on every item. The length-controlled win rate is the prediction at
  zero length difference, ``100 * sigmoid(w_model)``: "how often B would win if its answers were as
  long as A's". alpaca_eval's fuller GLM adds an instruction-difficulty term estimated on its own
  805 instructions; it does not exist for other prompt sets and is left out (as the minimal GLM does).

  Standard error: alpaca_eval reports the standard error of the mean of the per-item predictions,
  which for the minimal GLM is identically 0 (every item is predicted at the same point). We report
  instead the delta-method standard error of ``100 * sigmoid(w_model)`` with the robust (sandwich)
  covariance of the fitted weights, ``H^-1 (sum_i g_i g_i^T) H^-1`` with ``g_i = (s_i - p_i) x_i``
  and ``H = sum_i p_i (1 - p_i) x_i x_i^T``; with no length differences it reduces to the standard
  error of the mean score.

  Undefined (None, with the reason in ``Summary.lc_note``) under 5 items, and when the length term
  cannot be told apart from the model term: B's answers are longer (or shorter) than A's on every
  item by about as much, so every ``t_i`` is the same (``std(t) < 0.01``; tanh saturates once
  ``|mean(d)|`` is several times ``std(d)``). The fit would then split one effect between two collinear
  weights at random and report a standard error of thousands of points.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

SCORES = {"B": 1.0, "tie": 0.5, "A": 0.0}  # verdict -> score of B
N_RESAMPLES = 1000
CV_FOLDS = 5
C_GRID = np.logspace(-4, 4, 10)  # scikit-learn's LogisticRegressionCV default grid (Cs=10)
GLM_SEED = 123  # liblinear's random_state in alpaca_eval's fit
MIN_LENGTH_SPREAD = 0.01  # std of t_i below which length and model effects are inseparable


def scores_of(verdicts: list[str]) -> np.ndarray:
    """(n,) scores of B from verdicts ``"A"``, ``"B"`` or ``"tie"``."""
    bad = sorted({v for v in verdicts if v not in SCORES})
    if bad:
        raise ValueError(f"verdicts must be one of {sorted(SCORES)}; got {bad}")
    return np.array([SCORES[v] for v in verdicts], dtype=np.float64)


def win_rate(scores: np.ndarray) -> float:
    """Percent of items B wins, ties counted as half."""
    if len(scores) == 0:
        raise ValueError("no items to compute a win rate on")
    return float(100.0 * np.mean(scores))


def bootstrap_interval(
    values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(values)`` over items (same units as ``values``)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no items to bootstrap")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n_resamples, len(values)))  # (R, n) item indices
    means = values[picks].mean(axis=1)  # (R,)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ratio_interval(
    numerator: np.ndarray,
    denominator: np.ndarray,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Two-level percentile bootstrap of ``sum(numerator) / sum(denominator)`` over a (runs, items) grid.

    For runs that score the same items (training seeds evaluated on one test set): each resample
    draws the runs with replacement and, independently, the items with replacement (the same item
    draw for every run, since they are the same items), and takes the ratio of the sums over the
    drawn cells. The interval covers both sources of variation: another seed and another draw of
    items. A resample whose denominator is 0 is left out (its ratio is undefined).
    """
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 2 or 0 in num.shape:
        raise ValueError(
            f"numerator and denominator must be equal non-empty (runs, items) grids; got {num.shape}, {den.shape}"
        )
    n_runs, n_items = num.shape
    rng = np.random.default_rng(seed)
    runs = rng.integers(0, n_runs, size=(n_resamples, n_runs))  # (R, S)
    items = rng.integers(0, n_items, size=(n_resamples, n_items))  # (R, n)
    # Sum over drawn items per run first, then over drawn runs: (R, S, n) is never built.
    num_r = np.stack([num[:, i].sum(axis=1) for i in items])  # (R, S) per-run sums over drawn items
    den_r = np.stack([den[:, i].sum(axis=1) for i in items])
    num_sum = np.take_along_axis(num_r, runs, axis=1).sum(axis=1)  # (R,)
    den_sum = np.take_along_axis(den_r, runs, axis=1).sum(axis=1)
    ok = den_sum > 0
    if not ok.any():
        raise ValueError("every resample has a zero denominator; there is nothing to estimate")
    ratios = num_sum[ok] / den_sum[ok]
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class LengthControlled:
    """The fitted minimal GLM: win rate at zero length difference (percent) and its standard error."""

    win_rate: float
    standard_error: float
    w_model: float
    w_length: float
    C: float


def _l1_penalty() -> dict:
    """scikit-learn >= 1.8 spells an L1 penalty ``l1_ratio=1`` (``penalty`` is deprecated); older ones
    ``penalty="l1"`` (where ``l1_ratio`` alone would leave the default L2)."""
    import sklearn

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    return {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}


def _soft_logistic(t: np.ndarray, s: np.ndarray, C: float):
    """L1 logistic regression on [t, 1] without intercept, soft labels as two weighted rows per item."""
    from sklearn.linear_model import LogisticRegression

    x = np.stack([t, np.ones_like(t)], axis=1)  # (n, 2)
    X = np.concatenate([x, x])  # (2n, 2): label 1 rows, then label 0 rows
    y = np.concatenate([np.ones_like(s), np.zeros_like(s)])
    weight = np.concatenate([s, 1.0 - s])
    model = LogisticRegression(
        C=C, solver="liblinear", fit_intercept=False, random_state=GLM_SEED, **_l1_penalty()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liblinear convergence chatter on separable data
        model.fit(X, y, sample_weight=weight)
    return model.coef_[0]  # (2,) = [w_length, w_model]


def _soft_log_loss(w: np.ndarray, t: np.ndarray, s: np.ndarray) -> float:
    p = np.clip(1.0 / (1.0 + np.exp(-(w[0] * t + w[1]))), 1e-15, 1 - 1e-15)
    return float(-np.mean(s * np.log(p) + (1 - s) * np.log(1 - p)))


def _folds(n: int, k: int) -> list[np.ndarray]:
    """Held-out item indices of each of ``k`` folds, as scikit-learn's GroupKFold deals items (each
    item is a group of two rows in alpaca_eval's fit; the assignment depends only on group sizes)."""
    from sklearn.model_selection import GroupKFold

    items = np.arange(n)
    return [held for _, held in GroupKFold(n_splits=k).split(items, groups=items)]


def lc_undefined_reason(len_a, len_b) -> str | None:
    """Why the length-controlled win rate of these answer lengths is undefined, or None."""
    d = np.asarray(len_a, dtype=np.float64) - np.asarray(len_b, dtype=np.float64)
    if len(d) < CV_FOLDS:
        return f"{len(d)} items; its 5-fold cross-validation needs 5"
    sd = d.std(ddof=1)
    if sd > 0:
        t = np.tanh(d / sd)
        same = np.std(t, ddof=1) < MIN_LENGTH_SPREAD and abs(t.mean()) > 0.5  # saturated, one side
    else:
        same = bool(d.any())  # every difference equal and not zero
    if not same:
        return None
    side = "shorter" if d.mean() > 0 else "longer"
    return (
        f"B's answers are {side} than A's on every item by about as much (mean {abs(d.mean()):.0f} characters, "
        f"std {sd:.0f}): length and model cannot be told apart"
    )


def length_controlled(scores: np.ndarray, len_a: np.ndarray, len_b: np.ndarray) -> LengthControlled | None:
    """AlpacaEval 2's length-controlled win rate of B (see the module docstring); None under 5 items
    or when length and model cannot be told apart (``lc_undefined_reason``)."""
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    if lc_undefined_reason(len_a, len_b) is not None:
        return None
    d = np.asarray(len_a, dtype=np.float64) - np.asarray(len_b, dtype=np.float64)
    sd = d.std(ddof=1)
    t = np.tanh(d / sd) if sd > 0 else np.zeros(n)
    # Choose C by cross-validated soft log loss, then refit on every item.
    losses = []
    for C in C_GRID:
        fold_losses = []
        for held in _folds(n, CV_FOLDS):
            train = np.setdiff1d(np.arange(n), held)
            w = _soft_logistic(t[train], s[train], C)
            fold_losses.append(_soft_log_loss(w, t[held], s[held]))
        losses.append(np.mean(fold_losses))
    best_C = float(C_GRID[int(np.argmin(losses))])
    w = _soft_logistic(t, s, best_C)
    p_model = 1.0 / (1.0 + np.exp(-w[1]))

    # Delta-method standard error with the sandwich covariance of (w_length, w_model).
    x = np.stack([t, np.ones(n)], axis=1)  # (n, 2)
    p = 1.0 / (1.0 + np.exp(-(x @ w)))  # (n,)
    hessian = (x * (p * (1 - p))[:, None]).T @ x  # (2, 2)
    g = x * (s - p)[:, None]  # (n, 2) per-item score
    bread = np.linalg.pinv(hessian)
    cov = bread @ (g.T @ g) @ bread
    se_w_model = float(np.sqrt(max(cov[1, 1], 0.0)))
    se = 100.0 * p_model * (1 - p_model) * se_w_model
    return LengthControlled(
        win_rate=float(100.0 * p_model),
        standard_error=se,
        w_model=float(w[1]),
        w_length=float(w[0]),
        C=best_C,
    )


@dataclass(frozen=True)
class Summary:
    """B against A over n items; rates and interval in percent."""

    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    win_rate_ci: tuple[float, float]
    lc_win_rate: float | None
    lc_standard_error: float | None
    lc_note: str | None = None  # why lc_win_rate is None

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "win_rate": self.win_rate,
            "win_rate_ci": list(self.win_rate_ci),
            "lc_win_rate": self.lc_win_rate,
            "lc_standard_error": self.lc_standard_error,
            "lc_note": self.lc_note,
        }


def summarise(verdicts: list[str], len_a: list[int], len_b: list[int], seed: int = 0) -> Summary:
    """Counts, win rate, bootstrap interval and length-controlled win rate of B from per-item verdicts."""
    s = scores_of(verdicts)
    low, high = bootstrap_interval(100.0 * s, seed=seed)
    lc = length_controlled(s, np.asarray(len_a), np.asarray(len_b))
    return Summary(
        n=len(s),
        wins=int(np.sum(s == 1.0)),
        ties=int(np.sum(s == 0.5)),
        losses=int(np.sum(s == 0.0)),
        win_rate=win_rate(s),
        win_rate_ci=(low, high),
        lc_win_rate=None if lc is None else lc.win_rate,
        lc_standard_error=None if lc is None else lc.standard_error,
        lc_note=lc_undefined_reason(len_a, len_b),
    )
