"""Real Snakemake runs: lint, dry run, a tiny end-to-end run (config/test.yaml) and bad-input errors."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}

pytestmark = pytest.mark.workflow


def smk(workdir, *args, check=True, timeout=900):
    proc = subprocess.run([*SNAKEMAKE, "-d", str(workdir), *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def defined_rules():
    names = set()
    for f in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        names |= set(re.findall(r"^\s*rule (\w+):", f.read_text(), flags=re.M))
    return names


def test_lint_prints_no_warnings(tmp_path):
    proc = smk(tmp_path, "--lint", "--configfile", str(REPO / "config/demo.yaml"))
    out = proc.stdout + proc.stderr
    assert "Lints for" not in out, out
    assert "Congratulations" in out


def test_dry_run_lists_every_rule(tmp_path):
    """The demo config plans every rule but the diffusers generator's fine-tuning, which a diffusers config plans."""
    def plan(*configs):
        proc = smk(tmp_path, "-n", "--configfile", *map(str, configs))
        stats = proc.stdout.split("Job stats:")[1].split("total")[0]
        return set(re.findall(r"^(\w+)\s+\d+\s*$", stats, flags=re.M))

    demo = plan(REPO / "config/demo.yaml")
    diffusers = {"generate": {"method": "structure_motion", "finetune": {"enabled": True},
                              "pipeline": {"num_frames": 8, "height": 64, "width": 64}},  # = the demo frames
                 "features": {"vae_model": "tiny#vae", "tokens": {"enabled": True}},
                 "decode": {"targets": ["text", "image", "vae", "text_tokens"]}}
    (tmp_path / "diffusers.yaml").write_text(yaml.safe_dump(diffusers))
    assert demo == defined_rules() - {"finetune_generator", "cotrain_generator", "stimulus_table"}  # (its clips)
    assert "finetune_generator" in plan(REPO / "config/demo.yaml", tmp_path / "diffusers.yaml")
    diffusers["generate"].update(finetune={"enabled": True, "cotrain": True}, variants={"glfa": {"tokens": "cotrain"}})
    (tmp_path / "cotrain.yaml").write_text(yaml.safe_dump(diffusers))
    assert "cotrain_generator" in plan(REPO / "config/demo.yaml", tmp_path / "cotrain.yaml")


# `tiny_run` (one local run of config/test.yaml, shared with tests/cluster) lives in tests/conftest.py.


def test_tiny_run_produces_every_output(tiny_run):
    res = tiny_run / "results"
    for rel in ["tables/metrics.tsv", "tables/summary.tsv", "report/metrics.png", "report/training_curves.png",
                "report/provenance.yaml", "report/sub-01_grid.png", "report/sub-02_preview.mp4",
                "qc/sub-01_selection.png", "fmri/sub-02.h5", "features/frames.h5"]:
        assert (res / rel).stat().st_size > 0, rel
    # One viewable MP4 per test clip next to the lossless array the metrics read, each the same clip.
    from fmrivid.io.h5 import read_features
    from fmrivid.io.video import read_video

    for sub in ("01", "02"):
        ids, recon, _ = read_features(res / f"recon/demo/sub-{sub}.h5")
        mp4s = sorted((res / f"videos/demo/sub-{sub}").glob("*.mp4"))
        assert [p.stem for p in mp4s] == sorted(ids)
        frames, _ = read_video(mp4s[0])
        want = recon[ids.index(mp4s[0].stem)]
        assert frames.shape == want.shape
        assert np.abs(frames.astype(float) - want.astype(float)).mean() < 8  # H.264 at crf 10: near lossless
    # Every rule left a log and a benchmark file.
    assert len(list((res / "logs").glob("*.log"))) >= 17
    # A run that asks for no deprecated pipeline prints no deprecation notice (issue 19): the test config's audio is
    # AudioLDM 2, not the seed's deprecated AudioLDM; the check covers every job log and snakemake's own output.
    for log in [*sorted((res / "logs").glob("*.log")), tiny_run / "snakemake_output.txt"]:
        assert "deprecat" not in log.read_text().lower(), log
    table = pd.read_csv(res / "tables/metrics.tsv", sep="\t", dtype={"subject": str})
    assert list(table.columns) == ["subject", "method", "metric", "variant", "value", "ci_low", "ci_high", "n", "p"]
    assert set(table.subject) == {"01", "02"}
    assert {"demo", "shuffled_gt", "ridge_text"} <= set(table.method)
    table = table[table.value.notna()]  # rows of metrics that could not run here (e.g. LPIPS without weights)
    assert (table.ci_low <= table.value + 1e-9).all() and (table.value <= table.ci_high + 1e-9).all()
    prov = yaml.safe_load((res / "report/provenance.yaml").read_text())
    assert prov["config"]["dataset"]["name"] == "test" and prov["packages"]["torch"].startswith("2.14.1")
    assert len(prov["input_sha256"]) > 3


