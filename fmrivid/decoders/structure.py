"""Mind-Animator's structure decoder: an MLP from fMRI to the first frame's VAE latent, trained with MSE.

The fMRI rows are standardised with the training rows' mean and std, the latent targets element-wise
likewise (predictions are mapped back); both standardisers are buffers of the saved model. Training
goes through :func:`fmrivid.decoders.train.fit` (seeded batches, checkpoints, resume).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from fmrivid.decoders import nnutil, registry
from fmrivid.decoders.train import fit

__all__ = ["DEFAULTS", "StructureDecoder", "fit_predict"]

DEFAULTS = registry.defaults("structure")  # settings and their descriptions: fmrivid/decoders/registry.py


class StructureDecoder(nn.Module):
    """fMRI (V,) -> latent of shape ``latent_shape`` (e.g. (C, h, w))."""

    def __init__(self, n_vox, latent_shape, hidden, layers, dropout):
        super().__init__()
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.x_scaler = nnutil.Standardizer((n_vox,))
        self.y_scaler = nnutil.Standardizer((math.prod(self.latent_shape),))
        self.net = nnutil.mlp(n_vox, int(hidden), math.prod(self.latent_shape), layers, float(dropout))

    def forward(self, x):
        """Standardised latent (flat)."""
        return self.net(self.x_scaler(x))

    def predict(self, x):
        return self.y_scaler.inverse(self.forward(x)).reshape(len(x), *self.latent_shape)


def fit_predict(data, cfg, out_model, ckpt_dir=None, seed=0, device="cpu", log=print):
    """Fit the structure decoder on the training rows and predict the test rows.

    Parameters
    ----------
    data : dict of numpy arrays
        ``train_X`` (n_train, V), ``test_X`` (n_test, V), ``train_Y`` (n_train, ...) first-frame
        latents of the training rows.
    cfg : dict
        Keys of :data:`DEFAULTS` (missing ones take the default).
    out_model : path
        safetensors file of the trained model (config JSON in its metadata).
    ckpt_dir : path or None
        Training checkpoints (resume after a kill); None: no checkpoints.
    seed : int
        Initialisation and batch order.
    device : str
        Torch device, used as given.
    log : callable
        Progress messages.

    Returns
    -------
    dict
        ``pred`` float32 (n_test, ...) latents, ``history`` the loss rows.
    """
    cfg = nnutil.resolve_config("structure", DEFAULTS, cfg)
    X = nnutil.check_array(data, "train_X", ndim=2)
    Xt = nnutil.check_array(data, "test_X", ndim=2, dim=X.shape[1:])
    Y = nnutil.check_array(data, "train_Y", min_ndim=2)
    nnutil.check_rows(data, "train_X", "train_Y")
    shape = Y.shape[1:]
    log(f"structure: {X.shape} -> latent {shape} on {device}")
    model = nnutil.seeded(lambda: StructureDecoder(X.shape[1], shape, cfg["hidden"], cfg["layers"],
                                                   cfg["dropout"]), seed)
    model.x_scaler.fit(X)
    model.y_scaler.fit(Y.reshape(len(Y), -1))
    model.to(device)

    def loss_fn(m, batch, gen):
        return {"loss": F.mse_loss(m(batch["x"]), m.y_scaler(batch["y"]))}

    history = fit(model, loss_fn, {"x": X, "y": Y.reshape(len(Y), -1)}, cfg, ckpt_dir, seed=seed,
                  device=device, log=log)
    nnutil.save_decoder(model, out_model, "structure", cfg, len(X), n_voxels=X.shape[1], latent_shape=list(shape))
    model.eval()
    pred = nnutil.predict_in_batches(model.predict, [Xt], device)
    return {"pred": pred, "history": history}

