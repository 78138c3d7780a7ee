"""Voxel selection scored on training samples only.

Three published families are offered:

- ``reliability``: repeat-to-repeat reliability. ``pooled``: one correlation per
  voxel between the first and second presentation of every training clip, with a
  one-sided t-test (n_clips - 2 dof). ``segment`` (Wen et al. 2017, CC2017): the
  correlation is computed within each group of clips (a movie segment: its time
  series of repeat 1 against repeat 2), Fisher z-transformed, and tested with a
  one-sided one-sample t-test across groups. Bonferroni over voxels, then a p
  threshold or the top-k lowest p.
- ``snr``: between-clip variance of the clip means over the mean within-clip
  variance; the top ``top_percent`` (the encoder-decoder paper keeps 30%).
- ``none``: every candidate voxel.

An ROI mask restricts the candidates first: a volumetric atlas image by path
(:func:`roi_from_atlas`, NIfTI data) or a surface label file matched by vertex
(:func:`roi_from_surface_labels`, CIFTI data: a ``.dlabel.nii`` such as HCP-MMP1.0
on 32k_fs_LR, or a ``{hemi}`` pair of ``.label.gii``), with optional labels.
"""

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
    return np.asarray(a, int), np.asarray(b, int), kept


def _column_corr(a, b):
    """Pearson r of every column of ``a`` with the same column of ``b`` (float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a - a.mean(0)
    b = b - b.mean(0)
    denom = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.where(denom > 0, (a * b).sum(0) / np.where(denom > 0, denom, 1), 0.0)


def reliability_scores(samples, clip_ids):
    """Pooled split-half reliability per voxel.

    Correlates, across training clips, the response to the first presentation
    with the response to the second.

    Returns
    -------
    r : ndarray (n_voxels,)
    p : ndarray (n_voxels,)  one-sided p of r > 0 (t-test with n_clips - 2 dof)
    n_clips : int
    """
    ia, ib, kept = _first_two_presentations(samples, clip_ids)
    n = len(kept)
    if n < 3:
        raise ValueError(f"reliability selection needs >= 3 training clips shown twice; found {n}")
    r = np.clip(_column_corr(samples[ia], samples[ib]), -0.999999, 0.999999)
    t = r * np.sqrt((n - 2) / (1 - r * r))
    p = stats.t.sf(t, df=n - 2)
    return r.astype(np.float64), p, n


def segment_reliability_scores(samples, clip_ids, groups):
    """Per-group reliability, Fisher z, one-sample t-test across groups (Wen et al. 2017).

    Parameters
    ----------
    samples : ndarray (n_presentations, n_voxels)
    clip_ids : sequence of str, one per presentation
    groups : sequence of str, one per presentation (a movie segment, or any clip group)

    Returns
    -------
    z : ndarray (n_voxels,)  mean Fisher z across groups (the score)
    p : ndarray (n_voxels,)  one-sided p of mean z > 0 (t-test, n_groups - 1 dof)
    n_groups : int
    """
    clip_ids = np.asarray(clip_ids)
    groups = np.asarray(groups)
    zs = []
    for g in sorted(set(groups.tolist())):
        rows = groups == g
        ia, ib, kept = _first_two_presentations(samples[rows], clip_ids[rows])
        if len(kept) < 3:
            continue
        sub = samples[rows]
        r = np.clip(_column_corr(sub[ia], sub[ib]), -0.999999, 0.999999)
        zs.append(np.arctanh(r))
    if len(zs) < 2:
        from fmrivid.errors import ConfigError

        names = sorted(set(groups.tolist()))
        raise ConfigError(f"config key 'preprocess.selection.reliability_groups': 'segment' expected at least 2 "
                          f"groups (movie segments) with >= 3 training clips shown twice; found {len(zs)} such group"
                          f"{'' if len(zs) == 1 else 's'} among {names[:5]}: use 'pooled' (or more training "
                          f"segments)")
    zs = np.stack(zs)
    mean = zs.mean(0)
    sd = zs.std(0, ddof=1)
    n = len(zs)
    t = np.where(sd > 0, mean / np.where(sd > 0, sd, 1) * np.sqrt(n), np.sign(mean) * np.inf)
    p = stats.t.sf(t, df=n - 1)
    return mean, p, n


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


def _top(score, k, candidates):
    keep = np.zeros(score.size, bool)
    order = np.argsort(-np.where(candidates, score, -np.inf), kind="stable")
    keep[order[:min(k, int(candidates.sum()))]] = True
    return keep


def select_voxels(samples, clip_ids, method="reliability", p_threshold=0.05, top_percent=30.0,
                  min_voxels=50, log=print, groups=None, reliability_groups="pooled", top_k=0, roi=None):
    """Choose voxels from TRAINING presentations.

    Parameters
    ----------
    samples : ndarray (n_presentations, n_voxels)
        Training presentations only (one row per presentation, repeats not averaged).
    clip_ids : sequence of str
        Clip of every row.
    method : {'reliability', 'snr', 'none'}
    p_threshold : float
        Bonferroni-corrected p threshold (reliability, when ``top_k`` is 0).
    top_percent : float
        Percentage of candidate voxels kept by ``snr``.
    min_voxels : int
        Fallback: keep the best ``min_voxels`` by score when fewer pass.
    groups : sequence of str, optional
        Group (segment) of every row, for ``reliability_groups='segment'``.
    reliability_groups : {'pooled', 'segment'}
    top_k : int
        Reliability: keep the ``top_k`` lowest-p voxels instead of thresholding (0 = threshold).
    roi : ndarray of bool (n_voxels,), optional
        Candidate voxels (an ROI); the others are never selected and do not count for Bonferroni.

    Returns
    -------
    keep : ndarray of bool (n_voxels,)
    score : ndarray (n_voxels,)  higher = better (reliability r or mean Fisher z, or SNR)
    info : dict  what was done, for the QC output
    """
    n_vox = samples.shape[1]
    cand = np.ones(n_vox, bool) if roi is None else np.asarray(roi, bool)
    n_cand = int(cand.sum())
    if n_cand == 0:
        raise ValueError("voxel selection: the ROI leaves no candidate voxel")
    info = {"method": method, "n_candidates": n_cand}
    if roi is not None:
        info["roi_voxels"] = n_cand
    if method == "none":
        score = np.zeros(n_vox)
        keep = cand.copy()
    elif method == "reliability":
        if reliability_groups == "segment":
            if groups is None:
                raise ValueError("reliability_groups 'segment' needs a group (segment) per training sample")
            score, p, n_units = segment_reliability_scores(samples, clip_ids, groups)
            info.update({"reliability_groups": "segment", "n_groups": n_units})
        else:
            score, p, n_units = reliability_scores(samples, clip_ids)
            info.update({"reliability_groups": "pooled", "n_clips": n_units})
        p_bonf = np.minimum(p * n_cand, 1.0)
        if top_k:
            order = [i for i in np.lexsort((-score, p)) if cand[i]][:int(top_k)]  # lowest p, then best score
            keep = np.zeros(n_vox, bool)
            keep[order] = True
            info["top_k"] = int(top_k)
        else:
            keep = cand & (p_bonf < p_threshold)
            info["p_threshold_bonferroni"] = p_threshold
    elif method == "snr":
        score = snr_scores(samples, clip_ids)
        k = max(1, int(round(n_cand * top_percent / 100.0)))
        keep = _top(score, k, cand)
        info["top_percent"] = top_percent
    else:
        raise ValueError(f"unknown selection method {method!r}")
    if method != "none" and keep.sum() < min_voxels:
        log(f"voxel selection: only {int(keep.sum())} voxels passed; keeping the best {min_voxels} by score")
        keep = _top(score, min_voxels, cand)
        info["fallback_top_k"] = min(min_voxels, n_cand)
    info["n_selected"] = int(keep.sum())
    return keep, score, info


def roi_from_atlas(atlas_path, labels, target_img):
    """Boolean ROI on ``target_img``'s grid from an atlas image given by path.

    The atlas is resampled (nearest neighbour) to the target grid with nilearn.
    ``labels`` selects atlas values; an empty list keeps every non-zero value.
    """
    from nilearn import image

    from fmrivid.errors import InputError
    from pathlib import Path
    import nibabel as nib

    path = Path(atlas_path)
    if not path.exists():
        raise InputError(path, "an atlas/ROI image (preprocess.selection.roi_mask)", "no such file")
    try:
        atlas = nib.load(str(path))
        if len(atlas.shape) > 3:
            raise ValueError(f"{len(atlas.shape)}-D image")
    except Exception as exc:
        raise InputError(path, "a 3-D NIfTI atlas image", f"{exc}") from None
    bad = [v for v in labels if isinstance(v, str) and not v.lstrip("-").isdigit()]
    if bad:
        raise InputError(path, "integer atlas values in preprocess.selection.roi_labels for a NIfTI atlas "
                               "(label names need a surface label file: .dlabel.nii or {hemi} .label.gii)",
                         f"names {bad[:5]}")
    labels = [int(v) for v in labels]
    res = image.resample_to_img(atlas, target_img, interpolation="nearest", force_resample=True,
                                copy_header=True)
    values = np.asarray(res.dataobj)
    roi = np.isin(values, labels) if len(labels) else values != 0
    if not roi.any():
        raise InputError(path, f"atlas voxels with labels {list(labels) or 'non-zero'} on the data grid",
                         "none after resampling")
    return roi


def roi_from_surface_labels(spec, labels, models, data_source=""):
    """Boolean ROI over CIFTI grayordinates from a surface label file (HCP-MMP1.0 on 32k_fs_LR, ...).

    ``spec`` is a ``.dlabel.nii`` or a path with ``{hemi}`` (replaced by L and R) of two ``.label.gii``;
    ``labels`` are label names from the file's table (``L_V1_ROI``) or integer keys (empty = every non-zero
    key); ``models`` is the data's BrainModelAxis. Matching is by (structure, vertex index): see
    :func:`fmrivid.io.cifti.surface_label_roi`.
    """
    from fmrivid.io.cifti import surface_label_roi

    return surface_label_roi(spec, labels, models, data_source)
