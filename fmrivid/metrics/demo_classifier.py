"""The demo's frame classifier: the ImageNet classifier's role in N-way accuracy, for the demo stimuli.

The demo has no pretrained classifier (its ``tiny`` ViT is random and nearly
constant), so the N-way metric of REFERENCE.md section 3 gets a classifier
trained *inside the workflow* on the demo's **training** clips only. Its
classes come from the training captions: each label group (default colour and
shape, i.e. up to 4 x 4 = 16 classes) contributes the one vocabulary word the
caption contains ("a red circle drifts left ..." -> "red circle"). A caption
with no word, or several words, of a group is skipped (logged). Classes are
the labels that occur in training; a test clip of a class never seen in
training simply has no class of its own.

Features are computed from pixels, per frame, after an area resize to
``size`` x ``size``. Saliency is chroma, max(R, G, B) - min(R, G, B): the demo
backgrounds are grey (chroma 0) and its shapes saturated; a frame's weight map
is its chroma minus the frame's median chroma (noise, texture) minus
``chroma_floor``, kept in a window of half the frame around the most salient
blob (argmax of the weight map blurred at half the shape radius):

- colour: the weighted, circular, linearly interpolated hue histogram
  (``hue_bins`` bins, normalised), the weighted mean RGB and the mean weight;
- shape: the weight map in that window re-centred on its centroid, resized to
  ``crop_px`` x ``crop_px`` and scaled to max 1 (translation invariant), and
  the log Hu moments of the window's weights (``cv2.HuMoments``);
- optional ``rgb_grid``: mean RGB of a grid (the downsampled frame; off by
  default: it ties the class to the position and lowered held-out accuracy).

Training adds ``augment`` degraded copies of every training frame (blur,
fade, noise: what a generator's reconstructions look like), so that the
classifier still names the class of a blurry reconstruction.

Features are standardised with training statistics and fed to a multinomial
scikit-learn ``LogisticRegression``; the model is stored as one safetensors
file (coefficients, intercepts, scaler; provenance JSON in its metadata), so
loading it runs no pickle and needs no scikit-learn.

Use::

    info = train(frames, captions, "demo_classifier.safetensors", cfg, seed)
    clf = load("demo_classifier.safetensors")
    probs = fmrivid.metrics.classify.image_class_probs(clf, clips)   # (N, T, C)
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import cv2
import numpy as np

from fmrivid.errors import ConfigError, InputError
from fmrivid.io.atomic import atomic_path

__all__ = ["DEFAULTS", "NAME", "DemoClassifier", "config", "parse_labels", "frame_features", "augment", "train",
           "load"]

#: Every config key, its default and meaning (the ``demo_classifier`` config section).
DEFAULTS = {
    "labels": {                                   # label groups, in label order: group -> its caption words;
        "colour": ["red", "green", "blue", "yellow"],  # a clip's class joins the one word of each group its
        "shape": ["circle", "square", "triangle", "cross"],  # caption holds ("red circle"); else it is skipped
    },
    "size": 32,               # frames are area-resized to size x size (pixels) before features are computed
    "hue_bins": 12,           # bins of the chroma-weighted circular hue histogram
    "chroma_floor": 0.15,     # chroma (max-min of RGB in [0, 1]) below this counts as background
    "crop_px": 12,            # side of the centred chroma window (half the frame wide) in the shape features
    "rgb_grid": 0,            # mean RGB on a rgb_grid x rgb_grid grid as features (0: off; position-bound, it
                              # lowered held-out accuracy on the demo: 0.81 vs 0.95 of test GT frames)
    "augment": 2,             # degraded copies of every training frame added to training (0: none), see below
    "augment_blur": 0.04,     # max Gaussian blur sigma of a copy, as a fraction of the frame side
    "augment_noise": 20.0,    # max SD of the Gaussian pixel noise of a copy (grey levels)
    "augment_fade": 0.5,      # max fraction by which a copy is blended towards its mean grey (fainter shapes)
    "C": 1.0,                 # inverse L2 strength of the logistic regression
    "max_iter": 2000,         # lbfgs iterations of the logistic regression
    "cv_folds": 5,            # clip-grouped cross-validation on the training clips, for the log (0 or 1: off)
}

#: Classifier name recorded in the N-way variant string ("classifier demo (trained on training clips) ...").
NAME = "demo (trained on training clips)"

_FORMAT = "fmrivid.demo_classifier/1"
_TENSORS = ("coef", "intercept", "mean", "scale")


# ----------------------------------------------------------------------------- config and labels


def config(cfg=None):
    """``DEFAULTS`` updated with ``cfg``; unknown keys and bad values raise ConfigError naming the key."""
    out = json.loads(json.dumps(DEFAULTS))
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"demo_classifier.{unknown[0]}: expected one of {sorted(DEFAULTS)}; "
                          f"found unknown key {unknown[0]!r}")
    out.update(cfg)
    labels = out["labels"]
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(f"demo_classifier.labels: expected a non-empty mapping group -> list of caption "
                          f"words; found {labels!r}")
    for group, words in labels.items():
        if (not isinstance(words, (list, tuple)) or not words
                or not all(isinstance(w, str) and re.fullmatch(r"[a-z0-9]+", w.lower()) for w in words)):
            raise ConfigError(f"demo_classifier.labels.{group}: expected a non-empty list of single words; "
                              f"found {words!r}")
        if len({w.lower() for w in words}) != len(words):
            raise ConfigError(f"demo_classifier.labels.{group}: expected distinct words; found {words!r}")
    for key, low in (("size", 8), ("hue_bins", 2), ("crop_px", 2), ("rgb_grid", 0), ("max_iter", 1),
                     ("cv_folds", 0), ("augment", 0)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"demo_classifier.{key}: expected an integer >= {low}; found {value!r}")
    for key, ok, what in (("chroma_floor", lambda v: 0 <= v < 1, "[0, 1)"), ("C", lambda v: v > 0, "(0, inf)"),
                          ("augment_blur", lambda v: 0 <= v < 1, "[0, 1)"),
                          ("augment_noise", lambda v: 0 <= v <= 255, "[0, 255]"),
                          ("augment_fade", lambda v: 0 <= v < 1, "[0, 1)")):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ConfigError(f"demo_classifier.{key}: expected a number in {what}; found {value!r}")
        out[key] = float(value)
    return out


def parse_labels(captions, labels):
    """Class label of every caption, or None with the reason it was skipped.

    Parameters
    ----------
    captions : sequence of str
    labels : dict
        Group -> vocabulary (``DEFAULTS["labels"]``); matching is on whole,
        lower-cased words.

    Returns
    -------
    list
        Per caption: ``(label, None)`` (e.g. ``("red circle", None)``) or
        ``(None, reason)``.
    """
    out = []
    for cap in captions:
        words = set(re.findall(r"[a-z0-9]+", str(cap).lower()))
        parts, reason = [], None
        for group, vocab in labels.items():
            hits = [w for w in vocab if w.lower() in words]
            if len(hits) != 1:
                reason = (f"no {group} word of {list(vocab)}" if not hits
                          else f"{len(hits)} {group} words ({', '.join(hits)})")
                break
            parts.append(hits[0].lower())
        out.append((None, reason) if reason else (" ".join(parts), None))
    return out


# ----------------------------------------------------------------------------- features


def _resized(frames, size):
    """uint8 (M, H, W, 3) -> float32 (M, size, size, 3) in [0, 1] (the classify resize)."""
    from fmrivid.metrics.classify import _resize_frames

    return _resize_frames(frames, size)


def _hue_hist(hue, weight, bins):
    """Circular hue histograms with linear interpolation between bin centres: (M, bins), rows sum to 1 or 0."""
    m = hue.shape[0]
    pos = hue.reshape(m, -1) / 360.0 * bins - 0.5
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.int64) % bins
    hi = (lo + 1) % bins
    w = weight.reshape(m, -1)
    rows = np.arange(m)[:, None] * bins
    hist = (np.bincount((rows + lo).ravel(), (w * (1 - frac)).ravel(), m * bins)
            + np.bincount((rows + hi).ravel(), (w * frac).ravel(), m * bins)).reshape(m, bins)
    total = hist.sum(axis=1, keepdims=True)
    return np.divide(hist, total, out=np.zeros_like(hist), where=total > 0)


def _log_hu(img):
    hu = cv2.HuMoments(cv2.moments(img)).ravel()
    return -np.sign(hu) * np.log10(np.abs(hu) + 1e-12)


def frame_features(frames, cfg=None):
    """Pixel features of every frame (see the module docstring).

    Parameters
    ----------
    frames : ndarray, uint8, shape (M, H, W, 3)
    cfg : dict, optional
        Keys of :data:`DEFAULTS` (merged with it).

    Returns
    -------
    ndarray, float64, shape (M, F)
    """
    cfg = config(cfg)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError("frames", "uint8 frames (M, H, W, 3)", f"{frames.dtype} {frames.shape}")
    size, floor, crop = cfg["size"], cfg["chroma_floor"], cfg["crop_px"]
    px = _resized(frames, size)                                              # (M, S, S, 3) float32
    m = px.shape[0]
    chroma = px.max(axis=-1) - px.min(axis=-1)
    background = np.median(chroma.reshape(m, -1), axis=1)[:, None, None]    # noise / texture chroma level
    weight = np.clip(chroma - background - floor, 0.0, None).astype(np.float32)   # (M, S, S)
    hue = np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2HSV)[..., 0] for f in px])
    win = size // 2
    sigma = size / 16.0                                                      # half the shape radius
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    local = np.zeros_like(weight)                                            # weight inside the shape window
    shape = np.zeros((m, crop * crop), dtype=np.float64)
    hu = np.zeros((m, 7), dtype=np.float64)
    for k in range(m):
        if not weight[k].any():
            continue
        smooth = cv2.GaussianBlur(weight[k], (0, 0), sigma)
        cy, cx = np.unravel_index(int(np.argmax(smooth)), smooth.shape)      # the most salient blob
        near = (np.abs(xx - cx) <= win / 2) & (np.abs(yy - cy) <= win / 2)
        local[k] = np.where(near, weight[k], 0.0)
        mass = local[k].sum()
        cx, cy = float((local[k] * xx).sum() / mass), float((local[k] * yy).sum() / mass)
        patch = cv2.getRectSubPix(weight[k], (win, win), (cx, cy))
        patch = cv2.resize(patch, (crop, crop), interpolation=cv2.INTER_AREA if crop < win else cv2.INTER_LINEAR)
        top = patch.max()
        shape[k] = (patch / top).ravel() if top > 0 else 0.0
        hu[k] = _log_hu(local[k])
    mass = local.reshape(m, -1).sum(axis=1)
    safe = np.where(mass > 0, mass, 1.0)
    mean_rgb = np.einsum("mhw,mhwc->mc", local, px) / safe[:, None]
    parts = [_hue_hist(hue, local, cfg["hue_bins"]), mean_rgb, (mass / (size * size))[:, None], shape, hu]
    g = cfg["rgb_grid"]
    if g:
        edges = [int(e) for e in np.linspace(0, size, g + 1)[:-1].round()]   # g x g cells (array_split-like)
        sums = np.add.reduceat(np.add.reduceat(px, edges, axis=1), edges, axis=2)
        counts = np.diff(np.append(edges, size))
        parts.append((sums / np.outer(counts, counts)[None, :, :, None]).reshape(m, -1))
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1)


def augment(frames, cfg, rng):
    """Degraded copies of frames, like a generator's reconstructions: blurred, noisy, faded.

    Every copy draws its blur sigma, noise SD and fade uniformly in
    ``[0, augment_blur * side]``, ``[0, augment_noise]`` and ``[0, augment_fade]``.

    Parameters
    ----------
    frames : ndarray, uint8, shape (M, H, W, 3)
    cfg : dict
        Merged config.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, uint8, shape (augment * M, H, W, 3)
    """
    out = []
    side = frames.shape[1]
    for _ in range(cfg["augment"]):
        copy = frames.astype(np.float32)
        for k in range(copy.shape[0]):
            sigma = rng.uniform(0, cfg["augment_blur"]) * side
            if sigma > 0.1:
                copy[k] = cv2.GaussianBlur(copy[k], (0, 0), sigma)
            fade = rng.uniform(0, cfg["augment_fade"])
            copy[k] = (1 - fade) * copy[k] + fade * copy[k].mean()
            copy[k] += rng.normal(0, rng.uniform(0, cfg["augment_noise"]), copy[k].shape).astype(np.float32)
        out.append(np.clip(np.round(copy), 0, 255).astype(np.uint8))
    return np.concatenate(out) if out else frames[:0]


# ----------------------------------------------------------------------------- the classifier


class DemoClassifier:
    """A trained demo classifier; :func:`fmrivid.metrics.classify.image_class_probs` accepts it.

    Attributes
    ----------
    classes : list of str
        Class labels (sorted), e.g. ``"red circle"``.
    info : dict
        Provenance: ``kind`` ("demo_classifier"), ``name`` (the variant text), ``classes``,
        ``cfg``, ``seed``, training clip counts, skipped clips, accuracies.
    """

    def __init__(self, coef, intercept, mean, scale, info):
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.info = info
        self.classes = list(info["classes"])
        self.cfg = config(info["cfg"])

    def logits(self, features):
        """(M, F) features -> (M, C) logits."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        out = z @ self.coef.T + self.intercept
        if out.shape[1] == 1:                       # binary logistic regression: class 1 vs class 0
            out = np.concatenate([np.zeros_like(out), out], axis=1)
        return out

    def frame_probs(self, frames):
        """Softmax class probabilities of frames: uint8 (M, H, W, 3) -> float64 (M, C)."""
        logit = self.logits(frame_features(frames, self.cfg))
        logit -= logit.max(axis=1, keepdims=True)
        p = np.exp(logit)
        return p / p.sum(axis=1, keepdims=True)

    def class_probs(self, clips):
        """Per-frame probabilities of clips: uint8 (N, T, H, W, 3) -> float64 (N, T, C)."""
        clips = np.asarray(clips)
        if clips.dtype != np.uint8 or clips.ndim != 5:
            raise InputError("frames", "uint8 clips (N, T, H, W, 3)", f"{clips.dtype} {clips.shape}")
        n, t = clips.shape[:2]
        return self.frame_probs(clips.reshape(n * t, *clips.shape[2:])).reshape(n, t, -1)

    def predict(self, clips):
        """Class label of every frame: (N, T, H, W, 3) -> list of N lists of T labels."""
        idx = self.class_probs(clips).argmax(axis=-1)
        return [[self.classes[j] for j in row] for row in idx]


