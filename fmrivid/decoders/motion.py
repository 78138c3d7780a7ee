"""Mind-Animator's consistency motion generator (CMG): next-frame latents from fMRI.

Each frame latent (C, h, w) is cut into ``patch`` x ``patch`` patches, one token each, embedded to
``width`` with a spatial and a frame position embedding. A stack of blocks then applies

1. **sparse causal self-attention**: the tokens of frame t attend to the tokens of the FIRST frame and
   of the PREVIOUS frame (t-1) only (frame 0 attends to itself), as in Tune-A-Video / Mind-Animator;
   nothing ever sees a later frame, so the output at frame t depends on frames 0..t only;
2. **cross-attention** to the context tokens: the fMRI sample (standardised, linearly mapped to
   ``fmri_tokens`` tokens), or the fMRI tokens fused with audio tokens (:mod:`fmrivid.decoders.fusion`);
3. a feed-forward layer,

each pre-norm and residual. A zero-initialised output layer gives the change from frame t to frame
t+1 (in standardised latent units), so an untrained model predicts "no motion".

Training is teacher-forced: from the true frames 0..T-2 predict frames 1..T-1 (MSE). At test time the
first frame is given (the structure decoder's prediction, ``test_first``) and frames 1..T-1 are rolled
out autoregressively, each step seeing only what the model itself produced.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmrivid.decoders import nnutil, registry
from fmrivid.decoders.train import fit
from fmrivid.errors import ConfigError, InputError

__all__ = ["DEFAULTS", "MotionDecoder", "FMRITokens", "sparse_causal_attention", "fit_predict", "fit_predict_motion",
           "frame_correlation"]

DEFAULTS = registry.defaults("motion")  # settings and their descriptions: fmrivid/decoders/registry.py


def sparse_causal_attention(q, k, v, heads, dropout=0.0):
    """Attention of each frame's tokens to the tokens of the first and the previous frame.

    Parameters
    ----------
    q, k, v : Tensor (B, T, P, D)
        Queries, keys and values of P tokens in each of T frames.
    heads : int
    dropout : float

    Returns
    -------
    Tensor (B, T, P, D)
    """
    B, T, P, D = q.shape
    prev = torch.clamp(torch.arange(T, device=q.device) - 1, min=0)
    k = torch.cat([k[:, :1].expand(B, T, P, D), k[:, prev]], dim=2)  # (B, T, 2P, D)
    v = torch.cat([v[:, :1].expand(B, T, P, D), v[:, prev]], dim=2)

    def split(t):
        return t.reshape(B * T, t.shape[2], heads, D // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v), dropout_p=dropout)
    return out.transpose(1, 2).reshape(B, T, P, D)


class FMRITokens(nn.Module):
    """Standardised fMRI (V,) -> (optionally its first ``pca`` principal components) -> ``n`` context tokens."""

    def __init__(self, n_vox, n, width, pca=0):
        super().__init__()
        self.n, self.width = int(n), int(width)
        self.scaler = nnutil.Standardizer((n_vox,))
        self.pca = nnutil.PCAProjection(n_vox, int(pca)) if int(pca) else None
        self.proj = nn.Linear(int(pca) or n_vox, self.n * self.width)
        self.norm = nn.LayerNorm(self.width)

    def fit(self, x):
        """Scaler (and PCA) from the training rows; returns the variance the PCA keeps (1.0 without)."""
        self.scaler.fit(x)
        return 1.0 if self.pca is None else self.pca.fit(self.scaler(torch.as_tensor(x, dtype=torch.float32)))

    def forward(self, x):
        z = self.scaler(x)
        if self.pca is not None:
            z = self.pca(z)
        return self.norm(self.proj(z).reshape(len(x), self.n, self.width))


class _Block(nn.Module):
    def __init__(self, width, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.cross = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * width, width))

    def forward(self, h, context):
        B, T, P, D = h.shape
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
        h = h + self.out(sparse_causal_attention(q, k, v, self.heads, self.dropout if self.training else 0.0))
        flat = self.norm2(h).reshape(B, T * P, D)
        h = h + self.cross(flat, context, context, need_weights=False)[0].reshape(B, T, P, D)
        return h + self.mlp(self.norm3(h))


class MotionDecoder(nn.Module):
    """Next-frame latent predictor with sparse causal attention and fMRI (or fused) cross-attention.

    Parameters
    ----------
    n_vox : int
        fMRI features per sample.
    frame_shape : tuple (C, h, w)
        One frame latent.
    n_frames : int
        Frames per clip (T).
    fusion : nn.Module or None
        ``fusion(fmri_tokens, audio) -> context tokens``; None: the fMRI tokens are the context.
    """

    def __init__(self, n_vox, frame_shape, n_frames, width, heads, depth, patch, fmri_tokens, dropout,
                 fusion=None, pca=0):
        super().__init__()
        C, h, w = (int(s) for s in frame_shape)
        self.frame_shape, self.n_frames, self.patch = (C, h, w), int(n_frames), int(patch)
        self.grid = (h // self.patch, w // self.patch)
        n_patch, d_patch = self.grid[0] * self.grid[1], C * self.patch ** 2
        self.y_scaler = nnutil.Standardizer(())
        self.fmri = FMRITokens(n_vox, fmri_tokens, width, pca)
        self.fusion = fusion
        self.embed = nn.Linear(d_patch, width)
        self.pos = nn.Parameter(0.02 * torch.randn(n_patch, width))
        self.frame_pos = nn.Parameter(0.02 * torch.randn(self.n_frames, width))
        self.blocks = nn.ModuleList(_Block(width, heads, dropout) for _ in range(int(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, d_patch)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _patchify(self, z):  # (B, T, C, h, w) -> (B, T, P, C*p*p)
        B, T, C, h, w = z.shape
        p, (gh, gw) = self.patch, self.grid
        z = z.reshape(B, T, C, gh, p, gw, p).permute(0, 1, 3, 5, 2, 4, 6)
        return z.reshape(B, T, gh * gw, C * p * p)

    def _unpatchify(self, t):  # (B, T, P, C*p*p) -> (B, T, C, h, w)
        B, T = t.shape[:2]
        C, p, (gh, gw) = self.frame_shape[0], self.patch, self.grid
        t = t.reshape(B, T, gh, gw, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return t.reshape(B, T, C, gh * p, gw * p)

    def context(self, x, audio=None):
        tokens = self.fmri(x)
        return tokens if self.fusion is None else self.fusion(tokens, audio)

    def step(self, z, context):
        """Standardised frames z (B, T', C, h, w) -> predicted standardised frames 1..T' (B, T', C, h, w)."""
        T = z.shape[1]
        tok = self._patchify(z)
        h = self.embed(tok) + self.pos + self.frame_pos[:T, None, :]
        for block in self.blocks:
            h = block(h, context)
        return self._unpatchify(tok + self.head(self.norm(h)))

    def forward(self, frames, x, audio=None):
        """Teacher-forced prediction of frames[:, 1:] from frames[:, :-1] (raw latent units)."""
        z = self.y_scaler(frames[:, :-1])
        return self.y_scaler.inverse(self.step(z, self.context(x, audio)))

    @torch.no_grad()
    def rollout(self, first, x, audio=None):
        """All T frames from the first one (B, C, h, w), autoregressively (raw latent units)."""
        ctx = self.context(x, audio)
        z = self.y_scaler(first)[:, None]
        for _ in range(self.n_frames - 1):
            nxt = self.step(z, ctx)[:, -1:]
            z = torch.cat([z, nxt], dim=1)
        return self.y_scaler.inverse(z)


def _check_config(name, cfg, frame_shape):
    width, heads, patch = int(cfg["width"]), int(cfg["heads"]), int(cfg["patch"])
    if width < 1 or heads < 1 or width % heads:
        raise ConfigError(f"decoders.{name}.heads: expected a divisor of width {width}; found {cfg['heads']!r}")
    if patch < 1 or frame_shape[1] % patch or frame_shape[2] % patch:
        raise ConfigError(f"decoders.{name}.patch: expected a divisor of the latent height and width "
                          f"{tuple(frame_shape[1:])}; found {cfg['patch']!r}")
    for key in ("depth", "fmri_tokens"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"decoders.{name}.{key}: expected a positive integer; found {cfg[key]!r}")


def fit_predict_motion(name, data, cfg, out_model, ckpt_dir, seed, device, log, make_fusion=None):
    """Shared body of the motion and fusion decoders (``make_fusion(audio_shape, width, heads) -> module`` or None)."""
    X = nnutil.check_array(data, "train_X", ndim=2)
    Xt = nnutil.check_array(data, "test_X", ndim=2, dim=X.shape[1:])
    Y = nnutil.check_array(data, "train_Y", ndim=5)
    first = data.get("test_first")
    if first is not None and np.ndim(first) == 2 and np.shape(first)[1] == int(np.prod(Y.shape[2:])):
        first = np.reshape(first, (len(first), *Y.shape[2:]))  # a flat first-frame latent (e.g. features/vae.h5)
    first = nnutil.check_array({**data, "test_first": first}, "test_first", dim=Y.shape[2:])
    nnutil.check_rows(data, "train_X", "train_Y")
    nnutil.check_rows(data, "test_X", "test_first")
    if Y.shape[1] < 2:
        raise InputError("data['train_Y']", "at least 2 frames per clip (N, T, C, h, w)",
                                f"shape {Y.shape}")
    _check_config(name, cfg, Y.shape[2:])
    audio = audio_t = None
    if make_fusion is not None:
        audio = nnutil.check_array(data, "train_audio", ndim=3)
        audio_t = nnutil.check_array(data, "test_audio", ndim=3, dim=audio.shape[1:])
        nnutil.check_rows(data, "train_X", "train_audio")
        nnutil.check_rows(data, "test_X", "test_audio")
    log(f"{name}: {X.shape} -> frames {Y.shape[1:]}" + ("" if audio is None else f", audio {audio.shape[1:]}")
        + f" on {device}")

    def build():
        fusion = None if make_fusion is None else make_fusion(audio.shape[1:], int(cfg["width"]), int(cfg["heads"]))
        return MotionDecoder(X.shape[1], Y.shape[2:], Y.shape[1], cfg["width"], cfg["heads"], cfg["depth"],
                             cfg["patch"], cfg["fmri_tokens"], float(cfg["dropout"]), fusion, int(cfg.get("pca", 0)))

    model = nnutil.seeded(build, seed)
    kept = model.fmri.fit(X)
    if model.fmri.pca is not None:
        log(f"{name}: PCA of the standardized training fMRI: {model.fmri.pca.components.shape[0]} components keep "
            f"{100 * kept:.1f}% of the variance")
    model.y_scaler.fit(Y)
    if audio is not None:
        model.fusion.scaler.fit(audio.reshape(-1, audio.shape[-1]))
    model.to(device)
    train = {"x": X, "y": Y}
    if audio is not None:
        train["a"] = audio

    def loss_fn(m, batch, gen):
        pred = m.step(m.y_scaler(batch["y"][:, :-1]), m.context(batch["x"], batch.get("a")))
        return {"loss": F.mse_loss(pred, m.y_scaler(batch["y"][:, 1:]))}

    history = fit(model, loss_fn, train, cfg, ckpt_dir, seed=seed, device=device, log=log)
    shapes = {"n_voxels": X.shape[1], "frames_shape": list(Y.shape[1:])}
    if audio is not None:
        shapes["audio_shape"] = list(audio.shape[1:])
    nnutil.save_decoder(model, out_model, name, cfg, len(X), **shapes)
    model.eval()
    log(f"{name}: rolling out {Y.shape[1] - 1} frames from the given first frame")
    arrays = [first, Xt] if audio_t is None else [first, Xt, audio_t]
    pred = nnutil.predict_in_batches(model.rollout, arrays, device)
    pred[:, 0] = first  # exactly the given frame (the round trip through the scaler is not bit-exact)
    return {"pred": pred, "history": history}


def fit_predict(data, cfg, out_model, ckpt_dir=None, seed=0, device="cpu", log=print):
    """Fit the motion decoder (fMRI cross-attention) on the training rows and roll out the test clips.

    Parameters
    ----------
    data : dict of numpy arrays
        ``train_X`` (n_train, V), ``test_X`` (n_test, V), ``train_Y`` (n_train, T, C, h, w) latents of
        every frame of the training rows, ``test_first`` (n_test, C, h, w) the first frame of each test
        clip (the structure decoder's prediction: never the true test latent; a flat (n_test, C*h*w)
        latent is reshaped).
    cfg : dict
        Keys of :data:`DEFAULTS`.
    out_model, ckpt_dir, seed, device, log
        See :func:`fmrivid.decoders.structure.fit_predict`.

    Returns
    -------
    dict
        ``pred`` float32 (n_test, T, C, h, w): frame 0 is ``test_first``, frames 1.. the rollout;
        ``history`` the loss rows.
    """
    cfg = nnutil.resolve_config("motion", DEFAULTS, cfg)
    return fit_predict_motion("motion", data, cfg, out_model, ckpt_dir, seed, device, log)


def frame_correlation(pred, true, start=1):
    """Mean over clips of the Pearson r between predicted and true latents of frames ``start..``.

    Parameters
    ----------
    pred, true : array (N, T, ...)

    Returns
    -------
    float
    """
    p = np.asarray(pred, np.float64)[:, start:].reshape(len(pred), -1)
    t = np.asarray(true, np.float64)[:, start:].reshape(len(true), -1)
    p = p - p.mean(1, keepdims=True)
    t = t - t.mean(1, keepdims=True)
    return float(np.mean((p * t).sum(1) / np.sqrt((p * p).sum(1) * (t * t).sum(1))))

