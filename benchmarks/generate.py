"""Seconds per clip and peak memory of fMRI-conditioned video generation, tuned vs naive, side by side.

Runs :func:`fmrivid.generate.pipelines.generate` (method ``text_to_video`` by
default) on one loaded ``TextToVideoSDPipeline`` in one process, twice (three
times on CPU):

``naive``
    float32, one clip per batch, explicit-softmax attention (diffusers
    ``AttnProcessor``), every frame of a batch decoded in one VAE call: the
    pipeline as a first script would run it.
``tuned``
    the workflow's settings: ``--dtype`` (float16 on CUDA by default: half
    weights), ``--batch`` clips per UNet call on CUDA, PyTorch SDPA attention
    (``AttnProcessor2_0``), VAE decoded ``--decode-slice`` frames per call. On
    CPU the workflow runs clip by clip (bit-identical clips whatever the batch).
``tuned-batched`` (CPU only)
    as ``tuned`` with ``exact_cpu`` off: the batch shares each UNet call.

Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak
resident set size sampled every 5 ms during the run (and its rise over the
RSS before the run). The last lines estimate the GPU hours of CC2017's test set
of one subject (1,200 clips) from the tuned seconds per clip; only runs at 6
frames, 256x256, 50 steps give that estimate directly.

Models: ``--model tiny`` (default, random tiny components of the real classes),
a ``save_pretrained`` directory or a hub id in the local cache
(``ali-vilab/text-to-video-ms-1.7b``, ``cerspense/zeroscope_v2_576w``);
``--real-size`` builds the real ModelScope 1.7B architecture (UNet3D
320/640/1280/1280, SD VAE, OpenCLIP-H text tower) with random weights: fine
for timing, meaningless pictures.

Usage::

    python benchmarks/generate.py --device cpu --clips 4 --frames 6 --size 64 --steps 10
    python benchmarks/generate.py --device cuda --real-size --clips 16 --batch 8    # CC2017 geometry

Wall-clock, best of ``--repeats``, after one warm-up clip per variant; the machine should be idle.

The maintained backends (:data:`BACKENDS`: the video generators AnimateDiff, Wan 2.1 T2V-1.3B and Stable Video
Diffusion img2vid-xt, and the audio synthesizers AudioLDM 2 (cvssp/audioldm2) and AudioLDM (cvssp/audioldm-s-full-v2)
of ``features.audio``) are timed one at a time by :func:`time_backend` through their own fmrivid generation functions
(:data:`GENERATION_FUNCTIONS`: ``fmrivid.generate.<backend>.generate``, ``fmrivid.stimuli.audio.synthesize``), at
their real-size architectures with random weights (:func:`backend_spec`; the audio ones from
:func:`audio_real_configs`, whose constants cite their sources) or tiny ones; the GPU suite's ``backends`` section
runs it (``benchmarks/gpu_suite.py``, whose docstring lists the sizes and settings). An audio row's clip is one 2-s
waveform (a CC2017 clip's length); its "CC2017 test set" hours are those of 1,200 such waveforms, a unit only.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np
import torch

from fmrivid.generate import pipelines as gp

CC2017_TEST_CLIPS = 1200


class _PeakRSS:
    """Peak resident set size of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        import psutil

        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _inputs(pipe, n, length, rng):
    dim = int(pipe.unet.config.cross_attention_dim)
    return {"text_tokens": rng.standard_normal((n, length, dim)).astype(np.float32),
            "negative": rng.standard_normal((length, dim)).astype(np.float32)}


def _run(loaded, cond, ids, cfg, device, repeats=1):
    """Seconds per clip (best of ``repeats``) and peak memory (bytes) of generate() (after a one-clip warm-up)."""
    best = None
    for _ in range(max(1, int(repeats))):
        result = _run_once(loaded, cond, ids, cfg, device)
        if best is None or result["s_per_clip"] < best["s_per_clip"]:
            best = result
    return best


def _run_once(loaded, cond, ids, cfg, device):
    warm = dict(cfg, steps=1, batch_size=1)
    gp.generate(loaded, "text_to_video", {k: (v if k == "negative" else v[:1]) for k, v in cond.items()},
                ids[:1], warm, seed=0, device=device, log=lambda m: None)
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        video = gp.generate(loaded, "text_to_video", cond, ids, cfg, seed=0, device=device, log=print)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak, rise = torch.cuda.max_memory_allocated(), None
    else:
        with _PeakRSS() as rss:
            start = time.perf_counter()
            video = gp.generate(loaded, "text_to_video", cond, ids, cfg, seed=0, device=device, log=print)
            seconds = time.perf_counter() - start
        peak, rise = rss.peak, rss.peak - rss.start
    return {"s_per_clip": seconds / len(ids), "peak_bytes": int(peak),
            "rise_bytes": None if rise is None else int(rise), "shape": list(video.shape)}



# --------------------------------------------------------------------------- maintained backends (issue 19)

