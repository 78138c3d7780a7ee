"""Qualitative protocol (audio-guided seed): timelines, an annotation template, preference rates.

1. :func:`timeline` draws, for one clip, ``n_frames`` frames sampled uniformly
   over time: the ground truth on the first row and each method on its own row.
2. :func:`annotation_template` writes a CSV with one row per (subject, clip)
   and empty columns for the four criteria; an annotator writes, per criterion,
   the method that looks better (``method_a``, ``method_b``) or ``tie``.
3. :func:`preference_rates` summarises filled-in annotations: per criterion,
   the fraction of clips where each method was preferred, ties, and a two-sided
   binomial test (``scipy.stats.binomtest``) of a vs b over non-tied clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path
from fmrivid.report.figures import DPI, _save_png, _upscale, upscale_factor

CRITERIA = ["motion_alignment", "temporal_smoothness", "object_coherence", "preference"]
TEMPLATE_COLUMNS = ["subject", "clip_id", "method_a", "method_b", *CRITERIA, "annotator", "comment"]
TIE = "tie"
RATE_COLUMNS = ["criterion", "method_a", "method_b", "n", "a_preferred", "b_preferred", "ties",
                "rate_a", "rate_b", "rate_tie", "binom_p"]


def uniform_indices(t, n_frames):
    """``min(t, n_frames)`` distinct frame indices spread uniformly from the first to the last frame."""
    n = int(min(int(t), int(n_frames)))
    if n < 1:
        raise ValueError(f"uniform_indices: need t >= 1 and n_frames >= 1, got {t}, {n_frames}")
    return np.round(np.linspace(0, t - 1, n)).astype(np.int64)


def timeline_mosaic(gt, recs, n_frames=8, gap=2):
    """Pixel mosaic of one clip: GT row, then one row per method, uniformly sampled frames.

    Parameters
    ----------
    gt : ndarray, uint8, shape (T, H, W, 3)
    recs : dict of str -> ndarray, uint8, shape (T, H, W, 3)
        Method name -> reconstruction of the same clip.
    n_frames : int
        Frames per row (all frames when the clip is shorter).
    gap : int
        White pixels between frames and rows.

    Returns
    -------
    mosaic : ndarray, uint8
    factor : int
        Integer upscale applied to the frames.
    """
    gt = np.asarray(gt)
    for name, r in recs.items():
        if np.asarray(r).shape != gt.shape:
            raise InputError(f"recs[{name!r}]", f"a clip of shape {gt.shape} (as the GT)", f"{np.asarray(r).shape}")
    idx = uniform_indices(gt.shape[0], n_frames)
    h, w = gt.shape[1:3]
    factor = upscale_factor(h, w, 96)
    rows = [gt, *[np.asarray(recs[m]) for m in recs]]
    ch, cw = h * factor, w * factor
    mosaic = np.full((len(rows) * ch + (len(rows) - 1) * gap, len(idx) * cw + (len(idx) - 1) * gap, 3), 255,
                     dtype=np.uint8)
    for r, clip in enumerate(rows):
        for c, t in enumerate(idx):
            y, x = r * (ch + gap), c * (cw + gap)
            mosaic[y:y + ch, x:x + cw] = _upscale(clip[t], factor)
    return mosaic, factor


def timeline(gt, recs, path, clip_id, n_frames=8, fps=None):
    """PNG timeline of one clip: GT and each method, uniformly sampled frames, time under each column.

    Parameters
    ----------
    gt : ndarray, uint8, shape (T, H, W, 3)
    recs : dict of str -> ndarray, uint8, shape (T, H, W, 3)
    path : str or Path
        Output PNG (written atomically).
    clip_id : str
        Shown in the title.
    n_frames : int
        Frames sampled uniformly over the clip.
    fps : float or None
        Frame rate of the arrays; when given, columns are labelled in seconds.

    Returns
    -------
    Path
    """
    mosaic, factor = timeline_mosaic(gt, recs, n_frames)
    label_w, top, pad, bottom = 90, 24, 4, 16
    width, height = label_w + mosaic.shape[1] + pad, top + mosaic.shape[0] + bottom
    fig = Figure(figsize=((width + 0.25) / DPI, (height + 0.25) / DPI), dpi=DPI, facecolor="white")
    fig.figimage(mosaic, xo=label_w, yo=bottom, origin="upper")
    names = ["ground truth", *recs]
    ch = gt.shape[1] * factor
    for r, name in enumerate(names):
        y = top + r * (ch + 2) + ch / 2
        fig.text(4 / width, 1 - y / height, name[:14], ha="left", va="center", fontsize=8)
    idx = uniform_indices(gt.shape[0], n_frames)
    cw = gt.shape[2] * factor
    for c, t in enumerate(idx):
        x = label_w + c * (cw + 2) + cw / 2
        label = f"{t / fps:.2f}s" if fps else f"f{t}"
        fig.text(x / width, (bottom / 2) / height, label, ha="center", va="center", fontsize=7)
    fig.text(0.5, 1 - (top / 2) / height, f"{clip_id}: GT vs {', '.join(recs)}", ha="center", va="center",
             fontsize=9)
    return _save_png(fig, path)


def annotation_template(subjects_clips, method_a, method_b, path):
    """Write the annotation CSV template (one row per subject and clip, criteria left empty).

    Parameters
    ----------
    subjects_clips : dict of str -> list of str
        Subject -> test clip ids.
    method_a, method_b : str
        The two methods annotators compare (criteria take one of these names or ``tie``).
    path : str or Path
        Output CSV.

    Returns
    -------
    Path
    """
    rows = [{"subject": s, "clip_id": c, "method_a": method_a, "method_b": method_b,
             **{k: "" for k in CRITERIA}, "annotator": "", "comment": ""}
            for s in sorted(subjects_clips) for c in subjects_clips[s]]
    path = Path(path)
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=TEMPLATE_COLUMNS).to_csv(tmp, index=False, lineterminator="\n")
    return path


def read_annotations(path):
    """Read filled-in annotations and check every criterion cell.

    Returns
    -------
    pandas.DataFrame
        Rows with at least one criterion filled in.

    Raises
    ------
    InputError
        Missing columns, or a cell that is neither empty, ``tie``, nor the
        row's ``method_a`` / ``method_b`` (names the file, row and column).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "a filled-in annotation CSV (from the annotation template)", "no such file")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ["subject", "clip_id", "method_a", "method_b", *CRITERIA] if c not in df.columns]
    if missing:
        raise InputError(path, f"columns {TEMPLATE_COLUMNS}", f"missing {missing}")
    for i, row in df.iterrows():
        allowed = {"", TIE, row["method_a"], row["method_b"]}
        for c in CRITERIA:
            value = row[c].strip()
            if value not in allowed:
                raise InputError(path, f"row {i + 2}, column {c!r}: one of {sorted(allowed - {''})} or empty",
                                 repr(row[c]))
    df[CRITERIA] = df[CRITERIA].apply(lambda col: col.str.strip())
    return df[(df[CRITERIA] != "").any(axis=1)].reset_index(drop=True)


