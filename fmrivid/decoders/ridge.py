"""Multi-target ridge regression with a cross-validated alpha per target.

The decoder maps fMRI samples ``X`` (n_samples, n_voxels) to stimulus features
``Y`` (n_samples, n_targets). For every target it picks the ridge penalty
``alpha`` that scores best by cross-validation on the training data, using ONE
symmetric eigendecomposition per fold for all alphas and all targets:

* dual (kernel) form when ``n_samples <= n_features``: ``K = Xc Xc' = Q L Q'``
  (n_samples x n_samples), dual weights ``Q (L + alpha)^-1 Q' Yc``;
* primal form otherwise: ``Xc' Xc = V L V'`` (n_features x n_features),
  weights ``V (L + alpha)^-1 V' Xc' Yc``.

``Xc`` and ``Yc`` are centred with the means of the rows being fitted (the
training rows of a fold, or all rows given to :meth:`RidgeCV.fit`), so nothing
is ever learned from rows that are not passed to ``fit``.

Cross-validation modes (``cv``):

``"loo"``
    Exact leave-one-out errors from the eigendecomposition (the "GCV mode" of
    scikit-learn's ``RidgeCV(alphas, alpha_per_target=True)``, whose formulas
    are reproduced here, including the intercept correction), so alphas and
    predictions agree with scikit-learn.
``int k``
    K-fold: ``k`` folds of contiguous rows by default (fold sizes as
    ``numpy.array_split``, identical to ``sklearn.model_selection.KFold``
    without shuffling), which is right for time-series-like fMRI samples where
    neighbouring rows are correlated. ``shuffle=True`` permutes the rows with
    ``numpy.random.default_rng(random_state)`` before splitting. In the dual
    form (n <= p) ONE eigendecomposition of the Gram matrix of all rows
    serves every fold: the held-out residuals of a fold follow exactly from
    the fit on all rows by the block leave-fold-out identity
    ``e_v = [(I - H)_vv]^-1 (y - yhat)_v`` (see :func:`_kfold_scores_dual`),
    so k folds cost one decomposition and k small solves, not k + 1
    decompositions. The primal form decomposes each fold's p x p Gram matrix.

Scores (``cv_scores_``) are, per alpha and target: ``"mse"`` the mean squared
error of the held-out predictions (minimised), ``"r2"`` the coefficient of
determination and ``"corr"`` the Pearson correlation (both maximised). In
k-fold mode the score is the unweighted mean over folds of the per-fold score.
Ties go to the alpha listed first, as in scikit-learn.

All the work runs in torch, on the device given (``"cpu"``, ``"cuda"``, ...)
with the same code, in float64 (default) or float32. In float32 everything
runs in float32 (means are accumulated in float64) and the final coefficients
get one step of iterative refinement. A float32 eigendecomposition has errors
~eps32 * lambda_max, large next to the small eigenvalues when a few strong
shared components dominate (as in fMRI): unrefined predictions are off by
~1e-4 relative, refined ones by ~1e-7. Alphas are still chosen from float32
scores, so a near-tie can go to the neighbouring alpha; a RuntimeWarning is
raised when ``eps32 * lambda_max / (lambda_min + alpha) > 0.1`` for a chosen
alpha (refinement cannot converge there: use float64).

Memory: the dual form holds X, the n x n Gram matrix and its eigenvectors;
targets are processed in column chunks; no (n_alphas x n x n) tensor is ever
formed.

Speed: the time goes into one Gram matrix (computed as its upper block
triangle) and its eigendecomposition, LAPACK ``syevd`` through SciPy on CPU
(:func:`_eigh`), ``torch.linalg.eigh`` on GPU. Multi-threaded LAPACK slows
down several-fold when its threads compete with other processes for the
cores, so give the job as many threads as it has free cores
(``OMP_NUM_THREADS``). benchmarks/ridge.py measures it against scikit-learn
and himalaya.

One module (~810 lines) on purpose: the numpy and torch paths of the same eigendecomposition ridge and its
cross-validation share every formula, and the benchmarks compare them line for line.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path

__all__ = ["DEFAULT_ALPHAS", "SCORINGS", "RidgeCV"]

DEFAULT_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
SCORINGS = ("mse", "r2", "corr")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_FORMAT = "fmrivid.decoders.ridge.RidgeCV"
_FORMAT_VERSION = "1"
# Targets are processed in column chunks so that a temporary (rows x chunk)
# never exceeds this many elements (Brain-Diffuser latents have ~90k targets).
_CHUNK_ELEMENTS = 2**24
_STATE_KEYS = ("coef", "intercept", "x_mean", "y_mean", "alpha", "alphas", "cv_scores")


# --------------------------------------------------------------------------- #
# Linear algebra helpers
# --------------------------------------------------------------------------- #
def _gram(A):
    """Return ``A @ A.T`` computing only the upper block triangle.

    Parameters
    ----------
    A : torch.Tensor, shape (m, k)

    Returns
    -------
    torch.Tensor, shape (m, m)
        Exactly symmetric Gram matrix; about 56 % of the flops of ``A @ A.T``
        for large ``m`` (8 row blocks).
    """
    m = A.shape[0]
    block = max(256, math.ceil(m / 8))
    out = A.new_empty((m, m))
    for start in range(0, m, block):
        stop = min(start + block, m)
        rows = A[start:stop] @ A[start:].T  # (stop - start, m - start)
        diag = rows[:, :stop - start]
        rows[:, :stop - start] = (diag + diag.T) / 2  # BLAS does not return a symmetric block
        out[start:stop, start:] = rows
        out[stop:, start:stop] = rows[:, stop - start:].T
    return out


def _eigh(matrix):
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix.

    On CPU this calls LAPACK's divide-and-conquer ``syevd`` through SciPy
    (``driver="evd"``), measured 1.4x faster than ``torch.linalg.eigh`` for a
    4,320 x 4,320 float32 matrix on 2 cores (3.9 s vs 5.6 s) and ~10x faster
    than SciPy's default ``evr``; elsewhere ``torch.linalg.eigh``.
    """
    if matrix.device.type != "cpu":
        return torch.linalg.eigh(matrix)
    from scipy.linalg import eigh

    evals, basis = eigh(matrix.numpy(), driver="evd", check_finite=False)
    return torch.from_numpy(evals), torch.from_numpy(basis)


