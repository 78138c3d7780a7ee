"""Benchmark fmrivid's RidgeCV against scikit-learn and himalaya, side by side.

Random data with a planted linear signal (seeded): a low-dimensional latent
drives both the "voxels" X and the targets Y, with a different noise level per
target so that the per-target alphas differ. In ONE run it prints:

* wall seconds of scikit-learn ``RidgeCV(alphas, alpha_per_target=True)``
  (leave-one-out / GCV mode) and of ours with ``cv="loo"``, the speed ratio,
  the max |prediction difference| on held-out rows and how many chosen alphas
  agree;
* wall seconds of our 5-fold mode, of the same per-target 5-fold search
  written with scikit-learn's ``Ridge`` (``RidgeCV`` cannot combine ``cv=5``
  with ``alpha_per_target``) with the prediction difference and alpha
  agreement, and of himalaya's ``KernelRidgeCV(kernel="linear", cv=5)`` on
  its torch backend.

Usage::

    python benchmarks/ridge.py --scale cc2017 --device cpu --dtype float32

The machine should be otherwise idle: multi-threaded LAPACK (eigh) slows down
several-fold when its threads compete for cores with other processes.

``--scale cc2017`` is 4,320 training samples x 10,000 voxels -> 512 targets
with 10 alphas (plus 480 held-out rows); ``--scale small`` (the default) is a quick check and
``--scale smoke`` (120 x 200 -> 8) runs in seconds (the test suite runs it).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

SCALES = {
    # name: (n_train, n_test, n_voxels, n_targets, n_latent)
    "smoke": (120, 30, 200, 8, 4),
    "small": (600, 100, 1500, 64, 16),
    "cc2017": (4320, 480, 10000, 512, 64),
}
ALPHAS = np.logspace(-1, 8, 10)


def make_data(scale, seed):
    """Planted-signal data: X = S A + noise, Y = S B + noise (float32).

    Returns
    -------
    X_train, Y_train, X_test, Y_test : numpy.ndarray of float32
    """
    n_train, n_test, n_vox, n_tgt, k = SCALES[scale]
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    latent = rng.standard_normal((n, k), dtype=np.float32)
    X = latent @ rng.standard_normal((k, n_vox), dtype=np.float32) * np.float32(0.3)
    X += rng.standard_normal((n, n_vox), dtype=np.float32)
    Y = latent @ rng.standard_normal((k, n_tgt), dtype=np.float32)
    noise_sd = np.logspace(-1, 1.5, n_tgt).astype(np.float32) * np.sqrt(k, dtype=np.float32)
    Y += rng.standard_normal((n, n_tgt), dtype=np.float32) * noise_sd
    X += np.float32(2.0)  # non-zero means: the intercept matters
    Y += np.float32(1.0)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device="cpu"):
    """Run ``fn()`` and return (result, wall seconds)."""
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def r2_per_target(Y, P):
    """Coefficient of determination per column."""
    Y = Y.astype(np.float64)
    sse = ((Y - P) ** 2).sum(0)
    sst = ((Y - Y.mean(0)) ** 2).sum(0)
    return 1.0 - sse / sst


def run_sklearn(Xtr, Ytr, Xte):
    """Fit scikit-learn's RidgeCV (GCV); return (predictions, alphas, seconds)."""
    from sklearn.linear_model import RidgeCV as SkRidgeCV

    model, secs = timed(lambda: SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(Xtr, Ytr))
    return model.predict(Xte), np.asarray(model.alpha_), secs


