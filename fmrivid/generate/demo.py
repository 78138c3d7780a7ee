"""Demo video generator: a tiny VAE and a tiny text-conditioned UNet3D trained on CPU.

The embedded demo has no pretrained video model, so it trains its own on the
demo's *training* clips: a small diffusers ``AutoencoderKL`` (64x64 frames to
16x16x4 latents) and a small ``UNet3DConditionModel`` that denoises latent clips
conditioned on a caption embedding (e.g. 384-d, unit norm). At test time the
UNet is conditioned on embeddings decoded from fMRI.

Conditioning: the embedding is centred and scaled with statistics of the
training conditions (saved with the model), then given to the UNet both as a
cross-attention sequence of length 1 (``encoder_hidden_states (B, 1, D)``) and,
by default, through the UNet's ``time_cond_proj_dim`` projection into the
timestep embedding. The null condition of classifier-free guidance is the zero
vector (in that centred space: the mean training caption).

Loss: the DDPM loss with a ``v_prediction`` target by default (``epsilon`` is
available). With a few hundred CPU steps an epsilon model cannot recover the
content at high noise (its x0 estimate at t=900 was worse than predicting
zeros), and DDIM samples stayed noise; v-prediction fixes this.

Layout on disk::

    vae_dir/               AutoencoderKL.save_pretrained (scaling_factor = 1/std of
                           the training latents) + losses.tsv (step, loss, rec, kl)
    unet_dir/unet/         UNet3DConditionModel.save_pretrained
    unet_dir/scheduler/    DDIMScheduler config (same betas and target as training)
    unet_dir/clip.json     clip geometry and the condition centring statistics
    unet_dir/losses.tsv    step, loss

Every random draw comes from a ``torch.Generator`` seeded from the ``seed``
argument (or from ``seeds[i]`` per generated clip), so CPU runs are
bit-identical; on CPU the sampler calls the UNet one clip at a time so that a
clip does not depend on the batch it is generated in.

One module (~740 lines) on purpose: the demo generator's VAE, UNet3D, training loops and sampler are one
self-contained model that exists only for the demo; nothing else imports its parts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fmrivid.errors import ConfigError, InputError
from fmrivid.io.atomic import atomic_path

__all__ = [
    "default_config",
    "tiny_config",
    "train_vae",
    "train_unet",
    "generate",
    "encode_latents",
    "load_vae",
    "load_unet",
]

# --------------------------------------------------------------------------- config

_META = "clip.json"  # in unet_dir: clip geometry the UNet was trained on

_DEFAULTS = {
    "vae": {
        "block_out_channels": [16, 32, 64],  # one encoder/decoder block each; len-1 downsamplings
        "latent_channels": 4,                # channels of the latent
        "layers_per_block": 1,               # resnets per block
        "norm_num_groups": 8,                # GroupNorm groups (divides every channel count)
        "mid_attention": False,              # self-attention in the mid block
        "steps": 400,                        # optimiser steps
        "batch_size": 16,                    # frames per step
        "lr": 3e-3,                          # AdamW peak learning rate (warm-up then cosine decay)
        "weight_decay": 0.0,                 # AdamW weight decay
        "mse_weight": 4.0,                   # weight of the MSE term added to the L1 reconstruction loss
        "kl_weight": 1e-6,                   # weight of the KL term
    },
    "unet": {
        "block_out_channels": [32, 64, 64],  # channels per level; first levels cross-attend
        "cross_attn": [False, True, True],   # per level: CrossAttn (True) or plain block (False)
        "layers_per_block": 1,               # resnets per down block (up blocks use one more)
        "attention_head_dim": 8,             # diffusers naming: this is the NUMBER of heads per block
        "norm_num_groups": 16,               # GroupNorm groups
        "steps": 250,                        # optimiser steps
        "batch_size": 8,                     # clips per step
        "lr": 2e-3,                          # AdamW peak learning rate (warm-up then cosine decay)
        "weight_decay": 0.0,                 # AdamW weight decay
        "cond_dropout": 0.1,                 # probability of replacing the condition by zeros
        "cond_to_time": True,                # also add a projection of the condition to the time embedding
        "cond_standardize": True,            # centre/scale conditions with train-set statistics
        "prediction_type": "v_prediction",   # "v_prediction" or "epsilon" (DDPM loss target)
        "num_train_timesteps": 1000,         # DDPM training timesteps
        "beta_schedule": "scaled_linear",    # DDPM/DDIM beta schedule (Stable Diffusion's)
        "beta_start": 0.00085,               # first beta
        "beta_end": 0.012,                   # last beta
    },
    "sample": {
        "steps": 20,                         # DDIM steps
        "batch_size": 8,                     # clips per batch
        "guidance_scale": 2.0,               # classifier-free guidance (1.0 = off)
        "eta": 0.0,                          # DDIM eta (0 = deterministic given the initial noise)
        "decode_slice": 8,                   # frames per VAE decode call
    },
}

_TINY = {
    "vae": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
            "steps": 4, "batch_size": 8},
    "unet": {"block_out_channels": [16, 16], "cross_attn": [False, True], "attention_head_dim": 2,
             "norm_num_groups": 4, "steps": 4, "batch_size": 2},
    "sample": {"steps": 3, "batch_size": 2},
}


def default_config():
    """Return the default generator configuration (a fresh deep copy).

    Returns
    -------
    dict
        ``{"vae": {...}, "unet": {...}, "sample": {...}}``; see the module
        source for one line per key.
    """
    return copy.deepcopy(_DEFAULTS)


def tiny_config():
    """Return a very small configuration for tests and CI (seconds on CPU).

    Returns
    -------
    dict
        Same keys as :func:`default_config`.
    """
    cfg = default_config()
    for section, values in _TINY.items():
        cfg[section].update(copy.deepcopy(values))
    return cfg


def _section(cfg, name):
    """Return the ``name`` section of ``cfg`` merged over the defaults.

    ``cfg`` may be the whole configuration (with a ``name`` key) or the
    section itself. Unknown keys raise ``ConfigError``.
    """
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise ConfigError(f"generator config: expected a dict; found {type(cfg).__name__}")
    whole = bool(set(cfg) & set(_DEFAULTS))  # {"vae": .., "unet": .., "sample": ..}
    sub = (cfg.get(name) or {}) if whole else cfg
    unknown = sorted(set(sub) - set(_DEFAULTS[name]))
    if unknown:
        raise ConfigError(
            f"generator config section '{name}': expected keys among {sorted(_DEFAULTS[name])}; "
            f"found unknown {unknown}")
    out = copy.deepcopy(_DEFAULTS[name])
    out.update(sub)
    return out


# --------------------------------------------------------------------------- helpers

def _device(device):
    return torch.device(device) if not isinstance(device, torch.device) else device


def _check_clips(frames, name="frames"):
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise InputError(name, "uint8 clips (N, T, H, W, 3)", f"{frames.dtype} {frames.shape}")
    if frames.shape[0] < 1:
        raise InputError(name, "at least one clip", "0 clips")
    return frames


def _check_cond(cond, n, name="cond"):
    cond = np.asarray(cond, dtype=np.float32)
    if cond.ndim != 2 or cond.shape[0] != n:
        raise InputError(name, f"float32 embeddings ({n}, D)", f"{cond.shape}")
    if not np.all(np.isfinite(cond)):
        raise InputError(name, "finite embeddings", "NaN or inf values")
    return cond


def _to_unit(images_uint8):
    """uint8 (N, H, W, 3) numpy -> float32 tensor (N, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8))
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def _to_uint8(x):
    """float tensor (N, 3, H, W) in [-1, 1] -> uint8 numpy (N, H, W, 3)."""
    x = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _lr_lambda(total_steps):
    """Linear warm-up over 5% of the steps, then cosine decay to 10%."""
    warm = max(1, int(0.05 * total_steps))

    def fn(step):
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, total_steps - warm)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))

    return fn


