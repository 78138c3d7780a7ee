"""Shared training loop for the neural decoders: seeded batches, safetensors checkpoints, resume, loss curves.

Every neural decoder (semantic, structure, motion, fusion, align, encoder) trains through :func:`fit`:

* **Training data only.** ``data`` holds the training tensors (one row per sample, same first
  dimension); the loop never sees anything else, so the checkpoints are a function of the training
  split, the config and the seed alone.
* **Deterministic.** The batch of step ``s`` and every random draw inside the step (dropout,
  noise) come from generators seeded by ``(seed, s)``, so a run resumed at step ``s`` continues
  exactly as an uninterrupted run would (bit-identical on CPU).
* **Checkpoints.** Every ``checkpoint_every`` steps the model, the optimizer state and the loss
  history are written atomically to ``ckpt_dir/checkpoint.safetensors`` (tensors) +
  ``checkpoint.json`` (step, fingerprint, history). A rerun after a kill finds them and resumes from
  the last one; a checkpoint whose fingerprint (config, data shapes, seed) differs is ignored.
* **Progress and curves.** Progress goes to ``log`` every ~10% of the steps (and a tqdm bar when
  ``progress=True`` on a terminal); :func:`write_losses` writes the loss curve TSV the report plots.

Typical use::

    def loss_fn(model, batch, gen):
        pred = model(batch["x"])
        return {"loss": F.mse_loss(pred, batch["y"])}     # extra keys are logged too

    history = fit(model, loss_fn, {"x": X, "y": Y}, cfg, ckpt_dir, seed=0, device="cpu", log=print)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from fmrivid.decoders import registry
from fmrivid.errors import ConfigError
from fmrivid.io.atomic import atomic_path

__all__ = ["TRAIN_DEFAULTS", "fit", "step_generator", "save_model", "load_state", "write_losses", "fingerprint"]

TRAIN_DEFAULTS = registry.defaults()  # the training loop's settings: TRAIN_PARAMS in fmrivid/decoders/registry.py

_CKPT = "checkpoint.safetensors"
_META = "checkpoint.json"


def train_config(cfg):
    """``TRAIN_DEFAULTS`` updated with the training keys of ``cfg`` (other keys are ignored)."""
    out = dict(TRAIN_DEFAULTS)
    out.update({k: cfg[k] for k in TRAIN_DEFAULTS if k in cfg})
    for key in ("steps", "batch_size", "checkpoint_every"):
        if int(out[key]) < 1:
            raise ConfigError(f"config key '{key}': expected a positive integer; found {out[key]!r}")
    return out


def fingerprint(cfg, data, seed, model=None):
    """Hash of what determines a training run: config, seed, the data (shapes, dtypes and values) and the
    model's initial parameters, so a checkpoint is resumed only by the very run that wrote it (new inputs of
    the same shape, e.g. after re-preprocessing, start again). SHA-256 reads ~1 GB/s: cheap next to training."""
    h = hashlib.sha256()
    h.update(json.dumps({"cfg": cfg, "seed": int(seed)}, sort_keys=True, default=str).encode())
    tensors = sorted(data.items())
    if model is not None:
        tensors += [(f"param.{k}", v) for k, v in sorted(model.state_dict().items())]
    for key, v in tensors:
        arr = v.detach().cpu().contiguous() if torch.is_tensor(v) else torch.as_tensor(np.asarray(v))
        h.update(f"{key}:{list(arr.shape)}:{arr.dtype}".encode())
        h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes() if arr.dtype != torch.bool
                 else arr.numpy().tobytes())
    return h.hexdigest()[:16]


def step_generator(seed, step, device="cpu"):
    """The torch.Generator of one training step: a function of (seed, step) only."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 7_919 + 1) % (2**63 - 1))
    return g


