import numpy as np
import pandas as pd
import pytest
from nilearn import signal

import fmrivid.config as fc
from fmrivid.errors import InputError
from fmrivid.io import bids
from fmrivid.preprocess import average_repeats, detrend_standardize, event_samples, select_voxels
from fmrivid.preprocess.pipeline import preprocess_subject, read_subject, write_subject
from fmrivid.preprocess.samples import window_volumes


@pytest.mark.parametrize("order", [1, 2, 4])
def test_detrend_matches_nilearn(order):
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1, 120)[:, None]
    data = (rng.normal(size=(120, 300)) + 5 * t ** 2 - 3 * t + 100).astype(np.float32)
    ours = detrend_standardize(data, order=order, standardize="zscore_sample")
    # nilearn's own detrend is linear only: the polynomial terms go in as confounds (with the constant).
    t = np.linspace(-1, 1, 120)[:, None]
    confounds = np.hstack([t ** k for k in range(order + 1)])
    with pytest.warns(UserWarning, match="confounds"):
        ref = signal.clean(data.astype(np.float64), detrend=False, confounds=confounds,
                           standardize="zscore_sample", standardize_confounds=False)
    assert np.max(np.abs(ours - ref)) < 1e-4
    assert np.allclose(ours.mean(0), 0, atol=1e-5) and np.allclose(ours.std(0, ddof=1), 1, atol=1e-4)


def test_detrend_removes_planted_polynomial():
    t = np.linspace(-1, 1, 80)[:, None]
    drift = 3 * t ** 3 - t + 2
    out = detrend_standardize(np.repeat(drift, 4, 1), order=3, standardize="none")
    assert np.abs(out).max() < 1e-4
    out2 = detrend_standardize(np.repeat(drift, 4, 1), order=1, standardize="none")
    assert np.abs(out2).max() > 0.1  # order 1 cannot remove a cubic


def test_window_volumes_and_lag():
    assert window_volumes(10.0, 2.0, 4.0, 1.0, 100).tolist() == [14, 15]
    assert window_volumes(10.0, 2.0, 4.0, 2.0, 100).tolist() == [7]
    assert window_volumes(10.0, 0.5, 0.0, 2.0, 100).tolist() == [5]
    with pytest.raises(InputError, match="a run of 15 volumes"):
        window_volumes(10.0, 2.0, 4.0, 1.0, 15, source="ev.tsv")


