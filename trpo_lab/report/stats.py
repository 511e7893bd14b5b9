"""The report's statistics: rliable's estimators (Agarwal et al. 2021, "Deep RL at the
Edge of the Statistical Precipice") behind small functions, and the learning-curve band.

Scores are arranged as rliable wants them: a matrix [runs, tasks] per
configuration. Aggregates across tasks (IQM, optimality gap, performance
profiles) take normalised scores (see `references.normaliser`); one task's
table takes its raw returns. Intervals are rliable's stratified bootstrap:
runs are resampled within each task, `BOOTSTRAP_SAMPLES` times, percentile
intervals, with a fixed random state so a report is reproducible.
"""
from __future__ import annotations

import logging
import warnings

from typing import Optional

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0


def _rliable():
    # absl (rliable's logging) would print INFO lines for every configuration.
    logging.getLogger("absl").setLevel(logging.WARNING)
    from rliable import library, metrics

    return library, metrics


def _random_state():
    return np.random.RandomState(SEED)


def iqm(scores) -> float:
    """Interquartile mean of all the scores: rliable's aggregate_iqm, scipy's
    trim_mean(scores, 0.25) (int(0.25 n) cut from each end, none below 4 scores)."""
    _, metrics = _rliable()
    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def bootstrap_interval(scores, samples: Optional[int] = None, confidence: float = CONFIDENCE,
                       seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the IQM of one task's scores [runs], runs resampled.

    The estimator of rliable's get_interval_estimates for one task, vectorised:
    rliable draws its resamples through `arch` one Python call at a time, 1.4 s
    for 2000 resamples of one configuration measured here (the page asks for one
    per configuration, 40 in a sweep), against milliseconds for this.
    tests/test_report.py checks the two intervals agree.
    """
    x = np.sort(np.asarray(scores, dtype=float))
    n = len(x)
    rng = np.random.default_rng(seed)
    resampled = np.sort(x[rng.integers(0, n, (samples or BOOTSTRAP_SAMPLES, n))], axis=1)
    cut = int(0.25 * n)
    iqms = resampled[:, cut:n - cut].mean(axis=1)
    alpha = 100 * (1.0 - confidence) / 2.0
    low, high = np.percentile(iqms, [alpha, 100 - alpha])
    return float(low), float(high)


def rliable_interval(scores, samples: Optional[int] = None, confidence: float = CONFIDENCE
                     ) -> tuple[float, float]:
    """rliable's own percentile interval of the IQM of one task's scores [runs] (the reference
    `bootstrap_interval` is checked against)."""
    library, metrics = _rliable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _, intervals = library.get_interval_estimates(
            {"x": np.asarray(scores, dtype=float).reshape(-1, 1)}, lambda s: np.array([metrics.aggregate_iqm(s)]),
            reps=samples or BOOTSTRAP_SAMPLES, confidence_interval_size=confidence, random_state=_random_state())
    low, high = intervals["x"][:, 0]
    return float(low), float(high)


def aggregates(score_dict: dict[str, np.ndarray], samples: Optional[int] = None
               ) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{configuration: {"IQM" | "optimality gap": (estimate, low, high)}} of normalised
    scores [runs, tasks] (optimality gap: the mean shortfall below 1, rliable's gamma=1)."""
    library, metrics = _rliable()

    def func(s):
        return np.array([metrics.aggregate_iqm(s), metrics.aggregate_optimality_gap(s, 1.0)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch asks for a Generator; rliable passes a RandomState
        points, intervals = library.get_interval_estimates(
            score_dict, func, reps=samples or BOOTSTRAP_SAMPLES, random_state=_random_state())
    return {name: {"IQM": (float(points[name][0]), *map(float, intervals[name][:, 0])),
                   "optimality gap": (float(points[name][1]), *map(float, intervals[name][:, 1]))}
            for name in score_dict}


def performance_profiles(score_dict: dict[str, np.ndarray], taus: np.ndarray, samples: Optional[int] = None
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's score distributions: for each tau, the fraction of runs (over all tasks) with a
    normalised score above tau; ({name: [taus]}, {name: [2, taus] interval})."""
    library, _ = _rliable()
    np.random.seed(SEED)  # create_performance_profile takes no random state
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # rliable's score distribution, with its per-tau np.vectorize replaced by one comparison
        # (2 s per configuration measured here, most of the page's time).
        return library.create_performance_profile(
            score_dict, taus, reps=samples or BOOTSTRAP_SAMPLES,
            custom_profile_func=lambda scores, ts: (np.reshape(scores, (-1, 1)) > np.reshape(ts, (1, -1))).mean(0))


def probability_of_improvement(x: np.ndarray, y: np.ndarray, samples: Optional[int] = None
                               ) -> tuple[float, float, float]:
    """P(X > Y): the probability that a run of X scores above a run of Y on the same task,
    averaged over tasks (Mann-Whitney U / (n_x n_y)); x [runs_x, tasks], y [runs_y, tasks].
    (estimate, low, high), the interval by stratified bootstrap of both, independently."""
    library, metrics = _rliable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        points, intervals = library.get_interval_estimates(
            {"xy": (x, y)}, metrics.probability_of_improvement, reps=samples or BOOTSTRAP_SAMPLES,
            random_state=_random_state())
    low, high = np.ravel(intervals["xy"])[:2]
    return float(points["xy"]), float(low), float(high)


def bootstrap_mean_band(curves: np.ndarray, samples: Optional[int] = None, confidence: float = CONFIDENCE,
                        seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high), each [G], of curves [S seeds, G points]: the mean over seeds and its
    percentile bootstrap band, seeds resampled (one resample for the whole curve)."""
    rng = np.random.default_rng(seed)
    s = curves.shape[0]
    means = curves[rng.integers(0, s, (samples or BOOTSTRAP_SAMPLES, s))].mean(axis=1)  # [samples, G]
    alpha = (1.0 - confidence) / 2.0
    return curves.mean(axis=0), np.quantile(means, alpha, axis=0), np.quantile(means, 1.0 - alpha, axis=0)