#: Backends timed one by one by :func:`time_backend` (the GPU suite's ``backends`` section runs each in a process):
#: the video generators, then the audio synthesizers of ``features.audio`` (:data:`AUDIO_BACKENDS`).
BACKENDS = ("animatediff", "wan", "svd", "audioldm2", "audioldm")
#: Backends that synthesize audio (:func:`fmrivid.stimuli.audio.synthesize`, ``features.audio.pipeline``).
AUDIO_BACKENDS = ("audioldm2", "audioldm")

#: stabilityai/stable-video-diffusion-img2vid-xt ``vae/config.json``: AutoencoderKLTemporalDecoder (its class defaults
#: are a one-level toy VAE; scaling_factor 0.18215 and force_upcast true are the defaults).
SVD_XT_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
              "layers_per_block": 2, "latent_channels": 4, "sample_size": 768}
#: img2vid-xt ``image_encoder/config.json``: the OpenCLIP ViT-H/14 image tower (CLIPVisionModelWithProjection).
SVD_XT_IMAGE_ENCODER = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                        "num_attention_heads": 16, "projection_dim": 1024, "image_size": 224, "patch_size": 14,
                        "hidden_act": "gelu"}

#: The fmrivid function each backend is timed through.
GENERATION_FUNCTIONS = {"animatediff": "fmrivid.generate.animatediff.generate", "wan": "fmrivid.generate.wan.generate",
                        "svd": "fmrivid.generate.svd.generate", "audioldm2": "fmrivid.stimuli.audio.synthesize",
                        "audioldm": "fmrivid.stimuli.audio.synthesize"}


