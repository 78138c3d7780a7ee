"""The evaluation suite: every metric variant of one subject and method, with its statistics.

:func:`evaluate_videos` computes, from lossless GT and reconstructed clips, the
pixel, perceptual, motion, CLIP and N-way metrics; :func:`evaluate_features`
the identification and retrieval metrics of decoded embeddings;
:func:`evaluate_brain` the encoding (voxel_r) and between-subject (isc, fsc)
metrics. Each returns table rows (mean, bootstrap CI over clips, permutation
p-value against shuffled GT pairings) and per-clip rows (for paired tests
between methods), plus one ``shuffled_gt`` row per metric: the same metric
with every reconstruction paired with another clip's GT (one seeded
derangement), i.e. its chance level.
"""

from __future__ import annotations

import time

import numpy as np

from fmrivid.errors import InputError
from fmrivid.metrics import brain, classify, motion, perceptual, pixel, semantic
from fmrivid.metrics.stats import PairCache, derangement, permutation_p_values
from fmrivid.metrics.table import clip_rows, missing_row, summarise

SHUFFLED = "shuffled_gt"


def check_lossless(path, attrs):
    """Refuse frames that were not stored losslessly (e.g. decoded from GIF or MP4).

    Parameters
    ----------
    path : str or Path
        The HDF5 file the frames came from (for the message).
    attrs : dict
        Its attributes; ``storage`` must mention ``lossless`` and the dtype be uint8.

    Raises
    ------
    InputError
    """
    storage = str(attrs.get("storage", ""))
    if "lossless" not in storage:
        raise InputError(path, "lossless frames (attribute storage='lossless ...'); metrics never read frames "
                               "decoded from GIF/MP4", f"storage={storage!r}")


class _Collector:
    """Accumulates rows for one subject/method with shared statistics settings."""

    def __init__(self, subject, method, clip_ids, seed, n_boot, n_perm, log):
        self.subject, self.method, self.clip_ids = subject, method, list(clip_ids)
        self.seed, self.n_boot, self.n_perm, self.log = seed, n_boot, n_perm, log
        self.rows, self.clips = [], []
        self.shuffle = derangement(len(self.clip_ids), seed) if len(self.clip_ids) > 1 else None

    def add(self, metric, variant, values, values_under=None, greater=True, method=None, clip_ids=None,
            stat="mean"):
        """Summarise per-clip ``values``; with ``values_under`` add the permutation p and a shuffled row."""
        method = method or self.method
        t0 = time.perf_counter()
        values = np.asarray(values, dtype=np.float64)
        p = None
        if values_under is not None and self.shuffle is not None:
            observed = float(np.mean(values)) if stat == "mean" else None
            p = permutation_p_values(values_under, len(self.clip_ids), self.n_perm, self.seed, greater, observed)
            shuffled = values_under(self.shuffle)
            self.rows.append(summarise(self.subject, SHUFFLED, metric, variant, shuffled, self.seed,
                                       n_boot=self.n_boot, stat=stat))
            ids = self.clip_ids if clip_ids is None else clip_ids
            self.clips += clip_rows(self.subject, SHUFFLED, metric, variant, ids, shuffled)
        self.rows.append(summarise(self.subject, method, metric, variant, values, self.seed, n_boot=self.n_boot,
                                   p=p, stat=stat))
        ids = self.clip_ids if clip_ids is None else clip_ids
        if len(ids) == len(values):
            self.clips += clip_rows(self.subject, method, metric, variant, ids, values)
        self.log(f"  {method:>16s} {metric:>18s} {np.mean(values):9.4f}"
                 + (f"  p={p:.3f}" if p is not None else "") + f"  ({time.perf_counter() - t0:.1f}s)")

    def missing(self, metric, variant, reason, method=None):
        self.rows.append(missing_row(self.subject, method or self.method, metric, variant, reason))
        self.log(f"  {method or self.method:>16s} {metric:>18s} {reason}")


def _pair_cache(values, pair_fn):
    """A :class:`PairCache` primed with the true pairing's values."""
    cache = PairCache(pair_fn)
    for i, v in enumerate(values):
        cache.cache[(i, i)] = float(v)
    return cache


def _video_pair(fn, gt, rec):
    return lambda ri, gi: fn(gt[gi], rec[ri])


