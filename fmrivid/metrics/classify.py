"""N-way top-K classification accuracy (MinD-Video protocol) and the classifiers it uses.

Protocol (REFERENCE.md section 3): a classifier applied to the ground truth
gives its top ``n_gt`` classes (3 in MinD-Video; 1 for the strict variant).
Each of ``trials`` trials samples ``n_way - 1`` distractor classes uniformly
without replacement from the classes *not* among those; the trial is correct
when one of the GT classes has a higher probability, in the classifier's output
on the reconstruction, than every distractor. A clip's value is the fraction of
correct trials. Frame level: an ImageNet image classifier on every frame
(value = mean over frames); video level: a Kinetics video classifier on the clip.

Classifiers come through :func:`fmrivid.models.load` (kinds
``image_classifier`` and ``video_classifier``); on the demo, the frame-level
classifier is the one trained on the training clips
(:mod:`fmrivid.metrics.demo_classifier`).
"""

from __future__ import annotations

import cv2
import numpy as np

from fmrivid.errors import InputError

VARIANTS = {
    "nway_topk": "N-way top-1 with the top-{n_gt} GT classes (MinD-Video's rule): {level}; {trials} trials, "
                 "distractors exclude the GT classes, seeded; N={n_way}; classifier {model}",
}

LEVELS = {
    "frame": "frame level (image classifier on each frame, mean over frames)",
    "video": "video level (video classifier on the whole clip)",
}


def variant(n_way, n_gt, level, trials, model):
    """Variant string of one N-way setting (recorded in every table row)."""
    return VARIANTS["nway_topk"].format(n_way=int(n_way), n_gt=int(n_gt), level=LEVELS[level],
                                        trials=int(trials), model=model)


