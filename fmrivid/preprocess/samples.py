"""From cleaned run time series to one fMRI sample per clip presentation."""

from __future__ import annotations

import math

import numpy as np

from fmrivid.errors import InputError


def window_volumes(onset, duration, lag_s, tr, n_volumes, source="events"):
    """Indices of the volumes acquired in [onset + lag, onset + lag + duration).

    Volume k is taken to be acquired at time k * tr. When the window is shorter
    than one TR, the nearest volume is used.
    """
    start = onset + lag_s
    stop = start + duration
    eps = 1e-6
    first = math.ceil(start / tr - eps)
    last = math.ceil(stop / tr - eps)  # exclusive
    if last <= first:
        first, last = int(round(start / tr)), int(round(start / tr)) + 1
    if last > n_volumes:
        raise InputError(
            source, f"volumes up to {last - 1} for the event at onset {onset:g} s "
                    f"(duration {duration:g} s, lag {lag_s:g} s, TR {tr:g} s)",
            f"a run of {n_volumes} volumes ({n_volumes * tr:g} s)")
    return np.arange(first, last)


def event_samples(data, events, tr, lag_s, source="events"):
    """Average the volumes of each event's lagged window.

    Parameters
    ----------
    data : ndarray (n_volumes, n_voxels)
    events : DataFrame with onset, duration, clip_id
    tr, lag_s : float, seconds

    Returns
    -------
    samples : ndarray (n_events, n_voxels) float32
    clip_ids : list of str
    """
    rows = []
    for onset, duration in zip(events["onset"].to_numpy(float), events["duration"].to_numpy(float)):
        idx = window_volumes(onset, duration, lag_s, tr, data.shape[0], source)
        rows.append(data[idx].mean(axis=0))
    return np.stack(rows).astype(np.float32), [str(c) for c in events["clip_id"]]


def average_repeats(samples, clip_ids):
    """Average samples that share a clip id; rows come out in sorted clip-id order."""
    clip_ids = np.asarray(clip_ids)
    unique = sorted(set(clip_ids.tolist()))
    out = np.stack([samples[clip_ids == c].mean(axis=0) for c in unique]).astype(np.float32)
    return out, unique
