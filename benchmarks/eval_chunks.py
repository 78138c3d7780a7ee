"""Chunked evaluation (GT cache + one partial per chunk + merge) against the unchunked evaluate_videos.

Both give the same rows (checked here, bit for bit). The chunked way pays the GT side once (the cache),
then each chunk pays only its own reconstructions and its share of the shuffled pairings; the sum of the
chunks' work equals the unchunked work, plus file I/O and the per-chunk model loads the workflow does.
Prints wall times (best of --repeat), the ratio, the file sizes, and the time of the slowest chunk
(what a cluster running the chunks in parallel waits for). Tiny random models (CLIP, ViT, VideoMAE) and a
random-backbone LPIPS, as in the unit tests.

    .venv/bin/python benchmarks/eval_chunks.py [--clips 11] [--frames 4] [--size 32] [--chunk 4] [--perm 15]
        [--protocol brain_diffuser]

``--protocol brain_diffuser`` adds that protocol's feature-network metrics (random-weight AlexNet, InceptionV3,
EffNet-B, SwAV, CLIP) and also times the chunks with the GT features computed in every chunk (what the evaluation
did before they moved into the GT cache): that cost grows as clips^2 / chunk size.
"""

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
from clipgen import noisy, smooth_clips  # noqa: E402

from fmrivid.metrics import suite  # noqa: E402


def _quiet(*_):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=11)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--perm", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--protocol", choices=["brain_diffuser", "mindeye"], default=None)
    args = ap.parse_args()

    import torch

    from fmrivid import models
    from fmrivid.metrics.perceptual import LPIPS

    torch.set_num_threads(1)
    n = args.clips
    gt = smooth_clips(0, n, args.frames, args.size, args.size, max_freq=0.5)
    rec = noisy(gt, 40, 1)
    ids = [f"clip{i:04d}" for i in range(n)]
    loaded = {"clip": models.load("tiny", "clip", seed=0),
              "image_classifier": models.load("tiny", "image_classifier", seed=0),
              "video_classifier": models.load("tiny", "video_classifier", seed=0),
              "lpips": {"lpips_alex": LPIPS("lpips_alex", random_backbone=True)}}
    cfg = {"n_boot": 100, "n_perm": args.perm, "ssim_size": None, "clip_gate": 0.2, "nway": [2, 50],
           "nway_trials": 100, "nway_gt": 3}
    if args.protocol:
        from fmrivid.metrics import featnets

        cfg["protocol"] = ["fmrivid", args.protocol]
        loaded["protocol"] = {f"{args.protocol}:{net}": featnets.load_featnet(net, "random", protocol=args.protocol)
                              for net in featnets.NETS}
    chunks = [slice(k, min(n, k + args.chunk)) for k in range(0, n, args.chunk)]
    print(f"{n} clips x {args.frames} frames at {args.size}px, {args.perm} permutations, {len(chunks)} chunk(s) "
          f"of <= {args.chunk} clips")

    def unchunked():
        return suite.evaluate_videos(gt, rec, ids, "01", "demo", cfg, 0, models=loaded, log=_quiet)

    def chunked(tmp):
        t0 = time.perf_counter()
        suite.gt_cache(gt, ids, loaded, cfg, tmp / "gt.h5", log=_quiet)
        times = {"cache": time.perf_counter() - t0, "chunks": []}
        paths = []
        for k, rows in enumerate(chunks):
            t0 = time.perf_counter()
            cache = suite.read_gt_cache(tmp / "gt.h5")
            part = suite.evaluate_videos_chunk(gt, cache, rec[rows], np.arange(n)[rows], n, ids, "01", "demo", cfg,
                                               0, models=loaded, log=_quiet)
            paths.append(tmp / f"part-{k}.h5")
            suite.write_partial(part, paths[-1])
            times["chunks"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = suite.merge_partials([suite.read_partial(p) for p in paths], cfg, log=_quiet)
        times["merge"] = time.perf_counter() - t0
        times["bytes"] = {"cache": (tmp / "gt.h5").stat().st_size, "partials": sum(p.stat().st_size for p in paths)}
        return out, times

    unchunked()  # warm-up (first forward passes)
    best_u, best_c = math.inf, None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ref = unchunked()
        best_u = min(best_u, time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            got, times = chunked(Path(d))
            total = time.perf_counter() - t0
        if best_c is None or total < best_c[0]:
            best_c = (total, times)
    total, times = best_c
    same = all(a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
               for ra, rb in zip(ref[0], got[0]) for a, b in zip(ra.values(), rb.values()))
    same = same and len(ref[0]) == len(got[0]) and ref[1] == got[1]
    print(f"{'unchunked evaluate_videos':<34s}{best_u:8.2f} s")
    print(f"{'GT cache':<34s}{times['cache']:8.2f} s  ({times['bytes']['cache'] / 1e6:.2f} MB)")
    print(f"{'chunks (sum)':<34s}{sum(times['chunks']):8.2f} s  ({times['bytes']['partials'] / 1e6:.2f} MB of "
          f"partials)")
    print(f"{'slowest chunk':<34s}{max(times['chunks']):8.2f} s")
    print(f"{'merge':<34s}{times['merge']:8.2f} s")
    print(f"{'chunked total (cache+chunks+merge)':<34s}{total:8.2f} s   ratio chunked/unchunked "
          f"{total / best_u:.2f}")
    print(f"{'critical path (cache+slowest+merge)':<34s}"
          f"{times['cache'] + max(times['chunks']) + times['merge']:8.2f} s   ratio "
          f"{(times['cache'] + max(times['chunks']) + times['merge']) / best_u:.2f}")
    print(f"rows identical (every float): {same}")
    if args.protocol:  # before: each chunk computed every GT clip's feature-network features
        mem = suite.gt_cache_arrays(gt, ids, loaded, log=_quiet, cfg=cfg)
        with tempfile.TemporaryDirectory() as d:
            suite.gt_cache(gt, ids, loaded, cfg, Path(d) / "gt.h5", log=_quiet)
            cached = suite.read_gt_cache(Path(d) / "gt.h5")
            for name, cache in (("GT features in every chunk (before)", mem), ("GT features from the cache", cached)):
                t0 = time.perf_counter()
                for rows in chunks:
                    suite.evaluate_videos_chunk(gt, cache, rec[rows], np.arange(n)[rows], n, ids, "01", "demo", cfg,
                                                0, models=loaded, log=_quiet)
                print(f"{name:<40s}{time.perf_counter() - t0:8.2f} s for {len(chunks)} chunks")


if __name__ == "__main__":
    main()
