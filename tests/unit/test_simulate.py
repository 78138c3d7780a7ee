"""Tests of the demo dataset simulator (fmrivid.simulate).

The simulated data are read back from the files, as downstream steps read
them, and checked with independent computations: nibabel/pandas for the
layout, nilearn's compute_regressor for the lag, numpy split-half reliability
for the planted signal, colour centroids of decoded frames for the motion.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fmrivid.errors import ConfigError
from fmrivid.io.video import read_video
from fmrivid.simulate import plan, simulate_dataset
from fmrivid.simulate import dataset as sim_dataset
from fmrivid.simulate import stimuli as sim_stimuli

DEFAULTS = dict(
    seed=0, n_subjects=2, n_train_clips=48, n_test_clips=12, train_repeats=2, test_repeats=4,
    trials_per_run=24, task="movie", tr=1.0, clip_duration=2.0, isi=4.0, lead_in=4.0, tail=16.0,
    fps=4, size=64, voxel_size_mm=8, signal_percent=2.0, noise_percent=1.0, drift_percent=3.0,
)
# Default signal, noise, drift, timing and grid; fewer clips, shorter runs and smaller frames for speed.
SMALL = dict(DEFAULTS, n_train_clips=32, n_test_clips=4, test_repeats=2, trials_per_run=16, size=32)

SHAPES = {"circle", "square", "triangle", "cross"}
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
TEXTURES = {"plain", "striped", "checkered"}


def _quiet(*_args):
    pass


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    simulate_dataset(root, SMALL, log=_quiet)
    return root


@pytest.fixture(scope="module")
def noiseless(tmp_path_factory):
    root = tmp_path_factory.mktemp("noiseless")
    simulate_dataset(root, dict(SMALL, noise_percent=0.0, drift_percent=0.0), log=_quiet)
    return root


def _bold_path(root, sub, run, task="movie", suffix="bold.nii.gz"):
    return Path(root) / f"sub-{sub}" / "func" / f"sub-{sub}_task-{task}_run-{run}_{suffix}"


def _load_bold(root, sub, run):
    return nib.load(_bold_path(root, sub, run)).get_fdata(dtype=np.float32)


def _events(root, sub, run):
    return pd.read_csv(_bold_path(root, sub, run, suffix="events.tsv"), sep="\t")


def _truth(root, sub):
    return json.loads((Path(root) / "derivatives" / "ground_truth" / f"sub-{sub}_truth.json").read_text())


def _responsive(root, sub):
    return nib.load(Path(root) / "derivatives" / "ground_truth" / f"sub-{sub}_responsive.nii.gz")


def _detrend(ts, order=4):
    """Remove a Legendre polynomial of ``order`` from every column of (T, V)."""
    basis = np.polynomial.legendre.legvander(np.linspace(-1, 1, ts.shape[0]), order)
    return ts - basis @ np.linalg.lstsq(basis, ts, rcond=None)[0]


def _corr_columns(a, b):
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a * b).mean(0)


def _train_samples(root, params, sub, mask):
    """clip id -> list (one per presentation, in run order) of window means at onset + lag_s."""
    pl = plan(params)
    lag, tr = _truth(root, sub)["lag_s"], pl["tr"]
    width = int(round(params["clip_duration"] / tr))
    samples = {}
    for run in pl["train_runs"]:
        ts = _detrend(_load_bold(root, sub, run)[mask].T.astype(np.float64))
        events = _events(root, sub, run)
        for onset, cid in zip(events["onset"], events["clip_id"]):
            first = int(round((onset + lag) / tr))
            samples.setdefault(cid, []).append(ts[first:first + width].mean(0))
    return samples


# ----------------------------------------------------------------------------------------- plan


def test_plan_defaults_counts_and_purity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = dict(DEFAULTS)
    pl = plan(DEFAULTS)
    assert pl == plan(DEFAULTS)
    assert DEFAULTS == before and list(tmp_path.iterdir()) == []
    assert pl["subjects"] == ["01", "02"]
    assert pl["runs"] == ["01", "02", "03", "04", "05", "06"]
    # 48 x 2 training trials / 24 per run = 4 runs, 12 x 4 test trials = 2 runs
    assert pl["train_runs"] == ["01", "02", "03", "04"] and pl["test_runs"] == ["05", "06"]
    assert pl["task"] == "movie" and pl["tr"] == 1.0
    assert pl["clip_ids"][:2] == ["train001", "train002"] and pl["clip_ids"][-1] == "test012"
    assert len(pl["clip_ids"]) == 60
    assert pl["n_volumes"] == int(np.ceil((4.0 + 24 * (2.0 + 4.0) + 16.0) / 1.0))


@pytest.mark.parametrize("change, key", [
    ({"size": 63}, "size"),
    ({"n_train_clips": 190}, "n_train_clips"),
    ({"clip_duration": 2.1}, "clip_duration"),
    ({"tr": 0}, "tr"),
    ({"noise_percent": -1.0}, "noise_percent"),
    ({"n_subjects": 1.5}, "n_subjects"),
])
def test_plan_rejects_bad_params(change, key):
    with pytest.raises(ConfigError, match=key):
        plan(dict(DEFAULTS, **change))


def test_plan_rejects_missing_key():
    params = dict(DEFAULTS)
    del params["isi"]
    with pytest.raises(ConfigError, match="isi"):
        plan(params)


def test_plan_lists_exactly_the_written_files(small):
    pl = plan(SMALL)
    expected = {"dataset_description.json", "participants.tsv", "stimuli/clips.tsv"}
    expected |= {f"stimuli/{cid}.mp4" for cid in pl["clip_ids"]}
    for sub in pl["subjects"]:
        for run in pl["runs"]:
            for suffix in ("bold.nii.gz", "bold.json", "events.tsv"):
                expected.add(f"sub-{sub}/func/sub-{sub}_task-{pl['task']}_run-{run}_{suffix}")
        expected |= {f"derivatives/ground_truth/sub-{sub}_truth.json",
                     f"derivatives/ground_truth/sub-{sub}_responsive.nii.gz"}
    written = {p.relative_to(small).as_posix() for p in small.rglob("*") if p.is_file()}
    assert written == expected  # also: no temporary file left behind
    assert set(sim_dataset.planned_files(SMALL)) == expected


def test_bold_headers_match_sidecars(small):
    pl = plan(SMALL)
    mask_img = _responsive(small, "01")
    for sub in pl["subjects"]:
        for run in pl["runs"]:
            img = nib.load(_bold_path(small, sub, run))
            sidecar = json.loads(_bold_path(small, sub, run, suffix="bold.json").read_text())
            assert img.ndim == 4 and img.shape[3] == pl["n_volumes"]
            assert img.get_data_dtype() == np.float32
            assert sidecar == {"RepetitionTime": pl["tr"], "TaskName": pl["task"]}
            assert img.header.get_zooms() == pytest.approx((8.0, 8.0, 8.0, sidecar["RepetitionTime"]))
            assert img.header.get_xyzt_units() == ("mm", "sec")
            assert np.allclose(img.affine, mask_img.affine) and img.shape[:3] == mask_img.shape


def test_dataset_metadata(small):
    desc = json.loads((small / "dataset_description.json").read_text())
    assert desc["Name"] == "fmrivid demo" and desc["BIDSVersion"] == "1.9.0" and desc["DatasetType"] == "raw"
    participants = pd.read_csv(small / "participants.tsv", sep="\t")
    assert list(participants["participant_id"]) == ["sub-01", "sub-02"]


def test_events_follow_the_schedule(small):
    pl = plan(SMALL)
    step = SMALL["clip_duration"] + SMALL["isi"]
    runs_of = {}
    for run in pl["runs"]:
        ev = _events(small, "01", run)
        assert list(ev.columns) == ["onset", "duration", "trial_type", "clip_id", "stim_file"]
        split = "train" if run in pl["train_runs"] else "test"
        split_runs = pl["train_runs"] if split == "train" else pl["test_runs"]
        assert 1 <= len(ev) <= SMALL["trials_per_run"]
        if run != split_runs[-1]:  # only the last run of a split may be partly filled
            assert len(ev) == SMALL["trials_per_run"]
        assert np.allclose(ev["onset"], SMALL["lead_in"] + step * np.arange(len(ev)))
        assert (ev["duration"] == SMALL["clip_duration"]).all() and (ev["trial_type"] == "clip").all()
        assert (ev["stim_file"] == "stimuli/" + ev["clip_id"] + ".mp4").all()
        assert ev["clip_id"].str.startswith(split).all()
        for cid in ev["clip_id"]:
            runs_of.setdefault(cid, []).append(run)
        # every subject sees the same schedule
        assert _events(small, "02", run).equals(ev)
    for cid in pl["clip_ids"]:
        repeats = SMALL["train_repeats"] if cid.startswith("train") else SMALL["test_repeats"]
        assert len(runs_of[cid]) == repeats
        if cid.startswith("train"):  # 32 clips >= 16 per run: every repeat in its own run
            assert len(set(runs_of[cid])) == repeats


# ------------------------------------------------------------------------------------- stimuli


def test_captions_template_unique_and_splits_disjoint(small):
    table = pd.read_csv(small / "stimuli" / "clips.tsv", sep="\t")
    assert list(table.columns) == ["clip_id", "file", "caption", "split", "shape", "colour", "motion", "texture"]
    assert list(table["clip_id"]) == plan(SMALL)["clip_ids"]
    assert (table["file"] == table["clip_id"] + ".mp4").all()
    assert (table["split"] == table["clip_id"].str.extract(r"^(train|test)")[0]).all()
    assert set(table["shape"]) <= SHAPES and set(table["colour"]) <= set(COLOURS)
    assert set(table["motion"]) <= set(MOTIONS) and set(table["texture"]) <= TEXTURES
    for row in table.itertuples():
        assert row.caption == f"a {row.colour} {row.shape} drifts {row.motion} over a {row.texture} background"
    assert table["caption"].is_unique
    combos = table[["shape", "colour", "motion", "texture"]].apply(tuple, axis=1)
    assert combos.is_unique
    assert not set(combos[table["split"] == "train"]) & set(combos[table["split"] == "test"])


def _centroid(frame, rgb, tol=60):
    hit = np.abs(frame.astype(int) - np.array(rgb)).max(axis=2) < tol
    assert hit.sum() > 10, "shape colour not found in the decoded frame"
    yy, xx = np.nonzero(hit)
    return np.array([xx.mean(), yy.mean()])


def _travel(video, colour, motion):
    """Centroid displacement (px) of the shape colour, first to last frame: (along motion, across)."""
    first, last = _centroid(video[0], COLOURS[colour]), _centroid(video[-1], COLOURS[colour])
    direction = np.array(MOTIONS[motion])
    return (last - first) @ direction, abs((last - first) @ direction[::-1])


def test_clips_shape_and_motion_read_back(small):
    table = pd.read_csv(small / "stimuli" / "clips.tsv", sep="\t")
    n_frames = int(SMALL["clip_duration"] * SMALL["fps"])
    for row in table.itertuples():
        video, fps = read_video(small / "stimuli" / row.file)
        assert video.shape == (n_frames, SMALL["size"], SMALL["size"], 3) and video.dtype == np.uint8
        assert fps == pytest.approx(SMALL["fps"])
        along, across = _travel(video, row.colour, row.motion)
        assert along >= 4.0 and across < 1.5, (row.clip_id, along, across)


def test_default_size_clips_move_2_to_3_px_per_frame(tmp_path):
    from fmrivid.io.video import write_mp4

    frames, size = 8, 64
    clips = sim_stimuli.sample_clips(40, 0, size, frames, np.random.default_rng(5))
    seen = set()
    for clip in clips:
        if clip["motion"] in seen:
            continue
        seen.add(clip["motion"])
        write_mp4(tmp_path / "c.mp4", sim_stimuli.render_clip(clip, size, frames), 4)
        video, _ = read_video(tmp_path / "c.mp4")
        along, across = _travel(video, clip["colour"], clip["motion"])
        assert 2.0 * (frames - 1) <= along <= 3.0 * (frames - 1) and across < 1.5, (clip, along)
    assert seen == set(MOTIONS)


# ---------------------------------------------------------------------------------------- BOLD


def test_determinism_same_seed_identical_other_seed_differs(small, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    simulate_dataset(again, SMALL, log=_quiet)
    simulate_dataset(other, dict(SMALL, seed=1), log=_quiet)
    for rel in sim_dataset.planned_files(SMALL):
        if not rel.endswith(".mp4"):  # NIfTI, JSON and TSV files are byte-identical
            assert (small / rel).read_bytes() == (again / rel).read_bytes(), rel
    for cid in ("train001", "test004"):
        assert np.array_equal(read_video(small / "stimuli" / f"{cid}.mp4")[0],
                              read_video(again / "stimuli" / f"{cid}.mp4")[0])
    assert not np.array_equal(_load_bold(small, "01", "01"), _load_bold(other, "01", "01"))
    clips_a = pd.read_csv(small / "stimuli" / "clips.tsv", sep="\t")
    clips_b = pd.read_csv(other / "stimuli" / "clips.tsv", sep="\t")
    assert not clips_a["caption"].equals(clips_b["caption"])


def test_grid_baseline_and_responsive_mask(noiseless):
    img = _responsive(noiseless, "01")
    resp = np.asarray(img.get_fdata()) > 0
    assert img.get_data_dtype() == np.uint8
    assert np.array_equal(resp, np.asarray(_responsive(noiseless, "02").get_fdata()) > 0)
    data = _load_bold(noiseless, "01", "01")
    brain = data.mean(-1) > 0
    assert (data[~brain] == 0).all()
    baseline = data[brain & ~resp]  # no noise, no drift, no signal: constant baseline
    assert np.array_equal(baseline, np.repeat(baseline[:, :1], data.shape[-1], axis=1))
    assert 590 <= baseline.min() and baseline.max() <= 1010
    assert resp[~brain].sum() == 0 and 100 <= resp.sum() <= 0.3 * brain.sum()
    ijk = np.argwhere(resp)
    y_mm = nib.affines.apply_affine(img.affine, ijk)[:, 1]
    assert (y_mm < -60).all()
    assert _truth(noiseless, "01")["n_responsive"] == resp.sum()


def test_true_lag_matches_nilearn_regressor(small):
    from nilearn.glm.first_level import compute_regressor

    truth = _truth(small, "01")
    tr, dur = SMALL["tr"], SMALL["clip_duration"]
    dt = 0.01
    frame_times = np.arange(0, 40, dt)
    reg, _ = compute_regressor(np.array([[0.0], [dur], [1.0]]), "glover", frame_times, oversampling=1)
    reg = reg[:, 0]
    lags = np.arange(0, 30, tr)
    means = [reg[(frame_times >= lag) & (frame_times < lag + dur)].mean() for lag in lags]
    assert truth["lag_s"] == pytest.approx(lags[int(np.argmax(means))])
    assert truth["tr"] == tr and 4.0 <= truth["hrf_peak_s"] <= 6.0
    assert truth["seed"] == SMALL["seed"] and len(truth["feature_names"]) == 48 + 4 + 4 + 4 + 3


def test_planted_signal_tracks_the_noiseless_truth(small, noiseless):
    resp = np.asarray(_responsive(small, "01").get_fdata()) > 0
    rng = np.random.default_rng(0)
    for run in ("01", "05"):
        measured = _load_bold(small, "01", run)
        brain = measured.mean(-1) > 0
        clean = _detrend(_load_bold(noiseless, "01", run)[resp].T.astype(np.float64))
        r_resp = _corr_columns(_detrend(measured[resp].T.astype(np.float64)), clean)
        others = _detrend(measured[brain & ~resp].T.astype(np.float64))
        paired = clean[:, rng.integers(0, clean.shape[1], others.shape[1])]
        r_other = _corr_columns(others, paired)
        assert np.median(r_resp) > 0.6 and abs(np.median(r_other)) < 0.1
        assert np.percentile(r_resp, 5) > np.percentile(r_other, 95)


def test_split_half_reliability_recovers_responsive_voxels(small):
    resp = np.asarray(_responsive(small, "01").get_fdata()) > 0
    brain = _load_bold(small, "01", "01").mean(-1) > 0
    samples = _train_samples(small, SMALL, "01", brain)
    ids = sorted(samples)
    r = _corr_columns(np.stack([samples[c][0] for c in ids]), np.stack([samples[c][1] for c in ids]))
    # one-sided test of r > 0, Bonferroni over in-brain voxels
    t_crit = stats.t.ppf(1 - 0.05 / brain.sum(), df=len(ids) - 2)
    r_crit = t_crit / np.sqrt(len(ids) - 2 + t_crit**2)
    selected, truth = r > r_crit, resp[brain]
    precision = (selected & truth).sum() / max(selected.sum(), 1)
    recall = (selected & truth).sum() / truth.sum()
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)


def test_subjects_have_their_own_feature_maps(noiseless):
    resp = np.asarray(_responsive(noiseless, "01").get_fdata()) > 0
    per_subject = []
    for sub in ("01", "02"):
        samples = _train_samples(noiseless, SMALL, sub, resp)
        per_subject.append(np.stack([samples[c][0] for c in sorted(samples)]))
    r = _corr_columns(per_subject[0], per_subject[1])
    assert np.median(np.abs(r)) < 0.4


def test_responses_are_driven_by_clip_attributes(noiseless):
    """Noiseless responses sampled at the lag are well explained by the clip attributes (+ colour grid)."""
    resp = np.asarray(_responsive(noiseless, "01").get_fdata()) > 0
    samples = _train_samples(noiseless, SMALL, "01", resp)
    table = pd.read_csv(noiseless / "stimuli" / "clips.tsv", sep="\t").set_index("clip_id")
    ids = sorted(samples)
    y = np.stack([np.mean(samples[c], axis=0) for c in ids])
    attrs = pd.get_dummies(table.loc[ids, ["shape", "colour", "motion", "texture"]]).to_numpy(float)
    design = np.column_stack([np.ones(len(ids)), attrs])

    def median_r2(x):
        fit = x @ np.linalg.lstsq(x, y, rcond=None)[0]
        return np.median(1 - ((y - fit) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0))

    shuffled = design[np.random.default_rng(0).permutation(len(ids))]  # same design, clips mismatched
    assert median_r2(design) > 0.7 and median_r2(design) > median_r2(shuffled) + 0.3


# ----------------------------------------------------------------------------- the CC2017-layout fixture writer
def test_cc2017_design_fractions_keep_the_real_repeats_and_enough_segments():
    from fmrivid.simulate import cc2017_fixture as fx

    assert fx.design(1) == fx.REAL_DESIGN == {"train_segments": 18, "test_segments": 5, "train_repeats": 2,
                                              "test_repeats": 10}
    for fraction in (0.01, 0.25, 1 / 3, 0.5):
        d = fx.design(fraction)
        assert (d["train_repeats"], d["test_repeats"]) == (2, 10)
        assert d["train_segments"] >= 2 and d["test_segments"] >= 1  # the segment-wise t-test needs 2 segments
        assert abs(d["train_segments"] - 18 * fraction) <= max(0.5, 2 - 18 * fraction)
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ConfigError, match="fraction"):
            fx.design(bad)
    # 36 training runs of 245 volumes, test1 x 10 of 245, test2..5 x 10 of 246: 86 runs, 91,282 float32 each
    data = (46 * 245 + 40 * 246) * 91282 * 4
    assert data < fx.fixture_bytes(**fx.design(1)) < data + 86 * 10**6
    assert 7.6e9 < fx.fixture_bytes(**fx.design(1)) < 7.9e9


def test_cc2017_fixture_streams_plants_reuses_and_resumes(tmp_path):
    """Files have the predicted sizes; the planted grayordinates are reliable across repeats and nothing else is;
    a complete fixture is reused untouched; a missing run is rewritten with the same bytes; other arguments on the
    same root are refused."""
    from fmrivid.errors import InputError
    from fmrivid.io import cc2017
    from fmrivid.simulate import cc2017_fixture as fx

    kw = {"subjects": ("1",), "train_segments": 1, "test_segments": 1, "train_repeats": 2, "test_repeats": 1,
          "fps": 2, "size": 16, "n_planted": 300, "signal": 1.0, "seed": 3}
    messages = []
    ds = fx.write_cc2017_fixture(tmp_path, log=messages.append, **kw)
    assert ds["cc2017"] == {"space": "cifti", "train_segments": 1, "test_segments": 1, "train_repeats": 2,
                            "test_repeats": 1, "fps": 2}
    manifest = json.loads((tmp_path / fx.MANIFEST).read_text())
    runs = [cc2017.run_path(tmp_path, "1", "seg1", r) for r in (1, 2)] + [cc2017.run_path(tmp_path, "1", "test1", 1)]
    assert sorted(manifest["files"]) == sorted(
        [str(p.relative_to(tmp_path)) for p in runs] + ["stimuli/seg1.mp4", "stimuli/test1.mp4"])
    for path in runs:
        assert path.stat().st_size == fx.run_bytes(245)
    assert any("GB" in m for m in messages)  # progress

    a, b = (np.asarray(nib.load(str(p)).get_fdata(dtype=np.float32)) for p in runs[:2])
    assert a.shape == (245, 91282)
    t = np.c_[np.ones(240), np.arange(240)]
    a, b = (x[3:243] - t @ np.linalg.lstsq(t, x[3:243], rcond=None)[0] for x in (a, b))  # lagged response, detrended
    r = _corr_columns(a, b)
    assert np.median(r[:300]) > 0.35 and np.abs(np.median(r[300:])) < 0.02 and np.percentile(r[300:], 99.9) < 0.3

    mtimes = {p: p.stat().st_mtime_ns for p in runs}
    messages.clear()
    fx.write_cc2017_fixture(tmp_path, log=messages.append, **kw)
    assert {p: p.stat().st_mtime_ns for p in runs} == mtimes and "reusing" in messages[0]

    before = runs[1].read_bytes()
    runs[1].unlink()
    fx.write_cc2017_fixture(tmp_path, log=messages.append, **kw)
    assert runs[1].read_bytes() == before and runs[0].stat().st_mtime_ns == mtimes[runs[0]]

    with pytest.raises(InputError, match="fixture_manifest"):
        fx.write_cc2017_fixture(tmp_path, log=_quiet, **dict(kw, signal=2.0))
