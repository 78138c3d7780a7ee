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


def bootstrap_ci(values, n_boot=1000, level=0.95, seed=0, stat="mean"):
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
    stat : {"mean", "median"}
        Statistic of each resample.

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
    if stat not in ("mean", "median"):
        raise ValueError(f"bootstrap_ci: stat must be 'mean' or 'median', got {stat!r}")
    means = values[idx].mean(axis=1) if stat == "mean" else np.median(values[idx], axis=1)
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


class PairCache:
    """Memoised per-pair metric values for shuffled-GT permutations.

    ``pair_fn(rec_idx, gt_idx) -> values`` computes the metric of
    reconstruction ``rec_idx[k]`` against ground truth ``gt_idx[k]`` (integer
    arrays). Each (rec, gt) pair is computed at most once, so ``n_perm``
    permutations of N clips cost at most ``min(N * N, n_perm * N)`` pair
    evaluations.

    Parameters
    ----------
    pair_fn : callable
        ``pair_fn(rec_idx, gt_idx) -> (len(rec_idx),)`` float values.
    """

    def __init__(self, pair_fn):
        self.pair_fn = pair_fn
        self.cache = {}

    def prefetch(self, perms, block=256):
        """Compute, ``block`` pairs per ``pair_fn`` call, every pair the pairings ``perms`` need.

        Fewer, larger calls than one per pairing (model batches stay full);
        the values are the same, since each pair's value does not depend on
        the pairs computed with it.
        """
        todo, seen = [], set()
        for perm in perms:
            for i, j in enumerate(np.asarray(perm, dtype=np.int64).tolist()):
                if (i, j) not in self.cache and (i, j) not in seen:
                    seen.add((i, j))
                    todo.append((i, j))
        for start in range(0, len(todo), int(block)):
            part = todo[start:start + int(block)]
            rec_idx = np.array([p[0] for p in part], dtype=np.int64)
            gt_idx = np.array([p[1] for p in part], dtype=np.int64)
            for key, v in zip(part, np.asarray(self.pair_fn(rec_idx, gt_idx), dtype=np.float64)):
                self.cache[key] = float(v)

    def __call__(self, perm):
        """Per-clip values of reconstruction i against GT ``perm[i]``."""
        perm = np.asarray(perm, dtype=np.int64)
        todo = [(i, int(j)) for i, j in enumerate(perm) if (i, int(j)) not in self.cache]
        if todo:
            rec_idx = np.array([p[0] for p in todo], dtype=np.int64)
            gt_idx = np.array([p[1] for p in todo], dtype=np.int64)
            for key, v in zip(todo, np.asarray(self.pair_fn(rec_idx, gt_idx), dtype=np.float64)):
                self.cache[key] = float(v)
        return np.array([self.cache[(i, int(j))] for i, j in enumerate(perm)], dtype=np.float64)


def permutation_p_values(values_under, n, n_perm=100, seed=0, greater=True, observed=None):
    """Permutation p-value of the true pairing, given a function of the pairing.

    Parameters
    ----------
    values_under : callable
        ``values_under(perm) -> (N,)`` per-clip values when reconstruction i is
        compared with GT ``perm[i]`` (e.g. a :class:`PairCache`).
    n : int
        Number of clips (>= 2).
    n_perm : int
        Number of seeded derangements.
    seed : int
        Seed of the derangements.
    greater : bool
        True when higher values are better.
    observed : float, optional
        Mean of the true pairing (computed with the identity when None).

    Returns
    -------
    float
        ``(1 + #{null >= observed}) / (1 + n_perm)`` (``<=`` when ``greater`` is
        False), in (0, 1].
    """
    if int(n_perm) < 1:
        raise ValueError(f"permutation_p_values: n_perm must be >= 1, got {n_perm!r}")
    if observed is None:
        observed = float(np.mean(values_under(np.arange(int(n)))))
    null = np.array([np.mean(values_under(perm)) for perm in derangements(n, n_perm, seed)])
    return p_from_null(null, observed, greater)


def derangements(n, n_perm, seed):
    """The ``n_perm`` seeded derangements of :func:`permutation_p_values`, in the order it uses them.

    All are drawn from one ``numpy.random.default_rng(seed)``, so a chunk of
    clips that needs only its own rows of every derangement draws the same
    ones as the unchunked evaluation (``perm[positions]``).

    Parameters
    ----------
    n : int
        Number of clips (>= 2).
    n_perm : int
        Number of derangements (>= 1).
    seed : int

    Returns
    -------
    list of ndarray, int64, shape (n,)
    """
    if int(n_perm) < 1:
        raise ValueError(f"derangements: n_perm must be >= 1, got {n_perm!r}")
    rng = np.random.default_rng(seed)
    return [derangement(n, rng) for _ in range(int(n_perm))]