def _column_chunks(n_rows, n_cols):
    """Yield slices over ``n_cols`` columns keeping ``n_rows * chunk`` bounded."""
    step = max(1, _CHUNK_ELEMENTS // max(1, n_rows))
    for start in range(0, n_cols, step):
        yield slice(start, min(start + step, n_cols))


class _EigenRidge:
    """Ridge solutions for every alpha from one symmetric eigendecomposition.

    ``weights = basis @ diag(1 / (evals + alpha)) @ proj`` gives the dual
    weights (dual form, basis = Q, proj = Q' Yc) or the primal coefficients
    (primal form, basis = V, proj = V' Xc' Yc).
    """

    def __init__(self, gram, rhs):
        evals, basis = _eigh(gram)
        # The matrix is positive semi-definite; round-off can make its zero
        # eigenvalues (e.g. the constant direction after centring) negative.
        self.evals = evals.clamp_(min=0)
        self.basis = basis
        self.proj = basis.T @ rhs

    def inv_diag(self, alpha):
        """Return ``1 / (evals + alpha)``."""
        return 1.0 / (self.evals + alpha)

    def weights(self, alphas, choice, rhs=None):
        """Weights with target ``j`` regularised by ``alphas[choice[j]]``.

        Parameters
        ----------
        alphas : torch.Tensor, shape (n_alphas,)
        choice : torch.Tensor of int64, shape (n_targets,)
        rhs : torch.Tensor, optional
            Solve for this right-hand side instead of the one given at
            construction (used by iterative refinement).

        Returns
        -------
        torch.Tensor, shape (basis rows, n_targets)
        """
        proj = self.proj if rhs is None else self.basis.T @ rhs
        out = proj.new_empty((self.basis.shape[0], proj.shape[1]))
        for i in torch.unique(choice).tolist():
            cols = torch.nonzero(choice == i).squeeze(1)
            scaled = self.inv_diag(alphas[i])[:, None] * proj[:, cols]
            out[:, cols] = self.basis @ scaled
        return out

    def refine_factor(self, alpha, skip_smallest):
        """Estimated contraction of one float64 refinement step of a float32 solve.

        ``eps32 * lambda_max / (lambda_min + alpha)``: the backward error of a
        float32 eigendecomposition relative to the smallest eigenvalue of the
        regularised matrix. ``skip_smallest`` ignores the zero eigenvalue of
        the constant direction of a centred Gram matrix, which no centred
        target excites.
        """
        evals = self.evals[1:] if skip_smallest and self.evals.numel() > 1 else self.evals
        eps = torch.finfo(torch.float32).eps
        return float(eps * evals.max() / (evals.min() + alpha))


def _scores(y, pred, err, scoring):
    """Per-column score of predictions ``pred`` of ``y`` (``err = y - pred``).

    Returns
    -------
    torch.Tensor, shape (n_columns,)
        Mean squared error, R^2 (1 - SSE/SST; 1 for a perfectly predicted
        constant column, 0 for an imperfectly predicted one) or Pearson
        correlation (0 where either side is constant).
    """
    if scoring == "mse":
        return (err * err).mean(0)
    yc = y - y.mean(0)
    if scoring == "r2":
        sse = (err * err).sum(0)
        sst = (yc * yc).sum(0)
        r2 = 1.0 - sse / torch.where(sst > 0, sst, torch.ones_like(sst))
        constant = torch.where(sse == 0, torch.ones_like(sse), torch.zeros_like(sse))
        return torch.where(sst > 0, r2, constant)
    pc = pred - pred.mean(0)
    den = torch.sqrt((pc * pc).sum(0) * (yc * yc).sum(0))
    num = (pc * yc).sum(0)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.zeros_like(den))


