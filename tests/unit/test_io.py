import nibabel as nib
import numpy as np
import pytest

from fmrivid.errors import InputError
from fmrivid.io import bids, nifti
from fmrivid.io.atomic import atomic_path
from fmrivid.io.h5 import read_features, write_features


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(out) as tmp:
        tmp.write_text("full")
    assert out.read_text() == "full"


def test_atomic_path_keeps_compound_suffix(tmp_path):
    import nibabel as nib

    out = tmp_path / "sub-01_bold.nii.gz"
    with atomic_path(out) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp != out
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), tmp)
    assert nib.load(out).shape == (2, 2, 2, 3)


def test_h5_roundtrip_and_selection(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_features(tmp_path / "f.h5", ["a", "b", "c", "d"], x, {"model": "tiny", "settings": {"k": 1}})
    ids, y, attrs = read_features(tmp_path / "f.h5", ["c", "a"])
    assert ids == ["c", "a"] and np.array_equal(y, x[[2, 0]])
    assert attrs["model"] == "tiny"
    with pytest.raises(InputError, match="rows for clips"):
        read_features(tmp_path / "f.h5", ["zz"])


def test_valid_run_loads(tiny_bids):
    run = bids.run_paths(tiny_bids["root"], "01", "movie", "01")
    data, img = nifti.load_bold(run.bold, expected_tr=1.0, sidecar_tr=bids.read_sidecar_tr(run.sidecar))
    assert data.ndim == 4 and data.dtype == np.float32


def test_missing_run_named(tiny_bids):
    runs = [bids.run_paths(tiny_bids["root"], "01", "movie", r) for r in ("01", "07")]
    with pytest.raises(InputError, match=r"sub-01_task-movie_run-07_bold\.nii\.gz.*run 07 of subject 01"):
        bids.check_runs_exist(runs)


def test_3d_file_rejected(tiny_bids, tmp_path):
    path = tmp_path / "three_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    with pytest.raises(InputError, match=r"three_d\.nii\.gz: expected a 4-D BOLD image.*found 3-D"):
        nifti.load_bold(path)


def test_tr_disagreeing_with_sidecar(tiny_bids):
    run = bids.run_paths(tiny_bids["root"], "01", "movie", "01")
    with pytest.raises(InputError, match=r"run-01_bold\.nii\.gz: expected header TR equal to the JSON sidecar's"
                                         r" RepetitionTime 2\.0 s; found header TR 1\.0 s"):
        nifti.load_bold(run.bold, expected_tr=2.0, sidecar_tr=2.0)
    with pytest.raises(InputError, match=r"expected TR 2\.0 s \(dataset\.tr"):
        nifti.load_bold(run.bold, expected_tr=2.0, sidecar_tr=1.0)


def test_nan_rejected_with_location(tmp_path):
    data = np.ones((3, 3, 3, 5), np.float32)
    data[1, 2, 0, 3] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(InputError, match=r"nan\.nii\.gz: expected finite values; found 1 NaN/inf values"):
        nifti.load_bold(path)


def test_truncated_gzip_rejected(tiny_bids, tmp_path):
    run = bids.run_paths(tiny_bids["root"], "01", "movie", "01")
    raw = run.bold.read_bytes()
    bad = tmp_path / "cut_bold.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"cut_bold\.nii\.gz: expected a (complete|readable) NIfTI"):
        nifti.load_bold(bad)


def test_grid_mismatch(tmp_path):
    a = nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4))
    b = nib.Nifti1Image(np.zeros((3, 3, 4, 2), np.float32), np.eye(4))
    with pytest.raises(InputError, match=r"b\.nii: expected grid \(3, 3, 3\)"):
        nifti.check_same_grid([("a.nii", a), ("b.nii", b)])


def test_stimulus_table_checks(tmp_path):
    p = tmp_path / "clips.tsv"
    p.write_text("clip_id\tfile\tcaption\tsplit\na\ta.mp4\tx\ttrain\nb\tb.mp4\t\ttest\n")
    with pytest.raises(InputError, match=r"clips\.tsv: expected a caption for every clip; found no caption for \['b'\]"):
        bids.read_stimulus_table(p)
    p.write_text("clip_id\tfile\tcaption\tsplit\na\ta.mp4\tx\ttrain\nb\tb.mp4\ty\tvalidation\n")
    with pytest.raises(InputError, match="split values"):
        bids.read_stimulus_table(p)


def test_feature_files_hold_extra_datasets_read_by_name(tmp_path):
    from fmrivid.io.h5 import read_features, write_features

    path = tmp_path / "pred.h5"
    write_features(path, ["a", "b"], np.zeros((2, 3)), {"decoder": "x"},
                   extra={"tokens": np.arange(12.0).reshape(2, 2, 3), "negative_tokens": np.ones((1, 2, 3))})
    ids, tokens, attrs = read_features(path, ["b", "a"], dataset="tokens")
    assert ids == ["b", "a"] and tokens[0, 0, 0] == 6.0 and attrs["decoder"] == "x"
    assert read_features(path, dataset="negative_tokens")[1].shape == (1, 2, 3)
    with pytest.raises(InputError, match="'fmri_only'"):
        read_features(path, dataset="fmri_only")
    with pytest.raises(ValueError, match="replace the main one"):
        write_features(tmp_path / "x.h5", ["a"], np.zeros((1, 1)), extra={"features": np.zeros(1)})