def test_event_samples_pick_the_lagged_volumes():
    data = np.arange(30, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    ev = pd.DataFrame({"onset": [2.0, 10.0], "duration": [2.0, 2.0], "clip_id": ["a", "b"]})
    x, ids, kept = event_samples(data, ev, tr=1.0, lag_s=4.0)
    assert ids == ["a", "b"] and np.allclose(x[:, 0], [6.5, 14.5])
    avg, uids = average_repeats(np.array([[1.0], [3.0], [10.0]]), ["b", "b", "a"])
    assert uids == ["a", "b"] and np.allclose(avg[:, 0], [10.0, 2.0])


def test_reliability_selection_recovers_planted_voxels():
    rng = np.random.default_rng(2)
    n_clips, n_vox = 40, 200
    truth = np.zeros(n_vox, bool)
    truth[:30] = True
    clip_resp = rng.normal(size=(n_clips, n_vox)) * truth
    reps = [clip_resp + rng.normal(0, 0.7, clip_resp.shape) for _ in range(2)]
    samples = np.concatenate(reps)
    ids = [f"c{i}" for i in range(n_clips)] * 2
    keep, score, info = select_voxels(samples, ids, "reliability", p_threshold=0.05, min_voxels=5)
    precision = (keep & truth).sum() / keep.sum()
    recall = (keep & truth).sum() / truth.sum()
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    keep_snr, _, _ = select_voxels(samples, ids, "snr", top_percent=15, min_voxels=5)
    assert keep_snr.sum() == 30 and (keep_snr & truth).sum() >= 27
    # Pure noise: nothing passes Bonferroni, the fallback keeps min_voxels and says so.
    msgs = []
    keep0, _, info0 = select_voxels(rng.normal(size=(80, 50)), ids, "reliability", min_voxels=7, log=msgs.append)
    assert keep0.sum() == 7 and info0["fallback_top_k"] == 7 and "only" in msgs[0]


def _preprocess_cfg(**over):
    cfg = fc.validate({"preprocess": over})["preprocess"]
    return cfg


def _subject_inputs(tiny_bids):
    root = tiny_bids["root"]
    runs = [bids.run_paths(root, "01", "movie", r) for r in tiny_bids["runs"]]
    table = bids.read_stimulus_table(root / "stimuli" / "clips.tsv")
    splits = dict(zip(table.clip_id, table.split))
    return runs, splits, _preprocess_cfg(detrend_order=1, mask_threshold=0.5, selection={"min_voxels": 5})


def test_preprocess_subject_end_to_end(tiny_bids, tmp_path):
    runs, splits, cfg = _subject_inputs(tiny_bids)
    sd = preprocess_subject(runs, splits, 1.0, cfg, log=lambda m: None)
    assert sd.train_ids == sorted(tiny_bids["train"]) and sd.test_ids == sorted(tiny_bids["test"])
    selected = np.zeros(tiny_bids["responsive"].shape, bool)
    selected[tuple(sd.ijk.T)] = True
    truth = tiny_bids["responsive"]
    assert (selected & truth).sum() / selected.sum() >= 0.8
    assert (selected & truth).sum() / truth.sum() >= 0.8
    write_subject(tmp_path / "s.h5", sd)
    back = read_subject(tmp_path / "s.h5")
    assert np.array_equal(back["test_X"], sd.test_X) and back["info"]["lag_s"] == 4.0


def test_test_data_does_not_change_selection(tiny_bids):
    """Selection and training samples are computed from training runs only."""
    runs, splits, cfg = _subject_inputs(tiny_bids)
    a = preprocess_subject(runs, splits, 1.0, cfg, log=lambda m: None)
    # Overwrite the test run with different noise: training outputs must not move.
    import nibabel as nib
    img = nib.load(runs[2].bold)
    arr = np.asarray(img.dataobj) + np.random.default_rng(9).normal(0, 5, img.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(arr.astype(np.float32), img.affine, img.header), runs[2].bold)
    b = preprocess_subject(runs, splits, 1.0, cfg, log=lambda m: None)
    assert np.array_equal(a.ijk, b.ijk) and np.array_equal(a.train_X, b.train_X)
    assert not np.array_equal(a.test_X, b.test_X)


def test_unknown_clip_in_events_named(tiny_bids):
    root = tiny_bids["root"]
    runs = [bids.run_paths(root, "01", "movie", r) for r in tiny_bids["runs"]]
    with pytest.raises(InputError, match=r"run-01_events\.tsv: expected clip ids listed in the stimulus table"):
        preprocess_subject(runs, {"te00": "test"}, 1.0, _preprocess_cfg(), log=lambda m: None)


def test_masked_detrend_zscore_parity_with_nilearn_masker(tmp_path):
    """load_masked + detrend_standardize == NiftiMasker(zscore_sample) with order-4 polynomial confounds, to 1e-5.

    Uncompressed .nii exercises the volume-by-volume memory-mapped path. nilearn runs in float64 here: its
    default float32 path is itself ~4e-5 from the exact float64 answer, ours ~1e-6.
    """
    import warnings

    import nibabel as nib
    from nilearn.maskers import NiftiMasker

    from fmrivid.io import nifti

    rng = np.random.default_rng(0)
    shape, n_t = (12, 11, 10), 245
    mask = np.zeros(shape, bool)
    mask[2:10, 2:9, 1:9] = True
    t = np.linspace(-1, 1, n_t)
    data = (rng.uniform(600, 1000, shape)[..., None] + 20 * rng.normal(size=shape + (n_t,))
            + 30 * t ** 2 - 15 * t ** 3 + 10 * t).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.header.set_zooms((2.0, 2.0, 2.0, 2.0))
    nib.save(img, tmp_path / "run_bold.nii")
    ours = detrend_standardize(nifti.load_masked(tmp_path / "run_bold.nii", mask), 4, "zscore_sample", inplace=True)
    confounds = np.vander(t, 5, increasing=True)[:, 1:]  # t, t^2, t^3, t^4 (nilearn removes the mean itself)
    masker = NiftiMasker(nib.Nifti1Image(mask.astype(np.uint8), img.affine), standardize="zscore_sample",
                         detrend=False, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = masker.fit_transform(tmp_path / "run_bold.nii", confounds=confounds)
    assert ours.shape == ref.shape == (n_t, int(mask.sum()))
    assert np.abs(ours - ref).max() < 1e-5
    # A planted cubic drift is gone and every voxel is standardised.
    assert np.allclose(ours.mean(0), 0, atol=1e-5) and np.allclose(ours.std(0, ddof=1), 1, atol=1e-5)
