"""Which HRF lag decodes best? A scan on training data only, usable on any dataset.

For every candidate lag, training presentations are cut from the cleaned runs
(lag alignment), and each training clip's first-presentation pattern is used to
identify the clip among all training clips from their second-presentation
patterns (correlation classifier, Haxby-style, both directions). Voxels are a
fixed random subset of the candidates (voxel selection itself depends on the lag,
so using it here would be circular). The score is the identification margin:
correlation with the same clip minus the mean correlation with the other clips;
the top-1 accuracy is reported beside it.

Repeat identification needs repeats whose presentation orders differ (event
designs such as the demo). When the repeats replay the same sequence (a movie
segment shown twice, as in CC2017) every lag identifies clips equally well; the
table then says ``informative = False`` and the stimulus-feature scan is the one
to read: for each lag, a ridge decoder from the training samples to a stimulus
feature (cross-validated over contiguous blocks of training clips, alpha by GCV
inside each training fold) is scored by the mean Pearson r of its held-out
predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmrivid.preprocess.samples import event_samples


def _zrows(x):
    x = x - x.mean(axis=1, keepdims=True)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def identification(a, b):
    """Margin and top-1 accuracy of identifying rows of ``a`` among rows of ``b`` (same clip order).

    Each voxel is centred across clips first, so a response common to every clip
    does not help.
    """
    a = _zrows(a - a.mean(axis=0))
    b = _zrows(b - b.mean(axis=0))
    c = a @ b.T
    n = len(c)
    diag = np.diag(c)
    off = (c.sum(1) - diag) / (n - 1)
    off_t = (c.sum(0) - diag) / (n - 1)
    margin = float(np.mean(np.r_[diag - off, diag - off_t]))
    top1 = float(np.mean(np.r_[c.argmax(1) == np.arange(n), c.argmax(0) == np.arange(n)]))
    return margin, top1


def shared_order(runs):
    """True when most repeated clips have the same predecessor in their first two presentations."""
    prev = {}
    same = total = 0
    for _, ev, _ in runs:
        order = [str(c) for c in ev.sort_values("onset")["clip_id"]]
        for before, clip in zip([None] + order[:-1], order):
            if clip in prev:
                total += 1
                same += prev[clip] == before and before is not None
            else:
                prev[clip] = before
    return total > 0 and same > total / 2


def _samples_per_lag(runs, tr, lags):
    per_lag = {}
    for lag in lags:
        xs, ids = [], []
        for clean, ev, source in runs:
            x, i, _ = event_samples(clean, ev, tr, float(lag), source=source, out_of_run="drop")
            xs.append(x)
            ids.extend(i)
        per_lag[float(lag)] = (np.concatenate(xs) if xs else np.zeros((0, runs[0][0].shape[1])), ids)
    return per_lag


def _finish(table, tr, n_voxels, configured_lag, score):
    table.insert(int(table.columns.get_loc("lag_s")) + 1, "lag_trs", (table["lag_s"] / tr).round(3))
    table["n_voxels"] = n_voxels
    best = table[score].idxmax() if table[score].notna().any() else None
    table["best"] = table.index == best
    table["configured"] = np.isclose(table["lag_s"], configured_lag) if configured_lag is not None else False
    return table


def ridge_lag_scan(runs, tr, lags, feature_ids, features, configured_lag=None, n_folds=5,
                   alphas=(1.0, 10.0, 100.0, 1e3, 1e4, 1e5)):
    """Cross-validated ridge decoding of a stimulus feature from training samples, per lag.

    Parameters
    ----------
    runs : list of (clean, events, source)  training runs (see :func:`lag_scan`)
    feature_ids : sequence of str
    features : ndarray (n_clips, ...)  one row per clip id (only training clips are used)

    Returns
    -------
    DataFrame with method, lag_s, lag_trs, decoding_r, n_clips, n_voxels, best, configured
    """
    from sklearn.linear_model import RidgeCV

    from fmrivid.preprocess.samples import average_repeats

    row_of = {str(c): i for i, c in enumerate(feature_ids)}
    Y_all = np.asarray(features, np.float64).reshape(len(row_of), -1)
    per_lag = _samples_per_lag(runs, tr, lags)
    common = None
    for x, ids in per_lag.values():
        common = set(ids) if common is None else common & set(ids)
    clips = sorted(c for c in (common or []) if c in row_of)
    rows = []
    folds = np.array_split(np.arange(len(clips)), n_folds) if len(clips) >= 2 * n_folds else []
    for lag, (x, ids) in per_lag.items():
        if not folds:
            rows.append({"lag_s": lag, "decoding_r": np.nan})
            continue
        xa, uid = average_repeats(x, ids)
        pos = {c: i for i, c in enumerate(uid)}
        X = xa[[pos[c] for c in clips]].astype(np.float64)
        Y = Y_all[[row_of[c] for c in clips]]
        pred = np.zeros_like(Y)
        for test in folds:
            train = np.setdiff1d(np.arange(len(clips)), test)
            mx, sx = X[train].mean(0), X[train].std(0) + 1e-8
            my = Y[train].mean(0)
            model = RidgeCV(alphas=alphas).fit((X[train] - mx) / sx, Y[train] - my)
            pred[test] = model.predict((X[test] - mx) / sx) + my
        pc, yc = pred - pred.mean(0), Y - Y.mean(0)
        den = np.sqrt((pc ** 2).sum(0) * (yc ** 2).sum(0))
        r = np.where(den > 0, (pc * yc).sum(0) / np.where(den > 0, den, 1), 0.0)
        rows.append({"lag_s": lag, "decoding_r": float(r.mean())})
    table = pd.DataFrame(rows)
    table.insert(0, "method", "ridge_features")
    table["n_clips"] = len(clips)
    return _finish(table, tr, runs[0][0].shape[1] if runs else 0, configured_lag, "decoding_r")


def lag_scan(runs, tr, lags, configured_lag=None):
    """Identification margin across repeats of training clips for each lag.

    Parameters
    ----------
    runs : list of (clean, events, source)
        Cleaned training-run data (n_volumes, n_voxels) and the run's TRAINING events
        (onsets relative to the first kept volume).
    tr : float
    lags : sequence of float, seconds
    configured_lag : float, optional
        Marked in the table.

    Returns
    -------
    DataFrame with method, lag_s, lag_trs, ident_margin, top1_accuracy, n_clips, informative, n_voxels,
    best, configured
    """
    per_lag = _samples_per_lag(runs, tr, lags)
    # Clips with two presentations at every lag, so every lag is scored on the same clips.
    common = None
    for x, ids in per_lag.values():
        counts = pd.Series(ids).value_counts()
        twice = set(counts[counts >= 2].index)
        common = twice if common is None else common & twice
    clips = sorted(common or [])
    rows = []
    for lag, (x, ids) in per_lag.items():
        if len(clips) < 3:
            rows.append({"lag_s": lag, "ident_margin": np.nan, "top1_accuracy": np.nan})
            continue
        ids = np.asarray(ids)
        first = [np.flatnonzero(ids == c)[0] for c in clips]
        second = [np.flatnonzero(ids == c)[1] for c in clips]
        margin, top1 = identification(x[first], x[second])
        rows.append({"lag_s": lag, "ident_margin": margin, "top1_accuracy": top1})
    table = pd.DataFrame(rows)
    table.insert(0, "method", "repeat_identification")
    table["n_clips"] = len(clips)
    table["informative"] = not shared_order(runs)
    return _finish(table, tr, runs[0][0].shape[1] if runs else 0, configured_lag, "ident_margin")