def _select(scores, scoring, alpha_per_target):
    """Index of the best alpha per target (first one on ties).

    Parameters
    ----------
    scores : torch.Tensor, shape (n_alphas, n_targets)

    Returns
    -------
    torch.Tensor of int64, shape (n_targets,)
    """
    gain = -scores if scoring == "mse" else scores.clone()
    gain = torch.nan_to_num(gain, nan=-math.inf)
    if alpha_per_target:
        return torch.argmax(gain, dim=0)
    best = torch.argmax(gain.mean(1))
    return best.expand(scores.shape[1]).clone()


# --------------------------------------------------------------------------- #
# Leave-one-out (scikit-learn's GCV formulas)
# --------------------------------------------------------------------------- #
def _loo_scores_dual(solver, Yc, alphas, scoring, fit_intercept):
    """LOO scores from ``K = Q L Q'``: looe = c / d, c = G^-1 y, d = diag(G^-1)."""
    Q = solver.basis
    n = Q.shape[0]
    inv = 1.0 / (solver.evals[:, None] + alphas[None, :])  # (n, n_alphas)
    dens = (Q * Q) @ inv
    if fit_intercept:
        dens -= (Q @ (inv * Q.sum(0)[:, None])) / n
    scores = Yc.new_empty((alphas.shape[0], Yc.shape[1]))
    for i in range(alphas.shape[0]):
        for cols in _column_chunks(n, Yc.shape[1]):
            err = (Q @ (inv[:, i:i + 1] * solver.proj[:, cols])) / dens[:, i:i + 1]
            y = Yc[:, cols]
            scores[i, cols] = _scores(y, y - err, err, scoring)
    return scores


def _loo_scores_primal(solver, Xc, Yc, alphas, scoring, fit_intercept):
    """LOO scores from ``Xc'Xc = V L V'`` with ``U = Xc V`` (n x p, no n x n)."""
    U = Xc @ solver.basis
    n = U.shape[0]
    inv = 1.0 / (solver.evals[:, None] + alphas[None, :])  # (p, n_alphas)
    dens = 1.0 - (U * U) @ inv
    if fit_intercept:
        dens -= (1.0 - U @ (inv * U.sum(0)[:, None])) / n
    scores = Yc.new_empty((alphas.shape[0], Yc.shape[1]))
    for i in range(alphas.shape[0]):
        for cols in _column_chunks(n, Yc.shape[1]):
            y = Yc[:, cols]
            err = (y - U @ (inv[:, i:i + 1] * solver.proj[:, cols])) / dens[:, i:i + 1]
            scores[i, cols] = _scores(y, y - err, err, scoring)
    return scores


