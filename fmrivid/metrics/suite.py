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

Chunked evaluation (one cluster job per chunk of test clips, one failed chunk
reruns alone): :func:`gt_cache` computes the GT-side model outputs once (CLIP
frame embeddings, classifier probabilities, Farneback flows, hue);
:func:`evaluate_videos_chunk` evaluates one chunk of reconstructions into a
partial (:func:`write_partial` / :func:`read_partial`); :func:`merge_partials`
gives exactly the rows of the unchunked :func:`evaluate_videos` (which is
itself one chunk of all clips plus the merge).

One module (~920 lines) on purpose: it is the one place where each metric variant is named, given its
statistics (bootstrap CI, permutation p, shuffled control) and labelled; the metrics themselves live in
``pixel``, ``perceptual``, ``semantic``, ``motion``, ``brain`` and ``stats``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import h5py
import numpy as np

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path
from fmrivid.metrics import brain, classify, motion, perceptual, pixel, protocols, semantic
from fmrivid.metrics.stats import (PairCache, derangement, derangements, p_from_null, permutation_p_values,
                                   surrogate_p)
from fmrivid.metrics.table import clip_rows, missing_row, summarise

SHUFFLED = "shuffled_gt"
#: Reference rows of metrics that describe one video (no GT pairing): the true videos, and a frozen video.
GT_VIDEOS = "gt_videos"
STATIC_VIDEO = "static_video"
REFERENCE_METHODS = (SHUFFLED, GT_VIDEOS, STATIC_VIDEO)


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


def _pair_cache(values, pair_fn, positions=None):
    """A :class:`PairCache` primed with the true pairing's values.

    Keys are (reconstruction row, GT index); with ``positions`` (a chunk's
    global indices) reconstruction row i is paired with GT ``positions[i]``.
    """
    cache = PairCache(pair_fn)
    for i, v in enumerate(values):
        cache.cache[(i, i if positions is None else int(positions[i]))] = float(v)
    return cache


def _video_pair(fn, gt, rec):
    return lambda ri, gi: fn(gt[gi], rec[ri])


# ----------------------------------------------------------------------------- fixed-shape model batches


def _fixed_batches(fn, arrays, batch):
    """``fn`` applied to fixed-size batches of the rows of ``arrays``; the outputs of the real rows.

    The last batch is padded by repeating its first row. Torch kernels can give
    a row a different last bit depending on the batch shape (measured on CPU:
    VideoMAE 5e-10, LPIPS 1e-10 between batch sizes); with every forward pass
    of the same shape, a clip's value does not depend on which clips share its
    batch, so a chunk of clips gets exactly the floats the whole test set gets.
    """
    arrays = [np.asarray(a) for a in arrays]
    n, batch = arrays[0].shape[0], int(batch)
    if n == 0 or batch < 1:
        raise ValueError(f"_fixed_batches: needs rows and batch >= 1, got {n} rows, batch {batch}")
    outs = []
    for start in range(0, n, batch):
        parts = [a[start:start + batch] for a in arrays]
        m = parts[0].shape[0]
        if m < batch:
            parts = [np.concatenate([q, np.repeat(q[:1], batch - m, axis=0)]) for q in parts]
        outs.append(np.asarray(fn(*parts))[:m])
    return np.concatenate(outs)


#: Frames per forward pass of the CLIP image model and the frame classifier.
FRAME_BATCH = 64
#: Clips per forward pass of the video classifier.
VIDEO_BATCH = 8


def _flat_frames(clips):
    n, t = clips.shape[:2]
    return clips.reshape(n * t, 1, *clips.shape[2:])


def frame_embeddings(loaded, clips, batch_size=FRAME_BATCH):
    """CLIP image embeddings of every frame: (N, T, H, W, 3) uint8 -> (N, T, D) float64.

    Forward passes always hold ``batch_size`` frames (the last padded), so a
    frame's embedding does not depend on the other clips passed along.
    """
    from fmrivid.features.embed import image_embeddings

    n, t = clips.shape[:2]
    emb = _fixed_batches(lambda f: image_embeddings(loaded, f, batch_size=batch_size, which="first"),
                         [_flat_frames(clips)], batch_size)
    return np.asarray(emb, dtype=np.float64).reshape(n, t, -1)


def frame_class_probs(loaded, clips, batch_size=FRAME_BATCH):
    """:func:`fmrivid.metrics.classify.image_class_probs` in fixed-size batches: (N, T, C) float64."""
    n, t = clips.shape[:2]
    probs = _fixed_batches(lambda f: classify.image_class_probs(loaded, f, batch_size=batch_size),
                           [_flat_frames(clips)], batch_size)
    return np.asarray(probs, dtype=np.float64).reshape(n, t, -1)


def video_class_probs(loaded, clips, batch_size=VIDEO_BATCH):
    """:func:`fmrivid.metrics.classify.video_class_probs` in fixed-size batches: (N, C) float64."""
    return np.asarray(_fixed_batches(lambda c: classify.video_class_probs(loaded, c, batch_size=batch_size),
                                     [clips], batch_size), dtype=np.float64)


def _lpips_values(scorer, gt, rec):
    """Mean LPIPS over frames per clip, every forward pass of ``scorer.batch_size`` frame pairs."""
    gt, rec = pixel._check_videos(gt, rec)
    if not hasattr(scorer, "frames"):
        return np.asarray(scorer(gt, rec), dtype=np.float64)
    n, t = gt.shape[:2]
    flat = (gt.reshape(n * t, *gt.shape[2:]), rec.reshape(n * t, *rec.shape[2:]))
    return _fixed_batches(scorer.frames, flat, scorer.batch_size).reshape(n, t).mean(axis=1)


def _model_name(loaded):
    info = loaded.info
    if info.get("kind") == "demo_classifier":  # fmrivid.metrics.demo_classifier, given as image_classifier
        return info["name"]                    # "demo (trained on training clips), 16 classes colour x shape"
    name = info.get("resolved") or info.get("spec")
    if info.get("tiny"):
        return f"tiny random {info.get('class', '')} (seed {info.get('seed')}): not a published model"
    return f"{name}@{info.get('revision')}" if info.get("revision") else str(name)


# ----------------------------------------------------------------------------- GT cache

#: ``format`` attribute of a GT cache file.
GT_CACHE_FORMAT = "fmrivid-eval-gt-cache/1"
#: Arrays of the GT cache (None / absent when not computed).
GT_CACHE_ARRAYS = ("hue", "flows", "clip_emb", "frame_probs", "video_probs", "video_probs_native", "vifi_emb")
#: HDF5 group of the GT cache holding the feature-network features of the GT clips (Brain-Diffuser / MindEye
#: protocols): one (N, T, D) float32 dataset per ``<protocol>:<net>``, written and read block by block (AlexNet(2)
#: has 139,968 values per frame: 4 GB for CC2017's 1,200 test clips x 6 frames, never held in memory).
FEATNET_GROUP = "featnets"


