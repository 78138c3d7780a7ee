"""Audio synthesis with AudioLDM: one seeded clip per caption (the audio-guided recipe).

The synthesized audio is an engineered temporal prior: a sound track that
follows each clip's caption, whose wav2vec2 embeddings give the decoders a
time-resolved target. It is not a claim that participants heard anything, nor
about how the brain represents sound.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmrivid.errors import InputError

__all__ = ["read_wavs", "synthesize", "write_wavs"]


def synthesize(loaded, captions, seeds, duration, steps=10, guidance_scale=2.5, batch_size=8,
               negative_prompt=None, log=print):
    """Generate one waveform per caption with an AudioLDM pipeline.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel
        Kind ``"audioldm"`` (``diffusers.AudioLDMPipeline``).
    captions : sequence of str
    seeds : sequence of int
        One per caption (e.g. :func:`fmrivid.utils.clip_seed`): a clip's audio
        does not depend on the batch it is generated in.
    duration : float
        Clip duration in seconds (every clip gets exactly this many samples).
    steps : int
        Denoising steps.
    guidance_scale : float
        Classifier-free guidance (1 disables it).
    batch_size : int
        Captions per pipeline call.
    negative_prompt : str or None

    Returns
    -------
    audio : ndarray of float32, shape (N, round(duration * rate))
    rate : int
        Sampling rate of the vocoder (16 kHz for AudioLDM).
    """
    import torch

    from fmrivid.features.embed import _batches, _check_batch_size

    batch_size = _check_batch_size(batch_size)
    captions, seeds = list(captions), [int(s) for s in seeds]
    if len(captions) != len(seeds):
        raise ValueError(f"synthesize: {len(captions)} captions for {len(seeds)} seeds")
    pipe = loaded.model
    rate = int(pipe.vocoder.config.sampling_rate)
    n_samples = int(round(float(duration) * rate))
    out = np.zeros((len(captions), n_samples), dtype=np.float32)
    device = loaded.device
    gen_device = "cpu" if device.type != "cuda" else device
    with torch.inference_mode():
        for part in _batches(len(captions), batch_size):
            generators = [torch.Generator(gen_device).manual_seed(s) for s in seeds[part]]
            prompts = captions[part]
            negative = [negative_prompt] * len(prompts) if negative_prompt else None
            audio = pipe(prompts, audio_length_in_s=float(duration), num_inference_steps=int(steps),
                         guidance_scale=float(guidance_scale), negative_prompt=negative,
                         generator=generators, output_type="np").audios
            audio = np.asarray(audio, dtype=np.float32).reshape(len(prompts), -1)[:, :n_samples]
            out[part, :audio.shape[1]] = audio
            log(f"audio: {part.stop}/{len(captions)} clips")
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
