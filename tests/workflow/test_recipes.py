"""Seed recipes (config/recipes/) on the demo data, layered as a user would: config/test.yaml, the recipe, then a
"fast" layer that keeps the test's data, features and tiny models and shrinks the decoders and the generator.
Each test checks the piece that makes the recipe that seed, on a copy of the shared tiny run."""

import json
import shutil

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO
from fmrivid.io.h5 import read_features
from test_decoders_workflow import TINY
from test_generate_workflow import PIPELINE
from test_workflow import smk

pytestmark = pytest.mark.workflow


def fast_layer(tmp_path, targets=None, **generate):
    """The test's own data, features and selection (nothing upstream recomputed but the generator's VAE
    latents), tiny models, tiny neural decoders and a 2-step tiny pipeline."""
    test = yaml.safe_load((REPO / "config/test.yaml").read_text())
    features = dict(test["features"], vae_model="tiny#vae", vae_all_frames=True, image_frame="middle")
    layer = {"preprocess": test["preprocess"], "features": features,
             "decode": {**{k: v for k, v in TINY.items() if k != "neural"},
                        "fusion": {**TINY["fusion"], "pca": 8},  # the recipe's 256 > the demo's training rows
                        **({"targets": targets} if targets else {})},
             "generate": {"device": "cpu", "chunk_size": 4, "shuffled_control": False,
                          "pipeline": dict(PIPELINE, motion_mode="absolute"), **generate},
             "evaluate": {"n_boot": 100, "device": "cpu", "frame_classifier": "demo", "video_classifier": "tiny",
                          "clip_model": None, "lpips": []}}
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(layer))
    return path


def run_recipe(tiny_run, tmp_path, recipe, *targets, **generate):
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    smk(work, *targets, "--cores", "2", "--configfile", str(REPO / "config/test.yaml"),
        str(REPO / f"config/recipes/{recipe}.yaml"), str(fast_layer(tmp_path, **generate)))
    return work / "results"


def test_mind_animator_generation_reads_the_semantic_decoders_token_mlp(tiny_run, tmp_path):
    res = run_recipe(tiny_run, tmp_path, "mind_animator", "results/recon/mind_animator/sub-01.h5")
    ids, video, attrs = read_features(res / "recon/mind_animator/sub-01.h5")
    inputs = json.loads(attrs["inputs"])
    assert inputs["text_tokens"].endswith("predictions/semantic/sub-01_text.h5[tokens]")
    assert inputs["first_frame"].endswith("predictions/structure/sub-01_vae.h5[features]")
    assert inputs["motion"].endswith("predictions/motion/sub-01_vae_frames.h5[features]")
    assert video.shape[0] == len(ids) and video.std() > 0
    _, tokens, _ = read_features(res / "features/text_tokens.h5")
    with h5py.File(res / "predictions/semantic/sub-01_text.h5") as f:  # the MLP's tokens, in the generator's space
        assert f["tokens"].shape == (len(ids), *tokens.shape[1:]) and f["negative_tokens"].shape[0] == 1
        assert np.isfinite(f["tokens"][()]).all()
        assert f.attrs["target_feature"] == "clip_text"  # its contrastive text target: CLIP text, as the seed
        assert f["features"].shape[1] == read_features(res / "features/clip_text.h5")[1].shape[1]
    log = (res / "logs/generate_mind_animator_sub-01_chunk-000.log").read_text()
    assert "negative_tokens" in log  # the negative: the semantic decoder's reading of the mean training fMRI
    assert not (res / "models/ridge/sub-01_text_tokens.safetensors").exists() or "token_model" not in log


