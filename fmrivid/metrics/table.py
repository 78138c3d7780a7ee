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

COLUMNS = ["subject", "method", "metric", "variant", "value", "ci_low", "ci_high", "n"]
KEY = ["subject", "method", "metric", "variant"]
FLOAT_COLUMNS = ["value", "ci_low", "ci_high"]
FLOAT_FORMAT = "%.6f"


def summarise(subject, method, metric, variant, per_clip_values, seed, n_boot=1000, level=0.95):
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

    Returns
    -------
    dict
        Keys :data:`COLUMNS`: ``value`` is the mean over clips, ``ci_low`` /
        ``ci_high`` its percentile-bootstrap interval, ``n`` the number of clips.
    """
    values = _check_values(per_clip_values, name=f"{metric} values")
    low, high = bootstrap_ci(values, n_boot=n_boot, level=level, seed=seed)
    return {
        "subject": str(subject),
        "method": str(method),
        "metric": str(metric),
        "variant": str(variant),
        "value": float(values.mean()),
        "ci_low": low,
        "ci_high": high,
        "n": int(values.size),
    }


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
    rows = [dict(r) for r in rows]
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
