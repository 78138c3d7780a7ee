"""Pixel-level metrics between ground-truth and reconstructed videos.

Every function takes two lossless uint8 arrays ``gt`` and ``rec`` of shape
(N, T, H, W, 3) (N clips of T RGB frames) and returns a float64 array (N,):
one value per clip, the mean over its frames. Averaging over clips (and the
confidence interval) is left to :mod:`fmrivid.metrics.table`.

Each metric exists in the variant named by its function; :data:`VARIANTS`
holds the one-line description that goes into every table and report, and
:func:`variant` appends the resolution the frames were compared at.

Frames are never read back from GIF/MP4 here: palette quantisation and lossy
codecs change the numbers (see REFERENCE.md, section 3).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

from fmrivid.errors import InputError

#: PSNR value reported for identical frames (MSE = 0), and the upper clip of
#: every per-frame PSNR, so that a clip mean stays finite and monotonic.
PSNR_CAP_DB = 100.0

VARIANTS = {
    "ssim_rgb_uniform": (
        "scikit-image SSIM on RGB (channel_axis=-1, per-channel mean), 7x7 uniform window, "
        "sample covariance, data_range=255; mean over frames"
    ),
    "ssim_gray_gaussian": (
        "scikit-image SSIM on rgb2gray luminance in [0,1], Gaussian window sigma=1.5, "
        "use_sample_covariance=False, data_range=1.0; mean over frames"
    ),
    "psnr": (
        f"20*log10(255/sqrt(MSE)) over all RGB values of a frame, capped at {PSNR_CAP_DB:g} dB "
        "(identical frames); mean over frames"
    ),
    "pixcorr": (
        "Pearson r of the flattened RGB frame (H*W*3 values); r=1 for identical constant "
        "frames, 0 for any other zero-variance pair; mean over frames"
    ),
}

_RESIZE_NOTE = "cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging, rounded to uint8"


def variant(name, size=None):
    """Return the full variant string of a pixel metric, resolution included.

    Parameters
    ----------
    name : str
        A key of :data:`VARIANTS`.
    size : int or None
        The ``size`` argument the metric was computed with.

    Returns
    -------
    str
        ``VARIANTS[name]`` followed by the resolution the frames were compared at.
    """
    if name not in VARIANTS:
        raise ValueError(f"variant(): unknown metric {name!r}; expected one of {sorted(VARIANTS)}")
    if size is None or name in ("psnr", "pixcorr"):
        return f"{VARIANTS[name]}; native resolution"
    return f"{VARIANTS[name]}; frames resized to {int(size)}x{int(size)} ({_RESIZE_NOTE})"


def _check_videos(gt, rec):
    """Validate a (gt, rec) pair and return them as numpy arrays."""
    gt = np.asarray(gt)
    rec = np.asarray(rec)
    for name, arr in (("gt", gt), ("rec", rec)):
        if arr.dtype != np.uint8:
            raise InputError(name, "a lossless uint8 array (N, T, H, W, 3)", f"dtype {arr.dtype}")
        if arr.ndim != 5 or arr.shape[-1] != 3:
            raise InputError(name, "an array of shape (N, T, H, W, 3)", f"shape {arr.shape}")
        if min(arr.shape[:3]) < 1:
            raise InputError(name, "at least one clip, frame and pixel row", f"shape {arr.shape}")
    if gt.shape != rec.shape:
        raise InputError("rec", f"the shape of gt {gt.shape}", f"shape {rec.shape}")
    return gt, rec


def _check_size(size):
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 7:
        raise ValueError(f"size must be None or an integer >= 7 (SSIM window), got {size!r}")
    return int(size)


def _resize_frame(frame, size):
    """Resize one uint8 (H, W, 3) frame to (size, size, 3); identity at the same size."""
    h, w = frame.shape[:2]
    if size is None or (h == size and w == size):
        return frame
    interp = cv2.INTER_AREA if size < h or size < w else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), (size, size), interpolation=interp)


def _check_ssim_frame(shape, size):
    h, w = (size, size) if size is not None else shape
    if min(h, w) < 7:
        raise InputError("gt", "frames at least 7x7 (SSIM window)", f"{h}x{w}")


def _per_frame(gt, rec, frame_fn):
    """Apply ``frame_fn(gt_frame, rec_frame) -> float`` to every frame; mean per clip."""
    n, t = gt.shape[:2]
    out = np.empty((n, t), dtype=np.float64)
    for i in range(n):
        for j in range(t):
            out[i, j] = frame_fn(gt[i, j], rec[i, j])
    return out.mean(axis=1)


def ssim_rgb_uniform(gt, rec, size=None):
    """SSIM on RGB frames with a 7x7 uniform window (MinD-Video / Mind-Animator / GLFA).

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)
        Ground-truth and reconstructed clips (lossless).
    size : int or None
        Resize every frame to ``size`` x ``size`` first (published protocol: 256);
        None compares at the native resolution.

    Returns
    -------
    ndarray, float64, shape (N,)
        Mean SSIM over the frames of each clip.
    """
    gt, rec = _check_videos(gt, rec)
    size = _check_size(size)
    _check_ssim_frame(gt.shape[2:4], size)

    return _per_frame(gt, rec, lambda a, b: ssim_uniform_frame(_resize_frame(a, size), _resize_frame(b, size)))


#: SSIM constants of scikit-image (K1, K2) and the uniform window of the RGB variant.
_K1, _K2, _WIN = 0.01, 0.03, 7


def ssim_uniform_frame(a, b, data_range=255.0):
    """SSIM of two (H, W) or (H, W, C) frames with a 7x7 uniform window: what scikit-image's
    ``structural_similarity(a, b, channel_axis=-1, win_size=7, data_range=255)`` returns.

    Same arithmetic in float64 (means by a 7x7 box filter with reflected borders, sample covariance
    49/48, the 3 border rows and columns cropped, mean over pixels and channels); the box filter is
    OpenCV's, 1.9x faster than scikit-image's per-channel ``scipy.ndimage.uniform_filter`` on a
    512 x 512 RGB frame (0.055 s vs 0.103 s on 2 cores), equal to 1e-15
    (``tests/unit/test_metrics.py``).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)

    def box(x):
        return cv2.blur(x, (_WIN, _WIN), borderType=cv2.BORDER_REFLECT)

    cov_norm = _WIN * _WIN / (_WIN * _WIN - 1.0)
    ux, uy = box(a), box(b)
    vx = cov_norm * (box(a * a) - ux * ux)
    vy = cov_norm * (box(b * b) - uy * uy)
    vxy = cov_norm * (box(a * b) - ux * uy)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (_WIN - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def ssim_gray_gaussian(gt, rec, size=None):
    """SSIM on grayscale frames with a Gaussian window: the 2-D SSIM MindEye computes.

    Frames are converted with ``skimage.color.rgb2gray`` (values in [0, 1]). Brain-Diffuser (scikit-image
    0.17, ``multichannel=True``) and NEURONS (``channel_axis=-1``) pass the 2-D grey image with a channel
    flag, which makes scikit-image treat its columns as channels: a column-wise 1-D SSIM, 0.02-0.15 higher.
    That is not this function (issue 16: a protocol preset reproduces it, labelled).

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)
        Ground-truth and reconstructed clips (lossless).
    size : int or None
        Resize every RGB frame to ``size`` x ``size`` before the grayscale
        conversion; None compares at the native resolution.

    Returns
    -------
    ndarray, float64, shape (N,)
        Mean SSIM over the frames of each clip.
    """
    gt, rec = _check_videos(gt, rec)
    size = _check_size(size)
    _check_ssim_frame(gt.shape[2:4], size)

    def frame_fn(a, b):
        return structural_similarity(
            rgb2gray(_resize_frame(a, size)), rgb2gray(_resize_frame(b, size)),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        )

    return _per_frame(gt, rec, frame_fn)


def psnr(gt, rec):
    """Peak signal-to-noise ratio per RGB frame, mean over frames.

    ``PSNR = 20 * log10(255 / sqrt(MSE))`` with the MSE over all H*W*3 values of
    a frame. Identical frames (MSE = 0) score :data:`PSNR_CAP_DB` (100 dB) and
    every frame value is clipped to at most that cap, so clip means stay finite.

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)
        Ground-truth and reconstructed clips (lossless).

    Returns
    -------
    ndarray, float64, shape (N,)
        Mean PSNR in dB over the frames of each clip.
    """
    gt, rec = _check_videos(gt, rec)
    return np.array([_psnr_clip(gt[i], rec[i]) for i in range(gt.shape[0])], dtype=np.float64)


def _psnr_clip(gt, rec):
    """Mean capped PSNR over the frames of one (T, H, W, 3) clip."""
    diff = gt.astype(np.float64) - rec.astype(np.float64)
    mse = np.mean(diff * diff, axis=(1, 2, 3))  # (T,)
    with np.errstate(divide="ignore"):
        frame_psnr = 20.0 * np.log10(255.0 / np.sqrt(mse))
    return float(np.minimum(frame_psnr, PSNR_CAP_DB).mean())


def pixcorr(gt, rec):
    """Pearson correlation of the flattened RGB frames, mean over frames (Brain-Diffuser).

    A frame pair where either frame has zero variance (e.g. a black frame) has
    no defined correlation: it scores 1.0 when the two frames are identical and
    0.0 otherwise.

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)
        Ground-truth and reconstructed clips (lossless).

    Returns
    -------
    ndarray, float64, shape (N,)
        Mean Pearson r over the frames of each clip.
    """
    gt, rec = _check_videos(gt, rec)
    return np.array([_pixcorr_clip(gt[i], rec[i]) for i in range(gt.shape[0])], dtype=np.float64)


def _pixcorr_clip(gt, rec):
    """Mean Pearson r over the frames of one (T, H, W, 3) clip (clip by clip bounds memory)."""
    t = gt.shape[0]
    a = gt.reshape(t, -1).astype(np.float64)
    b = rec.reshape(t, -1).astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    num = np.einsum("tk,tk->t", a, b)
    den = np.sqrt(np.einsum("tk,tk->t", a, a) * np.einsum("tk,tk->t", b, b))
    degenerate = den == 0
    r = np.divide(num, den, out=np.zeros_like(num), where=~degenerate)
    if degenerate.any():
        identical = np.all(gt == rec, axis=(1, 2, 3))
        r[degenerate] = np.where(identical[degenerate], 1.0, 0.0)
    return float(r.mean())


#: Metric name -> function, for callers that compute metrics by name.
METRICS = {
    "ssim_rgb_uniform": ssim_rgb_uniform,
    "ssim_gray_gaussian": ssim_gray_gaussian,
    "psnr": psnr,
    "pixcorr": pixcorr,
}