def test_audio_guided_fused_and_fmri_only_videos_are_two_methods(tiny_run, tmp_path):
    res = run_recipe(tiny_run, tmp_path, "audio_guided", "results/recon/fusion/sub-01.h5",
                     "results/recon/fmri_only/sub-01.h5")
    f_ids, fused, f_attrs = read_features(res / "recon/fusion/sub-01.h5")
    o_ids, only, o_attrs = read_features(res / "recon/fmri_only/sub-01.h5")
    assert f_ids == o_ids and fused.shape == only.shape
    assert json.loads(o_attrs["inputs"])["motion"].endswith("predictions/fusion/sub-01_vae_frames.h5[fmri_only]")
    assert json.loads(f_attrs["inputs"])["motion"].endswith("predictions/fusion/sub-01_vae_frames.h5[features]")
    # Same generator, seeds and tokens; only the motion latents differ: so do the videos (first frame aside).
    assert np.abs(fused.astype(float) - only.astype(float)).mean() > 0.5


def test_glfa_cotrains_the_generator_and_decodes_cross_subject_from_the_other_subjects(tiny_run, tmp_path):
    res = run_recipe(tiny_run, tmp_path, "glfa", "results/recon/glfa_cross_subject/sub-02.h5",
                     "results/recon/glfa/sub-02.h5",
                     finetune={"steps": 2, "batch_size": 2, "checkpoint_every": 2, "head_rank": 4},
                     targets=["text", "image", "vae", "text_tokens"])  # (the real-data default; test.yaml drops it)
    ids, cross, attrs = read_features(res / "recon/glfa_cross_subject/sub-02.h5")
    _, within, w_attrs = read_features(res / "recon/glfa/sub-02.h5")
    assert json.loads(attrs["inputs"])["text_tokens"].endswith("predictions/align/sub-02_text.h5[tokens]")
    assert cross.shape == within.shape and not np.array_equal(cross, within)
    # stage 2 (Eq. 6): the within-subject videos come from the co-trained generator, conditioned on its head's
    # tokens of sub-02's aligned test maps; both loss terms were trained
    assert json.loads(w_attrs["inputs"])["text_tokens"].endswith("predictions/cotrain/sub-02_text_tokens.h5[tokens]")
    assert w_attrs["generator"].endswith("generator/cotrained")
    losses = (res / "models/generator/cotrained/losses.tsv").read_text().splitlines()
    assert {"denoise", "glfa"} <= set(losses[0].split("\t"))
    with h5py.File(res / "predictions/cotrain/sub-02_text_tokens.h5") as f:
        assert f["tokens"].shape[0] == len(ids) and f["negative_tokens"].shape[0] == 1
        assert list(f["clip_id"].asstr()[()]) == list(ids)
    with h5py.File(res / "predictions/align/sub-02_text.h5") as f:
        assert f.attrs["heldout"] == "02" and f["tokens"].shape[0] == len(ids) and f["negative_tokens"].shape[0] == 1
    log = (res / "logs/align_decode_sub-02.log").read_text()
    assert "['01']" in log  # the LOSO decoder of sub-02 was trained on sub-01's aligned maps only
    assert "negative_tokens" in (res / "logs/generate_glfa_cross_subject_sub-02_chunk-000.log").read_text()