def _svd_real_pipeline(seed):
    """StableVideoDiffusionPipeline at img2vid-xt's architecture, random weights: the UNet's class defaults ARE
    img2vid-xt's config (320/640/1280/1280, heads 5/10/20/20, cross-attention 1024, 25 frames); :data:`SVD_XT_VAE`;
    :data:`SVD_XT_IMAGE_ENCODER`; the tiny pipeline's Euler scheduler (the released one's config) and 224-pixel
    CLIP processor."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from fmrivid.generate import svd

    with torch.device("cpu"):  # the tiny parts (scheduler tensors, processor) on the CPU whatever the caller's device
        tiny = svd.load("tiny", seed=seed, tiny_config={"unet_num_frames": 25})
    torch.manual_seed(int(seed))
    return StableVideoDiffusionPipeline(
        vae=AutoencoderKLTemporalDecoder(**SVD_XT_VAE), unet=UNetSpatioTemporalConditionModel(),
        image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_XT_IMAGE_ENCODER)),
        scheduler=tiny.scheduler, feature_extractor=tiny.feature_extractor)


# --------------------------------------------------------------------------- audio backends at real size

#: Seconds of one CC2017 clip: each audio row synthesizes one waveform of this length per caption (as
#: ``features.audio`` does for CC2017, whose clips all last 2 s).
CC2017_CLIP_SECONDS = 2.0
#: Captions of the timed audio clips (one per clip, cycled; variations of one scene, as clip captions are).
AUDIO_CAPTIONS = ("a dog barks in a park", "a dog barks twice in a quiet park", "a small dog barks at a passing car",
                  "people talk while a dog barks in the park", "a dog barks and birds sing in a park",
                  "a large dog barks loudly near a playground", "a dog barks in the distance in a windy park",
                  "children laugh as a dog barks in the park")
#: RoBERTa's maximum length, the CLAP tokenizers' ``model_max_length`` (laion/clap-htsat-unfused
#: ``tokenizer_config.json``; cvssp/audioldm2 ``tokenizer/``, cvssp/audioldm-s-full-v2 ``tokenizer/``): both pipelines
#: pad the CLAP text input to it, so the CLAP text tower always runs on 512 tokens.
CLAP_MAX_TOKENS = 512
#: Flan-T5's maximum length in AudioLDM 2 ("hard-coded in the original implementation": diffusers
#: scripts/convert_original_audioldm2_to_diffusers.py sets ``t5_tokenizer.model_max_length = 128``).
AUDIOLDM2_T5_MAX_TOKENS = 128
#: GPT-2 states generated per caption (``sequence_gen_length`` 8 of the converter's DEFAULT_CONFIG; cvssp/audioldm2
#: ``language_model/config.json`` ``max_new_tokens``).
AUDIOLDM2_NEW_TOKENS = 8

# Sources (no weights are downloaded; these are the published architectures):
# - diffusers scripts/convert_original_audioldm2_to_diffusers.py (DEFAULT_CONFIG "adapted from haoheliu/AudioLDM2
#   audioldm2/utils.py", create_unet_diffusers_config / create_vae_diffusers_config /
#   create_transformers_vocoder_config; ClapConfig "laion/clap-htsat-unfused" with the audio tower updated;
#   T5Config "google/flan-t5-large"; GPT2Config "gpt2"),
#   https://github.com/huggingface/diffusers/blob/main/scripts/convert_original_audioldm2_to_diffusers.py
# - cvssp/audioldm2 unet/config.json (https://huggingface.co/cvssp/audioldm2/blob/main/unet/config.json): the
#   converter's output (attention_head_dim 8, the class default, as the converter leaves it)
# - diffusers scripts/convert_original_audioldm_to_diffusers.py (DEFAULT_CONFIG adapted from the
#   haoheliu/audioldm-text-to-audio-generation Space; ClapTextConfig "laion/clap-htsat-unfused")
# - cvssp/audioldm-s-full-v2 unet/config.json and vae/config.json (as mirrored on GitHub in
#   tucommenceapousser/audioldm-s-full-v2)

#: cvssp/audioldm2 ``unet/config.json`` (AudioLDM2UNet2DConditionModel): model_channels 128 x channel_mult 1/2/3/5,
#: attention at downsampling 2/4/8 (every level but the first), two resnets per level, one transformer layer per
#: attention, and per block a self-attention transformer (None), one on the GPT-2 states (768) and one on the Flan-T5
#: states (1024); 8 input channels (the VAE's latents).
AUDIOLDM2_UNET = {
    "sample_size": 256, "in_channels": 8, "out_channels": 8, "block_out_channels": (128, 256, 384, 640),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 2, "transformer_layers_per_block": 1, "attention_head_dim": 8,
    "cross_attention_dim": ((None, 768, 1024),) * 4,
}
#: cvssp/audioldm-s-full-v2 ``unet/config.json`` (UNet2DConditionModel): the same levels, one transformer per
#: attention whose "cross" attention attends to the block's own width (AudioLDM has no text sequence), and the
#: CLAP sentence embedding (512) as a FiLM class embedding concatenated to the time embedding.
AUDIOLDM_S_FULL_V2_UNET = {
    "sample_size": 128, "in_channels": 8, "out_channels": 8, "block_out_channels": (128, 256, 384, 640),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 2, "attention_head_dim": 8, "cross_attention_dim": (128, 256, 384, 640),
    "class_embed_type": "simple_projection", "projection_class_embeddings_input_dim": 512,
    "class_embeddings_concat": True,
}
#: Both VAEs (the converters' ddconfig: ch 128 x ch_mult 1/2/4, z_channels 8, one mel channel in and out, two resnets
#: per block). AudioLDM's learnt scaling factor is cvssp/audioldm-s-full-v2 ``vae/config.json``'s; AudioLDM 2's learnt
#: one is not known here (the class default is used: it scales the latents, it does not change the cost).
AUDIO_VAE = {"in_channels": 1, "out_channels": 1, "block_out_channels": (128, 256, 512),
             "down_block_types": ("DownEncoderBlock2D",) * 3, "up_block_types": ("UpDecoderBlock2D",) * 3,
             "latent_channels": 8, "layers_per_block": 2, "norm_num_groups": 32}
AUDIOLDM_VAE_SCALING = 0.9392935633659363
#: Both vocoders (the converters' vocoder_config -> SpeechT5HifiGanConfig): HiFi-GAN from 64 mel bins, upsampling
#: 5 x 4 x 2 x 2 x 2 = 160 (a 10 ms hop) to 16 kHz.
AUDIO_VOCODER = {"model_in_dim": 64, "sampling_rate": 16000, "upsample_initial_channel": 1024,
                 "upsample_rates": [5, 4, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 8, 4, 4],
                 "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
                 "normalize_before": False}
#: AudioLDM 2's CLAP audio tower: laion/clap-htsat-unfused's HTSAT with the converter's update (patch embeddings 128,
#: width 1024, depths 2/2/12/2). Unused by ``synthesize`` (it ranks several waveforms per prompt), but loaded.
AUDIOLDM2_CLAP_AUDIO = {"patch_embeds_hidden_size": 128, "hidden_size": 1024, "depths": [2, 2, 12, 2]}
#: google/flan-t5-large ``config.json``: the encoder of AudioLDM 2's ``text_encoder_2`` (T5EncoderModel).
FLAN_T5_LARGE = {"vocab_size": 32128, "d_model": 1024, "d_kv": 64, "d_ff": 2816, "num_layers": 24, "num_heads": 16,
                 "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
#: gpt2 ``config.json``: AudioLDM 2's ``language_model`` (GPT2Model), fed projected embeddings (its token table unused).
GPT2_BASE = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}
#: Both converters' DDIM scheduler (timesteps 1000, linear_start 0.0015, linear_end 0.0195).
AUDIO_DDIM = {"num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0195, "beta_schedule": "scaled_linear",
              "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False}


def audio_real_configs(name):
    """The real-size component configs of audio backend ``name`` (no weights, no tokenizers).

    Parameters
    ----------
    name : str
        ``"audioldm2"`` (cvssp/audioldm2) or ``"audioldm"`` (cvssp/audioldm-s-full-v2).

    Returns
    -------
    dict
        ``unet`` and ``vae`` (keyword arguments of the diffusers classes), ``vocoder`` (SpeechT5HifiGanConfig),
        ``text_encoder`` (ClapConfig for AudioLDM 2's ClapModel, ClapTextConfig for AudioLDM's
        ClapTextModelWithProjection: the class defaults ARE laion/clap-htsat-unfused's RoBERTa-base text tower,
        768 x 12 layers, vocabulary 50,265, 514 positions, projection 512); AudioLDM 2 also ``text_encoder_2``
        (T5Config), ``language_model`` (GPT2Config) and ``projection_model`` (keyword arguments).
    """
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapTextConfig,
        GPT2Config,
        SpeechT5HifiGanConfig,
        T5Config,
    )

    vocoder = SpeechT5HifiGanConfig(**AUDIO_VOCODER)
    clap_text = ClapTextConfig()
    if name == "audioldm":
        return {"unet": dict(AUDIOLDM_S_FULL_V2_UNET), "vae": dict(AUDIO_VAE, scaling_factor=AUDIOLDM_VAE_SCALING),
                "vocoder": vocoder, "text_encoder": clap_text}
    if name != "audioldm2":
        raise ValueError(f"audio backend: expected one of {AUDIO_BACKENDS}; found {name!r}")
    clap = ClapConfig(text_config=clap_text.to_dict(),
                      audio_config=ClapAudioConfig(**AUDIOLDM2_CLAP_AUDIO).to_dict(), projection_dim=512)
    t5, gpt2 = T5Config(**FLAN_T5_LARGE), GPT2Config(**GPT2_BASE)
    return {"unet": dict(AUDIOLDM2_UNET), "vae": dict(AUDIO_VAE), "vocoder": vocoder, "text_encoder": clap,
            "text_encoder_2": t5, "language_model": gpt2,
            "projection_model": {"text_encoder_dim": clap.projection_dim, "text_encoder_1_dim": t5.d_model,
                                 "langauge_model_dim": gpt2.n_embd}}


def _audio_words():
    words = []
    for caption in AUDIO_CAPTIONS:
        words += [w for w in caption.split() if w not in words]
    return words


def _audio_real_pipeline(name, seed=0):
    """AudioLDM2Pipeline / AudioLDMPipeline at the real architecture (:func:`audio_real_configs`), random weights.

    Tokenizers: as :mod:`fmrivid.models` builds the tiny audio pipelines' (a byte-level BPE RobertaTokenizer, a
    Unigram T5Tokenizer, offline), over the words of :data:`AUDIO_CAPTIONS` so that each caption word is one token
    as in the real vocabularies; the embedding tables keep the real vocabulary sizes (every id of these small
    vocabularies is a valid row), and the real maximum lengths (CLAP 512, T5 128)."""
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AudioLDMPipeline,
        AutoencoderKL,
        DDIMScheduler,
        UNet2DConditionModel,
    )
    from transformers import (
        ClapFeatureExtractor,
        ClapModel,
        ClapTextModelWithProjection,
        GPT2Model,
        SpeechT5HifiGan,
        T5EncoderModel,
    )

    from fmrivid.extractor_kinds import _tiny_roberta_tokenizer, _tiny_t5_tokenizer

    cfg = audio_real_configs(name)
    words = _audio_words()
    clap_tokenizer = _tiny_roberta_tokenizer(words, CLAP_MAX_TOKENS)
    with torch.device("cpu"):  # the scheduler's tables on the CPU whatever the caller's device (as the hub's load)
        scheduler = DDIMScheduler(**AUDIO_DDIM)
    torch.manual_seed(int(seed))
    vae, vocoder = AutoencoderKL(**cfg["vae"]), SpeechT5HifiGan(cfg["vocoder"])
    if name == "audioldm":
        return AudioLDMPipeline(vae=vae, text_encoder=ClapTextModelWithProjection(cfg["text_encoder"]),
                                tokenizer=clap_tokenizer, unet=UNet2DConditionModel(**cfg["unet"]),
                                scheduler=scheduler, vocoder=vocoder)
    language_model = GPT2Model(cfg["language_model"])
    language_model.config.max_new_tokens = AUDIOLDM2_NEW_TOKENS
    return AudioLDM2Pipeline(
        vae=vae, text_encoder=ClapModel(cfg["text_encoder"]), text_encoder_2=T5EncoderModel(cfg["text_encoder_2"]),
        projection_model=AudioLDM2ProjectionModel(**cfg["projection_model"]), language_model=language_model,
        tokenizer=clap_tokenizer, tokenizer_2=_tiny_t5_tokenizer(words, AUDIOLDM2_T5_MAX_TOKENS),
        feature_extractor=ClapFeatureExtractor(), unet=AudioLDM2UNet2DConditionModel(**cfg["unet"]),
        scheduler=scheduler, vocoder=vocoder)


def _audio_load(name, real, device):
    """The audio pipeline on ``device`` in the workflow's precision (``fmrivid.features.stages.audio``: the whole
    pipeline cast to float16 on CUDA; float32 on the CPU), in eval mode."""
    from fmrivid import models

    cuda = str(device).startswith("cuda")
    if not real:
        return models.load("tiny", name, seed=0, device=device, dtype="float16" if cuda else None).model
    pipe = _audio_real_pipeline(name).to(device)
    if cuda:
        pipe = pipe.to(torch.float16)
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.eval()  # random initialisation leaves the modules in training mode (dropout)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _audio_defaults():
    """``features.audio`` defaults of the config schema (steps, guidance_scale, batch_size, exact_cpu)."""
    from fmrivid.config import load_schema

    props = load_schema()["properties"]["features"]["properties"]["audio"]["properties"]
    return {k: props[k]["default"] for k in ("steps", "guidance_scale", "batch_size", "exact_cpu")}


def _audio_spec(name, real):
    from fmrivid.stimuli.audio import synthesize
    from fmrivid.utils import clip_seed

    defaults = _audio_defaults()
    base = dict(defaults, duration=CC2017_CLIP_SECONDS, negative_prompt=None)
    if not real:
        base["batch_size"] = 2

    def settings(pipe):
        return dict(base, pipeline=name, dtype=str(pipe.dtype).replace("torch.", ""),
                    sampling_rate=int(pipe.vocoder.config.sampling_rate))

    def cond(pipe, n, rng):
        ids = [f"clip{i:04d}" for i in range(n)]
        return {"captions": [AUDIO_CAPTIONS[i % len(AUDIO_CAPTIONS)] for i in range(n)],
                "seeds": [clip_seed(0, c) for c in ids]}

    def run(pipe, cond_, ids, steps, batch, device, log):
        from fmrivid.models import LoadedModel

        audio, _ = synthesize(LoadedModel(model=pipe), cond_["captions"], cond_["seeds"], base["duration"], steps,
                              base["guidance_scale"], batch, base["negative_prompt"], log=log,
                              exact_cpu=base["exact_cpu"])
        return audio

    words = {
        "audioldm2": "cvssp/audioldm2: AudioLDM2UNet2DConditionModel (128/256/384/640, 8 heads, per block "
                     "self-attention + cross-attention to GPT-2 768 and Flan-T5 1024), AutoencoderKL 128/256/512 "
                     "(8 latent channels), ClapModel (RoBERTa-base text tower on 512 tokens, HTSAT audio tower "
                     "128/1024, depths 2/2/12/2, unused), Flan-T5-large encoder (24 x 1024, FFN 2816), GPT-2 base "
                     "(12 x 768, 8 generated states, no key/value cache), AudioLDM2ProjectionModel, SpeechT5HifiGan "
                     "16 kHz; tokenizers generated offline (caption words as single tokens; real vocabulary sizes in "
                     "the embedding tables); VAE scaling factor the class default (the learnt one unknown here)",
        "audioldm": "cvssp/audioldm-s-full-v2: UNet2DConditionModel (128/256/384/640, 8 heads, CLAP 512 FiLM class "
                    "embedding concatenated), AutoencoderKL 128/256/512 (8 latent channels), "
                    "ClapTextModelWithProjection (RoBERTa-base on 512 tokens, projection 512), SpeechT5HifiGan 16 kHz; "
                    "tokenizer generated offline (caption words as single tokens; real vocabulary size)",
    }
    return {"settings": settings, "cond": cond, "run": run, "denoiser": lambda pipe: pipe.unet,
            "load": lambda device: _audio_load(name, real, device),
            "architecture": words[name] if real else "tiny"}


def _video_spec(module, cfg, **spec):
    """A video backend's spec: its settings and run through ``module.generate`` with ``cfg`` (generate.pipeline
    overrides of the module's DEFAULTS)."""

    def run(pipe, cond, ids, steps, batch, device, log):
        return module.generate(pipe, cond, ids, dict(cfg, steps=int(steps), batch_size=int(batch)), seed=0,
                               device=device, log=log)

    return dict(spec, settings=lambda pipe: module.settings(cfg), run=run)


