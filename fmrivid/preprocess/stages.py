"""Stages of rules/preprocess.smk: the clip table, the split, preprocessing, surfaces.

One function per rule, named as the rule: `workflow_scripts/run_stage.py` calls it with the rule's inputs
(by name), outputs (``out_<name>``) and params as keyword arguments. Testable without Snakemake.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmrivid.io.atomic import atomic_path
from fmrivid.io.h5 import read_features
from fmrivid.io.splits import SPLIT_COLUMNS, read_splits


def stimulus_table(dataset, out_path, events=(), log=print):
    """The clip table of a layout that has none (CC2017 segments; BIDS ``stim_file`` events, split as
    ``dataset.split`` says). ``events``: the events files it is built from, found again from ``dataset`` by the
    layout (they are the rule's inputs so that editing one reruns it)."""
    from fmrivid.io.layouts import write_stimulus_table

    write_stimulus_table(dict(dataset), out_path, log=log)


def splits(table_path, out_path, log=print):
    """Decide the train/test split once, from the stimulus table; every later rule reads this file."""
    from fmrivid.io.bids import read_stimulus_table

    table = read_stimulus_table(table_path, require_captions=False)  # the captions rule checks them
    folder = Path(table_path).parent
    table = table.assign(file=[str(folder / f) for f in table["file"]])
    with atomic_path(out_path) as tmp:
        # Optional clip timing inside the movie file (CC2017: 2-s clips of 8-min segments) is kept for frames.
        timing = [c for c in ("start_s", "duration_s") if c in table.columns]
        table[SPLIT_COLUMNS + timing].to_csv(tmp, sep="\t", index=False)
    log(f"splits: {int((table.split == 'train').sum())} train, {int((table.split == 'test').sum())} test clips")


def preprocess(bold, sidecar, events, runs, subject, tr, splits_path, cfg, out_h5, out_qc, log=print,
                   out_tsnr=None, out_lag_tsv=None, out_lag_png=None, out_selection_tsv=None, truth_dir=None,
                   layout="bids", lag_features=None, confounds=None):
    """Preprocess one subject and write its HDF5 and QC outputs.

    ``layout`` 'bids': ``bold``/``sidecar``/``events`` are per-run lists; 'cc2017': ``bold``
    lists the runs' files, ``runs`` their labels ``<seg>_<rep>`` and sidecar/events are empty.
    ``runs`` may instead be the workflow's run records (dicts, :func:`fmrivid.io.layouts.runs`), which name
    every run's files themselves (the file lists and ``confounds`` are then the rule's inputs only).
    ``truth_dir`` (simulated demo only) holds the ground truth the QC table compares with.
    """
    import json as _json

    from fmrivid.preprocess import qc
    from fmrivid.preprocess.pipeline import (
        cc2017_inputs,
        from_records,
        preprocess_subject,
        write_subject,
    )

    splits = read_splits(splits_path)
    split_of = dict(zip(splits["clip_id"], splits["split"]))
    if runs and isinstance(runs[0], dict):
        run_list = from_records(subject, runs)
    elif layout == "cc2017":
        run_list = cc2017_inputs(subject, bold, runs)
    else:
        from fmrivid.io.bids import Run

        run_list = [Run(subject, r, Path(b), Path(s), Path(e)) for r, b, s, e in zip(runs, bold, sidecar, events)]
    feats = None
    if lag_features:  # ridge lag scan on a stimulus feature: training clips only
        train_ids = splits.loc[splits["split"] == "train", "clip_id"].tolist()
        ids, Y, _ = read_features(lag_features, train_ids)
        feats = (ids, Y)
    sd = preprocess_subject(run_list, split_of, tr, cfg, log=log, lag_scan=out_lag_tsv is not None,
                            lag_features=feats)
    truth_mask, planted = None, None
    if truth_dir:
        t = Path(truth_dir)
        if (t / f"sub-{subject}_responsive.nii.gz").exists():
            truth_mask = t / f"sub-{subject}_responsive.nii.gz"
        if (t / f"sub-{subject}_truth.json").exists():
            planted = float(_json.loads((t / f"sub-{subject}_truth.json").read_text())["lag_s"])
    qc.selection_qc(sd, out_qc)
    if out_tsnr:
        qc.tsnr_qc(sd, out_tsnr)
    if out_lag_tsv:
        table = sd.qc["lag_scan"].assign(planted_lag_s=planted if planted is not None else np.nan)
        if planted is not None:  # demo-only check: does each method's best lag sit within one TR of the planted?
            for method, rows in table.groupby("method"):
                best = rows.loc[rows["best"], "lag_s"]
                table.loc[rows.index, "best_within_1tr_of_planted"] = \
                    bool(len(best)) and abs(float(best.iloc[0]) - planted) <= tr + 1e-9
        with atomic_path(out_lag_tsv) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        if out_lag_png:
            qc.lag_scan_qc(table, out_lag_png, subject, planted)
    if out_selection_tsv:
        with atomic_path(out_selection_tsv) as tmp:
            qc.selection_table(sd, truth_mask).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    write_subject(out_h5, sd)
    log(f"sub-{subject}: train {sd.train_X.shape}, test {sd.test_X.shape}")


def group_average(fmri_paths, subjects, out_path, log=print):
    """The group subject (seed 004's "group brain"): :func:`fmrivid.preprocess.group.group_average`."""
    from fmrivid.preprocess.group import group_average as average

    average(dict(zip([str(s) for s in subjects], fmri_paths)), out_path, log=log)


def surface(fmri_path, cfg, out_left, out_right, out_flat=None, out_figure=None, log=print):
    """A subject's preprocessed samples on the cortical surface: GIfTI per hemisphere, optional flat maps.

    Volume data are projected onto ``cfg['mesh']`` (vol_to_surf); CIFTI data (fsLR-32k grayordinates) are
    written at their own vertices and flattened with the 32k_fs_LR flat surfaces of the ``cfg['mesh']`` folder
    (:mod:`fmrivid.preprocess.surface`).
    """
    from fmrivid.preprocess.pipeline import read_subject
    from fmrivid.preprocess.surface import texture_figure, write_surface_outputs

    sub = read_subject(fmri_path)
    sub["source"] = str(fmri_path)
    result = write_surface_outputs(sub, cfg, {"left": out_left, "right": out_right, "flat": out_flat}, log=log)
    if out_figure:
        from fmrivid.preprocess.qc import surface_qc

        if "inflated" in result["mesh"] or "pial" in result["mesh"]:
            surface_qc(result, out_figure)
        else:
            texture_figure(result, out_figure)
