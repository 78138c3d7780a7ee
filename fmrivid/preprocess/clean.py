"""Per-run polynomial detrending and standardisation."""

from __future__ import annotations

import numpy as np


def polynomial_basis(n_volumes, order):
    """Orthonormal basis (n_volumes, order + 1) of polynomials of degree 0..order in time."""
    t = np.linspace(-1.0, 1.0, n_volumes)
    vander = np.polynomial.legendre.legvander(t, order)
    q, _ = np.linalg.qr(vander)
    return q


def detrend_standardize(data, order=4, standardize="zscore_sample"):
    """Remove a polynomial trend of degree ``order`` from each column, then z-score.

    Equivalent to nilearn's ``signal.clean(data, detrend=False,
    confounds=<polynomials of degree 1..order>, standardize='zscore_sample')``
    but done with one projection on an orthonormal basis.

    Parameters
    ----------
    data : ndarray (n_volumes, n_voxels)
        One run, time first.
    order : int
        Polynomial degree (0 removes the mean only).
    standardize : {'zscore_sample', 'zscore', 'none'}
        ddof=1, ddof=0, or no scaling.

    Returns
    -------
    ndarray (n_volumes, n_voxels), float32
    """
    data = np.asarray(data, dtype=np.float32)
    n = data.shape[0]
    if n <= order + 1:
        raise ValueError(f"detrend order {order} needs more than {order + 1} volumes; got {n}")
    q = polynomial_basis(n, order).astype(np.float32)
    # Centre first (mean accumulated in float64) so that the float32 projection works on small numbers:
    # BOLD sits on a baseline of hundreds, where float32 cancellation would cost ~1e-4.
    resid = data - data.mean(axis=0, dtype=np.float64).astype(np.float32)
    resid -= q @ (q.T @ resid)
    if standardize == "none":
        return resid
    ddof = 1 if standardize == "zscore_sample" else 0
    sd = resid.std(axis=0, ddof=ddof)
    sd[sd < np.finfo(np.float32).eps] = 1.0
    resid /= sd
    return resid
