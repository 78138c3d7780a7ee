"""Per-run polynomial detrending and standardisation."""

from __future__ import annotations

import numpy as np

#: Voxels processed at once: bounds the temporaries to (n_volumes x CHUNK) float32.
CHUNK = 16384


def polynomial_basis(n_volumes, order):
    """Orthonormal basis (n_volumes, order + 1) of polynomials of degree 0..order in time."""
    t = np.linspace(-1.0, 1.0, n_volumes)
    vander = np.polynomial.legendre.legvander(t, order)
    q, _ = np.linalg.qr(vander)
    return q


def detrend_standardize(data, order=4, standardize="zscore_sample", inplace=False, return_scale=False):
    """Remove a polynomial trend of degree ``order`` from each column, then z-score.

    Equivalent to nilearn's ``signal.clean(data, detrend=False,
    confounds=<polynomials of degree 0..order>, standardize='zscore_sample')``
    but done with one projection on an orthonormal basis, in blocks of voxels so
    that the only full-size array is the output.

    Parameters
    ----------
    data : ndarray (n_volumes, n_voxels)
        One run, time first.
    order : int
        Polynomial degree (0 removes the mean only).
    standardize : {'zscore_sample', 'zscore', 'none'}
        ddof=1, ddof=0, or no scaling.
    inplace : bool
        Overwrite ``data`` when it is already a C-contiguous float32 array (saves one copy).
    return_scale : bool
        Also return the SD of each detrended column (ddof as ``standardize``; ddof=1 for 'none').

    Returns
    -------
    ndarray (n_volumes, n_voxels), float32
        And, with ``return_scale``, ndarray (n_voxels,) float32.
    """
    if inplace and isinstance(data, np.ndarray) and data.dtype == np.float32 and data.flags.c_contiguous:
        out = data
    else:
        out = np.array(data, dtype=np.float32, order="C", copy=True)
    n = out.shape[0]
    if n <= order + 1:
        raise ValueError(f"detrend order {order} needs more than {order + 1} volumes; got {n}")
    q = polynomial_basis(n, order).astype(np.float32)
    ddof = 0 if standardize == "zscore" else 1
    tiny = np.finfo(np.float32).eps
    scale = np.zeros(out.shape[1], np.float32) if return_scale else None
    for start in range(0, out.shape[1], CHUNK):
        block = out[:, start:start + CHUNK]
        # Centre first (mean accumulated in float64) so that the float32 projection works on small
        # numbers: BOLD sits on a baseline of hundreds, where float32 cancellation would cost ~1e-4.
        block -= block.mean(axis=0, dtype=np.float64).astype(np.float32)
        block -= q @ (q.T @ block)
        if standardize != "none" or return_scale:
            sd = np.sqrt(np.einsum("ij,ij->j", block, block, dtype=np.float64) / (n - ddof)).astype(np.float32)
            if return_scale:
                scale[start:start + CHUNK] = sd
            if standardize != "none":
                sd[sd < tiny] = 1.0
                block /= sd
    return (out, scale) if return_scale else out
