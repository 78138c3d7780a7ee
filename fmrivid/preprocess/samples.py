"""From cleaned run time series to one fMRI sample per clip presentation.

Three choices, each a config key of the ``preprocess`` section:

- trimming (``trim``): volumes dropped at the start and end of every run before
  cleaning; the CC2017 preset drops 1 + 4 volumes of 245-volume runs and 2 + 4 of
  246-volume runs (240 kept).
- HRF alignment (``alignment``): ``lag`` averages the volumes acquired in
  [onset + lag_s, onset + lag_s + duration); ``hrf`` convolves the event's boxcar
  with nilearn's Glover or SPM HRF and takes the response-weighted mean of the
  volumes.
- windows (``window_trs``): n >= 1 keeps n consecutive volumes from the first
  lagged volume per sample (MinD-Video 2, GLFA 5) instead of their mean.
"""

from __future__ import annotations

import math

import numpy as np

from fmrivid.errors import InputError

#: CC2017's official trimming: n volumes -> (dropped at start, dropped at end); 240 remain.
CC2017_TRIM = {245: (1, 4), 246: (2, 4)}


def trim_amounts(n_volumes, trim, source="run"):
    """Volumes to drop at the start and the end of a run.

    Parameters
    ----------
    n_volumes : int
    trim : dict
        The ``preprocess.trim`` config: ``preset`` ('none' or 'cc2017'), ``first``, ``last``.
    source : str
        File named in errors.

    Returns
    -------
    (int, int)
    """
    if trim.get("preset", "none") == "cc2017":
        if n_volumes not in CC2017_TRIM:
            raise InputError(source, "245 or 246 volumes (CC2017 trimming preset, preprocess.trim.preset)",
                             f"{n_volumes} volumes")
        return CC2017_TRIM[n_volumes]
    first, last = int(trim.get("first", 0)), int(trim.get("last", 0))
    if n_volumes - first - last < 3:
        raise InputError(source, f"more than {first + last + 2} volumes (trim drops {first} + {last})",
                         f"{n_volumes} volumes")
    return first, last


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
    if first < 0 or last > n_volumes:
        raise InputError(
            source, f"volumes {first} to {last - 1} for the event at onset {onset:g} s "
                    f"(duration {duration:g} s, lag {lag_s:g} s, TR {tr:g} s)",
            f"a run of {n_volumes} volumes ({n_volumes * tr:g} s)")
    return np.arange(first, last)


def hrf_weights(onset, duration, tr, n_volumes, hrf_model="glover", source="events", min_inside=0.8):
    """Weights over the volumes of a run: the event's boxcar convolved with a canonical HRF.

    Uses nilearn's ``compute_regressor`` (Glover or SPM HRF). Weights are the
    positive part of the regressor, normalised to sum 1. The event is refused when
    less than ``min_inside`` of its response falls inside the run.
    """
    from nilearn.glm.first_level import compute_regressor

    extra = int(math.ceil(32.0 / tr))
    frame_times = np.arange(n_volumes + extra) * tr
    reg, _ = compute_regressor(np.array([[onset], [duration], [1.0]]), hrf_model, frame_times,
                               oversampling=max(16, int(math.ceil(tr / 0.05))))
    w = np.clip(reg[:, 0], 0.0, None)
    w[w < 0.01 * w.max()] = 0.0
    total = w.sum()
    inside = w[:n_volumes].sum()
    if total <= 0 or inside / total < min_inside:
        raise InputError(source, f"the {hrf_model} response to the event at onset {onset:g} s (duration "
                                 f"{duration:g} s) inside the run", f"a run of {n_volumes} volumes "
                                                                    f"({n_volumes * tr:g} s)")
    return w[:n_volumes] / inside


def event_samples(data, events, tr, lag_s, source="events", alignment="lag", hrf_model="glover",
                  window_trs=0, out_of_run="error"):
    """One sample per event from a cleaned run.

    Parameters
    ----------
    data : ndarray (n_volumes, n_voxels)
    events : DataFrame with onset, duration, clip_id (onsets relative to the first kept volume)
    tr, lag_s : float, seconds
    alignment : {'lag', 'hrf'}
    hrf_model : {'glover', 'spm'}
        For ``alignment='hrf'``.
    window_trs : int
        0: one averaged volume per event; n >= 1: n consecutive volumes from the first lagged one.
    out_of_run : {'error', 'drop'}
        What to do with an event whose window leaves the run.

    Returns
    -------
    samples : ndarray float32, (n_kept, n_voxels) or (n_kept, window_trs, n_voxels)
    clip_ids : list of str
    kept : ndarray of int, positions in ``events`` of the kept events
    """
    rows, kept = [], []
    n = data.shape[0]
    ons = events["onset"].to_numpy(float)
    durs = events["duration"].to_numpy(float)
    for i, (onset, duration) in enumerate(zip(ons, durs)):
        try:
            if window_trs:
                first = window_volumes(onset, duration, lag_s, tr, n, source)[0]
                idx = np.arange(first, first + window_trs)
                if idx[-1] >= n:
                    raise InputError(source, f"{window_trs} volumes from volume {first} for the event at onset "
                                             f"{onset:g} s (lag {lag_s:g} s, TR {tr:g} s)",
                                     f"a run of {n} volumes")
                rows.append(data[idx])
            elif alignment == "hrf":
                w = hrf_weights(onset, duration, tr, n, hrf_model, source)
                nz = np.flatnonzero(w)
                rows.append(w[nz].astype(np.float32) @ data[nz])
            else:
                rows.append(data[window_volumes(onset, duration, lag_s, tr, n, source)].mean(axis=0))
            kept.append(i)
        except InputError:
            if out_of_run != "drop":
                raise
    ids = [str(c) for c in events["clip_id"].to_numpy()[kept]]
    if not rows:
        return np.zeros((0,) + ((window_trs,) if window_trs else ()) + data.shape[1:], np.float32), ids, \
            np.asarray(kept, int)
    return np.stack(rows).astype(np.float32), ids, np.asarray(kept, int)


def average_repeats(samples, clip_ids):
    """Average samples that share a clip id; rows come out in sorted clip-id order."""
    clip_ids = np.asarray(clip_ids)
    unique = sorted(set(clip_ids.tolist()))
    out = np.stack([samples[clip_ids == c].mean(axis=0) for c in unique]).astype(np.float32)
    return out, unique
