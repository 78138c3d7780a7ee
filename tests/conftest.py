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

    With pytest-xdist (`make test` runs two workers) the run is shared across workers too: the first
    worker that asks makes it under a file lock, the others wait for it and reuse it. Tests must not modify
    it (copy it first). Returns the working directory; outputs are under results/.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    work = root / "tiny_run_shared"
    with FileLock(str(root / "tiny_run_shared.lock")):
        if (work / "DONE").exists():
            return work
        if (work / "FAILED").exists():
            raise AssertionError(f"tiny run failed (in another worker):\n{(work / 'FAILED').read_text()}")
        work.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
               "--cores", "2", "--configfile", str(REPO / "config/test.yaml")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=SMK_ENV, timeout=900)
        (work / "snakemake_output.txt").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            msg = f"tiny run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
            (work / "FAILED").write_text(msg)
            raise AssertionError(msg)
        (work / "DONE").write_text("ok\n")
    return work


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns xdist_group marks into scheduling groups
def pytest_collection_modifyitems(config, items):
    """Scheduling for pytest-xdist's `--dist loadgroup` (`make test`): every test that reads the shared tiny
    run goes to one worker (the largest group is handed out first, so that worker starts the run at once),
    and the real-SLURM test to another, which runs its own DAG meanwhile; other tests fill in around them."""
    for item in items:
        if "tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("tiny"))
        elif item.name == "test_slurm_run_equals_local_run":
            item.add_marker(pytest.mark.xdist_group("slurm"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tests: the suite runs on two pytest workers sharing two cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quiet(_message):
    """A ``log`` callable that drops its messages."""


def write_split_table(path, ids, split):
    """A minimal ``splits.tsv`` (clip_id, split, file, caption) for stage tests that read training rows."""
    pd.DataFrame({"clip_id": list(ids), "split": list(split), "file": [f"{c}.mp4" for c in ids],
                  "caption": ["x"] * len(ids)}).to_csv(path, sep="\t", index=False)