def _fit(x, y, cfg, seed):
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    lr = LogisticRegression(C=cfg["C"], max_iter=cfg["max_iter"], random_state=int(seed))
    lr.fit((x - mean) / scale, y)
    return lr.coef_, lr.intercept_, mean, scale


def _accuracy(coef, intercept, mean, scale, x, y):
    logit = ((x - mean) / scale) @ coef.T + intercept
    pred = (logit[:, 0] > 0).astype(np.int64) if logit.shape[1] == 1 else logit.argmax(axis=1)
    return float(np.mean(pred == y))


def _grouped_cv(x, y, groups, original, cfg, seed):
    """Clip-grouped k-fold accuracy on original (not augmented) frames; None when not computable.

    Frames of a clip, and their augmented copies, never straddle folds.
    """
    from sklearn.model_selection import GroupKFold

    folds = min(int(cfg["cv_folds"]), len(np.unique(groups)))
    if folds < 2:
        return None
    correct = 0
    for tr, te in GroupKFold(n_splits=folds).split(x, y, groups):
        te = te[original[te]]
        present = np.unique(y[tr])
        if present.size < 2:
            continue
        remap = {c: k for k, c in enumerate(present)}
        coef, intercept, mean, scale = _fit(x[tr], np.array([remap[c] for c in y[tr]]), cfg, seed)
        logit = ((x[te] - mean) / scale) @ coef.T + intercept
        idx = (logit[:, 0] > 0).astype(np.int64) if logit.shape[1] == 1 else logit.argmax(axis=1)
        correct += int(np.sum(present[idx] == y[te]))
    return correct / int(original.sum())


