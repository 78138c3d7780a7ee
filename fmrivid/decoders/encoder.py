"""The encoder-decoder model (seed 004, arXiv 2507.12009): stimulus chunks -> voxels -> middle frame.

One sample is one TR: a chunk of ``chunk_frames`` consecutive frames (32 in the paper) of what was on
screen. With ``frame_source: video`` the chunks are ``features/encoder_chunks.h5``: ``chunk_frames`` consecutive
frames at the stimulus video's own frame rate from each clip's start (32 frames of a 30-fps movie = 1.07 s, the
paper's input; written by rule encoder_chunks, :func:`fmrivid.features.frames.extract_chunks`). With
``frame_source: frames`` (default) they are the ``features.n_frames`` frames of ``features/frames.h5`` spread
over the clip, resampled to ``chunk_frames`` by repeating frames (:func:`prepare_chunks`).

The **encoder** runs 3-D convolutions over (time, height, width), collapses the remaining time steps with a
learned temporal convolution, runs 2-D convolutions, pools and reads out one value per voxel (or per parcel).
The **decoder** maps the predicted voxels back to the chunk's middle frame (frame ``chunk_frames // 2``; fully
connected layer, then upsampling + convolutions). Trained end to end with::

    loss = voxel_weight * MSE(predicted voxels, measured voxels)    (voxels z-scored on training rows)
         + frame_weight * L_frame

    L_frame = MSE(reconstructed middle frame, middle frame)          (pixels in [0, 1])
            + perceptual_weight * L_vgg
            + ssim_weight * (1 - SSIM)

(voxel_weight / frame_weight 0.5 / 0.5 in the paper, where the decoder acts as a regulariser of the encoder:
median voxel r 0.202 with it, 0.139 without; ``frame_weight: 0`` gives the encoder-only ablation). The paper's
reconstruction loss has perceptual (VGG16) and SSIM terms without published weights; both default to 0 here.

* ``L_vgg`` (:class:`Perceptual`): mean over the VGG16 layers relu2_2 and relu3_3 (``features[8]`` and
  ``features[15]``, the usual perceptual-loss taps) of the MSE between the feature maps of the reconstructed and
  the true middle frame, both ImageNet-normalised. ``perceptual_model: vgg16`` reads torchvision's IMAGENET1K_V1
  weights from the local torch hub cache only (``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``; an error
  names that file when it is absent); ``tiny`` is the torchvision ``VGG`` class with a random 4-8-16-channel
  features stack (plumbing only, not a perceptual loss). The network is frozen (no gradient on its weights),
  lives outside the model and is not saved in the model file; gradients flow through it to the decoder.
* ``SSIM`` (:func:`ssim_uniform`): the SSIM of the ``decoded_frame_ssim`` metric
  (:func:`fmrivid.metrics.pixel.ssim_rgb_uniform`: scikit-image, RGB, 7x7 uniform window, sample covariance,
  K1 = 0.01, K2 = 0.03, windows fully inside the image), written in torch so that it is differentiable.

Each term is logged in the training history (``voxel_mse``, ``frame_mse``, ``frame_ssim``, ``frame_vgg`` when
used, ``frame_loss``), hence in the losses TSV.

**Parcels** (``parcels``: a NIfTI label image on the fMRI grid, Schaefer-1000 in the paper): the targets become
per-parcel means of the selected voxels (:func:`parcel_targets`); the voxel rows then hold parcels.

Scalers (target means/SDs, pixel means/SDs per colour channel) come from the training rows only and
are stored in the model file as buffers. Chunks of another length are resampled uniformly in time to
``chunk_frames`` (nearest frame; taken as they are when already ``chunk_frames`` long) and resized (area
averaging) to ``frame_size``.

The result to report is the voxel-wise Pearson r on test samples (:func:`evaluate`, built on
:func:`fmrivid.metrics.brain.voxel_r`), beside the same model trained on shuffled stimulus-response
pairs (``fit_predict(..., control=True)``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fmrivid.decoders import registry, train
from fmrivid.errors import ConfigError, InputError

__all__ = ["DEFAULTS", "EncoderDecoder", "Perceptual", "config", "prepare_chunks", "ssim_uniform", "frame_loss_terms",
           "perceptual_net", "vgg16_weights_path", "parcel_labels", "parcel_targets", "fit_predict", "load_model",
           "predict", "evaluate", "voxel_r"]

_FORMAT = "fmrivid.decoders.encoder.EncoderDecoder"

DEFAULTS = registry.defaults("encoder")  # settings and their descriptions: fmrivid/decoders/registry.py


def config(cfg=None):
    """``DEFAULTS`` updated with ``cfg`` (the ``decoders.encoder`` section); checks the values."""
    out = dict(DEFAULTS)
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"decoders.encoder: unknown keys {unknown}; expected keys among {sorted(DEFAULTS)}")
    out.update(cfg)
    for key in ("chunk_frames", "frame_size", "pool_size", "decoder_channels", "predict_batch"):
        if not isinstance(out[key], (int, np.integer)) or int(out[key]) < 1:
            raise ConfigError(f"decoders.encoder.{key}: expected a positive integer; found {out[key]!r}")
    if not isinstance(out["decoder_upsamples"], (int, np.integer)) or out["decoder_upsamples"] < 0:
        raise ConfigError(f"decoders.encoder.decoder_upsamples: expected an integer >= 0; "
                          f"found {out['decoder_upsamples']!r}")
    if out["frame_size"] % (2 ** out["decoder_upsamples"]):
        raise ConfigError(f"decoders.encoder.frame_size: expected a multiple of 2**decoder_upsamples = "
                          f"{2 ** out['decoder_upsamples']}; found {out['frame_size']}")
    for key in ("channels3d", "channels2d"):
        vals = out[key]
        if not isinstance(vals, (list, tuple)) or any(not isinstance(c, (int, np.integer)) or c < 1 for c in vals):
            raise ConfigError(f"decoders.encoder.{key}: expected a list of positive integers; found {vals!r}")
    if not out["channels3d"]:
        raise ConfigError("decoders.encoder.channels3d: expected at least one 3-D conv block; found []")
    for key in ("voxel_weight", "frame_weight"):
        if float(out[key]) < 0:
            raise ConfigError(f"decoders.encoder.{key}: expected >= 0; found {out[key]!r}")
    if float(out["voxel_weight"]) == 0:
        raise ConfigError("decoders.encoder.voxel_weight: expected > 0 (the voxels are the encoder's target); "
                          "found 0")
    for key in ("perceptual_weight", "ssim_weight"):
        if isinstance(out[key], bool) or not isinstance(out[key], (int, float)) or not float(out[key]) >= 0:
            raise ConfigError(f"decoders.encoder.{key}: expected a number >= 0; found {out[key]!r}")
    for key, choices in (("perceptual_model", ("vgg16", "tiny")), ("frame_source", ("frames", "video"))):
        if out[key] not in choices:
            raise ConfigError(f"decoders.encoder.{key}: expected one of {list(choices)}; found {out[key]!r}")
    if out["parcels"] is not None and (not isinstance(out["parcels"], str) or not out["parcels"].strip()):
        raise ConfigError(f"decoders.encoder.parcels: expected null or the path of a NIfTI label image; "
                          f"found {out['parcels']!r}")
    if not 0 <= float(out["dropout"]) < 1:
        raise ConfigError(f"decoders.encoder.dropout: expected a value in [0, 1); found {out['dropout']!r}")
    train.train_config(out)
    return out


def _conv_out(n, stride):
    return (n - 1) // stride + 1  # kernel 3, padding 1


class EncoderDecoder(torch.nn.Module):
    """Encoder (3-D then 2-D convolutions -> voxels) with a middle-frame decoder head.

    Parameters
    ----------
    n_voxels : int
    cfg : dict
        Output of :func:`config`.

    Notes
    -----
    ``forward(x)`` takes uint8 chunks (B, T, S, S, 3) and returns ``(voxels_z, frame)``: predicted
    z-scored voxels (B, V) and the reconstructed middle frame (B, 3, S, S) in [0, 1]. Buffers hold
    the training scalers: ``pixel_mean``/``pixel_std`` (3,), ``voxel_mean``/``voxel_std`` (V,).
    """

    def __init__(self, n_voxels, cfg):
        super().__init__()
        nn = torch.nn
        t, s = int(cfg["chunk_frames"]), int(cfg["frame_size"])
        layers, c_in = [], 3
        for c in cfg["channels3d"]:
            st = 2 if t > 1 else 1
            layers += [nn.Conv3d(c_in, c, 3, stride=(st, 2, 2), padding=1), nn.ReLU()]
            t, s, c_in = _conv_out(t, st), _conv_out(s, 2), c
        self.conv3d = nn.Sequential(*layers)
        self.temporal = nn.Conv3d(c_in, c_in, (t, 1, 1))  # collapses the remaining time steps
        layers = []
        for c in cfg["channels2d"]:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c
        self.conv2d = nn.Sequential(*layers)
        pool = int(cfg["pool_size"])
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.readout = nn.Sequential(nn.Flatten(), nn.Dropout(float(cfg["dropout"])),
                                     nn.Linear(c_in * pool * pool, n_voxels))
        ups, ch = int(cfg["decoder_upsamples"]), int(cfg["decoder_channels"])
        self.base = int(cfg["frame_size"]) // 2 ** ups
        self.dec_fc = nn.Linear(n_voxels, ch * self.base * self.base)
        layers = []
        for _ in range(ups):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(ch, 3, 3, padding=1), nn.Sigmoid()]
        self.dec = nn.Sequential(*layers)
        self.dec_channels = ch
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))
        self.register_buffer("voxel_mean", torch.zeros(n_voxels))
        self.register_buffer("voxel_std", torch.ones(n_voxels))

    def encode(self, x):
        """uint8 (B, T, S, S, 3) -> z-scored voxel predictions (B, V)."""
        x = x.float().div(255.0)
        x = (x - self.pixel_mean) / self.pixel_std
        h = self.conv3d(x.permute(0, 4, 1, 2, 3))
        h = torch.relu(self.temporal(h)).squeeze(2)
        return self.readout(self.pool(self.conv2d(h)))

    def decode(self, v):
        """Voxels (B, V) -> middle frame (B, 3, S, S) in [0, 1]."""
        h = torch.relu(self.dec_fc(v)).reshape(v.shape[0], self.dec_channels, self.base, self.base)
        return self.dec(h)

    def forward(self, x):
        v = self.encode(x)
        return v, self.decode(v)


# --------------------------------------------------------------------------- #
# Frame loss: pixel MSE, VGG16 perceptual term, SSIM
# --------------------------------------------------------------------------- #
_SSIM_WIN = 7  # as fmrivid.metrics.pixel.ssim_rgb_uniform
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_VGG_TAPS = {8: "relu2_2", 15: "relu3_3"}  # indices in torchvision's vgg16().features
_TINY_VGG = [4, 4, "M", 8, 8, "M", 16, 16, 16]  # VGG16's first 16 layers' layout (same taps), 4-8-16 channels


def ssim_uniform(x, y, data_range=1.0):
    """Differentiable SSIM per image: the definition of :func:`fmrivid.metrics.pixel.ssim_rgb_uniform`.

    scikit-image's ``structural_similarity(..., channel_axis=-1, win_size=7, gaussian_weights=False)``: means,
    variances and covariance over 7x7 uniform windows, sample covariance (x 49/48), ``C1 = (0.01 L)^2``,
    ``C2 = (0.03 L)^2``, the SSIM map averaged over the windows that lie fully inside the image (scikit-image
    crops a 3-pixel border) and over the colour channels.

    Parameters
    ----------
    x, y : tensor, shape (B, C, H, W)
        Images with values in ``[0, data_range]``; H, W >= 7.
    data_range : float
        ``L`` (1 for frames in [0, 1]; 255 for uint8 values).

    Returns
    -------
    tensor, shape (B,)
    """
    if x.shape != y.shape or x.ndim != 4 or min(x.shape[-2:]) < _SSIM_WIN:
        raise ValueError(f"ssim_uniform: expected two (B, C, H, W) tensors of one shape, H, W >= {_SSIM_WIN}; "
                         f"found {tuple(x.shape)} and {tuple(y.shape)}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    n = _SSIM_WIN * _SSIM_WIN
    cov_norm = n / (n - 1)

    def pool(t):
        return F.avg_pool2d(t, _SSIM_WIN, stride=1)

    ux, uy = pool(x), pool(y)
    vx = cov_norm * (pool(x * x) - ux * ux)
    vy = cov_norm * (pool(y * y) - uy * uy)
    vxy = cov_norm * (pool(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


class Perceptual(torch.nn.Module):
    """Frozen VGG perceptual distance: mean over relu2_2 and relu3_3 of the feature-map MSE.

    Parameters
    ----------
    vgg : torchvision.models.VGG
        Only ``vgg.features[:16]`` is kept (VGG16's layout: taps ``features[8]`` = relu2_2 and
        ``features[15]`` = relu3_3).
    label : str
        What the network is, for the log.

    Notes
    -----
    ``forward(x, y)`` takes frames (B, 3, H, W) in [0, 1], normalises them with the ImageNet mean/SD and returns
    the scalar loss. Its weights never require grad; gradients flow to ``x``.
    """

    def __init__(self, vgg, label=""):
        super().__init__()
        self.features = torch.nn.Sequential(*list(vgg.features.children())[:max(_VGG_TAPS) + 1])
        self.label = label
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).reshape(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode=True):  # always in eval mode (frozen)
        return super().train(False)

    def forward(self, x, y):
        h = (torch.cat([x, y]) - self.mean) / self.std
        n, terms = x.shape[0], []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _VGG_TAPS:
                terms.append(F.mse_loss(h[:n], h[n:]))
        return torch.stack(terms).mean()


def vgg16_weights_path():
    """Where torchvision keeps the VGG16 IMAGENET1K_V1 weights: the local torch hub cache's checkpoints folder."""
    from torchvision.models import VGG16_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG16_Weights.IMAGENET1K_V1.url).name