def _lr_factor(step, total):
    warm = max(1, int(0.05 * total))
    if step < warm:
        return (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def _batch_index(n, batch_size, seed, step):
    """Indices of step ``step``: epoch ``e`` is a permutation seeded by (seed, e); steps cut it in batches."""
    batch_size = min(batch_size, n)
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=step_generator(seed, -1 - epoch))
    return perm[k * batch_size:(k + 1) * batch_size]


def _optim_tensors(optimizer):
    """Flatten an optimizer state dict: tensors for safetensors, the rest for JSON."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, val in state.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _restore_optim(optimizer, tensors, meta):
    state = {}
    for name, val in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = val
    for name, val in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _write_safetensors(tensors, path, metadata):
    """A safetensors file whose bytes depend only on the tensors and metadata (atomically).

    ``safetensors`` writes its ``__metadata__`` map in hash order, which changes from call to call, so
    two saves of the same model differed; the JSON header is rewritten here with sorted keys (data
    offsets are relative to the end of the header, so the tensor bytes are unchanged).
    """
    from safetensors.torch import save

    raw = save(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(len(header).to_bytes(8, "little"))
            fh.write(header)
            fh.write(memoryview(raw)[8 + n:])


def save_model(model, path, metadata=None):
    """Model weights to a safetensors file, atomically; ``metadata`` (str -> str) goes in the header.

    The file's bytes are a function of the weights and the metadata only (sorted header).
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _write_safetensors(tensors, path, metadata)


def load_state(path, device="cpu"):
    """(state dict, metadata) of a safetensors file written by :func:`save_model`."""
    from safetensors import safe_open

    from fmrivid.errors import InputError

    if not Path(path).exists():
        raise InputError(path, "a decoder checkpoint (safetensors)", "no such file")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(path, "a readable safetensors file", str(exc)) from None


def _save_checkpoint(ckpt_dir, model, optimizer, step, fp, history):
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_t, opt_meta = _optim_tensors(optimizer)
    tensors.update(opt_t)
    # tensors first, then the JSON that points at them: a kill between the two leaves the old JSON,
    # whose step no longer matches the tensors' header -> the pair is rejected on load.
    _write_safetensors(tensors, ckpt_dir / _CKPT, {"step": str(step), "fingerprint": fp})
    with atomic_path(ckpt_dir / _META) as tmp:
        Path(tmp).write_text(json.dumps({"step": step, "fingerprint": fp, "optim": opt_meta,
                                         "history": history}))


