"""The neural decoders as workflow rules (decode.neural), on a copy of the tiny run: every decoder trains on the
training split, writes a safetensors model, predictions, a loss curve and its own metric rows with a shuffled
control; checkpoints are gone after success; and the metric table joins the decoders' rows."""

import shutil

import pandas as pd
import pytest
import yaml
from safetensors import safe_open

from conftest import REPO
from test_workflow import smk

pytestmark = pytest.mark.workflow

TINY = {  # seconds on CPU: exercises the rules, not the quality (tests/unit covers the planted signals)
    "neural": ["semantic", "structure", "motion", "fusion", "align", "encoder"],
    "semantic": {"steps": 12, "hidden": 32, "token_hidden": 32, "checkpoint_every": 5},
    "structure": {"steps": 12, "hidden": 32},
    "motion": {"steps": 6, "width": 16, "heads": 2, "depth": 1, "fmri_tokens": 2},
    "fusion": {"steps": 6, "width": 16, "heads": 2, "depth": 1, "fmri_tokens": 2},
    "align": {"steps": 10, "parcel_size": 8, "ridge_cv": 2},
    "encoder": {"steps": 6, "chunk_frames": 4, "frame_size": 16, "channels3d": [4], "channels2d": [8],
                "pool_size": 2, "decoder_channels": 4, "decoder_upsamples": 2, "batch_size": 4},
}


def test_neural_decoders_run_as_rules(tiny_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["decode"].update(TINY)
    (tmp_path / "neural.yaml").write_text(yaml.safe_dump(cfg))
    targets = [f"results/metrics/decoders/{d}_sub-01_{t}.tsv" for d, t in
               (("semantic", "text"), ("structure", "vae"), ("motion", "vae_frames"), ("fusion", "vae_frames"),
                ("align", "text"), ("encoder", "voxels"))]
    smk(work, *targets, "--cores", "2", "--configfile", str(tmp_path / "neural.yaml"))
    res = work / "results"
    rows = pd.concat([pd.read_csv(work / t, sep="\t", dtype={"subject": str}) for t in targets])
    methods = set(rows["method"])
    assert {"semantic_text", "structure_vae", "motion_vae_frames", "fusion_fmri_only", "fusion_audio",
            "glfa_aligned", "glfa_unaligned", "glfa_loso_text", "encoder", "encoder_shuffled_stimulus",
            "shuffled_gt"} <= methods, methods
    assert set(rows["subject"]) == {"01"}
    assert {"two_way_ident", "latent_corr", "fsc", "isc", "voxel_r", "decoded_frame_ssim"} <= set(rows["metric"])
    assert rows["value"].notna().all()
    for d, t in (("semantic", "text"), ("structure", "vae"), ("motion", "vae_frames"), ("encoder", "voxels")):
        with safe_open(str(res / f"models/{d}/sub-01_{t}.safetensors"), "pt") as fh:
            assert fh.keys(), d
        curve = pd.read_csv(res / f"models/{d}/sub-01_{t}_losses.tsv", sep="\t")
        assert {"step", "loss"} <= set(curve.columns) and len(curve) >= 2, d
    assert (res / "models/fusion/sub-01_vae_frames_fmri_only.safetensors").exists()
    assert not (res / "checkpoints").exists() or not any((res / "checkpoints").rglob("*.safetensors"))
    # The decoders' logs say what they trained on; fusion's test audio comes from training clips.
    log = (res / "logs/neural_decode_fusion_sub-01_vae_frames.log").read_text()
    assert "training clip nearest to each decoded caption" in log and "<-train" in log
