"""Statistics over per-clip metric values: bootstrap CIs and shuffled-GT controls.

Every random draw comes from ``numpy.random.default_rng(seed)``: the same seed
gives bit-identical results.
"""

from __future__ import annotations

import numpy as np

from fmrivid.errors import InputError


def _check_values(values, name="values"):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise InputError(name, "a non-empty 1-D array of per-clip values", f"shape {values.shape}")
    if not np.all(np.isfinite(values)):
        bad = np.flatnonzero(~np.isfinite(values))
        raise InputError(name, "finite per-clip values", f"NaN/inf at index {bad[:5].tolist()}")
    return values


def bootstrap_ci(values, n_boot=1000, level=0.95, seed=0):
    """Percentile bootstrap confidence interval of the mean over clips.

    Draws ``n_boot`` resamples of the clips with replacement, takes the mean of
    each, and returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
    (numpy's default linear interpolation) of those means.

    Parameters
    ----------
    values : array_like, shape (N,)
        One finite metric value per clip.
    n_boot : int
        Number of bootstrap resamples.
    level : float
        Confidence level in (0, 1).
    seed : int
        Seed of the resampling.

    Returns
    -------
    (float, float)
        ``(low, high)``. With a single clip both equal its value.
    """
    values = _check_values(values)
    if int(n_boot) < 1:
        raise ValueError(f"bootstrap_ci: n_boot must be >= 1, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level!r}")
    n = values.size
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(int(n_boot), n))
    means = values[idx].mean(axis=1)
    alpha = (1.0 - float(level)) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def derangement(n, seed):
    """A uniformly random permutation of ``range(n)`` with no fixed point.

    Used as the shuffled-ground-truth control: clip i is compared with the GT of
    clip ``perm[i] != i``. Drawn by rejection (about e = 2.72 tries on average).

    Parameters
    ----------
    n : int
        Number of clips, at least 2.
    seed : int or numpy.random.Generator
        Anything ``numpy.random.default_rng`` accepts.

    Returns
    -------
    ndarray, int64, shape (n,)
        ``perm`` with ``perm[i] != i`` for every i.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"derangement: n must be >= 2 (no derangement of {n} item(s)), got {n}")
    rng = np.random.default_rng(seed)
    ar = np.arange(n)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == ar):
            return perm.astype(np.int64)


def permutation_p(metric_fn, gt, rec, n_perm=100, seed=0, greater=True):
    """P-value of the true GT/reconstruction pairing against shuffled pairings.

    The statistic is the mean over clips of ``metric_fn(gt, rec)``. The null
    distribution re-pairs each reconstruction with the GT of another clip,
    ``metric_fn(gt[perm], rec)``, for ``n_perm`` seeded derangements ``perm``.
    ``p = (1 + #{null >= observed}) / (1 + n_perm)`` (``<=`` when
    ``greater=False``, for metrics where lower is better); the smallest
    reachable p is ``1 / (1 + n_perm)``.

    Parameters
    ----------
    metric_fn : callable
        ``metric_fn(gt, rec) -> (N,)`` per-clip values.
    gt, rec : ndarray, shape (N, ...)
        Ground truth and reconstructions, first axis = clips (N >= 2).
    n_perm : int
        Number of shuffled pairings (each costs one metric evaluation).
    seed : int
        Seed of the derangements.
    greater : bool
        True when a higher metric value means a better reconstruction.

    Returns
    -------
    float
        One-sided permutation p-value in (0, 1].
    """
    gt = np.asarray(gt)
    rec = np.asarray(rec)
    if gt.shape[0] != rec.shape[0]:
        raise InputError("rec", f"{gt.shape[0]} clips (as gt)", f"{rec.shape[0]}")
    if int(n_perm) < 1:
        raise ValueError(f"permutation_p: n_perm must be >= 1, got {n_perm!r}")
    observed = float(np.mean(metric_fn(gt, rec)))
    rng = np.random.default_rng(seed)
    null = np.empty(int(n_perm), dtype=np.float64)
    for k in range(int(n_perm)):
        perm = derangement(gt.shape[0], rng)
        null[k] = np.mean(metric_fn(gt[perm], rec))
    extreme = null >= observed if greater else null <= observed
    return float((1 + np.count_nonzero(extreme)) / (1 + int(n_perm)))
