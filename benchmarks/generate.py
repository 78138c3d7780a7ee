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

The maintained backends (:data:`BACKENDS`: AnimateDiff, Wan 2.1 T2V-1.3B, Stable Video Diffusion img2vid-xt) are
timed one at a time by :func:`time_backend` through their own fmrivid generation functions, at their real-size
architectures with random weights (:func:`backend_spec`) or tiny ones; the GPU suite's ``backends`` section runs
it (``benchmarks/gpu_suite.py``, whose docstring lists the sizes and settings).
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

#: Backends timed one by one by :func:`time_backend` (the GPU suite's ``backends`` section runs each in a process).
BACKENDS = ("animatediff", "wan", "svd")

#: stabilityai/stable-video-diffusion-img2vid-xt ``vae/config.json``: AutoencoderKLTemporalDecoder (its class defaults
#: are a one-level toy VAE; scaling_factor 0.18215 and force_upcast true are the defaults).
SVD_XT_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
              "layers_per_block": 2, "latent_channels": 4, "sample_size": 768}
#: img2vid-xt ``image_encoder/config.json``: the OpenCLIP ViT-H/14 image tower (CLIPVisionModelWithProjection).
SVD_XT_IMAGE_ENCODER = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                        "num_attention_heads": 16, "projection_dim": 1024, "image_size": 224, "patch_size": 14,
                        "hidden_act": "gelu"}

_GENERATE_FN = {"animatediff": "fmrivid.generate.animatediff.generate", "wan": "fmrivid.generate.wan.generate",
                "svd": "fmrivid.generate.svd.generate"}


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
        ``module`` (the fmrivid backend module), ``load(device) -> pipeline``, ``cfg`` (``generate.pipeline``
        overrides of the module's DEFAULTS), ``cond(pipe, n, rng) -> cond``, ``denoiser(pipe) -> module`` (the
        network called once or twice per sampler step), ``architecture`` (words).
    """
    if name == "animatediff":
        from fmrivid.generate import animatediff as module

        # SD1.5 + guoyww/animatediff-motion-adapter-v1-5-3 (AnimateDiff v3 as NeuroClips): no mid-block motion module.
        tiny_config = {**module.SD15_REAL_SIZE_CONFIG, "motion_mid_block": False} if real else None

        def cond(pipe, n, rng):
            length, dim = int(pipe.tokenizer.model_max_length), int(pipe.unet.config.cross_attention_dim)
            return {"text_tokens": rng.standard_normal((n, length, dim)).astype(np.float32),
                    "negative": rng.standard_normal((length, dim)).astype(np.float32)}

        return {
            "module": module, "cond": cond, "denoiser": lambda pipe: pipe.unet,
            "load": lambda device: module.load("tiny", seed=0, device=device, tiny_config=tiny_config),
            # the real SD1.5 VAE says force_upcast: decoded in float32 (the tiny builder's VAE does not say it)
            "cfg": ({"num_frames": 16, "height": 512, "width": 512, "batch_size": 4, "vae_upcast": True}
                    if real else {"num_frames": 4, "height": 32, "width": 32, "batch_size": 2}),
            "architecture": ("SD1.5 UNet2DConditionModel (320/640/1280/1280, 8 heads, cross-attention 768) + "
                             "MotionAdapter at animatediff-motion-adapter-v1-5-3 sizes (8-head temporal transformers, "
                             "no mid-block motion module) composed into a UNetMotionModel; SD VAE decoded in float32; "
                             "CLIP ViT-L/14 text tower (unused: decoded tokens)") if real else "tiny",
        }
    if name == "wan":
        from fmrivid.generate import wan as module

        def cond(pipe, n, rng):
            length, dim = (64 if real else 8), module.text_dim(pipe)
            return {"text_tokens": rng.standard_normal((n, length, dim)).astype(np.float32),
                    "negative": rng.standard_normal((length, dim)).astype(np.float32)}

        return {
            "module": module, "cond": cond, "denoiser": lambda pipe: pipe.transformer,
            "load": lambda device: module.load("tiny", seed=0, device=device, text_encoder=False,
                                               tiny_config=module.WAN21_T2V_1_3B_CONFIG if real else None),
            # 33 frames = 2.06 s at Wan's 16 fps: one CC2017 clip (2 s); 480x832 is Wan 2.1 1.3B's training size
            "cfg": ({"num_frames": 33, "height": 480, "width": 832, "batch_size": 4} if real
                    else {"num_frames": 5, "height": 32, "width": 32, "batch_size": 2, "max_sequence_length": 16}),
            "architecture": ("Wan2.1-T2V-1.3B WanTransformer3DModel (30 layers, 12 heads x 128, FFN 8960, text 4096, "
                             "freq 256, patch 1x2x2) + AutoencoderKLWan (base 96, 1/2/4/4, 16 latent channels, "
                             "decoded in float32); no UMT5 text encoder (64 decoded tokens, zero-padded to 512)")
            if real else "tiny",
        }
    if name == "svd":
        from fmrivid.generate import svd as module

        def cond(pipe, n, rng):
            side = 256 if real else 32  # the decoded keyframe at features.size (CC2017: 256); __call__ resizes it
            return {"keyframe": rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)}

        return {
            "module": module, "cond": cond, "denoiser": lambda pipe: pipe.unet,
            "load": (lambda device: _svd_real_pipeline(0).to(device)) if real
            else (lambda device: module.load("tiny", seed=0, device=device)),
            "cfg": {} if real else {"num_frames": 4, "height": 32, "width": 32, "batch_size": 2},
            "architecture": ("stable-video-diffusion-img2vid-xt: UNetSpatioTemporalConditionModel (its defaults), "
                             "AutoencoderKLTemporalDecoder 128/256/512/512, CLIPVisionModelWithProjection ViT-H/14")
            if real else "tiny",
        }
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
    (VAE decoding, image encoding, scheduler, transfers) is known too and the seconds per clip at the backend's
    DEFAULT step count are extrapolated: ``other + default_steps * per_step`` (labelled ``extrapolated``).

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
    module = spec["module"]
    cuda = str(device).startswith("cuda")
    rec = {"backend": name, "generation_function": _GENERATE_FN[name], "architecture": spec["architecture"],
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
    cfg = module.settings(spec["cfg"])
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
        run_cfg = dict(spec["cfg"], steps=int(steps_), batch_size=int(batch))
        start = time.perf_counter()
        with clock:
            video = module.generate(pipe, cond_, ids_, run_cfg, seed=0, device=device, log=log)
            if cuda:
                torch.cuda.synchronize()
        return video, time.perf_counter() - start

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
        video, seconds = one(ids, cond, k, n)
        peak, rise = torch.cuda.max_memory_allocated(), None
    else:
        with _PeakRSS() as rss:
            video, seconds = one(ids, cond, k, n)
        peak, rise = rss.peak, rss.peak - rss.start
    denoise = clock.seconds / n / k
    other = max(0.0, seconds - clock.seconds) / n
    s_clip = other + rec["default_steps"] * denoise
    rec.update(
        phase="done", seconds=seconds, shape=list(video.shape), denoiser_calls=clock.calls,
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
