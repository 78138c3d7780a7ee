"""Audio synthesis with AudioLDM 2 or AudioLDM: one seeded clip per caption (the audio-guided recipe).

The synthesized audio is an engineered temporal prior: a sound track that
follows each clip's caption, whose wav2vec2 embeddings give the decoders a
time-resolved target. It is not a claim that participants heard anything, nor
about how the brain represents sound.

Two pipelines (``features.audio.pipeline``, :data:`PIPELINES`): ``audioldm2``
(``diffusers.AudioLDM2Pipeline``, maintained upstream, the default) and
``audioldm`` (``diffusers.AudioLDMPipeline``, the audio-guided seed's, kept for
parity; deprecated upstream, diffusers says so at every load).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmrivid.errors import ConfigError, InputError

__all__ = ["PIPELINES", "check_model", "encode_audioldm2", "model_pipeline", "read_wavs", "synthesize",
           "write_wavs"]

#: features.audio.pipeline values: the model kind (fmrivid.models.KINDS), the diffusers class, an example
#: checkpoint and the label written to audio.tsv / the log.
PIPELINES = {
    "audioldm2": {"kind": "audioldm2", "class": "AudioLDM2Pipeline", "example": "cvssp/audioldm2",
                  "label": "audioldm2 (AudioLDM2Pipeline, maintained upstream)"},
    "audioldm": {"kind": "audioldm", "class": "AudioLDMPipeline", "example": "cvssp/audioldm-s-full-v2",
                 "label": "audioldm (AudioLDMPipeline, seed parity; deprecated upstream)"},
}


def _pipeline_name(value, key="features.audio.pipeline"):
    if value not in PIPELINES:
        raise ConfigError(f"{key}: expected one of {sorted(PIPELINES)}; found {value!r}")
    return value


def model_pipeline(spec):
    """Which pipeline of :data:`PIPELINES` a model spec's checkpoint belongs to, or None when unknown.

    The ``_class_name`` of its ``model_index.json`` (a local directory, or the hub id's snapshot in the local
    cache); for a hub id not cached, its name (the cvssp ``audioldm2*`` repositories are AudioLDM 2, the other
    ``audioldm*`` ones AudioLDM). ``tiny`` builds either: None.
    """
    spec = str(spec).strip()
    if spec == "tiny" or spec.startswith("tiny#"):
        return None
    local, _, sub = spec.partition("#")
    index = None
    if Path(local).expanduser().is_dir():
        candidate = Path(local).expanduser() / sub / "model_index.json" if sub else \
            Path(local).expanduser() / "model_index.json"
        index = candidate if candidate.is_file() else None
        name = Path(local).name
    else:
        repo, _, revision = local.partition("@")
        name = repo.rsplit("/", 1)[-1]
        try:
            from huggingface_hub import try_to_load_from_cache

            from fmrivid.models import hub_cache_dir

            cached = try_to_load_from_cache(repo, f"{sub}/model_index.json" if sub else "model_index.json",
                                            cache_dir=str(hub_cache_dir()), revision=revision or None)
            index = Path(cached) if isinstance(cached, str) else None
        except ValueError:  # not a valid repo id (HFValidationError): the loader reports it
            index = None
    if index is not None:
        try:
            class_name = json.loads(index.read_text()).get("_class_name")
        except (OSError, ValueError):
            class_name = None
        for pipeline, entry in PIPELINES.items():
            if class_name == entry["class"]:
                return pipeline
        return None
    lower = name.lower()
    if "audioldm2" in lower or "audioldm-2" in lower:
        return "audioldm2"
    if "audioldm" in lower:
        return "audioldm"
    return None


def check_model(spec, pipeline):
    """Refuse a model of the other pipeline.

    Raises
    ------
    ConfigError
        ``features.audio.model`` names a checkpoint of another pipeline than ``features.audio.pipeline``.
    """
    pipeline = _pipeline_name(pipeline)
    found = model_pipeline(spec)
    if found is not None and found != pipeline:
        want, have = PIPELINES[pipeline], PIPELINES[found]
        raise ConfigError(
            f"features.audio.model / features.audio.pipeline: expected an {want['class']} checkpoint for "
            f"features.audio.pipeline {pipeline!r} (e.g. {want['example']}); found features.audio.model "
            f"{spec!r}, an {have['class']} checkpoint: set features.audio.pipeline: {found} or choose an "
            f"{want['class']} model")


def _language_states(language_model, embeds, mask, n_tokens):
    """AudioLDM2Pipeline.generate_language_model without a key/value cache: ``n_tokens`` greedy GPT-2 steps,
    each appending the last hidden state. The same states (recomputing the prefix at each step), for a
    ``GPT2Model`` as the released checkpoints store it (no GenerationMixin in transformers 5) and without the
    deprecated ``past_key_values`` keyword."""
    import torch

    for _ in range(int(n_tokens)):
        out = language_model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True,
                             use_cache=False, return_dict=True)
        embeds = torch.cat([embeds, out.hidden_states[-1][:, -1:, :]], dim=1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    return embeds[:, -int(n_tokens):, :]


def _encode_text(pipe, text, t5_length, device):
    """CLAP sentence state, T5 states + mask and GPT-2 states of one text (AudioLDM2Pipeline.encode_prompt)."""
    clap_inputs = pipe.tokenizer([text], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt")
    clap = pipe.text_encoder.get_text_features(clap_inputs.input_ids.to(device),
                                               attention_mask=clap_inputs.attention_mask.to(device))
    clap = getattr(clap, "pooler_output", clap)[:, None, :]  # transformers 5: BaseModelOutputWithPooling
    t5_kwargs = {"padding": True} if t5_length is None else {"padding": "max_length", "max_length": t5_length}
    t5_inputs = pipe.tokenizer_2([text], truncation=True, return_tensors="pt", **t5_kwargs)
    t5_mask = t5_inputs.attention_mask.to(device)
    t5 = pipe.text_encoder_2(t5_inputs.input_ids.to(device), attention_mask=t5_mask)[0]
    projected = pipe.projection_model(hidden_states=clap, hidden_states_1=t5,
                                      attention_mask=t5_mask.new_ones((1, 1)), attention_mask_1=t5_mask)
    n_tokens = getattr(pipe.language_model.config, "max_new_tokens", None) or 8
    states = _language_states(pipe.language_model, projected.hidden_states, projected.attention_mask, n_tokens)
    truncated = any(len(tok([text]).input_ids[0]) > tok.model_max_length for tok in (pipe.tokenizer, pipe.tokenizer_2))
    return t5.to(pipe.text_encoder_2.dtype), t5_mask, states.to(pipe.language_model.dtype), truncated


def encode_audioldm2(pipe, caption, negative_prompt=None, guidance=True):
    """The conditioning of one caption, encoded alone (as ``AudioLDM2Pipeline.encode_prompt`` does for a
    single prompt).

    The pipeline pads a batch's T5 tokens to its longest caption and its GPT-2 positions follow that padding,
    so a caption's audio would depend on its batch-mates; encoded alone, it does not.

    Parameters
    ----------
    pipe : diffusers.AudioLDM2Pipeline
    caption : str
    negative_prompt : str or None
        Unconditional text ("" when None), padded to the caption's T5 length as the pipeline does.
    guidance : bool
        Also encode the unconditional text (classifier-free guidance).

    Returns
    -------
    dict
        ``prompt_embeds`` (1, L, D) T5 states, ``attention_mask`` (1, L), ``generated_prompt_embeds``
        (1, T, D') GPT-2 states, and with ``guidance`` the ``negative_*`` counterparts; ``truncated`` (bool).
    """
    import torch

    device = pipe._execution_device
    if getattr(pipe.text_encoder_2.config, "model_type", "") == "vits":
        raise ConfigError("features.audio.model: expected a text-to-audio AudioLDM 2 checkpoint (T5 text "
                          "encoder); found a text-to-speech one (VITS text encoder, needs transcriptions)")
    with torch.inference_mode():
        t5, mask, states, truncated = _encode_text(pipe, str(caption), None, device)
        out = {"prompt_embeds": t5, "attention_mask": mask, "generated_prompt_embeds": states,
               "truncated": bool(truncated)}
        if guidance:
            t5_n, mask_n, states_n, _ = _encode_text(pipe, negative_prompt or "", t5.shape[1], device)
            out.update(negative_prompt_embeds=t5_n, negative_attention_mask=mask_n,
                       negative_generated_prompt_embeds=states_n)
    return out


def _stack_padded(tensors, masks):
    """Stack (1, L_i, D) states and (1, L_i) masks, zero-padded (mask 0) to the longest L_i."""
    import torch

    length = max(t.shape[1] for t in tensors)
    states = torch.cat([torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[1])) for t in tensors])
    mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])
    return states, mask


def _audioldm2_batch(pipe, codes, generators, duration, steps, guidance_scale):
    """AudioLDM2Pipeline on captions encoded by :func:`encode_audioldm2` (one waveform each).

    T5 states are zero-padded to the batch's longest caption with mask 0 (the UNet's cross-attention ignores
    them); a caption's negative states have its own length, so both halves pad to the same shape."""
    import torch

    t5, mask = _stack_padded([c["prompt_embeds"] for c in codes], [c["attention_mask"] for c in codes])
    kwargs = {"prompt_embeds": t5, "attention_mask": mask,
              "generated_prompt_embeds": torch.cat([c["generated_prompt_embeds"] for c in codes])}
    if float(guidance_scale) > 1.0:
        t5_n, mask_n = _stack_padded([c["negative_prompt_embeds"] for c in codes],
                                     [c["negative_attention_mask"] for c in codes])
        kwargs.update(negative_prompt_embeds=t5_n, negative_attention_mask=mask_n,
                      negative_generated_prompt_embeds=torch.cat(
                          [c["negative_generated_prompt_embeds"] for c in codes]))
    return pipe(audio_length_in_s=float(duration), num_inference_steps=int(steps),
                guidance_scale=float(guidance_scale), num_waveforms_per_prompt=1, generator=generators,
                output_type="np", **kwargs).audios