# --------------------------------------------------------------------------- #
# Iterative refinement of float32 solutions
# --------------------------------------------------------------------------- #
def _refined_coef(solver, dual, alphas, choice, weights, Xc, Yc):
    """Coefficients after one step of iterative refinement.

    The float32 eigendecomposition solves ``(G + E) w = b`` with a normwise
    error ``|E| ~ eps32 * lambda_max``, large next to the small eigenvalues of
    a spiky spectrum. One step ``w += solve(b - G w)``, with the residual
    computed through X (whose rounding errors scale with the entries, not
    with lambda_max), removes it: on CC2017-sized data the result is as close
    to float64 as a float64 residual gives, for ~3 extra float32 passes over X.

    Parameters
    ----------
    dual : bool
        ``weights`` are dual weights (n x t; G = Xc Xc', b = Yc) rather than
        primal coefficients (p x t; G = Xc' Xc, b = Xc' Yc).
    alphas, choice : torch.Tensor
        Candidate alphas and the index of each target's alpha.

    Returns
    -------
    torch.Tensor, shape (n_features, n_targets)
    """
    alpha_cols = alphas[choice]
    if dual:
        coef = Xc.T @ weights
        resid = Yc - Xc @ coef - weights * alpha_cols
        return coef + Xc.T @ solver.weights(alphas, choice, rhs=resid)
    resid = Xc.T @ (Yc - Xc @ weights) - weights * alpha_cols
    return weights + solver.weights(alphas, choice, rhs=resid)


# --------------------------------------------------------------------------- #
# K-fold
# --------------------------------------------------------------------------- #
def _fold_indices(n, k, shuffle, random_state):
    """Validation row indices of each fold (sorted int64 arrays)."""
    order = np.arange(n)
    if shuffle:
        order = np.random.default_rng(random_state).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def _heldout_scores(solver, cross, y_val, y_shift, alphas, scoring):
    """Scores of ``cross @ weights(alpha) + y_shift`` against ``y_val``."""
    scores = y_val.new_empty((alphas.shape[0], y_val.shape[1]))
    for i in range(alphas.shape[0]):
        inv = solver.inv_diag(alphas[i])[:, None]
        for cols in _column_chunks(max(cross.shape[0], cross.shape[1]), y_val.shape[1]):
            pred = cross @ (inv * solver.proj[:, cols]) + y_shift[cols]
            y = y_val[:, cols]
            scores[i, cols] = _scores(y, pred, y - pred, scoring)
    return scores


def _kfold_scores_dual(solver, Yc, folds, alphas, scoring, fit_intercept):
    """K-fold scores from the ONE eigendecomposition of the Gram matrix of all rows.

    Ridge (with an unpenalised intercept when ``fit_intercept``) is a linear
    smoother ``yhat = H y``; refitting without the rows ``v`` of a fold gives
    the held-out residuals ``e_v = [(I - H)_vv]^-1 (y - yhat)_v`` exactly
    (Woodbury). With ``G = Kc + alpha I = Q diag(evals + alpha) Q'`` (``Kc``
    centred with the means of all rows), ``I - H = alpha G^-1 - 11'/n`` and
    ``y - yhat = alpha G^-1 yc``, so

        e_v = (G^-1_vv - 11' / (n alpha))^-1 (G^-1 yc)_v

    (without intercept: no ``11'`` term and ``Kc = K``). Each fold then costs
    a (|v| x |v|) block of ``G^-1`` and a solve instead of its own
    eigendecomposition; the folds' centring with their training means is what
    the unpenalised intercept does, so scores equal the per-fold refits.

    Returns
    -------
    torch.Tensor, shape (n_alphas, n_targets)
        Mean over folds of the per-fold score.
    """
    Q = solver.basis
    n = Q.shape[0]
    index = [torch.as_tensor(val, device=Q.device) for val in folds]
    y_folds = [Yc.index_select(0, va) for va in index]  # held-out targets, gathered once for every alpha
    total = Yc.new_zeros((alphas.shape[0], Yc.shape[1]))
    for i in range(alphas.shape[0]):
        inv = solver.inv_diag(alphas[i])
        factors = []
        for va in index:
            block = _gram(Q.index_select(0, va) * inv.sqrt())  # G^-1_vv, exactly symmetric
            if fit_intercept:
                block -= 1.0 / (n * alphas[i])
            factors.append(torch.linalg.lu_factor(block))
        for cols in _column_chunks(n, Yc.shape[1]):
            dual = Q @ (inv[:, None] * solver.proj[:, cols])  # G^-1 yc
            for va, y_val, (lu, piv) in zip(index, y_folds, factors):
                err = torch.linalg.lu_solve(lu, piv, dual.index_select(0, va))
                y = y_val[:, cols]
                total[i, cols] += _scores(y, y - err, err, scoring)
    return total / len(folds)


