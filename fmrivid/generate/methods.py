"""The generation methods (``generate.method``), declared once: read by the rules (generate_chunk's inputs), the
stage (which decoded files a method needs) and the config schema (the choices and their description).

Each method names its decoded inputs: keyword of :func:`fmrivid.generate.stages.generate_chunk` -> what is
decoded. ``tokens`` are ridge-decoded caption token embeddings (the conditioning of every diffusers method but
``image_to_video``); ``first`` is the decoded first-frame latent (the structure decoder's, else ridge ``vae``);
``frames`` the decoded frame latents (the motion / fusion decoder's, else ridge ``vae_frames``); ``caption`` the
ridge-decoded caption embedding the demo generator reads. ``generator`` is the :data:`fmrivid.models.KINDS` kind that
``generate.pipeline.model`` is loaded as (``text_to_video``: a TextToVideoSDPipeline such as ModelScope;
``text_to_image``: a Stable Diffusion StableDiffusionImg2ImgPipeline, sampled frame by frame in
:mod:`fmrivid.generate.image`; ``animatediff``: an AnimateDiffPipeline, :mod:`fmrivid.generate.animatediff`;
``image_to_video``: a StableVideoDiffusionPipeline, :mod:`fmrivid.generate.svd`; ``wan``: a WanPipeline,
:mod:`fmrivid.generate.wan`, whose token features come from its own UMT5 text encoder: :func:`token_kind`);
``scheduler`` what ``generate.pipeline.scheduler: auto`` means for the method.
Adding a method: its entry here, its handling in :mod:`fmrivid.generate.pipelines` (or
:mod:`fmrivid.generate.image`), its test. This module imports nothing heavy (the DAG reads it when it plans).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    decoded: dict  # generate_chunk keyword -> "tokens" | "first" | "frames" | "caption"
    diffusers: bool = True  # a diffusers pipeline (generate.pipeline); False: the demo generator trained here
    generator: str = "text_to_video"  # fmrivid.models kind of generate.pipeline.model
    scheduler: str = "ddim"  # generate.pipeline.scheduler 'auto' for this method
    # its "first" input reaches the generator as an RGB keyframe decoded by features.vae_model (the generator encodes
    # the image with its own encoders, so features.vae_model need not be '<generate.pipeline.model>#vae')
    keyframe: bool = False
    # features.vae_model latents reach the generator (its decoded inputs or its fine-tuning on
    # features/vae_frames.h5), so features.vae_model must be '<generate.pipeline.model>#vae'. False for wan: tokens
    # only, and fine-tuning it is refused (its causal 3-D VAE's latents are not features/vae_frames.h5's)
    vae_latents: bool = True


METHODS = {m.name: m for m in [
    Method("demo", "a tiny VAE + UNet3D trained in the workflow on the training clips, conditioned on decoded "
           "caption embeddings", {"pred_path": "caption"}, diffusers=False),
    Method("text_to_video", "from noise", {"text_tokens": "tokens"}),
    Method("structure_motion", "from the decoded first-frame + motion latents (Mind-Animator)",
           {"text_tokens": "tokens", "first_frame": "first", "motion": "frames"}),
    Method("two_stage", "from the decoded first-frame latent (Brain-Diffuser)", {"text_tokens": "tokens", "vae": "first"}),
    Method("image_img2img", "per frame: Stable Diffusion img2img from the decoded low-level latents (Brain-Diffuser)",
           {"text_tokens": "tokens", "vae": "frames"}, generator="text_to_image", scheduler="ddpm"),
    Method("animatediff", "AnimateDiff (Stable Diffusion 1.5 + motion adapter, maintained upstream) from noise",
           {"text_tokens": "tokens"}, generator="animatediff"),
    Method("neuroclips", "AnimateDiff from the decoded blurry video (frame latents) as init, its first frame the "
           "decoded keyframe latent (NeuroClips-style)",
           {"text_tokens": "tokens", "first_frame": "first", "motion": "frames"}, generator="animatediff"),
    Method("image_to_video", "Stable Video Diffusion (image-to-video, maintained upstream) from the decoded keyframe: "
           "the decoded first-frame latent decoded to pixels by features.vae_model; no caption tokens",
           {"first_frame": "first"}, generator="image_to_video", keyframe=True),
    Method("wan", "Wan 2.1 text-to-video (WanPipeline, maintained upstream) from noise, conditioned on the decoded "
           "token embeddings of its own UMT5 text encoder", {"text_tokens": "tokens"}, generator="wan",
           scheduler="auto", vae_latents=False),
]}

#: what generate.pipeline.model must be for each generator kind (schema description)
_GENERATORS = {
    "text_to_video": "a text-to-video model (diffusers TextToVideoSDPipeline, e.g. ali-vilab/text-to-video-ms-1.7b)",
    "text_to_image": "a text-to-image Stable Diffusion model (diffusers StableDiffusionImg2ImgPipeline, e.g. "
                     "stable-diffusion-v1-5/stable-diffusion-v1-5), with features.vae_model '<model>#vae' and the "
                     "token features from features.tokens.model '<model>#text_encoder'; generate.pipeline.scheduler "
                     "auto is ddpm for it (ddim for the others)",
    "animatediff": "a Stable Diffusion 1.x model (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) combined with "
                   "generate.pipeline.motion_adapter, or a saved AnimateDiffPipeline folder (fmrivid/generate/"
                   "animatediff.py), with features.vae_model '<model>#vae' and the token features of its CLIP text "
                   "encoder",
    "image_to_video": "a Stable Video Diffusion model (diffusers StableVideoDiffusionPipeline, e.g. "
                      "stabilityai/stable-video-diffusion-img2vid-xt; fmrivid/generate/svd.py) and decoded first-frame "
                      "latents (decode.targets vae or the structure decoder) of any features.vae_model, which decodes "
                      "them to the keyframe (decode.targets need not include text_tokens)",
    "wan": "a Wan 2.1 text-to-video model (diffusers WanPipeline, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers; fmrivid/"
           "generate/wan.py), with features.tokens.model '<model>#text_encoder' (its UMT5 text encoder, token width "
           "4096; features.tokens.max_length e.g. 64 keeps the leading tokens the decoders predict, zero-padded back "
           "to generate.pipeline.max_sequence_length) and 4k+1 frames (generate.pipeline.num_frames = "
           "features.n_frames, e.g. 17); generate.pipeline.scheduler auto is the pipeline's flow UniPC",
}

#: decoded inputs of each diffusers method (keywords of generate_chunk)
DIFFUSERS_DECODED = {n: tuple(m.decoded) for n, m in METHODS.items() if m.diffusers}

#: the fmrivid.models kind features.tokens.model is loaded as, per generator kind (default: CLIP ``text_tokens``)
TOKEN_KINDS = {"wan": "umt5_tokens"}


def token_kind(method):
    """The :data:`fmrivid.models.KINDS` kind of ``features.tokens.model`` for ``generate.method`` ``method``: the
    text encoder of its generator (``umt5_tokens`` for Wan's UMT5, else ``text_tokens``: CLIPTextModel). Read by
    rule token_features, so ``tiny#text_encoder`` is the tiny text tower of the generator in use."""
    return TOKEN_KINDS.get(METHODS[method].generator, "text_tokens")


def schema_description():
    diffusers = [n for n, m in METHODS.items() if m.diffusers and not m.keyframe]  # conditioned on caption tokens
    keyframe = [n for n, m in METHODS.items() if m.diffusers and m.keyframe]  # on a decoded keyframe image only
    by_kind = {}
    for n in diffusers + keyframe:
        by_kind.setdefault(METHODS[n].generator, []).append(n)
    needs = "; ".join(f"{' / '.join(names)} need{'s' if len(names) == 1 else ''} {_GENERATORS[kind]}"
                      for kind, names in by_kind.items())
    return ("Generator. " + "; ".join(f"{n}: {m.summary}" for n, m in METHODS.items() if not m.diffusers)
            + ". " + " / ".join(diffusers) + ": the diffusers pipeline of generate.pipeline conditioned on decoded "
            "caption token embeddings (decode.targets needs text_tokens), "
            + " / ".join(METHODS[n].summary for n in diffusers)
            + " (features.vae_model must be '<generate.pipeline.model>#vae'). "
            + "".join(f"{n}: {METHODS[n].summary}. " for n in keyframe) + needs
            + ". Methods and their decoded inputs: fmrivid/generate/methods.py.")