def train(frames, captions, out_path, cfg=None, seed=0, log=print):
    """Train the demo classifier on training clips and save it atomically.

    Parameters
    ----------
    frames : ndarray, uint8, shape (N, T, H, W, 3)
        Frames of the **training** clips only (every frame is a sample labelled
        with its clip's class).
    captions : sequence of str, length N
        Their captions; the classes come from them (:func:`parse_labels`).
    out_path : str or Path
        The model file (safetensors).
    cfg : dict, optional
        Keys of :data:`DEFAULTS`.
    seed : int
    log : callable

    Returns
    -------
    dict
        The provenance stored with the model (also ``load(out_path).info``).

    Raises
    ------
    InputError
        Frames not uint8 (N, T, H, W, 3), captions not N, fewer than 2 classes.
    ConfigError
        Bad ``cfg``.
    """
    from safetensors.numpy import save_file

    t0 = time.perf_counter()
    cfg = config(cfg)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise InputError("frames", "uint8 training clips (N, T, H, W, 3)", f"{frames.dtype} {frames.shape}")
    captions = [str(c) for c in captions]
    if len(captions) != frames.shape[0]:
        raise InputError("captions", f"one caption per training clip ({frames.shape[0]})",
                         f"{len(captions)} captions")
    parsed = parse_labels(captions, cfg["labels"])
    keep = [i for i, (lab, _) in enumerate(parsed) if lab is not None]
    skipped = [{"index": i, "caption": captions[i], "reason": why} for i, (lab, why) in enumerate(parsed)
               if lab is None]
    for s in skipped:
        log(f"demo classifier: skipped training clip {s['index']} ({s['caption']!r}): {s['reason']}")
    classes = sorted({parsed[i][0] for i in keep})
    if len(classes) < 2:
        raise InputError("captions", f"training captions naming at least 2 classes of the label groups "
                                     f"{list(cfg['labels'])}", f"{len(classes)} class(es) {classes} from "
                                                                 f"{len(keep)} usable of {len(captions)} captions")
    n, t = len(keep), frames.shape[1]
    log(f"demo classifier: {n} training clips x {t} frames, {len(classes)} classes "
        f"({' x '.join(cfg['labels'])}), {len(skipped)} clip(s) skipped")
    flat = frames[keep].reshape(n * t, *frames.shape[2:])
    flat = np.concatenate([flat, augment(flat, cfg, np.random.default_rng([int(seed), 6]))])
    x = frame_features(flat, cfg)
    copies = 1 + cfg["augment"]
    index = {c: k for k, c in enumerate(classes)}
    y = np.tile(np.repeat([index[parsed[i][0]] for i in keep], t), copies)
    groups = np.tile(np.repeat(np.arange(n), t), copies)
    original = np.arange(y.size) < n * t
    cv = _grouped_cv(x, y, groups, original, cfg, seed) if cfg["cv_folds"] >= 2 else None
    coef, intercept, mean, scale = _fit(x, y, cfg, seed)
    acc = _accuracy(coef, intercept, mean, scale, x[original], y[original])
    info = {
        "format": _FORMAT,
        "kind": "demo_classifier",
        "name": f"{NAME}, {len(classes)} classes {' x '.join(cfg['labels'])}",
        "classes": classes,
        "cfg": cfg,
        "seed": int(seed),
        "n_clips": len(captions),
        "n_clips_used": n,
        "n_frames": int(t),
        "n_features": int(x.shape[1]),
        "n_training_frames": int(y.size),
        "skipped": skipped,
        "train_accuracy": acc,
        "cv_accuracy": cv,
        "clips_per_class": {c: int(np.sum(y == k)) // t for k, c in enumerate(classes)},
    }
    tensors = {"coef": np.ascontiguousarray(coef, dtype=np.float64),
               "intercept": np.ascontiguousarray(intercept, dtype=np.float64),
               "mean": np.ascontiguousarray(mean, dtype=np.float64),
               "scale": np.ascontiguousarray(scale, dtype=np.float64)}
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp), metadata={"fmrivid": json.dumps(info, sort_keys=True)})
    log(f"demo classifier: {x.shape[1]} features; training frame accuracy {acc:.3f}, clip-grouped "
        f"{cfg['cv_folds']}-fold CV accuracy " + (f"{cv:.3f}" if cv is not None else "n/a")
        + f" (chance {1 / len(classes):.3f}); {time.perf_counter() - t0:.1f}s -> {out_path}")
    return info


def load(path):
    """Load a model written by :func:`train`.

    Returns
    -------
    DemoClassifier
        Usable wherever an ``image_classifier`` LoadedModel is
        (:func:`fmrivid.metrics.classify.image_class_probs`, the suite's
        ``models``).

    Raises
    ------
    InputError
        Missing file, or not a demo classifier file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    expected = "a demo classifier written by fmrivid.metrics.demo_classifier.train (safetensors)"
    if not path.is_file():
        raise InputError(path, expected, "no such file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(path, expected, f"an unreadable file ({err})") from None
    try:
        info = json.loads(meta.get("fmrivid", "null"))
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, dict) or info.get("format") != _FORMAT or set(_TENSORS) - set(tensors):
        raise InputError(path, expected, f"metadata {sorted(meta)} and tensors {sorted(tensors)}")
    return DemoClassifier(*(tensors[k] for k in _TENSORS), info)
