"""Which HRF lag decodes best? A scan on training data only, usable on any dataset.

For every candidate lag, training presentations are cut from the cleaned runs
(lag alignment), and each training clip's first-presentation pattern is used to
identify the clip among all training clips from their second-presentation
patterns (correlation classifier, Haxby-style, both directions). Voxels are a
fixed random subset of the candidates (voxel selection itself depends on the lag,
so using it here would be circular). The score is the identification margin:
correlation with the same clip minus the mean correlation with the other clips;
the top-1 accuracy is reported beside it.
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
    DataFrame with lag_s, lag_trs, ident_margin, top1_accuracy, n_clips, n_voxels, best, configured
    """
    per_lag = {}
    for lag in lags:
        xs, ids = [], []
        for clean, ev, source in runs:
            x, i, _ = event_samples(clean, ev, tr, float(lag), source=source, out_of_run="drop")
            xs.append(x)
            ids.extend(i)
        per_lag[float(lag)] = (np.concatenate(xs) if xs else np.zeros((0, runs[0][0].shape[1])), ids)
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
    table.insert(1, "lag_trs", (table["lag_s"] / tr).round(3))
    table["n_clips"] = len(clips)
    table["n_voxels"] = runs[0][0].shape[1] if runs else 0
    best = table["ident_margin"].idxmax() if table["ident_margin"].notna().any() else None
    table["best"] = table.index == best
    table["configured"] = np.isclose(table["lag_s"], configured_lag) if configured_lag is not None else False
    return table
