"""AudioLDM 2 (maintained upstream) beside the seed's AudioLDM (deprecated upstream): tiny pipeline of the real
classes, one seeded waveform per caption independent of its batch-mates, no deprecation notice, and a model of
the other pipeline refused with both config keys named."""

import contextlib
import io
import json
import logging
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from fmrivid import models
from fmrivid.errors import ConfigError
from fmrivid.features import stages as features_stages
from fmrivid.stimuli import audio as audio_mod
from fmrivid.stimuli.audio import check_model, encode_audioldm2, model_pipeline, synthesize

QUIET = dict(log=lambda message: None)
# Captions of different token lengths (the pipeline's own batching pads T5 tokens to the longest one).
CAPTIONS = ["a dog runs on the grass", "a man walks away from the city at night while it rains", "red car"]
SEEDS = [101, 202, 303]
DURATION = 0.37  # not a multiple of the latent hop: the pipeline pads the spectrogram, then the clip is cut


@pytest.fixture(scope="module")
def tiny2():
    return models.load("tiny", "audioldm2", seed=0)


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@contextlib.contextmanager
def _capture():
    """Everything a deprecation notice could come through: warnings (all, always), stderr, and the records of
    the diffusers / transformers loggers (which do not propagate to the root logger)."""
    seen = {"warnings": [], "stderr": io.StringIO(), "records": []}

    class Keep(logging.Handler):
        def emit(self, record):
            seen["records"].append(record.getMessage())

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers", "")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(seen["stderr"]):
            warnings.simplefilter("always")
            yield seen
        seen["warnings"] = [str(w.message) for w in caught]
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _text(seen):
    return "\n".join(seen["warnings"] + seen["records"] + [seen["stderr"].getvalue()])


def test_tiny_audioldm2_is_the_real_pipeline_and_synthesizes_at_the_vocoder_rate(tiny2):
    pipe = tiny2.model
    classes = {name: type(part).__name__ for name, part in pipe.components.items()}
    assert classes == {"vae": "AutoencoderKL", "text_encoder": "ClapModel", "text_encoder_2": "T5EncoderModel",
                       "projection_model": "AudioLDM2ProjectionModel", "language_model": "GPT2Model",
                       "tokenizer": "RobertaTokenizer", "tokenizer_2": "T5Tokenizer",
                       "feature_extractor": "ClapFeatureExtractor", "unet": "AudioLDM2UNet2DConditionModel",
                       "scheduler": "DDIMScheduler", "vocoder": "SpeechT5HifiGan"}
    assert tiny2.info["class"] == "diffusers.AudioLDM2Pipeline" and tiny2.info["kind"] == "audioldm2"
    # The offline tokenizers know whole words (one piece each) and still cover unknown ones piece by piece.
    for tok in (pipe.tokenizer, pipe.tokenizer_2):
        assert len(tok.tokenize(" man")) == 1 and len(tok.tokenize(" zzyzx")) > 1
        assert tok.pad_token_id is not None
    audio, rate = synthesize(tiny2, CAPTIONS, SEEDS, DURATION, steps=2, guidance_scale=1.0, batch_size=3, **QUIET)
    assert rate == pipe.vocoder.config.sampling_rate == 16000
    assert audio.shape == (3, round(DURATION * rate)) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and (np.abs(audio).max(axis=1) > 0).all()
    # Deterministic given the seed: a second build gives the same audio bit for bit.
    again, _ = synthesize(models.load("tiny", "audioldm2", seed=0), CAPTIONS[:1], SEEDS[:1], DURATION, steps=2,
                          guidance_scale=1.0, **QUIET)
    np.testing.assert_array_equal(again[0], audio[0])


def _with_lm_head(pipe):
    """The pipeline's own encode_prompt needs a GenerationMixin language model under transformers 5: a
    GPT2LMHeadModel holding the same GPT-2 weights (its hidden states are the GPT2Model's)."""
    from transformers import GPT2LMHeadModel

    head = GPT2LMHeadModel(pipe.language_model.config)
    head.transformer.load_state_dict(pipe.language_model.state_dict())
    return head.eval()


