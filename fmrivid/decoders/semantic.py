"""Mind-Animator's semantic decoder: fMRI -> CLIP space by tri-modal contrastive learning, then tokens.

Stage 1 trains an MLP ``f = E(x)`` from standardised fMRI to the text-embedding space with

    L = alpha * InfoNCE(f, text) + (1 - alpha) * InfoNCE(f, video)

(symmetric InfoNCE on cosine similarities divided by ``temperature``). When the video embedding has
another width than the text embedding, a linear head maps ``f`` to the video space (with CLIP text and
image embeddings, the same space, ``f`` is used directly, as in the paper). Training rows can be
repeated presentations of one clip (see :func:`info_nce` for why that needs no special case).

Stage 2 (only when token targets are given) trains a 3-layer MLP from the frozen, unit-norm ``f`` to
the generator's conditioning tokens (L, D) with MSE on element-wise standardised tokens.

The predicted text embedding is ``f`` normalised and scaled to the mean norm of the training targets
(unit norm for MiniLM/CLIP-normalised features); use it for retrieval, 2-way identification and
generation conditioning.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmrivid.decoders import nnutil, registry
from fmrivid.decoders.train import fit
from fmrivid.errors import ConfigError

__all__ = ["DEFAULTS", "SemanticDecoder", "info_nce", "fit_predict"]

DEFAULTS = registry.defaults("semantic")  # settings and their descriptions: fmrivid/decoders/registry.py


def info_nce(a, b, temperature):
    """Symmetric InfoNCE between rows of ``a`` and ``b`` (cosine similarity / temperature).

    Parameters
    ----------
    a, b : Tensor (B, D)
        Paired embeddings (row i of ``a`` belongs with row i of ``b``).
    temperature : float

    Returns
    -------
    Tensor
        Scalar loss; log(B) at chance.

    Notes
    -----
    Repeated presentations of one clip in a batch have identical target rows in ``b``. The loss then
    equals the multi-positive InfoNCE that counts every repeat as a positive (the two identical
    columns share their softmax mass), so repeats need no special treatment.
    """
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class SemanticDecoder(nn.Module):
    """fMRI encoder to the text space (+ video head) and optional token MLP."""

    def __init__(self, n_vox, d_text, d_video, hidden, layers, dropout, token_shape=None, token_hidden=1024):
        super().__init__()
        self.x_scaler = nnutil.Standardizer((n_vox,))
        self.encoder = nnutil.mlp(n_vox, int(hidden), d_text, layers, float(dropout))
        self.video_head = nn.Identity() if d_video == d_text else nn.Linear(d_text, d_video, bias=False)
        self.register_buffer("text_norm", torch.ones(()))
        self.token_shape = tuple(token_shape) if token_shape else None
        if self.token_shape:
            n_tok = math.prod(self.token_shape)
            self.token_scaler = nnutil.Standardizer((n_tok,))
            self.token_head = nnutil.mlp(d_text, int(token_hidden), n_tok, 2, 0.0)  # 3 Linear layers

    def embed(self, x):
        """Raw fMRI embedding ``f`` (B, d_text)."""
        return self.encoder(self.x_scaler(x))

    def predict_text(self, x):
        return F.normalize(self.embed(x), dim=-1) * self.text_norm

    def predict_video(self, x):
        return self.video_head(self.embed(x))

    def tokens_from_unit(self, f_unit):
        return self.token_scaler.inverse(self.token_head(f_unit)).reshape(len(f_unit), *self.token_shape)


def fit_predict(data, cfg, out_model, ckpt_dir=None, seed=0, device="cpu", log=print):
    """Fit the semantic decoder on the training rows and predict the test rows.

    Parameters
    ----------
    data : dict of numpy arrays
        ``train_X`` (n_train, V), ``test_X`` (n_test, V), ``train_Y`` (n_train, D_t) text embeddings
        of the training rows, ``train_video`` (n_train, D_v) video (CLIP image) embeddings of the same
        rows, optional ``train_tokens`` (n_train, L, D) conditioning tokens.
    cfg : dict
        Keys of :data:`DEFAULTS`.
    out_model : path
        safetensors file of the trained model (both stages).
    ckpt_dir : path or None
        Checkpoints of stage 1 in ``ckpt_dir/contrastive``, of stage 2 in ``ckpt_dir/tokens``.
    seed, device, log
        See :func:`fmrivid.decoders.structure.fit_predict`.

    Returns
    -------
    dict
        ``pred`` (n_test, D_t) decoded text embeddings, ``video`` (n_test, D_v) decoded video
        embeddings, ``tokens`` (n_test, L, D) when token targets were given, ``history`` (stage 1
        loss rows: loss, nce_text, nce_video) and ``token_history`` (stage 2 rows, may be empty).
    """
    cfg = nnutil.resolve_config("semantic", DEFAULTS, cfg)
    if not 0.0 <= float(cfg["alpha"]) <= 1.0:
        raise ConfigError(f"decoders.semantic.alpha: expected a number in [0, 1]; found {cfg['alpha']!r}")
    if not float(cfg["temperature"]) > 0:
        raise ConfigError(f"decoders.semantic.temperature: expected a positive number; found {cfg['temperature']!r}")
    X = nnutil.check_array(data, "train_X", ndim=2)
    Xt = nnutil.check_array(data, "test_X", ndim=2, dim=X.shape[1:])
    T = nnutil.check_array(data, "train_Y", ndim=2)
    Vv = nnutil.check_array(data, "train_video", ndim=2)
    keys = ["train_Y", "train_video"]
    tokens = None
    if data.get("train_tokens") is not None:
        tokens = nnutil.check_array(data, "train_tokens", ndim=3)
        keys.append("train_tokens")
    nnutil.check_rows(data, "train_X", *keys)
    log(f"semantic: {X.shape} -> text {T.shape[1]}, video {Vv.shape[1]}"
        + (f", tokens {tokens.shape[1:]}" if tokens is not None else "") + f" on {device}")
    model = nnutil.seeded(lambda: SemanticDecoder(X.shape[1], T.shape[1], Vv.shape[1], cfg["hidden"],
                                                  cfg["layers"], cfg["dropout"],
                                                  None if tokens is None else tokens.shape[1:],
                                                  cfg["token_hidden"]), seed)
    model.x_scaler.fit(X)
    model.text_norm.fill_(float(np.linalg.norm(T, axis=1).mean()))
    if tokens is not None:
        model.token_scaler.fit(tokens.reshape(len(tokens), -1))
    model.to(device)
    alpha, temp = float(cfg["alpha"]), float(cfg["temperature"])

    def contrastive(m, batch, gen):
        f = m.embed(batch["x"])
        nce_t, nce_v = info_nce(f, batch["t"], temp), info_nce(m.video_head(f), batch["v"], temp)
        return {"loss": alpha * nce_t + (1 - alpha) * nce_v, "nce_text": nce_t, "nce_video": nce_v}

    sub = lambda name: None if ckpt_dir is None else Path(ckpt_dir) / name  # noqa: E731
    log("semantic stage 1: tri-modal InfoNCE")
    stage1 = list(model.encoder.parameters()) + list(model.video_head.parameters())
    history = fit(model, contrastive, {"x": X, "t": T, "v": Vv}, cfg, sub("contrastive"), seed=seed,
                  device=device, log=log, params=stage1)
    token_history = []
    if tokens is not None:
        log("semantic stage 2: token MLP on the frozen fMRI embedding")
        model.eval()
        f_train = nnutil.predict_in_batches(lambda x: F.normalize(model.embed(x), dim=-1), [X], device)
        flat = tokens.reshape(len(tokens), -1)

        def token_loss(m, batch, gen):
            return {"loss": F.mse_loss(m.token_head(batch["f"]), m.token_scaler(batch["tok"]))}

        # stage 2 optimises the token head only; the model object carries the token scaler it needs.
        token_history = fit(model, token_loss, {"f": f_train, "tok": flat}, cfg, sub("tokens"), seed=seed + 1,
                            device=device, log=log, params=model.token_head.parameters())
    nnutil.save_decoder(model, out_model, "semantic", cfg, len(X), n_voxels=X.shape[1], text_dim=T.shape[1],
                        video_dim=Vv.shape[1], token_shape=None if tokens is None else list(tokens.shape[1:]))
    model.eval()
    out = {"pred": nnutil.predict_in_batches(model.predict_text, [Xt], device),
           "video": nnutil.predict_in_batches(model.predict_video, [Xt], device),
           "history": history, "token_history": token_history}
    if tokens is not None:
        out["tokens"] = nnutil.predict_in_batches(
            lambda x: model.tokens_from_unit(F.normalize(model.embed(x), dim=-1)), [Xt], device)
    return out