def backend_spec(name, real):
    """How :func:`time_backend` builds, conditions and runs backend ``name``.

    Parameters
    ----------
    name : str
        One of :data:`BACKENDS`.
    real : bool
        The real-size architecture (random weights) at the workflow's geometry, else the tiny one at a tiny size.

    Returns
    -------
    dict
        ``load(device) -> pipeline``; ``settings(pipeline) -> dict`` (the effective settings, with ``steps``: the
        default step count, and ``batch_size``: the clips of the timed batch); ``cond(pipeline, n, rng) -> cond``
        (the conditioning of ``n`` clips: a dict of per-clip sequences, ``negative`` excepted);
        ``run(pipeline, cond, ids, steps, batch, device, log) -> array`` (the backend's fmrivid generation function
        on those clips: videos (N, F, H, W, 3) or waveforms (N, samples)); ``denoiser(pipeline) -> module`` (the
        network called once or twice per sampler step); ``architecture`` (words).
    """
    if name in AUDIO_BACKENDS:
        return _audio_spec(name, real)
    if name == "animatediff":
        from fmrivid.generate import animatediff as module

        # SD1.5 + guoyww/animatediff-motion-adapter-v1-5-3 (AnimateDiff v3 as NeuroClips): no mid-block motion module.
        tiny_config = {**module.SD15_REAL_SIZE_CONFIG, "motion_mid_block": False} if real else None

        def cond(pipe, n, rng):
            length, dim = int(pipe.tokenizer.model_max_length), int(pipe.unet.config.cross_attention_dim)
            return {"text_tokens": rng.standard_normal((n, length, dim)).astype(np.float32),
                    "negative": rng.standard_normal((length, dim)).astype(np.float32)}

        return _video_spec(
            module,
            # the real SD1.5 VAE says force_upcast: decoded in float32 (the tiny builder's VAE does not say it)
            {"num_frames": 16, "height": 512, "width": 512, "batch_size": 4, "vae_upcast": True}
            if real else {"num_frames": 4, "height": 32, "width": 32, "batch_size": 2},
            cond=cond, denoiser=lambda pipe: pipe.unet,
            load=lambda device: module.load("tiny", seed=0, device=device, tiny_config=tiny_config),
            architecture=("SD1.5 UNet2DConditionModel (320/640/1280/1280, 8 heads, cross-attention 768) + "
                          "MotionAdapter at animatediff-motion-adapter-v1-5-3 sizes (8-head temporal transformers, "
                          "no mid-block motion module) composed into a UNetMotionModel; SD VAE decoded in float32; "
                          "CLIP ViT-L/14 text tower (unused: decoded tokens)") if real else "tiny")
    if name == "wan":
        from fmrivid.generate import wan as module

        def cond(pipe, n, rng):
            length, dim = (64 if real else 8), module.text_dim(pipe)
            return {"text_tokens": rng.standard_normal((n, length, dim)).astype(np.float32),
                    "negative": rng.standard_normal((length, dim)).astype(np.float32)}

        return _video_spec(
            module,
            # 33 frames = 2.06 s at Wan's 16 fps: one CC2017 clip (2 s); 480x832 is Wan 2.1 1.3B's training size
            {"num_frames": 33, "height": 480, "width": 832, "batch_size": 4} if real
            else {"num_frames": 5, "height": 32, "width": 32, "batch_size": 2, "max_sequence_length": 16},
            cond=cond, denoiser=lambda pipe: pipe.transformer,
            load=lambda device: module.load("tiny", seed=0, device=device, text_encoder=False,
                                            tiny_config=module.WAN21_T2V_1_3B_CONFIG if real else None),
            architecture=("Wan2.1-T2V-1.3B WanTransformer3DModel (30 layers, 12 heads x 128, FFN 8960, text 4096, "
                          "freq 256, patch 1x2x2) + AutoencoderKLWan (base 96, 1/2/4/4, 16 latent channels, "
                          "decoded in float32); no UMT5 text encoder (64 decoded tokens, zero-padded to 512)")
            if real else "tiny")
    if name == "svd":
        from fmrivid.generate import svd as module

        def cond(pipe, n, rng):
            side = 256 if real else 32  # the decoded keyframe at features.size (CC2017: 256); __call__ resizes it
            return {"keyframe": rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)}

        return _video_spec(
            module, {} if real else {"num_frames": 4, "height": 32, "width": 32, "batch_size": 2},
            cond=cond, denoiser=lambda pipe: pipe.unet,
            load=(lambda device: _svd_real_pipeline(0).to(device)) if real
            else (lambda device: module.load("tiny", seed=0, device=device)),
            architecture=("stable-video-diffusion-img2vid-xt: UNetSpatioTemporalConditionModel (its defaults), "
                          "AutoencoderKLTemporalDecoder 128/256/512/512, CLIPVisionModelWithProjection ViT-H/14")
            if real else "tiny")
    raise ValueError(f"backend: expected one of {BACKENDS}; found {name!r}")