def test_per_caption_encoding_and_audio_equal_the_pipelines_own_single_prompt_call(tiny2):
    pipe = tiny2.model
    lm = pipe.language_model
    gens = lambda: [torch.Generator().manual_seed(s) for s in SEEDS]
    ours, _ = synthesize(tiny2, CAPTIONS, SEEDS, DURATION, steps=2, guidance_scale=2.5, batch_size=3,
                         negative_prompt="low quality", **QUIET)
    try:
        pipe.language_model = _with_lm_head(pipe)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the reference path passes transformers' deprecated past_key_values
            ref = pipe.encode_prompt([CAPTIONS[1]], "cpu", 1, True, negative_prompt=["low quality"])
            single = [pipe([c], negative_prompt=["low quality"], audio_length_in_s=DURATION, num_inference_steps=2,
                           guidance_scale=2.5, generator=[g], output_type="np").audios[0]
                      for c, g in zip(CAPTIONS, gens())]
            batched = pipe(CAPTIONS, negative_prompt=["low quality"] * 3, audio_length_in_s=DURATION,
                           num_inference_steps=2, guidance_scale=2.5, generator=gens(), output_type="np").audios
    finally:
        pipe.language_model = lm
    code = encode_audioldm2(pipe, CAPTIONS[1], "low quality", guidance=True)
    # encode_prompt returns [negative; positive] halves
    torch.testing.assert_close(torch.cat([code["negative_prompt_embeds"], code["prompt_embeds"]]), ref[0],
                               rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([code["negative_attention_mask"], code["attention_mask"]]), ref[1],
                               rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([code["negative_generated_prompt_embeds"],
                                          code["generated_prompt_embeds"]]), ref[2], rtol=1e-6, atol=1e-7)
    # Each clip is what the pipeline makes of its caption alone ...
    np.testing.assert_allclose(ours, np.stack(single)[:, :ours.shape[1]], rtol=0, atol=1e-6 * np.abs(ours).max())
    # ... whereas the pipeline's own batch pads the T5 tokens to the longest caption and shifts the GPT-2
    # positions: the shorter captions' audio changes with their batch-mates (what encoding alone avoids).
    assert max(_rel(batched[i], single[i]) for i in (0, 2)) > 1e-2


def test_a_clips_audio_does_not_depend_on_its_batch_mates(tiny2):
    kwargs = dict(steps=2, guidance_scale=2.5, **QUIET)
    alone = np.stack([synthesize(tiny2, [c], [s], DURATION, batch_size=1, **kwargs)[0][0]
                      for c, s in zip(CAPTIONS, SEEDS)])
    together, _ = synthesize(tiny2, CAPTIONS, SEEDS, DURATION, batch_size=3, **kwargs)
    reordered, _ = synthesize(tiny2, CAPTIONS[::-1], SEEDS[::-1], DURATION, batch_size=2, **kwargs)
    # CPU, exact_cpu (default): bit-identical whatever the batch size and order
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(reordered[::-1], alone)
    # Truly batched (as on CUDA): equal up to the rounding of batched kernels, not a different clip
    batched, _ = synthesize(tiny2, CAPTIONS, SEEDS, DURATION, batch_size=3, exact_cpu=False, **kwargs)
    assert _rel(batched, alone) < 1e-4
    # the padded T5 positions are masked: unmasked they would change the audio
    original = audio_mod._stack_padded

    def unmasked(states, masks):
        stacked, mask = original(states, masks)
        return stacked + 0.5 * (mask == 0)[..., None], torch.ones_like(mask)

    try:
        audio_mod._stack_padded = unmasked
        leaky, _ = synthesize(tiny2, CAPTIONS, SEEDS, DURATION, batch_size=3, exact_cpu=False, **kwargs)
    finally:
        audio_mod._stack_padded = original
    assert _rel(leaky, alone) > 1e-3


def test_different_captions_and_seeds_give_different_audio(tiny2):
    kwargs = dict(steps=2, guidance_scale=1.0, **QUIET)
    audio, _ = synthesize(tiny2, [CAPTIONS[0], CAPTIONS[1], CAPTIONS[0], CAPTIONS[0]], [7, 7, 7, 8], DURATION,
                          batch_size=4, **kwargs)
    np.testing.assert_array_equal(audio[0], audio[2])  # same caption, same seed
    assert _rel(audio[1], audio[0]) > 1e-2  # another caption, same noise
    assert _rel(audio[3], audio[0]) > 1e-2  # same caption, another seed


def _stage_inputs(root, n=2):
    ids = [f"c{k}" for k in range(n)]
    pd.DataFrame({"clip_id": ids, "caption": CAPTIONS[:n], "source": "metadata"}).to_csv(
        root / "captions.tsv", sep="\t", index=False)
    pd.DataFrame({"onset": [4.0 * k for k in range(n)], "duration": DURATION, "clip_id": ids}).to_csv(
        root / "events.tsv", sep="\t", index=False)
    return root / "captions.tsv", [root / "events.tsv"]


