"""Each preprocessing option (trimming, HRF alignment, windows, repeats, selection variants) on planted data."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import REPO
import fmrivid.config as fc
from fmrivid.errors import InputError
from fmrivid.io import bids
from fmrivid.preprocess.lagscan import identification, shared_order
from fmrivid.preprocess.pipeline import preprocess_subject
from fmrivid.preprocess.samples import event_samples, hrf_weights, trim_amounts
from fmrivid.preprocess.select import roi_from_atlas, segment_reliability_scores, select_voxels

QUIET = lambda m: None  # noqa: E731


def _cfg(**over):
    base = {"detrend_order": 1, "mask_threshold": 0.5, "selection": {"min_voxels": 5}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return fc.validate({"preprocess": base})["preprocess"]


def _inputs(tiny_bids):
    root = tiny_bids["root"]
    runs = [bids.run_paths(root, "01", "movie", r) for r in tiny_bids["runs"]]
    table = bids.read_stimulus_table(root / "stimuli" / "clips.tsv")
    return runs, dict(zip(table.clip_id, table.split))


def _precision_recall(sd, truth):
    sel = np.zeros(truth.shape, bool)
    sel[tuple(sd.ijk.T)] = True
    hit = (sel & truth).sum()
    return hit / sel.sum(), hit / truth.sum()


def test_trim_presets():
    assert trim_amounts(245, {"preset": "cc2017"}) == (1, 4)
    assert trim_amounts(246, {"preset": "cc2017"}) == (2, 4)
    assert trim_amounts(100, {"preset": "none", "first": 3, "last": 2}) == (3, 2)
    with pytest.raises(InputError, match="expected 245 or 246 volumes"):
        trim_amounts(244, {"preset": "cc2017"}, source="x.nii")


def test_trimming_keeps_events_aligned(tiny_bids):
    """Dropping volumes at the start shifts the data; onsets (from the untrimmed start) follow."""
    runs, splits = _inputs(tiny_bids)
    full = preprocess_subject(runs, splits, 1.0, _cfg(), log=QUIET, lag_scan=False)
    trimmed = preprocess_subject(runs, splits, 1.0, _cfg(trim={"first": 3, "last": 2}), log=QUIET,
                                 lag_scan=False)
    assert trimmed.info["trim"][0][1:] == [3, 2]
    assert np.array_equal(full.ijk, trimmed.ijk)  # the same planted voxels are found
    r = np.corrcoef(full.train_X.ravel(), trimmed.train_X.ravel())[0, 1]
    assert r > 0.95, r  # same samples up to the slightly different detrend/z-score
    with pytest.raises(InputError, match=r"expected event onsets at or after the first kept volume \(5 s"):
        preprocess_subject(runs, splits, 1.0, _cfg(trim={"first": 5}), log=QUIET, lag_scan=False)


def test_hrf_alignment_recovers_planted_amplitudes():
    """BOLD = sum of Glover-convolved boxcars scaled by hidden amplitudes: the HRF-weighted samples track them."""
    from nilearn.glm.first_level import compute_regressor

    rng = np.random.default_rng(3)
    tr, n_vol, n_ev = 1.0, 400, 30
    onsets = 5.0 + 12.0 * np.arange(n_ev)
    amps = rng.normal(size=n_ev)
    frame_times = np.arange(n_vol) * tr
    bold = np.zeros(n_vol)
    for on, a in zip(onsets, amps):
        reg, _ = compute_regressor(np.array([[on], [2.0], [1.0]]), "spm", frame_times, oversampling=20)
        bold += a * reg[:, 0]
    data = (bold + rng.normal(0, 0.05, n_vol))[:, None].astype(np.float32)
    ev = pd.DataFrame({"onset": onsets, "duration": 2.0, "clip_id": [f"c{i}" for i in range(n_ev)]})
    x_hrf, ids, _ = event_samples(data, ev, tr, 0.0, alignment="hrf", hrf_model="spm")
    x_lag0, _, _ = event_samples(data, ev, tr, 0.0)
    assert ids == list(ev.clip_id)
    assert np.corrcoef(x_hrf[:, 0], amps)[0, 1] > 0.95
    assert np.corrcoef(x_lag0[:, 0], amps)[0, 1] < 0.5  # no lag: the response has not arrived yet
    w = hrf_weights(10.0, 2.0, tr, n_vol, "glover")
    assert abs(w.sum() - 1) < 1e-9 and 14 <= int(np.argmax(w)) <= 17  # peak ~5 s after a 2-s event at 10 s
    with pytest.raises(InputError, match="glover response to the event at onset 396 s"):
        hrf_weights(396.0, 2.0, tr, n_vol, "glover", source="ev.tsv")


def test_windows_of_n_trs_and_out_of_run_drop():
    data = np.arange(40, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    ev = pd.DataFrame({"onset": [2.0, 10.0, 37.0], "duration": 2.0, "clip_id": ["a", "b", "c"]})
    x, ids, kept = event_samples(data, ev, 1.0, 4.0, window_trs=3, out_of_run="drop")
    assert x.shape == (2, 3, 2) and ids == ["a", "b"] and kept.tolist() == [0, 1]
    assert x[0, :, 0].tolist() == [6.0, 7.0, 8.0] and x[1, :, 0].tolist() == [14.0, 15.0, 16.0]
    with pytest.raises(InputError, match=r"found a run of 40 volumes"):
        event_samples(data, ev, 1.0, 4.0, window_trs=3)


def test_windowed_samples_through_the_pipeline(tiny_bids):
    runs, splits = _inputs(tiny_bids)
    sd = preprocess_subject(runs, splits, 1.0, _cfg(window_trs=2), log=QUIET, lag_scan=False)
    n_sel = len(sd.ijk)
    assert sd.train_X.shape == (12, 2 * n_sel) and sd.test_X.shape == (4, 2 * n_sel)
    assert sd.info["window_trs"] == 2
    assert min(_precision_recall(sd, tiny_bids["responsive"])) >= 0.8


def test_per_repeat_training_samples(tiny_bids):
    runs, splits = _inputs(tiny_bids)
    avg = preprocess_subject(runs, splits, 1.0, _cfg(), log=QUIET, lag_scan=False)
    per = preprocess_subject(runs, splits, 1.0, _cfg(average_train_repeats=False), log=QUIET, lag_scan=False)
    assert per.train_X.shape[0] == 24 and avg.train_X.shape[0] == 12
    assert len(per.test_ids) == 4  # test repeats are always averaged
    i = per.train_ids.index("tr03")
    j = [k for k, c in enumerate(per.train_ids) if c == "tr03"]
    assert len(j) == 2 and i == j[0]
    assert np.allclose(per.train_X[j].mean(0), avg.train_X[avg.train_ids.index("tr03")], atol=1e-5)


def _planted_groups(rng, n_groups=6, clips_per_group=40, n_vox=300, n_true=40, noise=1.0):
    truth = np.zeros(n_vox, bool)
    truth[:n_true] = True
    samples, ids, groups = [], [], []
    for g in range(n_groups):
        resp = rng.normal(size=(clips_per_group, n_vox)) * truth
        for rep in range(2):
            samples.append(resp + rng.normal(0, noise, resp.shape))
            ids += [f"g{g}c{i}" for i in range(clips_per_group)]
            groups += [f"seg{g}"] * clips_per_group
    return np.concatenate(samples), ids, groups, truth


def test_segment_reliability_is_fisher_z_t_test_across_groups():
    rng = np.random.default_rng(5)
    samples, ids, groups, truth = _planted_groups(rng, noise=0.5)
    z, p, n = segment_reliability_scores(samples, ids, groups)
    # Reference: per group, r between repeat 1 and 2 over its clips; Fisher z; one-sided one-sample t-test.
    ids_a, groups_a = np.asarray(ids), np.asarray(groups)
    zs = []
    for g in sorted(set(groups)):
        rows = np.flatnonzero(groups_a == g)
        a, b = samples[rows[:40]], samples[rows[40:]]
        assert (ids_a[rows[:40]] == ids_a[rows[40:]]).all()
        zs.append(np.arctanh([np.corrcoef(a[:, v], b[:, v])[0, 1] for v in range(a.shape[1])]))
    ref = stats.ttest_1samp(np.array(zs), 0.0, alternative="greater")
    assert n == 6 and np.allclose(z, np.mean(zs, 0)) and np.allclose(p, ref.pvalue, rtol=1e-6)
    keep, score, info = select_voxels(samples, ids, "reliability", groups=groups, reliability_groups="segment",
                                      min_voxels=5)
    assert info["n_groups"] == 6 and (keep & truth).sum() / keep.sum() >= 0.9 and (keep & truth).sum() >= 36


def test_top_k_and_roi_restrict_selection(tmp_path):
    rng = np.random.default_rng(6)
    samples, ids, groups, truth = _planted_groups(rng, n_groups=2)
    keep, _, info = select_voxels(samples, ids, "reliability", top_k=25, min_voxels=5)
    assert keep.sum() == 25 and (keep & truth).sum() == 25 and info["top_k"] == 25
    roi = np.zeros(truth.size, bool)
    roi[20:200] = True  # half the planted voxels lie outside
    keep, _, info = select_voxels(samples, ids, "reliability", roi=roi, min_voxels=5)
    assert not (keep & ~roi).any() and (keep & truth).sum() >= 18 and info["n_candidates"] == 180
    keep, _, _ = select_voxels(samples, ids, "snr", top_percent=10, roi=roi, min_voxels=5)
    assert keep.sum() == 18 and not (keep & ~roi).any()


def test_roi_mask_from_atlas_by_path(tiny_bids, tmp_path):
    """A label atlas on a finer grid is resampled to the data grid; only its labelled voxels are candidates."""
    runs, splits = _inputs(tiny_bids)
    data_img = nib.load(runs[0].bold)
    fine = np.zeros((12, 10, 8), np.int16)
    fine[:4] = 7  # x-voxels 0-1 of the data grid (3 mm voxels; atlas at 1.5 mm)
    fine[4:8] = 3
    affine = data_img.affine.copy()
    affine[:3, :3] /= 2
    affine[:3, 3] -= 0.75
    atlas = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(fine, affine), atlas)
    roi = roi_from_atlas(atlas, [7], nib.Nifti1Image(np.zeros(data_img.shape[:3]), data_img.affine))
    assert roi[:2].all() and not roi[2:].any()
    sd = preprocess_subject(runs, splits, 1.0, _cfg(selection={"roi_mask": str(atlas), "roi_labels": [3]}),
                            log=QUIET, lag_scan=False)
    assert set(sd.ijk[:, 0].tolist()) <= {2, 3} and sd.info["roi_voxels"] > 0
    with pytest.raises(InputError, match=r"nope\.nii\.gz: expected an atlas/ROI image"):
        roi_from_atlas(tmp_path / "nope.nii.gz", [], data_img)


def test_repeat_identification_helpers():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(20, 100))
    b = a + rng.normal(0, 0.5, a.shape)
    margin, top1 = identification(a, b)
    assert margin > 0.5 and top1 == 1.0
    margin0, _ = identification(a, rng.normal(size=a.shape))
    assert abs(margin0) < 0.1
    ev1 = pd.DataFrame({"onset": [0, 1, 2], "clip_id": ["x", "y", "z"]})
    ev2 = pd.DataFrame({"onset": [0, 1, 2], "clip_id": ["z", "x", "y"]})
    assert shared_order([(None, ev1, ""), (None, ev1, "")]) and not shared_order([(None, ev1, ""), (None, ev2, "")])


def test_example_bids_config_validates():
    cfg = fc.load(REPO / "config" / "bids.yaml")
    assert cfg["dataset"]["layout"] == "bids" and cfg["preprocess"]["detrend_order"] == 4


def test_hrf_alignment_through_the_pipeline(tiny_bids):
    runs, splits = _inputs(tiny_bids)
    sd = preprocess_subject(runs, splits, 1.0, _cfg(alignment="hrf", hrf_model="glover"), log=QUIET, lag_scan=False)
    assert sd.info["alignment"] == "hrf" and sd.train_X.shape[0] == 12
    precision, recall = _precision_recall(sd, tiny_bids["responsive"])
    # The fixture's response is a 2-s box 4 s after onset, not HRF-shaped: the HRF weights (which spread over
    # ~2-12 s) still find only planted voxels, and far more of them than samples taken without a lag.
    no_lag = preprocess_subject(runs, splits, 1.0, _cfg(lag_s=0.0), log=QUIET, lag_scan=False)
    assert precision >= 0.9 and recall > _precision_recall(no_lag, tiny_bids["responsive"])[1] + 0.3
