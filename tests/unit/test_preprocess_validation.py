"""Every bad input stops the preprocess stage with a message naming file, expected and found, and no output."""

import gzip
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import fmrivid.config as fc
from fmrivid.preprocess import stages as preprocess_stages
from fmrivid.errors import InputError
from fmrivid.io import bids


def _bold(tiny_bids, run):
    return bids.run_paths(tiny_bids["root"], "01", "movie", run).bold


def _rewrite(path, fn):
    img = nib.load(path)
    data, affine = fn(np.asarray(img.dataobj, np.float32), img.affine.copy())
    out = nib.Nifti1Image(data, affine, img.header)
    nib.save(out, path)


def _three_d(t):
    _rewrite(_bold(t, "02"), lambda d, a: (d[..., 0], a))


def _nan(t):
    def f(d, a):
        d[1, 2, 3, 7] = np.nan
        return d, a
    _rewrite(_bold(t, "02"), f)


def _grid(t):
    _rewrite(_bold(t, "02"), lambda d, a: (d[:, :, :3], a))


def _affine(t):
    def f(d, a):
        a[0, 3] += 5.0
        return d, a
    _rewrite(_bold(t, "02"), f)


def _sidecar_tr(t):
    bids.run_paths(t["root"], "01", "movie", "02").sidecar.write_text(json.dumps({"RepetitionTime": 2.0}))


def _header_tr(t):
    path = _bold(t, "02")
    img = nib.load(path)
    img.header.set_zooms((3.0, 3.0, 3.0, 1.5))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), path)


def _too_short(t):
    _rewrite(_bold(t, "03"), lambda d, a: (d[..., :40], a))


def _truncated_gz(t):
    path = _bold(t, "02")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt_gz(t):
    path = _bold(t, "02")
    raw = bytearray(gzip.decompress(path.read_bytes()))
    path.write_bytes(b"not a gzip stream" + bytes(raw[:100]))


def _unknown_clip(t):
    ev = bids.run_paths(t["root"], "01", "movie", "02").events
    table = pd.read_csv(ev, sep="\t")
    table.loc[0, "clip_id"] = "zz99"
    table.to_csv(ev, sep="\t", index=False)


def _missing(t):
    _bold(t, "02").unlink()


CASES = [
    (_three_d, r"run-02_bold\.nii\.gz: expected a 4-D BOLD image \(x, y, z, time\); found 3-D"),
    (_nan, r"run-02_bold\.nii\.gz: expected finite values; found 1 NaN/inf values \(first at voxel "
          r"\(1, 2, 3\), volume 7\)"),
    (_grid, r"run-02_bold\.nii\.gz: expected grid \(6, 5, 4\) like sub-01_task-movie_run-01_bold\.nii\.gz; "
            r"found grid \(6, 5, 3\)"),
    (_affine, r"run-02_bold\.nii\.gz: expected the affine of sub-01_task-movie_run-01_bold\.nii\.gz; "
              r"found a different affine \(max difference 5"),
    (_sidecar_tr, r"run-02_bold\.nii\.gz: expected header TR equal to the JSON sidecar's RepetitionTime 2\.0 s; "
                  r"found header TR 1\.0 s"),
    (_header_tr, r"run-02_bold\.nii\.gz: expected header TR equal to the JSON sidecar's RepetitionTime 1\.0 s; "
                 r"found header TR 1\.5 s"),
    (_too_short, r"run-03_events\.tsv: expected volumes \d+ to \d+ for the event at onset .*; found a run of 40 "
                 r"volumes"),
    (_truncated_gz, r"run-02_bold\.nii\.gz: expected a (complete|readable) NIfTI.*; found"),
    (_corrupt_gz, r"run-02_bold\.nii\.gz: expected a readable NIfTI-1/2 image; found"),
    (_unknown_clip, r"run-02_events\.tsv: expected clip ids listed in the stimulus table; found unknown clip ids "
                    r"\['zz99'\]"),
    (_missing, r"run-02_bold\.nii\.gz: expected run 02 of subject 01; found no such file"),
]


def _run(tiny_bids, out, **cfg):
    root = tiny_bids["root"]
    runs = [bids.run_paths(root, "01", "movie", r) for r in tiny_bids["runs"]]
    preprocess_stages.splits(root / "stimuli" / "clips.tsv", out / "splits.tsv", log=lambda m: None)
    (out / "splits.tsv").rename(root / "splits.tsv")
    pcfg = fc.validate({"preprocess": {"detrend_order": 1, "mask_threshold": 0.5, "selection": {"min_voxels": 5},
                                       **cfg}})["preprocess"]
    preprocess_stages.preprocess([r.bold for r in runs], [r.sidecar for r in runs], [r.events for r in runs],
                          tiny_bids["runs"], "01", 1.0, root / "splits.tsv", pcfg, out / "fmri/sub-01.h5",
                          out / "qc/sub-01_selection.png", out_tsnr=out / "qc/tsnr.png",
                          out_lag_tsv=out / "qc/lag.tsv", out_lag_png=out / "qc/lag.png",
                          out_selection_tsv=out / "qc/sel.tsv", log=lambda m: None)