def _batches(n, batch_size, steps, gen):
    """Yield ``steps`` index batches: epochs of seeded permutations, cut in batches."""
    batch_size = min(batch_size, n)
    buf = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while buf.numel() < batch_size:
            buf = torch.cat([buf, torch.randperm(n, generator=gen)])
        yield buf[:batch_size]
        buf = buf[batch_size:]


def _write_losses(path, history):
    keys = list(history[0]) if history else ["step", "loss"]
    lines = ["\t".join(keys)]
    for row in history:
        lines.append("\t".join(f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k])
                               for k in keys))
    Path(path).write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def _atomic_dir(path):
    """Build a directory under a temporary name; on success it replaces ``path`` as a whole."""
    path = Path(path)
    with atomic_path(path, suffix_keep=False) as tmp:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        yield tmp
        # os.replace cannot overwrite a non-empty directory: drop the old output last
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


@contextlib.contextmanager
def _seeded(seed, device):
    """Seed torch's global RNG (weight init, dropout) without touching the caller's state.

    diffusers' UNet3D temporal convolutions use dropout 0.1, drawn from the global RNG.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _log_every(steps):
    return max(1, steps // 10)


# --------------------------------------------------------------------------- VAE

def _build_vae(vcfg, size):
    from diffusers import AutoencoderKL

    n = len(vcfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(vcfg["block_out_channels"]),
        layers_per_block=int(vcfg["layers_per_block"]),
        latent_channels=int(vcfg["latent_channels"]),
        norm_num_groups=int(vcfg["norm_num_groups"]),
        mid_block_add_attention=bool(vcfg["mid_attention"]),
        sample_size=int(size),
        force_upcast=False,
    )


def load_vae(vae_dir_or_model, device="cpu"):
    """Load a VAE saved by :func:`train_vae` (or pass a loaded model through).

    Parameters
    ----------
    vae_dir_or_model : str, Path or diffusers.AutoencoderKL
        Directory written by :func:`train_vae`, or a model.
    device : str or torch.device

    Returns
    -------
    diffusers.AutoencoderKL
        In eval mode on ``device``.
    """
    from diffusers import AutoencoderKL

    if isinstance(vae_dir_or_model, AutoencoderKL):
        return vae_dir_or_model.to(_device(device)).eval()
    path = Path(vae_dir_or_model)
    if not (path / "config.json").exists():
        raise InputError(path, "a VAE directory written by train_vae (config.json + weights)",
                         "no config.json" if path.exists() else "no such directory")
    return AutoencoderKL.from_pretrained(str(path)).to(_device(device)).eval()


def train_vae(frames, out_dir, cfg, seed=0, device="cpu", log=print):
    """Train a small ``AutoencoderKL`` on every frame of the training clips.

    Loss: L1 reconstruction of a posterior sample plus ``kl_weight`` times the
    KL divergence to N(0, I). After training, ``scaling_factor`` is set to
    1 / std of the posterior means over all training frames, so scaled latents
    have unit variance for the diffusion model.

    Parameters
    ----------
    frames : uint8 ndarray (N, T, H, W, 3)
        Training clips; H and W divisible by 2 ** (len(block_out_channels) - 1).
    out_dir : str or Path
        Output directory (written atomically): ``save_pretrained`` files and
        ``losses.tsv`` (step, loss, rec, kl).
    cfg : dict
        Whole generator config or its ``vae`` section (see :func:`default_config`).
    seed : int
        Seeds the initial weights, the data order and the posterior samples.
    device : str or torch.device
    log : callable
        Receives progress lines.

    Returns
    -------
    list of dict
        One row per logged step: ``step``, ``loss``, ``rec``, ``kl``.
    """
    vcfg = _section(cfg, "vae")
    frames = _check_clips(frames)
    n, t, h, w, _ = frames.shape
    factor = 2 ** (len(vcfg["block_out_channels"]) - 1)
    if h % factor or w % factor:
        raise InputError("frames", f"H and W divisible by {factor}", f"{h}x{w}")
    device = _device(device)
    images = _to_unit(frames.reshape(n * t, h, w, 3))

    with _seeded(seed, device):
        vae = _build_vae(vcfg, h).to(device).train()
        history = _fit_vae(vae, images, vcfg, seed, device, log)

    vae.eval()
    with torch.inference_mode():
        lat = _encode_mean(vae, images, 32, device)
    std = float(lat.std())
    vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
    log(f"vae latent std {std:.4f} -> scaling_factor {1.0 / max(std, 1e-6):.4f}")
    with _atomic_dir(out_dir) as tmp:
        vae.to("cpu").save_pretrained(str(tmp), safe_serialization=True)
        _write_losses(tmp / "losses.tsv", history)
    return history


def _fit_vae(vae, images, vcfg, seed, device, log):
    """The VAE optimisation loop; returns the loss history."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=vcfg["lr"], weight_decay=vcfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(vcfg["steps"]))
    history, every, t0 = [], _log_every(vcfg["steps"]), time.perf_counter()
    for step, idx in enumerate(_batches(len(images), vcfg["batch_size"], vcfg["steps"], gen)):
        x = images[idx].to(device)
        post = vae.encode(x).latent_dist
        eps = torch.randn(post.mean.shape, generator=gen).to(device)
        rec = vae.decode(post.mean + post.std * eps).sample
        l_rec = F.l1_loss(rec, x) + vcfg["mse_weight"] * F.mse_loss(rec, x)
        l_kl = post.kl().mean() / post.mean[0].numel()
        loss = l_rec + vcfg["kl_weight"] * l_kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append({"step": step, "loss": loss.item(), "rec": l_rec.item(), "kl": l_kl.item()})
        if step % every == 0 or step == vcfg["steps"] - 1:
            log(f"vae step {step + 1}/{vcfg['steps']} loss {loss.item():.4f} "
                f"({time.perf_counter() - t0:.1f} s)")
    return history


