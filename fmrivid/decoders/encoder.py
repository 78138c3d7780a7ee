"""The encoder-decoder model (seed 004, arXiv 2507.12009): stimulus chunks -> voxels -> middle frame.

One sample is one TR: a chunk of ``chunk_frames`` consecutive frames (32 in the paper) of what was on
screen. The **encoder** runs 3-D convolutions over (time, height, width), collapses the remaining
time steps with a learned temporal convolution, runs 2-D convolutions, pools and reads out one value
per voxel. The **decoder** maps the predicted voxels back to the chunk's middle frame
(fully connected layer, then upsampling + convolutions). Trained end to end with::

    loss = voxel_weight * MSE(predicted voxels, measured voxels)      (voxels z-scored on training rows)
         + frame_weight * MSE(reconstructed middle frame, middle frame) (pixels in [0, 1])

(0.5 / 0.5 in the paper, where the decoder acts as a regulariser of the encoder: median voxel r
0.202 with it, 0.139 without). The paper's reconstruction loss also has perceptual/SSIM terms; this
module uses the pixel MSE only. ``frame_weight: 0`` gives the encoder-only ablation.

Scalers (voxel means/SDs, pixel means/SDs per colour channel) come from the training rows only and
are stored in the model file as buffers. Frames of any length are resampled uniformly in time to
``chunk_frames`` (nearest frame) and resized (area averaging) to ``frame_size``.

The result to report is the voxel-wise Pearson r on test samples (:func:`evaluate`, built on
:func:`fmrivid.metrics.brain.voxel_r`), beside the same model trained on shuffled stimulus-response
pairs (``fit_predict(..., control=True)``).
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from fmrivid.decoders import registry, train
from fmrivid.errors import ConfigError, InputError

__all__ = ["DEFAULTS", "EncoderDecoder", "config", "prepare_chunks", "fit_predict", "load_model", "predict",
           "evaluate", "voxel_r"]

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
        Frame ``k`` of a chunk is the input frame ``round(k * (T - 1) / (chunk_frames - 1))``; sizes
        change by area averaging (``torch.nn.functional.interpolate(mode="area")``), rounded.
    """
    frames = _check_frames(frames, "frames")
    n, t, h, w, _ = frames.shape
    idx = np.rint(np.linspace(0, t - 1, chunk_frames)).astype(int) if chunk_frames > 1 else np.array([t // 2])
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
        ``history`` (loss rows of :func:`fmrivid.decoders.train.fit`), ``config``.
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
    mid = int(cfg["chunk_frames"]) // 2

    def loss_fn(m, batch, gen):
        v, frame = m(batch["x"])
        vox = F.mse_loss(v, batch["y"])
        target = batch["x"][:, mid].permute(0, 3, 1, 2).float().div(255.0)
        rec = F.mse_loss(frame, target)
        return {"loss": wv * vox + wf * rec, "voxel_mse": vox, "frame_mse": rec}

    n_par = sum(p.numel() for p in model.parameters())
    log(f"encoder: {len(x)} training chunks of {cfg['chunk_frames']} frames at {cfg['frame_size']}px -> "
        f"{Y.shape[1]} voxels, {n_par:,} parameters, device {device}" + (" (shuffled-stimulus control)"
                                                                         if control else ""))
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
