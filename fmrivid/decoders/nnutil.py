"""Helpers shared by the neural decoders (semantic, structure, motion, fusion).

Config merging with clear errors, input checks, a train-fitted standardiser that travels inside the
saved model, seeded model construction, batched inference and the safetensors metadata every decoder
writes. Nothing here touches test data: the standardisers are built from training rows only.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from fmrivid.decoders.train import TRAIN_DEFAULTS, save_model
from fmrivid.errors import ConfigError, InputError

__all__ = ["resolve_config", "check_array", "check_rows", "Standardizer", "seeded", "mlp", "predict_in_batches",
           "save_decoder", "as_tensor"]


def resolve_config(name, defaults, cfg):
    """``defaults`` updated with ``cfg``; an unknown key is a ConfigError naming ``decoders.<name>.<key>``."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ConfigError(f"decoders.{name}: unknown key(s) {unknown}; expected some of {sorted(defaults)}")
    out = dict(defaults)
    out.update(cfg)
    for key in TRAIN_DEFAULTS:
        if key in defaults and not isinstance(out[key], (int, float)):
            raise ConfigError(f"decoders.{name}.{key}: expected a number; found {out[key]!r}")
    return out


def check_array(data, key, ndim=None, min_ndim=None, dim=None):
    """``data[key]`` as a finite float32 array of the expected rank; InputError naming the entry otherwise."""
    where = f"data['{key}']"
    if key not in data or data[key] is None:
        raise InputError(where, "an array", "no such entry")
    arr = np.asarray(data[key], dtype=np.float32)
    if ndim is not None and arr.ndim != ndim:
        raise InputError(where, f"a {ndim}-D array", f"shape {arr.shape}")
    if min_ndim is not None and arr.ndim < min_ndim:
        raise InputError(where, f"an array of at least {min_ndim} dimensions", f"shape {arr.shape}")
    if dim is not None and arr.shape[1:] != tuple(dim):
        raise InputError(where, f"rows of shape {tuple(dim)}", f"rows of shape {arr.shape[1:]}")
    if arr.shape[0] == 0:
        raise InputError(where, "at least one row", "none")
    if not np.all(np.isfinite(arr)):
        raise InputError(where, "finite values", "NaN or inf")
    return arr


def check_rows(data, ref, *keys):
    """Every ``data[k]`` has as many rows as ``data[ref]``."""
    n = len(data[ref])
    for key in keys:
        if len(data[key]) != n:
            raise InputError(f"data['{key}']", f"{n} rows (one per row of {ref})", f"{len(data[key])} rows")


def as_tensor(arr, device):
    return torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float32), device=device)


class PCAProjection(nn.Module):
    """Projection onto the first ``k`` principal components of the training rows (buffers, saved with the model).

    Parameters
    ----------
    n_in, k : int
        Features per row and components kept.
    """

    def __init__(self, n_in, k):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("components", torch.zeros(int(k), n_in))

    @torch.no_grad()
    def fit(self, x):
        """Components of ``x`` (training rows only), by SVD of the centred rows; returns the variance explained."""
        x = torch.as_tensor(x, dtype=torch.float64)
        k, n_in = self.components.shape
        if not 1 <= k <= min(x.shape):
            raise ConfigError(f"pca: expected 1 to {min(x.shape)} components (training rows x features "
                              f"{tuple(x.shape)}); found {k}")
        mean = x.mean(0)
        _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
        self.mean.copy_(mean.to(self.mean))
        self.components.copy_(vt[:k].to(self.components))
        return float((s[:k] ** 2).sum() / (s ** 2).sum().clamp_min(1e-12))

    def forward(self, x):
        return (x - self.mean) @ self.components.T


class Standardizer(nn.Module):
    """``(x - mean) / std`` with mean/std of the training rows, stored as buffers (saved with the model).

    Parameters
    ----------
    shape : tuple of int
        Shape of one row (``()`` for a single scalar mean/std over everything).
    """

    def __init__(self, shape):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @torch.no_grad()
    def fit(self, x):
        """Set mean/std from ``x`` (training rows only); a feature with no variance keeps std 1."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if self.mean.dim() == 0:
            mean, std = x.mean(), x.std(unbiased=False)
        else:
            mean, std = x.mean(0), x.std(0, unbiased=False)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std))
        return self

    def forward(self, x):
        return (x - self.mean) / self.std

    def inverse(self, z):
        return z * self.std + self.mean


def seeded(build, seed):
    """``build()`` with torch's global RNG seeded by ``seed`` (restored afterwards): deterministic init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


def mlp(n_in, hidden, n_out, layers, dropout=0.0):
    """``layers`` hidden Linear+LayerNorm+GELU(+Dropout) blocks of width ``hidden``, then a Linear to ``n_out``."""
    mods, width = [], n_in
    for _ in range(int(layers)):
        mods += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU()]
        if dropout:
            mods.append(nn.Dropout(dropout))
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


@torch.no_grad()
def predict_in_batches(fn, arrays, device, batch_size=256):
    """Concatenated ``fn(*batch)`` over row chunks of ``arrays`` (numpy), as float32 numpy."""
    n = len(arrays[0])
    outs = []
    for start in range(0, n, batch_size):
        part = [as_tensor(a[start:start + batch_size], device) for a in arrays]
        out = fn(*part)
        outs.append(out.detach().float().cpu().numpy())
    return np.concatenate(outs).astype(np.float32, copy=False)


def save_decoder(model, out_model, name, cfg, n_train, **shapes):
    """Save ``model`` with metadata: decoder name, format, config JSON, training size and data shapes.

    Only training-side facts go in: the file must not depend on the test split.
    """
    meta = {"decoder": name, "format": f"fmrivid.decoders.{name}/1", "config": json.dumps(cfg, sort_keys=True),
            "n_train": int(n_train)}
    meta.update({k: json.dumps(v) for k, v in shapes.items()})
    save_model(model, out_model, meta)
