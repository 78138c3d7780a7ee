"""The long metric table: one row per (subject, method, metric, variant).

Written as a tab-separated file with a fixed float format and a fixed row
order, so that two runs of the same configuration give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path
from fmrivid.metrics.stats import _check_values, bootstrap_ci

#: Columns of the long table; ``p`` is the permutation p-value against shuffled GT pairings
#: (NaN where the metric does not compare a reconstruction with its GT).
COLUMNS = ["subject", "method", "metric", "variant", "value", "ci_low", "ci_high", "n", "p"]
CLIP_COLUMNS = ["subject", "method", "metric", "variant", "clip_id", "value"]
KEY = ["subject", "method", "metric", "variant"]
FLOAT_COLUMNS = ["value", "ci_low", "ci_high", "p"]
FLOAT_FORMAT = "%.6f"


def summarise(subject, method, metric, variant, per_clip_values, seed, n_boot=1000, level=0.95, p=None,
              stat="mean"):
    """Summarise per-clip values into one table row.

    Parameters
    ----------
    subject, method, metric, variant : str
        Row key; ``variant`` is the metric's variant description.
    per_clip_values : array_like, shape (N,)
        One finite value per clip.
    seed : int
        Seed of the bootstrap.
    n_boot : int
        Bootstrap resamples.
    level : float
        Confidence level of the interval.
    p : float or None
        Permutation p-value (None: not applicable, written as nan).
    stat : {"mean", "median"}
        Statistic over clips (or voxels) and its bootstrap.

    Returns
    -------
    dict
        Keys :data:`COLUMNS`: ``value`` is the mean (or median) over clips,
        ``ci_low`` / ``ci_high`` its percentile-bootstrap interval, ``n`` the
        number of clips, ``p`` the permutation p-value.
    """
    values = _check_values(per_clip_values, name=f"{metric} values")
    low, high = bootstrap_ci(values, n_boot=n_boot, level=level, seed=seed, stat=stat)
    return {
        "subject": str(subject),
        "method": str(method),
        "metric": str(metric),
        "variant": str(variant),
        "value": float(values.mean() if stat == "mean" else np.median(values)),
        "ci_low": low,
        "ci_high": high,
        "n": int(values.size),
        "p": float("nan") if p is None else float(p),
    }


def missing_row(subject, method, metric, variant, reason):
    """A row for a metric that could not be computed: value NaN, the reason in the variant.

    Parameters
    ----------
    subject, method, metric, variant : str
        Row key.
    reason : str
        Why it is missing (e.g. model weights absent); appended to ``variant``.

    Returns
    -------
    dict
        Keys :data:`COLUMNS`; ``n`` is 0.
    """
    nan = float("nan")
    return {"subject": str(subject), "method": str(method), "metric": str(metric),
            "variant": f"{variant} [{reason}]", "value": nan, "ci_low": nan, "ci_high": nan, "n": 0, "p": nan}


def _format_cell(column, value):
    if column in FLOAT_COLUMNS:
        return FLOAT_FORMAT % float(value)
    if column == "n":
        return str(int(value))
    text = str(value)
    if any(ch in text for ch in "\t\r\n"):
        raise ValueError(f"write_table: column {column!r} value {text!r} contains a tab or newline")
    return text


def _normalise_rows(rows):
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict(orient="records")
    rows = [{"p": float("nan"), **dict(r)} for r in rows]
    for i, row in enumerate(rows):
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"write_table: row {i} lacks column(s) {missing}")
    keys = [tuple(str(row[c]) for c in KEY) for row in rows]
    seen = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"write_table: duplicate row for (subject, method, metric, variant) {key}")
        seen.add(key)
    order = sorted(range(len(rows)), key=lambda i: keys[i])
    return [rows[i] for i in order]


def write_table(rows, path):
    """Write metric rows to a TSV file, atomically and deterministically.

    Parameters
    ----------
    rows : iterable of dict or pandas.DataFrame
        Rows with (at least) the keys :data:`COLUMNS`; extra keys are dropped.
    path : str or Path
        Output ``.tsv`` path.

    Returns
    -------
    Path
        ``path``. The file has a header line with :data:`COLUMNS` in order,
        rows sorted by (subject, method, metric, variant) as strings, floats
        written with ``%.6f``, ``\\n`` line endings.
    """
    rows = _normalise_rows(rows)
    lines = ["\t".join(COLUMNS)]
    for row in rows:
        lines.append("\t".join(_format_cell(c, row[c]) for c in COLUMNS))
    text = "\n".join(lines) + "\n"
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return path


def read_table(path):
    """Read a table written by :func:`write_table`.

    Parameters
    ----------
    path : str or Path
        A metric TSV.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; key columns as str, floats as float64, ``n`` as int64.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "a metric table (TSV)", "no such file")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if list(df.columns) != COLUMNS:
        raise InputError(path, f"columns {COLUMNS}", f"columns {list(df.columns)}")
    for col in FLOAT_COLUMNS:
        df[col] = df[col].astype(np.float64)
    df["n"] = df["n"].astype(np.int64)
    return df


# ----------------------------------------------------------------------------- per-clip values


