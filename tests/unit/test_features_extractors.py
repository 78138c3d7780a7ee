"""Tests of the extractor model kinds (text_tokens, wav2vec2, captioner, audioldm) and their features."""

import json
import shutil

import numpy as np
import pytest
import torch

from fmrivid import models
from fmrivid.errors import ConfigError, InputError, ModelNotAvailableError
from fmrivid.features import audio, embed, flow
from fmrivid.stimuli import captions as caps
from fmrivid.stimuli import audio as synth

NEW_KINDS = ["text_tokens", "wav2vec2", "captioner", "audioldm"]
RATE = 16000


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny():
    """One tiny model per kind (built once for the module)."""
    return {kind: models.load("tiny", kind, seed=1) for kind in NEW_KINDS}


def _save(loaded, path):
    loaded.model.save_pretrained(path)
    for part in (loaded.tokenizer, loaded.processor):
        if part is not None:
            part.save_pretrained(path)


def _images(n, side, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _outputs(loaded, kind):
    """Run a model of each kind on fixed inputs through its own tokenizer/processor."""
    if kind == "text_tokens":
        return embed.token_embeddings(loaded, ["a red circle", "two squares drift"])
    if kind == "wav2vec2":
        wave = np.random.default_rng(0).normal(size=(2, 2 * RATE)).astype(np.float32)
        return audio.wav2vec_embeddings(loaded, wave, RATE, tr=1.0)
    if kind == "captioner":
        with torch.inference_mode():
            pixels = loaded.processor(images=list(_images(2, 40)), return_tensors="pt")["pixel_values"]
            return loaded.model.generate(pixel_values=pixels, max_new_tokens=4, do_sample=False).numpy()
    out, _ = synth.synthesize(loaded, ["rain on a roof", "a dog"], [3, 4], 0.5, steps=2,
                              log=lambda m: None)
    return out


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_tiny_extractor_saved_and_reloaded_through_load(kind, tiny, tmp_path):
    original = tiny[kind]
    _save(original, tmp_path)
    reloaded = models.load(str(tmp_path), kind)
    assert type(reloaded.model) is type(original.model)
    assert reloaded.info["class"] == original.info["class"] and reloaded.info["tiny"] is False
    np.testing.assert_array_equal(_outputs(original, kind), _outputs(reloaded, kind))


def test_extractor_kinds_are_the_real_classes(tiny):
    classes = {kind: loaded.info["class"] for kind, loaded in tiny.items()}
    assert classes == {"text_tokens": "transformers.CLIPTextModel",
                       "wav2vec2": "transformers.Wav2Vec2Model",
                       "captioner": "transformers.Blip2ForConditionalGeneration",
                       "audioldm": "diffusers.AudioLDMPipeline"}
    pipe = tiny["audioldm"].model
    assert type(pipe.text_encoder).__name__ == "ClapTextModelWithProjection"
    assert type(pipe.vocoder).__name__ == "SpeechT5HifiGan"
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    assert not pipe.unet.training and not pipe.vocoder.training
    assert tiny["wav2vec2"].processor.sampling_rate == RATE


def _empty_cache(monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return tmp_path / "hf_home" / "hub"


def _plant(cache, repo, commit, source):
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, folder / "snapshots" / commit)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)


