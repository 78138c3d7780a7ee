"""Voxel selection scored on training samples only."""

from __future__ import annotations

import numpy as np
from scipy import stats


def _first_two_presentations(samples, clip_ids):
    clip_ids = np.asarray(clip_ids)
    a, b, kept = [], [], []
    for c in sorted(set(clip_ids.tolist())):
        rows = np.flatnonzero(clip_ids == c)
        if len(rows) >= 2:
            a.append(rows[0])
            b.append(rows[1])
            kept.append(c)
    return samples[a], samples[b], kept


def reliability_scores(samples, clip_ids):
    """Split-half reliability per voxel.

    Correlates, across training clips, the response to the first presentation
    with the response to the second.

    Returns
    -------
    r : ndarray (n_voxels,)
    p : ndarray (n_voxels,)  one-sided p of r > 0 (t-test with n_clips - 2 dof)
    n_clips : int
    """
    a, b, kept = _first_two_presentations(samples, clip_ids)
    n = len(kept)
    if n < 3:
        raise ValueError(f"reliability selection needs >= 3 training clips shown twice; found {n}")
    a = a - a.mean(0)
    b = b - b.mean(0)
    denom = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    r = np.where(denom > 0, (a * b).sum(0) / np.where(denom > 0, denom, 1), 0.0)
    r = np.clip(r, -0.999999, 0.999999)
    t = r * np.sqrt((n - 2) / (1 - r * r))
    p = stats.t.sf(t, df=n - 2)
    return r.astype(np.float64), p, n


def snr_scores(samples, clip_ids):
    """Between-clip variance of clip means over mean within-clip variance (clips with >= 2 repeats)."""
    clip_ids = np.asarray(clip_ids)
    means, within = [], []
    for c in sorted(set(clip_ids.tolist())):
        rows = samples[clip_ids == c]
        if len(rows) >= 2:
            means.append(rows.mean(0))
            within.append(rows.var(0, ddof=1))
    if len(means) < 2:
        raise ValueError("snr selection needs >= 2 training clips with repeats")
    between = np.var(np.stack(means), axis=0, ddof=1)
    noise = np.mean(np.stack(within), axis=0)
    return between / np.maximum(noise, 1e-12)


def select_voxels(samples, clip_ids, method="reliability", p_threshold=0.05, top_percent=30.0,
                  min_voxels=50, log=print):
    """Choose voxels from TRAINING presentations.

    Returns
    -------
    keep : ndarray of bool (n_voxels,)
    score : ndarray (n_voxels,)  higher = better (reliability r, or SNR)
    info : dict  what was done, for the QC output
    """
    n_vox = samples.shape[1]
    if method == "none":
        return np.ones(n_vox, bool), np.zeros(n_vox), {"method": "none", "n_selected": n_vox}
    if method == "reliability":
        score, p, n_clips = reliability_scores(samples, clip_ids)
        keep = p * n_vox < p_threshold
        info = {"method": "reliability", "n_clips": n_clips, "p_threshold_bonferroni": p_threshold}
    elif method == "snr":
        score = snr_scores(samples, clip_ids)
        k = max(1, int(round(n_vox * top_percent / 100.0)))
        keep = np.zeros(n_vox, bool)
        keep[np.argsort(-score, kind="stable")[:k]] = True
        info = {"method": "snr", "top_percent": top_percent}
    else:
        raise ValueError(f"unknown selection method {method!r}")
    if keep.sum() < min_voxels:
        log(f"voxel selection: only {int(keep.sum())} voxels passed; keeping the best {min_voxels} by score")
        keep = np.zeros(n_vox, bool)
        keep[np.argsort(-score, kind="stable")[:min(min_voxels, n_vox)]] = True
        info["fallback_top_k"] = min_voxels
    info["n_selected"] = int(keep.sum())
    info["n_candidates"] = int(n_vox)
    return keep, score, info
