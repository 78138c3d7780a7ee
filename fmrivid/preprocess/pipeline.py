"""Preprocess one subject: validated runs in, one HDF5 of samples x voxels out.

Order of work (every check comes before any output is written):

1. header checks of every run (readable, 4-D / CIFTI series, TR header = sidecar = config,
   same grid and affine or the same grayordinates in every run), trimming, events
   (clip ids known, every event's window inside the trimmed run);
2. a first pass over the data: integrity (gzip), finite values, mean and tSNR images of
   the training runs (the brain mask comes from training runs only);
3. a second pass: masked, trimmed, detrended and z-scored runs -> one sample per
   presentation (lag, HRF-weighted, or windows of n TRs);
4. voxel selection on training presentations only (ROI, reliability / SNR), repeat
   averaging (test always, training optional), and the lag scan QC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import h5py
import numpy as np
import pandas as pd

from fmrivid.errors import InputError
from fmrivid.io import bids, cifti, nifti
from fmrivid.io.atomic import atomic_path
from fmrivid.preprocess.clean import detrend_standardize
from fmrivid.preprocess.samples import average_repeats, event_samples, trim_amounts
from fmrivid.preprocess.select import roi_from_atlas, roi_from_surface_labels, select_voxels

_STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class RunInput:
    """One functional run of a subject, whatever the layout.

    Attributes
    ----------
    subject, label : str
        Subject label and run label (BIDS run, or ``seg3_2`` for CC2017).
    bold : Path
        4-D NIfTI or CIFTI-2 dtseries.
    kind : {'nifti', 'cifti'}
    sidecar : Path, optional
        BIDS JSON sidecar (RepetitionTime).
    events : Path, optional
        BIDS ``_events.tsv`` (onset, duration, clip_id; onsets from the untrimmed run start).
    timeline : callable, optional
        ``timeline(n_volumes, tr, first, last) -> DataFrame`` for layouts without events files.
    group : str, optional
        Group (movie segment) of the run's clips for segment-wise reliability.
    confounds : Path, optional
        fMRIPrep ``desc-confounds_timeseries.tsv`` (regressed out as ``preprocess.confounds`` says).
    """

    subject: str
    label: str
    bold: Path
    kind: str = "nifti"
    sidecar: Optional[Path] = None
    events: Optional[Path] = None
    timeline: Optional[Callable] = None
    group: Optional[str] = None
    confounds: Optional[Path] = None

    @property
    def source(self):
        return str(self.events or self.bold)


def as_input(run):
    """A :class:`RunInput` from a BIDS :class:`fmrivid.io.bids.Run` (or a RunInput)."""
    if isinstance(run, RunInput):
        return run
    return RunInput(run.subject, run.run, Path(run.bold), "nifti", Path(run.sidecar) if run.sidecar else None,
                    Path(run.events) if run.events else None,
                    confounds=Path(run.confounds) if getattr(run, "confounds", None) else None)


def from_records(subject, records):
    """RunInputs from the workflow's run records (dicts: label, bold, sidecar, events, confounds, group, kind)."""
    out = []
    for r in records:
        if not r.get("events") and r.get("group"):  # CC2017: the segment movie is the timeline
            out += cc2017_inputs(subject, [r["bold"]], [r["label"]])
            continue
        opt = {k: Path(r[k]) if r.get(k) else None for k in ("sidecar", "events", "confounds")}
        out.append(RunInput(str(subject), str(r["label"]), Path(r["bold"]), r.get("kind") or "nifti",
                            opt["sidecar"], opt["events"], group=r.get("group") or None, confounds=opt["confounds"]))
    return out




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
    space: str = "volume"
    columns: Optional[np.ndarray] = None  # grayordinate index of each selected column (CIFTI)
    qc: dict = field(default_factory=dict)  # maps and tables for the QC outputs (not written to HDF5)
    hemi: Optional[np.ndarray] = None  # CIFTI: 'left' / 'right' per column ('' for a subcortical voxel)
    vertex: Optional[np.ndarray] = None  # CIFTI: vertex index on the full hemisphere surface (-1 for a voxel)
    nvertices: Optional[dict] = None  # CIFTI: {'left': 32492, 'right': 32492} full surface sizes (BrainModelAxis)


