"""Rehearsal datasets in the layouts users hold: BIDS "in the wild" and fMRIPrep derivatives.

Both run the demo simulator (:func:`fmrivid.simulate.dataset.simulate_dataset`)
with small parameters and then rewrite its output in place, so the planted
signal and ``derivatives/ground_truth`` stay valid:

* :func:`write_bids_wild`: events with the BIDS ``stim_file`` column (no
  ``clip_id``) plus non-movie rows, one top-level ``task-<t>_bold.json``
  sidecar, some runs as ``.nii``, no stimulus table (the split comes from the
  repeats: test clips are the ones shown most often);
* :func:`write_fmriprep`: two sessions per subject (the last session with one
  run has no ``run-`` entity), a raw dataset with events, and an fMRIPrep-style
  derivative dataset with ``space-MNI152NLin2009cAsym_desc-preproc_bold``,
  its JSON, and ``desc-confounds_timeseries.tsv``/``.json``. A planted nuisance
  (a smoothed random signal) is added to every in-brain voxel and written,
  with a little noise, into the ``csf`` column, so regressing ``csf`` helps.
  The nuisance itself is kept in ``<raw>/derivatives/ground_truth/``.

Each returns the ``dataset`` config section fmrivid reads for it.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmrivid.simulate.dataset import (_write_json, _write_tsv, plan, simulate_dataset,
                                      write_nifti)

#: Small demo parameters: 2 subjects, 3 runs of 116 volumes (2 training runs where every
#: training clip is shown once, 1 test run where every test clip is shown 3 times), 32 px clips.
SMALL = {
    "seed": 0, "n_subjects": 2, "n_train_clips": 16, "n_test_clips": 4, "train_repeats": 2,
    "test_repeats": 3, "trials_per_run": 16, "task": "movie", "tr": 1.0, "clip_duration": 2.0,
    "isi": 4.0, "lead_in": 4.0, "tail": 16.0, "fps": 4, "size": 32, "voxel_size_mm": 8,
    "signal_percent": 2.0, "noise_percent": 1.0, "drift_percent": 3.0,
}
SPACE = "MNI152NLin2009cAsym"
#: Amplitude of the planted nuisance in the fMRIPrep fixture (percent of voxel baseline).
NUISANCE_PERCENT = 5.0
_NUISANCE, _MOTION = 11, 12  # seed stream tags (distinct from the simulator's)


def _quiet(*_args):
    pass


def _simulate(root, seed, small):
    params = dict(SMALL, **small)
    params["seed"] = int(seed)
    simulate_dataset(root, params, log=_quiet)
    return params, plan(params)


def _dataset_cfg(name, root, params, pl, **extra):
    cfg = {
        "name": name, "layout": "bids", "root": str(root), "simulate": False, "task": params["task"],
        "subjects": list(pl["subjects"]), "runs": [], "sessions": [], "tr": float(params["tr"]),
        "stimuli_table": "stimuli/clips.tsv", "stimuli_dir": "stimuli",
        "split": {"source": "table", "test": [], "min_repeats": 2},
        "derivatives": {"root": "", "space": "", "res": "", "desc": "preproc"},
    }
    cfg.update(extra)
    return cfg


def _gunzip(path):
    """Replace ``x.nii.gz`` by ``x.nii`` (same image)."""
    out = path.with_name(path.name[:-3])
    with gzip.open(path, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return out


def _wild_events(demo_events, rng):
    """Demo events -> BIDS events: stim_file relative to /stimuli, no clip_id, extra rows and columns."""
    ev = pd.read_csv(demo_events, sep="\t", dtype={"clip_id": str})
    movies = pd.DataFrame({
        "onset": ev["onset"], "duration": ev["duration"], "trial_type": "movie",
        "stim_file": [f"{c}.mp4" for c in ev["clip_id"]], "response_time": "n/a",
    })
    first = float(ev["onset"].min())
    others = pd.DataFrame({
        "onset": [0.0, float(ev["onset"].iloc[len(ev) // 2]) + float(ev["duration"].iloc[0]) + 0.5],
        "duration": [first, 0.0], "trial_type": ["fixation", "button_press"], "stim_file": ["n/a", "n/a"],
        "response_time": ["n/a", f"{rng.uniform(0.3, 0.8):.3f}"],
    })
    return pd.concat([movies, others]).sort_values("onset", kind="stable").reset_index(drop=True)


def write_bids_wild(root, seed=0, **small):
    """Write a BIDS dataset as users hold it (stim_file events, inherited sidecar, .nii runs).

    Layout under ``root``::

        dataset_description.json, participants.tsv, task-<t>_bold.json (RepetitionTime)
        stimuli/<clip>.mp4                       (no clips.tsv)
        sub-XX/func/sub-XX_task-<t>_run-RR_{bold.nii.gz | bold.nii (even runs), events.tsv}
        derivatives/ground_truth/...             (the demo's truth, for tests)

    Events carry onset, duration, trial_type, stim_file (``<clip>.mp4``, relative
    to ``stimuli/`` as BIDS has it) and response_time, with a fixation row and a
    button-press row whose stim_file is n/a.

    Parameters
    ----------
    root : str or Path
        Output folder (created; should be empty).
    seed : int
        Seed of the demo simulator.
    **small
        Overrides of :data:`SMALL` (demo simulator parameters).

    Returns
    -------
    dict
        The ``dataset`` config section: split from repeats (clips a subject saw at
        least ``test_repeats`` times are test), ``min_repeats`` set accordingly.
    """
    root = Path(root)
    params, pl = _simulate(root, seed, small)
    task = params["task"]
    rng = np.random.default_rng([int(seed), _MOTION])
    for sub in pl["subjects"]:
        func = root / f"sub-{sub}" / "func"
        for index, run in enumerate(pl["runs"]):
            stem = func / f"sub-{sub}_task-{task}_run-{run}"
            events = Path(f"{stem}_events.tsv")
            _write_tsv(events, _wild_events(events, rng))
            Path(f"{stem}_bold.json").unlink()
            if index % 2:
                _gunzip(Path(f"{stem}_bold.nii.gz"))
    _write_json(root / f"task-{task}_bold.json", {"RepetitionTime": params["tr"], "TaskName": task})
    _write_json(root / f"task-{task}_events.json", {
        "stim_file": {"Description": "Movie shown, relative to the stimuli/ folder."},
        "response_time": {"Description": "Button press latency.", "Units": "s"},
    })
    (root / "stimuli" / "clips.tsv").unlink()
    _describe(root, "fmrivid rehearsal: BIDS as users hold it", "raw")
    min_repeats = params["test_repeats"] if params["test_repeats"] > params["train_repeats"] else 2
    return _dataset_cfg("bids_wild", root, params, pl,
                        split={"source": "repeats", "test": [], "min_repeats": int(min_repeats)})


def _describe(root, name, kind, generated_by=None):
    meta = json.loads((root / "dataset_description.json").read_text()) if kind == "raw" else {}
    meta.update({"Name": name, "BIDSVersion": "1.9.0", "DatasetType": kind})
    if generated_by:
        meta["GeneratedBy"] = generated_by
    _write_json(root / "dataset_description.json", meta)


def _smooth(n, rng, sigma):
    """Unit-variance Gaussian-smoothed white noise of length ``n`` (sigma in samples)."""
    half = int(4 * sigma)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    x = np.convolve(rng.normal(size=n + 2 * half), kernel, mode="valid")
    return (x - x.mean()) / x.std()


def _with_derivatives(table, names):
    for name in names:
        deriv = table[name].diff()
        table[f"{name}_derivative1"] = deriv
        table[f"{name}_power2"] = table[name] ** 2
        table[f"{name}_derivative1_power2"] = deriv ** 2
    return table


def confounds_table(data_2d, nuisance, tr, rng):
    """An fMRIPrep-like confounds table for one run.

    Parameters
    ----------
    data_2d : numpy.ndarray
        (n_volumes, n_in_brain) BOLD, for global_signal.
    nuisance : numpy.ndarray
        (n_volumes,) planted nuisance; ``csf`` is 800 + 40 * (nuisance + 0.1 noise).
    tr : float
        Repetition time (s), for the cosine drift basis (128 s cutoff).
    rng : numpy.random.Generator

    Returns
    -------
    (pandas.DataFrame, dict)
        The table (NaN in the first row of derivatives, written as n/a) and its
        JSON metadata (aCompCor components with Mask 'combined').
    """
    n = len(nuisance)
    t = {}
    t["global_signal"] = data_2d.mean(axis=1)
    t["csf"] = 800 + 40 * (nuisance + 0.1 * rng.normal(size=n))
    t["white_matter"] = 600 + 10 * (0.3 * nuisance + _smooth(n, rng, 3.0))
    for axis in "xyz":
        t[f"trans_{axis}"] = np.cumsum(rng.normal(0, 0.01, n))
    for axis in "xyz":
        t[f"rot_{axis}"] = np.cumsum(rng.normal(0, 0.0002, n))
    table = _with_derivatives(pd.DataFrame(t), ["global_signal", "csf", "white_matter"]
                              + [f"{k}_{a}" for k in ("trans", "rot") for a in "xyz"])
    steps = table[[f"trans_{a}_derivative1" for a in "xyz"]].abs().sum(axis=1) \
        + 50 * table[[f"rot_{a}_derivative1" for a in "xyz"]].abs().sum(axis=1)
    table["framewise_displacement"] = steps.where(table.index > 0)
    table["std_dvars"] = (1 + 0.05 * rng.normal(size=n))
    table["dvars"] = 20 * table["std_dvars"]
    table.loc[0, ["std_dvars", "dvars"]] = np.nan
    comps = {}
    for k in range(6):
        comps[f"a_comp_cor_{k:02d}"] = _smooth(n, rng, 2.0) / np.sqrt(n)
    n_cos = max(1, int(2 * n * tr / 128.0))
    for k in range(n_cos):
        comps[f"cosine{k:02d}"] = np.sqrt(2.0 / n) * np.cos(np.pi * (np.arange(n) + 0.5) * (k + 1) / n)
    table = pd.concat([table, pd.DataFrame(comps)], axis=1)
    variance = np.sort(rng.uniform(0.02, 0.2, 6))[::-1]
    meta = {f"a_comp_cor_{k:02d}": {
        "Method": "aCompCor", "Mask": "combined", "SingularValue": float(10 * variance[k]),
        "VarianceExplained": float(variance[k]), "CumulativeVarianceExplained": float(variance[:k + 1].sum()),
        "Retained": True} for k in range(6)}
    meta.update({f"cosine{k:02d}": {"Method": "DCT", "Cutoff": 128.0} for k in range(n_cos)})
    return table, meta


def _sessions(runs):
    """Demo runs split in two sessions: [(demo_run, ses, run entity or None)]."""
    half = (len(runs) + 1) // 2
    out = []
    for ses, group in (("1", runs[:half]), ("2", runs[half:])):
        for k, run in enumerate(group, start=1):
            out.append((run, ses, f"{k:02d}" if len(group) > 1 else None))
    return out


def write_fmriprep(raw_root, deriv_root, seed=0, nuisance_percent=NUISANCE_PERCENT, **small):
    """Write a raw BIDS dataset with sessions and its fMRIPrep-style derivatives.

    Layout::

        <raw_root>/sub-XX/ses-S/sub-XX_ses-S_task-<t>_bold.json     (session-level sidecar)
        <raw_root>/sub-XX/ses-S/func/sub-XX_ses-S_task-<t>[_run-RR]_{bold.nii.gz,events.tsv}
        <raw_root>/stimuli/clips.tsv, <clip>.mp4                     (split from the table)
        <raw_root>/derivatives/ground_truth/sub-XX_ses-S[_run-RR]_nuisance.tsv
        <deriv_root>/dataset_description.json                         (DatasetType derivative, fMRIPrep)
        <deriv_root>/sub-XX/ses-S/func/sub-XX_ses-S_task-<t>[_run-RR]_
            space-MNI152NLin2009cAsym_desc-preproc_bold.{nii.gz,json}, ..._desc-brain_mask.nii.gz,
            desc-confounds_timeseries.{tsv,json}

    ses-1 holds the first half of the demo's runs (run-01, run-02...), ses-2 the rest
    (no run entity when it has one run). Events use stim_file (``stimuli/<clip>.mp4``,
    relative to the dataset root, as many datasets write it) with no clip_id. The
    preprocessed BOLD is the demo's BOLD plus ``nuisance_percent`` % of baseline
    times a per-voxel weight (0.5-1.5) times the nuisance; the raw BOLD is a copy.

    Parameters
    ----------
    raw_root, deriv_root : str or Path
        Output folders (created; should be empty). deriv_root may lie inside raw_root.
    seed : int
        Seed of the demo simulator and of the nuisance.
    nuisance_percent : float
        Nuisance amplitude (percent of baseline).
    **small
        Overrides of :data:`SMALL`.

    Returns
    -------
    dict
        The ``dataset`` config section (derivatives root and space set; confound
        regression is ``preprocess.confounds``: e.g. ``{columns: [csf]}`` or
        ``{strategy: simple}``).
    """
    raw_root, deriv_root = Path(raw_root), Path(deriv_root)
    params, pl = _simulate(raw_root, seed, small)
    task, tr = params["task"], float(params["tr"])
    truth = raw_root / "derivatives" / "ground_truth"
    for sub_index, sub in enumerate(pl["subjects"]):
        demo_func = raw_root / f"sub-{sub}" / "func"
        for run_index, (demo_run, ses, run) in enumerate(_sessions(pl["runs"])):
            ent = f"sub-{sub}_ses-{ses}_task-{task}" + (f"_run-{run}" if run else "")
            raw_func = raw_root / f"sub-{sub}" / f"ses-{ses}" / "func"
            out_func = deriv_root / f"sub-{sub}" / f"ses-{ses}" / "func"
            raw_func.mkdir(parents=True, exist_ok=True)
            out_func.mkdir(parents=True, exist_ok=True)
            demo = demo_func / f"sub-{sub}_task-{task}_run-{demo_run}"
            ev = pd.read_csv(f"{demo}_events.tsv", sep="\t", dtype={"clip_id": str})
            _write_tsv(raw_func / f"{ent}_events.tsv", ev.drop(columns=["clip_id"]))
            img = nib.load(f"{demo}_bold.nii.gz")
            data = np.asarray(img.dataobj, dtype=np.float32)
            mask = data.mean(axis=3) > 0
            rng = np.random.default_rng([int(seed), _NUISANCE, sub_index, run_index])
            nuisance = _smooth(data.shape[3], rng, 2.0 / tr)
            weights = rng.uniform(0.5, 1.5, int(mask.sum()))
            inside = data[mask]
            inside += (nuisance_percent / 100) * (inside.mean(axis=1) * weights)[:, None] * nuisance[None, :]
            data[mask] = inside
            stem = out_func / f"{ent}_space-{SPACE}_desc-preproc_bold"
            write_nifti(Path(f"{stem}.nii.gz"), data, img.affine, img.header.get_zooms())
            shutil.copyfile(f"{stem}.nii.gz", raw_func / f"{ent}_bold.nii.gz")
            _write_json(Path(f"{stem}.json"), {"RepetitionTime": tr, "TaskName": task, "SkullStripped": False,
                                               "StartTime": 0.0, "Sources": [f"bids:raw:{ent}_bold.nii.gz"]})
            write_nifti(out_func / f"{ent}_space-{SPACE}_desc-brain_mask.nii.gz", mask.astype(np.uint8),
                        img.affine, img.header.get_zooms()[:3])
            table, meta = confounds_table(inside.T, nuisance, tr, rng)
            conf = out_func / f"{ent}_desc-confounds_timeseries"
            with open(f"{conf}.tsv", "w") as fh:  # n/a as fMRIPrep writes it
                table.to_csv(fh, sep="\t", index=False, na_rep="n/a", lineterminator="\n")
            _write_json(Path(f"{conf}.json"), meta)
            _write_tsv(truth / f"{ent.replace(f'_task-{task}', '')}_nuisance.tsv",
                       pd.DataFrame({"nuisance": nuisance}))
            for suffix in ("bold.nii.gz", "bold.json", "events.tsv"):
                Path(f"{demo}_{suffix}").unlink()
        demo_func.rmdir()
        for ses in ("1", "2"):
            _write_json(raw_root / f"sub-{sub}" / f"ses-{ses}" / f"sub-{sub}_ses-{ses}_task-{task}_bold.json",
                        {"RepetitionTime": tr, "TaskName": task})
    _describe(raw_root, "fmrivid rehearsal: raw BIDS with sessions", "raw")
    _describe(deriv_root, "fMRIPrep - fMRI PREProcessing workflow", "derivative", [
        {"Name": "fMRIPrep", "Version": "23.2.1", "CodeURL": "https://github.com/nipreps/fmriprep",
         "Description": "imitated by fmrivid.simulate.bids_fixtures (demo BOLD plus a planted nuisance)"}])
    return _dataset_cfg("fmriprep_rehearsal", raw_root, params, pl,
                        derivatives={"root": str(deriv_root), "space": SPACE, "res": "", "desc": "preproc"})


__all__ = ["SMALL", "SPACE", "confounds_table", "write_bids_wild", "write_fmriprep"]
