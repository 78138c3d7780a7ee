"""The voxel_r null respects autocorrelation: phase-randomised surrogates (fmrivid.metrics.stats.surrogate_p)
against the naive row shuffle, on independent AR(1) series where every rejection is a false positive."""

import numpy as np
import pytest

from fmrivid.errors import InputError
from fmrivid.metrics import brain, stats


def ar1(rng, n, phi, cols=1):
    x = np.empty((n, cols))
    x[0] = rng.standard_normal(cols) / np.sqrt(1 - phi ** 2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + rng.standard_normal(cols)
    return x


def test_surrogates_keep_spectrum_mean_and_cross_correlation_but_not_the_series():
    rng = np.random.default_rng(0)
    x = ar1(rng, 101, 0.8, cols=3)
    x[:, 1] = 0.7 * x[:, 0] + 0.3 * x[:, 1]
    for n in (101, 100):  # odd and even lengths
        xs = x[:n]
        power = np.abs(np.fft.rfft(xs, axis=0))
        for s in stats.phase_surrogates(xs, 3, seed=1):
            assert s.shape == xs.shape
            np.testing.assert_allclose(np.abs(np.fft.rfft(s, axis=0)), power, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(s.mean(0), xs.mean(0), atol=1e-12)
            np.testing.assert_allclose(np.corrcoef(s.T)[0, 1], np.corrcoef(xs.T)[0, 1], atol=1e-9)
            assert np.abs(s - xs).max() > 0.5
    with pytest.raises(InputError, match="3 time points"):
        next(stats.phase_surrogates(x[:2], 1, 0))


def test_ar1_false_positive_rate_naive_shuffle_inflated_surrogates_nominal():
    rng = np.random.default_rng(42)
    trials, n, phi, n_perm, alpha = 300, 120, 0.9, 99, 0.05
    naive, ours = [], []
    for k in range(trials):
        pred, meas = ar1(rng, n, phi, 2), ar1(rng, n, phi, 2)  # independent: the null is true (voxel 0 tested)

        def r_of(m):
            return float(brain.voxel_r(pred, m)[0])

        observed = r_of(meas)
        naive.append(stats.permutation_p_values(lambda perm: [r_of(meas[perm])], n, n_perm, k,
                                                observed=observed))
        ours.append(stats.surrogate_p(r_of, meas, n_perm, k, observed=observed))
    fpr_naive = np.mean(np.asarray(naive) <= alpha)
    fpr_ours = np.mean(np.asarray(ours) <= alpha)
    print(f"false-positive rate at alpha {alpha}: row shuffle {fpr_naive:.3f}, phase surrogates {fpr_ours:.3f}")
    assert fpr_naive > 0.15  # the shuffled null ignores autocorrelation
    assert 0.01 <= fpr_ours <= 0.10  # nominal within the binomial noise of 300 trials


def test_surrogate_p_detects_a_real_relation():
    rng = np.random.default_rng(3)
    meas = ar1(rng, 200, 0.5, cols=20)
    pred = meas + 0.5 * ar1(rng, 200, 0.5, cols=20)
    p = stats.surrogate_p(lambda m: np.median(brain.voxel_r(pred, m)), meas, 49, 0)
    assert p == pytest.approx(1 / 50)