def preference_rates(annotations):
    """Preference rates per criterion from filled-in annotations.

    Parameters
    ----------
    annotations : pandas.DataFrame
        Output of :func:`read_annotations`.

    Returns
    -------
    pandas.DataFrame
        :data:`RATE_COLUMNS`, one row per criterion and (method_a, method_b)
        pair: counts, rates over the annotated clips, and the two-sided
        binomial p of a vs b over non-tied clips (NaN when all are ties).
    """
    from scipy.stats import binomtest

    rows = []
    for (a, b), g in annotations.groupby(["method_a", "method_b"], sort=True):
        for c in CRITERIA:
            vals = g[c][g[c] != ""]
            n = int(vals.size)
            na, nb, nt = int((vals == a).sum()), int((vals == b).sum()), int((vals == TIE).sum())
            p = binomtest(na, na + nb, 0.5).pvalue if na + nb > 0 else float("nan")
            rows.append({"criterion": c, "method_a": a, "method_b": b, "n": n, "a_preferred": na,
                         "b_preferred": nb, "ties": nt, "rate_a": na / n if n else float("nan"),
                         "rate_b": nb / n if n else float("nan"), "rate_tie": nt / n if n else float("nan"),
                         "binom_p": float(p)})
    return pd.DataFrame(rows, columns=RATE_COLUMNS)


def write_preference_rates(annotation_path, out_path):
    """Read annotations, write :func:`preference_rates` as a TSV; returns the table."""
    rates = preference_rates(read_annotations(annotation_path))
    with atomic_path(out_path) as tmp:
        rates.to_csv(tmp, sep="\t", index=False, float_format="%.6f", lineterminator="\n")
    return rates