def _split_events(source, events, splits):
    unknown = sorted(set(events["clip_id"]) - set(splits))
    if unknown:
        raise InputError(source, "clip ids listed in the stimulus table", f"unknown clip ids {unknown[:5]}")
    labels = events["clip_id"].map(splits)
    return events[labels == "train"], events[labels == "test"]


def _sample_kwargs(cfg):
    return {"alignment": cfg["alignment"], "hrf_model": cfg["hrf_model"], "window_trs": cfg["window_trs"],
            "out_of_run": cfg["out_of_run"]}


@dataclass
class _Checked:
    run: RunInput
    img: object
    n_volumes: int
    first: int
    last: int
    train: pd.DataFrame
    test: pd.DataFrame
    confounds: Optional[np.ndarray] = None  # (n_volumes, k) nuisance regressors, untrimmed


def validate_subject(runs, splits, tr, cfg):
    """Check every run of a subject from headers and events, before reading any data.

    Checks: files exist; sidecar TR, header TR and config TR agree; 4-D (or a CIFTI
    time series); trimming fits; the same grid and affine (or grayordinates) in every
    run; clip ids known; every event's window inside the trimmed run.

    Returns
    -------
    list of _Checked
    """
    runs = [as_input(r) for r in runs]
    for run in runs:
        for path in (run.bold, run.sidecar, run.events):
            if path is not None and not Path(path).exists():
                folder = Path(path).parent
                found = sorted(p.name for p in folder.glob("*"))[:8] if folder.exists() else None
                raise InputError(path, f"run {run.label} of subject {run.subject}",
                                 f"no such file; {folder} holds {found}" if found is not None
                                 else f"no folder {folder}")
    checked = []
    for run in runs:
        if run.kind == "cifti":
            img = cifti.check_header(run.bold, expected_tr=tr)
            n_vol = img.shape[0]
        else:
            side_tr = bids.read_sidecar_tr(run.sidecar) if run.sidecar is not None else None
            img = nifti.check_header(run.bold, expected_tr=tr, sidecar_tr=side_tr)
            n_vol = img.shape[3]
        first, last = trim_amounts(n_vol, cfg["trim"], source=str(run.bold))
        if run.events is not None:
            events = bids.read_events(run.events)
        elif run.timeline is not None:
            events = run.timeline(n_vol, tr, first, last)
        else:
            raise InputError(run.bold, "an events file or a layout timeline for the run", "neither")
        events = events.assign(onset=events["onset"].astype(float) - first * tr)
        if (events["onset"] < -1e-6).any():
            raise InputError(run.source, f"event onsets at or after the first kept volume ({first * tr:g} s, "
                                         f"trim drops {first} volumes)",
                             f"onset {events['onset'].min() + first * tr:g} s")
        late = events["onset"] >= (n_vol - first - last) * tr - 1e-6
        if last and late.any():
            raise InputError(run.source, f"event onsets before the trailing trim ({(n_vol - last) * tr:g} s from the "
                                         f"run start, trim drops the last {last} volumes)",
                             f"onset {events['onset'][late].min() + first * tr:g} s")
        train, test = _split_events(run.source, events, splits)
        n_kept = n_vol - first - _read_last(last, cfg)
        for ev in (train, test):  # the same code that will cut the samples, on a placeholder run
            if len(ev):
                event_samples(np.zeros((n_kept, 1), np.float32), ev, tr, cfg["lag_s"], source=run.source,
                              **_sample_kwargs(cfg))
        from fmrivid.preprocess.confounds import confound_matrix

        conf = confound_matrix(run, cfg.get("confounds"), n_vol)  # a missing column stops here, before any data
        checked.append(_Checked(run, img, n_vol, first, last, train, test, conf))
    ref = checked[0]
    for c in checked[1:]:
        if (ref.run.kind == "cifti") != (c.run.kind == "cifti"):
            raise InputError(c.run.bold, f"a {ref.run.kind} file like {ref.run.bold.name}", f"a {c.run.kind} file")
        if c.run.kind == "cifti":
            if not cifti.same_brain_models(cifti.brain_models(ref.img), cifti.brain_models(c.img)):
                raise InputError(c.run.bold, f"the grayordinates of {ref.run.bold.name} "
                                             f"({ref.img.shape[1]} brain-model entries)",
                                 f"different grayordinates ({c.img.shape[1]} entries)")
    if ref.run.kind != "cifti":
        nifti.check_same_grid([(c.run.bold, c.img) for c in checked])
    return checked


