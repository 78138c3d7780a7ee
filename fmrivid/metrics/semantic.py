"""Semantic identification metrics on feature vectors (CLIP embeddings and the like)."""

from __future__ import annotations

import numpy as np

from fmrivid.errors import InputError

#: Two correlations closer than this are a tie (each tie counts half). Float
#: round-off on a D-long dot product is ~D * 1e-16, far below it.
TIE_TOL = 1e-10

VARIANTS = {
    "two_way_ident": (
        "2-way identification: per clip, fraction of the N-1 other clips j with corr(pred_i, true_i) > "
        "corr(pred_i, true_j), Pearson over features, ties count half (Brain-Diffuser's rule counts a tie as a "
        "failure)"
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


# ----------------------------------------------------------------------------- CLIP temporal consistency

#: Mind-Animator's gate: a clip whose video-level CLIP score is at most this scores 0 on clip_pcc_adjacent.
CLIP_PCC_GATE = 0.6

VARIANTS.update({
    "clip_video_score": (
        "cosine between the frame-averaged CLIP image embeddings of GT and reconstruction (the video-level "
        "CLIP score that gates clip_pcc_adjacent)"
    ),
    "clip_pcc_adjacent": (
        "mean cosine of CLIP image embeddings of adjacent reconstructed frames, set to 0 when the clip's "
        f"video-level CLIP score <= {CLIP_PCC_GATE} (Mind-Animator's rule, but gated and scored by this CLIP "
        "model; their gate is a ViFi-CLIP score and their scorer ViT-B/32: clip_pcc (Mind-Animator protocol))"
    ),
    "clip_pcc_allpairs": (
        "mean off-diagonal cosine of CLIP image embeddings over all pairs of reconstructed frames, "
        "no gate (NEURONS' definition; with its CLIP: clip_pcc (NEURONS protocol))"
    ),
})


def _unit(x, name):
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError(name, "finite embeddings", "NaN or inf")
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise InputError(name, "embeddings with non-zero norm", "a zero vector")
    return x / norm


def _check_frame_embeddings(emb, name, min_frames=1):
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 3:
        raise InputError(name, "frame embeddings of shape (N clips, T frames, D)", f"shape {emb.shape}")
    if emb.shape[1] < min_frames:
        raise InputError(name, f"at least {min_frames} frames per clip", f"{emb.shape[1]}")
    return emb


def clip_video_score(gt_emb, rec_emb):
    """Video-level CLIP score: cosine of the frame-mean embeddings of GT and reconstruction.

    Parameters
    ----------
    gt_emb, rec_emb : array_like, shape (N, T, D)
        CLIP image embeddings of every frame.

    Returns
    -------
    ndarray, float64, shape (N,)
    """
    gt_emb = _check_frame_embeddings(gt_emb, "gt_emb")
    rec_emb = _check_frame_embeddings(rec_emb, "rec_emb")
    if gt_emb.shape[0] != rec_emb.shape[0] or gt_emb.shape[2] != rec_emb.shape[2]:
        raise InputError("rec_emb", f"N and D of gt_emb {gt_emb.shape}", f"shape {rec_emb.shape}")
    a = _unit(gt_emb.mean(axis=1), "gt_emb")
    b = _unit(rec_emb.mean(axis=1), "rec_emb")
    return np.einsum("nd,nd->n", a, b)


def clip_pcc_adjacent(rec_emb, video_score, gate=CLIP_PCC_GATE):
    """Mean cosine of adjacent-frame CLIP embeddings, gated by the video-level CLIP score.

    Parameters
    ----------
    rec_emb : array_like, shape (N, T, D)
        CLIP image embeddings of the reconstructed frames (T >= 2).
    video_score : array_like, shape (N,)
        :func:`clip_video_score` of each clip.
    gate : float
        Clips with ``video_score <= gate`` score 0.

    Returns
    -------
    ndarray, float64, shape (N,)
    """
    rec = _unit(_check_frame_embeddings(rec_emb, "rec_emb", min_frames=2), "rec_emb")
    video_score = np.asarray(video_score, dtype=np.float64)
    if video_score.shape != (rec.shape[0],):
        raise InputError("video_score", f"shape ({rec.shape[0]},)", f"shape {video_score.shape}")
    adj = np.einsum("ntd,ntd->nt", rec[:, :-1], rec[:, 1:]).mean(axis=1)
    return np.where(video_score > gate, adj, 0.0)


def clip_pcc_allpairs(rec_emb):
    """Mean off-diagonal cosine over all pairs of reconstructed frames (no gate).

    Parameters
    ----------
    rec_emb : array_like, shape (N, T, D)
        CLIP image embeddings of the reconstructed frames (T >= 2).

    Returns
    -------
    ndarray, float64, shape (N,)
    """
    rec = _unit(_check_frame_embeddings(rec_emb, "rec_emb", min_frames=2), "rec_emb")
    t = rec.shape[1]
    gram = np.einsum("ntd,nsd->nts", rec, rec)
    off = gram.sum(axis=(1, 2)) - np.einsum("ntt->n", gram)
    return off / (t * (t - 1))


# ----------------------------------------------------------------------------- retrieval


def cosine_matrix(pred, true):
    """``S[i, j] = cos(pred_i, true_j)`` for (N, D) inputs -> (N, N) float64."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.ndim != 2 or true.ndim != 2 or pred.shape[1] != true.shape[1]:
        raise InputError("pred", f"(N, D) arrays with the D of true {true.shape}", f"shape {pred.shape}")
    return _unit(pred, "pred") @ _unit(true, "true").T


def retrieval_topk(pred, true, k, distractors=None):
    """Top-k retrieval: is the true clip among the k gallery clips most similar to the decoded embedding?

    The gallery is the test clips (and ``distractors``, clips no decoded embedding belongs to). The rank of
    clip i is the number of gallery items other than its true clip with a cosine similarity above
    ``S[i, i]`` (ties go to the true clip); a hit is ``rank < k``.

    Parameters
    ----------
    pred : array_like, shape (N, D)
        Decoded embeddings.
    true : array_like, shape (N, D)
        Embeddings of the test clips, same order.
    k : int
        Cut-off (``k >= N + M`` makes every clip a hit: record the gallery size with the result).
    distractors : array_like, shape (M, D), optional
        More gallery items (Mind-Animator's large retrieval set).

    Returns
    -------
    ndarray, float64, shape (N,)
        1.0 for a hit, 0.0 otherwise.
    """
    if int(k) < 1:
        raise ValueError(f"retrieval_topk: k must be >= 1, got {k!r}")
    s = cosine_matrix(pred, true)
    own = np.diag(s)[:, None] + TIE_TOL
    rank = (s > own).sum(axis=1)
    if distractors is not None and len(distractors):
        rank = rank + (cosine_matrix(pred, distractors) > own).sum(axis=1)
    return (rank < int(k)).astype(np.float64)


def retrieval_nway_top1(pred, true, n_way=300, n_subsets=30, seed=0, backward=False):
    """N-way top-1 retrieval over random subsets of the test clips (MindEye2 protocol).

    Each of ``n_subsets`` subsets draws ``min(n_way, N)`` clips without
    replacement; within it, clip i is a hit when its true clip is the most
    similar (cosine) of the subset's true embeddings (ties go to the true clip).

    Parameters
    ----------
    pred, true : array_like, shape (N, D)
    n_way : int
        Subset size (capped at N; the actual size is returned).
    n_subsets : int
        Number of random subsets.
    seed : int
        Seed of the subset draws.
    backward : bool
        MindEye2's "brain retrieval": for each TRUE embedding, is its own decoded embedding the most similar of
        the subset's decoded embeddings (the other direction of the same similarity matrix).

    Returns
    -------
    values : ndarray, float64, shape (n_subsets,)
        Top-1 accuracy of each subset.
    n : int
        The subset size used.
    """
    s = cosine_matrix(pred, true)
    if backward:
        s = s.T
    n_clips = s.shape[0]
    n = int(min(int(n_way), n_clips))
    if n < 2:
        raise InputError("pred", "at least 2 clips for n-way retrieval", f"{n_clips}")
    rng = np.random.default_rng(seed)
    out = np.empty(int(n_subsets), dtype=np.float64)
    for k in range(int(n_subsets)):
        idx = np.sort(rng.choice(n_clips, size=n, replace=False))
        sub = s[np.ix_(idx, idx)]
        diag = np.diag(sub)
        beaten = (sub > diag[:, None] + TIE_TOL).any(axis=1)
        out[k] = float(np.mean(~beaten))
    return out, n