def evaluate_videos(gt, rec, clip_ids, subject, method, cfg, seed, models=None, log=print):
    """Every video metric variant of one subject and method.

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)
        Lossless ground truth and reconstructions (same clip order).
    clip_ids : list of str
        The N clip ids.
    subject, method : str
        Row keys.
    cfg : dict
        The ``evaluate`` config section.
    seed : int
        Master seed (bootstrap, permutations, N-way draws).
    models : dict, optional
        Loaded models: ``clip`` (kind clip), ``image_classifier``,
        ``video_classifier`` (:class:`fmrivid.models.LoadedModel`); a missing
        entry skips its metrics. ``lpips`` maps lpips_alex / lpips_vgg to
        :class:`fmrivid.metrics.perceptual.LPIPS` scorers or to the reason
        they are missing.

    Returns
    -------
    rows : list of dict
        Long-table rows.
    clips : list of dict
        Per-clip rows.
    """
    models = models or {}
    gt, rec = pixel._check_videos(gt, rec)
    col = _Collector(subject, method, clip_ids, seed, cfg["n_boot"], cfg["n_perm"], log)
    size = cfg.get("ssim_size")

    for name in ("ssim_rgb_uniform", "ssim_gray_gaussian"):
        fn = pixel.METRICS[name]

        def f(a, b, fn=fn):
            return fn(a, b, size=size)

        vals = f(gt, rec)
        col.add(name, pixel.variant(name, size), vals, _pair_cache(vals, _video_pair(f, gt, rec)))
    for name in ("psnr", "pixcorr"):
        fn = pixel.METRICS[name]
        vals = fn(gt, rec)
        col.add(name, pixel.variant(name), vals, _pair_cache(vals, _video_pair(fn, gt, rec)))

    hue_gt = perceptual.hue(gt).reshape(gt.shape[0], gt.shape[1], -1)
    hue_rec = perceptual.hue(rec).reshape(rec.shape[0], rec.shape[1], -1)

    def hue_pair(ri, gi):
        a, b = hue_gt[gi], hue_rec[ri]
        num = np.einsum("ntk,ntk->nt", a, b)
        den = np.sqrt(np.einsum("ntk,ntk->nt", a, a) * np.einsum("ntk,ntk->nt", b, b))
        cos = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        zero = den == 0
        if zero.any():
            cos[zero] = np.where(np.all(a == b, axis=2)[zero], 1.0, 0.0)
        return cos.mean(axis=1)

    vals = perceptual.hue_cos(gt, rec)
    col.add("hue_cos", perceptual.VARIANTS["hue_cos"], vals, _pair_cache(vals, hue_pair))

    for name, scorer in sorted((models.get("lpips") or {}).items()):
        variant = perceptual.VARIANTS[name]
        if isinstance(scorer, str):
            col.missing(name, variant, scorer)
            continue
        if getattr(scorer, "random_backbone", False):
            variant += " [random backbone: not LPIPS]"
        vals = scorer(gt, rec)
        col.add(name, variant, vals, _pair_cache(vals, _video_pair(scorer, gt, rec)), greater=False)

    if gt.shape[1] >= 2:
        fg, fr = motion.clip_flows(gt), motion.clip_flows(rec)
        vals = motion.epe_from_flows(fg, fr)
        col.add("epe_farneback", motion.VARIANTS["epe_farneback"], vals,
                _pair_cache(vals, lambda ri, gi: motion.epe_from_flows(fg[gi], fr[ri])), greater=False)
    else:
        col.missing("epe_farneback", motion.VARIANTS["epe_farneback"], "not computed: clips have 1 frame")

    clip_model = models.get("clip")
    if clip_model is not None:
        _clip_metrics(col, gt, rec, clip_model, cfg)
    frame_cls = models.get("image_classifier")
    if frame_cls is not None:
        pg = classify.image_class_probs(frame_cls, gt)
        pr = classify.image_class_probs(frame_cls, rec)
        _nway_metrics(col, pg, pr, "frame", _model_name(frame_cls), cfg, seed)
    video_cls = models.get("video_classifier")
    if video_cls is not None:
        pg = classify.video_class_probs(video_cls, gt)
        pr = classify.video_class_probs(video_cls, rec)
        _nway_metrics(col, pg, pr, "video", _model_name(video_cls), cfg, seed)
    return col.rows, col.clips