def clip_digests(clips):
    """SHA-256 of every clip's uint8 frames (shape and bytes): ties GT cache rows to the frames they came from."""
    out = []
    for clip in clips:
        clip = np.ascontiguousarray(clip)
        h = hashlib.sha256(str(clip.shape).encode())
        h.update(memoryview(clip.reshape(-1)))
        out.append(h.hexdigest())
    return out


def gt_cache_arrays(gt, clip_ids, models=None, log=print, cfg=None):
    """The GT-side outputs of every video metric, computed once for all methods and subjects.

    Computing them once (not in every chunk of every method) keeps the evaluation linear in the test clips: a
    chunk's metrics compare its reconstructions with the GT of ALL test clips (shuffled pairings, 2-way
    identification), so GT features computed per chunk would cost (clips / chunk size) x clips.

    Parameters
    ----------
    gt : ndarray, uint8, shape (N, T, H, W, 3)
        Lossless ground truth of the test clips (any order: rows are looked up
        by clip id; every output of a clip is computed in fixed-shape batches,
        so it does not depend on the order or on the other clips).
    clip_ids : list of str
        The N clip ids, in the same order.
    models : dict, optional
        As :func:`evaluate_videos` (``lpips`` is not used: LPIPS is a
        two-image network).
    log : callable
    cfg : dict, optional
        The ``evaluate`` section: with ``protocol`` mind_animator and its ViFi-CLIP loaded
        (``models["protocol"]["vifi"]``), the GT ViFi-CLIP video embeddings are cached too.

    Returns
    -------
    dict
        ``clip_ids``, ``clip_sha256`` (:func:`clip_digests`), ``clip_shape``
        (T, H, W, 3), ``models`` (kind -> model name in the variant strings)
        and the arrays ``hue`` (N, T, H*W)
        float64, ``flows`` (N, T-1, H, W, 2) float32 (None with 1 frame),
        ``clip_emb`` (N, T, D), ``frame_probs`` (N, T, C), ``video_probs``
        (N, C) float64 (None without the model), ``video_probs_native`` (N, C): the video classifier
        rebuilt for the clips' own T frames (MinD-Video's protocol; None without the model or when T is not a
        multiple of its tubelet size); ``vifi_emb`` (N, D) float64, Mind-Animator's ViFi-CLIP video
        embeddings (None unless that protocol and model). The feature networks' GT features are written by
        :func:`gt_cache` only (into the file, block by block).
    """
    models = models or {}
    gt, _ = pixel._check_videos(gt, gt)
    ids = [str(c) for c in clip_ids]
    if len(ids) != gt.shape[0]:
        raise InputError("clip_ids", f"{gt.shape[0]} clip ids (one per GT clip)", f"{len(ids)}")
    n, t = gt.shape[:2]
    if len(set(ids)) != len(ids):
        raise InputError("clip_ids", "distinct clip ids", f"{len(ids) - len(set(ids))} repeated")
    cache = {"path": "<GT cache in memory>", "clip_ids": ids, "clip_sha256": clip_digests(gt),
             "clip_shape": [int(s) for s in gt.shape[1:]], "models": {}}
    t0 = time.perf_counter()
    cache["hue"] = perceptual.hue(gt).reshape(n, t, -1)
    cache["flows"] = motion.clip_flows(gt) if t >= 2 else None
    log(f"GT cache: hue and Farneback flows of {n} clips x {t} frames ({time.perf_counter() - t0:.1f}s)")
    for kind, key, fn in (("clip", "clip_emb", frame_embeddings), ("image_classifier", "frame_probs",
                                                                   frame_class_probs),
                          ("video_classifier", "video_probs", video_class_probs)):
        loaded = models.get(kind)
        cache[key] = None
        if loaded is None:
            continue
        t0 = time.perf_counter()
        cache[key] = fn(loaded, gt)
        cache["models"][kind] = _model_name(loaded)
        log(f"GT cache: {key} {cache[key].shape} of {cache['models'][kind]} ({time.perf_counter() - t0:.1f}s)")
    cache["video_probs_native"] = None  # MinD-Video's protocol: VideoMAE fed the clips' own frames
    if models.get("video_classifier") is not None:
        native = classify.with_num_frames(models["video_classifier"], t)
        if not isinstance(native, str):
            cache["video_probs_native"] = (cache["video_probs"] if native is models["video_classifier"]
                                           else video_class_probs(native, gt))
    cache["vifi_emb"] = None
    vifi = (models.get("protocol") or {}).get("vifi")
    if "mind_animator" in protocols.check_protocols((cfg or {}).get("protocol", ["fmrivid"])) \
            and vifi is not None and not isinstance(vifi, str):
        from fmrivid.metrics import protocol_models as pm

        t0 = time.perf_counter()
        cache["vifi_emb"] = pm.vifi_video_embeddings(vifi, gt)
        cache["models"]["vifi"] = _model_name(vifi)
        log(f"GT cache: ViFi-CLIP video embeddings {cache['vifi_emb'].shape} ({time.perf_counter() - t0:.1f}s)")
    return cache


def _featnet_nets(cfg, models):
    """((protocol, metric), key, net or None, why) of every feature-network metric of the chosen protocols."""
    from fmrivid.metrics import featnets

    chosen = protocols.check_protocols((cfg or {}).get("protocol", ["fmrivid"]))
    proto_models, clip_model = (models or {}).get("protocol") or {}, (models or {}).get("clip")
    out = []
    for proto in ("brain_diffuser", "mindeye"):
        if proto not in chosen:
            continue
        for metric in (m for m in protocols.PROTOCOLS[proto].metrics if "featnets" in m.needs):
            net_name = metric.name.rsplit("_", 1)[0]
            if net_name == "clip":
                net, why = ((featnets.clip_featnet(clip_model, proto), None) if clip_model is not None else
                            (None, "not computed: no CLIP model (evaluate.clip_model / features.image_model)"))
            else:
                net, why = _protocol_model(proto_models, f"{proto}:{net_name}")
            out.append(((proto, metric), f"{proto}:{net_name}", net, why))
    return out