def test_audioldm2_prints_no_deprecation_notice_and_audioldm_is_labelled_deprecated(tmp_path, capfd):
    captions, events = _stage_inputs(tmp_path)
    cfg = {"model": "tiny", "steps": 2, "guidance_scale": 2.5, "batch_size": 2}
    lines = {}
    for pipeline in ("audioldm2", "audioldm"):
        lines[pipeline] = []
        with _capture() as seen:
            features_stages.audio(captions, events, {**cfg, "pipeline": pipeline}, "cpu", 0,
                                  tmp_path / pipeline, log=lines[pipeline].append)
        index = pd.read_csv(tmp_path / pipeline / "audio.tsv", sep="\t")
        assert set(index["pipeline"]) == {pipeline} and len(index) == 2
        assert set(index["pipeline_class"]) == {"AudioLDM2Pipeline" if pipeline == "audioldm2"
                                                else "AudioLDMPipeline"}
        lines[pipeline].append(_text(seen))
        lines[pipeline] += capfd.readouterr()  # anything written to the stdout / stderr file descriptors
    new, old = "\n".join(lines["audioldm2"]), "\n".join(lines["audioldm"])
    assert "deprecat" not in new.lower() and "maintained upstream" in new
    # The seed-parity path still works, is labelled deprecated, and diffusers' own notice is seen by the capture
    # (so the capture would have caught one from AudioLDM 2).
    assert "seed parity; deprecated upstream" in old
    assert "AudioLDMPipeline has been deprecated" in old


def test_a_model_of_the_other_pipeline_is_refused_naming_both_keys(tmp_path, monkeypatch):
    # By the checkpoint's model_index.json: a saved AudioLDM pipeline is no AudioLDM 2 one, whatever its name.
    saved = tmp_path / "my_audio_model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models.load("tiny", "audioldm", seed=0).model.save_pretrained(saved)
    assert model_pipeline(str(saved)) == "audioldm"
    check_model(str(saved), "audioldm")
    with pytest.raises(ConfigError, match=r"features\.audio\.model.*features\.audio\.pipeline.*expected an "
                                          r"AudioLDM2Pipeline checkpoint.*found.*an AudioLDMPipeline checkpoint"):
        check_model(str(saved), "audioldm2")
    # The stage refuses it before loading anything, and writes nothing.
    captions, events = _stage_inputs(tmp_path)
    cfg = {"model": str(saved), "pipeline": "audioldm2", "steps": 1, "guidance_scale": 1.0, "batch_size": 2}
    with pytest.raises(ConfigError, match="features.audio.pipeline: audioldm"):
        features_stages.audio(captions, events, cfg, "cpu", 0, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()
    # A hub id in the local cache: by its snapshot's model_index.json (here an AudioLDM 2 under a neutral name).
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    snapshot = tmp_path / "hf_home" / "hub" / "models--some-org--sound" / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDM2Pipeline"}))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("ab" * 20)
    assert model_pipeline("some-org/sound") == "audioldm2"
    with pytest.raises(ConfigError, match="expected an AudioLDMPipeline checkpoint"):
        check_model("some-org/sound", "audioldm")
    # Not cached: the released repositories by name; tiny builds either; an unknown value is refused.
    assert model_pipeline("cvssp/audioldm2-music") == "audioldm2"
    assert model_pipeline("cvssp/audioldm-s-full-v2") == "audioldm"
    assert model_pipeline("tiny") is None and model_pipeline("org/unrelated") is None
    with pytest.raises(ConfigError, match="expected an AudioLDMPipeline checkpoint.*'cvssp/audioldm2'"):
        check_model("cvssp/audioldm2", "audioldm")
    with pytest.raises(ConfigError, match=r"features\.audio\.pipeline: expected one of"):
        check_model("tiny", "stable_audio")
    shutil.rmtree(saved)


def test_saved_tiny_audioldm2_loads_offline_with_its_tokenizers(tmp_path, tiny2):
    saved = tmp_path / "audioldm2"
    tiny2.model.save_pretrained(saved)
    assert model_pipeline(str(saved)) == "audioldm2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = models.load(str(saved), "audioldm2")
    assert type(loaded.model.tokenizer).__name__ == "RobertaTokenizer"
    assert type(loaded.model.tokenizer_2).__name__ == "T5Tokenizer"
    kwargs = dict(steps=2, guidance_scale=2.5, **QUIET)
    np.testing.assert_array_equal(synthesize(loaded, CAPTIONS[:2], SEEDS[:2], DURATION, **kwargs)[0],
                                  synthesize(tiny2, CAPTIONS[:2], SEEDS[:2], DURATION, **kwargs)[0])