def _model_name(loaded):
    info = loaded.info
    if info.get("kind") == "demo_classifier":  # fmrivid.metrics.demo_classifier, given as image_classifier
        return info["name"]                    # "demo (trained on training clips), 16 classes colour x shape"
    name = info.get("resolved") or info.get("spec")
    if info.get("tiny"):
        return f"tiny random {info.get('class', '')} (seed {info.get('seed')}): not a published model"
    return f"{name}@{info.get('revision')}" if info.get("revision") else str(name)


def frame_embeddings(loaded, clips, batch_size=64):
    """CLIP image embeddings of every frame: (N, T, H, W, 3) uint8 -> (N, T, D) float64."""
    from fmrivid.features.embed import image_embeddings

    n, t = clips.shape[:2]
    flat = clips.reshape(n * t, 1, *clips.shape[2:])
    emb = image_embeddings(loaded, flat, batch_size=batch_size, which="first")
    return np.asarray(emb, dtype=np.float64).reshape(n, t, -1)


def _clip_metrics(col, gt, rec, loaded, cfg):
    eg, er = frame_embeddings(loaded, gt), frame_embeddings(loaded, rec)
    model = _model_name(loaded)
    gate = float(cfg["clip_gate"])
    vals = semantic.clip_video_score(eg, er)
    col.add("clip_video_score", f"{semantic.VARIANTS['clip_video_score']}; CLIP {model}", vals,
            _pair_cache(vals, lambda ri, gi: semantic.clip_video_score(eg[gi], er[ri])))
    if gt.shape[1] >= 2:
        def adj_pair(ri, gi):
            return semantic.clip_pcc_adjacent(er[ri], semantic.clip_video_score(eg[gi], er[ri]), gate)

        vals = semantic.clip_pcc_adjacent(er, semantic.clip_video_score(eg, er), gate)
        variant = semantic.VARIANTS["clip_pcc_adjacent"].replace(str(semantic.CLIP_PCC_GATE), f"{gate:g}")
        col.add("clip_pcc_adjacent", f"{variant}; CLIP {model}", vals, _pair_cache(vals, adj_pair))
        col.add("clip_pcc_allpairs", f"{semantic.VARIANTS['clip_pcc_allpairs']}; CLIP {model}",
                semantic.clip_pcc_allpairs(er))


def _nway_metrics(col, pg, pr, level, model, cfg, seed):
    n_classes = pg.shape[-1]
    frames = pg.shape[1] if pg.ndim == 3 else 1
    for n_gt in sorted({int(cfg["nway_gt"]), 1}, reverse=True):
        for n_way in cfg["nway"]:
            variant = classify.variant(n_way, n_gt, level, cfg["nway_trials"], model)
            if n_classes - n_gt < n_way - 1:
                col.missing("nway_topk", variant, f"not computed: {n_classes} classes < {n_way - 1 + n_gt}")
                continue
            pos = classify.draw_positions(pg.shape[0], frames, n_classes, n_way, n_gt, cfg["nway_trials"], seed)
            vals = classify.nway_topk(pg, pr, n_way, cfg["nway_trials"], n_gt, seed, positions=pos)
            pg3, pr3 = (pg, pr) if pg.ndim == 3 else (pg[:, None], pr[:, None])
            prepared = classify.prepare_gt(pg3, n_gt)

            def pair_fn(ri, gi, pos=pos, prepared=prepared, pr3=pr3):
                return classify.nway_pairs(pr3, prepared, pos, ri, gi)

            col.add("nway_topk", variant, vals, _pair_cache(vals, pair_fn))


