"""Wan 2.1 text-to-video backend (fmrivid.generate.wan): diffusers WanPipeline conditioned on decoded tokens.

One module-scoped tiny ``WanPipeline`` (real diffusers/transformers classes: WanTransformer3DModel,
AutoencoderKLWan, UMT5EncoderModel, flow UniPC; random weights): 9 frames of 32x32 per clip, 3 steps. The backbone:
the video is a video (frames differ), a clip never depends on its batch-mates, chunk or batch size, the decoded
tokens (not the clip order) drive the video, the wrapper hands the pipeline exactly the embeddings the pipeline
would compute from captions itself (zero-padded like its prompts), the mean-training negative drives guidance
only when guidance is on, and loading is offline and warning-free.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import quiet as _quiet

from fmrivid.errors import ConfigError, InputError, ModelNotAvailableError
from fmrivid.generate import wan
from fmrivid.utils import clip_seed

L, D, MAXLEN = 8, 32, 16  # decoded tokens per clip, token width (tiny text_dim), padded length
IDS = ["seg1_0", "seg1_1", "seg2_7"]
CFG = {"num_frames": 9, "height": 32, "width": 32, "steps": 3, "guidance_scale": 5.0, "batch_size": 3,
       "max_sequence_length": MAXLEN}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: two workers, two cores


@pytest.fixture(scope="module")
def pipe():
    return wan.load("tiny")


@pytest.fixture(scope="module")
def cond():
    rng = np.random.default_rng(0)
    return {"text_tokens": rng.standard_normal((3, L, D)).astype(np.float32),
            "negative": rng.standard_normal((L, D)).astype(np.float32)}


def _rows(cond, sl):
    return {k: (v if k == "negative" else v[sl]) for k, v in cond.items()}


def _gen(pipe, cond, ids=IDS, log=_quiet, **cfg):
    return wan.generate(pipe, cond, ids, dict(CFG, **cfg), seed=0, log=log)


def _uint8(frames):
    return np.round(np.clip(frames, 0, 1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- the model


def test_tiny_pipeline_is_the_real_wan_architecture_and_seeded(pipe):
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5EncoderModel

    assert isinstance(pipe, WanPipeline)
    assert isinstance(pipe.transformer, WanTransformer3DModel) and isinstance(pipe.vae, AutoencoderKLWan)
    assert isinstance(pipe.text_encoder, UMT5EncoderModel)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert pipe.scheduler.config.prediction_type == "flow_prediction" and pipe.scheduler.config.use_flow_sigmas
    assert pipe.vae_scale_factor_temporal == 4 and pipe.vae_scale_factor_spatial == 8
    assert wan.text_dim(pipe) == pipe.text_encoder.config.d_model == D
    same, other = wan.load("tiny"), wan.load("tiny", seed=1)
    bare = wan.load("tiny", text_encoder=False)  # the text tower is built last: same generator weights
    assert bare.text_encoder is None and bare.tokenizer is None
    ref = pipe.transformer.state_dict()
    same_sd, bare_sd = same.transformer.state_dict(), bare.transformer.state_dict()
    for name, w in ref.items():
        assert torch.equal(w, same_sd[name]) and torch.equal(w, bare_sd[name])
    assert any(not torch.equal(w, other.transformer.state_dict()[k]) for k, w in ref.items())


def test_prompt_embeddings_are_the_pipelines_zero_padded_encoder_states(pipe):
    emb = wan.prompt_embeddings(pipe, ["a red car", "a dog runs on a long sandy beach"], MAXLEN)
    ids = pipe.tokenizer(["a red car", "a dog runs on a long sandy beach"]).input_ids
    assert emb.shape == (2, MAXLEN, D) and emb.dtype == np.float32
    for row, n_tok in zip(emb, map(len, ids)):
        assert np.all(np.abs(row[:n_tok]).sum(-1) > 0) and not np.any(row[n_tok:])
    with torch.inference_mode():  # independent: the text encoder's own last hidden state on the real tokens
        t = pipe.tokenizer(["a red car"], return_tensors="pt")
        h = pipe.text_encoder(t.input_ids, t.attention_mask).last_hidden_state[0].numpy()
    np.testing.assert_allclose(emb[0, :len(ids[0])], h, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- videos


def test_output_is_a_uint8_video_with_moving_frames_and_one_log_line_per_batch(pipe, cond):
    lines = []
    video = _gen(pipe, cond, log=lines.append, batch_size=2)
    assert video.shape == (3, 9, 32, 32, 3) and video.dtype == np.uint8
    steps = np.abs(np.diff(video.astype(np.int16), axis=1)).mean(axis=(2, 3, 4))  # (clip, frame pair)
    assert np.all(steps.max(axis=1) > 1.0), steps  # a video, not a still repeated
    assert np.any(video[0] != video[1])
    assert len(lines) == 2 and lines[0].startswith("generate[wan]: batch 1/2, clips 1-2 of 3,")
    assert lines[1].startswith("generate[wan]: batch 2/2, clips 3-3 of 3,")


def test_a_clip_does_not_depend_on_its_batch_mates_chunk_or_batch_size(pipe, cond):
    full = _gen(pipe, cond, batch_size=3)
    one_by_one = _gen(pipe, cond, batch_size=1)
    alone = _gen(pipe, _rows(cond, slice(1, 2)), ids=IDS[1:2], batch_size=3)
    np.testing.assert_array_equal(full[1], one_by_one[1])
    np.testing.assert_array_equal(full[1], alone[0])
    np.testing.assert_array_equal(full, one_by_one)
    # exact_cpu off: 3 clips share each transformer call; CPU kernels may round differently per batch size
    batched = _gen(pipe, cond, batch_size=3, exact_cpu=False)
    single = _gen(pipe, cond, batch_size=1, exact_cpu=False)
    diff = np.abs(batched.astype(np.int16) - single.astype(np.int16))
    assert diff.max() <= 2, f"batch of 3 vs 1 without exact_cpu: max |diff| {diff.max()} grey levels"
    assert diff.mean() < 0.05


def test_the_decoded_tokens_drive_the_video_shuffled_control_differs(pipe, cond):
    video = _gen(pipe, cond)
    perm = [1, 2, 0]
    shuffled = _gen(pipe, {"text_tokens": cond["text_tokens"][perm], "negative": cond["negative"]})
    for i in range(3):
        assert np.abs(shuffled[i].astype(np.int16) - video[i].astype(np.int16)).mean() > 1.0


def test_the_wrapper_passes_the_embeddings_the_pipeline_computes_from_captions(pipe):
    captions, negative = ["a red car", "two birds", "snow"], "grey blur"
    # decoded-token stand-ins: the first L rows of the pipeline's own prompt embeddings (the rest are zeros)
    tokens = wan.prompt_embeddings(pipe, captions, MAXLEN)[:, :L]
    neg = wan.prompt_embeddings(pipe, [negative], MAXLEN)[0, :L]
    video = _gen(pipe, {"text_tokens": tokens, "negative": neg})
    for i, (caption, clip) in enumerate(zip(captions, IDS)):
        ref = pipe(prompt=[caption], negative_prompt=[negative], height=32, width=32, num_frames=9,
                   num_inference_steps=3, guidance_scale=5.0, max_sequence_length=MAXLEN,
                   generator=[torch.Generator().manual_seed(clip_seed(0, clip))], output_type="np").frames
        np.testing.assert_array_equal(video[i], _uint8(ref[0]))


def test_the_mean_training_negative_drives_guidance_only_when_guidance_is_on(pipe, cond):
    # (a permutation of the negative's rows would not do: Wan's cross-attention has no positions over the tokens)
    other = dict(cond, negative=np.random.default_rng(1).standard_normal((L, D)).astype(np.float32))
    np.testing.assert_array_equal(_gen(pipe, cond, guidance_scale=1.0), _gen(pipe, other, guidance_scale=1.0))
    np.testing.assert_array_equal(_gen(pipe, {"text_tokens": cond["text_tokens"]}, guidance_scale=1.0),
                                  _gen(pipe, cond, guidance_scale=1.0))
    guided, guided_other = _gen(pipe, cond), _gen(pipe, other)
    assert np.abs(guided.astype(np.int16) - guided_other.astype(np.int16)).mean() > 1.0
    with pytest.raises(InputError, match="negative"):
        _gen(pipe, {"text_tokens": cond["text_tokens"]})
    empty = _gen(pipe, {"text_tokens": cond["text_tokens"]}, negative="empty_prompt")
    ref = _gen(pipe, {"text_tokens": cond["text_tokens"],
                      "negative": wan.prompt_embeddings(pipe, [""], MAXLEN)[0, :L]})
    np.testing.assert_array_equal(empty, ref)


def test_scheduler_and_flow_shift_choices_change_the_sampler(pipe, cond):
    auto = _gen(pipe, cond)
    np.testing.assert_array_equal(auto, _gen(pipe, cond, scheduler="unipc", flow_shift=3.0))
    for variant in ({"scheduler": "flow_euler"}, {"flow_shift": 6.0}):
        assert np.abs(_gen(pipe, cond, **variant).astype(np.int16) - auto.astype(np.int16)).mean() > 0.5, variant


# --------------------------------------------------------------------------- loading


def test_saved_pipeline_directory_reloads_and_generates_the_same(pipe, cond, tmp_path):
    pipe.save_pretrained(tmp_path / "wan")
    video = _gen(pipe, cond)
    np.testing.assert_array_equal(_gen(wan.load(tmp_path / "wan"), cond), video)
    bare = wan.load(str(tmp_path / "wan"), text_encoder=False)
    assert bare.text_encoder is None
    np.testing.assert_array_equal(_gen(bare, cond), video)
    with pytest.raises(ConfigError, match="text encoder"):
        wan.prompt_embeddings(bare, ["a cat"])


def test_uncached_hub_id_fails_with_the_download_command(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotAvailableError) as err:
        wan.load("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in str(err.value) and "hf download" in str(err.value)
    with pytest.raises(InputError):
        wan.load(str(tmp_path / "no-such-dir"))


def test_reduced_precision_keeps_float32_modules_and_a_float32_vae(cond):
    fresh = wan.load("tiny")
    video = _gen(fresh, cond, dtype="bfloat16")
    assert video.shape == (3, 9, 32, 32, 3)
    kept = {n for n, p in fresh.transformer.named_parameters() if p.dtype == torch.float32}
    assert "scale_shift_table" in kept and any("time_embedder" in n for n in kept)
    assert any(p.dtype == torch.bfloat16 for p in fresh.transformer.parameters())
    assert {p.dtype for p in fresh.vae.parameters()} == {torch.float32}


def test_loading_and_generating_print_no_deprecation_warning(tmp_path):
    script = (
        "import warnings, numpy as np, torch\n"
        "warnings.simplefilter('always')\n"
        "torch.set_num_threads(1)\n"
        "from fmrivid.generate import wan\n"
        "p = wan.load('tiny')\n"
        f"p.save_pretrained({str(tmp_path / 'w')!r})\n"
        f"b = wan.load({str(tmp_path / 'w')!r}, dtype='bfloat16')\n"
        "assert b.transformer.scale_shift_table.dtype == torch.float32 and b.text_encoder.dtype == torch.bfloat16\n"
        "assert {q.dtype for q in b.transformer.parameters()} == {torch.float32, torch.bfloat16}\n"
        f"p = wan.load({str(tmp_path / 'w')!r})\n"
        "c = {'text_tokens': np.ones((1, 4, 32), np.float32), 'negative': np.zeros((4, 32), np.float32)}\n"
        "cfg = dict(num_frames=5, height=32, width=32, steps=2, max_sequence_length=8)\n"
        "wan.generate(p, c, ['x'], cfg, seed=0, log=lambda m: None)\n"
        "low = dict(cfg, dtype='bfloat16', scheduler='flow_euler', vae_tiling=True)\n"
        "wan.generate(p, c, ['x'], low, seed=0, log=lambda m: None)\n"
        "wan.prompt_embeddings(p, ['a cat'], 8)\n"
        "print('done')\n"
    )
    env = dict(os.environ, PYTHONWARNINGS="always", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0 and "done" in run.stdout, run.stderr[-3000:]
    for needle in ("DeprecationWarning", "FutureWarning", "deprecat", "should be kept in float32"):
        assert needle.lower() not in run.stderr.lower(), run.stderr[-3000:]


# --------------------------------------------------------------------------- errors


def test_bad_settings_name_the_key_the_expectation_and_the_value():
    cases = [({"num_frames": 8}, "num_frames.*4k\\+1.*8"), ({"height": 40}, "height.*multiple of 16.*40"),
             ({"width": 0}, "width"), ({"steps": True}, "steps"), ({"guidance_scale": -1}, "guidance_scale"),
             ({"flow_shift": 0}, "flow_shift"), ({"dtype": "int8"}, "dtype"), ({"scheduler": "ddim"}, "scheduler"),
             ({"negative": "none"}, "negative"), ({"exact_cpu": 1}, "exact_cpu"), ({"bogus": 1}, "bogus"),
             ({"method": "two_stage"}, "method"), ({"max_sequence_length": -1}, "max_sequence_length")]
    for cfg, pattern in cases:
        with pytest.raises(ConfigError, match="generate.pipeline" + ("" if "bogus" in cfg else "." + pattern)):
            wan.settings(cfg)
    s = wan.settings({"num_frames": 81, "flow_shift": 5})
    assert s["num_frames"] == 81 and s["flow_shift"] == 5.0 and set(s) == set(wan.DEFAULTS)


def test_bad_inputs_name_what_is_wrong(pipe, cond):
    with pytest.raises(InputError, match="text_dim"):
        _gen(pipe, {"text_tokens": np.zeros((3, L, D + 1), np.float32), "negative": cond["negative"]})
    with pytest.raises(InputError, match="max_sequence_length"):
        _gen(pipe, cond, max_sequence_length=4)
    with pytest.raises(InputError, match="one token embedding"):
        _gen(pipe, dict(cond, negative=cond["negative"][:4]))
    with pytest.raises(InputError, match="unique"):
        _gen(pipe, cond, ids=["a", "a", "b"])
    with pytest.raises(InputError, match="one row per clip"):
        _gen(pipe, cond, ids=IDS[:2])


# --------------------------------------------------------------------------- generate.method wan (the DAG's entry)


def test_generate_method_wan_loads_and_generates_through_the_wan_backend(pipe, cond):
    from diffusers import WanPipeline

    from fmrivid.generate import pipelines
    from fmrivid.generate.methods import METHODS, token_kind

    assert METHODS["wan"].generator == "wan" and METHODS["wan"].decoded == {"text_tokens": "tokens"}
    assert token_kind("wan") == "umt5_tokens" and token_kind("text_to_video") == "text_tokens"
    pcfg = pipelines.settings(dict(CFG), method="wan")
    loaded = pipelines.load_pipeline("tiny", pcfg, seed=0)
    assert isinstance(loaded, WanPipeline) and loaded.text_encoder is None  # decoded tokens: no UMT5 needed
    ref = pipe.transformer.state_dict()
    assert all(torch.equal(w, loaded.transformer.state_dict()[k]) for k, w in ref.items())
    # the stage's path: flat decoder rows (N, L*D) and the mean-training negative reshaped to (L, D)
    inputs = pipelines.generation_inputs("wan", {"text_tokens": cond["text_tokens"].reshape(3, -1)},
                                         negative=cond["negative"].reshape(-1), token_shape=(L, D))
    assert inputs["text_tokens"].shape == (3, L, D) and inputs["negative"].shape == (L, D)
    lines = []
    video = pipelines.generate(loaded, "wan", inputs, IDS, pcfg, seed=0, log=lines.append)
    np.testing.assert_array_equal(video, _gen(pipe, cond))  # exactly wan.generate on the same settings
    assert video.shape == (3, 9, 32, 32, 3) and lines[0].startswith("generate[wan]: batch 1/1")
    with_text = pipelines.load_pipeline("tiny", pipelines.settings(dict(CFG, negative="empty_prompt"), method="wan"))
    assert with_text.text_encoder is not None  # the empty prompt is embedded by the pipeline's own UMT5
    shifted = pipelines.wan_settings(pipelines.settings(dict(CFG, flow_shift=5, scheduler="flow_euler"), method="wan"))
    assert shifted["flow_shift"] == 5.0 and shifted["scheduler"] == "flow_euler"
    assert shifted["method"] == "text_to_video"  # wan's own name of its conditioning


def test_generate_method_wan_errors_name_the_keys(pipe, cond):
    from fmrivid.generate import pipelines

    pcfg = pipelines.settings(dict(CFG), method="wan")
    wide = {"text_tokens": np.zeros((3, L, D + 8), np.float32), "negative": np.zeros((L, D + 8), np.float32)}
    with pytest.raises(ConfigError, match=r"^features\.tokens\.model: .*generate\.pipeline\.model.*width 32.*"
                                          r"found decoded text_tokens of shape \(3, 8, 40\)"):
        pipelines.generate(pipe, "wan", wide, IDS, pcfg, seed=0, log=_quiet)
    with pytest.raises(ConfigError, match=r"generate\.pipeline\.num_frames: expected 4k\+1 .*found 8"):
        pipelines.generate(pipe, "wan", cond, IDS, dict(pcfg, num_frames=8), seed=0, log=_quiet)
    with pytest.raises(ConfigError, match=r"generate\.pipeline\.scheduler: expected one of .*'unipc'.*found 'ddim'"):
        pipelines.generate(pipe, "wan", cond, IDS, dict(pcfg, scheduler="ddim"), seed=0, log=_quiet)
    with pytest.raises(ConfigError, match=r"generate\.pipeline\.scheduler: expected 'auto', 'ddim' or 'ddpm' for "
                                          r"generate\.method 'text_to_video'.*found 'unipc'"):
        pipelines.settings({"scheduler": "unipc"}, method="text_to_video")
