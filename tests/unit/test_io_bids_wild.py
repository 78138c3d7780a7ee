"""BIDS as users hold it: stim_file events, sessions, inherited sidecars, fMRIPrep derivatives, confounds."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmrivid.errors import ConfigError, InputError
from fmrivid.io import bids
from fmrivid.preprocess.clean import detrend_standardize
from fmrivid.preprocess.confounds import confound_matrix, regress_out
from fmrivid.simulate.bids_fixtures import SPACE, write_bids_wild, write_fmriprep


@pytest.fixture(scope="module")
def wild(tmp_path_factory):
    return write_bids_wild(tmp_path_factory.mktemp("wild") / "bids")


@pytest.fixture(scope="module")
def fmriprep(tmp_path_factory):
    base = tmp_path_factory.mktemp("fmriprep")
    return write_fmriprep(base / "raw", base / "raw" / "derivatives" / "fmriprep")


def _touch(root, *names, text=""):
    for name in names:
        path = Path(root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _json(path, obj):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj))


def _events(path, rows, columns):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, sep="\t", index=False)


# ----------------------------------------------------------------------------- events

def test_events_with_stim_file_give_clip_ids_and_drop_other_rows(tmp_path):
    path = tmp_path / "sub-01_task-movie_events.tsv"
    _events(path, [[0.0, 4.0, "fixation", "n/a", "n/a"],
                   [4.0, 2.0, "movie", "movies/clip_017.mp4", "n/a"],
                   [7.5, 0.0, "button", "", "0.41"],
                   [10.0, 2.0, "movie", "clip_003.avi", "n/a"]],
            ["onset", "duration", "trial_type", "stim_file", "response_time"])
    ev = bids.read_events(path)
    assert ev["clip_id"].tolist() == ["clip_017", "clip_003"]
    assert ev["stim_file"].tolist() == ["movies/clip_017.mp4", "clip_003.avi"]
    assert ev["onset"].tolist() == [4.0, 10.0] and ev["duration"].dtype == float


def test_events_clip_id_wins_over_stim_file(tmp_path):
    path = tmp_path / "e.tsv"
    _events(path, [[4.0, 2.0, "a1", "movies/x.mp4"], [10.0, 2.0, "n/a", "movies/y.mp4"], [12.0, 1.0, "n/a", "n/a"]],
            ["onset", "duration", "clip_id", "stim_file"])
    assert bids.read_events(path)["clip_id"].tolist() == ["a1", "y"]


def test_events_without_clip_columns_or_movie_rows_rejected(tmp_path):
    path = tmp_path / "e.tsv"
    _events(path, [[4.0, 2.0, "movie"]], ["onset", "duration", "trial_type"])
    with pytest.raises(InputError, match=r"e\.tsv: expected columns onset, duration and clip_id or stim_file"):
        bids.read_events(path)
    _events(path, [[4.0, 2.0, "n/a"]], ["onset", "duration", "stim_file"])
    with pytest.raises(InputError, match=r"at least one movie event.*every stim_file empty or n/a"):
        bids.read_events(path)
    _events(path, [["n/a", 2.0, "a.mp4"]], ["onset", "duration", "stim_file"])
    with pytest.raises(InputError, match=r"a number in column onset.*'n/a' for clip a"):
        bids.read_events(path)


# ----------------------------------------------------------------------------- discovery

def _sessions_tree(root):
    """sub-01: ses-1 (run-1 .nii.gz, run-2 .nii, run-10), ses-2 (one run, no run entity); other task ignored."""
    _touch(root, "sub-01/ses-1/func/sub-01_ses-1_task-movie_acq-mb4_run-1_bold.nii.gz",
           "sub-01/ses-1/func/sub-01_ses-1_task-movie_acq-mb4_run-2_bold.nii",
           "sub-01/ses-1/func/sub-01_ses-1_task-movie_acq-mb4_run-10_bold.nii.gz",
           "sub-01/ses-2/func/sub-01_ses-2_task-movie_acq-mb4_bold.nii.gz",
           "sub-01/ses-1/func/sub-01_ses-1_task-rest_acq-mb4_bold.nii.gz",
           "sub-01/ses-1/func/sub-01_ses-1_task-movie_acq-mb4_run-1_sbref.nii.gz")
    for name in ("ses-1/func/sub-01_ses-1_task-movie_acq-mb4_run-1", "ses-1/func/sub-01_ses-1_task-movie_acq-mb4_run-2",
                 "ses-1/func/sub-01_ses-1_task-movie_acq-mb4_run-10", "ses-2/func/sub-01_ses-2_task-movie_acq-mb4"):
        _events(root / "sub-01" / f"{name}_events.tsv", [[4.0, 2.0, "c.mp4"]], ["onset", "duration", "stim_file"])
    _json(root / "task-movie_bold.json", {"RepetitionTime": 2.0})
    return {"root": str(root), "task": "movie"}


def test_discovery_sessions_nii_optional_run_and_order(tmp_path):
    cfg = _sessions_tree(tmp_path)
    runs = bids.discover_runs(cfg, "01")
    assert [r.run for r in runs] == ["ses-1_run-1", "ses-1_run-2", "ses-1_run-10", "ses-2"]
    assert [r.session for r in runs] == ["1", "1", "1", "2"]
    assert runs[1].bold.name.endswith("_run-2_bold.nii") and runs[0].bold.name.endswith(".nii.gz")
    assert all(r.sidecar == tmp_path / "task-movie_bold.json" and r.confounds is None for r in runs)
    assert runs[3].events.name == "sub-01_ses-2_task-movie_acq-mb4_events.tsv"
    only = bids.discover_runs(dict(cfg, sessions=["2"]), "01")
    assert [r.run for r in only] == ["ses-2"]
    assert [r.run for r in bids.discover_runs(dict(cfg, runs=["10"]), "01")] == ["ses-1_run-10"]


def test_listed_session_or_run_missing_lists_what_is_there(tmp_path):
    cfg = _sessions_tree(tmp_path)
    with pytest.raises(InputError,
                       match=r"sub-01: expected session \['3'\] of subject 01 .*found sessions \['1', '2'\]"):
        bids.discover_runs(dict(cfg, sessions=["1", "3"]), "01")
    with pytest.raises(InputError, match=r"expected run \['04'\] of subject 01.*found runs \['1', '2', '10'\]"):
        bids.discover_runs(dict(cfg, runs=["04"]), "01")


def test_subject_without_runs_names_folder_and_pattern(tmp_path):
    cfg = _sessions_tree(tmp_path)
    _touch(tmp_path, "sub-02/func/sub-02_task-rest_bold.nii.gz")
    with pytest.raises(InputError, match=r"sub-02: expected BOLD runs matching "
                                         r"sub-02\[/ses-<x>\]/func/sub-02\[_ses-<x>\]_task-movie.*_bold\.nii\[\.gz\]; "
                                         r"found none \(func holds \[sub-02_task-rest_bold\.nii\.gz\]\)"):
        bids.discover_runs(cfg, "02")
    with pytest.raises(InputError, match=r"sub-03: expected a folder holding .*no such folder"):
        bids.discover_runs(cfg, "03")


def test_sidecar_inheritance_nearest_with_repetition_time(tmp_path):
    cfg = _sessions_tree(tmp_path)
    ses = tmp_path / "sub-01" / "ses-1"
    _json(tmp_path / "sub-01" / "sub-01_task-movie_bold.json", {"RepetitionTime": 1.5})
    _json(ses / "sub-01_ses-1_task-movie_bold.json", {"RepetitionTime": 1.0})
    _json(ses / "func" / "sub-01_ses-1_task-movie_acq-mb4_run-1_bold.json", {"RepetitionTime": 0.8})
    _json(ses / "func" / "sub-01_ses-1_task-movie_acq-mb4_run-2_bold.json", {"SliceTiming": [0, 0.5]})
    runs = {r.run: r for r in bids.discover_runs(cfg, "01")}
    tr = {k: bids.read_sidecar_tr(r.sidecar) for k, r in runs.items()}
    assert tr == {"ses-1_run-1": 0.8, "ses-1_run-2": 1.0, "ses-1_run-10": 1.0, "ses-2": 1.5}
    assert runs["ses-2"].sidecar.name == "sub-01_task-movie_bold.json"


def test_raw_run_without_any_sidecar_rejected(tmp_path):
    cfg = _sessions_tree(tmp_path)
    (tmp_path / "task-movie_bold.json").unlink()
    with pytest.raises(InputError, match=r"run-1_bold\.nii\.gz: expected a JSON sidecar with RepetitionTime"):
        bids.discover_runs(cfg, "01")


def test_old_layout_discovery_matches_run_paths(tiny_bids):
    cfg = {"root": str(tiny_bids["root"]), "task": "movie", "runs": tiny_bids["runs"]}
    assert bids.discover_runs(cfg, "01") == [bids.run_paths(tiny_bids["root"], "01", "movie", r)
                                             for r in tiny_bids["runs"]]
    assert [r.run for r in bids.discover_runs(dict(cfg, runs=[]), "01")] == tiny_bids["runs"]
    assert bids.Run("01", "01", Path("b"), Path("s"), Path("e")).confounds is None


# ----------------------------------------------------------------------------- fixtures and fMRIPrep

def test_wild_fixture_is_what_discovery_finds(wild):
    assert bids.discover_subjects(wild) == ["01", "02"]
    runs = bids.discover_runs(wild, "02")
    assert [r.run for r in runs] == ["01", "02", "03"]
    assert runs[1].bold.suffix == ".nii" and runs[0].bold.name.endswith(".nii.gz")
    assert {r.sidecar for r in runs} == {Path(wild["root"]) / "task-movie_bold.json"}
    header = pd.read_csv(runs[0].events, sep="\t", nrows=0).columns.tolist()
    assert "clip_id" not in header and "stim_file" in header
    assert not (Path(wild["root"]) / wild["stimuli_table"]).exists()


def test_fmriprep_discovery_preproc_bold_confounds_and_raw_events(fmriprep):
    runs = bids.discover_runs(fmriprep, "01")
    assert [r.run for r in runs] == ["ses-1_run-01", "ses-1_run-02", "ses-2"]
    deriv = Path(fmriprep["derivatives"]["root"])
    for r in runs:
        assert r.bold.is_relative_to(deriv) and f"_space-{SPACE}_desc-preproc_bold.nii.gz" in r.bold.name
        assert r.sidecar == r.bold.with_name(r.bold.name.replace(".nii.gz", ".json"))
        assert r.confounds.name.endswith("_desc-confounds_timeseries.tsv") and r.confounds.exists()
        assert not r.events.is_relative_to(deriv) and r.events.exists()
    meta = json.loads((deriv / "dataset_description.json").read_text())
    assert meta["DatasetType"] == "derivative" and meta["GeneratedBy"][0]["Name"] == "fMRIPrep"
    raw = bids.discover_runs(dict(fmriprep, derivatives={"root": ""}), "01")  # the raw dataset alone
    assert [r.run for r in raw] == ["ses-1_run-01", "ses-1_run-02", "ses-2"]
    assert raw[0].sidecar.name == "sub-01_ses-1_task-movie_bold.json"


def test_fmriprep_two_spaces_and_missing_raw_events(fmriprep, tmp_path):
    deriv = tmp_path / "deriv"
    func = deriv / "sub-01" / "func"
    for space in ("MNI152NLin2009cAsym", "T1w"):
        _touch(func, f"sub-01_task-movie_space-{space}_desc-preproc_bold.nii.gz")
        _json(func / f"sub-01_task-movie_space-{space}_desc-preproc_bold.json", {"RepetitionTime": 1.0})
    cfg = {"root": str(tmp_path / "raw"), "task": "movie", "derivatives": {"root": str(deriv), "space": ""}}
    with pytest.raises(InputError, match=r"one BOLD file per run.*space-MNI152NLin2009cAsym.*space-T1w.*"
                                         r"set dataset\.derivatives\.space"):
        bids.discover_runs(cfg, "01")
    cfg["derivatives"]["space"] = "T1w"
    with pytest.raises(InputError, match=r"sub-01_task-movie_events\.tsv: expected the events of the run "
                                         r"\(fMRIPrep does not copy them: dataset\.root must be the raw"):
        bids.discover_runs(cfg, "01")


# ----------------------------------------------------------------------------- confounds

def test_confound_columns_wildcards_nan_and_errors(fmriprep):
    run = bids.discover_runs(fmriprep, "01")[0]
    n = len(pd.read_csv(run.confounds, sep="\t"))
    assert confound_matrix(run, {"strategy": "none", "columns": []}, n) is None
    m = confound_matrix(run, {"columns": ["csf", "a_comp_cor_0*", "trans_x_derivative1"]}, n)
    assert m.shape == (n, 8) and m.dtype == np.float64
    assert np.isfinite(m).all() and np.allclose(m.mean(axis=0), 0)
    with pytest.raises(InputError, match=r"confounds_timeseries\.tsv: expected a column matching 'cerebellum\*'"):
        confound_matrix(run, {"columns": ["cerebellum*"]}, n)
    with pytest.raises(InputError, match=rf"expected one row per BOLD volume \({n + 2}\); found {n} rows"):
        confound_matrix(run, {"columns": ["csf"]}, n + 2)
    with pytest.raises(ConfigError, match="either strategy or columns"):
        confound_matrix(run, {"strategy": "simple", "columns": ["csf"]}, n)
    raw = bids.discover_runs(dict(fmriprep, derivatives={"root": ""}), "01")[0]
    with pytest.raises(InputError, match="no confounds file"):
        confound_matrix(raw, {"columns": ["csf"]}, n)


def test_confound_strategy_simple_through_nilearn_and_scrubbing_refused(fmriprep, tmp_path):
    run = bids.discover_runs(fmriprep, "01")[0]
    n = len(pd.read_csv(run.confounds, sep="\t"))
    m = confound_matrix(run, {"strategy": "simple"}, n)
    assert m.shape[0] == n and m.shape[1] >= 26 and np.allclose(m.mean(axis=0), 0)  # 24 motion + csf + wm (+ cosines)
    # a run with a motion spike: scrubbing censors volumes, which the sample alignment cannot take yet
    func = tmp_path / "sub-09" / "func"
    func.mkdir(parents=True)
    stem = "sub-09_task-movie"
    (func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz").symlink_to(run.bold)
    table = pd.read_csv(run.confounds, sep="\t")
    table.loc[40:41, "framewise_displacement"] = 3.0
    table.to_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
    (func / f"{stem}_desc-confounds_timeseries.json").write_text(run.confounds.with_suffix(".json").read_text())
    spiky = bids.Run("09", "01", func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz", None, run.events,
                     func / f"{stem}_desc-confounds_timeseries.tsv")
    with pytest.raises(InputError, match=r"expected no censored volume \(strategy 'scrubbing'.*volumes flagged"):
        confound_matrix(spiky, {"strategy": "scrubbing"}, n)


def _reliability(runs, mask, lag, conf):
    """Median over voxels of the repeat-1 vs repeat-2 correlation of the training-clip samples."""
    samples = []
    for run in runs:
        x = np.asarray(nib.load(run.bold).dataobj)[mask].T
        if conf:
            x = regress_out(x, confound_matrix(run, conf, x.shape[0]))
        z = detrend_standardize(x.astype(np.float32), 4)
        ev = bids.read_events(run.events).sort_values("clip_id")
        samples.append(np.array([z[int(o + lag):int(o + lag + d)].mean(0) for o, d in zip(ev.onset, ev.duration)]))
    a, b = (s - s.mean(0) for s in samples)
    return float(np.median((a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))))


def test_csf_regression_removes_the_planted_nuisance_and_keeps_the_signal(fmriprep):
    root = Path(fmriprep["root"])
    truth = root / "derivatives" / "ground_truth"
    runs = bids.discover_runs(fmriprep, "01")
    run = runs[0]
    nuisance = pd.read_csv(truth / "sub-01_ses-1_run-01_nuisance.tsv", sep="\t")["nuisance"].to_numpy()
    data = np.asarray(nib.load(run.bold).dataobj)
    x = data[data.mean(axis=3) > 0].T
    m = confound_matrix(run, {"columns": ["csf"]}, x.shape[0])

    def corr(y):
        z = detrend_standardize(y.astype(np.float32), 4)
        return float(np.mean(z.T @ ((nuisance - nuisance.mean()) / nuisance.std())) / len(nuisance))

    before, after = corr(x), corr(regress_out(x, m))
    assert before > 0.5 and abs(after) < 0.1, (before, after)
    responsive = nib.load(truth / "sub-01_responsive.nii.gz").get_fdata() > 0
    lag = json.loads((truth / "sub-01_truth.json").read_text())["lag_s"]
    train = [r for r in runs if r.session == "1"]  # every training clip once per run
    rel_before = _reliability(train, responsive, lag, None)
    rel_after = _reliability(train, responsive, lag, {"columns": ["csf"]})
    assert rel_after > rel_before + 0.02 and rel_after > 0.5, (rel_before, rel_after)


# ----------------------------------------------------------------------------- stimulus table

def test_stimulus_table_from_events_split_by_repeats(wild):
    table = bids.resolve_stimulus_table(wild)
    assert list(table.columns) == ["clip_id", "file", "caption", "split"]
    assert set(table.loc[table["split"] == "test", "clip_id"]) == {f"test{i:03d}" for i in range(1, 5)}
    assert (table["split"] == "train").sum() == 16 and (table["caption"] == "").all()
    assert table["file"].tolist() == [f"{c}.mp4" for c in table["clip_id"]]
    folder = Path(table.attrs["folder"])
    assert folder == bids.stimulus_folder(wild) == Path(wild["root"]) / "stimuli"
    assert all((folder / f).exists() for f in table["file"])
    with pytest.raises(InputError, match=r"both test and train clips.*every clip shown at least 2 times"):
        bids.resolve_stimulus_table(dict(wild, split={"source": "repeats", "min_repeats": 2}))


def test_stimulus_table_from_events_split_by_list_and_root_relative_files(wild, tmp_path):
    split = {"source": "list", "test": ["train001", "test002"]}
    table = bids.resolve_stimulus_table(dict(wild, split=split))
    assert sorted(table.loc[table["split"] == "test", "clip_id"]) == ["test002", "train001"]
    with pytest.raises(InputError, match=r"dataset\.split\.test: expected clip ids of the stimulus table.*\['nope'\]"):
        bids.resolve_stimulus_table(dict(wild, split={"source": "list", "test": ["nope"]}))
    with pytest.raises(InputError, match=r"clips\.tsv: expected the stimulus table.*set dataset\.split\.source"):
        bids.resolve_stimulus_table(dict(wild, split={"source": "table"}))
    # stim_file written relative to the dataset root (stimuli/x.mp4) also resolves; file stays relative to stimuli/
    root = Path(wild["root"])
    ev = tmp_path / "sub-01_task-movie_run-01_events.tsv"
    _events(ev, [[4.0, 2.0, "stimuli/train003.mp4"], [10.0, 2.0, "train004.mp4"]], ["onset", "duration", "stim_file"])
    table = bids.stimulus_table_from_events(dict(wild, split={"source": "list", "test": ["train004"]}), [ev])
    assert table["file"].tolist() == ["train003.mp4", "train004.mp4"]
    _events(ev, [[4.0, 2.0, "missing.mp4"]], ["onset", "duration", "stim_file"])
    with pytest.raises(InputError, match=rf"{root / 'stimuli' / 'missing.mp4'}: expected the movie named by stim_file"):
        bids.stimulus_table_from_events(wild, [ev])


def test_stimulus_table_file_split_from_table(fmriprep):
    table = bids.resolve_stimulus_table(fmriprep)
    assert (table["split"] == "test").sum() == 4 and (table["split"] == "train").sum() == 16
    assert Path(table.attrs["folder"]) == Path(fmriprep["root"]) / "stimuli"
    with pytest.raises(ConfigError, match=r"dataset\.split\.source: expected one of"):
        bids.resolve_stimulus_table(dict(fmriprep, split={"source": "magic"}))