def perceptual_net(kind, device="cpu", log=print):
    """The frozen :class:`Perceptual` network of ``perceptual_model`` ``kind`` (``vgg16`` or ``tiny``), on ``device``.

    ``vgg16`` loads the cached IMAGENET1K_V1 weights (:func:`vgg16_weights_path`) and never downloads; an absent
    file raises :class:`~fmrivid.errors.InputError` naming it. ``tiny`` builds torchvision's ``VGG`` class around
    a random 4-8-16-channel features stack (seeded, the global RNG untouched): for plumbing tests only.
    """
    from torchvision.models import vgg16
    from torchvision.models.vgg import VGG, make_layers

    if kind == "vgg16":
        path = vgg16_weights_path()
        if not path.is_file():
            raise InputError(path, "torchvision's VGG16 IMAGENET1K_V1 weights for decode.encoder.perceptual_weight "
                                   "(read from the local torch hub cache; nothing is downloaded here)",
                             "no such file: on a machine with internet run python -c \"import torchvision; "
                             "torchvision.models.vgg16(weights='IMAGENET1K_V1')\" and copy the file to this path "
                             "(or set TORCH_HOME), or set decode.encoder.perceptual_weight: 0")
        state = torch.load(path, map_location="cpu", weights_only=True)
        with torch.device("meta"):
            net = vgg16(weights=None)
        try:
            net.load_state_dict(state, assign=True)
        except RuntimeError as exc:
            raise InputError(path, "the state dict of torchvision's vgg16", f"{str(exc).splitlines()[0]}") from None
        label = f"VGG16 IMAGENET1K_V1 ({path})"
    elif kind == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            features = make_layers(_TINY_VGG)
            with torch.device("meta"):  # the 512*7*7 -> 4096 classifier is never used: not allocated
                net = VGG(features, num_classes=2)
        net.avgpool, net.classifier = torch.nn.Identity(), torch.nn.Identity()
        label = "tiny VGG (torchvision VGG class, 4-8-16 channels): RANDOM weights, plumbing only"
    else:
        raise ConfigError(f"decoders.encoder.perceptual_model: expected one of ['vgg16', 'tiny']; found {kind!r}")
    out = Perceptual(net, label).to(device)
    log(f"encoder: perceptual term on {', '.join(_VGG_TAPS.values())} of {label}; frozen, not saved")
    return out


