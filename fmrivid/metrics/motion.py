"""Motion metric: end-point error between the optical flows of GT and reconstruction.

Flow is OpenCV's Farneback on grayscale frames with the parameters
Mind-Animator uses: ``pyr_scale=0.5, levels=3, winsize=15, iterations=3,
poly_n=5, poly_sigma=1.2, flags=0``.
"""

from __future__ import annotations

import cv2
import numpy as np

from fmrivid.errors import InputError
from fmrivid.metrics.pixel import _check_videos

FARNEBACK_PARAMS = (0.5, 3, 15, 3, 5, 1.2, 0)

VARIANTS = {
    "epe_farneback": (
        "end-point error (mean over pixels of the Euclidean distance) between the Farneback flows of "
        "consecutive GT frames and of consecutive reconstructed frames; cv2.calcOpticalFlowFarneback "
        "on cv2 RGB2GRAY frames, params (0.5, 3, 15, 3, 5, 1.2, 0); mean over the T-1 frame pairs; "
        "lower is better"
    ),
}


def farneback_flow(frames):
    """Farneback flow between consecutive frames of one clip.

    Parameters
    ----------
    frames : ndarray, uint8, shape (T, H, W, 3)

    Returns
    -------
    ndarray, float32, shape (T-1, H, W, 2)
        ``flow[k]`` maps frame k to frame k+1 (dx, dy in pixels).
    """
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([cv2.calcOpticalFlowFarneback(gray[k], gray[k + 1], None, *FARNEBACK_PARAMS)
                     for k in range(len(gray) - 1)])


def clip_flows(clips):
    """:func:`farneback_flow` of every clip: (N, T-1, H, W, 2) float32."""
    return np.stack([farneback_flow(c) for c in clips])


def epe_from_flows(flow_gt, flow_rec):
    """Mean end-point error per clip from precomputed flows (N, T-1, H, W, 2) -> (N,)."""
    d = flow_gt.astype(np.float64) - flow_rec.astype(np.float64)
    return np.sqrt((d * d).sum(axis=-1)).mean(axis=(1, 2, 3))


def epe_farneback(gt, rec):
    """End-point error between the Farneback flows of GT and reconstruction.

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)
        T >= 2.

    Returns
    -------
    ndarray, float64, shape (N,)
        Pixels per frame pair; 0 for identical clips.
    """
    gt, rec = _check_videos(gt, rec)
    if gt.shape[1] < 2:
        raise InputError("gt", "at least 2 frames per clip (optical flow)", f"{gt.shape[1]} frame(s)")
    return epe_from_flows(clip_flows(gt), clip_flows(rec))