def p_from_null(null, observed, greater=True):
    """One-sided permutation p-value of ``observed`` against the null statistics ``null``.

    Parameters
    ----------
    null : array_like, shape (n_perm,)
        Statistic (mean over clips) under each shuffled pairing.
    observed : float
        Statistic of the true pairing.
    greater : bool
        True when higher values are better.

    Returns
    -------
    float
        ``(1 + #{null >= observed}) / (1 + n_perm)`` (``<=`` when ``greater`` is
        False), with a relative tolerance of 1e-12 so that float round-off
        between equal means does not decide the count.
    """
    null = np.asarray(null, dtype=np.float64)
    if null.ndim != 1 or null.size < 1:
        raise ValueError(f"p_from_null: expected a non-empty 1-D null distribution, got shape {null.shape}")
    observed = float(observed)
    tol = 1e-12 * max(1.0, abs(observed))
    extreme = null >= observed - tol if greater else null <= observed + tol
    return float((1 + np.count_nonzero(extreme)) / (1 + null.size))


def phase_surrogates(x, n_perm, seed):
    """Phase-randomised surrogates of time series: same power spectrum, same lag correlations, no pairing.

    The Fourier transform of every column of ``x`` (time along axis 0) gets the SAME random phases added
    (Prichard & Theiler 1994, multivariate surrogates), so each surrogate keeps every column's
    autocorrelation and the correlations between columns, while its relation to anything else is destroyed.
    The zero frequency (the mean) and, for an even length, the Nyquist term are kept as they are (real).

    Parameters
    ----------
    x : array_like, shape (T, V) or (T,)
        Samples in time order (T >= 3).
    n_perm : int
        Number of surrogates.
    seed : int

    Yields
    ------
    ndarray, float64, shape of ``x``
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 3:
        raise InputError("x", "at least 3 time points for phase-randomised surrogates", f"{x.shape[0]}")
    if int(n_perm) < 1:
        raise ValueError(f"phase_surrogates: n_perm must be >= 1, got {n_perm!r}")
    t = x.shape[0]
    spec = np.fft.rfft(x, axis=0)
    n_free = spec.shape[0] - 1 - (1 if t % 2 == 0 else 0)  # frequencies whose phase is free
    rng = np.random.default_rng(seed)
    shape = (n_free,) + (1,) * (x.ndim - 1)
    for _ in range(int(n_perm)):
        rot = np.ones(spec.shape[0], dtype=np.complex128).reshape((-1,) + (1,) * (x.ndim - 1))
        rot[1:1 + n_free] = np.exp(2j * np.pi * rng.random(n_free)).reshape(shape)
        yield np.fft.irfft(spec * rot, n=t, axis=0)


def surrogate_p(statistic, x, n_perm=100, seed=0, greater=True, observed=None):
    """P-value of ``statistic(x)`` against phase-randomised surrogates of ``x`` (:func:`phase_surrogates`).

    A null that respects autocorrelation: shuffling the rows of an autocorrelated series (consecutive
    fMRI samples) destroys the autocorrelation, so the shuffled null is too narrow and p-values come out
    too small; surrogates keep it.

    Parameters
    ----------
    statistic : callable
        ``statistic(x_like) -> float``.
    x : array_like, shape (T, ...)
    n_perm, seed, greater :
        As :func:`permutation_p_values`.
    observed : float, optional
        ``statistic(x)`` when already known.

    Returns
    -------
    float
        ``(1 + #{null >= observed}) / (1 + n_perm)`` (``<=`` when ``greater`` is False).
    """
    if observed is None:
        observed = float(statistic(np.asarray(x, dtype=np.float64)))
    null = np.array([float(statistic(s)) for s in phase_surrogates(x, n_perm, seed)])
    return p_from_null(null, observed, greater)


def paired_wilcoxon(a, b):
    """Two-sided Wilcoxon signed-rank test of paired per-clip values (``scipy.stats.wilcoxon``).

    Parameters
    ----------
    a, b : array_like, shape (N,)
        Values of two methods on the same clips, same order.

    Returns
    -------
    dict
        ``n``, ``median_diff`` (median of a - b), ``statistic`` and ``p``; when
        every difference is zero the test is undefined: statistic NaN, p 1.0.
    """
    from scipy.stats import wilcoxon

    a = _check_values(a, "a")
    b = _check_values(b, "b")
    if a.shape != b.shape:
        raise InputError("b", f"{a.size} paired values (as a)", f"{b.size}")
    d = a - b
    if np.all(d == 0):
        return {"n": int(a.size), "median_diff": 0.0, "statistic": float("nan"), "p": 1.0}
    res = wilcoxon(a, b, alternative="two-sided")
    return {"n": int(a.size), "median_diff": float(np.median(d)), "statistic": float(res.statistic),
            "p": float(res.pvalue)}
