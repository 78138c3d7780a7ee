"""Nuisance regressors of a run from fMRIPrep's confounds file (``preprocess.confounds``).

Two ways to choose them:

* ``strategy``: one of nilearn's denoising presets
  (:func:`nilearn.interfaces.fmriprep.load_confounds_strategy`: 'simple',
  'scrubbing', 'compcor', 'ica_aroma'), which finds the confounds file from the
  preprocessed BOLD's name;
* ``columns``: column names of ``desc-confounds_timeseries.tsv``, shell-style
  wildcards allowed (``a_comp_cor_0*``, ``trans_*``).

The matrix covers the whole (untrimmed) run; whoever trims the BOLD trims its rows.
"""

from __future__ import annotations

import fnmatch
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fmrivid.errors import ConfigError, InputError

#: nilearn's denoising presets accepted by ``preprocess.confounds.strategy``.
STRATEGIES = ("simple", "scrubbing", "compcor", "ica_aroma")


def _settings(cfg):
    cfg = dict(cfg or {})
    strategy = str(cfg.get("strategy") or "none")
    columns = [str(c) for c in cfg.get("columns") or []]
    if strategy != "none" and strategy not in STRATEGIES:
        raise ConfigError(f"preprocess.confounds.strategy: expected 'none' or one of {list(STRATEGIES)}; "
                          f"found {strategy!r}")
    if strategy != "none" and columns:
        raise ConfigError("preprocess.confounds: expected either strategy or columns; "
                          f"found strategy {strategy!r} and columns {columns} (a later config layer that sets "
                          f"one should set the other to none / [])")
    return strategy, columns


def enabled(cfg):
    """True when ``preprocess.confounds`` asks for regressors (a strategy or columns)."""
    strategy, columns = _settings(cfg)
    return strategy != "none" or bool(columns)


def read_confounds(path):
    """Read an fMRIPrep confounds TSV ('n/a' read as NaN)."""
    path = Path(path)
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"])
    except Exception as exc:
        raise InputError(path, "a tab-separated fMRIPrep confounds file", f"unreadable ({exc})") from None


def select_columns(table, patterns, source):
    """Columns of ``table`` matching ``patterns`` (names or ``*``/``?`` wildcards), in the file's order.

    Raises
    ------
    InputError
        Naming ``source`` and the first pattern that matches no column.
    """
    chosen = []
    for pattern in patterns:
        hits = [c for c in table.columns if fnmatch.fnmatchcase(c, pattern)]
        if not hits:
            shown = ", ".join(list(table.columns)[:12]) + (" ..." if len(table.columns) > 12 else "")
            raise InputError(source, f"a column matching {pattern!r} (preprocess.confounds.columns)",
                             f"columns [{shown}]")
        chosen += [c for c in hits if c not in chosen]
    return chosen


def _check_rows(source, n_rows, n_volumes):
    if n_rows != n_volumes:
        raise InputError(source, f"one row per BOLD volume ({n_volumes})", f"{n_rows} rows")


def _from_strategy(run, strategy, n_volumes):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    source = run.confounds or run.bold
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table, sample_mask = load_confounds_strategy(str(run.bold), denoise_strategy=strategy)
    except Exception as exc:  # nilearn raises ValueError / MissingConfoundError with its own words
        raise InputError(source, f"the confounds of nilearn's {strategy!r} strategy next to {Path(run.bold).name} "
                                 "(fMRIPrep desc-preproc_bold + desc-confounds_timeseries.tsv/.json)",
                         f"{type(exc).__name__}: {exc}") from None
    if sample_mask is not None and len(sample_mask) != n_volumes:
        raise InputError(source, f"no censored volume (strategy {strategy!r}: scrubbing and non-steady-state "
                                 "volumes are not supported yet by the sample alignment; use strategy 'simple' "
                                 "or 'compcor', or preprocess.trim for dummy scans)",
                         f"{n_volumes - len(sample_mask)} of {n_volumes} volumes flagged")
    return table


def confound_matrix(run, cfg_confounds, n_volumes):
    """The nuisance regressors of one run, or None when none are asked for.

    Parameters
    ----------
    run : fmrivid.io.bids.Run
        Needs ``bold`` (fMRIPrep ``desc-preproc_bold``) and ``confounds``
        (its ``desc-confounds_timeseries.tsv``).
    cfg_confounds : dict or None
        The ``preprocess.confounds`` section: ``strategy`` ('none' or a nilearn
        preset) or ``columns`` (names, wildcards allowed).
    n_volumes : int
        Volumes of the BOLD run (untrimmed).

    Returns
    -------
    numpy.ndarray or None
        float64 (n_volumes, k), each column demeaned; NaN (the first row of
        derivative columns) set to 0 before demeaning.

    Raises
    ------
    ConfigError
        When both a strategy and columns are given, or the strategy is unknown.
    InputError
        When the run has no confounds file, a column is missing, the row count
        differs from ``n_volumes``, nilearn cannot build the strategy, or the
        strategy censors volumes.
    """
    strategy, columns = _settings(cfg_confounds)
    if strategy == "none" and not columns:
        return None
    if run.confounds is None:
        raise InputError(run.bold, "an fMRIPrep run with its desc-confounds_timeseries.tsv "
                                   "(dataset.derivatives.root) for preprocess.confounds", "no confounds file")
    if columns:
        table = read_confounds(run.confounds)
        _check_rows(run.confounds, len(table), n_volumes)
        table = table[select_columns(table, columns, run.confounds)]
        bad = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
        if bad:
            raise InputError(run.confounds, "numeric confound columns", f"non-numeric column {bad[0]!r}")
    else:
        table = _from_strategy(run, strategy, n_volumes)
        _check_rows(run.confounds or run.bold, len(table), n_volumes)
    matrix = np.nan_to_num(table.to_numpy(dtype=np.float64), nan=0.0)
    return matrix - matrix.mean(axis=0, keepdims=True)


def regress_out(data, confounds):
    """Remove the least-squares fit of ``confounds`` (plus a mean) from ``data`` (time x columns).

    Parameters
    ----------
    data : numpy.ndarray
        (n_volumes, n_columns) time series.
    confounds : numpy.ndarray or None
        (n_volumes, k) regressors; None returns ``data`` unchanged.

    Returns
    -------
    numpy.ndarray
        Residuals, same dtype as ``data``.
    """
    if confounds is None or confounds.shape[1] == 0:
        return data
    design = np.column_stack([np.ones(len(confounds)), confounds])
    beta, *_ = np.linalg.lstsq(design, data.astype(np.float64), rcond=None)
    return (data - design @ beta).astype(data.dtype, copy=False)
