"""Synthetic uint8 clips shared by the metric tests: smooth sinusoid textures (structure for SSIM to see)."""

import numpy as np


def smooth_clips(seed, n, t, h, w, max_freq=0.6):
    """(n, t, h, w, 3) uint8 clips of random sinusoidal gratings, one per frame and channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, t, h, w, 3), dtype=np.uint8)
    for i in range(n):
        for j in range(t):
            for c in range(3):
                fx, fy, ph = rng.uniform(0.1, max_freq), rng.uniform(0.1, max_freq), rng.uniform(0, 6)
                out[i, j, :, :, c] = (127 + 100 * np.sin(fx * xx + fy * yy + ph)).astype(np.uint8)
    return out


def noisy(clips, sigma, seed):
    """``clips`` plus Gaussian noise of SD ``sigma``, rounded and clipped back to uint8."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(clips.astype(np.float64) + rng.normal(0, sigma, clips.shape)), 0, 255).astype(np.uint8)