def _encode_mean(vae, images, batch_size, device):
    """Posterior means (unscaled) of float images (N, 3, H, W), batch by batch."""
    out = []
    for i in range(0, len(images), batch_size):
        out.append(vae.encode(images[i:i + batch_size].to(device)).latent_dist.mean.float().cpu())
    return torch.cat(out)


def encode_latents(vae_dir_or_model, images, batch_size=16, device="cpu"):
    """Encode images to scaled VAE latents (posterior mean * scaling_factor).

    Parameters
    ----------
    vae_dir_or_model : str, Path or diffusers.AutoencoderKL
        Directory written by :func:`train_vae`, or a loaded model.
    images : uint8 ndarray (N, H, W, 3)
    batch_size : int
        Images per encoder call.
    device : str or torch.device

    Returns
    -------
    float32 ndarray (N, C, h, w)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError("images", "uint8 images (N, H, W, 3)", f"{images.dtype} {images.shape}")
    device = _device(device)
    vae = load_vae(vae_dir_or_model, device)
    with torch.inference_mode():
        lat = _encode_mean(vae, _to_unit(images), int(batch_size), device)
    return (lat * vae.config.scaling_factor).numpy().astype(np.float32)


def _clip_latents(vae, frames, device, batch_size=32):
    """uint8 clips (N, T, H, W, 3) -> scaled latents (N, C, T, h, w) float32 tensor."""
    n, t, h, w, _ = frames.shape
    with torch.no_grad():  # not inference_mode: the latents feed training
        lat = _encode_mean(vae, _to_unit(frames.reshape(n * t, h, w, 3)), batch_size, device)
    lat = lat * vae.config.scaling_factor
    c, lh, lw = lat.shape[1:]
    return lat.reshape(n, t, c, lh, lw).permute(0, 2, 1, 3, 4).contiguous()


# --------------------------------------------------------------------------- UNet

def _build_unet(ucfg, in_channels, sample_size, cross_dim):
    """UNet3DConditionModel from the ``unet`` config section."""
    from diffusers import UNet3DConditionModel

    n = len(ucfg["block_out_channels"])
    attn = [bool(a) for a in ucfg["cross_attn"]]
    if len(attn) != n:
        raise ConfigError(f"unet.cross_attn: expected {n} booleans (one per level); found {attn}")
    down = tuple("CrossAttnDownBlock3D" if a else "DownBlock3D" for a in attn)
    up = tuple("CrossAttnUpBlock3D" if b == "CrossAttnDownBlock3D" else "UpBlock3D"
               for b in reversed(down))
    return UNet3DConditionModel(
        sample_size=int(sample_size),
        in_channels=int(in_channels), out_channels=int(in_channels),
        down_block_types=down, up_block_types=up,
        block_out_channels=tuple(ucfg["block_out_channels"]),
        layers_per_block=int(ucfg["layers_per_block"]),
        norm_num_groups=int(ucfg["norm_num_groups"]),
        cross_attention_dim=int(cross_dim),
        attention_head_dim=int(ucfg["attention_head_dim"]),
        time_cond_proj_dim=int(cross_dim) if ucfg["cond_to_time"] else None,
    )


def _cond_stats(cond, standardize):
    """Train-set centring and global scale of the conditions (identity when off)."""
    if not standardize:
        return np.zeros(cond.shape[1], np.float32), 1.0
    mean = cond.mean(0)
    scale = float(np.sqrt(((cond - mean) ** 2).mean()))
    return mean.astype(np.float32), (1.0 / scale if scale > 1e-6 else 1.0)


def _prep_cond(cond, meta):
    """Raw conditions (B, D) -> network conditions (centred, unit average variance)."""
    mean = torch.tensor(meta["cond_mean"], dtype=torch.float32)
    return (cond - mean) * float(meta["cond_scale"])


def _unet_call(unet, x, t, c):
    """UNet forward with the condition as a length-1 sequence (and time condition if built so)."""
    tc = c if unet.config.time_cond_proj_dim is not None else None
    return unet(x, t, encoder_hidden_states=c[:, None, :], timestep_cond=tc).sample


def _ddpm(ucfg):
    from diffusers import DDPMScheduler

    if ucfg["prediction_type"] not in ("epsilon", "v_prediction"):
        raise ConfigError(f"unet.prediction_type: expected 'epsilon' or 'v_prediction'; "
                          f"found {ucfg['prediction_type']!r}")
    return DDPMScheduler(num_train_timesteps=int(ucfg["num_train_timesteps"]),
                         beta_schedule=ucfg["beta_schedule"], beta_start=float(ucfg["beta_start"]),
                         beta_end=float(ucfg["beta_end"]),
                         prediction_type=ucfg["prediction_type"], clip_sample=False)


def _ddim_from(ddpm):
    from diffusers import DDIMScheduler

    cfg = ddpm.config
    return DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                         beta_schedule=cfg.beta_schedule, beta_start=cfg.beta_start,
                         beta_end=cfg.beta_end, prediction_type=cfg.prediction_type, clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, timestep_spacing="trailing")


def load_unet(unet_dir, device="cpu"):
    """Load the UNet, DDIM scheduler and clip metadata written by :func:`train_unet`.

    Parameters
    ----------
    unet_dir : str or Path
        Directory written by :func:`train_unet` (``unet/``, ``scheduler/``, ``clip.json``).
    device : str or torch.device

    Returns
    -------
    unet : diffusers.UNet3DConditionModel
        In eval mode on ``device``.
    scheduler : diffusers.DDIMScheduler
    meta : dict
        ``num_frames``, ``height``, ``width``, ``latent_height``, ``latent_width``,
        ``cond_dim``, ``cond_mean`` (D floats), ``cond_scale``.
    """
    from diffusers import DDIMScheduler, UNet3DConditionModel

    path = Path(unet_dir)
    for part in ("unet/config.json", "scheduler/scheduler_config.json", _META):
        if not (path / part).exists():
            raise InputError(path, f"a directory written by train_unet (with {part})",
                             f"no {part}" if path.exists() else "no such directory")
    unet = UNet3DConditionModel.from_pretrained(str(path / "unet")).to(_device(device)).eval()
    sched = DDIMScheduler.from_pretrained(str(path / "scheduler"))
    meta = json.loads((path / _META).read_text())
    return unet, sched, meta


def train_unet(frames, cond, vae_dir, out_dir, cfg, seed=0, device="cpu", log=print):
    """Train a small text-conditioned ``UNet3DConditionModel`` on VAE latents.

    Every clip is encoded once (posterior mean * scaling_factor). The UNet is
    trained with the DDPM loss (target ``prediction_type``: v or epsilon) at
    uniformly drawn timesteps. The condition, centred and scaled with the
    training statistics, is given as a cross-attention sequence of length 1
    (and to the time embedding when ``cond_to_time``); with probability
    ``cond_dropout`` it is replaced by zeros (for classifier-free guidance).

    Parameters
    ----------
    frames : uint8 ndarray (N, T, H, W, 3)
        Training clips.
    cond : float32 ndarray (N, D)
        Caption embeddings of the same clips.
    vae_dir : str or Path
        Directory written by :func:`train_vae`.
    out_dir : str or Path
        Output directory (written atomically): ``unet/``, ``scheduler/``
        (DDIMScheduler config), ``clip.json`` and ``losses.tsv``.
    cfg : dict
        Whole generator config or its ``unet`` section.
    seed : int
        Seeds the initial weights, the data order, timesteps, noise and dropout.
    device : str or torch.device
    log : callable

    Returns
    -------
    list of dict
        One row per step: ``step``, ``loss``.
    """
    ucfg = _section(cfg, "unet")
    frames = _check_clips(frames)
    cond_np = _check_cond(cond, len(frames))
    cmean, cscale = _cond_stats(cond_np, ucfg["cond_standardize"])
    meta = {"num_frames": int(frames.shape[1]), "height": int(frames.shape[2]),
            "width": int(frames.shape[3]), "cond_dim": int(cond_np.shape[1]),
            "cond_mean": [float(v) for v in cmean], "cond_scale": cscale}
    cond = _prep_cond(torch.from_numpy(cond_np), meta)
    device = _device(device)
    vae = load_vae(vae_dir, device)
    lat = _clip_latents(vae, frames, device)
    del vae
    n, c, t, lh, lw = lat.shape
    factor = 2 ** (len(ucfg["block_out_channels"]) - 1)
    if lh % factor or lw % factor:
        raise InputError("frames", f"latent size divisible by {factor}", f"{lh}x{lw}")
    meta.update(latent_height=int(lh), latent_width=int(lw))

    ddpm = _ddpm(ucfg)
    with _seeded(seed, device):
        unet = _build_unet(ucfg, c, lh, cond.shape[1]).to(device).train()
        history = _fit_unet(unet, ddpm, lat, cond, ucfg, seed, device, log)

    with _atomic_dir(out_dir) as tmp:
        unet.to("cpu").eval().save_pretrained(str(tmp / "unet"), safe_serialization=True)
        _ddim_from(ddpm).save_pretrained(str(tmp / "scheduler"))
        _write_losses(tmp / "losses.tsv", history)
        (tmp / _META).write_text(json.dumps(meta, indent=1) + "\n")
    return history


def _fit_unet(unet, ddpm, lat, cond, ucfg, seed, device, log):
    """The UNet optimisation loop on latents (N, C, T, h, w); returns the loss history."""
    acp = ddpm.alphas_cumprod.float()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=ucfg["lr"], weight_decay=ucfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(ucfg["steps"]))
    history, every, t0 = [], _log_every(ucfg["steps"]), time.perf_counter()
    for step, idx in enumerate(_batches(len(lat), ucfg["batch_size"], ucfg["steps"], gen)):
        x0, b = lat[idx], len(idx)
        noise = torch.randn(x0.shape, generator=gen)
        ts = torch.randint(0, ddpm.config.num_train_timesteps, (b,), generator=gen)
        keep = (torch.rand(b, generator=gen) >= ucfg["cond_dropout"]).float()[:, None]
        a = acp[ts].view(b, 1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        if ucfg["prediction_type"] == "epsilon":
            target = noise
        else:
            target = a.sqrt() * noise - (1 - a).sqrt() * x0
        pred = _unet_call(unet, xt.to(device), ts.to(device), (cond[idx] * keep).to(device))
        loss = F.mse_loss(pred.float(), target.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append({"step": step, "loss": loss.item()})
        if step % every == 0 or step == ucfg["steps"] - 1:
            log(f"unet step {step + 1}/{ucfg['steps']} loss {loss.item():.4f} "
                f"({time.perf_counter() - t0:.1f} s)")
    return history


# --------------------------------------------------------------------------- sampling

def _denoise(unet, sched, x, cond, uncond, scfg, gens, device):
    """Run DDIM on a batch of latent clips x (B, C, T, h, w)."""
    g = float(scfg["guidance_scale"])
    eta = float(scfg["eta"])
    use_cfg = g != 1.0
    c = (torch.cat([uncond, cond]) if use_cfg else cond).to(device)
    for t in sched.timesteps:
        inp = torch.cat([x, x]) if use_cfg else x
        eps = _unet_call(unet, inp.to(device), t.to(device), c).float()
        if use_cfg:
            e_u, e_c = eps.chunk(2)
            eps = e_u + g * (e_c - e_u)
        var = None
        if eta > 0:
            var = torch.cat([torch.randn((1,) + x.shape[1:], generator=gi) for gi in gens]).to(device)
        x = sched.step(eps, t, x.to(device), eta=eta, variance_noise=var).prev_sample.float()
    return x


def _decode_clips(vae, lat, slice_size, device):
    """Scaled latents (B, C, T, h, w) -> uint8 (B, T, H, W, 3), clip by clip in frame slices."""
    out = []
    for clip in lat:
        z = clip.permute(1, 0, 2, 3) / vae.config.scaling_factor
        frames = [vae.decode(z[i:i + slice_size].to(device)).sample.float()
                  for i in range(0, len(z), slice_size)]
        out.append(_to_uint8(torch.cat(frames)))
    return np.stack(out)


def generate(vae_dir, unet_dir, cond, seeds, cfg, negative_cond=None, device="cpu", log=print):
    """Generate one clip per condition with DDIM and classifier-free guidance.

    The initial noise (and the DDIM noise when ``eta > 0``) of clip ``i``
    comes from its own ``torch.Generator`` seeded with ``seeds[i]``. On CPU
    the UNet is called one clip at a time (CPU kernels round differently for
    different numbers of rows), so a clip is bit-identical whatever the batch
    size or the other clips; on CUDA batches of ``batch_size`` clips run
    together under fp16 autocast (no bit-identity promised there). The VAE
    decodes each clip separately in slices of ``decode_slice`` frames.

    Parameters
    ----------
    vae_dir : str or Path
        Directory written by :func:`train_vae`.
    unet_dir : str or Path
        Directory written by :func:`train_unet`.
    cond : float32 ndarray (M, D)
        Conditions (e.g. caption embeddings decoded from fMRI).
    seeds : sequence of M ints
    cfg : dict
        Whole generator config or its ``sample`` section.
    negative_cond : float32 ndarray (M, D), optional
        Raw condition of the unconditional branch of guidance (centred and
        scaled like ``cond``). By default the branch uses the null condition
        the UNet was trained with (zeros after centring).
    device : str or torch.device
        On CUDA the UNet and VAE run under fp16 autocast.
    log : callable

    Returns
    -------
    uint8 ndarray (M, T, H, W, 3)
    """
    scfg = _section(cfg, "sample")
    device = _device(device)
    unet, sched, meta = load_unet(unet_dir, device)
    vae = load_vae(vae_dir, device)
    cond_np = np.asarray(cond, dtype=np.float32)
    m = len(cond_np) if cond_np.ndim else 0
    cond_np = _check_cond(cond_np, m)
    if m == 0:
        raise InputError("cond", "at least one condition", "0 rows")
    if cond_np.shape[1] != meta["cond_dim"]:
        raise InputError("cond", f"embeddings of dimension {meta['cond_dim']}",
                         f"dimension {cond_np.shape[1]}")
    seeds = [int(s) for s in seeds]
    if len(seeds) != m:
        raise InputError("seeds", f"{m} seeds (one per condition)", f"{len(seeds)}")
    cond = _prep_cond(torch.from_numpy(cond_np), meta)
    if negative_cond is None:
        neg = torch.zeros_like(cond)
    else:
        neg_np = _check_cond(negative_cond, m, "negative_cond")
        if neg_np.shape != cond_np.shape:
            raise InputError("negative_cond", f"shape {cond_np.shape}", f"{neg_np.shape}")
        neg = _prep_cond(torch.from_numpy(neg_np), meta)
    sched.set_timesteps(int(scfg["steps"]))
    shape = (1, unet.config.in_channels, meta["num_frames"], meta["latent_height"],
             meta["latent_width"])
    bs = max(1, int(scfg["batch_size"]))
    out, t0 = [], time.perf_counter()
    amp = torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda")
    with torch.inference_mode(), amp:
        for i in range(0, m, bs):
            sl = slice(i, min(m, i + bs))
            gens = [torch.Generator().manual_seed(s) for s in seeds[sl]]
            x = torch.cat([torch.randn(shape, generator=gi) for gi in gens]) * sched.init_noise_sigma
            if device.type == "cuda":
                x = _denoise(unet, sched, x, cond[sl], neg[sl], scfg, gens, device)
            else:
                # one clip per UNet call: CPU kernels differ with the number of rows, so this
                # is what makes a clip bit-identical whatever the batch size or composition
                x = torch.cat([
                    _denoise(unet, sched, x[j:j + 1], cond[sl][j:j + 1], neg[sl][j:j + 1],
                             scfg, gens[j:j + 1], device) for j in range(len(gens))])
            out.append(_decode_clips(vae, x, int(scfg["decode_slice"]), device))
            log(f"generated {sl.stop}/{m} clips ({time.perf_counter() - t0:.1f} s)")
    return np.concatenate(out)
