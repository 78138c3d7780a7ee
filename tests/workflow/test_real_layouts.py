"""Real data as users hold it, through real Snakemake runs: presets layered with a dataset file and tiny models.

- a wild BIDS dataset (stim_file events, inherited sidecar, .nii and .nii.gz, no stimulus table) runs its whole
  DAG to report.zip from config/bids.yaml + a file that sets only `dataset` (+ the tiny-model overlay);
- fMRIPrep derivatives with two sessions plan their whole DAG and preprocess with confound regression;
- the CC2017 preset plans every rule on a CC2017 fixture and yields 240 samples per segment;
- none of them inherits the demo's decoders, generator, classifier or surface maps.
"""

import re
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from fmrivid.preprocess.pipeline import read_subject
from fmrivid.simulate import bids_fixtures
from fmrivid.simulate.cc2017_fixture import write_cc2017_fixture
from conftest import REPO
from test_workflow import smk

pytestmark = pytest.mark.workflow

TINY = REPO / "config/rehearsal/tiny_models.yaml"
DEMO_ONLY = {"simulate_demo", "train_demo_vae", "train_demo_unet", "train_demo_classifier", "neural_decode",
             "align_decode", "encoder_model", "surface", "decoder_curves", "training_curves"}


def planned(workdir, *configs, target=()):
    proc = smk(workdir, "-n", *target, "--configfile", *map(str, configs))
    stats = proc.stdout.split("Job stats:")[1].split("total")[0]
    return dict((name, int(n)) for name, n in re.findall(r"^(\w+)\s+(\d+)\s*$", stats, flags=re.M))


def dataset_file(folder, dataset):
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump({"results_dir": "results", "dataset": dataset}))
    return path


def test_wild_bids_whole_dag_to_report(tmp_path):
    """stim_file events, a top-level sidecar, .nii runs, no clips.tsv: the whole DAG from `dataset` alone."""
    dataset = bids_fixtures.write_bids_wild(tmp_path / "data")
    ds_yaml = dataset_file(tmp_path, dataset)
    layers = (REPO / "config/bids.yaml", ds_yaml, TINY)
    jobs = planned(tmp_path, *layers)
    assert not DEMO_ONLY & set(jobs), DEMO_ONLY & set(jobs)  # nothing of the demo preset reaches a user config
    assert jobs["stimulus_table"] == 1 and jobs["preprocess"] == 2 and jobs["generate_chunk"] == 4
    # CI time: smaller frames and no shuffled control (a fourth layer, as a user would add one)
    fast = tmp_path / "fast.yaml"
    fast.write_text(yaml.safe_dump({"features": {"n_frames": 4, "size": 32},
                                    "generate": {"shuffled_control": False,
                                                 "pipeline": {"num_frames": 4, "height": 32, "width": 32}}}))
    layers = (*layers, fast)
    smk(tmp_path, "--cores", "2", "--configfile", *map(str, layers))
    smk(tmp_path, "--cores", "2", "--configfile", *map(str, layers), "--report", "results/report.zip")
    res = tmp_path / "results"
    table = pd.read_csv(res / "stimuli/clips.tsv", sep="\t")
    assert (table["split"] == "test").sum() == 4 and (table["split"] == "train").sum() == 16  # from repeats
    sub = read_subject(res / "fmri/sub-01.h5")
    assert len(sub["train_ids"]) == 16 and len(sub["test_ids"]) == 4
    metrics = pd.read_csv(res / "tables/metrics.tsv", sep="\t")
    assert "text_to_video" in set(metrics["method"].dropna())
    prov = yaml.safe_load((res / "report/provenance.yaml").read_text())
    assert [p.rsplit("/", 1)[-1] for p in prov["config_files"]] == ["bids.yaml", "dataset.yaml", "tiny_models.yaml",
                                                                     "fast.yaml"]
    assert prov["config"]["generate"]["method"] == "text_to_video" and prov["config"]["decode"]["neural"] == []
    with zipfile.ZipFile(res / "report.zip") as z:
        assert any(n.endswith("provenance.yaml") for n in z.namelist())
    assert "Nothing to be done" in smk(tmp_path, "-n", "--configfile", *map(str, layers)).stdout