def _read_last(last, cfg):
    """Trailing volumes actually cut from the data: none when ``trim.trailing_for_lag`` keeps them readable.

    The trailing trim still bounds the events (a CC2017 timeline has one clip per kept volume), but the
    response to the last clips arrives after the movie ends: with ``trailing_for_lag`` the lagged windows
    may read those volumes, so a 245-volume CC2017 run yields all 240 clips at ``lag_s: 4`` (not 238).
    """
    return 0 if cfg["trim"].get("trailing_for_lag", True) else last


def _load(c, columns=None, mask=None, cfg=None):
    """Trimmed (n_volumes, n_columns) float32 data of a checked run (see :func:`_read_last`)."""
    stop = c.n_volumes - (_read_last(c.last, cfg) if cfg is not None else c.last)
    if c.run.kind == "cifti":
        data = cifti.load_dtseries(c.run.bold, c.img, columns)
    elif mask is not None:
        data = nifti.load_masked(c.run.bold, mask, c.img)
    else:
        data, _ = nifti.load_bold(c.run.bold)
        return data[..., c.first:stop]
    return data[c.first:stop]


def _groups_for(ids, run_group, group_of):
    """Group of each presentation: the run's group (a segment), or the run of the clip's first showing."""
    out = []
    for cid in ids:
        group_of.setdefault(cid, run_group)
        out.append(group_of[cid])
    return out


def _roi_candidates(sel, ref, mask):
    """ROI restriction (``preprocess.selection.roi_mask``) over the in-mask columns, or None without one.

    Volume (NIfTI) runs take a volumetric atlas, resampled to the data grid (:func:`roi_from_atlas`); CIFTI runs
    take a surface label file (``.dlabel.nii`` or a ``{hemi}`` pair of ``.label.gii``) matched to the run's
    brain models by (structure, vertex) (:func:`roi_from_surface_labels`). Any other pairing stops.
    """
    spec = sel["roi_mask"]
    if not spec:
        return None
    surface_labels = cifti.is_surface_labels(spec)
    if ref.run.kind == "cifti":
        if not surface_labels:
            raise InputError(spec, "a surface label file for CIFTI data (preprocess.selection.roi_mask: a "
                                   ".dlabel.nii, or a path with {hemi} of two .label.gii files)",
                             "a volumetric atlas (CIFTI runs hold surface vertices; preprocess.cifti_cortex_only "
                             "keeps the cortex)")
        roi = roi_from_surface_labels(spec, sel["roi_labels"], cifti.brain_models(ref.img), str(ref.run.bold))
        if not roi[mask].any():
            raise InputError(spec, f"labels {list(sel['roi_labels']) or 'non-zero'} on the kept grayordinates "
                                   "(preprocess.cifti_cortex_only keeps cortical vertices only)",
                             f"{int(roi.sum())} labelled grayordinates, none kept")
        return roi[mask]
    if surface_labels:
        raise InputError(spec, "CIFTI data (e.g. dataset.cc2017.space: cifti) for a surface label file "
                               "(preprocess.selection.roi_mask)",
                         f"volumetric NIfTI runs ({Path(ref.run.bold).name}): give a NIfTI atlas instead")
    return roi_from_atlas(spec, sel["roi_labels"], ref.img)[mask]


