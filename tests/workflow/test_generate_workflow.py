"""The diffusers generator as workflow rules, on a copy of the tiny run: generate.method text_to_video with a
tiny real TextToVideoSDPipeline (2 steps, 2 frames of 32x32), conditioned on ridge-decoded caption token
embeddings (decode.targets includes text_tokens) with the mean-training-fMRI negative."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from fmrivid.io.h5 import read_features
from test_workflow import smk

pytestmark = pytest.mark.workflow

PIPELINE = {"model": "tiny", "steps": 2, "num_frames": 4, "height": 32, "width": 32, "batch_size": 2,
            "decode_slice": 0, "guidance_scale": 3.0}


def generate_config(tmp_path, **generate):
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["features"].update(vae_model="tiny#vae", tokens={"enabled": True, "model": "tiny"})
    cfg["decode"]["targets"] = ["text", "image", "vae", "text_tokens"]
    cfg["generate"] = {"method": "text_to_video", "chunk_size": 2, "shuffled_control": False,
                       "pipeline": dict(PIPELINE), **generate}
    path = tmp_path / "generate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_text_to_video_generation_rules(tiny_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    config = generate_config(tmp_path)
    smk(work, "results/recon/text_to_video/sub-01.h5", "--cores", "2", "--configfile", str(config))
    res = work / "results"
    ids, video, attrs = read_features(res / "recon/text_to_video/sub-01.h5")
    test_ids, _, pattrs = read_features(res / "predictions/ridge/sub-01_text_tokens.h5")
    assert ids == test_ids and attrs["method"] == "text_to_video" and attrs["chunks"] == 2
    assert video.dtype == np.uint8 and video.shape == (len(test_ids), 4, 32, 32, 3)
    assert video.std() > 0
    tokens_ids, tokens, _ = read_features(res / "features/text_tokens.h5")
    assert json.loads(pattrs["feature_shape"]) == list(tokens.shape[1:])  # ridge decoded flattened (L, D) rows
    log = (res / "logs/generate_text_to_video_sub-01_chunk-000.log").read_text()
    assert "mean of" in log and "training fMRI" in log  # the negative: decoded from the mean training fMRI


def test_vae_model_must_be_the_generators(tmp_path):
    config = generate_config(tmp_path, method="two_stage")
    cfg = yaml.safe_load(config.read_text())
    cfg["features"]["vae_model"] = "generator"
    config.write_text(yaml.safe_dump(cfg))
    proc = smk(tmp_path, "-n", "results/recon/two_stage/sub-01.h5", "--configfile", str(config), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "features.vae_model" in out and "generate.pipeline.model" in out and "'tiny#vae'" in out


def test_neuroclips_style_animatediff_through_the_dag(tiny_run, tmp_path):
    """generate.method neuroclips: a tiny real AnimateDiffPipeline (maintained upstream) from the decoded blurry
    video (ridge vae_frames) with the decoded keyframe as first frame; a clip's video does not depend on its
    chunk; the shuffled control differs; no deprecation notice."""
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    config = generate_config(tmp_path, method="neuroclips", shuffled_control=True,
                             pipeline=dict(PIPELINE, steps=3, strength=0.7))
    cfg = yaml.safe_load(config.read_text())
    cfg["features"]["vae_all_frames"] = True
    cfg["decode"]["targets"] = ["text", "image", "vae", "text_tokens", "vae_frames"]
    config.write_text(yaml.safe_dump(cfg))
    targets = ["results/recon/neuroclips/sub-01.h5", "results/recon/neuroclips_shuffled/sub-01.h5"]
    smk(work, *targets, "--cores", "2", "--configfile", str(config))
    res = work / "results"
    ids, video, attrs = read_features(res / "recon/neuroclips/sub-01.h5")
    _, shuffled, _ = read_features(res / "recon/neuroclips_shuffled/sub-01.h5")
    chunk_attrs = read_features(res / "recon/neuroclips/sub-01/chunk-000.h5")[2]
    inputs = json.loads(chunk_attrs["inputs"])
    assert inputs["first_frame"].endswith("predictions/ridge/sub-01_vae.h5[features]")
    assert inputs["motion"].endswith("predictions/ridge/sub-01_vae_frames.h5[features]")
    assert video.dtype == np.uint8 and video.shape == (len(ids), 4, 32, 32, 3) and video.std() > 0
    assert np.abs(video.astype(float) - shuffled.astype(float)).mean() > 0.5
    log = (res / "logs/generate_neuroclips_sub-01_chunk-000.log").read_text()
    assert "generate[animatediff]" in log and "deprecat" not in log.lower()
    # per-clip seeds: another chunking gives every clip the same video
    cfg["generate"]["chunk_size"] = 3
    config.write_text(yaml.safe_dump(cfg))
    smk(work, targets[0], "--cores", "2", "--configfile", str(config))
    ids3, video3, _ = read_features(res / "recon/neuroclips/sub-01.h5")
    assert ids3 == ids and np.array_equal(video3, video)


def test_image_to_video_through_the_dag(tiny_run, tmp_path):
    """generate.method image_to_video: a tiny real StableVideoDiffusionPipeline (maintained upstream) from the
    decoded keyframe, i.e. the ridge-decoded first-frame latent decoded to pixels by features.vae_model, here the
    demo generator's VAE (not the generator's own: no '<model>#vae' requirement) and without caption tokens
    (decode.targets has no text_tokens). A clip's video does not depend on its chunk; the shuffled control
    differs; no deprecation notice."""
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    assert cfg["features"]["vae_model"] == "generator" and "text_tokens" not in cfg["decode"]["targets"]
    cfg["generate"].update(method="image_to_video", chunk_size=2, shuffled_control=True,
                           pipeline={"model": "tiny", "steps": 2, "num_frames": 4, "height": 32, "width": 32,
                                     "batch_size": 2, "decode_slice": 0})
    config = tmp_path / "generate.yaml"
    config.write_text(yaml.safe_dump(cfg))
    targets = ["results/recon/image_to_video/sub-01.h5", "results/recon/image_to_video_shuffled/sub-01.h5"]
    smk(work, *targets, "--cores", "2", "--configfile", str(config))
    res = work / "results"
    ids, video, attrs = read_features(res / "recon/image_to_video/sub-01.h5")
    _, shuffled, _ = read_features(res / "recon/image_to_video_shuffled/sub-01.h5")
    test_ids = read_features(res / "predictions/ridge/sub-01_vae.h5")[0]
    chunk_attrs = read_features(res / "recon/image_to_video/sub-01/chunk-000.h5")[2]
    inputs = json.loads(chunk_attrs["inputs"])
    assert list(inputs) == ["first_frame"]
    assert inputs["first_frame"].endswith("predictions/ridge/sub-01_vae.h5[features]")
    assert chunk_attrs["condition"] == "keyframe" and chunk_attrs["keyframe_vae"].endswith("models/generator/vae")
    assert ids == test_ids and attrs["chunks"] == 2
    assert video.dtype == np.uint8 and video.shape == (len(ids), 4, 32, 32, 3) and video.std() > 0
    assert np.abs(np.diff(video.astype(float), axis=1)).mean() > 0.5  # a video, not a still
    assert np.abs(video.astype(float) - shuffled.astype(float)).mean() > 0.5
    log = (res / "logs/generate_image_to_video_sub-01_chunk-000.log").read_text()
    assert "generate[image_to_video]" in log and "keyframes:" in log and "deprecat" not in log.lower()
    # per-clip seeds: another chunking gives every clip the same video
    cfg["generate"]["chunk_size"] = 3
    config.write_text(yaml.safe_dump(cfg))
    smk(work, targets[0], "--cores", "2", "--configfile", str(config))
    ids3, video3, _ = read_features(res / "recon/image_to_video/sub-01.h5")
    assert ids3 == ids and np.array_equal(video3, video)


def test_wan_through_the_dag(tiny_run, tmp_path):
    """generate.method wan: a tiny real WanPipeline (Wan 2.1 text-to-video, maintained upstream) from noise,
    conditioned on ridge-decoded token embeddings of its OWN text encoder (features.tokens.model tiny#text_encoder:
    the tiny Wan pipeline's UMT5, the first features.tokens.max_length rows, zero-padded back by the generator) with
    the mean-training-fMRI negative; 4k+1 frames. A clip's video does not depend on its chunk; the shuffled control
    differs; no deprecation notice."""
    from fmrivid.generate import wan

    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    config = generate_config(tmp_path, method="wan", shuffled_control=True,
                             pipeline={"model": "tiny", "steps": 2, "num_frames": 5, "height": 32, "width": 32,
                                       "batch_size": 2, "guidance_scale": 6.0, "max_sequence_length": 32})
    cfg = yaml.safe_load(config.read_text())
    cfg["features"].update(n_frames=5, tokens={"enabled": True, "model": "tiny#text_encoder", "max_length": 12})
    config.write_text(yaml.safe_dump(cfg))
    targets = ["results/recon/wan/sub-01.h5", "results/recon/wan_shuffled/sub-01.h5"]
    smk(work, *targets, "--cores", "2", "--configfile", str(config))
    res = work / "results"
    ids, video, attrs = read_features(res / "recon/wan/sub-01.h5")
    _, shuffled, _ = read_features(res / "recon/wan_shuffled/sub-01.h5")
    test_ids, _, pattrs = read_features(res / "predictions/ridge/sub-01_text_tokens.h5")
    _, tokens, tattrs = read_features(res / "features/text_tokens.h5")
    text_dim = wan.load("tiny", text_encoder=False).transformer.config.text_dim
    assert tattrs["class"] == "transformers.UMT5EncoderModel" and tokens.shape[1:] == (12, text_dim)
    assert json.loads(pattrs["feature_shape"]) == [12, text_dim]  # the decoded target follows the text encoder
    chunk_attrs = read_features(res / "recon/wan/sub-01/chunk-000.h5")[2]
    inputs = json.loads(chunk_attrs["inputs"])
    assert list(inputs) == ["text_tokens"] and inputs["text_tokens"].endswith("ridge/sub-01_text_tokens.h5[features]")
    assert ids == test_ids and attrs["method"] == "wan" and attrs["chunks"] == 2
    assert video.dtype == np.uint8 and video.shape == (len(ids), 5, 32, 32, 3) and video.std() > 0
    assert np.abs(np.diff(video.astype(float), axis=1)).mean() > 0.5  # a video, not a still
    # same per-clip seeds: what differs is the decoded tokens alone. The tiny random Wan transformer (qk-normed
    # cross-attention) responds weakly to the ridge tokens' spread, so the bar is lower than the UNet methods'.
    per_clip = np.abs(video.astype(float) - shuffled.astype(float)).mean(axis=(1, 2, 3, 4))
    assert np.all(per_clip > 0.05) and per_clip.mean() > 0.1, per_clip
    log = (res / "logs/generate_wan_sub-01_chunk-000.log").read_text()
    assert "generate[wan]" in log and "mean of" in log and "deprecat" not in log.lower()
    assert "deprecat" not in (res / "logs/token_features.log").read_text().lower()
    # per-clip seeds: another chunking gives every clip the same video
    cfg["generate"]["chunk_size"] = 3
    config.write_text(yaml.safe_dump(cfg))
    smk(work, targets[0], "--cores", "2", "--configfile", str(config))
    ids3, video3, _ = read_features(res / "recon/wan/sub-01.h5")
    assert ids3 == ids and np.array_equal(video3, video)
    # generate.finetune: rule finetune_generator trains the transformer (LoRA, flow matching) on the TRAINING
    # clips' frames encoded by Wan's own 3-D VAE; generation then reads the tuned pipeline
    cfg["generate"]["finetune"] = {"enabled": True, "mode": "lora", "lora_rank": 2, "steps": 2, "batch_size": 2,
                                   "checkpoint_every": 2}
    config.write_text(yaml.safe_dump(cfg))
    smk(work, targets[0], "--cores", "2", "--configfile", str(config))
    tuned_dir = res / "models/generator/finetuned"
    info = json.loads((tuned_dir / "finetune.json").read_text())
    n_train = int((pd.read_csv(res / "splits.tsv", sep="\t")["split"] == "train").sum())
    assert info["backend"] == "wan" and info["mode"] == "lora" and info["n_train_clips"] == n_train
    assert "wan latents" in (res / "logs/finetune_generator.log").read_text()
    _, tuned, _ = read_features(res / "recon/wan/sub-01.h5")
    assert tuned.shape == video.shape and not np.array_equal(tuned, video)