def _check_probs(probs, name):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise InputError(name, "class probabilities of shape (N, C) with C >= 2", f"shape {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise InputError(name, "finite probabilities", "NaN or inf")
    return probs


def clip_rng(seed, i):
    """The distractor generator of clip ``i`` (independent of the GT it is paired with)."""
    return np.random.default_rng([int(seed), int(i)])


def draw_positions(n_clips, n_frames, n_classes, n_way, n_gt, trials, seed, indices=None):
    """Seeded distractor draws, as positions in the pool of non-GT classes.

    Clip i draws from ``default_rng([seed, i])``, frame after frame; each trial
    is a uniformly random subset of ``n_way - 1`` of the ``n_classes - n_gt``
    pool positions (the argpartition of iid uniforms). Positions do not depend
    on which GT the clip is compared with, so shuffled-GT controls reuse them.
    ``indices`` (the global indices of a chunk's clips; ``n_clips`` is then
    ignored) gives row k the draws of clip ``indices[k]``, i.e. the rows
    ``indices`` of the unchunked draw.

    Returns
    -------
    ndarray, int64, shape (n_clips or len(indices), n_frames, trials, n_way - 1)
    """
    pool = int(n_classes) - int(n_gt)
    k = int(n_way) - 1
    if pool < k:
        raise InputError("probs", f"at least {k + n_gt} classes for {n_way}-way trials with {n_gt} GT "
                                  f"class(es)", f"{n_classes} classes")
    indices = np.arange(int(n_clips)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    out = np.empty((indices.size, int(n_frames), int(trials), k), dtype=np.int64)
    for row, i in enumerate(indices):
        rng = clip_rng(seed, i)
        for t in range(int(n_frames)):
            keys = rng.random((int(trials), pool))
            out[row, t] = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < pool else np.arange(pool)
    return out


def nway_clip(p_gt, p_rec, positions, n_gt):
    """N-way accuracy of one (GT, reconstruction) pair of probability vectors.

    Parameters
    ----------
    p_gt, p_rec : ndarray, shape (C,)
        Classifier outputs on the GT and on the reconstruction.
    positions : ndarray, int, shape (trials, n_way - 1)
        Distractors of each trial as positions in the sorted pool of non-GT classes.
    n_gt : int
        GT classes = the top ``n_gt`` of ``p_gt`` (3: MinD-Video; 1: strict);
        ties resolve to the lower class index.

    Returns
    -------
    float
        Fraction of trials where the best GT class beats every distractor (strictly).
    """
    gt_classes = np.argsort(-p_gt, kind="stable")[:n_gt]
    pool = np.setdiff1d(np.arange(p_gt.shape[0]), gt_classes)
    best_gt = p_rec[gt_classes].max()
    return float(np.mean(best_gt > p_rec[pool[positions]].max(axis=1)))


def nway_topk(probs_gt, probs_rec, n_way, trials=100, n_gt=3, seed=0, pairing=None, positions=None):
    """N-way top-K accuracy per clip.

    Parameters
    ----------
    probs_gt, probs_rec : array_like, shape (N, C) or (N, T, C)
        Classifier probabilities on GT and reconstructions; with a frame axis
        the value is the mean over frames (frame-level protocol, each frame
        with its own GT classes).
    n_way : int
        2 or 50 in the published tables.
    trials : int
        Trials per clip (100 in MinD-Video).
    n_gt : int
        3 for the MinD-Video rule, 1 for the strict variant.
    seed : int
        Seed of :func:`draw_positions`.
    pairing : array_like of int, shape (N,), optional
        Compare reconstruction i with GT ``pairing[i]`` (shuffled-GT control);
        default the identity. Clip i keeps its own distractor draws.
    positions : ndarray, optional
        Precomputed :func:`draw_positions` (to reuse across pairings).

    Returns
    -------
    ndarray, float64, shape (N,)
    """
    pg = np.asarray(probs_gt, dtype=np.float64)
    pr = np.asarray(probs_rec, dtype=np.float64)
    if pg.shape != pr.shape:
        raise InputError("probs_rec", f"the shape of probs_gt {pg.shape}", f"shape {pr.shape}")
    if pg.ndim == 2:
        pg, pr = pg[:, None], pr[:, None]
    if pg.ndim != 3:
        raise InputError("probs_gt", "shape (N, C) or (N, T, C)", f"shape {pg.shape}")
    _check_probs(pg.reshape(-1, pg.shape[-1]), "probs_gt")
    _check_probs(pr.reshape(-1, pr.shape[-1]), "probs_rec")
    n_way, n_gt = int(n_way), int(n_gt)
    if n_way < 2 or n_gt < 1:
        raise ValueError(f"nway_topk: n_way >= 2 and n_gt >= 1 needed, got n_way={n_way}, n_gt={n_gt}")
    n, t, c = pg.shape
    if positions is None:
        positions = draw_positions(n, t, c, n_way, n_gt, trials, seed)
    pairing = np.arange(n) if pairing is None else np.asarray(pairing, dtype=np.int64)
    return nway_pairs(pr, prepare_gt(pg, n_gt), positions, np.arange(n), pairing)


def prepare_gt(probs_gt, n_gt):
    """GT classes and distractor pools of every GT clip and frame.

    Parameters
    ----------
    probs_gt : ndarray, shape (N, T, C)
    n_gt : int

    Returns
    -------
    gt_classes : ndarray, shape (N, T, n_gt)
        Top ``n_gt`` classes (stable: ties to the lower index).
    pools : ndarray, shape (N, T, C - n_gt)
        The other classes, sorted (what :func:`draw_positions` indexes).
    """
    order = np.argsort(-np.asarray(probs_gt), axis=-1, kind="stable")
    return order[..., :n_gt], np.sort(order[..., n_gt:], axis=-1)


def nway_pairs(probs_rec, prepared, positions, rec_idx, gt_idx):
    """N-way accuracy of reconstruction ``rec_idx[k]`` judged against GT ``gt_idx[k]`` (vectorised).

    Parameters
    ----------
    probs_rec : ndarray, shape (N, T, C)
    prepared : tuple
        :func:`prepare_gt` of the GT probabilities.
    positions : ndarray, shape (N, T, trials, n_way - 1)
        :func:`draw_positions` (indexed by the reconstruction).
    rec_idx, gt_idx : ndarray of int, shape (M,)

    Returns
    -------
    ndarray, float64, shape (M,)
        Fraction of correct trials over frames and trials; equals
        :func:`nway_clip` averaged over frames.
    """
    gt_classes, pools = prepared
    rec_idx = np.asarray(rec_idx, dtype=np.int64)
    gt_idx = np.asarray(gt_idx, dtype=np.int64)
    t = probs_rec.shape[1]
    out = np.empty(rec_idx.size, dtype=np.float64)
    for start in range(0, rec_idx.size, _CHUNK):
        i = rec_idx[start:start + _CHUNK]
        j = gt_idx[start:start + _CHUNK]
        pr = probs_rec[i]                                                                # (m, T, C)
        best_gt = np.take_along_axis(pr, gt_classes[j], axis=-1).max(axis=-1)            # (m, T)
        pos = positions[i]                                                               # (m, T, trials, k)
        flat = pos.reshape(len(i), t, -1)
        classes = np.take_along_axis(pools[j], flat, axis=-1)                           # (m, T, trials*k)
        distract = np.take_along_axis(pr, classes, axis=-1).reshape(pos.shape).max(axis=-1)
        out[start:start + len(i)] = (best_gt[:, :, None] > distract).mean(axis=(1, 2))
    return out


#: Clips per vectorised block of :func:`nway_topk` (bounds memory at CC2017 scale).
_CHUNK = 64


# ----------------------------------------------------------------------------- classifiers


def _resize_frames(frames, size):
    """uint8 (M, H, W, 3) -> float32 (M, size, size, 3) in [0, 1] (cv2 area/linear resize)."""
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.float32)
    for k, f in enumerate(frames):
        h, w = f.shape[:2]
        interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
        out[k] = cv2.resize(np.ascontiguousarray(f), (size, size), interpolation=interp) / np.float32(255)
    return out


def _normalise(pixels, processor):
    mean = np.asarray(getattr(processor, "image_mean", None) or [0.5, 0.5, 0.5], dtype=np.float32)
    std = np.asarray(getattr(processor, "image_std", None) or [0.5, 0.5, 0.5], dtype=np.float32)
    return (pixels - mean) / std


def image_class_probs(loaded, frames, batch_size=64):
    """Softmax class probabilities of an image classifier on every frame.

    Frames are resized to the model's ``image_size`` (cv2 INTER_AREA when
    shrinking, INTER_LINEAR when enlarging) and normalised with the processor's
    mean and std.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel or object with ``class_probs``
        Kind ``image_classifier``; or a classifier that computes its own
        per-frame probabilities, ``loaded.class_probs(frames) -> (N, T, C)``
        (the demo classifier, :class:`fmrivid.metrics.demo_classifier.DemoClassifier`).
    frames : ndarray, uint8, shape (N, T, H, W, 3)
    batch_size : int

    Returns
    -------
    ndarray, float64, shape (N, T, C)
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 5:
        raise InputError("frames", "uint8 clips (N, T, H, W, 3)", f"{frames.dtype} {frames.shape}")
    if hasattr(loaded, "class_probs"):
        return np.asarray(loaded.class_probs(frames), dtype=np.float64)
    import torch

    n, t = frames.shape[:2]
    size = int(loaded.model.config.image_size)
    flat = frames.reshape(n * t, *frames.shape[2:])
    out = []
    with torch.no_grad():
        for start in range(0, flat.shape[0], batch_size):
            px = _normalise(_resize_frames(flat[start:start + batch_size], size), loaded.processor)
            x = torch.from_numpy(px).permute(0, 3, 1, 2).to(loaded.device, loaded.dtype)
            out.append(torch.softmax(loaded.model(pixel_values=x).logits.float(), dim=-1).double().cpu().numpy())
    probs = np.concatenate(out)
    return probs.reshape(n, t, -1)


def sample_indices(t, num_frames):
    """``num_frames`` frame indices spread uniformly over ``t`` frames (repeats when t < num_frames)."""
    return np.round(np.linspace(0, t - 1, int(num_frames))).astype(np.int64)


def with_num_frames(loaded, num_frames):
    """The same video classifier built for ``num_frames`` input frames, as MinD-Video's
    ``video_classify_metric`` loads VideoMAE (``from_pretrained(..., num_frames=6)``): same weights, sinusoidal
    position embeddings for that many frames, so a clip is fed its own frames without resampling.

    Returns
    -------
    fmrivid.models.LoadedModel or str
        The model, or why it cannot be built (frames not a multiple of the tubelet size).
    """
    import copy
    import dataclasses

    cfg = loaded.model.config
    tubelet = int(getattr(cfg, "tubelet_size", 1))
    if int(num_frames) % tubelet:
        return f"not computed: {num_frames} frames per clip is not a multiple of the model's tubelet size {tubelet}"
    if int(num_frames) == int(cfg.num_frames):
        return loaded
    new_cfg = copy.deepcopy(cfg)
    new_cfg.num_frames = int(num_frames)
    model = type(loaded.model)(new_cfg)
    model.load_state_dict(loaded.model.state_dict())
    model = model.to(loaded.device, loaded.dtype).eval()
    info = dict(loaded.info, num_frames=int(num_frames))
    return dataclasses.replace(loaded, model=model, info=info)


def video_class_probs(loaded, clips, batch_size=8):
    """Softmax class probabilities of a video classifier (VideoMAE) on every clip.

    Each clip is resampled to the model's ``num_frames`` with
    :func:`sample_indices`, frames resized and normalised as in
    :func:`image_class_probs`.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel
        Kind ``video_classifier``.
    clips : ndarray, uint8, shape (N, T, H, W, 3)
    batch_size : int

    Returns
    -------
    ndarray, float64, shape (N, C)
    """
    import torch

    clips = np.asarray(clips)
    if clips.dtype != np.uint8 or clips.ndim != 5:
        raise InputError("clips", "uint8 clips (N, T, H, W, 3)", f"{clips.dtype} {clips.shape}")
    cfg = loaded.model.config
    idx = sample_indices(clips.shape[1], cfg.num_frames)
    size = int(cfg.image_size)
    out = []
    with torch.no_grad():
        for start in range(0, clips.shape[0], batch_size):
            batch = clips[start:start + batch_size][:, idx]
            b, t = batch.shape[:2]
            px = _normalise(_resize_frames(batch.reshape(b * t, *batch.shape[2:]), size), loaded.processor)
            x = torch.from_numpy(px.reshape(b, t, size, size, 3)).permute(0, 1, 4, 2, 3)
            x = x.to(loaded.device, loaded.dtype)
            out.append(torch.softmax(loaded.model(pixel_values=x).logits.float(), dim=-1).double().cpu().numpy())
    return np.concatenate(out)
