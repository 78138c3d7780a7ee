"""Shared fixtures: a small hand-made BIDS dataset with a planted signal (independent of the simulator)."""

import os

# Before numpy/torch load: one BLAS/OpenMP thread per test process (2-core machines; no oversubscription).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

TR = 1.0
SHAPE = (6, 5, 4)
LAG = 4.0


def _write_run(func, sub, run, data, events, tr=TR, sidecar_tr=None):
    stem = f"sub-{sub}_task-movie_run-{run}"
    img = nib.Nifti1Image(data.astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    zooms = (3.0, 3.0, 3.0, tr)[: data.ndim]
    img.header.set_zooms(zooms)
    nib.save(img, func / f"{stem}_bold.nii.gz")
    (func / f"{stem}_bold.json").write_text(json.dumps({"RepetitionTime": sidecar_tr or tr}))
    events.to_csv(func / f"{stem}_events.tsv", sep="\t", index=False)
    return stem


@pytest.fixture
def tiny_bids(tmp_path):
    """One subject, two training runs (each clip once per run) and one test run.

    Voxels in the first x-slab respond to the clip's (hidden) amplitude with a
    LAG-second delay; the rest is noise plus a linear drift.
    """
    rng = np.random.default_rng(0)
    root = tmp_path / "bids"
    func = root / "sub-01" / "func"
    func.mkdir(parents=True)
    train = [f"tr{i:02d}" for i in range(12)]
    test = [f"te{i:02d}" for i in range(4)]
    amp = {c: rng.normal(size=SHAPE[1] * SHAPE[2]) for c in train + test}
    responsive = np.zeros(SHAPE, bool)
    responsive[:2] = True
    stim_rows = [{"clip_id": c, "file": f"{c}.mp4", "caption": f"clip {c}", "split": "train" if c in train else "test"}
                 for c in train + test]
    (root / "stimuli").mkdir()
    pd.DataFrame(stim_rows).to_csv(root / "stimuli" / "clips.tsv", sep="\t", index=False)
    runs = {"01": train, "02": list(reversed(train)), "03": test + test}
    for run, clips in runs.items():
        n_vol = 4 + len(clips) * 6 + 12
        data = 100 + rng.normal(0, 1.0, SHAPE + (n_vol,)) + np.linspace(0, 5, n_vol)
        onsets = 4 + 6 * np.arange(len(clips))
        for c, on in zip(clips, onsets):
            t0 = int(on + LAG)
            resp = np.zeros(SHAPE)
            resp[:2] = 3 * amp[c].reshape(SHAPE[1], SHAPE[2])
            data[..., t0:t0 + 2] += resp[..., None]
        ev = pd.DataFrame({"onset": onsets.astype(float), "duration": 2.0, "trial_type": "clip", "clip_id": clips})
        _write_run(func, "01", run, data, ev)
    return {"root": root, "runs": list(runs), "responsive": responsive, "train": train, "test": test,
            "write_run": _write_run, "func": func}


REPO = Path(__file__).resolve().parents[1]
SMK_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """ONE local run of the whole DAG with config/test.yaml (2 cores), shared by every test that needs it.

    Tests must not modify it (copy it first). Returns the working directory; outputs are under results/.
    """
    work = tmp_path_factory.mktemp("tiny_run")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
           "--cores", "2", "--configfile", str(REPO / "config/test.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=SMK_ENV, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"tiny run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return work