def clip_rows(subject, method, metric, variant, clip_ids, values):
    """Per-clip rows (:data:`CLIP_COLUMNS`) of one metric variant, for paired tests between methods."""
    values = np.asarray(values, dtype=np.float64)
    if len(clip_ids) != values.size:
        raise ValueError(f"clip_rows: {len(clip_ids)} clip ids for {values.size} values of {metric}")
    return [{"subject": str(subject), "method": str(method), "metric": str(metric), "variant": str(variant),
             "clip_id": str(c), "value": float(v)} for c, v in zip(clip_ids, values)]


def write_clip_table(rows, path):
    """Write per-clip rows to a TSV (sorted, ``%.10g`` floats), atomically and deterministically."""
    rows = sorted(rows, key=lambda r: tuple(str(r[c]) for c in CLIP_COLUMNS[:5]))
    lines = ["\t".join(CLIP_COLUMNS)]
    for r in rows:
        lines.append("\t".join([*(_format_cell(c, r[c]) for c in CLIP_COLUMNS[:5]), "%.10g" % float(r["value"])]))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write("\n".join(lines) + "\n")
    return path


def read_clip_table(path):
    """Read a per-clip table written by :func:`write_clip_table` (DataFrame, ``value`` float64)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "a per-clip metric table (TSV)", "no such file")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if list(df.columns) != CLIP_COLUMNS:
        raise InputError(path, f"columns {CLIP_COLUMNS}", f"columns {list(df.columns)}")
    df["value"] = df["value"].astype(np.float64)
    return df


# ----------------------------------------------------------------------------- summaries


def _write_tsv(df, path):
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6f", lineterminator="\n")
    return path


def wide_summary(table):
    """One row per (subject, method), one column per ``metric[variant]`` (the mean value).

    Parameters
    ----------
    table : pandas.DataFrame
        Long table (:data:`COLUMNS`).

    Returns
    -------
    pandas.DataFrame
        Rows sorted by subject then method, columns sorted by name.
    """
    t = table.assign(col=table["metric"].astype(str) + "[" + table["variant"].astype(str) + "]")
    wide = t.pivot_table(index=["subject", "method"], columns="col", values="value", aggfunc="first",
                         dropna=False, sort=True)
    wide = wide.reindex(columns=sorted(wide.columns)).reset_index()
    wide.columns.name = None
    return wide


def subject_mean(table):
    """Mean over subjects of each (method, metric, variant): the numbers papers report.

    Returns
    -------
    pandas.DataFrame
        Columns method, metric, variant, value (mean of subject means), sd (across subjects),
        n_subjects; sorted.
    """
    t = table[np.isfinite(table["value"].astype(np.float64))]
    g = t.groupby(["method", "metric", "variant"], sort=True)["value"]
    out = pd.DataFrame({"value": g.mean(), "sd": g.std(ddof=1), "n_subjects": g.size()}).reset_index()
    return out


def write_summaries(table, out_wide, out_mean):
    """Write :func:`wide_summary` and :func:`subject_mean` of a long table as TSVs."""
    _write_tsv(wide_summary(table), out_wide)
    _write_tsv(subject_mean(table), out_mean)


WILCOXON_COLUMNS = ["subject", "metric", "variant", "method_a", "method_b", "n", "mean_a", "mean_b",
                    "median_diff", "statistic", "p"]


def wilcoxon_table(clips, method_a, method_b):
    """Paired Wilcoxon tests between two methods on the same clips, per subject and metric variant.

    Parameters
    ----------
    clips : pandas.DataFrame
        Per-clip rows (:data:`CLIP_COLUMNS`) of every method.
    method_a, method_b : str
        The methods to compare (``evaluate.compare`` in the config).

    Returns
    -------
    pandas.DataFrame
        :data:`WILCOXON_COLUMNS`, one row per (subject, metric, variant) that
        both methods have on at least 2 common clips; ``median_diff`` is the
        median of a - b.
    """
    from fmrivid.metrics.stats import paired_wilcoxon

    present = set(clips["method"])
    for m in (method_a, method_b):
        if m not in present:
            raise InputError("evaluate.compare", f"methods present in the metric tables {sorted(present)}",
                             f"{m!r}")
    a = clips[clips["method"] == method_a]
    b = clips[clips["method"] == method_b]
    merged = a.merge(b, on=["subject", "metric", "variant", "clip_id"], suffixes=("_a", "_b"))
    rows = []
    for (sub, metric, var), g in merged.groupby(["subject", "metric", "variant"], sort=True):
        g = g.sort_values("clip_id")
        if len(g) < 2:
            continue
        res = paired_wilcoxon(g["value_a"].to_numpy(), g["value_b"].to_numpy())
        rows.append({"subject": sub, "metric": metric, "variant": var, "method_a": method_a,
                     "method_b": method_b, "n": res["n"], "mean_a": float(g["value_a"].mean()),
                     "mean_b": float(g["value_b"].mean()), "median_diff": res["median_diff"],
                     "statistic": res["statistic"], "p": res["p"]})
    return pd.DataFrame(rows, columns=WILCOXON_COLUMNS)


def write_wilcoxon(clips, method_a, method_b, path):
    """Write :func:`wilcoxon_table` as a TSV."""
    return _write_tsv(wilcoxon_table(clips, method_a, method_b), path)
