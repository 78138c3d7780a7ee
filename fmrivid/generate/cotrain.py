"""GLFA stage-2 co-training (seed 002, Sec. 3.6, Eq. 6): the video generator, the subjects' functional alignment
and an fMRI-to-condition head trained together on L_stage2 = L_denoise + L_GLFA.

What is trained, on the TRAINING clips of every subject (the clips all subjects saw):

* **GLFA modules** (:class:`fmrivid.decoders.align.GLFA`, Eq. 1-2): one per subject, the reference subject's the
  identity (its flat-map space is the common space, as in :mod:`fmrivid.decoders.align`); they start from the
  identity;
* **the condition head** ("the fMRI embedding as input to the cross-attention module of the UNet"): an aligned
  flat map (its covered pixels) -> a rank-``head_rank`` linear bottleneck -> the (L, D) token embedding the UNet
  attends to. Its output layer starts at zero with the mean training caption tokens as bias, so co-training
  starts from the null condition of sampling and learns what the brain adds;
* **the UNet's** self-attention, cross-attention and temporal convolutions (``generate.finetune.trainable``),
  everything else frozen, as the seed: "we exclusively fine-tune self attention, cross attention and temporal
  convolution networks in UNet".

Each step draws (subject, clip) rows: ``L_denoise`` is the DDPM loss of the clip's latent video conditioned on
``head(align_subject(map))`` (with probability ``cond_dropout`` the mean training caption tokens instead: the
null condition); ``L_GLFA`` is Eq. 3 on the same clips' maps of ALL subjects (pairwise alignment + ``lambda``
consistency, as :func:`fmrivid.decoders.align.fit_align`); the loss is ``L_denoise + glfa_weight * L_GLFA``.

Afterwards every subject's test clips are decoded to tokens by ``head(align_s(map))`` and its negative condition
is the head's reading of its mean training map (the seed: "the average of all training fMRI is used as the
negative condition"). Stand-in (named in the recipe): the seed's condition encoder is fMRI-PTE (a ViT pretrained
on UK Biobank, then contrastively trained with CLIP); no such weights exist here, so the head is a linear
bottleneck trained from scratch in this stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmrivid.errors import ConfigError, InputError

__all__ = ["TokenHead", "cotrain", "decode_tokens", "load_head"]

_FORMAT = "fmrivid.generate.cotrain/1"


def _torch():
    import torch

    return torch


class TokenHead(_torch().nn.Module):
    """Aligned flat map (its ``mask`` pixels) -> (L, D) condition tokens through a rank-``rank`` bottleneck."""

    def __init__(self, mask, tokens_shape, rank, mean_tokens=None):
        torch = _torch()
        super().__init__()
        mask = np.asarray(mask, bool)
        self.register_buffer("mask_index", torch.as_tensor(np.flatnonzero(mask.reshape(-1)), dtype=torch.long))
        self.tokens_shape = tuple(int(s) for s in tokens_shape)
        n_out = int(np.prod(self.tokens_shape))
        self.down = torch.nn.Linear(int(mask.sum()), int(rank))
        self.up = torch.nn.Linear(int(rank), n_out)
        torch.nn.init.zeros_(self.up.weight)
        with torch.no_grad():
            bias = np.zeros(n_out, np.float32) if mean_tokens is None else np.asarray(mean_tokens, np.float32)
            self.up.bias.copy_(torch.as_tensor(bias.reshape(-1)))

    def forward(self, maps):
        x = maps.reshape(maps.shape[0], -1)[:, self.mask_index]
        return self.up(self.down(x)).reshape(maps.shape[0], *self.tokens_shape)


class _CoTrainView:
    """What :func:`fmrivid.decoders.train.fit` needs of the co-trained parts: the alignment modules, the head and
    the UNet's trainable tensors only (checkpoints then stay small next to a whole UNet)."""

    def __init__(self, unet, names, align, head):
        self.unet, self.names, self.align, self.head = unet, list(names), align, head

    def _unet_params(self):
        params = dict(self.unet.named_parameters())
        return {f"unet.{n}": params[n] for n in self.names}

    def state_dict(self):
        out = {f"unet.{n[5:]}": p.detach() for n, p in self._unet_params().items()}
        out.update({f"align.{k}": v for k, v in self.align.state_dict().items()})
        out.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return out

    def load_state_dict(self, state):
        torch = _torch()
        with torch.no_grad():
            for n, p in self._unet_params().items():
                p.copy_(state[n].to(p.device, p.dtype))
        self.align.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("align.")})
        self.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})

    def parameters(self):
        return list(self._unet_params().values()) + list(self.align.parameters()) + list(self.head.parameters())

    def train(self, mode=True):
        for part in (self.unet, self.align, self.head):
            part.train(mode)
        return self

    def eval(self):
        return self.train(False)