def _kfold_scores(X, Y, folds, alphas, scoring, fit_intercept):
    """Primal form: mean over folds of held-out scores, shape (n_alphas, n_targets).

    Each fold centres its training rows with their own means and decomposes
    their (p x p) Gram matrix; cheap when p < n (the dual form uses
    :func:`_kfold_scores_dual`).
    """
    n = Y.shape[0]
    total = Y.new_zeros((alphas.shape[0], Y.shape[1]))
    for val in folds:
        keep = np.ones(n, dtype=bool)
        keep[val] = False
        tr = torch.as_tensor(np.nonzero(keep)[0], device=Y.device)
        va = torch.as_tensor(val, device=Y.device)
        y_tr = Y.index_select(0, tr)
        y_mean = y_tr.mean(0) if fit_intercept else y_tr.new_zeros(y_tr.shape[1])
        y_tr -= y_mean
        x_tr = X.index_select(0, tr)
        x_mean = x_tr.mean(0) if fit_intercept else x_tr.new_zeros(x_tr.shape[1])
        x_tr -= x_mean
        solver = _EigenRidge(_gram(x_tr.T), x_tr.T @ y_tr)
        del x_tr
        cross = (X.index_select(0, va) - x_mean) @ solver.basis
        total += _heldout_scores(solver, cross, Y.index_select(0, va), y_mean, alphas, scoring)
        del solver, cross
    return total / len(folds)


# --------------------------------------------------------------------------- #
# Argument and data checks
# --------------------------------------------------------------------------- #
def _check_alphas(alphas):
    arr = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"RidgeCV(alphas=...): expected a non-empty sequence of finite "
                         f"positive numbers; found {alphas!r}")
    return tuple(float(a) for a in arr)


def _check_cv(cv):
    if isinstance(cv, str):
        if cv != "loo":
            raise ValueError(f"RidgeCV(cv=...): expected 'loo' or an int >= 2; found {cv!r}")
        return cv
    if isinstance(cv, (bool, np.bool_)) or not isinstance(cv, (int, np.integer)) or cv < 2:
        raise ValueError(f"RidgeCV(cv=...): expected 'loo' or an int >= 2; found {cv!r}")
    return int(cv)


def _check_device(device):
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"RidgeCV(device=...): expected a torch device such as 'cpu' or "
                         f"'cuda'; found {device!r} ({exc})") from None


def _as_tensor(name, array, ndim, dtype, device, check_finite=True):
    """Convert ``array`` to a private 2-D tensor copy (1-D becomes one column).

    With ``check_finite`` False the caller checks finiteness itself (see
    :func:`_column_sum64`).
    """
    arr = np.asarray(array)
    if arr.ndim not in ndim or arr.dtype.kind not in "biuf" or arr.size == 0:
        raise InputError(name, f"a non-empty real {' or '.join(f'{d}-D' for d in ndim)} array",
                         f"shape {arr.shape}, dtype {arr.dtype}")
    if not arr.dtype.isnative or not arr.flags.writeable:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    # Always a private copy: fit() centres it in place.
    tensor = torch.from_numpy(arr).to(device=device, dtype=dtype, copy=True)
    if tensor.ndim == 1:
        tensor = tensor[:, None]
    if check_finite:
        _require_finite(name, tensor, tensor.sum(0, dtype=torch.float64))
    return tensor


def _column_sum64(X):
    """Column sums of ``X`` accumulated in float64, in row chunks (no big copy)."""
    out = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, X.shape[1]))
    for start in range(0, X.shape[0], step):
        out += X[start:start + step].sum(0, dtype=torch.float64)
    return out


def _require_finite(name, tensor, col_sum):
    """Raise InputError if ``tensor`` holds NaN/inf; ``col_sum`` is its column sum.

    A NaN or infinity anywhere makes its column sum non-finite, so the full
    element-wise check only runs when the cheap one fails.
    """
    if bool(torch.isfinite(col_sum).all()):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise InputError(name, "finite values", f"{bad} NaN or infinite entries")