@pytest.mark.parametrize("corrupt,message", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_input_named_and_nothing_written(tiny_bids, tmp_path, corrupt, message):
    out = tmp_path / "results"
    out.mkdir()
    corrupt(tiny_bids)
    with pytest.raises(InputError, match=message):
        _run(tiny_bids, out)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == []


def test_good_input_writes_every_output(tiny_bids, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    _run(tiny_bids, out)
    names = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert names == ["lag.png", "lag.tsv", "sel.tsv", "sub-01.h5", "sub-01_selection.png", "tsnr.png"]
    lag = pd.read_csv(out / "qc/lag.tsv", sep="\t")
    # The fixture plants its response 4 s after onset (TR 1 s): the scan on training data finds it.
    assert abs(float(lag.loc[lag["best"], "lag_s"].iloc[0]) - 4.0) <= 1.0


def test_truncated_uncompressed_nifti(tmp_path):
    from fmrivid.io import nifti

    path = tmp_path / "cut_bold.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 10), np.float32), np.eye(4)), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(InputError, match=r"cut_bold\.nii: expected a complete NIfTI file of \d+ bytes for shape "
                                         r"\(4, 4, 4, 10\); found \d+ bytes \(truncated\)"):
        nifti.check_header(path)


def test_trim_preset_refuses_other_lengths(tiny_bids, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    with pytest.raises(InputError, match=r"run-01_bold\.nii\.gz: expected 245 or 246 volumes \(CC2017 trimming "
                                         r"preset, preprocess\.trim\.preset\); found \d+ volumes"):
        _run(tiny_bids, out, trim={"preset": "cc2017"})
    assert not any(p.is_file() for p in out.rglob("*"))


def test_config_tr_disagreeing_with_the_data(tiny_bids, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    root = tiny_bids["root"]
    runs = [bids.run_paths(root, "01", "movie", r) for r in tiny_bids["runs"]]
    preprocess_stages.splits(root / "stimuli" / "clips.tsv", root / "splits.tsv", log=lambda m: None)
    pcfg = fc.validate({"preprocess": {}})["preprocess"]
    with pytest.raises(InputError, match=r"run-01_bold\.nii\.gz: expected TR 2\.0 s \(dataset\.tr in the config\); "
                                         r"found TR 1\.0 s"):
        preprocess_stages.preprocess([r.bold for r in runs], [r.sidecar for r in runs], [r.events for r in runs],
                              tiny_bids["runs"], "01", 2.0, root / "splits.tsv", pcfg, out / "fmri/sub-01.h5",
                              out / "qc/sel.png", out_lag_tsv=out / "qc/lag.tsv", log=lambda m: None)
    assert not any(p.is_file() for p in out.rglob("*"))


def _small_models(n_left=30, n_right=20):
    left = np.ones(n_left, bool)
    right = np.ones(n_right, bool)
    return (nib.cifti2.BrainModelAxis.from_mask(left, name="CortexLeft")
            + nib.cifti2.BrainModelAxis.from_mask(right, name="CortexRight"))


def _cifti_case(tmp_path, kind):
    from fmrivid.io import cc2017, cifti

    root = tmp_path / "cc"
    rng = np.random.default_rng(0)
    cc = {"space": "cifti", "mni_file": "", "train_segments": 2, "test_segments": 1, "train_repeats": 2,
          "test_repeats": 1, "fps": 30}
    for seg, rep, _, path in cc2017.list_runs(root, "1", cc, check=False):
        models = _small_models(30 if not (kind == "models" and seg == "seg2") else 31)
        data = 100 + rng.normal(size=(245, len(models))).astype(np.float32)
        tr = 1.5 if (kind == "tr" and seg == "seg2") else 2.0
        if kind == "nan" and seg == "seg2" and rep == "2":
            data[17, 3] = np.nan
        cifti.write_dtseries(path, data, tr, models)
        if kind == "not_cifti" and seg == "seg2":
            nib.save(nib.Nifti1Image(data.T[:, None, None, :], np.eye(4)), path)
    runs = cc2017.list_runs(root, "1", cc)
    table = cc2017.stimulus_table(cc).assign(caption="")
    table[["clip_id", "split", "file", "caption"]].to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    return runs


CIFTI_CASES = [
    ("tr", r"seg2_1_Atlas\.dtseries\.nii: expected TR 2\.0 s \(dataset\.tr in the config\); found series step 1\.5 s"),
    ("models", r"seg2_1_Atlas\.dtseries\.nii: expected the grayordinates of seg1_1_Atlas\.dtseries\.nii \(50 "
               r"brain-model entries\); found different grayordinates \(51 entries\)"),
    ("nan", r"seg2_2_Atlas\.dtseries\.nii: expected finite values; found 1 NaN/inf values \(first at time point 17, "
            r"column 3\)"),
    ("not_cifti", r"seg2_1_Atlas\.dtseries\.nii: expected a CIFTI-2 image; found a Nifti1Image"),
]


@pytest.mark.parametrize("kind,message", CIFTI_CASES, ids=[c[0] for c in CIFTI_CASES])
def test_bad_cifti_named_and_nothing_written(tmp_path, kind, message):
    runs = _cifti_case(tmp_path, kind)
    out = tmp_path / "results"
    cfg = fc.validate({"preprocess": {"trim": {"preset": "cc2017"}, "out_of_run": "drop",
                                      "selection": {"min_voxels": 5}}})["preprocess"]
    with pytest.raises(InputError, match=message):
        preprocess_stages.preprocess([str(p) for *_, p in runs], [], [], [f"{s}_{r}" for s, r, _, _ in runs], "1", 2.0,
                              tmp_path / "splits.tsv", cfg, out / "fmri/sub-1.h5", out / "qc/sel.png",
                              out_lag_tsv=out / "qc/lag.tsv", layout="cc2017", log=lambda m: None)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
