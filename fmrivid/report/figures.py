"""Report figures: frame grids, side-by-side preview videos, metric bars, loss curves.

Drawn with matplotlib's Agg canvas directly (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``): no pyplot global state and no display. Every writer is
atomic (:func:`fmrivid.io.atomic.atomic_path`) and returns the path written.

Frames are shown pixel-exact in PNGs (nearest-neighbour integer upscaling, no
resampling by matplotlib); preview MP4s are for viewing only (lossy H.264) and
never feed a metric.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path
from fmrivid.io.video import write_mp4
from fmrivid.metrics.pixel import _check_videos
from fmrivid.metrics.table import COLUMNS, read_table

DPI = 100

# frame_grid geometry, in output pixels
GRID_TARGET = 128      # small frames are upscaled (integer, nearest) towards this size
GRID_GAP = 2           # between frames and between the GT and reconstruction rows
GRID_CLIP_GAP = 10     # between clips
GRID_LABEL_W = 110     # left margin for the clip id labels
GRID_TITLE_H = 28      # top margin when there is a title
GRID_PAD = 4           # other margins

# preview_video geometry
PREVIEW_TARGET = 256
PREVIEW_SEP = 2        # white separator between GT and reconstruction
PREVIEW_BANNER_H = 16  # black strip with the clip id above the frames (only with clip_ids)


def upscale_factor(h, w, target, max_factor=4):
    """Integer nearest-neighbour upscale factor for small frames.

    Parameters
    ----------
    h, w : int
        Frame size.
    target : int
        Frames are enlarged until their longer side would exceed ``target``.
    max_factor : int
        Upper bound of the factor.

    Returns
    -------
    int
        ``clip(target // max(h, w), 1, max_factor)``: 4 for 64x64 frames at
        target 256, 2 at target 128, 1 for frames already that large.
    """
    return int(min(max_factor, max(1, target // max(int(h), int(w)))))


def _upscale(frame, factor):
    if factor == 1:
        return frame
    return np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)


def _check_clip_ids(clip_ids, n):
    if clip_ids is None:
        return None
    clip_ids = [str(c) for c in clip_ids]
    if len(clip_ids) != n:
        raise InputError("clip_ids", f"{n} clip ids (one per clip)", f"{len(clip_ids)}")
    return clip_ids


def _short(text, width):
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _save_png(fig, path):
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return path


def _grid_mosaic(gt, rec, factor):
    """White mosaic: per clip a GT row over a reconstruction row, T frames across."""
    n, t, h, w, _ = gt.shape
    ch, cw = h * factor, w * factor
    width = t * cw + (t - 1) * GRID_GAP
    clip_h = 2 * ch + GRID_GAP
    height = n * clip_h + (n - 1) * GRID_CLIP_GAP
    mosaic = np.full((height, width, 3), 255, dtype=np.uint8)
    for i in range(n):
        top = i * (clip_h + GRID_CLIP_GAP)
        for j in range(t):
            left = j * (cw + GRID_GAP)
            mosaic[top:top + ch, left:left + cw] = _upscale(gt[i, j], factor)
            y = top + ch + GRID_GAP
            mosaic[y:y + ch, left:left + cw] = _upscale(rec[i, j], factor)
    return mosaic


def frame_grid(gt, rec, clip_ids, path, max_clips=8, title=None):
    """PNG grid of ground-truth and reconstructed frames.

    For each of the first ``max_clips`` clips: the GT frames on one row, the
    reconstruction below, T frames across, the clip id on the left. Frames are
    drawn pixel-exact, enlarged by :func:`upscale_factor` (target 128 px).

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)
        Ground-truth and reconstructed clips.
    clip_ids : sequence of str, length N
        Labels of the clips.
    path : str or Path
        Output PNG.
    max_clips : int
        At most this many clips (the first ones) are drawn.
    title : str or None
        Optional title above the grid.

    Returns
    -------
    Path
        ``path``. Image size: width ``110 + T*W*f + 2*(T-1) + 4``, height
        ``top + n*(2*H*f + 2) + 10*(n-1) + 4`` with ``top`` 28 with a title and
        4 without, ``f`` the upscale factor and ``n = min(N, max_clips)``.
    """
    gt, rec = _check_videos(gt, rec)
    clip_ids = _check_clip_ids(clip_ids, gt.shape[0])
    if int(max_clips) < 1:
        raise ValueError(f"frame_grid: max_clips must be >= 1, got {max_clips!r}")
    n = min(gt.shape[0], int(max_clips))
    h, w = gt.shape[2:4]
    factor = upscale_factor(h, w, GRID_TARGET)
    mosaic = _grid_mosaic(gt[:n], rec[:n], factor)
    top = GRID_TITLE_H if title else GRID_PAD
    width_px = GRID_LABEL_W + mosaic.shape[1] + GRID_PAD
    height_px = top + mosaic.shape[0] + GRID_PAD
    # +0.25 px: Agg truncates the float canvas size, this keeps it exact
    fig = Figure(figsize=((width_px + 0.25) / DPI, (height_px + 0.25) / DPI), dpi=DPI,
                 facecolor="white")
    fig.figimage(mosaic, xo=GRID_LABEL_W, yo=GRID_PAD, origin="upper")
    ch = h * factor
    for i in range(n):
        y_gt = top + i * (2 * ch + GRID_GAP + GRID_CLIP_GAP) + ch / 2
        y_rec = y_gt + ch + GRID_GAP
        fig.text(4 / width_px, 1 - y_gt / height_px, f"{_short(clip_ids[i], 16)}\nGT",
                 ha="left", va="center", fontsize=8)
        fig.text(4 / width_px, 1 - y_rec / height_px, "recon", ha="left", va="center", fontsize=8)
    if title:
        fig.text(0.5, 1 - (GRID_TITLE_H / 2) / height_px, _short(str(title), 120),
                 ha="center", va="center", fontsize=10)
    return _save_png(fig, path)


def _banner(width, text):
    banner = np.zeros((PREVIEW_BANNER_H, width, 3), dtype=np.uint8)
    cv2.putText(banner, _short(text, 60), (3, PREVIEW_BANNER_H - 4), cv2.FONT_HERSHEY_SIMPLEX,
                0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return banner


def _pad_even(frame, value=255):
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=value)


def preview_frames(gt, rec, clip_ids=None):
    """Side-by-side frames GT | reconstruction for a preview video.

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)
        Ground-truth and reconstructed clips.
    clip_ids : sequence of str or None
        When given, a 16-px black banner with the clip id tops every frame.

    Returns
    -------
    ndarray, uint8, shape (N*T, H', W', 3)
        All clips one after another. Frames are enlarged by
        ``f = upscale_factor(H, W, 256)`` (4 for 64x64); ``W' = 2*W*f + 2``
        and ``H' = H*f`` (+16 with clip ids), each padded by one white pixel
        when odd so that H.264 accepts them.
    """
    gt, rec = _check_videos(gt, rec)
    clip_ids = _check_clip_ids(clip_ids, gt.shape[0])
    n, t, h, w, _ = gt.shape
    factor = upscale_factor(h, w, PREVIEW_TARGET)
    sep = np.full((h * factor, PREVIEW_SEP, 3), 255, dtype=np.uint8)
    frames = []
    for i in range(n):
        banner = None
        if clip_ids is not None:
            banner = _banner(2 * w * factor + PREVIEW_SEP, f"{clip_ids[i]}   GT | reconstruction")
        for j in range(t):
            frame = np.concatenate([_upscale(gt[i, j], factor), sep, _upscale(rec[i, j], factor)],
                                   axis=1)
            if banner is not None:
                frame = np.concatenate([banner, frame], axis=0)
            frames.append(_pad_even(frame))
    return np.stack(frames)


def preview_video(gt, rec, path, fps, clip_ids=None):
    """MP4 of GT | reconstruction side by side, all clips one after another.

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)
        Ground-truth and reconstructed clips.
    path : str or Path
        Output ``.mp4`` (H.264, yuv420p, written atomically).
    fps : float
        Frame rate of the clips.
    clip_ids : sequence of str or None
        Optional clip id banner (see :func:`preview_frames`).

    Returns
    -------
    Path
        ``path``; the video has N*T frames of the size given in :func:`preview_frames`.
    """
    if not float(fps) > 0:
        raise ValueError(f"preview_video: fps must be > 0, got {fps!r}")
    frames = preview_frames(gt, rec, clip_ids=clip_ids)
    write_mp4(path, frames, float(fps))
    return Path(path)


def _as_table(table):
    if isinstance(table, (str, Path)):
        return read_table(table)
    if not isinstance(table, pd.DataFrame):
        raise InputError("table", "a pandas DataFrame or a TSV path", type(table).__name__)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError("table", f"columns {COLUMNS}", f"missing {missing}")
    if table.empty:
        raise InputError("table", "at least one row", "an empty table")
    return table


def _panels(table, metrics):
    """Ordered (metric, variant) pairs to draw."""
    pairs = sorted({(str(m), str(v)) for m, v in zip(table["metric"], table["variant"])})
    if metrics is None:
        return pairs
    metrics = [str(m) for m in metrics]
    absent = [m for m in metrics if m not in {p[0] for p in pairs}]
    if absent:
        raise InputError("table", f"rows for metric(s) {metrics}", f"none for {absent}")
    return [p for m in metrics for p in pairs if p[0] == m]


def _panel_grid(n_panels):
    ncols = min(3, n_panels)
    return int(math.ceil(n_panels / ncols)), ncols


def metric_bars_figure(table, metrics=None):
    """Bar plot of a metric table: one panel per (metric, variant).

    Parameters
    ----------
    table : pandas.DataFrame or str or Path
        Long table with :data:`fmrivid.metrics.table.COLUMNS` (or its TSV).
    metrics : sequence of str or None
        Metrics to draw, in this order; None draws all, sorted.

    Returns
    -------
    matplotlib.figure.Figure
        Panels laid out 3 per row, each with one bar per subject x method
        (sorted, coloured by method) at height ``value`` and an error bar from
        ``ci_low`` to ``ci_high``. Each panel is ``max(3, 0.6*bars + 1)`` by 3.2
        inches at 100 dpi.
    """
    table = _as_table(table)
    panels = _panels(table, metrics)
    nrows, ncols = _panel_grid(len(panels))
    methods = sorted({str(m) for m in table["method"]})
    max_bars = max(
        len(table[(table["metric"].astype(str) == m) & (table["variant"].astype(str) == v)])
        for m, v in panels
    )
    panel_w = max(3.0, 0.6 * max_bars + 1.0)
    fig = Figure(figsize=(panel_w * ncols, 3.2 * nrows), dpi=DPI, layout="constrained")
    for k, (metric, var) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        sub = table[(table["metric"].astype(str) == metric) & (table["variant"].astype(str) == var)]
        sub = sub.assign(subject=sub["subject"].astype(str), method=sub["method"].astype(str))
        sub = sub.sort_values(["subject", "method"])
        value = sub["value"].to_numpy(np.float64)
        yerr = np.vstack([value - sub["ci_low"].to_numpy(np.float64),
                          sub["ci_high"].to_numpy(np.float64) - value]).clip(min=0)
        colors = [_method_color(methods.index(m)) for m in sub["method"]]
        x = np.arange(len(sub))
        ax.bar(x, value, yerr=yerr, color=colors, capsize=3, label=None)
        ax.set_xticks(x, [f"{s}\n{m}" for s, m in zip(sub["subject"], sub["method"])], fontsize=7)
        _panel_title(ax, metric, var)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    return fig


def _panel_title(ax, metric, var):
    """Metric name as the title, its variant in small print between title and axes."""
    lines = textwrap.wrap(var, 70)
    if len(lines) > 3:
        lines = lines[:3]
        lines[-1] = _short(lines[-1] + " ...", 70)
    ax.set_title(metric, fontsize=9, pad=6 + 7.5 * len(lines))
    ax.annotate("\n".join(lines), xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 2),
                textcoords="offset points", ha="center", va="bottom", fontsize=5.5, color="0.3")


def _method_color(index):
    return colormaps["tab10"](index % 10)


def metric_bars(table, path, metrics=None):
    """Write :func:`metric_bars_figure` to a PNG.

    Parameters
    ----------
    table : pandas.DataFrame or str or Path
        Long metric table or its TSV.
    path : str or Path
        Output PNG.
    metrics : sequence of str or None
        Metrics to draw (None: all).

    Returns
    -------
    Path
        ``path``.
    """
    return _save_png(metric_bars_figure(table, metrics=metrics), path)


def _check_curve(name, curve):
    df = pd.DataFrame(curve)
    missing = [c for c in ("step", "loss") if c not in df.columns]
    if missing:
        raise InputError(f"curves[{name!r}]", "columns 'step' and 'loss'", f"columns {list(df.columns)}")
    df = df[["step", "loss"]].astype(np.float64).sort_values("step", kind="stable")
    if not np.isfinite(df["loss"]).any():
        raise InputError(f"curves[{name!r}]", "at least one finite loss", "none")
    return df


def loss_curves_figure(curves):
    """Training-loss curves on one axis with a log-scale y axis.

    Parameters
    ----------
    curves : dict of str -> pandas.DataFrame
        Curve name -> table with columns ``step`` and ``loss``.

    Returns
    -------
    matplotlib.figure.Figure
        One line per curve (sorted by name; NaN losses leave gaps). The y axis
        is ``log`` when every finite loss is > 0, otherwise ``symlog``.
    """
    if not curves:
        raise InputError("curves", "at least one loss curve", "none")
    checked = {str(k): _check_curve(k, v) for k, v in sorted(curves.items(), key=lambda kv: str(kv[0]))}
    fig = Figure(figsize=(6.4, 4.0), dpi=DPI, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    positive = True
    for name, df in checked.items():
        loss = df["loss"].to_numpy()
        finite = loss[np.isfinite(loss)]
        positive &= bool(np.all(finite > 0))
        ax.plot(df["step"].to_numpy(), loss, label=name, linewidth=1.2)
    ax.set_yscale("log" if positive else "symlog")
    ax.set_xlabel("step")
    ax.set_ylabel("loss" + ("" if positive else " (symlog)"))
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def loss_curves(curves, path):
    """Write :func:`loss_curves_figure` to a PNG.

    Parameters
    ----------
    curves : dict of str -> pandas.DataFrame
        Curve name -> table with columns ``step`` and ``loss``.
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
        ``path``.
    """
    return _save_png(loss_curves_figure(curves), path)