def _load_checkpoint(ckpt_dir, model, optimizer, fp, device, log):
    """Step to resume from (0 when there is no usable checkpoint) and the history so far."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / _META).exists() or not (ckpt_dir / _CKPT).exists():
        return 0, []
    try:
        meta = json.loads((ckpt_dir / _META).read_text())
        tensors, header = load_state(ckpt_dir / _CKPT, device=device)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint means: start again
        log(f"checkpoint in {ckpt_dir} unreadable ({exc}); starting from step 0")
        return 0, []
    if meta.get("fingerprint") != fp or header.get("fingerprint") != fp:
        log(f"checkpoint in {ckpt_dir} is from another config/data; starting from step 0")
        return 0, []
    if str(meta.get("step")) != header.get("step"):
        log(f"checkpoint in {ckpt_dir} is incomplete (json step {meta.get('step')}, tensors step "
            f"{header.get('step')}); starting from step 0")
        return 0, []
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    _restore_optim(optimizer, tensors, meta["optim"])
    log(f"resuming from the checkpoint at step {meta['step']} in {ckpt_dir}")
    return int(meta["step"]), list(meta["history"])


def fit(model, loss_fn, data, cfg, ckpt_dir, seed=0, device="cpu", log=print, progress=False, params=None,
        fingerprint_extra=None):
    """Train ``model`` with AdamW on ``data`` (training rows only) and return the loss history.

    Parameters
    ----------
    model : torch.nn.Module
        Already on ``device``; left in eval mode at the end.
    loss_fn : callable
        ``loss_fn(model, batch, gen) -> dict`` with a scalar tensor ``"loss"`` (other scalar
        entries are logged as extra columns). ``batch`` maps each key of ``data`` to its rows for
        this step (on ``device``); ``gen`` is the step's torch.Generator for any random draw.
    data : dict of str -> array or tensor
        Training tensors with the same first dimension.
    cfg : dict
        Training keys of :data:`TRAIN_DEFAULTS` (others ignored).
    ckpt_dir : path or None
        Where checkpoints go; None disables checkpointing and resume.
    params : iterable, optional
        Parameters to optimise (default: every parameter that requires grad), or parameter groups (dicts with
        ``params`` and their own peak ``lr``; the schedule scales each group's peak).
    fingerprint_extra : dict, optional
        Settings of ``loss_fn`` that are not training keys (loss weights, dropout, ...): with the groups' learning
        rates they enter the checkpoint fingerprint, so a checkpoint of other settings is never resumed.

    Returns
    -------
    list of dict
        One row per logged step: ``step``, ``loss`` and the extra terms.
    """
    tcfg = train_config(cfg)
    data = {k: torch.as_tensor(np.asarray(v)) if not torch.is_tensor(v) else v for k, v in data.items()}
    n = {v.shape[0] for v in data.values()}
    if len(n) != 1:
        raise ValueError(f"fit: every data entry needs the same number of rows; found "
                         f"{ {k: v.shape[0] for k, v in data.items()} }")
    n = n.pop()
    device = torch.device(device)
    params = list(params if params is not None else model.parameters())
    if params and isinstance(params[0], dict):  # parameter groups, each with its own peak "lr"
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
    else:
        groups = [{"params": [p for p in params if p.requires_grad], "lr": tcfg["lr"]}]
    for g in groups:
        g["base_lr"] = float(g.get("lr", tcfg["lr"]))
    params = [p for g in groups for p in g["params"]]
    extra = dict(fingerprint_extra or {})
    if len(groups) > 1:
        extra["group_lr"] = [g["base_lr"] for g in groups]
    fp = fingerprint({**tcfg, **extra} if extra else tcfg, data, seed, model)  # before training changes anything
    data = {k: v.to(device) for k, v in data.items()}
    optimizer = torch.optim.AdamW(groups, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    steps = int(tcfg["steps"])
    start, history = (0, []) if ckpt_dir is None else _load_checkpoint(ckpt_dir, model, optimizer, fp, device, log)
    every = max(1, steps // 10)
    bar = None
    if progress and os.isatty(2):
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start, desc="train", leave=False)
    t0 = time.monotonic()
    model.train()
    for step in range(start, steps):
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * _lr_factor(step, steps)
        idx = _batch_index(n, int(tcfg["batch_size"]), seed, step).to(device)
        batch = {k: v[idx] for k, v in data.items()}
        gen = step_generator(seed, step, device.type)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(gen.initial_seed()) % (2**63 - 1))  # dropout etc. from the global RNG
            terms = loss_fn(model, batch, gen)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if tcfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(params, tcfg["grad_clip"])
            optimizer.step()
        row = {"step": step + 1, **{k: float(v.detach()) for k, v in terms.items()}}
        if (step + 1) % every == 0 or step + 1 == steps or step == 0:
            history.append(row)
            log(f"step {step + 1}/{steps} " + " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step")
                + f" ({time.monotonic() - t0:.1f}s)")
        if bar is not None:
            bar.update(1)
        if ckpt_dir is not None and ((step + 1) % int(tcfg["checkpoint_every"]) == 0 or step + 1 == steps):
            _save_checkpoint(ckpt_dir, model, optimizer, step + 1, fp, history)
    if bar is not None:
        bar.close()
    model.eval()
    return history


def write_losses(path, history):
    """The loss curve as TSV (step, loss, extra terms), atomically."""
    keys = list(dict.fromkeys(k for row in history for k in row)) or ["step", "loss"]
    lines = ["\t".join(keys)]
    for row in history:
        lines.append("\t".join("" if k not in row else
                               (f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k])) for k in keys))
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