def synthesize(loaded, captions, seeds, duration, steps=10, guidance_scale=2.5, batch_size=8,
               negative_prompt=None, log=print, exact_cpu=True):
    """Generate one waveform per caption with an AudioLDM 2 or AudioLDM pipeline.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel
        Kind ``"audioldm2"`` (``diffusers.AudioLDM2Pipeline``) or ``"audioldm"``
        (``diffusers.AudioLDMPipeline``, deprecated upstream).
    captions : sequence of str
    seeds : sequence of int
        One per caption (e.g. :func:`fmrivid.utils.clip_seed`): a clip's audio
        does not depend on the batch it is generated in (AudioLDM 2: each
        caption is encoded alone, :func:`encode_audioldm2`).
    duration : float
        Clip duration in seconds (every clip gets exactly this many samples).
    steps : int
        Denoising steps.
    guidance_scale : float
        Classifier-free guidance (1 disables it).
    batch_size : int
        Captions per pipeline call.
    negative_prompt : str or None
    log : callable
    exact_cpu : bool
        On CPU, run the pipeline clip by clip (batch of one) so that a clip's
        audio is bit-identical whatever ``batch_size``; elsewhere (CUDA) it is
        equal up to floating-point rounding of batched kernels.

    Returns
    -------
    audio : ndarray of float32, shape (N, round(duration * rate))
    rate : int
        Sampling rate of the vocoder (16 kHz for AudioLDM and AudioLDM 2).
    """
    import torch

    from fmrivid.features.embed import _batches, _check_batch_size

    batch_size = _check_batch_size(batch_size)
    captions, seeds = list(captions), [int(s) for s in seeds]
    if len(captions) != len(seeds):
        raise ValueError(f"synthesize: {len(captions)} captions for {len(seeds)} seeds")
    pipe = loaded.model
    version2 = type(pipe).__name__ == PIPELINES["audioldm2"]["class"]
    rate = int(pipe.vocoder.config.sampling_rate)
    n_samples = int(round(float(duration) * rate))
    out = np.zeros((len(captions), n_samples), dtype=np.float32)
    device = loaded.device
    gen_device = "cpu" if device.type != "cuda" else device
    # On CPU with exact_cpu, clip by clip: batched kernels round differently (~1e-5 relative), so only lanes
    # of one make a clip's audio bit-identical whatever the batch size.
    lane = 1 if (device.type == "cpu" and exact_cpu) else batch_size
    truncated = 0
    with torch.inference_mode():
        for part in _batches(len(captions), batch_size):
            for start in range(part.start, part.stop, lane):
                sub = slice(start, min(part.stop, start + lane))
                generators = [torch.Generator(gen_device).manual_seed(s) for s in seeds[sub]]
                prompts = captions[sub]
                if version2:
                    guided = float(guidance_scale) > 1.0
                    codes = [encode_audioldm2(pipe, p, negative_prompt, guided) for p in prompts]
                    truncated += sum(c["truncated"] for c in codes)
                    audio = _audioldm2_batch(pipe, codes, generators, duration, steps, guidance_scale)
                else:
                    negative = [negative_prompt] * len(prompts) if negative_prompt else None
                    audio = pipe(prompts, audio_length_in_s=float(duration), num_inference_steps=int(steps),
                                 guidance_scale=float(guidance_scale), negative_prompt=negative,
                                 generator=generators, output_type="np").audios
                audio = np.asarray(audio, dtype=np.float32).reshape(len(prompts), -1)[:, :n_samples]
                out[sub, :audio.shape[1]] = audio
            log(f"audio: {part.stop}/{len(captions)} clips")
    if truncated:
        log(f"audio: {truncated} caption(s) longer than the text encoders' maximum tokens, truncated")
    return out, rate