def _write_featnet_gt(f, gt, cfg, models, log):
    """The GT features of each feature network into group :data:`FEATNET_GROUP` of the open cache ``f``, written
    :data:`FEATNET_GT_BLOCK` clips at a time; returns {key: net.describe()}. A net shared by two metrics (the
    2-way and distance rows of one protocol) is computed once."""
    written = {}
    for _, key, net, _ in _featnet_nets(cfg, models):
        if net is None or key in written:
            continue
        t0 = time.perf_counter()
        n, t = gt.shape[:2]
        ds = None
        for s in range(0, n, FEATNET_GT_BLOCK):
            block = gt[s:s + FEATNET_GT_BLOCK]
            feats = np.asarray(net.features(block.reshape((-1,) + block.shape[2:])), dtype=np.float32)
            feats = feats.reshape(len(block), t, -1)
            if ds is None:
                ds = f.create_dataset(f"{FEATNET_GROUP}/{key}", shape=(n, t, feats.shape[-1]), dtype=np.float32,
                                      chunks=(1, t, feats.shape[-1]))
            ds[s:s + len(block)] = feats
            log(f"GT cache: {key} features of clips {s + len(block)}/{n} ({time.perf_counter() - t0:.1f}s)")
        ds.attrs["net"] = net.describe()
        written[key] = net.describe()
    return written


def _featnet_gt_source(cache, key, net):
    """The cached GT features of ``key`` as a callable yielding (n_b, T, D) blocks in the cache's aligned clip
    order, or None when the cache has none from this very net (then they are computed)."""
    path = cache.get("featnet_file")
    if not path or (cache.get("featnets") or {}).get(key) != net.describe():
        return None
    rows = cache.get("featnet_rows")

    def blocks():
        with h5py.File(path, "r") as f:
            ds = f[f"{FEATNET_GROUP}/{key}"]
            n = ds.shape[0] if rows is None else len(rows)
            for s in range(0, n, FEATNET_GT_BLOCK):
                if rows is None:
                    yield ds[s:s + FEATNET_GT_BLOCK]
                    continue
                r = np.asarray(rows[s:s + FEATNET_GT_BLOCK])
                order = np.argsort(r)
                out = np.empty((len(r),) + ds.shape[1:], dtype=ds.dtype)
                out[order] = ds[r[order]]  # h5py reads increasing indices
                yield out
    return blocks


def gt_cache(gt, clip_ids, models, cfg, out_path, log=print):
    """Compute :func:`gt_cache_arrays` and write them to ``out_path`` (HDF5, atomically).

    Parameters
    ----------
    gt, clip_ids, models
        As :func:`gt_cache_arrays`.
    cfg : dict
        The ``evaluate`` config section (recorded in the file for provenance).
    out_path : str or Path
        Output ``.h5``.

    Returns
    -------
    dict
        The cache (as :func:`read_gt_cache` returns it).
    """
    cache = gt_cache_arrays(gt, clip_ids, models, log=log, cfg=cfg)
    meta = {k: cache[k] for k in ("clip_ids", "clip_sha256", "clip_shape", "models")}
    meta["evaluate_cfg"] = dict(cfg or {})
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = GT_CACHE_FORMAT
            for key in GT_CACHE_ARRAYS:
                if cache[key] is not None:
                    f.create_dataset(key, data=cache[key])
            meta["featnets"] = _write_featnet_gt(f, np.asarray(gt), cfg, models, log)
            f.attrs["meta"] = json.dumps(meta, sort_keys=True, default=str)
    cache.update(path=str(out_path), featnets=meta["featnets"], featnet_file=str(out_path), featnet_rows=None)
    log(f"GT cache written: {out_path}")
    return cache


