"""The report's first page: each method's headline metrics with CI, next to its controls.

A reader opening the report wants first "did it work?": for every reconstruction method, a few metrics with
their bootstrap CI, beside the same metric for

- ``<method>_shuffled``: the method's own shuffled-feature control (every decoded input of a clip taken from
  another test clip), when the run has it;
- ``shuffled_gt``: chance, each reconstruction scored against another clip's ground truth.

:func:`headline_table` picks those rows out of the long metric table (one row per subject, method, metric and
variant, with both controls as columns) and :func:`headline_figure` draws them, one panel per metric. The full
panel set of every metric and variant stays in ``report/metrics.png``.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fmrivid.errors import InputError

#: Default headline metrics (``report.headline``), in panel order.
HEADLINE = ["ssim_rgb_uniform", "pixcorr", "lpips_alex", "clip_video_score", "nway_topk", "epe_farneback"]
#: Metrics where lower is better (the figure says so in the panel title).
LOWER_IS_BETTER = ("lpips_alex", "lpips_vgg", "epe_farneback")
CHANCE = "shuffled_gt"
REFERENCES = (CHANCE, "gt_videos", "static_video")  # reference rows, not methods (fmrivid.metrics.suite)
CONTROL_SUFFIX = "_shuffled"
COLUMNS = ["subject", "method", "metric", "variant", "value", "ci_low", "ci_high", "p", "shuffled_control",
           "shuffled_gt"]


def _variants(rows, metric):
    """The variants of ``metric`` shown in the headline: all of them, except for N-way classification, where
    only the video-level ones (the frame-level ones when no video classifier ran) with the largest top-k GT
    set, at the smallest and the largest N, are kept."""
    variants = sorted(set(rows["variant"]))
    if metric != "nway_topk":
        return variants
    variants = [v for v in variants if "video level" in v] or [v for v in variants if "frame level" in v]
    # then the largest top-k GT set (MinD-Video's top-3) and, of its N-ways, the smallest and the largest
    parsed = [(int(m.group(1)), int(n.group(1)), v) for v in variants
              if (m := re.search(r"top-(\d+) GT", v)) and (n := re.search(r"N=(\d+)", v))]
    if not parsed:
        return variants
    k = max(p[0] for p in parsed)
    ns = sorted({p[1] for p in parsed if p[0] == k})
    return [v for kk, n, v in parsed if kk == k and n in (ns[0], ns[-1])]


def headline_table(table, metrics=None):
    """Headline rows of a long metric table.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns of :data:`fmrivid.metrics.table.COLUMNS`.
    metrics : list of str, optional
        Metric names, in order (default :data:`HEADLINE`); names absent from the table are skipped.

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS`: for every reconstruction method (a method with rows for a headline metric that is
        neither ``shuffled_gt`` nor a ``*_shuffled`` control), subject, metric and shown variant, its value,
        CI and p, the value of ``<method>_shuffled`` (NaN when the run has no such control) and of
        ``shuffled_gt`` (NaN when that metric has no chance row).
    """
    metrics = list(HEADLINE if metrics is None else metrics)
    missing = [c for c in ("subject", "method", "metric", "variant", "value", "ci_low", "ci_high", "p")
               if c not in table.columns]
    if missing:
        raise InputError("table", "a long metric table (tables/metrics.tsv)", f"no columns {missing}")
    t = table.astype({"subject": str, "method": str, "metric": str, "variant": str})
    t = t[np.isfinite(t["value"].to_numpy(np.float64))]
    key = ["subject", "metric", "variant"]
    out = []
    for metric in metrics:
        rows = t[t["metric"] == metric]
        if rows.empty:
            continue
        for variant in _variants(rows, metric):
            part = rows[rows["variant"] == variant]
            by_method = {m: g.set_index("subject") for m, g in part.groupby("method")}
            chance = by_method.get(CHANCE)
            for method in sorted(by_method):
                if method in REFERENCES or method.endswith(CONTROL_SUFFIX):
                    continue
                control = by_method.get(method + CONTROL_SUFFIX)
                for subject, r in by_method[method].iterrows():
                    out.append({"subject": subject, "method": method, "metric": metric, "variant": variant,
                                "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p": r["p"],
                                "shuffled_control": _value(control, subject),
                                "shuffled_gt": _value(chance, subject)})
    frame = pd.DataFrame(out, columns=COLUMNS)
    return frame.sort_values(["metric", "variant", "method", "subject"], key=_metric_order(metrics),
                             kind="stable").reset_index(drop=True) if len(frame) else frame


def _value(rows, subject):
    if rows is None or subject not in rows.index:
        return np.nan
    return float(rows.loc[subject, "value"])


def _metric_order(metrics):
    def key(col):
        if col.name == "metric":
            return col.map({m: i for i, m in enumerate(metrics)})
        return col
    return key


def headline_figure(headline):
    """One panel per headline (metric, variant): per method and subject, the value with its CI (filled
    marker), the method's shuffled-feature control (open marker) and chance (``shuffled_gt``, grey cross).

    Parameters
    ----------
    headline : pandas.DataFrame
        :func:`headline_table` output (at least one row).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if headline.empty:
        raise InputError("headline", "at least one headline row (a reconstruction method with a headline "
                         "metric)", "none")
    panels = list(dict.fromkeys(zip(headline["metric"], headline["variant"])))
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    labels = list(dict.fromkeys(f"{m} / sub-{s}" for m, s in zip(headline["method"], headline["subject"])))
    height = max(2.4, 0.32 * len(labels) + 1.6)
    fig = Figure(figsize=(4.2 * ncols, height * nrows), dpi=100, layout="constrained")
    for k, (metric, variant) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        part = headline[(headline["metric"] == metric) & (headline["variant"] == variant)]
        y = np.array([labels.index(f"{m} / sub-{s}") for m, s in zip(part["method"], part["subject"])])
        v = part["value"].to_numpy(np.float64)
        err = np.vstack([v - part["ci_low"].to_numpy(np.float64), part["ci_high"].to_numpy(np.float64) - v])
        ax.errorbar(v, y, xerr=np.clip(np.nan_to_num(err), 0, None), fmt="o", color="tab:blue", capsize=3,
                    label="method (95% CI)")
        ctl = part["shuffled_control"].to_numpy(np.float64)
        if np.isfinite(ctl).any():
            ax.plot(ctl, y, "o", mfc="none", color="tab:orange", label="its shuffled-feature control")
        chance = part["shuffled_gt"].to_numpy(np.float64)
        if np.isfinite(chance).any():
            ax.plot(chance, y, "x", color="0.45", label="chance (shuffled GT)")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        better = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        short = textwrap.shorten(variant, 90, placeholder=" ...")
        n_way = re.search(r"N=(\d+)", variant) if metric == "nway_topk" else None
        name = f"{metric}, {n_way.group(1)}-way" if n_way else metric
        ax.set_title(f"{name} ({better})\n" + "\n".join(textwrap.wrap(short, 55)), fontsize=7.5)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        if k == 0:
            ax.legend(fontsize=6, loc="best")
    return fig


def write_headline(table, out_table, out_figure, metrics=None):
    """:func:`headline_table` to a TSV and :func:`headline_figure` to a PNG (both atomic)."""
    from fmrivid.io.atomic import atomic_path
    from fmrivid.report.figures import _save_png

    headline = headline_table(table, metrics)
    with atomic_path(out_table) as tmp:
        headline.to_csv(tmp, sep="\t", index=False, float_format="%.6f", na_rep="NaN")
    _save_png(headline_figure(headline), out_figure)
    return headline