# --------------------------------------------------------------------------- #
# Public estimator
# --------------------------------------------------------------------------- #
class RidgeCV:
    """Ridge regression with one cross-validated alpha per target.

    Parameters
    ----------
    alphas : sequence of float
        Candidate penalties (> 0), tried in the order given (ties go to the
        first).
    cv : int or "loo"
        Number of folds (>= 2; contiguous row blocks unless ``shuffle``) or
        ``"loo"`` for exact leave-one-out errors (scikit-learn's GCV mode).
    alpha_per_target : bool
        Pick an alpha per target (True) or one alpha for all targets, by the
        score averaged over targets (False).
    fit_intercept : bool
        Centre X and Y with the means of the rows being fitted.
    device : str or torch.device
        Where the computation runs ("cpu", "cuda", "cuda:1", ...).
    dtype : {"float64", "float32"}
        Computation precision. float32 is about twice as fast; float64 matches
        scikit-learn to round-off.
    scoring : {"mse", "r2", "corr"}
        Held-out score: mean squared error (minimised), R^2 or Pearson
        correlation (maximised).
    shuffle : bool
        K-fold only: permute rows before splitting into folds.
    random_state : int
        Seed of the permutation when ``shuffle`` is True.

    Attributes
    ----------
    alpha_ : numpy.ndarray, shape (n_targets,)
    coef_ : numpy.ndarray, shape (n_features, n_targets)
    intercept_ : numpy.ndarray, shape (n_targets,)
    cv_scores_ : numpy.ndarray, shape (n_alphas, n_targets)
        Raw score of every alpha for every target (MSE, R^2 or correlation).
    x_mean_ : numpy.ndarray, shape (n_features,)
        Training feature means (zeros without intercept).
    y_mean_ : numpy.ndarray, shape (n_targets,)
        Training target means (zeros without intercept).
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, cv=5, alpha_per_target=True, fit_intercept=True,
                 device="cpu", dtype="float64", scoring="mse", shuffle=False, random_state=0):
        self.alphas = _check_alphas(alphas)
        self.cv = _check_cv(cv)
        self.alpha_per_target = bool(alpha_per_target)
        self.fit_intercept = bool(fit_intercept)
        self.device = _check_device(device)
        if dtype not in _DTYPES:
            raise ValueError(f"RidgeCV(dtype=...): expected one of {sorted(_DTYPES)}; "
                             f"found {dtype!r}")
        self.dtype = dtype
        if scoring not in SCORINGS:
            raise ValueError(f"RidgeCV(scoring=...): expected one of {SCORINGS}; "
                             f"found {scoring!r}")
        self.scoring = scoring
        self.shuffle = bool(shuffle)
        self.random_state = int(random_state)
        self._fitted = None  # dict of tensors on self.device once fitted

    # ------------------------------------------------------------------ fit
    def fit(self, X, Y):
        """Choose alphas by cross-validation on (X, Y) and fit on all its rows.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        Y : array-like, shape (n_samples, n_targets) or (n_samples,)
            A 1-D ``Y`` is treated as one target.

        Returns
        -------
        RidgeCV
            ``self``, with ``alpha_``, ``coef_``, ``intercept_``, ``cv_scores_``.
        """
        dtype = _DTYPES[self.dtype]
        X = _as_tensor("RidgeCV.fit(X)", X, (2,), dtype, self.device, check_finite=False)
        Y64 = _as_tensor("RidgeCV.fit(Y)", Y, (1, 2), torch.float64, self.device)
        n, p = X.shape
        x_sum = _column_sum64(X)
        _require_finite("RidgeCV.fit(X)", X, x_sum)
        if Y64.shape[0] != n:
            raise InputError("RidgeCV.fit(Y)", f"{n} rows (one per row of X)",
                             f"{Y64.shape[0]} rows")
        min_rows = 2 if self.cv == "loo" else self.cv
        if n < min_rows:
            raise InputError("RidgeCV.fit(X)", f"at least {min_rows} rows for cv={self.cv!r}",
                             f"{n} rows")
        # Means in float64 whatever the computation dtype; zeros without intercept.
        x_mean = x_sum / n if self.fit_intercept else torch.zeros_like(x_sum)
        y_mean = Y64.mean(0) if self.fit_intercept else Y64.new_zeros(Y64.shape[1])
        Y64 -= y_mean
        Yc = Y64.to(dtype)
        x_mean = x_mean.to(dtype)
        Xc = X.sub_(x_mean)  # X is a private copy: centre it in place
        alphas64 = torch.tensor(self.alphas, dtype=torch.float64, device=self.device)
        alphas = alphas64.to(dtype)
        dual = n <= p
        K = _gram(Xc) if dual else None
        if self.cv == "loo":
            scores, solver = self._loo(Xc, Yc, K, alphas)
        else:
            folds = _fold_indices(n, self.cv, self.shuffle, self.random_state)
            if dual:  # one eigendecomposition for every fold (block leave-fold-out identity)
                solver = _EigenRidge(K, Yc)
                scores = _kfold_scores_dual(solver, Yc, folds, alphas, self.scoring, self.fit_intercept)
            else:  # primal: a p x p eigendecomposition per fold is cheap
                scores = _kfold_scores(Xc, Yc, folds, alphas, self.scoring, self.fit_intercept)
                solver = _EigenRidge(_gram(Xc.T), Xc.T @ Yc)
        del K
        choice = _select(scores, self.scoring, self.alpha_per_target)
        weights = solver.weights(alphas, choice)
        if dtype == torch.float32:
            self._warn_if_inaccurate(solver, alphas, choice, dual)
            coef = _refined_coef(solver, dual, alphas, choice, weights, Xc, Yc)
        else:
            coef = Xc.T @ weights if dual else weights
        self._fitted = {
            "coef": coef, "x_mean": x_mean, "y_mean": y_mean.to(dtype),
            "intercept": (y_mean - x_mean.double() @ coef.double()).to(dtype),
            "alpha": alphas64[choice], "alphas": alphas64, "cv_scores": scores,
        }
        return self

    def _warn_if_inaccurate(self, solver, alphas, choice, dual):
        """Warn when float32 cannot resolve the chosen alphas (see refine_factor)."""
        skip = dual and self.fit_intercept
        bad = [float(alphas[i]) for i in torch.unique(choice).tolist()
               if solver.refine_factor(float(alphas[i]), skip) > 0.1]
        if bad:
            warnings.warn(f"RidgeCV(dtype='float32'): alphas {bad} are too small for a float32 "
                          "eigendecomposition of this data (ill-conditioned); coefficients "
                          "may be inaccurate. Use dtype='float64'.", RuntimeWarning,
                          stacklevel=3)

    def _loo(self, Xc, Yc, K, alphas):
        """Leave-one-out scores and the solver of all rows."""
        if K is not None:
            solver = _EigenRidge(K, Yc)
            scores = _loo_scores_dual(solver, Yc, alphas, self.scoring, self.fit_intercept)
        else:
            solver = _EigenRidge(_gram(Xc.T), Xc.T @ Yc)
            scores = _loo_scores_primal(solver, Xc, Yc, alphas, self.scoring,
                                        self.fit_intercept)
        return scores, solver

    # -------------------------------------------------------------- predict
    def _require_fitted(self, what):
        if self._fitted is None:
            raise ValueError(f"RidgeCV.{what}: the model is not fitted; call fit() or load()")

    def predict(self, X):
        """Predict targets for the rows of ``X``.

        Parameters
        ----------
        X : array-like, shape (n, n_features)

        Returns
        -------
        numpy.ndarray of float32, shape (n, n_targets)
            ``(X - x_mean_) @ coef_ + y_mean_`` (equal to ``X @ coef_ +
            intercept_`` up to round-off).
        """
        self._require_fitted("predict")
        fitted = self._fitted
        X = _as_tensor("RidgeCV.predict(X)", X, (2,), fitted["coef"].dtype, self.device)
        if X.shape[1] != fitted["coef"].shape[0]:
            raise InputError("RidgeCV.predict(X)", f"{fitted['coef'].shape[0]} columns "
                             "(the features seen by fit)", f"{X.shape[1]} columns")
        pred = (X - fitted["x_mean"]) @ fitted["coef"] + fitted["y_mean"]
        return pred.to(torch.float32).cpu().numpy()

    def _attr(self, key):
        self._require_fitted(key + "_")
        return self._fitted[key].cpu().numpy()

    alpha_ = property(lambda self: self._attr("alpha"))
    coef_ = property(lambda self: self._attr("coef"))
    intercept_ = property(lambda self: self._attr("intercept"))
    cv_scores_ = property(lambda self: self._attr("cv_scores"))
    x_mean_ = property(lambda self: self._attr("x_mean"))
    y_mean_ = property(lambda self: self._attr("y_mean"))

    # --------------------------------------------------------- persistence
    def settings(self):
        """Constructor settings as strings (the safetensors metadata).

        Returns
        -------
        dict[str, str]
        """
        return {
            "format": _FORMAT, "format_version": _FORMAT_VERSION,
            "alphas": json.dumps(list(self.alphas)), "cv": str(self.cv),
            "alpha_per_target": json.dumps(self.alpha_per_target),
            "fit_intercept": json.dumps(self.fit_intercept), "dtype": self.dtype,
            "scoring": self.scoring, "shuffle": json.dumps(self.shuffle),
            "random_state": str(self.random_state),
        }

    def state_dict(self):
        """Everything needed to predict, the alphas and the settings.

        Returns
        -------
        dict[str, torch.Tensor]
            Contiguous CPU tensors ``coef`` (n_features, n_targets),
            ``intercept``, ``x_mean``, ``y_mean``, ``alpha`` (n_targets,),
            ``alphas`` (n_alphas,), ``cv_scores`` (n_alphas, n_targets) and
            ``settings``: the UTF-8 bytes (uint8) of ``json.dumps(settings())``.
        """
        self._require_fitted("state_dict")
        state = {k: self._fitted[k].detach().cpu().contiguous().clone() for k in _STATE_KEYS}
        blob = json.dumps(self.settings(), sort_keys=True).encode("utf-8")
        state["settings"] = torch.tensor(list(blob), dtype=torch.uint8)
        return state

    @classmethod
    def from_state_dict(cls, state, device="cpu", source="state_dict"):
        """Rebuild a fitted model from :meth:`state_dict` output.

        Parameters
        ----------
        state : dict[str, torch.Tensor]
        device : str or torch.device
        source : str
            Name used in error messages (the file path when loading).

        Returns
        -------
        RidgeCV
        """
        missing = [k for k in (*_STATE_KEYS, "settings") if k not in state]
        if missing:
            raise InputError(source, f"tensors {', '.join((*_STATE_KEYS, 'settings'))}",
                             f"missing {', '.join(missing)}")
        settings = json.loads(bytes(state["settings"].cpu().tolist()).decode("utf-8"))
        return cls._from_parts(state, settings, device, source)

    @classmethod
    def _from_parts(cls, tensors, settings, device, source):
        if settings.get("format") != _FORMAT or settings.get("format_version") != _FORMAT_VERSION:
            raise InputError(source, f"format {_FORMAT} version {_FORMAT_VERSION}",
                             f"format {settings.get('format')!r} version "
                             f"{settings.get('format_version')!r}")
        try:
            cv = settings["cv"]
            model = cls(alphas=json.loads(settings["alphas"]),
                        cv=cv if cv == "loo" else int(cv),
                        alpha_per_target=json.loads(settings["alpha_per_target"]),
                        fit_intercept=json.loads(settings["fit_intercept"]), device=device,
                        dtype=settings["dtype"], scoring=settings["scoring"],
                        shuffle=json.loads(settings["shuffle"]),
                        random_state=int(settings["random_state"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(source, "complete RidgeCV settings", f"{exc!r}") from None
        dtype = _DTYPES[model.dtype]
        model._fitted = {
            k: tensors[k].to(device=model.device,
                             dtype=torch.float64 if k in ("alpha", "alphas") else dtype)
            for k in _STATE_KEYS}
        _check_shapes(model._fitted, source)
        return model

    def save(self, path):
        """Write the fitted model to ``path`` (safetensors, atomically).

        Tensors are those of :meth:`state_dict` except ``settings``, which is
        stored as the file's string metadata.
        """
        from safetensors.torch import save_file

        state = self.state_dict()
        del state["settings"]
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=self.settings())

    @classmethod
    def load(cls, path, device="cpu"):
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
        device : str or torch.device

        Returns
        -------
        RidgeCV
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(path, "a RidgeCV safetensors file", "no such file")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                settings = dict(handle.metadata() or {})
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise InputError(path, "a readable safetensors file", f"{exc}") from None
        missing = [k for k in _STATE_KEYS if k not in tensors]
        if missing:
            raise InputError(path, f"tensors {', '.join(_STATE_KEYS)}",
                             f"missing {', '.join(missing)}")
        return cls._from_parts(tensors, settings, device, str(path))


def _check_shapes(fitted, source):
    """Raise InputError when the fitted tensors do not fit together."""
    coef = fitted["coef"]
    n_alphas = fitted["alphas"].shape[0] if fitted["alphas"].ndim == 1 else -1
    ok = coef.ndim == 2
    if ok:
        p, t = coef.shape
        ok = (fitted["x_mean"].shape == (p,) and fitted["y_mean"].shape == (t,)
              and fitted["intercept"].shape == (t,) and fitted["alpha"].shape == (t,)
              and fitted["cv_scores"].shape == (n_alphas, t))
    if not ok:
        shapes = {k: tuple(v.shape) for k, v in fitted.items()}
        raise InputError(source, "coef (p, t), x_mean (p,), y_mean/intercept/alpha (t,), "
                         "cv_scores (n_alphas, t)", f"shapes {shapes}")