def preprocess_subject(runs, splits, tr, cfg, log=print, lag_scan=True, lag_features=None):
    """Run the preprocessing stage for one subject.

    Parameters
    ----------
    runs : list of RunInput or fmrivid.io.bids.Run
    splits : dict clip_id -> 'train' | 'test' (from the splits file)
    tr : float, seconds
    cfg : dict, the config's ``preprocess`` section (defaults filled)
    lag_scan : bool
        Also compute the lag scan QC table (training data only).
    lag_features : (clip_ids, ndarray), optional
        A stimulus feature for the ridge lag scan (only its training clips are used).

    Returns
    -------
    SubjectData
    """
    from fmrivid.preprocess.lagscan import lag_scan as run_lag_scan

    lag = float(cfg["lag_s"])
    checked = validate_subject(runs, splits, tr, cfg)
    subject = checked[0].run.subject
    is_cifti = checked[0].run.kind == "cifti"
    train_runs = [c for c in checked if len(c.train)]
    if not train_runs:
        raise InputError(checked[0].run.source, "at least one run with training clips", "none for this subject")
    if not any(len(c.test) for c in checked):
        raise InputError(checked[0].run.bold.parent, "runs with test clips", "no test events for this subject")
    log(f"sub-{subject}: {len(checked)} runs validated (headers, TR {tr:g} s, grids, events)")

    # Pass 1: integrity, finite values, training mean and tSNR (training runs only decide the mask).
    mean_sum = None
    for c in checked:
        data = _load(c)
        if c in train_runs:
            m = data.mean(axis=0 if is_cifti else 3, dtype=np.float64)
            mean_sum = m if mean_sum is None else mean_sum + m
        del data
    mean_img = mean_sum / len(train_runs)
    if is_cifti:
        img0 = checked[0].img
        mask = cifti.cortex_columns(img0) if cfg["cifti_cortex_only"] else np.ones(img0.shape[1], bool)
    else:
        mask = mean_img > cfg["mask_threshold"] * np.percentile(mean_img, 98)
    roi = _roi_candidates(cfg["selection"], checked[0], mask)
    log(f"sub-{subject}: data checked; {'grayordinates' if is_cifti else 'brain mask'} {int(mask.sum())}")

    # Lag-scan subset: a fixed random subset of candidate voxels (no selection: it depends on the lag).
    n_mask = int(mask.sum())
    rng = np.random.default_rng(0)
    cand_idx = np.flatnonzero(roi) if roi is not None else np.arange(n_mask)
    scan_cols = np.sort(rng.choice(cand_idx, size=min(cfg["qc"]["lag_scan_voxels"], cand_idx.size),
                                   replace=False))

    # Pass 2: clean and cut samples.
    kw = _sample_kwargs(cfg)
    parts = {"train": ([], [], []), "test": ([], [], [])}
    group_of = {}
    scan_runs = []
    tsnr_sum = np.zeros(n_mask)
    dropped = 0
    for c in checked:
        data = _load(c, columns=mask if is_cifti else None, mask=None if is_cifti else mask, cfg=cfg)
        mean = data.mean(axis=0, dtype=np.float64)
        conf = None if c.confounds is None else c.confounds[c.first:c.first + data.shape[0]]
        if conf is not None:  # nuisance regression jointly with the detrending polynomial, then detrend/z-score
            from fmrivid.preprocess.confounds import regress_out

            poly = np.polynomial.legendre.legvander(np.linspace(-1, 1, data.shape[0]), cfg["detrend_order"])[:, 1:]
            data = regress_out(data, np.column_stack([poly, conf])) + mean.astype(data.dtype)
        clean, scale = detrend_standardize(data, cfg["detrend_order"], cfg["standardize"], inplace=True,
                                           return_scale=True)
        if len(c.train):  # tSNR: mean over time / SD of the detrended series, averaged over training runs
            tsnr_sum += np.where(scale > 0, mean / np.where(scale > 0, scale, 1), 0.0) / len(train_runs)
        for split, ev in (("train", c.train), ("test", c.test)):
            if len(ev):
                x, ids, kept = event_samples(clean, ev, tr, lag, source=c.run.source, **kw)
                dropped += len(ev) - len(kept)
                parts[split][0].append(x)
                parts[split][1].extend(ids)
                parts[split][2].extend(_groups_for(ids, c.run.group or c.run.label, group_of))
        if len(c.train) and lag_scan:
            scan_runs.append((np.ascontiguousarray(clean[:, scan_cols]), c.train, c.run.source))
        log(f"sub-{subject} run {c.run.label}: {c.n_volumes} volumes, trimmed to {clean.shape[0]} "
            f"(-{c.first}/-{c.last}), cleaned"
            f"{'' if conf is None else f' ({conf.shape[1]} confounds regressed)'}; "
            f"{len(c.train)} train + {len(c.test)} test events")
        del data, clean
    if dropped:
        log(f"sub-{subject}: {dropped} events whose window leaves the run were dropped (out_of_run: drop)")
    train_all = np.concatenate(parts["train"][0])
    train_ids_all, train_groups = parts["train"][1], parts["train"][2]
    sel = cfg["selection"]
    scoring = train_all.mean(axis=1) if train_all.ndim == 3 else train_all
    keep, score, info = select_voxels(scoring, train_ids_all, sel["method"], sel["p_threshold"],
                                      sel["top_percent"], sel["min_voxels"], log=log, groups=train_groups,
                                      reliability_groups=sel["reliability_groups"], top_k=sel["top_k"], roi=roi)
    log(f"sub-{subject}: selected {int(keep.sum())} of {info['n_candidates']} voxels ({sel['method']})")

    def flat(x):
        x = x[..., keep]
        return x.reshape(len(x), -1)

    if cfg["average_train_repeats"]:
        train_X, train_ids = average_repeats(flat(train_all), train_ids_all)
    else:
        train_X, train_ids = flat(train_all), list(train_ids_all)
    test_X, test_ids = average_repeats(flat(np.concatenate(parts["test"][0])), parts["test"][1])

    tsnr_img = np.zeros(mask.shape, np.float32)
    tsnr_img[mask] = tsnr_sum
    qc = {"mask": mask, "tsnr": tsnr_img, "mean": mean_img, "keep": keep, "score_all": score}
    if lag_scan and scan_runs:
        lags = np.arange(0.0, cfg["qc"]["lag_scan_max_s"] + 1e-9, tr)
        tables = [run_lag_scan(scan_runs, tr, lags, configured_lag=lag)]
        if lag_features is not None:
            from fmrivid.preprocess.lagscan import ridge_lag_scan

            tables.append(ridge_lag_scan(scan_runs, tr, lags, lag_features[0], lag_features[1], configured_lag=lag))
        qc["lag_scan"] = pd.concat(tables, ignore_index=True)
        for t in tables:
            best = t.loc[t["best"], "lag_s"]
            log(f"sub-{subject}: lag scan on training data ({t['method'].iloc[0]}, {len(scan_cols)} voxels): "
                f"best lag {float(best.iloc[0]) if len(best) else float('nan'):g} s (configured {lag:g} s)")
    info.update({"lag_s": lag, "tr": tr, "mask_voxels": n_mask, "n_train_presentations": len(train_ids_all),
                 "alignment": cfg["alignment"], "window_trs": int(cfg["window_trs"]),
                 "trim": [[c.run.label, c.first, c.last] for c in checked], "events_dropped": dropped})
    if is_cifti:
        img0 = checked[0].img
        cols = np.flatnonzero(mask)[keep]
        models = cifti.brain_models(img0)
        ijk = np.where(models.voxel[cols] >= 0, models.voxel[cols], -1).astype(np.int32)
        affine = models.affine if models.affine is not None else np.eye(4)
        shape = tuple(int(s) for s in models.volume_shape) if models.volume_shape is not None else (0, 0, 0)
        hemi, vertex, nvertices = cifti.vertex_bookkeeping(models, cols)
        return SubjectData(subject, train_X, train_ids, test_X, test_ids, ijk, affine, shape, score[keep], info,
                           space="cifti", columns=cols, qc=qc, hemi=hemi, vertex=vertex, nvertices=nvertices)
    ijk = np.argwhere(mask)[keep]
    affine = checked[0].img.affine
    return SubjectData(subject, train_X, train_ids, test_X, test_ids, ijk, affine,
                       tuple(int(s) for s in mask.shape), score[keep], info, qc=qc)


