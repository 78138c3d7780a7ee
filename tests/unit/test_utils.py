import numpy as np
import pytest

from fmrivid.generate import stages as generate_stages

from fmrivid.metrics import stages as metrics_stages
from fmrivid.errors import InputError
from fmrivid.utils import Logger, clip_seed, run_stage


def test_clip_seed_depends_on_seed_and_clip_only():
    assert clip_seed(0, "test001") == clip_seed(0, "test001")
    assert clip_seed(0, "test001") != clip_seed(0, "test002")
    assert clip_seed(1, "test001") != clip_seed(0, "test001")


def test_run_stage_turns_input_errors_into_one_line(tmp_path, capsys):
    def bad(log):
        raise InputError("data/run-01_bold.nii.gz", "a 4-D image", "3-D shape (4, 4, 4)")

    with pytest.raises(SystemExit) as exc:
        run_stage(bad, tmp_path / "x.log")
    assert exc.value.code == 1
    text = (tmp_path / "x.log").read_text()
    assert "ERROR: data/run-01_bold.nii.gz: expected a 4-D image; found 3-D shape (4, 4, 4)" in text
    log = Logger(tmp_path / "y.log", echo=False)
    log("hello")
    assert "hello" in (tmp_path / "y.log").read_text()


def test_prepare_condition_unit_norm():
    out = generate_stages.prepare_condition(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(np.linalg.norm(out[0]), 1.0) and np.all(np.isfinite(out))


def test_metrics_table_is_byte_identical(tmp_path):
    from fmrivid.metrics.table import summarise, write_table

    from fmrivid.metrics.table import clip_rows, write_clip_table

    vals = np.array([10.0, 11.0, 12.5])
    rows = [summarise("01", "demo", "psnr", "rgb", vals, 0, n_boot=200),
            summarise("01", "shuffled_gt", "psnr", "rgb", vals - 3, 0, n_boot=200)]
    write_table(rows, tmp_path / "m1.tsv")
    write_clip_table(clip_rows("01", "demo", "psnr", "rgb", ["a", "b", "c"], vals)
                     + clip_rows("01", "shuffled_gt", "psnr", "rgb", ["a", "b", "c"], vals - 3), tmp_path / "c1.tsv")
    for out in ("a", "b"):
        metrics_stages.metrics_table([tmp_path / "m1.tsv"], [tmp_path / "c1.tsv"], ["demo", "shuffled_gt"], "demo",
                                 "demo", tmp_path / f"{out}.tsv", tmp_path / f"w{out}.tsv", tmp_path / f"m{out}.tsv",
                                 tmp_path / f"x{out}.tsv", tmp_path / f"p{out}.tsv", log=lambda m: None)
    for stem in ("", "w", "m", "x", "p"):
        assert (tmp_path / f"{stem}a.tsv").read_bytes() == (tmp_path / f"{stem}b.tsv").read_bytes(), stem
    assert "psnr[rgb]" in (tmp_path / "wa.tsv").read_text()
