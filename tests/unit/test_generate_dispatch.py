"""generate_stages.generate_chunk with the diffusers generator: ridge-decoded token embeddings -> videos.

A tiny real TextToVideoSDPipeline (2 steps, 2 frames of 32x32); the decoded inputs come from a real ridge fit
(decoders_stages.decode on (N, L, D) token features, flattened) on a planted linear map from fMRI.
"""

import json

import numpy as np
import pytest
import torch

from fmrivid.decoders import stages as decoders_stages

from fmrivid.generate import stages as generate_stages
from fmrivid.errors import ConfigError, InputError
from fmrivid.io.h5 import read_features, write_features
from fmrivid.preprocess.pipeline import SubjectData, write_subject

L, D = 16, 32         # token embeddings: the tiny pipeline's 16 tokens (empty-prompt negative) of width 32
LAT = (4, 4, 4)       # 32x32 frames through the tiny pipeline's VAE (factor 8)
N_TRAIN, N_TEST, VOX = 24, 3, 40
PIPE = {"steps": 2, "num_frames": 2, "height": 32, "width": 32, "guidance_scale": 3.0, "batch_size": 2,
        "decode_slice": 0, "strength": 1.0}


def _quiet(_msg):
    pass


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """fMRI file, ridge-decoded text_tokens (prediction + model) and a flat 'vae' prediction file."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("dispatch")
    rng = np.random.default_rng(0)
    train_ids = [f"train{i:02d}" for i in range(N_TRAIN)]
    test_ids = [f"test{i}" for i in range(N_TEST)]
    # Planted signal: 3 latent factors drive both the token embeddings and the voxels.
    Z = rng.normal(size=(N_TRAIN + N_TEST, 3)).astype(np.float32)
    tokens = (Z @ rng.normal(size=(3, L * D)).astype(np.float32)).reshape(-1, L, D)
    X = Z @ rng.normal(size=(3, VOX)).astype(np.float32) + 0.05 * rng.normal(size=(len(Z), VOX)).astype(np.float32)
    ijk = np.stack(np.unravel_index(np.arange(VOX), (4, 5, 2)), 1)
    write_subject(d / "sub-01.h5", SubjectData("01", X[:N_TRAIN], train_ids, X[N_TRAIN:], test_ids, ijk,
                                               np.eye(4), (4, 5, 2), np.ones(VOX)))
    write_features(d / "text_tokens.h5", train_ids + test_ids, tokens, {"kind": "text_tokens"})
    decoders_stages.decode(d / "sub-01.h5", d / "text_tokens.h5", {"alphas": [0.1, 1.0, 10.0], "cv": 3, "device": "cpu"},
                      d / "model.safetensors", d / "pred_tokens.h5", log=_quiet)
    write_features(d / "pred_vae.h5", test_ids, rng.normal(size=(N_TEST, int(np.prod(LAT)))).astype(np.float32),
                   {"feature_shape": json.dumps(LAT)})
    return d, tokens[N_TRAIN:]


def _cfg(method="text_to_video", shuffled_inputs=(), **pipe):
    return {"method": method, "device": "cpu", "chunk_size": 2, "pipeline": {**PIPE, **pipe},
            "shuffled_inputs": list(shuffled_inputs)}


def _run(d, out, method="text_to_video", chunk=0, shuffle=False, vae="pred_vae.h5", shuffled_inputs=(), **pipe):
    files = {"text_tokens": d / "pred_tokens.h5", "vae": d / vae}
    generate_stages.generate_chunk(_cfg(method, shuffled_inputs, **pipe), 0, out, chunk=chunk, n_total=N_TEST,
                                   shuffle=shuffle, log=_quiet, **files, token_model=d / "model.safetensors",
                        fmri_path=d / "sub-01.h5")
    return read_features(out)


def test_ridge_decodes_flattened_token_embeddings(decoded):
    d, true_tokens = decoded
    ids, pred, attrs = read_features(d / "pred_tokens.h5")
    assert pred.shape == (N_TEST, L * D) and json.loads(attrs["feature_shape"]) == [L, D]
    r = np.corrcoef(pred.ravel(), true_tokens.reshape(N_TEST, -1).ravel())[0, 1]
    assert r > 0.8  # planted linear map recovered from the training rows only


def test_text_to_video_chunk_and_shuffled_control(decoded, tmp_path):
    d, _ = decoded
    ids0, v0, a0 = _run(d, tmp_path / "c0.h5", chunk=0)
    ids1, v1, _ = _run(d, tmp_path / "c1.h5", chunk=1)
    assert ids0 == ["test0", "test1"] and ids1 == ["test2"]
    assert v0.dtype == np.uint8 and v0.shape == (2, 2, 32, 32, 3)
    assert a0["method"] == "text_to_video" and a0["storage"] == "lossless uint8" and not a0["shuffled_features"]
    _, again, _ = _run(d, tmp_path / "again.h5", chunk=0)
    np.testing.assert_array_equal(v0, again)  # per-clip seeds: reproducible
    # Shuffled control: clip i gets the decoded tokens of clip perm[i] (same seed per clip id) -> differs.
    _, vs, as_ = _run(d, tmp_path / "s0.h5", chunk=0, shuffle=True)
    assert as_["method"] == "text_to_video_shuffled" and as_["shuffled_features"]
    assert vs.shape == v0.shape and not np.array_equal(vs, v0)


def test_negative_is_the_mean_training_fmri_decoding(decoded, tmp_path):
    d, _ = decoded
    _, guided, _ = _run(d, tmp_path / "g.h5")
    _, empty, _ = _run(d, tmp_path / "e.h5", negative="empty_prompt")
    assert not np.array_equal(guided, empty)  # the negative branch is used, and it is not the empty prompt


def test_two_stage_from_decoded_latents(decoded, tmp_path):
    d, _ = decoded
    _, v, attrs = _run(d, tmp_path / "t.h5", method="two_stage", chunk=1, strength=0.5)
    assert v.shape == (1, 2, 32, 32, 3) and attrs["method"] == "two_stage"


def test_missing_decoded_input_and_vae_mismatch(decoded, tmp_path):
    d, _ = decoded
    with pytest.raises(InputError, match="missing \\['vae'\\]"):
        generate_stages.generate_chunk(_cfg("two_stage"), 0, tmp_path / "x.h5", n_total=N_TEST,
                                       text_tokens=d / "pred_tokens.h5", token_model=d / "model.safetensors",
                            fmri_path=d / "sub-01.h5", log=_quiet)
    assert not (tmp_path / "x.h5").exists()
    with pytest.raises(ConfigError) as err:
        generate_stages.check_generator_vae({"method": "structure_motion", "pipeline": {"model": "some/dir"}}, "generator")
    msg = str(err.value)
    assert "features.vae_model" in msg and "generate.pipeline.model" in msg and "'some/dir#vae'" in msg
    generate_stages.check_generator_vae({"method": "two_stage", "pipeline": {"model": "tiny"}}, "tiny#vae")
    generate_stages.check_generator_vae({"method": "demo"}, "generator")


def test_tiny_vae_spec_is_the_tiny_generators_vae():
    from fmrivid import models

    vae = models.load("tiny#vae", "vae").model
    pipe = models.load("tiny", "text_to_video").model
    assert type(vae).__name__ == "AutoencoderKL"
    ours, theirs = vae.state_dict(), pipe.vae.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(ConfigError, match="no vae component 'unet'"):
        models.load("tiny#unet", "vae")


def test_shuffled_control_can_derange_one_input_only(decoded, tmp_path):
    """generate.shuffled_inputs [first]: the control gets another clip's first-frame latent and its own tokens,
    exactly what an unshuffled run on a first-frame file with deranged rows gives."""
    from fmrivid.metrics.stats import derangement

    d, _ = decoded
    ids, lat, attrs = read_features(d / "pred_vae.h5")
    write_features(tmp_path / "vae_deranged.h5", ids, lat[derangement(N_TEST, 0)], attrs)
    (tmp_path / "vae_deranged.h5").rename(d / "vae_deranged.h5")
    only_first = []
    for chunk in (0, 1):
        only_first.append(_run(d, tmp_path / f"s{chunk}.h5", "two_stage", chunk, shuffle=True,
                               shuffled_inputs=["first"])[1])
        manual = _run(d, tmp_path / f"m{chunk}.h5", "two_stage", chunk, vae="vae_deranged.h5")[1]
        np.testing.assert_array_equal(only_first[-1], manual)
    every = np.concatenate([_run(d, tmp_path / f"a{c}.h5", "two_stage", c, shuffle=True)[1] for c in (0, 1)])
    assert not np.array_equal(np.concatenate(only_first), every)  # all inputs deranged: the tokens too


def test_wan_needs_no_generator_vae_and_its_pipeline_is_checked_when_planning():
    # wan is conditioned on tokens only: any features.vae_model is fine (a real Wan model has no '#vae' that
    # features could use, its VAE being causal 3-D); the other token-only method keeps the check
    generate_stages.check_generator_vae({"method": "wan", "pipeline": {"model": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"}},
                                        "stabilityai/sd-vae-ft-mse")
    with pytest.raises(ConfigError, match="features.vae_model"):
        generate_stages.check_generator_vae({"method": "text_to_video", "pipeline": {"model": "some/dir"}},
                                            "stabilityai/sd-vae-ft-mse")
    # the backend's own constraints fail at plan time, naming the key
    with pytest.raises(ConfigError, match=r"generate.pipeline.num_frames.*4k\+1.*found 8"):
        generate_stages.check_pipeline({"method": "wan", "pipeline": {"num_frames": 8, "height": 32, "width": 32}})
    generate_stages.check_pipeline({"method": "wan", "pipeline": {"num_frames": 9, "height": 32, "width": 32}})
    with pytest.raises(ConfigError, match="generate.pipeline.scheduler"):
        generate_stages.check_pipeline({"method": "animatediff", "pipeline": {"scheduler": "unipc"}})
    generate_stages.check_pipeline({"method": "demo"})
    # every generator plans with the defaults ('auto' scheduler: the method's own, as generation resolves it)
    for method in ("animatediff", "neuroclips", "image_to_video", "text_to_video", "image_img2img"):
        generate_stages.check_pipeline({"method": method, "pipeline": {}})
    generate_stages.check_pipeline({"method": "wan", "pipeline": {"num_frames": 5}})