class _DenoiserClock:
    """Seconds spent inside a module's forward calls (synchronised on CUDA), and how many calls."""

    def __init__(self, module, cuda):
        self.module, self.cuda, self.seconds, self.calls, self._t, self._hooks = module, cuda, 0.0, 0, None, []

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _pre(self, *_):
        self._sync()
        self._t = time.perf_counter()

    def _post(self, *_):
        self._sync()
        self.seconds += time.perf_counter() - self._t
        self.calls += 1

    def __enter__(self):
        self.seconds, self.calls = 0.0, 0
        self._hooks = [self.module.register_forward_pre_hook(self._pre), self.module.register_forward_hook(self._post)]
        return self

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()


def _params_m(pipe):
    out = {}
    for key, part in pipe.components.items():
        if isinstance(part, torch.nn.Module):
            out[key] = round(sum(p.numel() for p in part.parameters()) / 1e6, 2)
    return out


def time_backend(name, real=True, device="cuda", steps=10, warmup_steps=1, deadline=None, out=None, log=print):
    """Seconds per clip and peak memory of one maintained backend through fmrivid's own generation function.

    Builds the backend (:func:`backend_spec`; on CUDA the random initialisation runs on the GPU), runs one
    warm-up clip of ``warmup_steps`` steps, then times one full batch (the backend's ``batch_size`` clips) of
    ``steps`` sampler steps. The denoiser's forward calls are timed apart (synchronising hooks), so the rest
    (VAE decoding, image or text encoding, the vocoder, scheduler, transfers) is known too and the seconds per clip
    at the backend's DEFAULT step count are extrapolated: ``other + default_steps * per_step`` (labelled
    ``extrapolated``). A video backend's clip is one generated video; an audio backend's
    (:data:`AUDIO_BACKENDS`) one synthesized waveform of a CC2017 clip's 2 s, so its
    ``cc2017_test_gpu_hours_extrapolated`` is the audio of 1,200 clips: CC2017's test set is only the unit there
    (``features.audio`` synthesizes every clip of the stimulus set, training clips included).

    Parameters
    ----------
    name : str
        One of :data:`BACKENDS`.
    real : bool
        Real-size architecture at the workflow geometry (else tiny).
    device : str
    steps : int
        Sampler steps of the timed batch (fewer when ``deadline`` would not allow them: estimated from the
        warm-up, which overestimates a step).
    warmup_steps : int
    deadline : float, optional
        ``time.time()`` by which the timed batch must be done.
    out : str or Path, optional
        JSON file rewritten after each phase (a run killed at its cap keeps what it measured).
    log : callable

    Returns
    -------
    dict
        The row (see the GPU suite's docstring).
    """
    spec = backend_spec(name, real)
    cuda = str(device).startswith("cuda")
    rec = {"backend": name, "generation_function": GENERATION_FUNCTIONS[name], "architecture": spec["architecture"],
           "real_size": bool(real), "device": str(device), "phase": "build"}

    def save():
        if out:
            with open(out, "w") as fh:
                json.dump(rec, fh, indent=1, default=str)

    save()
    t0 = time.perf_counter()
    with torch.device(device):  # random init where the model will run (minutes on a CPU at real sizes)
        pipe = spec["load"](device)
    if cuda:
        torch.cuda.synchronize()
    cfg = spec["settings"](pipe)
    rec.update(build_seconds=time.perf_counter() - t0, params_m=_params_m(pipe),
               settings={k: v for k, v in cfg.items() if k != "model"}, default_steps=int(cfg["steps"]),
               phase="warmup")
    log(f"backend {name}: built in {rec['build_seconds']:.1f} s on {device}, parameters (M) {rec['params_m']}")
    save()
    n = int(cfg["batch_size"])
    cond = spec["cond"](pipe, n, np.random.default_rng(0))
    ids = [f"clip{i:04d}" for i in range(n)]
    clock = _DenoiserClock(spec["denoiser"](pipe), cuda)

    def one(ids_, cond_, steps_, batch):
        start = time.perf_counter()
        with clock:
            out_ = spec["run"](pipe, cond_, ids_, int(steps_), int(batch), device, log)
            if cuda:
                torch.cuda.synchronize()
        return out_, time.perf_counter() - start

    first = {k: (v if k == "negative" else v[:1]) for k, v in cond.items()}
    _, warm = one(ids[:1], first, warmup_steps, 1)
    per_step = clock.seconds / max(1, warmup_steps)  # one clip; includes first-call overheads (an overestimate)
    rec["warmup"] = {"clips": 1, "steps": int(warmup_steps), "seconds": warm, "denoise_seconds": clock.seconds,
                     "denoiser_calls": clock.calls}
    k = int(steps)
    if deadline is not None:
        left = deadline - time.time()
        fits = int((0.7 * left / n - max(0.0, warm - clock.seconds)) / max(per_step, 1e-9))
        k = max(1, min(k, fits))
        if k < steps:
            log(f"backend {name}: {k} timed steps instead of {steps} ({left:.0f} s left before its cap)")
    rec.update(phase="timed", steps_timed=k, clips=n)
    save()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        output, seconds = one(ids, cond, k, n)
        peak, rise = torch.cuda.max_memory_allocated(), None
    else:
        with _PeakRSS() as rss:
            output, seconds = one(ids, cond, k, n)
        peak, rise = rss.peak, rss.peak - rss.start
    denoise = clock.seconds / n / k
    other = max(0.0, seconds - clock.seconds) / n
    s_clip = other + rec["default_steps"] * denoise
    rec.update(
        phase="done", seconds=seconds, shape=list(output.shape), denoiser_calls=clock.calls,
        denoise_seconds=clock.seconds, s_per_clip_measured=seconds / n, denoise_s_per_step_per_clip=denoise,
        other_s_per_clip=other, s_per_clip_extrapolated=s_clip, extrapolated_to_steps=rec["default_steps"],
        clips_per_hour_extrapolated=3600.0 / s_clip,
        cc2017_test_gpu_hours_extrapolated=s_clip * CC2017_TEST_CLIPS / 3600,
        peak_bytes=int(peak), rise_bytes=None if rise is None else int(rise),
    )
    save()
    log(f"backend {name}: {k} steps x {n} clips in {seconds:.2f} s ({seconds / n:.2f} s/clip measured; "
        f"denoiser {denoise:.3f} s/step/clip over {clock.calls} calls, other {other:.2f} s/clip); "
        f"{s_clip:.2f} s/clip at {rec['default_steps']} steps (extrapolated), peak {peak / 2**20:.0f} MiB")
    return rec


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="generator spec (tiny, a directory or a cached hub id)")
    parser.add_argument("--real-size", action="store_true",
                        help="tiny spec at the real ModelScope 1.7B architecture (random weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clips", type=int, default=8, help="clips generated by the tuned run")
    parser.add_argument("--naive-clips", type=int, default=None,
                        help="clips of the naive run (default: --clips; it is one clip per batch anyway)")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8, help="clips per batch of the tuned run")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    parser.add_argument("--decode-slice", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=9.0)
    parser.add_argument("--tokens", type=int, default=None, help="condition length (default: the tokenizer's)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many timed runs per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from fmrivid.extractor_kinds import MODELSCOPE_TINY_CONFIG

    tiny_config = dict(MODELSCOPE_TINY_CONFIG) if args.real_size else None
    spec = "tiny" if args.real_size else args.model
    t0 = time.perf_counter()
    loaded = gp.load_pipeline(spec, {"dtype": "float32"}, seed=0, device=args.device, tiny_config=tiny_config)
    pipe = loaded.model
    n_unet = sum(p.numel() for p in pipe.unet.parameters())
    print(f"model {spec}{' (real ModelScope size, random weights)' if args.real_size else ''}: "
          f"UNet3D {n_unet / 1e6:.1f} M parameters, loaded in {time.perf_counter() - t0:.1f} s on {args.device}")
    length = args.tokens or int(pipe.tokenizer.model_max_length)
    rng = np.random.default_rng(0)
    cond = _inputs(pipe, args.clips, length, rng)
    ids = [f"clip{i:04d}" for i in range(args.clips)]
    base = {"num_frames": args.frames, "height": args.size, "width": args.size, "steps": args.steps,
            "guidance_scale": args.guidance}
    naive_n = args.naive_clips or args.clips
    variants = {
        "naive": (dict(base, dtype="float32", batch_size=1, attention="classic", decode_slice=0), naive_n),
        "tuned": (dict(base, dtype=args.dtype, batch_size=args.batch, attention="sdpa",
                       decode_slice=args.decode_slice), args.clips),
    }
    if not str(args.device).startswith("cuda"):
        variants["tuned-batched"] = (dict(variants["tuned"][0], exact_cpu=False), args.clips)
    results = {}
    for name, (cfg, n) in variants.items():
        sub = {k: (v if k == "negative" else v[:n]) for k, v in cond.items()}
        results[name] = _run(loaded, sub, ids[:n], cfg, args.device, args.repeats)
        results[name]["settings"] = cfg

    mem = "peak GPU memory" if str(args.device).startswith("cuda") else "peak RSS (rise)"
    print(f"\n{args.frames} frames {args.size}x{args.size}, {args.steps} steps, guidance {args.guidance}, "
          f"device {args.device} ({torch.cuda.get_device_name() if str(args.device).startswith('cuda') else 'CPU'},"
          f" {torch.get_num_threads()} threads)")
    print(f"{'variant':<14} {'s/clip':>9} {'clips/h':>9} {'vs naive':>9}   {mem}")
    naive = results["naive"]["s_per_clip"]
    for name, r in results.items():
        rise = "" if r["rise_bytes"] is None else f" ({r['rise_bytes'] / 2**20:+.0f} MiB)"
        print(f"{name:<14} {r['s_per_clip']:9.3f} {3600 / r['s_per_clip']:9.1f} {naive / r['s_per_clip']:8.2f}x"
              f"   {r['peak_bytes'] / 2**20:.0f} MiB{rise}")
    tuned = results["tuned"]["s_per_clip"]
    hours = tuned * CC2017_TEST_CLIPS / 3600
    exact = (args.frames, args.size, args.steps) == (6, 256, 50)
    print(f"\nCC2017 test set of one subject ({CC2017_TEST_CLIPS} clips) at these settings: "
          f"{hours:.2f} h tuned, {naive * CC2017_TEST_CLIPS / 3600:.2f} h naive on this device")
    if not exact:
        scaled = hours * 50 / args.steps
        print(f"  (measured at {args.frames} frames {args.size}px {args.steps} steps, not CC2017's 6 frames 256px "
              f"50 steps: scaled by steps only, {scaled:.2f} h; run --real-size --frames 6 --size 256 "
              f"--steps 50 on the GPU for the real figure)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results, "cc2017_hours_tuned": hours}, fh, indent=1)
    return results


if __name__ == "__main__":
    main()