def evaluate_features(pred, true, clip_ids, subject, target, cfg, seed, log=print):
    """Identification and retrieval metrics of decoded embeddings against the test clips' embeddings.

    Parameters
    ----------
    pred, true : ndarray, shape (N, D)
        Decoded and true embeddings of the N test clips (same order).
    clip_ids : list of str
    subject : str
    target : str
        Feature name (text, image, ...): the method is ``ridge_<target>``.
    cfg : dict
        The ``evaluate`` config section.
    seed : int

    Returns
    -------
    rows, clips : list of dict
    """
    col = _Collector(subject, f"ridge_{target}", clip_ids, seed, cfg["n_boot"], cfg["n_perm"], log)
    n = len(clip_ids)
    what = f"decoded {target} embedding vs the {n} test clips' {target} embeddings"

    def two_way_under(perm):
        return semantic.two_way_ident(pred, true[perm])

    col.add("two_way_ident", f"{semantic.VARIANTS['two_way_ident']}; {what}", two_way_under(np.arange(n)),
            two_way_under)
    for k in cfg["retrieval_topk"]:
        def topk_under(perm, k=k):
            return semantic.retrieval_topk(pred, true[perm], k)

        variant = (f"top-{int(k)} of N={n} test clips (cosine, ties to the true clip; chance "
                   f"{min(int(k), n) / n:.4f}); {what}")
        col.add("retrieval_topk", variant, topk_under(np.arange(n)), topk_under)
    n_way, n_sub = int(cfg["retrieval_nway"]), int(cfg["retrieval_subsets"])
    vals, used = semantic.retrieval_nway_top1(pred, true, n_way, n_sub, seed)

    def nway_under(perm):
        return semantic.retrieval_nway_top1(pred, true[perm], n_way, n_sub, seed)[0]

    variant = (f"{used}-way top-1 over {n_sub} random subsets (MindEye2; asked {n_way}-way, capped by the "
               f"{n} test clips; chance {1 / used:.4f}); CI over subsets; {what}")
    col.add("retrieval_nway_top1", variant, vals, nway_under, clip_ids=[f"subset{k:03d}" for k in range(n_sub)])
    return col.rows, col.clips


def evaluate_voxel_r(pred, measured, voxel_ids, subject, feature, cfg, seed, log=print):
    """voxel_r rows: Pearson r per voxel between encoder predictions and measured test responses.

    ``pred`` and ``measured`` are (N test clips, V voxels); the table gets the
    median over voxels (the encoder-decoder seed's statistic) and the mean, with
    bootstrap CIs over voxels and a permutation p that shuffles test clips.
    """
    col = _Collector(subject, f"ridge_encoder_{feature}", [str(v) for v in voxel_ids], seed, cfg["n_boot"],
                     cfg["n_perm"], log)
    col.shuffle = None  # voxels are not clips: p only
    r = brain.voxel_r(pred, measured)

    def under(perm):
        return brain.voxel_r(pred, measured[perm])

    n = measured.shape[0]
    for stat in ("median", "mean"):
        variant = brain.VARIANTS["voxel_r"].format(feature=feature, stat=stat)
        p = permutation_p_values(lambda perm: [np.median(under(perm))] if stat == "median" else under(perm), n,
                                 cfg["n_perm"], seed, True)
        col.rows.append(summarise(subject, col.method, "voxel_r", variant, r, seed, n_boot=cfg["n_boot"],
                                  p=p, stat=stat))
        log(f"  {col.method:>16s} {'voxel_r':>18s} {stat} {np.median(r) if stat == 'median' else r.mean():.4f} "
            f"p={p:.3f}")
    return col.rows


def evaluate_between_subjects(subjects, cfg, seed, log=print):
    """isc and fsc rows (method ``measured``) for every subject on the voxels all subjects kept.

    Parameters
    ----------
    subjects : dict
        Input of :func:`fmrivid.metrics.brain.common_voxels`.

    Returns
    -------
    list of dict
    """
    rows = []
    if len(subjects) < 2:
        for s in subjects:
            for m in ("isc", "fsc"):
                rows.append(missing_row(s, "measured", m, brain.VARIANTS[m], "not computed: needs >= 2 subjects"))
        return rows
    aligned = brain.common_voxels(subjects)
    n_vox = next(iter(aligned.values())).shape[1]
    if n_vox < 2:
        for s in subjects:
            for m in ("isc", "fsc"):
                rows.append(missing_row(s, "measured", m, brain.VARIANTS[m],
                                        f"not computed: {n_vox} voxel(s) kept by every subject"))
        return rows
    isc, fsc = brain.isc(aligned), brain.fsc(aligned)
    for s in sorted(aligned):
        rows.append(summarise(s, "measured", "isc", f"{brain.VARIANTS['isc']} ({n_vox} voxels)", isc[s], seed,
                              n_boot=cfg["n_boot"]))
        rows.append(summarise(s, "measured", "fsc", f"{brain.VARIANTS['fsc']} ({n_vox} voxels)", fsc[s], seed,
                              n_boot=cfg["n_boot"]))
        log(f"  sub-{s}: isc {isc[s].mean():.4f}, fsc {fsc[s].mean():.4f} over {n_vox} common voxels")
    return rows