def test_a_variant_reading_a_decoder_not_run_stops_the_plan_naming_the_key(tmp_path):
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["generate"]["variants"] = {"mine": {"caption": "semantic"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = smk(tmp_path, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "generate.variants.mine.caption" in out and "decode.neural" in out
    cfg["decode"]["neural"] = ["semantic"]  # now it is run: the plan generates `mine` from its decoded text
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(cfg))
    proc = smk(tmp_path, "-n", "results/recon/mine/sub-01.h5", "--configfile", str(tmp_path / "ok.yaml"))
    assert "results/predictions/semantic/sub-01_text.h5" in proc.stdout


def test_encoder_decoder_reads_consecutive_frames_at_the_stimulus_rate(tiny_run, tmp_path):
    """Seed 004: chunks of consecutive frames of the video at its own rate (the demo's 4-fps clips hold 8), the
    decoder loss with its VGG (tiny, random: no weights here) and SSIM terms."""
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    layer = yaml.safe_load(fast_layer(tmp_path).read_text())
    layer["decode"]["encoder"] = {**TINY["encoder"], "chunk_frames": 8, "frame_size": 32, "perceptual_model": "tiny"}
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump(layer))
    smk(work, "results/metrics/decoders/encoder_sub-01_voxels.tsv", "--cores", "2", "--configfile",
        str(REPO / "config/test.yaml"), str(REPO / "config/recipes/encoder_decoder.yaml"), str(tmp_path / "fast.yaml"))
    res = work / "results"
    ids, chunks, attrs = read_features(res / "features/encoder_chunks.h5")
    assert chunks.shape[1:] == (8, 32, 32, 3) and attrs["kind"] == "encoder_chunks"
    flat = chunks.reshape(len(chunks), 8, -1).astype(int)
    distinct = [len({f.tobytes() for f in clip}) for clip in chunks]
    assert min(distinct) == 8, distinct  # 8 different frames per chunk: nothing repeated or resampled
    # frames.h5 samples 4 of the same 8 frames (0, 2, 4, 6): the chunk holds them in place, in between the others
    _, sampled, _ = read_features(res / "features/frames.h5", ids)
    np.testing.assert_array_equal(chunks[:, [0, 2, 4, 6]], sampled)
    assert np.abs(np.diff(flat, axis=1)).mean() > 0  # it moves
    losses = (res / "models/encoder/sub-01_voxels_losses.tsv").read_text().splitlines()[0]
    assert "frame_vgg" in losses and "frame_ssim" in losses  # the seed's perceptual and SSIM terms are trained
    table = (res / "metrics/decoders/encoder_sub-01_voxels.tsv").read_text()
    assert "decoded_frame_ssim" in table and "encoder_shuffled_stimulus" in table
    assert "tiny" in (res / "logs/encoder_model_sub-01.log").read_text().lower()


def test_brain_diffuser_refines_every_frame_with_stable_diffusion_img2img(tiny_run, tmp_path):
    """Seed 003: each frame's decoded low-level latent is the init image of Stable Diffusion img2img (DDPM,
    strength 0.75), conditioned on the decoded caption tokens; its metrics include Brain-Diffuser's protocol."""
    res = run_recipe(tiny_run, tmp_path, "brain_diffuser_video", "results/recon/image_img2img/sub-01.h5",
                     targets=["text", "vae_frames", "text_tokens"])
    ids, video, attrs = read_features(res / "recon/image_img2img/sub-01.h5")
    inputs = json.loads(attrs["inputs"])
    assert inputs["vae"].endswith("predictions/ridge/sub-01_vae_frames.h5[features]")
    assert inputs["text_tokens"].endswith("predictions/ridge/sub-01_text_tokens.h5[features]")
    _, frames, _ = read_features(res / "features/frames.h5", ids)
    assert video.shape == frames.shape and video.dtype == np.uint8
    assert np.abs(np.diff(video.astype(int), axis=1)).mean() > 0  # frames differ: each from its own latent
    log = (res / "logs/generate_image_img2img_sub-01_chunk-000.log").read_text()
    assert "generate[image_img2img]" in log and "ddpm" in log and "strength 0.75" in log


def test_neuroclips_recipe_animates_the_decoded_blurry_video_from_the_decoded_keyframe(tiny_run, tmp_path):
    res = run_recipe(tiny_run, tmp_path, "neuroclips", "results/recon/neuroclips/sub-01.h5")
    ids, video, _ = read_features(res / "recon/neuroclips/sub-01.h5")
    attrs = read_features(res / "recon/neuroclips/sub-01/chunk-000.h5")[2]
    inputs = json.loads(attrs["inputs"])
    assert inputs["first_frame"].endswith("predictions/structure/sub-01_vae.h5[features]")  # the keyframe
    assert inputs["motion"].endswith("predictions/motion/sub-01_vae_frames.h5[features]")  # the blurry video
    assert inputs["text_tokens"].endswith("predictions/ridge/sub-01_text_tokens.h5[features]")
    assert video.dtype == np.uint8 and video.shape[0] == len(ids) and video.std() > 0
    log = (res / "logs/generate_neuroclips_sub-01_chunk-000.log").read_text()
    assert "generate[animatediff]" in log and "from strength" in log and "deprecat" not in log.lower()
