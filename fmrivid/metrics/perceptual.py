"""Perceptual and colour metrics: LPIPS (AlexNet / VGG backbones) and hue cosine.

Both take lossless uint8 clips (N, T, H, W, 3) and return one value per clip
(mean over frames), like :mod:`fmrivid.metrics.pixel`.

LPIPS needs the ImageNet weights of its torchvision backbone in the torch hub
cache (``$TORCH_HOME/hub/checkpoints``); fmrivid never downloads them.
:func:`lpips_status` says whether they are there and, when not, why the metric
is missing (the table then carries that reason instead of a number). The
linear calibration layers of LPIPS v0.1 ship inside the ``lpips`` package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.color import rgb2hsv

from fmrivid.errors import InputError
from fmrivid.metrics.pixel import _check_videos

#: LPIPS backbone -> (lpips ``net`` name, torchvision weight file in the hub cache).
LPIPS_BACKBONES = {
    "lpips_alex": ("alex", "alexnet-owt-7be5be79.pth"),
    "lpips_vgg": ("vgg", "vgg16-397923af.pth"),
}

VARIANTS = {
    "lpips_alex": "LPIPS v0.1 (lpips==0.1.4), AlexNet backbone (ImageNet weights), inputs scaled to [-1,1]; "
                  "mean over frames; lower is better",
    "lpips_vgg": "LPIPS v0.1 (lpips==0.1.4), VGG16 backbone (ImageNet weights), inputs scaled to [-1,1]; "
                 "mean over frames; lower is better",
    "hue_cos": "cosine similarity of the HSV hue channel (skimage rgb2hsv, hue in [0,1]) of GT and "
               "reconstruction, flattened per frame (Mind-Animator's 'Hue-PCC'; not Pearson); "
               "1 for identical all-zero hue frames, 0 for any other zero-norm pair; mean over frames",
}


def lpips_weight_path(name):
    """Where torchvision looks for the backbone weights of LPIPS variant ``name``.

    Parameters
    ----------
    name : {"lpips_alex", "lpips_vgg"}

    Returns
    -------
    pathlib.Path
        ``torch.hub.get_dir()/checkpoints/<file>``.
    """
    import torch

    if name not in LPIPS_BACKBONES:
        raise ValueError(f"lpips: unknown variant {name!r}; expected one of {sorted(LPIPS_BACKBONES)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[name][1]


def lpips_status(name):
    """Whether LPIPS variant ``name`` can run here.

    Returns
    -------
    str or None
        None when the backbone weights are cached; otherwise the reason the
        metric is missing (names the file and how to get it).
    """
    try:
        import lpips  # noqa: F401
    except ImportError:
        return "not computed: the lpips package is not installed (pip install lpips==0.1.4)"
    path = lpips_weight_path(name)
    if not path.is_file():
        net = LPIPS_BACKBONES[name][0]
        return (f"not computed: {net} ImageNet backbone weights not in the torch cache ({path}); "
                f"fmrivid never downloads them - copy the torchvision file there (or set TORCH_HOME)")
    return None


class LPIPS:
    """An LPIPS scorer for uint8 clips.

    Parameters
    ----------
    name : {"lpips_alex", "lpips_vgg"}
        Variant (backbone).
    random_backbone : bool
        Use a randomly initialised backbone (``pnet_rand=True``): for tests only,
        where no ImageNet weights exist; the numbers are then not LPIPS.
    device : str
        Torch device.
    batch_size : int
        Frames per forward pass.
    """

    def __init__(self, name, random_backbone=False, device="cpu", batch_size=32):
        import lpips
        import torch

        if not random_backbone:
            reason = lpips_status(name)
            if reason is not None:
                raise InputError(lpips_weight_path(name), "cached backbone weights for " + name, reason)
        net = LPIPS_BACKBONES[name][0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=bool(random_backbone),
                                     verbose=False).to(device).eval()
        self.device = device
        self.batch_size = int(batch_size)
        self.name = name
        self.random_backbone = bool(random_backbone)

    def frames(self, a, b):
        """LPIPS of paired uint8 frames (M, H, W, 3) -> (M,) float64."""
        import torch

        out = np.empty(a.shape[0], dtype=np.float64)
        with torch.no_grad():
            for start in range(0, a.shape[0], self.batch_size):
                sl = slice(start, start + self.batch_size)
                x = torch.from_numpy(np.ascontiguousarray(a[sl])).permute(0, 3, 1, 2).float()
                y = torch.from_numpy(np.ascontiguousarray(b[sl])).permute(0, 3, 1, 2).float()
                x = (x / 127.5 - 1.0).to(self.device)
                y = (y / 127.5 - 1.0).to(self.device)
                out[sl] = self.model(x, y).reshape(-1).double().cpu().numpy()
        return out

    def __call__(self, gt, rec):
        """Mean LPIPS over the frames of each clip.

        Parameters
        ----------
        gt, rec : ndarray, uint8, shape (N, T, H, W, 3)

        Returns
        -------
        ndarray, float64, shape (N,)
        """
        gt, rec = _check_videos(gt, rec)
        n, t = gt.shape[:2]
        vals = self.frames(gt.reshape(n * t, *gt.shape[2:]), rec.reshape(n * t, *rec.shape[2:]))
        return vals.reshape(n, t).mean(axis=1)


def hue(frames):
    """Hue channel in [0, 1] of uint8 RGB frames (..., H, W, 3) via ``skimage.color.rgb2hsv``."""
    frames = np.asarray(frames)
    flat = frames.reshape(-1, *frames.shape[-3:])
    return np.stack([rgb2hsv(f)[..., 0] for f in flat]).reshape(frames.shape[:-1])


def hue_cos(gt, rec):
    """Cosine similarity of the hue channels of GT and reconstruction, mean over frames.

    Parameters
    ----------
    gt, rec : ndarray, uint8, shape (N, T, H, W, 3)

    Returns
    -------
    ndarray, float64, shape (N,)
        In [0, 1] (hue is non-negative); 1 for identical frames.
    """
    gt, rec = _check_videos(gt, rec)
    n, t = gt.shape[:2]
    a = hue(gt).reshape(n, t, -1)
    b = hue(rec).reshape(n, t, -1)
    num = np.einsum("ntk,ntk->nt", a, b)
    den = np.sqrt(np.einsum("ntk,ntk->nt", a, a) * np.einsum("ntk,ntk->nt", b, b))
    zero = den == 0
    cos = np.divide(num, den, out=np.zeros_like(num), where=~zero)
    if zero.any():
        identical = np.all(a == b, axis=2)
        cos[zero] = np.where(identical[zero], 1.0, 0.0)
    return cos.mean(axis=1)