def write_wavs(folder, clip_ids, audio, rate):
    """Write one float32 WAV per clip: ``folder/<clip_id>.wav``."""
    from scipy.io import wavfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for clip, wave in zip(clip_ids, np.asarray(audio, dtype=np.float32)):
        wavfile.write(folder / f"{clip}.wav", int(rate), wave)


def read_wavs(folder, clip_ids, rate=None):
    """Read ``folder/<clip_id>.wav`` for each clip into one array.

    Parameters
    ----------
    folder : str or Path
    clip_ids : sequence of str
    rate : int, optional
        Resample (polyphase, scipy) to this rate when a file has another.

    Returns
    -------
    audio : ndarray of float32, shape (N, S)
        Mono (channels averaged); int PCM scaled to [-1, 1].
    rate : int

    Raises
    ------
    InputError
        A file is missing or unreadable, or clips differ in length.
    """
    from math import gcd

    from scipy.io import wavfile
    from scipy.signal import resample_poly

    waves, rates = [], set()
    for clip in clip_ids:
        path = Path(folder) / f"{clip}.wav"
        if not path.is_file():
            raise InputError(path, f"the audio of clip {clip!r}", "no such file")
        try:
            file_rate, wave = wavfile.read(path)
        except ValueError as exc:
            raise InputError(path, "a readable WAV file", str(exc)) from None
        if np.issubdtype(wave.dtype, np.integer):
            wave = wave / float(np.iinfo(wave.dtype).max)
        wave = np.asarray(wave, dtype=np.float32)
        wave = wave.mean(axis=1) if wave.ndim == 2 else wave
        if rate is not None and file_rate != rate:
            g = gcd(int(rate), int(file_rate))
            wave = resample_poly(wave, int(rate) // g, int(file_rate) // g).astype(np.float32)
            file_rate = rate
        waves.append(wave)
        rates.add(int(file_rate))
    lengths = sorted({len(w) for w in waves})
    if len(lengths) > 1:
        raise InputError(folder, "clips of equal length", f"lengths {lengths[:5]} samples")
    if not waves:
        return np.zeros((0, 0), np.float32), int(rate or 16000)
    return np.stack(waves), rates.pop()