def frame_loss_terms(frame, target, perceptual_weight=0.0, ssim_weight=0.0, perceptual=None):
    """Terms of the middle-frame loss ``L_frame = mse + perceptual_weight * L_vgg + ssim_weight * (1 - SSIM)``.

    Parameters
    ----------
    frame, target : tensor, shape (B, 3, S, S)
        Reconstructed and true middle frames in [0, 1].
    perceptual_weight, ssim_weight : float
    perceptual : Perceptual, optional
        Needed when ``perceptual_weight > 0``.

    Returns
    -------
    dict of scalar tensors
        ``frame_mse``, ``frame_ssim`` (mean SSIM of the batch; not differentiated when ``ssim_weight`` is 0),
        ``frame_vgg`` (only with ``perceptual_weight > 0``) and their weighted sum ``frame_loss``.
    """
    mse = F.mse_loss(frame, target)
    total = mse
    if ssim_weight > 0:
        ssim = ssim_uniform(frame, target).mean()
        total = total + float(ssim_weight) * (1 - ssim)
    else:
        with torch.no_grad():
            ssim = ssim_uniform(frame, target).mean()
    terms = {"frame_mse": mse, "frame_ssim": ssim}
    if perceptual_weight > 0:
        if perceptual is None:
            raise ValueError("frame_loss_terms: perceptual_weight > 0 needs the perceptual network")
        terms["frame_vgg"] = perceptual(frame, target)
        total = total + float(perceptual_weight) * terms["frame_vgg"]
    terms["frame_loss"] = total
    return terms


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def _check_frames(frames, name):
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[-1] != 3 or min(frames.shape[:4]) < 1:
        raise InputError(name, "frames of shape (samples, T, H, W, 3)", f"shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise InputError(name, "uint8 frames (lossless, as in features/frames.h5)", f"dtype {frames.dtype}")
    return frames


def prepare_chunks(frames, chunk_frames, frame_size, batch=64):
    """Resample clips to ``chunk_frames`` frames (uniform in time) of ``frame_size``^2 pixels, uint8.

    Parameters
    ----------
    frames : ndarray, uint8, shape (N, T, H, W, 3)
    chunk_frames, frame_size : int

    Returns
    -------
    ndarray, uint8, shape (N, chunk_frames, frame_size, frame_size, 3)
        Clips of ``T == chunk_frames`` frames (``features/encoder_chunks.h5``) keep their frames as they are;
        otherwise frame ``k`` of a chunk is the input frame ``round(k * (T - 1) / (chunk_frames - 1))`` (the
        middle frame for ``chunk_frames == 1``). Sizes change by area averaging
        (``torch.nn.functional.interpolate(mode="area")``), rounded.
    """
    frames = _check_frames(frames, "frames")
    n, t, h, w, _ = frames.shape
    if t == chunk_frames:
        idx = np.arange(t)  # true chunks: no resampling in time
    elif chunk_frames > 1:
        idx = np.rint(np.linspace(0, t - 1, chunk_frames)).astype(int)
    else:
        idx = np.array([t // 2])
    out = np.empty((n, chunk_frames, frame_size, frame_size, 3), np.uint8)
    for i in range(0, n, batch):
        x = frames[i:i + batch][:, idx]
        if (h, w) != (frame_size, frame_size):
            b = x.shape[0]
            xt = torch.from_numpy(np.ascontiguousarray(x)).reshape(b * chunk_frames, h, w, 3).permute(0, 3, 1, 2)
            xt = F.interpolate(xt.float(), size=(frame_size, frame_size), mode="area")
            x = xt.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).reshape(
                b, chunk_frames, frame_size, frame_size, 3).numpy()
        out[i:i + batch] = x
    return out


def _pixel_stats(chunks):
    total = np.zeros(3)
    sq = np.zeros(3)
    for i in range(0, len(chunks), 64):
        x = chunks[i:i + 64].reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(0)
        sq += (x ** 2).sum(0)
    count = chunks[..., 0].size
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean ** 2, 0))
    return mean, np.where(std > 1e-6, std, 1.0)