def run_sklearn_kfold(Xtr, Ytr, Xte, k=5):
    """Per-target alphas by k-fold CV written with scikit-learn's ``Ridge``; return as run_sklearn.

    scikit-learn's ``RidgeCV`` cannot combine ``cv=k`` with ``alpha_per_target=True``, so this is the loop a
    user writes: ``KFold(k)`` (contiguous folds), one ``Ridge(alpha)`` fit per fold and alpha (all targets at
    once), the per-target mean over folds of the held-out MSE, the first best alpha per target, then one
    ``Ridge`` fit on all rows per chosen alpha (targets grouped by alpha, not one solve per target).
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    def fit():
        scores = np.zeros((len(ALPHAS), Ytr.shape[1]))
        for tr, va in KFold(k).split(Xtr):
            for i, alpha in enumerate(ALPHAS):
                pred = Ridge(alpha=alpha).fit(Xtr[tr], Ytr[tr]).predict(Xtr[va])
                scores[i] += ((Ytr[va] - pred) ** 2).mean(0) / k
        choice = np.argmin(scores, axis=0)
        pred = np.zeros((Xte.shape[0], Ytr.shape[1]))
        for i in np.unique(choice):
            cols = choice == i
            # A one-column group: scikit-learn returns 1-D predictions for a (n, 1) target.
            fitted = Ridge(alpha=ALPHAS[i]).fit(Xtr, Ytr[:, cols])
            pred[:, cols] = fitted.predict(Xte).reshape(len(Xte), -1)
        return pred, ALPHAS[choice]

    (pred, alphas), secs = timed(fit)
    return pred, alphas, secs


def run_ours(Xtr, Ytr, Xte, cv, device, dtype, scoring="mse"):
    """Fit our RidgeCV; return (held-out predictions, alphas, fit seconds)."""
    from fmrivid.decoders.ridge import RidgeCV

    model = RidgeCV(alphas=ALPHAS, cv=cv, device=device, dtype=dtype, scoring=scoring)
    model, secs = timed(lambda: model.fit(Xtr, Ytr), device)
    return model.predict(Xte), model.alpha_, secs


def run_himalaya(Xtr, Ytr, Xte, device):
    """Fit himalaya's KernelRidgeCV on its torch backend; return as run_ours."""
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidgeCV

    backend = set_backend("torch_cuda" if device == "cuda" else "torch", on_error="raise")
    model = KernelRidgeCV(alphas=ALPHAS, kernel="linear", cv=5, fit_intercept=True)
    Xb, Yb = backend.asarray(Xtr), backend.asarray(Ytr)
    model, secs = timed(lambda: model.fit(Xb, Yb), device)
    pred = backend.to_numpy(model.predict(backend.asarray(Xte)))
    return pred, backend.to_numpy(model.best_alphas_), secs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and for numpy's BLAS (default: as set up)")
    parser.add_argument("--skip-sklearn-kfold", action="store_true",
                        help="skip the (slow) scikit-learn 5-fold per-target grid search")
    args = parser.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")

    n_train, n_test, n_vox, n_tgt, _ = SCALES[args.scale]
    print(f"scale={args.scale}: {n_train} train + {n_test} test samples, {n_vox} voxels, "
          f"{n_tgt} targets, {len(ALPHAS)} alphas; ours on {args.device} {args.dtype}; "
          f"torch threads={torch.get_num_threads()}, cpus={os.cpu_count()}, "
          f"load average before={os.getloadavg()[0]:.2f}", flush=True)
    Xtr, Ytr, Xte, Yte = make_data(args.scale, args.seed)
    # Warm-up on a few rows (library loading, thread pools) for every contender.
    warm = slice(0, 64)
    run_sklearn(Xtr[warm], Ytr[warm], Xte[:2])
    run_ours(Xtr[warm], Ytr[warm], Xte[:2], "loo", args.device, args.dtype)
    run_himalaya(Xtr[warm], Ytr[warm], Xte[:2], args.device)

    p_sk, a_sk, t_sk = run_sklearn(Xtr, Ytr, Xte)
    print(f"sklearn RidgeCV(alpha_per_target=True, GCV)  {t_sk:8.2f} s", flush=True)
    p_us, a_us, t_us = run_ours(Xtr, Ytr, Xte, "loo", args.device, args.dtype)
    print(f"fmrivid RidgeCV(cv='loo')                    {t_us:8.2f} s   "
          f"speed-up x{t_sk / t_us:.1f}", flush=True)
    diff = np.abs(p_sk.astype(np.float64) - p_us).max()
    scale = np.abs(p_sk).max()
    print(f"  max |prediction difference| on {n_test} held-out rows: {diff:.3g} "
          f"(predictions up to {scale:.3g}); alphas agree on {int((a_sk == a_us).sum())}"
          f"/{n_tgt} targets", flush=True)
    r2 = r2_per_target(Yte, p_us)
    chosen = {f"{a:g}": int(c) for a, c in zip(*np.unique(a_us, return_counts=True))}
    print(f"  held-out R^2 (ours): median {np.median(r2):.3f}, min {r2.min():.3f}, "
          f"max {r2.max():.3f}; alphas chosen: {chosen}", flush=True)

    p_k5, a_k5, t_k5 = run_ours(Xtr, Ytr, Xte, 5, args.device, args.dtype)
    print(f"fmrivid RidgeCV(cv=5)                        {t_k5:8.2f} s", flush=True)
    if not args.skip_sklearn_kfold:
        p_sk5, a_sk5, t_sk5 = run_sklearn_kfold(Xtr, Ytr, Xte)
        print(f"sklearn Ridge, 5-fold per-target grid search {t_sk5:8.2f} s   "
              f"(ours 5-fold is x{t_sk5 / t_k5:.1f} faster)", flush=True)
        print(f"  max |prediction difference| {np.abs(p_sk5 - p_k5).max():.3g}; alphas agree on "
              f"{int(np.isclose(a_sk5, a_k5).sum())}/{n_tgt} targets", flush=True)
    p_hi, a_hi, t_hi = run_himalaya(Xtr, Ytr, Xte, args.device)
    print(f"himalaya KernelRidgeCV(linear, cv=5, torch)  {t_hi:8.2f} s   "
          f"(ours 5-fold is x{t_hi / t_k5:.1f} faster)", flush=True)
    print(f"  5-fold: alphas agree with himalaya on {int(np.isclose(a_hi, a_k5).sum())}/{n_tgt} "
          f"targets (both minimise the mean over folds of the MSE); max |prediction difference| "
          f"{np.abs(p_hi - p_k5).max():.3g}", flush=True)
    print(f"load average after={os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
