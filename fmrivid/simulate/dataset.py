"""Write the demo dataset: BIDS raw data, stimuli and ground truth.

Layout under ``root``::

    dataset_description.json
    participants.tsv
    stimuli/clips.tsv, stimuli/<clip_id>.mp4
    sub-XX/func/sub-XX_task-T_run-RR_{bold.nii.gz,bold.json,events.tsv}
    derivatives/ground_truth/sub-XX_truth.json, sub-XX_responsive.nii.gz

Every file is written atomically. All randomness comes from ``params["seed"]``
through independent streams (stimuli, schedule, and per subject/run weights,
noise and drift), so one stream never shifts another.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmrivid.errors import ConfigError
from fmrivid.io.atomic import atomic_path
from fmrivid.io.video import write_mp4
from fmrivid.simulate import bold, stimuli

#: Every key of ``params`` and its kind: (type, minimum, strict minimum).
PARAM_SPEC = {
    "seed": (int, 0, False),
    "n_subjects": (int, 1, False),
    "n_train_clips": (int, 1, False),
    "n_test_clips": (int, 1, False),
    "train_repeats": (int, 1, False),
    "test_repeats": (int, 1, False),
    "trials_per_run": (int, 1, False),
    "task": (str, None, False),
    "tr": (float, 0, True),
    "clip_duration": (float, 0, True),
    "isi": (float, 0, False),
    "lead_in": (float, 0, False),
    "tail": (float, 0, False),
    "fps": (int, 1, False),
    "size": (int, 16, False),
    "voxel_size_mm": (float, 0, True),
    "signal_percent": (float, 0, False),
    "noise_percent": (float, 0, False),
    "drift_percent": (float, 0, False),
}

# Stream tags of the seeded generators.
_STIMULI, _SCHEDULE, _WEIGHTS, _NOISE, _DRIFT = 1, 2, 3, 4, 5


def _rng(seed, *keys):
    return np.random.default_rng([int(seed), *keys])


def _check(params):
    """Validate ``params`` and return a normalised copy (ints and floats coerced)."""
    if not isinstance(params, dict):
        raise ConfigError(f"simulate: expected a mapping of parameters; found {type(params).__name__}")
    out = {}
    for key, (kind, minimum, strict) in PARAM_SPEC.items():
        if key not in params:
            raise ConfigError(f"simulate.{key}: expected a value; found the key missing")
        value = params[key]
        out[key] = _coerce(key, value, kind)
        if minimum is not None and (out[key] < minimum or (strict and out[key] == minimum)):
            relation = ">" if strict else ">="
            raise ConfigError(f"simulate.{key}: expected a number {relation} {minimum}; found {value!r}")
    if not out["task"].isalnum():
        raise ConfigError(f"simulate.task: expected an alphanumeric BIDS label; found {out['task']!r}")
    if out["size"] % 2:
        raise ConfigError(f"simulate.size: expected an even number (H.264); found {out['size']}")
    try:
        stimuli.n_frames(out["clip_duration"], out["fps"])
    except ValueError as exc:
        raise ConfigError(f"simulate.{exc}") from None
    n_combos = len(stimuli.all_combinations())
    if out["n_train_clips"] + out["n_test_clips"] > n_combos:
        raise ConfigError(
            f"simulate.n_train_clips + n_test_clips: expected at most {n_combos} "
            f"(distinct attribute combinations); found {out['n_train_clips'] + out['n_test_clips']}"
        )
    return out


def _coerce(key, value, kind):
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"simulate.{key}: expected a non-empty string; found {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"simulate.{key}: expected a number; found {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise ConfigError(f"simulate.{key}: expected an integer; found {value!r}")
        return int(value)
    return float(value)


def _labels(count):
    width = max(2, len(str(count)))
    return [f"{i:0{width}d}" for i in range(1, count + 1)]


def run_seconds(p):
    """Duration of every run in seconds: lead_in + trials_per_run * (clip_duration + isi) + tail."""
    return p["lead_in"] + p["trials_per_run"] * (p["clip_duration"] + p["isi"]) + p["tail"]


def plan(params):
    """What :func:`simulate_dataset` will write, without writing anything.

    Pure and deterministic; used by the workflow at DAG-construction time.

    Parameters
    ----------
    params : dict
        The ``simulate`` config section (every key of PARAM_SPEC).

    Returns
    -------
    dict
        ``subjects`` (["01", ...]), ``runs`` (["01", ...], training runs first),
        ``task``, ``tr``, ``train_runs``, ``test_runs``, ``clip_ids``
        (["train001", ..., "test001", ...]) and ``n_volumes`` (volumes per run,
        identical for every run).

    Raises
    ------
    ConfigError
        When a parameter is missing or out of range.
    """
    p = _check(params)
    n_train_runs = math.ceil(p["n_train_clips"] * p["train_repeats"] / p["trials_per_run"])
    n_test_runs = math.ceil(p["n_test_clips"] * p["test_repeats"] / p["trials_per_run"])
    runs = _labels(n_train_runs + n_test_runs)
    return {
        "subjects": _labels(p["n_subjects"]),
        "runs": runs,
        "task": p["task"],
        "tr": p["tr"],
        "train_runs": runs[:n_train_runs],
        "test_runs": runs[n_train_runs:],
        "clip_ids": [f"train{i:03d}" for i in range(1, p["n_train_clips"] + 1)]
        + [f"test{i:03d}" for i in range(1, p["n_test_clips"] + 1)],
        "n_volumes": int(math.ceil(run_seconds(p) / p["tr"] - 1e-9)),
    }


def planned_files(params):
    """Every path (relative to the dataset root) that :func:`simulate_dataset` writes, sorted.

    Parameters
    ----------
    params : dict
        The ``simulate`` config section.

    Returns
    -------
    list of str
    """
    pl = plan(params)
    files = ["dataset_description.json", "participants.tsv", "stimuli/clips.tsv"]
    files += [f"stimuli/{cid}.mp4" for cid in pl["clip_ids"]]
    for sub in pl["subjects"]:
        for run in pl["runs"]:
            stem = f"sub-{sub}/func/sub-{sub}_task-{pl['task']}_run-{run}"
            files += [f"{stem}_bold.nii.gz", f"{stem}_bold.json", f"{stem}_events.tsv"]
        files += [f"derivatives/ground_truth/sub-{sub}_truth.json",
                  f"derivatives/ground_truth/sub-{sub}_responsive.nii.gz"]
    return sorted(files)


def make_schedule(clip_ids, repeats, trials_per_run, rng):
    """Assign the presentations of one split's clips to runs.

    The clip order is one seeded permutation repeated ``repeats`` times and cut
    into runs of ``trials_per_run``, so two presentations of a clip are
    ``len(clip_ids)`` trials apart: in different runs whenever there are at
    least ``trials_per_run`` clips. Each run is then shuffled (seeded).

    Returns
    -------
    list of list of str
        Clip ids of every run, in presentation order.
    """
    order = [clip_ids[i] for i in rng.permutation(len(clip_ids))] * repeats
    runs = [order[i:i + trials_per_run] for i in range(0, len(order), trials_per_run)]
    return [[run[i] for i in rng.permutation(len(run))] for run in runs]


def onsets(n_trials, p):
    """Onsets (s) of the trials of a run: lead_in + k * (clip_duration + isi)."""
    return p["lead_in"] + np.arange(n_trials) * (p["clip_duration"] + p["isi"])


def simulate_dataset(root, params, log=print):
    """Write the demo dataset (BIDS raw + stimuli + ground truth) under ``root``.

    Parameters
    ----------
    root : str or Path
        Dataset root directory (created if needed).
    params : dict
        The ``simulate`` config section (every key of PARAM_SPEC).
    log : callable
        Receives one progress line at a time.

    Raises
    ------
    ConfigError
        When a parameter is missing or out of range.
    """
    start = time.perf_counter()
    root = Path(root)
    p, pl = _check(params), plan(params)
    frames = stimuli.n_frames(p["clip_duration"], p["fps"])
    clips = stimuli.sample_clips(p["n_train_clips"], p["n_test_clips"], p["size"], frames,
                                 _rng(p["seed"], _STIMULI))
    videos = [stimuli.render_clip(c, p["size"], frames) for c in clips]
    _write_stimuli(root, clips, videos, p["fps"])
    log(f"simulate: wrote {len(clips)} clips ({frames} frames, {p['size']} px)")

    schedule = _full_schedule(clips, p, pl)
    grid = bold.load_grid(p["voxel_size_mm"])
    features, names = stimuli.feature_matrix(clips, videos)
    lag = bold.true_lag(p["tr"], p["clip_duration"])
    designs = {run: bold.design_matrix(onsets(len(ids), p), pl["n_volumes"], p["tr"], p["clip_duration"])
               for run, ids in schedule.items()}
    log(f"simulate: grid {grid.shape} at {grid.voxel_size} mm, {int(grid.mask.sum())} in-brain, "
        f"{int(grid.responsive.sum())} responsive voxels; true lag {lag} s")
    for index, sub in enumerate(pl["subjects"]):
        _simulate_subject(root, sub, index, p, pl, grid, clips, features, schedule, designs)
        _write_truth(root, sub, p, pl, grid, names, lag)
        log(f"simulate: sub-{sub}: {len(pl['runs'])} runs x {pl['n_volumes']} volumes")
    _write_text(root / "participants.tsv",
                "participant_id\n" + "".join(f"sub-{s}\n" for s in pl["subjects"]))
    _write_json(root / "dataset_description.json", {
        "Name": "fmrivid demo", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "GeneratedBy": [{"Name": "fmrivid.simulate", "Description": "procedural clips with planted BOLD responses"}],
        "License": "CC0",
    })
    log(f"simulate: done in {time.perf_counter() - start:.1f} s -> {root}")


def _full_schedule(clips, p, pl):
    """Run label -> clip ids in presentation order (training runs, then test runs)."""
    rng = _rng(p["seed"], _SCHEDULE)
    train = [c["clip_id"] for c in clips if c["split"] == "train"]
    test = [c["clip_id"] for c in clips if c["split"] == "test"]
    runs = (make_schedule(train, p["train_repeats"], p["trials_per_run"], rng)
            + make_schedule(test, p["test_repeats"], p["trials_per_run"], rng))
    return dict(zip(pl["runs"], runs))


def _simulate_subject(root, sub, index, p, pl, grid, clips, features, schedule, designs):
    """Write the BOLD runs, sidecars and events of one subject."""
    baseline = grid.baseline[grid.mask].astype(np.float64)
    resp_index = np.flatnonzero(grid.responsive[grid.mask])
    amplitudes, _ = bold.clip_amplitudes(features, baseline[resp_index], p["signal_percent"] / 100,
                                         _rng(p["seed"], _WEIGHTS, index))
    row = {c["clip_id"]: i for i, c in enumerate(clips)}
    func = root / f"sub-{sub}" / "func"
    for run_index, (run, ids) in enumerate(schedule.items()):
        data, _ = bold.simulate_run(
            designs[run], amplitudes[[row[c] for c in ids]], baseline, resp_index,
            p["noise_percent"] / 100, p["drift_percent"] / 100,
            _rng(p["seed"], _NOISE, index, run_index), _rng(p["seed"], _DRIFT, index, run_index))
        volume = np.zeros(grid.shape + (data.shape[0],), dtype=np.float32)
        volume[grid.mask] = data.T
        stem = func / f"sub-{sub}_task-{p['task']}_run-{run}"
        write_nifti(Path(f"{stem}_bold.nii.gz"), volume, grid.affine, (grid.voxel_size,) * 3 + (p["tr"],))
        _write_json(Path(f"{stem}_bold.json"), {"RepetitionTime": p["tr"], "TaskName": p["task"]})
        _write_events(Path(f"{stem}_events.tsv"), ids, p)


def _write_events(path, ids, p):
    table = pd.DataFrame({
        "onset": onsets(len(ids), p),
        "duration": p["clip_duration"],
        "trial_type": "clip",
        "clip_id": ids,
        "stim_file": [f"stimuli/{cid}.mp4" for cid in ids],
    })
    _write_tsv(path, table)


def _write_stimuli(root, clips, videos, fps):
    folder = root / "stimuli"
    for clip, video in zip(clips, videos):
        write_mp4(folder / f"{clip['clip_id']}.mp4", video, fps)
    columns = ["clip_id", "file", "caption", "split", "shape", "colour", "motion", "texture"]
    table = pd.DataFrame([{**c, "file": f"{c['clip_id']}.mp4"} for c in clips])[columns]
    _write_tsv(folder / "clips.tsv", table)


def _write_truth(root, sub, p, pl, grid, names, lag):
    """Ground truth read only by tests: lag, HRF, responsive mask, feature names."""
    folder = root / "derivatives" / "ground_truth"
    times, response = bold.trial_response(p["clip_duration"])
    blocks = {level: [n for n in names if n.split("_")[0] in keys] for level, keys in stimuli.LEVELS.items()}
    _write_json(folder / f"sub-{sub}_truth.json", {
        "subject": sub,
        "seed": p["seed"],
        "lag_s": lag,
        "hrf_peak_s": bold.hrf_peak_s(),
        "response_peak_s": round(float(times[np.argmax(response)]), 6),
        "hrf_model": "glover",
        "frame_times": "volume t is acquired at t * tr seconds after the run start",
        "tr": p["tr"],
        "n_volumes": pl["n_volumes"],
        "n_in_brain": int(grid.mask.sum()),
        "n_responsive": int(grid.responsive.sum()),
        "responsive_rule": f"in-brain and MNI y < {bold.RESPONSIVE_Y_MAX_MM} mm and z > {bold.RESPONSIVE_Z_MIN_MM} mm",
        "signal_percent": p["signal_percent"],
        "evoked_percent": p["signal_percent"] * bold.EVOKED_GAIN,
        "noise_percent": p["noise_percent"],
        "drift_percent": p["drift_percent"],
        "drift_order": bold.DRIFT_ORDER,
        "baseline_range": list(bold.BASELINE_RANGE),
        "feature_names": names,
        "feature_blocks": blocks,
        "params": p,
    })
    write_nifti(folder / f"sub-{sub}_responsive.nii.gz", grid.responsive.astype(np.uint8), grid.affine,
                (grid.voxel_size,) * 3)


def write_nifti(path, data, affine, zooms):
    """Write a NIfTI-1 image (gzip if ``path`` ends in .gz) atomically and byte-reproducibly.

    Units are mm and seconds; qform and sform are the MNI affine. The gzip
    header carries no time stamp, so equal data give equal bytes.

    Parameters
    ----------
    path : Path
        Output path (``.nii`` or ``.nii.gz``).
    data : numpy.ndarray
        3-D or 4-D array.
    affine : numpy.ndarray
        (4, 4) voxel-to-mm affine.
    zooms : tuple of float
        Voxel sizes, one per axis of ``data`` (the 4th is the TR in s).
    """
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code="mni")
    img.set_sform(affine, code="mni")
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms(tuple(float(z) for z in zooms))
    payload = img.to_bytes()
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                       compresslevel=1, mtime=0) as gz:
                gz.write(payload)
        else:
            tmp.write_bytes(payload)


def _write_text(path, text):
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _write_json(path, obj):
    """Write an object as indented JSON atomically."""
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def _write_tsv(path, table):
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, lineterminator="\n")
