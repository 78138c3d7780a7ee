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
