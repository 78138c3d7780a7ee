"""Preprocess one subject: validated runs in, one HDF5 of samples x voxels out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import h5py
import numpy as np

from fmrivid.errors import InputError
from fmrivid.io import bids, nifti
from fmrivid.io.atomic import atomic_path
from fmrivid.preprocess.clean import detrend_standardize
from fmrivid.preprocess.samples import average_repeats, event_samples, window_volumes
from fmrivid.preprocess.select import select_voxels

_STR = h5py.string_dtype("utf-8")


@dataclass
class SubjectData:
    """Preprocessed samples of one subject (rows: clips or presentations; columns: selected voxels)."""

    subject: str
    train_X: np.ndarray
    train_ids: list
    test_X: np.ndarray
    test_ids: list
    ijk: np.ndarray
    affine: np.ndarray
    shape: tuple
    score: np.ndarray
    info: dict = field(default_factory=dict)


def _split_events(run, events, splits):
    unknown = sorted(set(events["clip_id"]) - set(splits))
    if unknown:
        raise InputError(run.events, "clip ids listed in the stimulus table",
                         f"unknown clip ids {unknown[:5]}")
    labels = events["clip_id"].map(splits)
    return events[labels == "train"], events[labels == "test"]


def validate_subject(runs, splits, tr, lag_s):
    """Check every run of a subject before any work; return (images, sidecar TRs, events).

    Checks: files exist; sidecar TR, header TR and config TR agree; 4-D; finite
    values; the same grid and affine in every run; clip ids known; every event's
    lagged window inside the run.
    """
    bids.check_runs_exist(runs)
    loaded = []
    for run in runs:
        side_tr = bids.read_sidecar_tr(run.sidecar)
        events = bids.read_events(run.events)
        _split_events(run, events, splits)
        data, img = nifti.load_bold(run.bold, expected_tr=tr, sidecar_tr=side_tr)
        for onset, dur in zip(events["onset"], events["duration"]):
            window_volumes(float(onset), float(dur), lag_s, tr, img.shape[3], source=str(run.events))
        loaded.append((run, img, events, data))
    nifti.check_same_grid([(r.bold, img) for r, img, _, _ in loaded])
    return loaded


def preprocess_subject(runs, splits, tr, cfg, log=print):
    """Run the preprocessing stage for one subject.

    Parameters
    ----------
    runs : list of fmrivid.io.bids.Run
    splits : dict clip_id -> 'train' | 'test' (from the splits file)
    tr : float, seconds
    cfg : dict, the config's ``preprocess`` section
    """
    lag = float(cfg["lag_s"])
    loaded = validate_subject(runs, splits, tr, lag)
    subject = runs[0].subject
    # Brain mask from the mean image of runs holding training events (training data only).
    train_means = [d.mean(axis=3) for r, img, ev, d in loaded if (ev["clip_id"].map(splits) == "train").any()]
    if not train_means:
        raise InputError(runs[0].events, "at least one run with training clips", "none for this subject")
    mean_img = np.mean(train_means, axis=0)
    mask = mean_img > cfg["mask_threshold"] * np.percentile(mean_img, 98)
    log(f"sub-{subject}: {len(runs)} runs validated; brain mask {int(mask.sum())} voxels")

    parts = {"train": ([], []), "test": ([], [])}
    for run, img, events, data in loaded:
        series = data[mask].T  # (T, V)
        clean = detrend_standardize(series, cfg["detrend_order"], cfg["standardize"])
        for split, ev in zip(("train", "test"), _split_events(run, events, splits)):
            if len(ev):
                x, ids = event_samples(clean, ev, tr, lag, source=str(run.events))
                parts[split][0].append(x)
                parts[split][1].extend(ids)
        log(f"sub-{subject} run-{run.run}: {clean.shape[0]} volumes cleaned, {len(events)} events")
    if not parts["test"][1]:
        raise InputError(runs[0].bold.parent, "runs with test clips", "no test events for this subject")
    train_all = np.concatenate(parts["train"][0])
    train_ids_all = parts["train"][1]
    sel = cfg["selection"]
    keep, score, info = select_voxels(train_all, train_ids_all, sel["method"], sel["p_threshold"],
                                      sel["top_percent"], sel["min_voxels"], log=log)
    log(f"sub-{subject}: selected {int(keep.sum())} of {keep.size} voxels ({sel['method']})")
    if cfg["average_train_repeats"]:
        train_X, train_ids = average_repeats(train_all[:, keep], train_ids_all)
    else:
        train_X, train_ids = train_all[:, keep], train_ids_all
    test_X, test_ids = average_repeats(np.concatenate(parts["test"][0])[:, keep], parts["test"][1])
    ijk = np.argwhere(mask)[keep]
    affine = loaded[0][1].affine
    info.update({"lag_s": lag, "tr": tr, "mask_voxels": int(mask.sum()),
                 "n_train_presentations": len(train_ids_all)})
    return SubjectData(subject, train_X, train_ids, test_X, test_ids, ijk, affine,
                       tuple(int(s) for s in mask.shape), score[keep], info)


def write_subject(path, sd):
    """Write a :class:`SubjectData` to HDF5 atomically.

    Layout: ``train/X``, ``train/clip_id``, ``test/X``, ``test/clip_id``,
    ``voxels/ijk``, ``voxels/xyz`` (mm), ``voxels/score``; attrs affine, shape, info (JSON).
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for split, X, ids in (("train", sd.train_X, sd.train_ids), ("test", sd.test_X, sd.test_ids)):
            g = f.create_group(split)
            g.create_dataset("X", data=X.astype(np.float32))
            g.create_dataset("clip_id", data=np.array(ids, dtype=object), dtype=_STR)
        v = f.create_group("voxels")
        v.create_dataset("ijk", data=sd.ijk.astype(np.int32))
        xyz = (sd.affine @ np.c_[sd.ijk, np.ones(len(sd.ijk))].T).T[:, :3]
        v.create_dataset("xyz", data=xyz.astype(np.float32))
        v.create_dataset("score", data=sd.score.astype(np.float32))
        f.attrs["subject"] = sd.subject
        f.attrs["affine"] = sd.affine
        f.attrs["shape"] = np.array(sd.shape)
        f.attrs["info"] = json.dumps(sd.info, sort_keys=True, default=str)


def read_subject(path):
    """Read the HDF5 written by :func:`write_subject` into a dict of arrays."""
    with h5py.File(path, "r") as f:
        out = {}
        for split in ("train", "test"):
            out[f"{split}_X"] = f[split]["X"][()]
            out[f"{split}_ids"] = [c.decode() if isinstance(c, bytes) else c for c in f[split]["clip_id"][()]]
        out["ijk"] = f["voxels"]["ijk"][()]
        out["score"] = f["voxels"]["score"][()]
        out["affine"] = f.attrs["affine"]
        out["shape"] = tuple(f.attrs["shape"])
        out["info"] = json.loads(f.attrs["info"])
    return out
