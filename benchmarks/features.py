"""Throughput of every feature extractor, batched vs one item per forward pass, side by side.

For each extractor it prints clips per second with the configured batch size
and with batch size 1 (what a per-image Python loop around the model does),
and their ratio. Models are ``tiny`` by default (the only ones that load on a
machine without a model cache); ``--spec KIND=SPEC`` swaps in a real model
from the local Hugging Face cache, e.g. ``--spec clip=openai/clip-vit-base-patch32``.
On CUDA the models run in half precision, as in the workflow.

Usage::

    python benchmarks/features.py --clips 32 --frames 8 --size 64 --device cpu
    python benchmarks/features.py --device cuda --clips 256

Figures are wall-clock, best of ``--repeats`` runs after one warm-up; the
machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fmrivid import models
from fmrivid.features import audio, embed, flow
from fmrivid.stimuli import audio as synth
from fmrivid.stimuli import captions as caps

CAPTIONS = ["a red circle drifts left over a striped background", "two blue squares spin",
            "a green triangle moves up over a checkerboard", "a yellow star jumps right"]


def _best(func, repeats):
    func()  # warm-up
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        func()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def _load(kind, specs, device):
    dtype = "float16" if device.startswith("cuda") and kind in ("vae", "wav2vec2", "audioldm",
                                                                   "captioner") else None
    return models.load(specs.get(kind, "tiny"), kind, seed=0, device=device, dtype=dtype)


def extractors(args, specs):
    """name -> (function(batch_size) computing the feature of all clips)."""
    rng = np.random.default_rng(0)
    n, t, side = args.clips, args.frames, args.size
    video = rng.integers(0, 256, (n, t, side, side, 3), dtype=np.uint8)
    texts = [CAPTIONS[i % len(CAPTIONS)] + f" {i}" for i in range(n)]
    rate, tr = 16000, args.tr
    waves = rng.normal(size=(n, int(args.duration * rate))).astype(np.float32)
    clip = _load("clip", specs, args.device)
    tokens = _load("text_tokens", specs, args.device)
    vae = _load("vae", specs, args.device)
    w2v = _load("wav2vec2", specs, args.device)
    out = {
        "clip_image (middle frame)": lambda b: embed.image_embeddings(clip, video, b),
        "clip_image (all frames)": lambda b: embed.image_embeddings(clip, video, b, which="mean"),
        "clip_text": lambda b: embed.text_embeddings(clip, texts, b),
        "text_tokens": lambda b: embed.token_embeddings(tokens, texts, b),
        "vae (first frame)": lambda b: embed.vae_latents(vae, video[:, 0], b),
        "vae (all frames)": lambda b: embed.vae_latents(vae, video.reshape((-1, side, side, 3)), b),
        "wav2vec2 (per TR)": lambda b: audio.wav2vec_embeddings(w2v, waves, rate, tr, 1.0, b),
    }
    if not args.skip_slow:
        cap = _load("captioner", specs, args.device)
        ldm = _load("audioldm", specs, args.device)
        seeds = list(range(n))
        out["captioner (first+last)"] = lambda b: caps.clip_captions(
            [str(i) for i in range(n)], [None] * n, "model", video, cap, b, 8, log=lambda m: None)
        out[f"audioldm ({args.audio_steps} steps)"] = lambda b: synth.synthesize(
            ldm, texts, seeds, args.duration, args.audio_steps, 2.5, b, log=lambda m: None)
    out["flow (Farneback, no model)"] = lambda b: flow.farneback_motion(video, 4)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=2.0, help="clip (audio) duration, s")
    parser.add_argument("--tr", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--audio-steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-slow", action="store_true", help="skip the captioner and AudioLDM")
    parser.add_argument("--spec", action="append", default=[], metavar="KIND=SPEC")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = dict(item.split("=", 1) for item in args.spec)
    print(f"{args.clips} clips x {args.frames} frames of {args.size}px, {args.duration:g} s audio, "
          f"device {args.device}, {args.threads} threads, models "
          f"{ {k: specs.get(k, 'tiny') for k in ('clip', 'text_tokens', 'vae', 'wav2vec2', 'captioner', 'audioldm')} }")
    print(f"{'extractor':32s} {'batched clips/s':>16s} {'batch 1 clips/s':>16s} {'ratio':>7s}")
    for name, func in extractors(args, specs).items():
        batched = args.clips / _best(lambda: func(args.batch_size), args.repeats)
        if name.startswith("flow"):
            print(f"{name:32s} {batched:16.1f} {'-':>16s} {'-':>7s}")
            continue
        single = args.clips / _best(lambda: func(1), args.repeats)
        print(f"{name:32s} {batched:16.1f} {single:16.1f} {batched / single:7.2f}")


if __name__ == "__main__":
    main()