# --------------------------------------------------------------------------- #
# Parcels
# --------------------------------------------------------------------------- #
def parcel_labels(atlas_path, ijk, shape, affine):
    """Label of each selected voxel in a NIfTI label image on the fMRI grid.

    Parameters
    ----------
    atlas_path : path
        3-D integer label image (a 4-D image with one volume is accepted), 0 = background.
    ijk : ndarray of int, shape (V, 3)
        Voxel indices of the selected voxels (``voxels/ijk`` of ``fmri/sub-XX.h5``).
    shape, affine :
        The fMRI grid (``shape`` and ``affine`` attributes of ``fmri/sub-XX.h5``).

    Returns
    -------
    ndarray of int64, shape (V,)

    Raises
    ------
    InputError
        Naming the atlas: unreadable, not integer labels, or not on the data's grid (its shape and affine and the
        data's are given; nothing is resampled: ``nilearn.image.resample_to_img(atlas, bold,
        interpolation="nearest")`` puts an atlas on the BOLD grid).
    """
    import nibabel as nib

    atlas_path = Path(atlas_path)
    if not atlas_path.is_file():
        raise InputError(atlas_path, "a NIfTI label image (decode.encoder.parcels)", "no such file")
    try:
        img = nib.load(str(atlas_path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputError(atlas_path, "a readable NIfTI label image", f"{type(exc).__name__}: {exc}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    grid = tuple(int(v) for v in shape)[:3]
    affine = np.asarray(affine, np.float64)
    if data.shape != grid or not np.allclose(img.affine, affine, atol=1e-3):
        raise InputError(atlas_path, f"a label image on the fMRI grid: shape {grid}, affine "
                                     f"{np.round(affine, 3).tolist()}",
                         f"shape {tuple(data.shape)}, affine {np.round(img.affine, 3).tolist()} (resample it onto "
                         "the BOLD grid with nilearn.image.resample_to_img(atlas, bold, interpolation='nearest'))")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise InputError(atlas_path, "integer labels (0 = background)", f"non-integer values ({data.dtype})")
    ijk = np.asarray(ijk, np.int64)
    if ijk.ndim != 2 or ijk.shape[1] != 3 or (ijk < 0).any() or (ijk >= np.array(grid)).any():
        raise InputError("voxels/ijk", f"voxel indices inside the grid {grid}", f"shape {ijk.shape} or outside")
    return np.asarray(data[ijk[:, 0], ijk[:, 1], ijk[:, 2]]).round().astype(np.int64)


def _parcel_means(X, labels, parcels):
    """(N, n * V) rows of n volumes (time-major) -> (N, n * P) means over each parcel's voxels."""
    X = np.asarray(X, np.float64)
    v = len(labels)
    n = X.shape[1] // v
    M = (labels[:, None] == parcels[None, :]).astype(np.float64)
    M /= M.sum(0, keepdims=True)
    return (X.reshape(len(X), n, v) @ M).reshape(len(X), n * len(parcels)).astype(np.float32)


def parcel_targets(sub, atlas_path, log=print, name="fmri"):
    """Per-parcel means of the selected voxels: the encoder's targets with ``decode.encoder.parcels``.

    Parameters
    ----------
    sub : dict
        :func:`fmrivid.preprocess.pipeline.read_subject` of ``fmri/sub-XX.h5``: ``train_X``, ``test_X`` (rows of
        V voxels, or of n volumes x V voxels, time-major), ``ijk``, ``shape``, ``affine``, ``space``.
    atlas_path : path
        NIfTI label image on the data's grid (:func:`parcel_labels`); label 0 = background.
    name : str
        The fMRI file, named in errors.

    Returns
    -------
    dict
        ``train_X`` (N, n * P), ``test_X`` (M, n * P) float32: column ``p`` (of each volume) is the mean of the
        selected voxels of parcel ``parcels[p]``; ``parcels`` (P,) the labels kept (ascending), ``n_voxels`` (P,)
        their voxel counts. Voxels labelled 0 and atlas parcels without any selected voxel are dropped (logged).

    Raises
    ------
    ConfigError
        The data is CIFTI (no voxel grid to index).
    InputError
        A bad atlas, or no selected voxel in any parcel.
    """
    if str(sub.get("space", "volume")) == "cifti":
        raise ConfigError(f"decode.encoder.parcels: expected volumetric fMRI (a NIfTI label image indexes voxels); "
                          f"found CIFTI grayordinates in {name} (space 'cifti'): set parcels: null for CIFTI data")
    labels = parcel_labels(atlas_path, sub["ijk"], sub["shape"], sub["affine"])
    v = len(labels)
    for split in ("train", "test"):
        X = np.asarray(sub[f"{split}_X"])
        if X.ndim != 2 or v == 0 or X.shape[1] % v:
            raise InputError(name, f"{split}/X rows of a multiple of the {v} selected voxels", f"shape {X.shape}")
    import nibabel as nib

    in_atlas = np.unique(np.asanyarray(nib.load(str(atlas_path)).dataobj).round().astype(np.int64))
    in_atlas = in_atlas[in_atlas != 0]
    parcels = np.unique(labels[labels != 0])
    if not len(parcels):
        raise InputError(atlas_path, f"parcels (labels > 0) covering some of the {v} selected voxels of {name}",
                         "every selected voxel labelled 0 (background)")
    counts = np.array([(labels == p).sum() for p in parcels])
    log(f"encoder: {len(parcels)} parcels of {Path(atlas_path).name} hold the {v - int((labels == 0).sum())} "
        f"selected voxels ({int((labels == 0).sum())} voxels on background dropped; "
        f"{len(np.setdiff1d(in_atlas, parcels))} of {len(in_atlas)} atlas parcels without a selected voxel dropped)")
    return {"train_X": _parcel_means(sub["train_X"], labels, parcels),
            "test_X": _parcel_means(sub["test_X"], labels, parcels), "parcels": parcels, "n_voxels": counts}


# --------------------------------------------------------------------------- #
# Fit / predict
# --------------------------------------------------------------------------- #
def fit_predict(data, cfg=None, out_model=None, ckpt_dir=None, seed=0, device="cpu", log=print, control=False):
    """Train the encoder-decoder on the training rows and predict the test voxels.

    Parameters
    ----------
    data : dict
        ``train_frames`` (N, T, H, W, 3) uint8, ``train_Y`` (N, V) measured responses (same rows),
        ``test_frames`` (M, T', H, W, 3) uint8. Nothing about the test responses is needed.
    cfg : dict
        ``decoders.encoder`` section (keys of :data:`DEFAULTS`).
    out_model : path, optional
        safetensors file of the trained model (config JSON, voxel count, control flag in metadata).
    ckpt_dir : path, optional
        Checkpoints for resume after a kill.
    seed : int
    device : str
        ``"cpu"`` or ``"cuda[:k]"`` (CPU with a message when CUDA is absent); same code on both.
    log : callable
    control : bool
        Shuffled-stimulus control: the training responses are paired with a seeded permutation of
        the training stimuli, everything else unchanged.

    Returns
    -------
    dict
        ``pred`` (M, V) float32 predicted test responses (in the units of ``train_Y``),
        ``recon`` (M, S, S, 3) uint8 middle frames reconstructed from the predicted voxels,
        ``history`` (loss rows of :func:`fmrivid.decoders.train.fit`: ``loss``, ``voxel_mse``, ``frame_mse``,
        ``frame_ssim``, ``frame_vgg`` when the perceptual term is on, ``frame_loss``), ``config``.
    """
    from fmrivid.devices import resolve_device

    cfg = config(cfg)
    device = resolve_device(device, log)
    for key in ("train_frames", "train_Y", "test_frames"):
        if key not in data:
            raise InputError("data", "keys train_frames, train_Y, test_frames", f"no '{key}'")
    train_frames = _check_frames(data["train_frames"], "train_frames")
    test_frames = _check_frames(data["test_frames"], "test_frames")
    Y = np.asarray(data["train_Y"], np.float64)
    if Y.ndim != 2 or len(Y) != len(train_frames):
        raise InputError("train_Y", f"a ({len(train_frames)}, voxels) matrix (one row per training chunk)",
                         f"shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise InputError("train_Y", "finite values", "NaN or inf")
    if len(Y) < 2:
        raise InputError("train_Y", "at least 2 training samples", f"{len(Y)}")
    x = prepare_chunks(train_frames, cfg["chunk_frames"], cfg["frame_size"])
    if control:
        x = x[np.random.default_rng(int(seed) + 7_777).permutation(len(x))]
    y_mean, y_std = Y.mean(0), Y.std(0)
    y_std = np.where(y_std > 1e-8, y_std, 1.0)
    yz = ((Y - y_mean) / y_std).astype(np.float32)
    p_mean, p_std = _pixel_stats(x)
    torch.manual_seed(int(seed))
    model = EncoderDecoder(Y.shape[1], cfg)
    with torch.no_grad():
        model.pixel_mean.copy_(torch.as_tensor(p_mean, dtype=torch.float32))
        model.pixel_std.copy_(torch.as_tensor(p_std, dtype=torch.float32))
        model.voxel_mean.copy_(torch.as_tensor(y_mean, dtype=torch.float32))
        model.voxel_std.copy_(torch.as_tensor(y_std, dtype=torch.float32))
    model = model.to(device)
    wv, wf = float(cfg["voxel_weight"]), float(cfg["frame_weight"])
    wp, ws = float(cfg["perceptual_weight"]), float(cfg["ssim_weight"])
    mid = int(cfg["chunk_frames"]) // 2
    # frozen, outside the model: neither trained, nor checkpointed, nor saved
    perceptual = perceptual_net(cfg["perceptual_model"], device, log) if wf > 0 and wp > 0 else None

    def loss_fn(m, batch, gen):
        v, frame = m(batch["x"])
        vox = F.mse_loss(v, batch["y"])
        target = batch["x"][:, mid].permute(0, 3, 1, 2).float().div(255.0)
        terms = frame_loss_terms(frame, target, wp if perceptual is not None else 0.0, ws, perceptual)
        return {"loss": wv * vox + wf * terms["frame_loss"], "voxel_mse": vox, **terms}

    n_par = sum(p.numel() for p in model.parameters())
    log(f"encoder: {len(x)} training chunks of {cfg['chunk_frames']} frames at {cfg['frame_size']}px -> "
        f"{Y.shape[1]} targets, {n_par:,} parameters, device {device}; loss {wv:g} * voxel_mse + {wf:g} * "
        f"(frame_mse + {wp if perceptual is not None else 0.0:g} * frame_vgg + {ws:g} * (1 - frame_ssim))"
        + (" (shuffled-stimulus control)" if control else ""))
    history = train.fit(model, loss_fn, {"x": x, "y": yz}, cfg, ckpt_dir, seed=seed, device=device, log=log)
    if out_model is not None:
        train.save_model(model, out_model, {"format": _FORMAT, "config": json.dumps(cfg, sort_keys=True),
                                            "n_voxels": Y.shape[1], "control": str(bool(control)).lower(),
                                            "seed": int(seed)})
    pred, recon = predict(model, test_frames, cfg)
    return {"pred": pred, "recon": recon, "history": history, "config": cfg}


def predict(model, frames, cfg):
    """Predicted responses (M, V) float32 (training units) and middle-frame reconstructions (M, S, S, 3) uint8.

    Runs on the model's device, ``cfg["predict_batch"]`` chunks at a time.
    """
    cfg = config(cfg)
    device = model.voxel_mean.device
    chunks = prepare_chunks(frames, cfg["chunk_frames"], cfg["frame_size"])
    model.eval()
    preds, recons = [], []
    step = int(cfg["predict_batch"])
    with torch.inference_mode():
        for i in range(0, len(chunks), step):
            v, frame = model(torch.as_tensor(chunks[i:i + step], device=device))
            preds.append((v * model.voxel_std + model.voxel_mean).float().cpu().numpy())
            recons.append((frame * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    n_vox = model.voxel_mean.shape[0]
    s = int(cfg["frame_size"])
    pred = np.concatenate(preds) if preds else np.zeros((0, n_vox), np.float32)
    recon = np.concatenate(recons) if recons else np.zeros((0, s, s, 3), np.uint8)
    return pred.astype(np.float32), recon


def load_model(path, device="cpu"):
    """``(model, cfg)`` from a file written by :func:`fit_predict`."""
    state, meta = train.load_state(path, device="cpu")
    if meta.get("format") != _FORMAT:
        raise InputError(path, f"an encoder-decoder model file (format {_FORMAT})", f"format {meta.get('format')!r}")
    cfg = config(json.loads(meta["config"]))
    model = EncoderDecoder(int(meta["n_voxels"]), cfg)
    model.load_state_dict(state)
    return model.to(device).eval(), cfg


def voxel_r(pred, true):
    """Pearson r per voxel (alias of :func:`fmrivid.metrics.brain.voxel_r`)."""
    from fmrivid.metrics.brain import voxel_r as _voxel_r

    return _voxel_r(pred, true)


def evaluate(pred, true):
    """Summary of the voxel-wise Pearson r on test samples: ``r`` (V,), ``median_r``, ``mean_r``."""
    r = voxel_r(pred, true)
    return {"r": r, "median_r": float(np.median(r)), "mean_r": float(np.mean(r))}