def test_rerun_has_nothing_to_do(tiny_run):
    proc = smk(tiny_run, "-n", "--configfile", str(REPO / "config/test.yaml"))
    assert "Nothing to be done" in proc.stdout + proc.stderr


FEATURE_RULES = {"frames", "captions", "text_features", "clip_text_features", "token_features", "image_features",
                 "vae_features", "vae_video_features", "audio", "wav2vec_features", "flow_features"}


def test_changing_decoder_settings_recomputes_no_feature(tiny_run, tmp_path):
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["decode"]["alphas"] = [3.0, 300.0]
    cfg["decode"]["cv"] = 3
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(cfg))
    proc = smk(tiny_run, "-n", "--configfile", str(tmp_path / "changed.yaml"))
    stats = proc.stdout.split("Job stats:")[1].split("total")[0]
    planned = set(re.findall(r"^(\w+)\s+\d+\s*$", stats, flags=re.M))
    assert "decode" in planned  # the change is seen...
    assert not planned & FEATURE_RULES  # ...and no feature is recomputed
    assert {"wav2vec.h5", "flow.h5", "text_tokens.h5", "clip_text.h5", "vae_frames.h5"} <= {
        p.name for p in (tiny_run / "results/features").iterdir()}


def test_report_bundle(tiny_run):
    smk(tiny_run, "--configfile", str(REPO / "config/test.yaml"), "--report", "results/report.zip")
    with zipfile.ZipFile(tiny_run / "results/report.zip") as z:
        names = z.namelist()
    assert any(n.endswith("report.html") for n in names)
    for part in ("metrics.tsv", "sub-01_grid.png", "sub-01_preview.mp4", "provenance.yaml", "selection.png"):
        assert any(n.endswith(part) for n in names), part


def test_unknown_config_key_stops_the_run(tmp_path):
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["decode"]["alpah"] = [1.0]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = smk(tmp_path, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert proc.returncode != 0
    assert "unknown config key 'decode.alpah'" in proc.stdout + proc.stderr


def _real_dataset_config(tmp_path, tiny_bids, runs):
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["dataset"] = {"name": "tiny", "root": str(tiny_bids["root"]), "simulate": False, "subjects": ["01"],
                      "runs": runs, "tr": 1.0, "task": "movie"}
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_missing_run_stops_the_run(tmp_path, tiny_bids):
    cfg = _real_dataset_config(tmp_path, tiny_bids, ["01", "02", "03", "04"])
    proc = smk(tmp_path, "-n", "--configfile", str(cfg), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "sub-01: expected run ['04'] of subject 01 (listed in dataset.runs); found runs ['01', '02', '03']" \
        in out


def test_nan_run_fails_preprocess_without_partial_output(tmp_path, tiny_bids):
    import nibabel as nib
    import numpy as np

    bold = tiny_bids["func"] / "sub-01_task-movie_run-02_bold.nii.gz"
    img = nib.load(bold)
    arr = np.asarray(img.dataobj).copy()
    arr[1, 1, 1, 5] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), bold)
    cfg = _real_dataset_config(tmp_path, tiny_bids, ["01", "02", "03"])
    proc = smk(tmp_path, "results/fmri/sub-01.h5", "--cores", "1", "--configfile", str(cfg), check=False)
    assert proc.returncode != 0
    log = (tmp_path / "results/logs/preprocess_sub-01.log").read_text()
    assert "ERROR:" in log and "run-02_bold.nii.gz: expected finite values; found 1 NaN/inf values" in log
    assert not (tmp_path / "results/fmri/sub-01.h5").exists()
    assert not list((tmp_path / "results/fmri").glob("*tmp*")) if (tmp_path / "results/fmri").exists() else True