def _common_train(maps_by_subject, subjects, latent_ids):
    """Training clips seen by every subject and present in the latents, in the first subject's order."""
    have = set(latent_ids)
    sets = [set(maps_by_subject[s]["train_ids"]) for s in subjects]
    return [c for c in maps_by_subject[subjects[0]]["train_ids"] if c in have and all(c in x for x in sets)]


def cotrain(pipe, maps_by_subject, latent_ids, latents, train_tokens, cfg, align_cfg, out_dir, seed=0,
            device="cpu", log=print, ckpt_dir=None):
    """Co-train generator UNet, GLFA modules and condition head (Eq. 6); write the tuned pipeline and the head.

    Parameters
    ----------
    pipe : fmrivid.models.LoadedModel or diffusers pipeline
        The text-to-video generator, loaded in float32 (its UNet is trained in place).
    maps_by_subject : dict
        Subject -> :func:`fmrivid.decoders.align.read_flatmaps` dict (only ``train_maps`` enter).
    latent_ids : list of str
        Clip ids of ``latents`` and ``train_tokens`` (training clips only).
    latents : float32 ndarray (N, T, C, h, w)
        Scaled VAE latents of those clips (the generator's own VAE).
    train_tokens : float32 ndarray (N, L, D)
        Their caption token embeddings: only their mean enters (the head's starting point and the dropout
        condition), never a clip's own tokens.
    cfg : dict
        ``generate.finetune`` (:data:`fmrivid.generate.finetune.FINETUNE_DEFAULTS`).
    align_cfg : dict
        ``decoders.align`` settings (parcel and kernel sizes, lambda, target, use_mask).
    out_dir : path
        Written atomically: the pipeline (``save_pretrained``), ``fmri_head.safetensors`` (alignment modules +
        head), ``losses.tsv`` (loss, denoise, glfa per logged step) and ``cotrain.json``.

    Returns
    -------
    list of dict
        The loss history.
    """
    torch = _torch()
    import torch.nn.functional as F

    from fmrivid.decoders import align as align_mod
    from fmrivid.decoders.train import TRAIN_DEFAULTS, fit, save_model, write_losses
    from fmrivid.generate.finetune import (
        _atomic_dir,
        _autocast,
        finetune_settings,
        trainable_parameter_names,
    )
    from fmrivid.generate.pipelines import _pipe

    fcfg = finetune_settings(cfg)
    acfg = align_mod.config(align_cfg)
    pipe = _pipe(pipe)
    device = torch.device(device)
    maps_by_subject = {str(k): v for k, v in maps_by_subject.items()}
    shape = align_mod._check_maps(maps_by_subject)
    subjects = sorted(maps_by_subject)
    target = str(acfg["target"]) if acfg["target"] is not None else subjects[0]
    if target not in subjects:
        raise ConfigError(f"decoders.align.target: expected one of the subjects {subjects}; found {target!r}")
    order = [target] + [s for s in subjects if s != target]
    lat = np.asarray(latents, np.float32)
    toks = np.asarray(train_tokens, np.float32)
    unet = pipe.unet
    dim = int(unet.config.cross_attention_dim)
    if lat.ndim != 5 or lat.shape[2] != int(unet.config.in_channels) or len(lat) != len(latent_ids):
        raise InputError("latents", f"(N={len(latent_ids)}, T, {unet.config.in_channels}, h, w) scaled latents",
                         f"shape {lat.shape}")
    if toks.ndim != 3 or toks.shape[0] != len(latent_ids) or toks.shape[2] != dim:
        raise InputError("train_tokens", f"({len(latent_ids)}, L, {dim}) caption token embeddings",
                         f"shape {toks.shape}")
    ids = _common_train(maps_by_subject, order, list(latent_ids))
    if len(ids) < 2:
        raise InputError("flat maps", "at least 2 training clips seen by every subject", f"{len(ids)}")
    index = {c: k for k, c in enumerate(latent_ids)}
    lat_t = torch.as_tensor(np.ascontiguousarray(lat[[index[c] for c in ids]].transpose(0, 2, 1, 3, 4)),
                            device=device)  # (N, C, T, h, w) as the UNet takes it
    maps_t = torch.as_tensor(np.stack([align_mod._rows(maps_by_subject[s], "train", ids) for s in order]),
                             device=device)  # (S, N, H, W)
    mask = align_mod._joint_mask(maps_by_subject, shape, acfg["use_mask"])
    m = torch.as_tensor(mask.astype(np.float32), device=device)
    mean_tokens = toks.mean(0)

    for name in ("unet", "vae", "text_encoder"):
        part = getattr(pipe, name, None)
        if part is not None:
            part.to(device=device, dtype=torch.float32)
    unet.requires_grad_(False)
    names = trainable_parameter_names(unet, fcfg["trainable"])
    if not names:
        raise ConfigError(f"generate.finetune.trainable {fcfg['trainable']} match no UNet parameter")
    params = dict(unet.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))
        modules = torch.nn.ModuleDict({s: align_mod.GLFA(shape[0], shape[1], acfg["parcel_size"],
                                                         acfg["kernel_size"], mask) for s in order[1:]}).to(device)
        head = TokenHead(mask, mean_tokens.shape, fcfg["head_rank"], mean_tokens).to(device)
    n_unet = sum(params[n].numel() for n in names)
    n_head = sum(p.numel() for p in head.parameters())
    n_align = sum(p.numel() for p in modules.parameters())
    log(f"cotrain: L_denoise + {fcfg['glfa_weight']:g} L_GLFA on {len(ids)} training clips x {len(order)} subjects "
        f"(reference sub-{target}); trainable: {n_unet:,} UNet ({len(names)} tensors), {n_align:,} GLFA, "
        f"{n_head:,} head parameters")

    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    acp = noise_sched.alphas_cumprod.to(device=device, dtype=torch.float32)
    n_steps = int(noise_sched.config.num_train_timesteps)
    target_type = noise_sched.config.prediction_type
    if target_type not in ("epsilon", "v_prediction"):
        raise ConfigError(f"cotrain: scheduler prediction_type {target_type!r} is not supported")
    null = torch.as_tensor(mean_tokens, device=device)
    p_drop, lam, weight = float(fcfg["cond_dropout"]), float(acfg["lambda_const"]), float(fcfg["glfa_weight"])
    autocast = _autocast(fcfg, device)

    def aligned(k, x):
        return x * m if k == 0 else modules[order[k]](x)

    def loss_fn(view, batch, gen):
        sub, clip = batch["sub"], batch["clip"]
        b = sub.shape[0]
        out = torch.empty(b, *shape, device=device)
        for k in range(len(order)):  # each row through its own subject's alignment
            rows = torch.nonzero(sub == k).flatten()
            if len(rows):
                out[rows] = aligned(k, maps_t[k, clip[rows]])
        cond = head(out)
        keep = (torch.rand(b, generator=gen, device=gen.device) >= p_drop).to(device)
        cond = torch.where(keep[:, None, None], cond, null[None])
        x0 = lat_t[clip]
        noise = torch.randn(x0.shape, generator=gen, device=gen.device).to(device)
        t = torch.randint(0, n_steps, (b,), generator=gen, device=gen.device).to(device)
        a = acp[t].view(b, 1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        tgt = noise if target_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        with autocast():
            pred = unet(xt, t, encoder_hidden_states=cond, return_dict=False)[0]
        denoise = F.mse_loss(pred.float(), tgt)
        # Eq. 3 on the batch's clips, all subjects (every pair a < b, consistency with lambda)
        maps = [aligned(k, maps_t[k, clip]) for k in range(len(order))]
        const = [maps[0].new_zeros(())] + [align_mod._masked_mse(maps[k], maps_t[k, clip] * m, m)
                                           for k in range(1, len(order))]
        total, terms = 0.0, 0
        for i in range(len(order)):
            for j in range(i + 1, len(order)):
                total = total + align_mod._masked_mse(maps[i], maps[j], m) + lam * (const[i] + const[j])
                terms += 1
        glfa = total / terms
        return {"loss": denoise + weight * glfa, "denoise": denoise, "glfa": glfa}

    rows_sub = np.repeat(np.arange(len(order)), len(ids))
    rows_clip = np.tile(np.arange(len(ids)), len(order))
    out_dir = Path(out_dir)
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else out_dir.with_name(out_dir.name + ".ckpt")
    view = _CoTrainView(unet, names, modules, head)
    history = fit(view, loss_fn, {"sub": rows_sub, "clip": rows_clip}, {k: fcfg[k] for k in TRAIN_DEFAULTS},
                  ckpt, seed=seed, device=device, log=log,
                  params=[{"params": view.parameters()[:len(names)], "lr": float(fcfg["lr"])},
                          {"params": view.parameters()[len(names):], "lr": float(fcfg["head_lr"])}],
                  fingerprint_extra={k: fcfg[k] for k in ("glfa_weight", "head_rank", "head_lr", "cond_dropout",
                                                          "trainable", "mixed_precision")} | {"align": acfg})
    view.eval()
    for part in (unet, modules, head):
        part.requires_grad_(False)
    holder = torch.nn.ModuleDict({"align": modules, "head": head})
    meta = {"format": _FORMAT, "target": target, "subjects": json.dumps(order), "height": shape[0],
            "width": shape[1], "tokens_shape": json.dumps(list(mean_tokens.shape)), "rank": int(fcfg["head_rank"]),
            "align_config": json.dumps(acfg, sort_keys=True, default=str)}
    info = {"trained_tensors": names, "trained_unet_parameters": int(n_unet), "glfa_parameters": int(n_align),
            "head_parameters": int(n_head), "n_train_clips": len(ids), "subjects": order, "target": target,
            "seed": int(seed), "config": fcfg}
    with _atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        save_model(holder, tmp / "fmri_head.safetensors", meta)
        write_losses(tmp / "losses.tsv", history)
        (tmp / "cotrain.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    last = history[-1]
    log(f"cotrain: wrote {out_dir} (final loss {last['loss']:.4f}: denoise {last['denoise']:.4f}, "
        f"GLFA {last['glfa']:.4f})")
    return history


def load_head(path, device="cpu"):
    """``(modules, head, meta)`` of a co-trained ``fmri_head.safetensors``; ``modules[target]`` is None."""
    from fmrivid.decoders import align as align_mod
    from fmrivid.decoders.train import load_state

    state, meta = load_state(path, device=device)
    if meta.get("format") != _FORMAT:
        raise InputError(path, f"a co-trained condition head (format {_FORMAT})", f"format {meta.get('format')!r}")
    acfg = json.loads(meta["align_config"])
    h, w = int(meta["height"]), int(meta["width"])
    order = json.loads(meta["subjects"])
    mask = state["head.mask_index"].cpu().numpy()
    mask_2d = np.zeros(h * w, bool)
    mask_2d[mask] = True
    mask_2d = mask_2d.reshape(h, w)
    modules = {order[0]: None}
    for s in order[1:]:
        part = {k[len(f"align.{s}."):]: v for k, v in state.items() if k.startswith(f"align.{s}.")}
        mod = align_mod.GLFA(h, w, acfg["parcel_size"], acfg["kernel_size"], mask_2d)
        mod.load_state_dict(part)
        modules[s] = mod.to(device).eval()
    head = TokenHead(mask_2d, json.loads(meta["tokens_shape"]), int(meta["rank"]))
    head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
    return modules, head.to(device).eval(), {**meta, "mask": mask_2d}


def decode_tokens(path, subject, maps, device="cpu"):
    """Condition tokens of one subject's (N, H, W) flat maps through its co-trained alignment and the head."""
    torch = _torch()
    modules, head, meta = load_head(path, device)
    if str(subject) not in modules:
        raise InputError(path, f"a co-trained alignment of sub-{subject}", f"subjects {sorted(modules)}")
    mod = modules[str(subject)]
    m = torch.as_tensor(meta["mask"].astype(np.float32), device=device)
    out = []
    with torch.no_grad():
        for i in range(0, len(maps), 256):
            x = torch.as_tensor(np.asarray(maps[i:i + 256], np.float32), device=device)
            out.append(head(x * m if mod is None else mod(x)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *json.loads(meta["tokens_shape"])), np.float32)
