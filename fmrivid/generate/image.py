"""Generation method ``image_img2img``: Brain-Diffuser's second stage with Stable Diffusion, frame by frame.

Seed 003 (Bayrak, Emirdagi & Tangolar 2025, extending Brain-Diffuser) reconstructs an image in two stages:
a low-level first-stage reconstruction regressed from fMRI (VDVAE there), then Stable Diffusion **img2img**
from that image, conditioned on fMRI-decoded CLIP-text features, with **stochastic DDPM** sampling at
strength 0.75. Here the image is every frame of a clip:

* the generator is a ``diffusers.StableDiffusionImg2ImgPipeline`` (kind ``text_to_image`` of
  :func:`fmrivid.models.load`: ``tiny``, a ``save_pretrained`` folder or a hub id from the local cache,
  no safety checker), loaded by :func:`fmrivid.generate.pipelines.load_pipeline`;
* the init "images" of a clip are its T decoded frame latents (``cond["vae"]`` (N, T, C, h, w); one latent
  per clip (N, C, h, w) is repeated over ``num_frames``, as ``two_stage`` does): the generator's own *scaled*
  VAE latents (``features.vae_model: <model>#vae``), which the pipeline takes as ``image`` as they are
  (4-channel tensors skip its preprocessing and VAE encoding: ``prepare_latents`` of diffusers);
* ``prompt_embeds`` are the clip's decoded caption tokens (``cond["text_tokens"]`` (N, L, D)), repeated for
  its T frames; ``negative_prompt_embeds`` the tokens decoded from the mean TRAINING fMRI
  (``cond["negative"]``, as every diffusers method) or the empty prompt's (``negative: empty_prompt``);
* the scheduler is built from the pipeline's scheduler config: DDPM for ``scheduler: auto`` (the seed's),
  DDIM with ``scheduler: ddim``; ``strength`` (0.75 by default), ``steps``, ``guidance_scale``, ``eta``
  (DDIM) as in :data:`fmrivid.generate.pipelines.DEFAULTS`.

Seeding and batching follow :mod:`fmrivid.generate.pipelines`: all noise of a clip (the img2img noise of its
frames, then every DDPM variance draw) comes from one CPU ``torch.Generator`` seeded with
``fmrivid.utils.clip_seed(seed, clip_id)`` (passed to the pipeline once per frame: a list of generators draws
sample by sample, so a clip's draws never touch another clip's generator); on CPU clips run one at a time
(``exact_cpu``) so a clip is bit-identical whatever its batch-mates or chunk; on CUDA ``batch_size`` clips
(x T frames) share each UNet call in ``dtype`` (float16 by default). Frames are decoded by the pipeline's VAE
with :func:`fmrivid.generate.pipelines` ``_decode`` (VAE slicing, float32 upcast for Stable Diffusion's VAE).
"""

from __future__ import annotations

import copy
import time

import numpy as np

from fmrivid.errors import ConfigError

__all__ = ["generate_frames", "img2img_pipeline"]

METHOD = "image_img2img"


def img2img_pipeline(pipe, scheduler):
    """A ``StableDiffusionImg2ImgPipeline`` on the components of ``pipe`` with ``scheduler`` (no copy of weights).

    Parameters
    ----------
    pipe : diffusers pipeline or fmrivid.models.LoadedModel
        Any Stable Diffusion pipeline (``unet`` UNet2DConditionModel with 4 latent channels, ``vae``,
        ``text_encoder``, ``tokenizer``, ``scheduler``).
    scheduler : diffusers scheduler
        Used instead of ``pipe.scheduler`` (which is left as it is).

    Returns
    -------
    diffusers.StableDiffusionImg2ImgPipeline
    """
    from diffusers import StableDiffusionImg2ImgPipeline, UNet2DConditionModel

    pipe = getattr(pipe, "model", pipe)
    missing = [p for p in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if getattr(pipe, p, None) is None]
    if missing or not isinstance(pipe.unet, UNet2DConditionModel):
        raise ConfigError(f"generate.method {METHOD}: expected a text-to-image Stable Diffusion pipeline "
                          f"(UNet2DConditionModel, vae, text_encoder, tokenizer, scheduler; kind text_to_image); "
                          f"found {type(pipe).__name__}" + (f" without {missing}" if missing else
                                                            f" with a {type(pipe.unet).__name__}"))
    if int(pipe.unet.config.in_channels) != 4:
        raise ConfigError(f"generate.method {METHOD}: StableDiffusionImg2ImgPipeline takes 4-channel latents as "
                          f"its image; found a UNet with {pipe.unet.config.in_channels} input channels")
    sampler = StableDiffusionImg2ImgPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                             unet=pipe.unet, scheduler=scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    sampler.set_progress_bar_config(disable=True)
    return sampler


