"""The generation methods (``generate.method``), declared once: read by the rules (generate_chunk's inputs), the
stage (which decoded files a method needs) and the config schema (the choices and their description).

Each method names its decoded inputs: keyword of :func:`fmrivid.generate.stages.generate_chunk` -> what is
decoded. ``tokens`` are ridge-decoded caption token embeddings (the conditioning of every diffusers method);
``first`` is the decoded first-frame latent (the structure decoder's, else ridge ``vae``); ``frames`` the decoded
frame latents (the motion / fusion decoder's, else ridge ``vae_frames``); ``caption`` the ridge-decoded caption
embedding the demo generator reads. Adding a method: its entry here, its handling in
:mod:`fmrivid.generate.pipelines`, its test. This module imports nothing heavy (the DAG reads it when it plans).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    decoded: dict  # generate_chunk keyword -> "tokens" | "first" | "frames" | "caption"
    diffusers: bool = True  # a diffusers pipeline (generate.pipeline); False: the demo generator trained here


METHODS = {m.name: m for m in [
    Method("demo", "a tiny VAE + UNet3D trained in the workflow on the training clips, conditioned on decoded "
           "caption embeddings", {"pred_path": "caption"}, diffusers=False),
    Method("text_to_video", "from noise", {"text_tokens": "tokens"}),
    Method("structure_motion", "from the decoded first-frame + motion latents (Mind-Animator)",
           {"text_tokens": "tokens", "first_frame": "first", "motion": "frames"}),
    Method("two_stage", "from the decoded first-frame latent (Brain-Diffuser)", {"text_tokens": "tokens", "vae": "first"}),
]}

#: decoded inputs of each diffusers method (keywords of generate_chunk)
DIFFUSERS_DECODED = {n: tuple(m.decoded) for n, m in METHODS.items() if m.diffusers}


def schema_description():
    diffusers = [n for n, m in METHODS.items() if m.diffusers]
    return ("Generator. " + "; ".join(f"{n}: {m.summary}" for n, m in METHODS.items() if not m.diffusers)
            + ". " + " / ".join(diffusers) + ": the diffusers pipeline of generate.pipeline conditioned on decoded "
            "caption token embeddings (decode.targets needs text_tokens), "
            + " / ".join(METHODS[n].summary for n in diffusers)
            + " (features.vae_model must be '<generate.pipeline.model>#vae'). Methods and their decoded inputs: "
            "fmrivid/generate/methods.py.")
