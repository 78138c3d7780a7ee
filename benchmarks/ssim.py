"""RGB uniform-window SSIM (MinD-Video / Mind-Animator / GLFA): fmrivid's OpenCV box filter vs scikit-image.

fmrivid.metrics.pixel.ssim_uniform_frame computes what ``skimage.metrics.structural_similarity(a, b,
channel_axis=-1, win_size=7, data_range=255)`` computes, with OpenCV's box filter in place of scipy's
per-channel uniform filter. Prints the time per frame of each, their ratio and the largest difference, at the
protocols' frame sizes (256: MinD-Video, 512: Mind-Animator).

    .venv/bin/python benchmarks/ssim.py [--sizes 256 512] [--frames 20]
"""

import argparse
import time

import numpy as np
from skimage.metrics import structural_similarity

from fmrivid.metrics.pixel import ssim_uniform_frame


def _per_frame(fn, a, b):
    t0 = time.perf_counter()
    vals = [fn(x, y) for x, y in zip(a, b)]
    return (time.perf_counter() - t0) / len(a), np.array(vals)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--frames", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'size':>6s}{'skimage s':>12s}{'fmrivid s':>12s}{'ratio':>8s}{'max |diff|':>12s}")
    for size in args.sizes:
        a = rng.integers(0, 256, (args.frames, size, size, 3), dtype=np.uint8)
        b = np.clip(a * 0.7 + rng.integers(0, 80, a.shape), 0, 255).astype(np.uint8)
        t_ref, ref = _per_frame(lambda x, y: structural_similarity(x, y, channel_axis=-1, win_size=7,
                                                                   data_range=255), a, b)
        t_ours, ours = _per_frame(ssim_uniform_frame, a, b)
        diff = float(np.abs(ref - ours).max())
        print(f"{size:>6d}{t_ref:>12.4f}{t_ours:>12.4f}{t_ref / t_ours:>8.2f}{diff:>12.1e}")
        if diff > 1e-12:
            raise SystemExit(f"ssim_uniform_frame differs from scikit-image by {diff:g} at {size}px")


if __name__ == "__main__":
    main()
