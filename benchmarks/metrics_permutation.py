"""Permutation p-values of the evaluation suite: pair cache + vectorised N-way vs the direct computation.

The direct way (fmrivid.metrics.stats.permutation_p, the textbook loop) recomputes the metric on every
shuffled pairing; the suite caches per-(reconstruction, GT) pair values (at most N*N of them) and evaluates
all N-way trials of a pairing at once. Prints wall times and the ratio; checks both give the same p.

    .venv/bin/python benchmarks/metrics_permutation.py [--clips 12] [--frames 8] [--size 64] [--perm 100]
"""

import argparse
import time

import numpy as np

from fmrivid.metrics import classify, pixel
from fmrivid.metrics.stats import PairCache, permutation_p, permutation_p_values


def _time(fn, repeat=1):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--perm", type=int, default=100)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, t, s = args.clips, args.frames, args.size
    gt = rng.integers(0, 256, (n, t, s, s, 3), dtype=np.uint8)
    rec = np.clip(gt.astype(int) + rng.integers(-40, 40, gt.shape), 0, 255).astype(np.uint8)
    print(f"{n} clips x {t} frames at {s}px, {args.perm} permutations")
    print(f"{'metric':<22s}{'direct s':>10s}{'suite s':>10s}{'ratio':>8s}  same p")
    fn = pixel.ssim_rgb_uniform
    td, pd_ = _time(lambda: permutation_p(fn, gt, rec, n_perm=args.perm, seed=0))
    ts, ps = _time(lambda: permutation_p_values(PairCache(lambda ri, gi: fn(gt[gi], rec[ri])), n,
                                                n_perm=args.perm, seed=0))
    print(f"{'ssim_rgb_uniform':<22s}{td:10.3f}{ts:10.3f}{td / ts:8.1f}  {pd_ == ps}")

    pg = rng.dirichlet(np.ones(1000), size=(n, t))
    pr = rng.dirichlet(np.ones(1000), size=(n, t))
    pos = classify.draw_positions(n, t, 1000, 50, 3, 100, 0)

    def direct(perm):  # per-trial reference loop
        return np.array([np.mean([classify.nway_clip(pg[perm[i], f], pr[i, f], pos[i, f], 3) for f in range(t)])
                         for i in range(n)])

    prepared = classify.prepare_gt(pg, 3)
    td, pd_ = _time(lambda: permutation_p_values(direct, n, n_perm=args.perm, seed=0))
    ts, ps = _time(lambda: permutation_p_values(
        PairCache(lambda ri, gi: classify.nway_pairs(pr, prepared, pos, ri, gi)), n, n_perm=args.perm, seed=0))
    print(f"{'nway_topk frame 50':<22s}{td:10.3f}{ts:10.3f}{td / ts:8.1f}  {pd_ == ps}")


if __name__ == "__main__":
    main()
