"""The science works on the simulated demo data: stages chained as the workflow chains them.

simulate -> splits -> preprocess -> caption embeddings (real MiniLM) -> ridge decoding -> 2-way identification.
"""

import json

import nibabel as nib
import numpy as np
import pytest

import fmrivid.config as fc
from fmrivid.decoders import stages as decoders_stages
from fmrivid.features import stages as features_stages
from fmrivid.preprocess import stages as preprocess_stages
from fmrivid.simulate import stages as simulate_stages
from fmrivid.io.h5 import read_features
from fmrivid.metrics.semantic import two_way_ident
from fmrivid.preprocess.pipeline import read_subject

PARAMS = {"n_subjects": 1, "n_train_clips": 32, "n_test_clips": 8, "test_repeats": 2, "trials_per_run": 16,
          "size": 32}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("planted")
    cfg = fc.validate({"simulate": PARAMS, "preprocess": {"lag_s": 5.0}, "decode": {"cv": 4}})
    root = work / "bids"
    quiet = lambda m: None  # noqa: E731
    simulate_stages.simulate_demo(root, cfg["simulate"], log=quiet)
    preprocess_stages.splits(root / "stimuli/clips.tsv", work / "splits.tsv", log=quiet)
    import fmrivid.simulate as sim

    plan = sim.plan(cfg["simulate"])
    func = root / "sub-01" / "func"
    stem = [f"sub-01_task-movie_run-{r}" for r in plan["runs"]]
    preprocess_stages.preprocess([func / f"{s}_bold.nii.gz" for s in stem], [func / f"{s}_bold.json" for s in stem],
                          [func / f"{s}_events.tsv" for s in stem], plan["runs"], "01", plan["tr"],
                          work / "splits.tsv", cfg["preprocess"], work / "sub-01.h5", work / "qc.png", log=quiet)
    features_stages.text_features(work / "splits.tsv", "minilm", 32, "cpu", 0, work / "text.h5", log=quiet)
    decoders_stages.decode(work / "sub-01.h5", work / "text.h5", cfg["decode"], work / "ridge.safetensors",
                      work / "pred.h5", log=quiet)
    return {"work": work, "root": root}


def test_selected_voxels_are_the_planted_ones(demo):
    truth = nib.load(demo["root"] / "derivatives/ground_truth/sub-01_responsive.nii.gz").get_fdata() > 0
    sub = read_subject(demo["work"] / "sub-01.h5")
    selected = np.zeros(truth.shape, bool)
    selected[tuple(sub["ijk"].T)] = True
    precision = (selected & truth).sum() / selected.sum()
    recall = (selected & truth).sum() / truth.sum()
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)
    assert (demo["work"] / "qc.png").stat().st_size > 10_000


def test_decoded_captions_identify_test_clips(demo):
    ids, pred, attrs = read_features(demo["work"] / "pred.h5")
    assert all(i.startswith("test") for i in ids)  # predictions are for test clips only
    _, true, _ = read_features(demo["work"] / "text.h5", ids)
    acc = two_way_ident(pred, true)
    rng = np.random.default_rng(0)
    control = two_way_ident(pred, true[rng.permutation(len(ids))[::-1]])
    assert acc.mean() >= 0.85, acc
    assert acc.mean() > control.mean() + 0.2
    assert json.loads(attrs["alphas_chosen"])


def test_truth_lag_is_within_one_tr_of_the_config(demo):
    truth = json.loads((demo["root"] / "derivatives/ground_truth/sub-01_truth.json").read_text())
    assert abs(truth["lag_s"] - 5.0) <= truth["tr"]
