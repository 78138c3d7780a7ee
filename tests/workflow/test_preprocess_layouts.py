"""The CC2017 layout through the real workflow: stimulus table CLI, splits and preprocess (NIfTI `mni/` space)."""

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from fmrivid.io import cc2017
from fmrivid.preprocess.pipeline import read_subject

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "PYTHONWARNINGS": "ignore"}
SHAPE = (8, 7, 6)

pytestmark = pytest.mark.workflow


def _write_layout(root, cc):
    """subject1 with NIfTI runs in <seg>/mni/: voxels x < 2 respond to the movie 4 s (2 TRs) late."""
    rng = np.random.default_rng(1)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    train, test = cc2017.segments(cc["train_segments"], cc["test_segments"])
    for seg in train + test:
        n_vol = 246 if seg == "test2" else 245
        first = 2 if n_vol == 246 else 1
        movie = rng.normal(size=(240,) + SHAPE[1:])
        for rep in range(1, (cc["train_repeats"] if seg.startswith("seg") else cc["test_repeats"]) + 1):
            data = 1000 + rng.normal(0, 1.0, SHAPE + (n_vol,))
            data[:2, ..., first + 2:first + 242] += 2.0 * np.moveaxis(movie[: n_vol - first - 2], 0, -1)[None]
            img = nib.Nifti1Image(data.astype(np.float32), affine)
            img.header.set_xyzt_units("mm", "sec")
            img.header.set_zooms((3.0, 3.0, 3.0, 2.0))
            path = cc2017.run_path(root, "1", seg, rep, "mni", cc["mni_file"])
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(img, path)


def test_cc2017_mni_layout_through_the_workflow(tmp_path):
    cfg = yaml.safe_load((REPO / "config/cc2017.yaml").read_text())
    root = tmp_path / "cc2017"
    cfg["results_dir"] = "results"
    cfg["dataset"].update({"root": str(root), "subjects": ["1"]})
    cfg["dataset"]["cc2017"].update({"space": "mni", "train_segments": 3, "test_segments": 2, "test_repeats": 2,
                                     "mni_file": "{seg}_{rep}_mni.nii.gz"})
    cfg["preprocess"]["selection"].update({"reliability_groups": "pooled", "min_voxels": 5})
    cfg["preprocess"]["mask_threshold"] = 0.5
    _write_layout(root, cfg["dataset"]["cc2017"])
    path = tmp_path / "cc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                           "--cores", "2", "results/fmri/sub-1.h5", "--configfile", str(path)],
                          capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # The stimulus table of the layout (one row per 2-s clip), written by rule stimulus_table.
    table = pd.read_csv(tmp_path / "results/stimuli/clips.tsv", sep="\t")
    assert len(table) == 5 * 240 and table.loc[241, "clip_id"] == "seg2_001" and table.loc[241, "start_s"] == 2.0
    sub = read_subject(tmp_path / "results/fmri/sub-1.h5")
    assert {lab: (a, b) for lab, a, b in sub["info"]["trim"]}["test2_1"] == (2, 4)
    assert sub["train_X"].shape[0] == 3 * 240 and sub["test_X"].shape[0] == 2 * 240  # lag before the trailing trim
    assert set(sub["ijk"][:, 0].tolist()) == {0, 1}  # only the planted slab is selected
    lag = pd.read_csv(tmp_path / "results/qc/sub-1_lag_scan.tsv", sep="\t")
    assert not lag["informative"].any()  # repeats of a movie segment share their order: flagged
    # A missing repeat is named before any work.
    cc2017.run_path(root, "1", "seg2", 2, "mni", cfg["dataset"]["cc2017"]["mni_file"]).unlink()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                           "-n", "--configfile", str(path)], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode != 0
    assert "seg2_2_mni.nii.gz: expected repeat 2 of segment seg2 of subject 1 (CC2017 layout)" in proc.stdout + \
        proc.stderr