def test_fmriprep_two_sessions_plan_and_preprocess(tmp_path):
    """fMRIPrep derivatives (space-/desc-preproc, sessions, confounds): the whole DAG plans; preprocess regresses
    the confounds and the planted signal survives."""
    raw, deriv = tmp_path / "data", tmp_path / "data/derivatives/fmriprep"
    dataset = bids_fixtures.write_fmriprep(raw, deriv)
    ds_yaml = dataset_file(tmp_path, dataset)
    layers = (REPO / "config/fmriprep.yaml", ds_yaml, TINY)
    jobs = planned(tmp_path, *layers)
    assert not DEMO_ONLY & set(jobs) and jobs["preprocess"] == 2 and "evaluate" in jobs
    smk(tmp_path, "--cores", "2", "results/fmri/sub-01.h5", "--configfile", *map(str, layers))
    sub = read_subject(tmp_path / "results/fmri/sub-01.h5")
    labels = [label for label, *_ in sub["info"]["trim"]]
    assert labels == ["ses-1_run-01", "ses-1_run-02", "ses-2"]
    assert len(sub["test_ids"]) == 4 and sub["train_X"].shape[1] >= 20
    log = (tmp_path / "results/logs/preprocess_sub-01.log").read_text()
    assert "confounds" in log


def test_cc2017_preset_plans_every_rule_and_keeps_240_samples_per_segment(tmp_path):
    """config/cc2017.yaml with only dataset.root (and the design's counts) changed, on a CC2017-layout fixture."""
    dataset = write_cc2017_fixture(tmp_path / "data", subjects=("1",), train_segments=2, test_segments=1,
                                   test_repeats=2, fps=10, size=32, log=lambda m: None)
    ds = {"root": dataset["root"], "subjects": ["1"], "cc2017": dataset["cc2017"]}
    ds_yaml = dataset_file(tmp_path, ds)
    layers = (REPO / "config/cc2017.yaml", ds_yaml, TINY)
    jobs = planned(tmp_path, *layers)
    assert jobs["stimulus_table"] == 1 and jobs["frames"] == 1 and "provenance" in jobs  # the clip table is a rule
    assert not DEMO_ONLY & set(jobs)
    smk(tmp_path, "--cores", "2", "results/fmri/sub-1.h5", "--configfile", *map(str, layers))
    sub = read_subject(tmp_path / "results/fmri/sub-1.h5")
    segments = pd.Series([c.rsplit("_", 1)[0] for c in sub["train_ids"] + sub["test_ids"]]).value_counts()
    assert segments.to_dict() == {"seg1": 240, "seg2": 240, "test1": 240}  # lag read the trailing volumes first
    assert sub["space"] == "cifti" and np.all(sub["grayordinate"] < 59412)
    table = pd.read_csv(tmp_path / "results/stimuli/clips.tsv", sep="\t")
    assert len(table) == 720 and table["file"].str.endswith(("seg1.mp4", "seg2.mp4", "test1.mp4")).all()
    # The seed recipes that run on the demo data (tests/workflow/test_recipes.py) plan on CC2017 too, each with its
    # own methods (generation variants) and decoders.
    for recipe, methods, decoders in (("mind_animator", {"mind_animator"}, {"semantic", "structure", "motion"}),
                                      ("audio_guided", {"fusion", "fmri_only"}, {"fusion"}),
                                      ("neuroclips", {"neuroclips"}, {"structure", "motion"})):
        proc = smk(tmp_path, "-n", "--configfile", str(REPO / "config/cc2017.yaml"), str(ds_yaml),
                   str(REPO / f"config/recipes/{recipe}.yaml"), str(TINY))
        for m in methods:
            assert f"results/recon/{m}/sub-1.h5" in proc.stdout, (recipe, m)
        for d in decoders:
            assert f"results/predictions/{d}/sub-1_" in proc.stdout, (recipe, d)


def test_user_config_without_dataset_root_is_one_clear_line(tmp_path):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"dataset": {"layout": "bids"}}))
    proc = smk(tmp_path, "-n", "--configfile", str(tmp_path / "mine.yaml"), check=False)
    assert proc.returncode != 0
    assert "config key 'dataset.root': expected the folder holding your dataset" in proc.stderr + proc.stdout