def generate_frames(pipe, cond, clip_ids, cfg, seed, device="cpu", log=print):
    """Generate each clip's frames by Stable Diffusion img2img from its decoded frame latents.

    Parameters
    ----------
    pipe : fmrivid.models.LoadedModel or diffusers Stable Diffusion pipeline
        From :func:`fmrivid.generate.pipelines.load_pipeline` with ``method: image_img2img`` (or
        ``models.load(spec, "text_to_image")``).
    cond : dict of str -> ndarray
        From :func:`fmrivid.generate.pipelines.generation_inputs` (method ``image_img2img``):
        ``text_tokens`` (N, L, D); ``vae`` (N, T, C, h, w) decoded scaled frame latents, or (N, C, h, w)
        repeated over ``num_frames``; ``negative`` (L, D) when guided with ``negative: mean_train``.
    clip_ids : sequence of N str
        Clip ``i`` uses the seed ``clip_seed(seed, clip_ids[i])``.
    cfg : dict
        The ``generate.pipeline`` section (:data:`fmrivid.generate.pipelines.DEFAULTS`); ``method`` is
        set to ``image_img2img``; ``scheduler: auto`` is DDPM.
    seed : int
        Master seed (config ``seed``).
    device : str
    log : callable
        Receives one progress line per batch of clips.

    Returns
    -------
    uint8 ndarray (N, T, H, W, 3)

    Raises
    ------
    InputError
        Missing or mis-shaped conditions, empty or duplicate clip ids.
    ConfigError
        Bad settings, a strength that leaves no step, or a generator that is no Stable Diffusion pipeline.
    """
    import torch

    from fmrivid.generate import pipelines as gp
    from fmrivid.utils import clip_seed

    scfg = gp.settings(cfg, method=METHOD)
    scfg["scheduler"] = gp.scheduler_name(scfg)
    pipe = gp._pipe(pipe)
    clip_ids = gp.check_clip_ids(clip_ids)
    n = len(clip_ids)
    steps, strength = int(scfg["steps"]), float(scfg["strength"])
    proto = gp._scheduler(pipe, scfg["scheduler"])
    gp._timesteps(copy.deepcopy(proto), steps, strength, "cpu")  # refuses a strength that leaves no step
    img2img_pipeline(pipe, proto)  # checks the generator before any work
    cond = gp._check_cond(METHOD, cond, n, scfg, pipe)
    device = torch.device(device)
    gp.prepare_pipeline(pipe, device, scfg)
    dtype = gp._torch_dtype(scfg["dtype"], device)
    upcast = gp.vae_upcast(pipe, scfg, dtype)
    guidance = float(scfg["guidance_scale"])
    negative = gp.guidance_negative(pipe, cond, scfg, device)
    init_all = gp._init_latents(METHOD, cond, scfg).transpose(0, 2, 1, 3, 4)  # (N, T, C, h, w)
    frames = init_all.shape[1]
    tokens_all = torch.from_numpy(np.ascontiguousarray(cond["text_tokens"]))
    extra = {"eta": float(scfg["eta"])} if scfg["scheduler"] == "ddim" else {}
    bs = int(scfg["batch_size"])
    lane = 1 if (device.type == "cpu" and scfg["exact_cpu"]) else bs
    out, t0, n_batches = [], time.perf_counter(), -(-n // bs)
    with torch.inference_mode():
        for bi, start in enumerate(range(0, n, bs)):
            stop = min(n, start + bs)
            gens = [torch.Generator().manual_seed(clip_seed(seed, c)) for c in clip_ids[start:stop]]
            lats = []
            for j in range(start, stop, lane):
                k = min(stop, j + lane) - j
                init = torch.from_numpy(np.ascontiguousarray(init_all[j:j + k])).reshape((k * frames,)
                                                                                          + init_all.shape[2:])
                toks = tokens_all[j:j + k].repeat_interleave(frames, dim=0)
                neg = None if negative is None else negative[None].expand(len(toks), -1, -1)
                # One generator per frame, each clip's own: its frames draw from it in order, never from a mate's.
                frame_gens = [g for g in gens[j - start:j - start + k] for _ in range(frames)]
                sampler = img2img_pipeline(pipe, proto.__class__.from_config(proto.config))
                z = sampler(prompt_embeds=toks.to(device, dtype),
                            negative_prompt_embeds=None if neg is None else neg.to(device, dtype),
                            image=init, strength=strength, num_inference_steps=steps, guidance_scale=guidance,
                            generator=frame_gens, output_type="latent", return_dict=False, **extra)[0]
                # (k*T, C, h, w) -> (k, C, T, h, w), the layout pipelines._decode takes
                lats.append(z.float().reshape((k, frames) + tuple(z.shape[1:])).permute(0, 2, 1, 3, 4))
            if lane == 1:  # per clip: decoding is per clip too, so nothing depends on the batch
                video = np.concatenate([gp._decode(pipe, z, scfg["decode_slice"], upcast, dtype) for z in lats])
            else:
                video = gp._decode(pipe, torch.cat(lats), scfg["decode_slice"], upcast, dtype)
            out.append(video)
            dt = time.perf_counter() - t0
            log(f"generate[{METHOD}] batch {bi + 1}/{n_batches}: {stop}/{n} clips x {frames} frames "
                f"({dt:.1f} s, {dt / stop:.2f} s/clip, {scfg['scheduler']} {int(steps * strength)}/{steps} steps "
                f"from strength {strength:g}, {str(dtype).replace('torch.', '')} on {device})")
    return np.concatenate(out)