def write_subject(path, sd):
    """Write a :class:`SubjectData` to HDF5 atomically.

    Layout: ``train/X``, ``train/clip_id``, ``test/X``, ``test/clip_id``,
    ``voxels/ijk``, ``voxels/xyz`` (mm), ``voxels/score`` (and, for CIFTI data, ``voxels/grayordinate``,
    ``voxels/hemi`` ('left'/'right'/'' per column), ``voxels/vertex`` (full-surface vertex index, -1 for a
    voxel) and attr ``nvertices`` (JSON, vertices per full hemisphere surface, from the BrainModelAxis));
    attrs affine, shape, space, window_trs, info (JSON). With
    ``window_trs`` n >= 1 a row of X holds n volumes of the selected voxels, time-major.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for split, X, ids in (("train", sd.train_X, sd.train_ids), ("test", sd.test_X, sd.test_ids)):
            g = f.create_group(split)
            g.create_dataset("X", data=X.astype(np.float32))
            g.create_dataset("clip_id", data=np.array(ids, dtype=object), dtype=_STR)
        v = f.create_group("voxels")
        v.create_dataset("ijk", data=sd.ijk.astype(np.int32))
        xyz = (sd.affine @ np.c_[sd.ijk, np.ones(len(sd.ijk))].T).T[:, :3]
        if sd.space == "cifti":
            xyz[(sd.ijk < 0).any(1)] = np.nan
            v.create_dataset("grayordinate", data=np.asarray(sd.columns, np.int64))
            if sd.hemi is not None:
                v.create_dataset("hemi", data=np.asarray(sd.hemi, dtype=object), dtype=_STR)
                v.create_dataset("vertex", data=np.asarray(sd.vertex, np.int64))
                f.attrs["nvertices"] = json.dumps(dict(sd.nvertices or {}), sort_keys=True)
        v.create_dataset("xyz", data=xyz.astype(np.float32))
        v.create_dataset("score", data=sd.score.astype(np.float32))
        f.attrs["subject"] = sd.subject
        f.attrs["affine"] = sd.affine
        f.attrs["shape"] = np.array(sd.shape)
        f.attrs["space"] = sd.space
        f.attrs["window_trs"] = int(sd.info.get("window_trs", 0))
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
        if "grayordinate" in f["voxels"]:
            out["grayordinate"] = f["voxels"]["grayordinate"][()]
        if "hemi" in f["voxels"]:  # CIFTI files written before this bookkeeping lack it
            out["hemi"] = np.array([h.decode() if isinstance(h, bytes) else h for h in f["voxels"]["hemi"][()]],
                                   dtype=object)
            out["vertex"] = f["voxels"]["vertex"][()]
            out["nvertices"] = json.loads(f.attrs["nvertices"]) if "nvertices" in f.attrs else {}
        out["affine"] = f.attrs["affine"]
        out["shape"] = tuple(f.attrs["shape"])
        out["space"] = f.attrs.get("space", "volume")
        out["info"] = json.loads(f.attrs["info"])
    return out


def cc2017_inputs(subject, bold_paths, labels):
    """RunInputs of CC2017 runs: ``labels`` are ``<seg>_<rep>``; the file suffix gives the kind."""
    from fmrivid.io import cc2017

    out = []
    for path, label in zip(bold_paths, labels):
        seg = str(label).rsplit("_", 1)[0]
        kind = "cifti" if str(path).endswith(".dtseries.nii") else "nifti"

        def timeline(n_volumes, tr, first, last, seg=seg):
            return cc2017.timeline(seg, n_volumes, tr, first, last)

        out.append(RunInput(str(subject), str(label), Path(path), kind, timeline=timeline, group=seg))
    return out
