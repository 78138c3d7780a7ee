"""Optical-flow motion features (OpenCV Farneback) of clip frames.

Parameters default to those of Mind-Animator's EPE metric
``(pyr_scale 0.5, levels 3, winsize 15, iterations 3, poly_n 5, poly_sigma 1.2, flags 0)``
on grayscale frames. The dense flow of each consecutive frame pair is averaged
over a ``grid x grid`` partition of the frame (area averaging), giving a small
motion map per pair in pixels per frame.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FARNEBACK", "farneback_motion"]

FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
             "poly_sigma": 1.2, "flags": 0}


def farneback_motion(frames, grid=4, params=None, log=None):
    """Grid-averaged Farneback flow between consecutive frames of each clip.

    Parameters
    ----------
    frames : ndarray of uint8, shape (N, T, H, W, 3)
    grid : int
        Cells per side; H and W are split into ``grid`` equal bands (area average).
    params : dict, optional
        Overrides of :data:`FARNEBACK`.
    log : callable, optional
        Progress messages.

    Returns
    -------
    ndarray of float32, shape (N, T - 1, grid, grid, 2)
        Mean (dx, dy) displacement in pixels from frame t to t + 1.
    """
    import cv2

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 array (N, T, H, W, 3); found {frames.dtype} "
                         f"array {frames.shape}")
    n, t, h, w = frames.shape[:4]
    grid = int(grid)
    if grid < 1 or grid > min(h, w):
        raise ValueError(f"grid: expected 1..{min(h, w)} cells per side; found {grid}")
    if t < 2:
        raise ValueError(f"frames: motion needs at least 2 frames per clip; found {t}")
    settings = dict(FARNEBACK, **(params or {}))
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames.reshape(n * t, h, w, 3)])
    gray = gray.reshape(n, t, h, w)
    out = np.zeros((n, t - 1, grid, grid, 2), dtype=np.float32)
    for i in range(n):
        for k in range(t - 1):
            flow = cv2.calcOpticalFlowFarneback(gray[i, k], gray[i, k + 1], None, **settings)
            out[i, k] = cv2.resize(flow, (grid, grid), interpolation=cv2.INTER_AREA)
        if log and (i + 1) % 500 == 0:
            log(f"flow: {i + 1}/{n} clips")
    return out