def test_hub_pipeline_and_text_encoder_subfolder_from_the_cache(monkeypatch, tmp_path, tiny):
    cache = _empty_cache(monkeypatch, tmp_path)
    commit = "ab" * 20
    pipe_dir = tmp_path / "pipe"
    tiny["audioldm"].model.save_pretrained(pipe_dir)
    # A diffusers pipeline repo: text_encoder/ and tokenizer/ side by side.
    tiny["text_tokens"].model.save_pretrained(pipe_dir / "text_encoder2")
    shutil.rmtree(pipe_dir / "text_encoder")
    (pipe_dir / "text_encoder2").rename(pipe_dir / "text_encoder")
    shutil.rmtree(pipe_dir / "tokenizer")
    tiny["text_tokens"].tokenizer.save_pretrained(pipe_dir / "tokenizer")
    _plant(cache, "some-org/pipe", commit, pipe_dir)
    tokens = models.load("some-org/pipe#text_encoder", "text_tokens")
    assert tokens.info["revision"] == commit
    np.testing.assert_array_equal(_outputs(tokens, "text_tokens"), _outputs(tiny["text_tokens"], "text_tokens"))

    audio_dir = tmp_path / "audio"
    tiny["audioldm"].model.save_pretrained(audio_dir)
    _plant(cache, "some-org/audioldm", commit, audio_dir)
    loaded = models.load(f"some-org/audioldm@{commit}", "audioldm")
    assert loaded.info["class"] == "diffusers.AudioLDMPipeline"
    np.testing.assert_array_equal(_outputs(loaded, "audioldm"), _outputs(tiny["audioldm"], "audioldm"))


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_missing_extractor_model_names_it_and_the_download_command(kind, monkeypatch, tmp_path):
    cache = _empty_cache(monkeypatch, tmp_path)
    with pytest.raises(ModelNotAvailableError) as info:
        models.load("cvssp/audioldm-s-full-v2@v1", kind)
    message = str(info.value)
    assert "'cvssp/audioldm-s-full-v2' (revision v1)" in message
    assert f"hf download cvssp/audioldm-s-full-v2 --revision v1 --cache-dir {cache}" in message
    with pytest.raises(InputError, match="model_index.json" if kind == "audioldm" else "config.json"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        models.load(str(tmp_path / "empty"), kind)


# --------------------------------------------------------------------------- token embeddings


def test_token_embeddings_are_padded_last_hidden_states_and_batch_invariant(tiny):
    loaded = tiny["text_tokens"]
    texts = ["a red circle drifts left", "rain", "two blue squares spin over a striped floor"]
    one = embed.token_embeddings(loaded, texts, batch_size=1)
    three = embed.token_embeddings(loaded, texts, batch_size=3)
    length = loaded.model.config.max_position_embeddings
    assert one.shape == (3, length, loaded.model.config.hidden_size) and one.dtype == np.float32
    np.testing.assert_allclose(one, three, atol=1e-5)
    tokens = loaded.tokenizer(texts[:1], padding="max_length", max_length=length, return_tensors="pt")
    with torch.inference_mode():
        direct = loaded.model(input_ids=tokens["input_ids"]).last_hidden_state.numpy()
    np.testing.assert_allclose(one[:1], direct, atol=1e-6)
    assert not np.allclose(one[0], one[1], atol=1e-3)


# --------------------------------------------------------------------------- wav2vec2 per TR


def test_tr_windows_are_centred_on_tr_centres():
    tr, rate = 0.5, 100
    wave = np.zeros((1, 200), np.float32)  # 2 s = 4 TRs
    wave[0, 130] = 1.0  # t = 1.3 s: inside TR 2 ([1.0, 1.5))
    windows = audio.tr_windows(wave, rate, tr)
    assert windows.shape == (1, 4, 50)
    assert windows[0].sum(axis=1).tolist() == [0, 0, 1, 0]
    assert windows[0, 2, 30] == 1.0  # 1.3 s - window start 1.0 s
    wide = audio.tr_windows(wave, rate, tr, window_trs=2.0)  # [centre - 0.5 s, centre + 0.5 s)
    assert wide.shape == (1, 4, 100)
    assert wide[0].sum(axis=1).tolist() == [0, 0, 1, 1]  # [0.25, 1.25), [0.75, 1.75), [1.25, 2.25)


@pytest.mark.parametrize("window_trs", [1.0, 2.0])
def test_moving_the_audio_by_one_tr_moves_the_rows_by_one(tiny, window_trs):
    tr, n_tr = 0.5, 6
    hop = int(tr * RATE)
    rng = np.random.default_rng(0)
    wave = rng.normal(size=(1, n_tr * hop)).astype(np.float32)
    shifted = np.concatenate([np.zeros((1, hop), np.float32), wave[:, :-hop]], axis=1)
    loaded = tiny["wav2vec2"]
    a = audio.wav2vec_embeddings(loaded, wave, RATE, tr, window_trs, batch_size=4)
    b = audio.wav2vec_embeddings(loaded, shifted, RATE, tr, window_trs, batch_size=4)
    assert a.shape == (1, n_tr, loaded.model.config.hidden_size)
    # Row j + 1 of the shifted audio is row j of the original; a wide window of the last row
    # reaches past the end, where the truncated shifted audio has zeros and the original does not.
    last = n_tr if window_trs == 1 else n_tr - 1
    np.testing.assert_allclose(b[0, 1:last], a[0, :last - 1], atol=1e-4)
    assert not np.allclose(b[0, 1:], b[0, :-1], atol=1e-3)  # rows differ: the match is informative
    assert not np.allclose(a[0], b[0], atol=1e-3)


def test_wav2vec_refuses_the_wrong_sampling_rate(tiny):
    with pytest.raises(ValueError, match="8000 Hz.*16000 Hz"):
        audio.wav2vec_embeddings(tiny["wav2vec2"], np.zeros((1, 8000), np.float32), 8000, 1.0)


# --------------------------------------------------------------------------- flow


def test_farneback_recovers_a_planted_translation():
    rng = np.random.default_rng(0)
    texture = (rng.random((96, 96)) * 255).astype(np.uint8)
    import cv2

    texture = cv2.GaussianBlur(texture, (0, 0), 2.0)
    dx, dy = 2, -1
    clip = np.stack([np.roll(texture, (k * dy, k * dx), axis=(0, 1)) for k in range(4)])
    frames = np.repeat(clip[None, ..., None], 3, axis=-1)[:, :, 16:80, 16:80]
    motion = flow.farneback_motion(np.ascontiguousarray(frames), grid=2)
    assert motion.shape == (1, 3, 2, 2, 2) and motion.dtype == np.float32
    np.testing.assert_allclose(motion[..., 0], dx, atol=0.25)
    np.testing.assert_allclose(motion[..., 1], dy, atol=0.25)
    still = flow.farneback_motion(np.ascontiguousarray(frames[:, :1].repeat(3, axis=1)), grid=2)
    assert np.abs(still).max() < 0.05


# --------------------------------------------------------------------------- captions


def test_merge_captions():
    assert caps.merge_captions("a dog runs.", " a dog sits ") == "a dog runs, and then a dog sits"


def test_missing_metadata_captions_stop_with_the_clips_named():
    with pytest.raises(InputError, match=r"clips.tsv: expected a caption for every clip.*no caption for 2 clips \['b', 'c'\]"):
        caps.clip_captions(["a", "b", "c"], ["x", float("nan"), "  "], "metadata", table="clips.tsv")


def test_captioner_runs_on_first_and_last_frames(tiny):
    loaded = tiny["captioner"]
    video = np.repeat(_images(3, 32)[:, None], 4, axis=1)  # each clip: one image repeated
    video[2, -1] = _images(1, 32, seed=9)[0]  # clip 2 ends on another image
    single = caps.caption_images(loaded, np.concatenate([video[:, 0], video[2:, -1]]), batch_size=2,
                                 max_new_tokens=4)
    got, sources = caps.clip_captions(["a", "b", "c"], ["kept", None, ""], "fill", video, loaded,
                                      batch_size=2, max_new_tokens=4, log=lambda m: None)
    assert sources == ["metadata", "model", "model"] and got[0] == "kept"
    assert got[1] == caps.merge_captions(single[1], single[1])
    assert got[2] == caps.merge_captions(single[2], single[3])
    every, sources = caps.clip_captions(["a", "b", "c"], ["kept", "x", "y"], "model", video, loaded,
                                        max_new_tokens=4, log=lambda m: None)
    assert sources == ["model"] * 3 and every[1:] == got[1:]


# --------------------------------------------------------------------------- audio synthesis


def test_audio_is_seeded_per_clip_and_has_the_clip_duration(tiny, tmp_path):
    loaded = tiny["audioldm"]
    quiet = dict(steps=2, log=lambda m: None)
    together, rate = synth.synthesize(loaded, ["rain", "a dog barks", "rain"], [1, 2, 3], 0.7,
                                      batch_size=3, **quiet)
    alone, _ = synth.synthesize(loaded, ["a dog barks"], [2], 0.7, batch_size=1, **quiet)
    assert rate == RATE and together.shape == (3, int(0.7 * RATE)) and together.dtype == np.float32
    scale = np.abs(together).max()  # a random vocoder is quiet: compare relative to its level
    assert scale > 0 and np.isfinite(together).all()
    np.testing.assert_allclose(together[1], alone[0], atol=1e-4 * scale)  # independent of the batch
    assert np.abs(together[0] - together[2]).max() > 1e-2 * scale  # same caption, other seed
    synth.write_wavs(tmp_path, ["c0", "c1", "c2"], together, rate)
    back, back_rate = synth.read_wavs(tmp_path, ["c0", "c1", "c2"])
    assert back_rate == rate
    np.testing.assert_array_equal(back, together)
    down, _ = synth.read_wavs(tmp_path, ["c0"], rate=8000)
    assert down.shape == (1, int(0.7 * 8000))
    with pytest.raises(InputError, match="c9.wav.*no such file"):
        synth.read_wavs(tmp_path, ["c9"])


def test_feature_attrs_round_trip_json(tiny):
    info = json.loads(json.dumps(tiny["audioldm"].info))
    assert info["kind"] == "audioldm" and info["tiny_config"]["upsample_rates"] == [8, 4, 5]


# --------------------------------------------------------------------------- T5-family tokens (generate.method wan)

WAN_CAPTIONS = ["a red car", "a dog runs along a long sandy beach under a bright summer sun",
                "  snow\n falls on  grey roofs "]


@pytest.fixture(scope="module")
def wan_pipe():
    from fmrivid.generate import wan

    return wan.load("tiny", seed=1)


def _wan_prompt_embeds(pipe, captions, length=512):
    """Independent reference: the full tiny WanPipeline's own encode_prompt at its default length."""
    with torch.inference_mode():
        emb, _ = pipe.encode_prompt(prompt=captions, do_classifier_free_guidance=False, max_sequence_length=length,
                                    device="cpu")
    return emb.float().numpy()


def test_umt5_token_features_are_the_wan_pipelines_own_prompt_embeddings(wan_pipe):
    from transformers import UMT5EncoderModel

    loaded = models.load("tiny#text_encoder", "umt5_tokens", seed=1)
    assert isinstance(loaded.model, UMT5EncoderModel) and loaded.info["class"] == "transformers.UMT5EncoderModel"
    # the tiny Wan generator's own text tower (same seed): its width is the transformer's text_dim
    ref_sd = wan_pipe.text_encoder.state_dict()
    for spec in ("tiny#text_encoder", "tiny"):
        sd = models.load(spec, "umt5_tokens", seed=1).model.state_dict()
        assert sd.keys() == ref_sd.keys() and all(torch.equal(w, sd[k]) for k, w in ref_sd.items())
    other = models.load("tiny#text_encoder", "umt5_tokens", seed=2).model.state_dict()
    assert any(not torch.equal(w, other[k]) for k, w in ref_sd.items())
    assert loaded.model.config.d_model == wan_pipe.transformer.config.text_dim

    ref = _wan_prompt_embeds(wan_pipe, WAN_CAPTIONS)  # (3, 512, D): real tokens' states, then zero rows
    full = embed.token_embeddings(loaded, WAN_CAPTIONS, batch_size=2)  # batches encoded at their longest caption
    assert full.shape == ref.shape == (3, 512, loaded.model.config.d_model) and full.dtype == np.float32
    np.testing.assert_allclose(full, ref, rtol=1e-4, atol=1e-5)
    n_real = [len(i) for i in wan_pipe.tokenizer(["a red car", WAN_CAPTIONS[1]]).input_ids]
    assert np.all(np.abs(full[0, :n_real[0]]).sum(-1) > 0) and not np.any(full[0, n_real[0]:])
    # features.tokens.max_length: the first rows of the same embeddings (a longer caption is cut, not re-encoded)
    cut = embed.token_embeddings(loaded, WAN_CAPTIONS, batch_size=1, max_length=6)
    assert cut.shape == (3, 6, full.shape[2]) and n_real[1] > 6
    np.testing.assert_allclose(cut, ref[:, :6], rtol=1e-4, atol=1e-5)
    assert np.abs(cut[1, -1]).sum() > 0 and not np.any(cut[0, n_real[0]:])
    for bad in (0, 513, 2.5, True):
        with pytest.raises(ConfigError, match=r"features\.tokens\.max_length"):
            embed.token_embeddings(loaded, WAN_CAPTIONS, max_length=bad)


def test_clip_token_features_max_length_keeps_the_first_rows(tiny):
    loaded = tiny["text_tokens"]
    texts = ["a red circle drifts left", "rain"]
    full = embed.token_embeddings(loaded, texts)
    np.testing.assert_array_equal(embed.token_embeddings(loaded, texts, max_length=5), full[:, :5])
    with pytest.raises(ConfigError, match=r"features\.tokens\.max_length: expected null or a number of tokens in 1"):
        embed.token_embeddings(loaded, texts, max_length=full.shape[1] + 1)


def test_wan_text_encoder_from_the_hub_cache_and_the_token_features_stage(monkeypatch, tmp_path, wan_pipe, tiny):
    from fmrivid.features.stages import token_features
    from fmrivid.io.h5 import read_features

    cache = _empty_cache(monkeypatch, tmp_path)
    commit = "cd" * 20
    saved = tmp_path / "wan"
    wan_pipe.save_pretrained(saved)  # text_encoder/ and tokenizer/ side by side, as in the Wan-AI repos
    _plant(cache, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", commit, saved)
    spec = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers#text_encoder"
    loaded = models.load(spec, "umt5_tokens")
    assert loaded.info["revision"] == commit and loaded.tokenizer is not None
    np.testing.assert_allclose(embed.token_embeddings(loaded, WAN_CAPTIONS, max_length=16),
                               _wan_prompt_embeds(wan_pipe, WAN_CAPTIONS)[:, :16], rtol=1e-4, atol=1e-5)

    captions = tmp_path / "captions.tsv"
    captions.write_text("clip_id\tcaption\tsource\n" + "".join(f"c{i}\t{' '.join(c.split())}\tmetadata\n"
                                                               for i, c in enumerate(WAN_CAPTIONS)))
    lines = []
    out = tmp_path / "text_tokens.h5"
    token_features(captions, spec, 2, "cpu", 0, out, kind="umt5_tokens", max_length=6, log=lines.append)
    ids, emb, attrs = read_features(out)
    assert ids == ["c0", "c1", "c2"] and emb.shape == (3, 6, wan_pipe.transformer.config.text_dim)
    assert attrs["kind"] == "umt5_tokens" and attrs["class"] == "transformers.UMT5EncoderModel"
    filled = sum(len(i) >= 6 for i in wan_pipe.tokenizer([" ".join(c.split()) for c in WAN_CAPTIONS]).input_ids)
    assert 0 < filled < 3 and f"{filled} of 3 captions fill all 6 token rows" in lines[0], lines

    # a CLIP text encoder where the Wan generator's UMT5 is expected: refused before loading, naming the key
    clip_dir = tmp_path / "clip"
    _save(tiny["text_tokens"], clip_dir)
    with pytest.raises(ConfigError, match=r"^features\.tokens\.model: expected a T5-family .*model_type "
                                          r"'clip_text_model'"):
        token_features(captions, str(clip_dir), 2, "cpu", 0, tmp_path / "bad.h5", kind="umt5_tokens")