def _open_h5(path, what, fmt):
    path = Path(path)
    if not path.exists():
        raise InputError(path, what, "no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, what, f"an unreadable file ({exc})") from None
    found = f.attrs.get("format")
    found = found.decode() if isinstance(found, bytes) else found
    if found != fmt:
        f.close()
        raise InputError(path, f"{what} (attribute format={fmt!r})", f"format={found!r}")
    return f


def read_gt_cache(path):
    """Read a GT cache written by :func:`gt_cache` (every array loaded into memory).

    Raises
    ------
    InputError
        Missing file, not a GT cache, or a truncated one.
    """
    with _open_h5(path, "a GT cache of the evaluation (fmrivid.metrics.suite.gt_cache)", GT_CACHE_FORMAT) as f:
        cache = json.loads(f.attrs["meta"])
        cache.pop("evaluate_cfg", None)
        for key in GT_CACHE_ARRAYS:
            cache[key] = f[key][()] if key in f else None
    cache["path"] = str(path)
    # feature-network GT features stay in the file (read block by block by the metrics that use them)
    cache.update(featnets=cache.get("featnets") or {}, featnet_file=str(path), featnet_rows=None)
    if cache["hue"] is None or cache["hue"].shape[0] != len(cache["clip_ids"]):
        raise InputError(path, f"a hue array of {len(cache['clip_ids'])} clips", "none or another size")
    return cache


def align_gt_cache(cache, gt_all, clip_ids):
    """The GT cache rows of ``clip_ids`` (in that order), checked against the GT frames ``gt_all``.

    Parameters
    ----------
    cache : dict
        :func:`gt_cache_arrays` / :func:`read_gt_cache` (may hold more clips, in any order).
    gt_all : ndarray, uint8, shape (N, T, H, W, 3)
        GT frames of ``clip_ids``.
    clip_ids : list of str

    Returns
    -------
    dict
        The cache with its arrays in the order of ``clip_ids`` (no copy when it
        already is).

    Raises
    ------
    InputError
        A clip the cache lacks, another frame shape, or frames whose sha256
        differs from those the cache was computed from.
    """
    where = cache.get("path", "GT cache")
    ids = [str(c) for c in clip_ids]
    index = {c: i for i, c in enumerate(cache["clip_ids"])}
    missing = [c for c in ids if c not in index]
    if missing:
        raise InputError(where, f"GT outputs of clips {missing[:5]}", f"a cache of {len(index)} other clips")
    if list(cache["clip_shape"]) != [int(s) for s in gt_all.shape[1:]]:
        raise InputError(where, f"a GT cache of clips of shape {tuple(gt_all.shape[1:])}",
                         f"clips of shape {tuple(cache['clip_shape'])}")
    rows = np.array([index[c] for c in ids], dtype=np.int64)
    bad = [c for c, d, r in zip(ids, clip_digests(gt_all), rows) if d != cache["clip_sha256"][r]]
    if bad:
        raise InputError(where, "GT outputs computed from these GT frames (same sha256 per clip)",
                         f"other frames for clips {bad[:5]}: rebuild the GT cache")
    if rows.size == len(index) and np.array_equal(rows, np.arange(rows.size)):
        return cache
    out = dict(cache, clip_ids=ids, clip_sha256=[cache["clip_sha256"][r] for r in rows])
    base = cache.get("featnet_rows")
    out["featnet_rows"] = rows if base is None else np.asarray(base)[rows]
    for key in GT_CACHE_ARRAYS:
        if cache.get(key) is not None:
            out[key] = cache[key][rows]
    return out


def _cached(cache, key, kind, loaded):
    """The cached GT array ``key`` of model ``loaded``; refuses a cache made with another model."""
    name = _model_name(loaded)
    where = cache.get("path", "GT cache")
    if cache.get(key) is None:
        raise InputError(where, f"GT {key} of the {kind} {name}", "no such array: rebuild the GT cache with the "
                                                                  "evaluation's models")
    if cache["models"].get(kind) != name:
        raise InputError(where, f"GT {key} of the {kind} {name}", f"those of {cache['models'].get(kind)}")
    return cache[key]


# ----------------------------------------------------------------------------- chunks and partials

#: (reconstruction, GT) pairs per call of a metric's pair function when filling a :class:`PairCache`
#: (bounds the memory of the GT/reconstruction copies: 256 CC2017 clips of 6 x 256 x 256 x 3 uint8 = 0.3 GB).
PAIR_BLOCK = 256

#: ``format`` of a partial (one chunk's per-clip values, shuffled values and permutation nulls).
PARTIAL_FORMAT = "fmrivid-eval-partial/1"


class ChunkCollector:
    """Collects one chunk's share of every metric variant, for :func:`merge_partials`.

    A metric value of clip i depends on reconstruction i and on GT clips only,
    and every statistic is a function of per-clip values: the chunk keeps, for
    its clips, the true values, the values under the shuffled-GT derangement
    and under each of the ``n_perm`` permutation derangements (drawn over all
    ``n_total`` clips with the master seed, exactly as unchunked), so the merge
    rebuilds the unchunked rows bit for bit.

    Parameters
    ----------
    positions : array_like of int, shape (M,)
        Global indices (0 .. n_total-1) of the chunk's clips.
    n_total : int
        Number of test clips.
    clip_ids : list of str
        The M clip ids.
    subject, method : str
    seed : int
    n_perm : int
    log : callable
    """

    def __init__(self, positions, n_total, clip_ids, subject, method, seed, n_perm, log=print):
        self.positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        self.n_total, self.clip_ids = int(n_total), [str(c) for c in clip_ids]
        self.subject, self.method, self.seed, self.n_perm, self.log = subject, method, int(seed), int(n_perm), log
        if len(self.clip_ids) != self.positions.size:
            raise InputError("clip_ids", f"{self.positions.size} clip ids (one per position)", f"{len(clip_ids)}")
        if self.n_total > 1:
            self.shuffle = derangement(self.n_total, self.seed)[self.positions]
            self.perms = [p[self.positions] for p in derangements(self.n_total, self.n_perm, self.seed)]
        else:
            self.shuffle, self.perms = None, []
        self.entries = []

    def add(self, metric, variant, values, values_under=None, greater=True, stat="mean", method=None, null=True):
        """Record per-clip ``values``; with ``values_under(gt_index_per_row)`` also the shuffled and null values.
        ``method``: a reference row's own method name (default: the evaluated method). ``null=False``: the
        shuffled pairing only, no permutation null (the row then has no p)."""
        t0 = time.perf_counter()
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size != self.positions.size:
            raise ValueError(f"ChunkCollector.add({metric}): {values.size} values for {self.positions.size} clips")
        entry = {"kind": "values", "metric": str(metric), "variant": str(variant), "greater": bool(greater),
                 "stat": str(stat), "values": values, "shuffled": None, "null": None, "identity": None}
        if method is not None:
            entry["method"] = str(method)
        if values_under is not None and self.shuffle is not None:
            perms = self.perms if null else []
            if isinstance(values_under, PairCache):
                values_under.prefetch([*perms, self.shuffle], block=PAIR_BLOCK)
            if perms:
                entry["null"] = np.stack([np.asarray(values_under(p), dtype=np.float64) for p in perms])
            entry["shuffled"] = np.asarray(values_under(self.shuffle), dtype=np.float64)
            if stat != "mean":
                entry["identity"] = np.asarray(values_under(self.positions), dtype=np.float64)
        self.entries.append(entry)
        self.log(f"  {self.method:>16s} {metric:>18s} {np.mean(values):9.4f} over {values.size} clip(s) "
                 f"({time.perf_counter() - t0:.1f}s)")

    def missing(self, metric, variant, reason):
        self.entries.append({"kind": "missing", "metric": str(metric), "variant": str(variant),
                             "reason": str(reason)})
        self.log(f"  {self.method:>16s} {metric:>18s} {reason}")

    def partial(self, **extra):
        """The chunk's result: a dict for :func:`write_partial` / :func:`merge_partials`."""
        return {"format": PARTIAL_FORMAT, "subject": str(self.subject), "method": str(self.method),
                "seed": self.seed, "n_total": self.n_total, "n_perm": self.n_perm,
                "positions": self.positions.copy(), "clip_ids": list(self.clip_ids), "entries": self.entries,
                **extra}


def evaluate_videos_chunk(gt_all, gt_cache, rec_chunk, positions, n_total, clip_ids, subject, method, cfg, seed,
                          models=None, log=print):
    """Every video metric variant of one chunk of reconstructions, as a partial for :func:`merge_partials`.

    Parameters
    ----------
    gt_all : ndarray, uint8, shape (n_total, T, H, W, 3)
        Lossless GT of ALL test clips, row = global index (shuffled pairings
        compare the chunk's reconstructions with any clip's GT).
    gt_cache : dict
        :func:`gt_cache_arrays` / :func:`read_gt_cache` holding (at least)
        these clips, in any order (:func:`align_gt_cache` checks it against
        ``gt_all`` by sha256 per clip).
    rec_chunk : ndarray, uint8, shape (M, T, H, W, 3)
        The chunk's reconstructions.
    positions : array_like of int, shape (M,)
        Global indices of the chunk's clips (rows of ``gt_all``).
    n_total : int
        Number of test clips.
    clip_ids : list of str
        The ids of ALL ``n_total`` clips in global order (the chunk's are
        ``clip_ids[positions]``).
    subject, method, cfg, seed, models, log
        As :func:`evaluate_videos`.

    Returns
    -------
    dict
        A partial (see :class:`ChunkCollector`).
    """
    models = models or {}
    gt_all = np.asarray(gt_all)
    n_total = int(n_total)
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if gt_all.ndim < 1 or gt_all.shape[0] != n_total:
        raise InputError("gt_all", f"the GT of all {n_total} test clips", f"shape {gt_all.shape}")
    if pos.size == 0 or pos.min() < 0 or pos.max() >= n_total or np.unique(pos).size != pos.size:
        raise InputError("positions", f"distinct global clip indices in [0, {n_total})", f"{pos.tolist()[:10]}")
    if len(clip_ids) != n_total:
        raise InputError("clip_ids", f"the ids of all {n_total} test clips in global order", f"{len(clip_ids)}")
    gt, rec = pixel._check_videos(gt_all[pos], rec_chunk)
    gt_cache = align_gt_cache(gt_cache, gt_all, clip_ids)
    col = ChunkCollector(pos, n_total, [str(clip_ids[p]) for p in pos], subject, method, seed, cfg["n_perm"], log)
    m, t = rec.shape[:2]
    own = np.arange(m)
    size = cfg.get("ssim_size")

    for name in ("ssim_rgb_uniform", "ssim_gray_gaussian"):
        fn = pixel.METRICS[name]

        def f(a, b, fn=fn):
            return fn(a, b, size=size)

        vals = f(gt, rec)
        col.add(name, pixel.variant(name, size), vals, _pair_cache(vals, _video_pair(f, gt_all, rec), pos))
    for name in ("psnr", "pixcorr"):
        fn = pixel.METRICS[name]
        vals = fn(gt, rec)
        col.add(name, pixel.variant(name), vals, _pair_cache(vals, _video_pair(fn, gt_all, rec), pos))

    null = cfg.get("protocol_null", "shuffled") == "permutation"
    for proto, pm, fn, vals in protocols.protocol_rows(cfg.get("protocol", ["fmrivid"]), gt, rec):
        col.add(protocols.label(pm.name, proto), protocols.variant(proto, pm, t), vals,
                _pair_cache(vals, _video_pair(fn, gt_all, rec), pos), greater=pm.greater, null=null)
    chosen = protocols.check_protocols(cfg.get("protocol", ["fmrivid"]))
    if "mind_animator" in chosen:
        _mind_animator_model_rows(col, gt_all, rec, pos, models.get("protocol") or {}, null, gt_cache)
    _featnet_rows(col, gt_all, rec, pos, models, cfg, null, gt_cache)

    hue_gt = gt_cache["hue"]
    hue_rec = perceptual.hue(rec).reshape(m, t, -1)

    def hue_pair(ri, gi):
        a, b = hue_gt[gi], hue_rec[ri]
        num = np.einsum("ntk,ntk->nt", a, b)
        den = np.sqrt(np.einsum("ntk,ntk->nt", a, a) * np.einsum("ntk,ntk->nt", b, b))
        cos = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        zero = den == 0
        if zero.any():
            cos[zero] = np.where(np.all(a == b, axis=2)[zero], 1.0, 0.0)
        return cos.mean(axis=1)

    vals = hue_pair(own, pos)
    col.add("hue_cos", perceptual.VARIANTS["hue_cos"], vals, _pair_cache(vals, hue_pair, pos))

    for name, scorer in sorted((models.get("lpips") or {}).items()):
        variant = perceptual.VARIANTS[name]
        if isinstance(scorer, str):
            col.missing(name, variant, scorer)
            continue
        if getattr(scorer, "random_backbone", False):
            variant += " [random backbone: not LPIPS]"

        def lp(a, b, scorer=scorer):
            return _lpips_values(scorer, a, b)

        vals = lp(gt, rec)
        col.add(name, variant, vals, _pair_cache(vals, _video_pair(lp, gt_all, rec), pos), greater=False)

    if t >= 2:
        fg = gt_cache.get("flows")
        if fg is None:
            raise InputError(gt_cache.get("path", "GT cache"), "Farneback flows of the GT clips", "none")
        fr = motion.clip_flows(rec)
        vals = motion.epe_from_flows(fg[pos], fr)
        col.add("epe_farneback", motion.VARIANTS["epe_farneback"], vals,
                _pair_cache(vals, lambda ri, gi: motion.epe_from_flows(fg[gi], fr[ri]), pos), greater=False)
    else:
        col.missing("epe_farneback", motion.VARIANTS["epe_farneback"], "not computed: clips have 1 frame")

    clip_model = models.get("clip")
    if clip_model is not None:
        eg = _cached(gt_cache, "clip_emb", "clip", clip_model)
        _clip_metrics(col, eg, frame_embeddings(clip_model, rec), pos, _model_name(clip_model), cfg)
    frame_cls = models.get("image_classifier")
    if frame_cls is not None:
        pg = _cached(gt_cache, "frame_probs", "image_classifier", frame_cls)
        _nway_metrics(col, pg, frame_class_probs(frame_cls, rec), pos, "frame", _model_name(frame_cls), cfg, seed)
    video_cls = models.get("video_classifier")
    if video_cls is not None:
        pg = _cached(gt_cache, "video_probs", "video_classifier", video_cls)
        n_in = int(getattr(video_cls.model.config, "num_frames", rec.shape[1]))
        how = (f"{rec.shape[1]} frames fed as they are" if n_in == rec.shape[1] else
               f"each clip's {rec.shape[1]} frames resampled to the model's {n_in} (uniform in time, nearest frame; "
               "peers feed VideoMAE 6 frames)")
        _nway_metrics(col, pg, video_class_probs(video_cls, rec), pos, "video", f"{_model_name(video_cls)}; {how}",
                      cfg, seed)
        if protocols.wants_native_nway(cfg.get("protocol", ["fmrivid"])):
            native = classify.with_num_frames(video_cls, t)
            label = (f"{_model_name(video_cls)}; rebuilt with num_frames={t} and fed each clip's {t} frames as they "
                     "are, as MinD-Video's video_classify_metric (float32 here, float16 there; seeded draws here)")
            if isinstance(native, str):
                col.missing(protocols.NWAY_LABEL, label, native)
            else:
                pg = _cached(gt_cache, "video_probs_native", "video_classifier", video_cls)
                _nway_metrics(col, pg, video_class_probs(native, rec), pos, "video", label, cfg, seed,
                              metric=protocols.NWAY_LABEL)
    return col.partial()


def _protocol_model(proto_models, name):
    """A model of ``evaluate.protocol_models``: (loaded, None), or (None, why it is missing)."""
    got = proto_models.get(name)
    if got is None:
        return None, f"not computed: evaluate.protocol_models.{name} is not set (or not loaded)"
    if isinstance(got, str):
        return None, got
    return got, None


def _mind_animator_model_rows(col, gt_all, rec, pos, proto_models, null, gt_cache=None):
    """Mind-Animator's ViFi-CLIP score and ViFi-gated CLIP-pcc (:mod:`fmrivid.metrics.protocol_models`); the GT
    video embeddings come from the GT cache when it holds this very model's."""
    from fmrivid.metrics import protocol_models as pm

    metrics = {m.name: m for m in protocols.PROTOCOLS["mind_animator"].metrics}
    t = rec.shape[1]
    vifi, why = _protocol_model(proto_models, "vifi")
    if vifi is None:
        for name in ("vifi_score", "clip_pcc"):
            col.missing(protocols.label(name, "mind_animator"), metrics[name].how, why)
        return
    cached = (gt_cache or {}).get("vifi_emb")
    if cached is not None and (gt_cache.get("models") or {}).get("vifi") == _model_name(vifi):
        eg = cached
    else:
        eg = pm.vifi_video_embeddings(vifi, gt_all)
    er = pm.vifi_video_embeddings(vifi, rec)

    def vifi_pair(ri, gi):
        return np.einsum("nd,nd->n", eg[gi], er[ri])

    own = np.arange(len(pos))
    vals = vifi_pair(own, pos)
    col.add(protocols.label("vifi_score", "mind_animator"),
            protocols.variant("mind_animator", metrics["vifi_score"], t, pm.vifi_describe(_model_name(vifi))),
            vals, _pair_cache(vals, vifi_pair, pos), null=null)
    label = protocols.label("clip_pcc", "mind_animator")
    b32, why = _protocol_model(proto_models, "clip_b32")
    if b32 is None or t < 2:
        col.missing(label, metrics["clip_pcc"].how, why or "not computed: clips have 1 frame")
        return
    adj = pm.adjacent_cosine(frame_embeddings(b32, pm.resize_clips(rec)))

    def clip_pair(ri, gi):
        return pm.gated(adj[ri], vifi_pair(ri, gi))

    vals = clip_pair(own, pos)
    col.add(label, protocols.variant("mind_animator", metrics["clip_pcc"], t,
                                     pm.clip_pcc_describe(_model_name(vifi), _model_name(b32))),
            vals, _pair_cache(vals, clip_pair, pos), null=null)


def _featnet_rows(col, gt_all, rec, pos, models, cfg, null, gt_cache=None):
    """Brain-Diffuser's / MindEye's 2-way identification on AlexNet(2), AlexNet(5), InceptionV3 and CLIP features
    and EffNet-B / SwAV distances (:mod:`fmrivid.metrics.featnets`), every frame an image. The GT clips' features
    come from the GT cache file (:func:`gt_cache`) when it holds this very net's; else they are computed here."""
    from fmrivid.metrics import featnets

    own = np.arange(len(pos))
    t = rec.shape[1]
    for (proto, metric), key, net, why in _featnet_nets(cfg, models):
        label = protocols.label(metric.name, proto)
        if net is None:
            col.missing(label, metric.how, why)
            continue

        def feats(clips, net=net):
            return net.features(clips.reshape((-1,) + clips.shape[2:])).reshape(len(clips), t, -1)

        cached = _featnet_gt_source(gt_cache or {}, key, net)
        er = feats(rec)
        if metric.greater:  # 2-way: every reconstruction frame against the same frame of every GT clip
            source = cached or (lambda feats=feats: (feats(gt_all[s:s + FEATNET_GT_BLOCK])
                                                     for s in range(0, len(gt_all), FEATNET_GT_BLOCK)))
            corr = featnets.corr_to_gt(er, source)

            def pair(ri, gi, corr=corr):
                return featnets.two_way_from_corr(corr, ri, gi)
        else:
            eg = np.concatenate(list(cached())) if cached else feats(gt_all)

            def pair(ri, gi, eg=eg, er=er):
                return featnets.distance(er[ri], eg[gi])
        vals = pair(own, pos)
        col.add(label, protocols.variant(proto, metric, t, f"{metric.how}; {net.describe()}"), vals,
                _pair_cache(vals, pair, pos), greater=metric.greater, null=null)


#: GT clips per block of feature-network features (AlexNet(2) frames hold 139,968 values: the GT features of a
#: whole test set are never held at once for the 2-way correlations).
FEATNET_GT_BLOCK = 64


def _clip_metrics(col, eg, er, pos, model, cfg):
    """CLIP metrics of a chunk: ``eg`` GT frame embeddings of all clips, ``er`` the chunk's reconstructions."""
    gate = float(cfg["clip_gate"])
    vals = semantic.clip_video_score(eg[pos], er)
    col.add("clip_video_score", f"{semantic.VARIANTS['clip_video_score']}; CLIP {model}", vals,
            _pair_cache(vals, lambda ri, gi: semantic.clip_video_score(eg[gi], er[ri]), pos))
    if er.shape[1] >= 2:
        def adj_pair(ri, gi):
            return semantic.clip_pcc_adjacent(er[ri], semantic.clip_video_score(eg[gi], er[ri]), gate)

        vals = semantic.clip_pcc_adjacent(er, semantic.clip_video_score(eg[pos], er), gate)
        variant = semantic.VARIANTS["clip_pcc_adjacent"].replace(str(semantic.CLIP_PCC_GATE), f"{gate:g}")
        col.add("clip_pcc_adjacent", f"{variant}; CLIP {model}", vals, _pair_cache(vals, adj_pair, pos))
        variant = f"{semantic.VARIANTS['clip_pcc_allpairs']}; CLIP {model}"
        col.add("clip_pcc_allpairs", variant, semantic.clip_pcc_allpairs(er))
        # references: a property of one video, so no shuffled pairing; what the true videos score, and a
        # frozen video (the reconstruction's first frame held), which scores 1 by construction
        col.add("clip_pcc_allpairs", variant, semantic.clip_pcc_allpairs(eg[pos]), method=GT_VIDEOS)
        col.add("clip_pcc_allpairs", variant, semantic.clip_pcc_allpairs(np.repeat(er[:, :1], er.shape[1], 1)),
                method=STATIC_VIDEO)
        if "neurons" in protocols.check_protocols(cfg.get("protocol", ["fmrivid"])):
            pm = {m.name: m for m in protocols.PROTOCOLS["neurons"].metrics}["clip_pcc"]
            parity = "" if model.startswith("openai/clip-vit-large-patch14") else \
                " (NEURONS: openai/clip-vit-large-patch14; not parity)"
            col.add(protocols.label("clip_pcc", "neurons"),
                    protocols.variant("neurons", pm, er.shape[1], f"{pm.how}; CLIP {model}{parity}"),
                    semantic.clip_pcc_allpairs(er))


def _nway_metrics(col, pg, pr, pos, level, model, cfg, seed, metric="nway_topk"):
    """N-way metrics of a chunk: ``pg`` GT probabilities of all clips, ``pr`` the chunk's reconstructions."""
    if not (np.all(np.isfinite(pg)) and np.all(np.isfinite(pr))):
        raise InputError(f"{level}-level class probabilities", "finite probabilities", "NaN or inf")
    n_classes = pg.shape[-1]
    frames = pg.shape[1] if pg.ndim == 3 else 1
    pg3, pr3 = (pg, pr) if pg.ndim == 3 else (pg[:, None], pr[:, None])
    own = np.arange(len(pos))
    for n_gt in sorted({int(cfg["nway_gt"]), 1}, reverse=True):
        prepared = None
        for n_way in cfg["nway"]:
            variant = classify.variant(n_way, n_gt, level, cfg["nway_trials"], model)
            if n_classes - n_gt < n_way - 1:
                col.missing(metric, variant, f"not computed: {n_classes} classes < {n_way - 1 + n_gt}")
                continue
            if prepared is None:
                prepared = classify.prepare_gt(pg3, n_gt)
            draws = classify.draw_positions(len(pos), frames, n_classes, n_way, n_gt, cfg["nway_trials"], seed,
                                            indices=pos)

            def pair_fn(ri, gi, draws=draws, prepared=prepared):
                return classify.nway_pairs(pr3, prepared, draws, ri, gi)

            vals = pair_fn(own, pos)
            col.add(metric, variant, vals, _pair_cache(vals, pair_fn, pos))


def write_partial(partial, path):
    """Write a chunk's partial (:func:`evaluate_videos_chunk`) to HDF5, atomically.

    Layout: attribute ``format`` (:data:`PARTIAL_FORMAT`), attribute ``meta``
    (JSON: subject, method, seed, n_total, n_perm, positions, clip ids, the
    entries' metric/variant/greater/stat/kind/reason and any extra keys such
    as ``models``), and per entry k a group ``entry_<k>`` with datasets
    ``values`` (M,), ``shuffled`` (M,), ``null`` (n_perm, M) and
    ``identity`` (M,) where present.
    """
    arrays = ("values", "shuffled", "null", "identity")
    meta = {k: v for k, v in partial.items() if k not in ("entries", "path", "positions")}
    meta["positions"] = [int(p) for p in partial["positions"]]
    meta["entries"] = [{k: v for k, v in e.items() if k not in arrays} for e in partial["entries"]]
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = PARTIAL_FORMAT
            f.attrs["meta"] = json.dumps(meta, sort_keys=True, default=str)
            for k, e in enumerate(partial["entries"]):
                if e["kind"] != "values":
                    continue
                g = f.create_group(f"entry_{k:04d}")
                for key in arrays:
                    if e.get(key) is not None:
                        g.create_dataset(key, data=np.asarray(e[key], dtype=np.float64))
    return Path(path)


def read_partial(path):
    """Read a partial written by :func:`write_partial` (``path`` recorded for error messages)."""
    with _open_h5(path, "an evaluation partial (fmrivid.metrics.suite.write_partial)", PARTIAL_FORMAT) as f:
        partial = json.loads(f.attrs["meta"])
        for k, e in enumerate(partial["entries"]):
            if e["kind"] != "values":
                continue
            name = f"entry_{k:04d}"
            if name not in f or "values" not in f[name]:
                raise InputError(path, f"per-clip values of {e['metric']} ({name}/values)", "none")
            for key in ("values", "shuffled", "null", "identity"):
                e[key] = f[name][key][()] if key in f[name] else None
    partial["positions"] = np.asarray(partial["positions"], dtype=np.int64)
    partial["path"] = str(path)
    return partial


def _where(partial, k):
    return partial.get("path", f"partial {k}")


def merge_partials(partials, cfg, log=print):
    """Rows and per-clip rows of all chunks together: exactly what :func:`evaluate_videos` gives unchunked.

    Per metric variant: the chunks' per-clip values are put back in global
    order; the value and bootstrap CI come from all of them; the permutation
    null of derangement k is the mean over all clips of the chunks' values
    under it, and p compares it with the observed mean
    (:func:`fmrivid.metrics.stats.p_from_null`); the ``shuffled_gt`` row uses
    the global shuffled pairing.

    Parameters
    ----------
    partials : list of dict
        :func:`evaluate_videos_chunk` results (any order), covering every test
        clip exactly once.
    cfg : dict
        The ``evaluate`` section (``n_boot``; ``n_perm`` must match the chunks').
    log : callable

    Returns
    -------
    rows, clips : list of dict
    """
    if not partials:
        raise ValueError("merge_partials: no partials")
    first = partials[0]
    for k, part in enumerate(partials):
        if part.get("format") != PARTIAL_FORMAT:
            raise InputError(_where(part, k), f"an evaluation partial (format {PARTIAL_FORMAT})",
                             f"format {part.get('format')!r}")
        for key in ("subject", "method", "seed", "n_total", "n_perm", "models"):
            if part.get(key) != first.get(key):
                raise InputError(_where(part, k), f"{key}={first.get(key)!r} (as {_where(first, 0)})",
                                 f"{key}={part.get(key)!r}")
    if int(first["n_perm"]) != int(cfg["n_perm"]):
        raise InputError(_where(first, 0), f"chunks evaluated with evaluate.n_perm={cfg['n_perm']}",
                         f"n_perm={first['n_perm']}: rerun the chunks")

    def signature(part):
        return [(e["kind"], e["metric"], e["variant"], e.get("greater"), e.get("stat"), e.get("null") is None,
                 e.get("identity") is None) for e in part["entries"]]

    sig = signature(first)
    for k, part in enumerate(partials[1:], 1):
        if signature(part) != sig:
            raise InputError(_where(part, k), f"the metric variants of {_where(first, 0)}", "other ones")
    n = int(first["n_total"])
    pos = np.concatenate([np.asarray(p["positions"], dtype=np.int64) for p in partials])
    counts = np.bincount(pos[(pos >= 0) & (pos < n)], minlength=n)
    if pos.size != n or np.any(counts != 1):
        missing = np.flatnonzero(counts == 0).tolist()
        twice = np.flatnonzero(counts > 1).tolist()
        raise InputError(_where(first, 0), f"partials covering each of the {n} test clips exactly once",
                         f"{len(missing)} clip(s) missing (global indices {missing[:10]}), "
                         f"{len(twice)} covered twice ({twice[:10]})")
    order = np.argsort(pos, kind="stable")
    ids = [c for p in partials for c in p["clip_ids"]]
    ids = [ids[i] for i in order]
    subject, method, seed = first["subject"], first["method"], int(first["seed"])
    n_boot = cfg["n_boot"]
    rows, clips = [], []

    def gathered(e, key, axis=0):
        arr = np.concatenate([np.asarray(p["entries"][e][key], dtype=np.float64) for p in partials], axis=axis)
        return arr[:, order] if axis == 1 else arr[order]

    for e, entry in enumerate(first["entries"]):
        metric, variant = entry["metric"], entry["variant"]
        if entry["kind"] == "missing":
            rows.append(missing_row(subject, method, metric, variant, entry["reason"]))
            continue
        stat = entry["stat"]
        values = gathered(e, "values")
        p = None
        if entry.get("null") is not None:
            null = gathered(e, "null", axis=1)
            observed = float(np.mean(values if stat == "mean" else gathered(e, "identity")))
            p = p_from_null(np.array([np.mean(null[k]) for k in range(null.shape[0])]), observed,
                            entry["greater"])
        if entry.get("shuffled") is not None:
            shuffled = gathered(e, "shuffled")
            rows.append(summarise(subject, SHUFFLED, metric, variant, shuffled, seed, n_boot=n_boot, stat=stat))
            clips += clip_rows(subject, SHUFFLED, metric, variant, ids, shuffled)
        who = entry.get("method", method)
        rows.append(summarise(subject, who, metric, variant, values, seed, n_boot=n_boot, p=p, stat=stat))
        clips += clip_rows(subject, who, metric, variant, ids, values)
        log(f"  {who:>16s} {metric:>18s} {np.mean(values):9.4f}" + (f"  p={p:.3f}" if p is not None else ""))
    return rows, clips


def evaluate_videos(gt, rec, clip_ids, subject, method, cfg, seed, models=None, log=print):
    """Every video metric variant of one subject and method.

    The unchunked evaluation: :func:`gt_cache_arrays` of ``gt``, one
    :func:`evaluate_videos_chunk` of all clips and :func:`merge_partials`, so
    that a chunked evaluation gives the same floats.

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
    gt, rec = pixel._check_videos(gt, rec)
    cache = gt_cache_arrays(gt, clip_ids, models, log=log, cfg=cfg)
    part = evaluate_videos_chunk(gt, cache, rec, np.arange(gt.shape[0]), gt.shape[0], clip_ids, subject, method,
                                 cfg, seed, models=models, log=log)
    return merge_partials([part], cfg, log=log)


def evaluate_features(pred, true, clip_ids, subject, target, cfg, seed, log=print, method=None, distractors=None):
    """Identification and retrieval metrics of decoded embeddings against the test clips' embeddings.

    Parameters
    ----------
    pred, true : ndarray, shape (N, D)
        Decoded and true embeddings of the N test clips (same order).
    clip_ids : list of str
    subject : str
    target : str
        Feature name (text, image, ...).
    method : str, optional
        Row label; default ``ridge_<target>``.
    cfg : dict
        The ``evaluate`` config section.
    seed : int
    distractors : ndarray, shape (M, D), optional
        Embeddings of clips outside the test set: the large retrieval gallery (``retrieval_large_topk``).

    Returns
    -------
    rows, clips : list of dict
    """
    col = _Collector(subject, method or f"ridge_{target}", clip_ids, seed, cfg["n_boot"], cfg["n_perm"], log)
    n = len(clip_ids)
    by = f" ({method})" if method else ""  # other decoders' chance rows must not collide with ridge's
    what = f"decoded {target} embedding{by} vs the {n} test clips' {target} embeddings"

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
    back, _ = semantic.retrieval_nway_top1(pred, true, n_way, n_sub, seed, backward=True)

    def back_under(perm):
        return semantic.retrieval_nway_top1(pred, true[perm], n_way, n_sub, seed, backward=True)[0]

    variant = (f"{used}-way top-1 over {n_sub} random subsets, backward (MindEye2 brain retrieval: each true "
               f"embedding finds its own decoded embedding among the subset's decoded ones; chance "
               f"{1 / used:.4f}); CI over subsets; {what}")
    col.add("retrieval_backward_nway_top1", variant, back, back_under,
            clip_ids=[f"subset{k:03d}" for k in range(n_sub)])
    if distractors is not None and len(distractors):
        m = len(distractors)
        for k in cfg.get("retrieval_large_topk", []):
            def large_under(perm, k=k):
                return semantic.retrieval_topk(pred, true[perm], k, distractors)

            variant = (f"top-{int(k)} of a large gallery: the N={n} test clips plus {m} other clips as distractors "
                       f"(cosine, ties to the true clip; chance {min(int(k), n + m) / (n + m):.4f}; Mind-Animator "
                       f"reports top-10/100 on a large set whose distractors are not public: not parity); {what}")
            col.add("retrieval_large_topk", variant, large_under(np.arange(n)), large_under)
    return col.rows, col.clips


def evaluate_voxel_r(pred, measured, voxel_ids, subject, feature, cfg, seed, log=print):
    """voxel_r rows: Pearson r per voxel between encoder predictions and measured test responses.

    ``pred`` and ``measured`` are (N test clips, V voxels); the table gets the
    median over voxels (the encoder-decoder seed's statistic) and the mean, with
    bootstrap CIs over voxels and a p-value against phase-randomised surrogates of the measured responses
    (:func:`fmrivid.metrics.stats.surrogate_p`): consecutive test samples are autocorrelated, and a null that
    shuffles them gives p-values that are too small (``tests/unit/test_stats_null.py`` measures both).
    The rows of ``measured`` must be in presentation order.
    """
    col = _Collector(subject, f"ridge_encoder_{feature}", [str(v) for v in voxel_ids], seed, cfg["n_boot"],
                     cfg["n_perm"], log)
    col.shuffle = None  # voxels are not clips: p only
    r = brain.voxel_r(pred, measured)
    for stat in ("median", "mean"):
        variant = brain.VARIANTS["voxel_r"].format(feature=feature, stat=stat)
        reduce = np.median if stat == "median" else np.mean
        p = surrogate_p(lambda surr: reduce(brain.voxel_r(pred, surr)), measured, cfg["n_perm"], seed,
                        observed=float(reduce(r)))
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
    for (a, b), r in brain.fsc_pairwise(aligned).items():  # one row per pair, under its first subject
        rows.append(summarise(a, "measured", "fsc_pairwise",
                              f"{brain.VARIANTS['fsc_pairwise']} ({n_vox} voxels; with sub-{b})", r, seed,
                              n_boot=cfg["n_boot"]))
        log(f"  r(sub-{a}, sub-{b}) {r.mean():.4f}")
    return rows
