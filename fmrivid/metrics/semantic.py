"""Semantic identification metrics on feature vectors (CLIP embeddings and the like)."""

from __future__ import annotations

import numpy as np

from fmrivid.errors import InputError

#: Two correlations closer than this are a tie (each tie counts half). Float
#: round-off on a D-long dot product is ~D * 1e-16, far below it.
TIE_TOL = 1e-10

VARIANTS = {
    "two_way_ident": (
        "2-way identification (Brain-Diffuser): per clip, fraction of the N-1 other clips j with "
        "corr(pred_i, true_i) > corr(pred_i, true_j), Pearson over features, ties count half"
    ),
}


def _check_features(pred, true):
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    for name, arr in (("pred", pred), ("true", true)):
        if arr.ndim != 2:
            raise InputError(name, "a 2-D array (N clips, D features)", f"shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InputError(name, "finite values", "NaN or inf")
    if pred.shape != true.shape:
        raise InputError("pred", f"the shape of true {true.shape}", f"shape {pred.shape}")
    if pred.shape[0] < 2:
        raise InputError("pred", "at least 2 clips (1 true + 1 distractor)", f"{pred.shape[0]} clip(s)")
    if pred.shape[1] < 2:
        raise InputError("pred", "at least 2 features per clip", f"{pred.shape[1]}")
    return pred, true


def _zscore_rows(x, name):
    """Centre each row and scale it to unit norm; rows with zero variance are an error."""
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    bad = np.flatnonzero(norm == 0)
    if bad.size:
        raise InputError(name, "feature rows with non-zero variance", f"constant row(s) {bad[:5].tolist()}")
    return x / norm[:, None]


def corr_matrix(pred, true):
    """Pearson correlation of every predicted row with every true row.

    Parameters
    ----------
    pred, true : array_like, shape (N, D)
        Feature vectors, one row per clip.

    Returns
    -------
    ndarray, float64, shape (N, N)
        ``C[i, j] = corr(pred[i], true[j])`` across the D features.
    """
    pred, true = _check_features(pred, true)
    return _zscore_rows(pred, "pred") @ _zscore_rows(true, "true").T


def two_way_ident(pred, true):
    """Two-way identification accuracy per clip (Brain-Diffuser protocol).

    For clip i, the fraction of the other N-1 clips j for which
    ``corr(pred_i, true_i) > corr(pred_i, true_j)``; a tie (within
    :data:`TIE_TOL`) counts half. Chance level is 0.5.

    Parameters
    ----------
    pred : array_like, shape (N, D)
        Decoded (predicted) feature vectors.
    true : array_like, shape (N, D)
        Feature vectors of the ground-truth clips, same order.

    Returns
    -------
    ndarray, float64, shape (N,)
        One accuracy in [0, 1] per clip.
    """
    c = corr_matrix(pred, true)
    n = c.shape[0]
    diff = np.diag(c)[:, None] - c  # > 0 where the true clip wins
    wins = (diff > TIE_TOL).astype(np.float64)
    ties = (np.abs(diff) <= TIE_TOL).astype(np.float64)
    score = wins + 0.5 * ties
    np.fill_diagonal(score, 0.0)
    return score.sum(axis=1) / (n - 1)
