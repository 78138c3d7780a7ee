"""Optional fine-tuning of the video generator on training pairs (GLFA style, or LoRA).

Three backends, told apart by the pipeline's denoiser (:func:`unet_backend`):

``text_to_video``
    A ``TextToVideoSDPipeline`` (ModelScope, seed 002's GLFA generator) with a ``UNet3DConditionModel``.
``animatediff``
    An ``AnimateDiffPipeline`` (:mod:`fmrivid.generate.animatediff`, methods ``animatediff`` / ``neuroclips``):
    the Stable Diffusion 1.5 UNet whose blocks interleave the temporal ``motion_modules`` of a ``MotionAdapter``
    (a ``UNetMotionModel``). Its latents are per-frame SD VAE latents, exactly ``features/vae_frames.h5`` of
    ``features.vae_model '<model>#vae'``; the UNet folds frames into the batch, so each clip's condition is
    repeated over its frames (row ``b*T + f``), as in sampling.
``wan``
    A ``WanPipeline`` (:mod:`fmrivid.generate.wan`, method ``wan``): the ``WanTransformer3DModel`` is trained
    by flow matching (below) on normalised latents of Wan's causal 3-D VAE, which the stage encodes from the
    training clips' frames (:func:`fmrivid.generate.wan.training_latents`: ``features/vae_frames.h5`` holds 2-D
    VAE latents), conditioned on the caption token features zero-padded to ``max_sequence_length`` rows as
    generation pads decoded ones (:func:`fmrivid.generate.wan.training_tokens`). No seed fine-tunes Wan;
    LoRA on its attention projections is the usual way to adapt it (diffusers' ``WanLoraLoaderMixin``).

GLFA fine-tunes only the self-attention, cross-attention and temporal
convolution layers of the pretrained video UNet, so that the generator keeps
what it knows while learning to follow fMRI-derived conditions. Mode
``attention_temporal`` does that: parameters whose names contain one of
``trainable`` as a dotted component are trained, everything else is frozen
(bit-unchanged). ``trainable: auto`` takes the backend's parts
(:data:`TRAINABLE_DEFAULTS`):

* ModelScope: ``attn1`` (spatial and temporal self-attention), ``attn2``
  (cross-attention), ``temp_convs`` (temporal convolutions) - GLFA's choice;
* Wan: ``attn1`` (self-attention over all space-time patches: Wan has no separate temporal layers) and
  ``attn2`` (cross-attention to the text tokens);
* AnimateDiff: ``motion_modules`` (the whole temporal transformers of the
  motion adapter: their two temporal self-attentions ``attn1`` / ``attn2``,
  feed-forward, norms and projections - AnimateDiff's temporal layers, what
  GLFA's temporal convolutions + temporal attention are to ModelScope) and
  ``attn2`` (the spatial cross-attention to the text condition, which the
  fMRI-derived tokens drive). The spatial self-attention (``attn1``) and the
  rest of the Stable Diffusion UNet stay frozen: the image prior is kept.
  Note that in a ``UNetMotionModel`` ``attn1`` / ``attn2`` also name the two
  (self-)attentions inside each motion module, so a part ``attn2`` alone
  trains the cross-attention AND the motion modules' second attention.

A part that matches no parameter of the UNet raises ConfigError (e.g.
``temp_convs`` with AnimateDiff). Mode ``lora`` adds peft LoRA adapters of rank
``lora_rank`` to the attention projections ``lora_targets`` instead (base
weights frozen; with AnimateDiff the defaults adapt the spatial self- and
cross-attention and the motion modules' attention) and merges them into the
weights at the end.

Training data are the *training* clips only: their scaled VAE latents (from
the generator's own VAE) and their conditions (e.g. the caption token
embeddings, or token embeddings decoded from the training fMRI). The loss is
the DDPM loss with the pipeline scheduler's target (epsilon or v; the
betas and prediction type of ``noise_scheduler`` when given - AnimateDiff: the
sampler's configured ``beta_schedule``, linear by default, its motion modules'
training schedule); with
probability ``cond_dropout`` a condition is replaced by the mean training
condition, the null condition used at sampling time (for a linear decoder it
equals the embedding decoded from the mean training fMRI). Wan (a flow-matching
model, ``flow_prediction``) trains on the rectified-flow loss instead: ``x_t =
(1 - s) x_0 + s e`` at a noise level ``s = shift u / (1 + (shift - 1) u)``, ``u``
uniform in (0, 1) and ``shift`` the sampler's ``flow_shift`` (the sigma shift of
its sampling schedule), timestep ``s * num_train_timesteps``, target the
velocity ``e - x_0`` (what ``WanPipeline``'s flow sampler integrates).

The loop is :func:`fmrivid.decoders.train.fit`: seeded per-step batches and
noise, safetensors checkpoints of the trainable tensors (and optimizer) every
``checkpoint_every`` steps in ``ckpt_dir``, resume after a kill. The result is a
whole pipeline written with ``save_pretrained`` (atomically), which
``fmrivid.models.load(out_dir, "text_to_video")`` (ModelScope) or
``fmrivid.generate.animatediff.load(out_dir)`` (AnimateDiff; its
``motion_adapter`` folder is rewritten from the tuned motion modules) or
``fmrivid.generate.wan.load(out_dir)`` (Wan; saved without its text encoder,
which generation does not run) loads as any generator spec.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from fmrivid.decoders.train import TRAIN_DEFAULTS, fit, write_losses
from fmrivid.errors import ConfigError, InputError

__all__ = ["FINETUNE_DEFAULTS", "TRAINABLE_DEFAULTS", "finetune", "finetune_settings", "trainable_parameter_names",
           "unet_backend"]

#: ``trainable: auto`` of mode attention_temporal, per backend (:func:`unet_backend`).
TRAINABLE_DEFAULTS = {
    "text_to_video": ["attn1", "attn2", "temp_convs"],  # GLFA: self-attention (spatial + temporal), cross-, temp. convs
    "animatediff": ["motion_modules", "attn2"],  # the motion modules (temporal layers) + spatial cross-attention
    "wan": ["attn1", "attn2"],  # space-time self-attention + cross-attention (Wan has no separate temporal layers)
}

#: Config section ``generate.finetune`` keys (the lead copies them into the schema).
FINETUNE_DEFAULTS = {
    "mode": "attention_temporal",              # 'attention_temporal' (GLFA: self-/cross-attention + temporal convs) or 'lora' (peft)
    "trainable": "auto",                       # attention_temporal: parameter-name parts that are trained; 'auto': the backend's (TRAINABLE_DEFAULTS)
    "lora_rank": 8,                            # lora: adapter rank
    "lora_alpha": 8,                           # lora: adapter scale numerator (scale = alpha / rank)
    "lora_targets": ["to_q", "to_k", "to_v", "to_out.0"],  # lora: attention projections that get adapters
    "cond_dropout": 0.1,                       # probability of replacing a condition by the mean training condition
    "mixed_precision": "auto",                 # 'auto' (bfloat16 autocast on CUDA, off on CPU), 'bf16', 'fp16' or 'no'
    "gradient_checkpointing": False,           # recompute UNet activations in backward (real-size UNets on one GPU)
    "cotrain": False,                          # GLFA stage 2 (seed 002 Eq. 6): co-train the UNet with the subjects' GLFA alignment and an fMRI-to-condition head on L_denoise + glfa_weight * L_GLFA (fmrivid.generate.cotrain; needs the flat maps of decode.neural 'align'); generation variants then read 'tokens: cotrain'
    "glfa_weight": 1.0,                        # cotrain: weight of L_GLFA (Eq. 3) next to L_denoise
    "head_rank": 64,                           # cotrain: rank of the linear bottleneck from the aligned flat map to the condition tokens
    "head_lr": 1e-3,                           # cotrain: peak learning rate of the GLFA modules and the head (the UNet's is lr: it starts pretrained, they start at the identity / the mean tokens)
    **TRAIN_DEFAULTS,                          # steps, batch_size, lr, weight_decay, grad_clip, checkpoint_every
}
FINETUNE_DEFAULTS.update({"steps": 500, "batch_size": 2, "lr": 1e-5, "weight_decay": 0.0})

_MODES = ("attention_temporal", "lora")


def finetune_settings(cfg=None, backend="text_to_video"):
    """``cfg`` merged over :data:`FINETUNE_DEFAULTS`, validated (unknown keys raise ConfigError).

    ``trainable: auto`` becomes ``TRAINABLE_DEFAULTS[backend]`` (``backend``: ``text_to_video``,
    ``animatediff`` or ``wan``, see :func:`unet_backend`).
    """
    if backend not in TRAINABLE_DEFAULTS:
        raise ConfigError(f"generate.finetune: expected a generator backend among {list(TRAINABLE_DEFAULTS)}; "
                          f"found {backend!r}")
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(FINETUNE_DEFAULTS))
    if unknown:
        raise ConfigError(f"generate.finetune: unknown key(s) {unknown}; expected some of "
                          f"{sorted(FINETUNE_DEFAULTS)}")
    out = dict(FINETUNE_DEFAULTS)
    out.update(cfg)
    if out["mode"] not in _MODES:
        raise ConfigError(f"generate.finetune.mode: expected one of {list(_MODES)}; found {out['mode']!r}")
    if out["mixed_precision"] not in ("auto", "bf16", "fp16", "no"):
        raise ConfigError(f"generate.finetune.mixed_precision: expected 'auto', 'bf16', 'fp16' or 'no'; "
                          f"found {out['mixed_precision']!r}")
    if not 0.0 <= float(out["cond_dropout"]) < 1.0:
        raise ConfigError(f"generate.finetune.cond_dropout: expected a probability in [0, 1); "
                          f"found {out['cond_dropout']!r}")
    if out["cotrain"] and out["mode"] != "attention_temporal":
        raise ConfigError(f"generate.finetune.cotrain: expected mode 'attention_temporal' (GLFA's co-training "
                          f"fine-tunes the UNet's attention and temporal convolutions); found {out['mode']!r}")
    if int(out["head_rank"]) < 1 or float(out["glfa_weight"]) < 0:
        raise ConfigError(f"generate.finetune.head_rank / glfa_weight: expected a rank >= 1 and a weight >= 0; "
                          f"found {out['head_rank']!r} / {out['glfa_weight']!r}")
    if out["trainable"] == "auto":
        out["trainable"] = list(TRAINABLE_DEFAULTS[backend])
    elif isinstance(out["trainable"], str) or not all(isinstance(p, str) and p for p in out["trainable"]):
        raise ConfigError(f"generate.finetune.trainable: expected 'auto' or a list of parameter-name parts; "
                          f"found {out['trainable']!r}")
    out["trainable"] = list(out["trainable"])
    if out["mode"] == "attention_temporal" and not out["trainable"]:
        raise ConfigError("generate.finetune.trainable: expected at least one parameter-name part")
    return out


def unet_backend(unet):
    """``"animatediff"`` for a ``UNetMotionModel`` (AnimateDiff), ``"wan"`` for a ``WanTransformer3DModel``, else
    ``"text_to_video"`` (a UNet3D)."""
    from diffusers.models import UNetMotionModel, WanTransformer3DModel

    if isinstance(unet, WanTransformer3DModel):
        return "wan"
    return "animatediff" if isinstance(unet, UNetMotionModel) else "text_to_video"


def _denoiser(pipe):
    """The network fine-tuning trains: the pipeline's transformer (Wan) or UNet."""
    transformer = getattr(pipe, "transformer", None)
    return transformer if transformer is not None else pipe.unet


def _set_denoiser(pipe, net):
    if getattr(pipe, "transformer", None) is not None:
        pipe.transformer = net
    else:
        pipe.unet = net


def trainable_parameter_names(unet, parts):
    """Names of the UNet parameters containing one of ``parts`` as a dotted component.

    Parameters
    ----------
    unet : torch.nn.Module
    parts : list of str
        e.g. ``["attn1", "attn2", "temp_convs"]``.

    Returns
    -------
    list of str
    """
    names = []
    for name, _ in unet.named_parameters():
        dotted = f".{name}."
        if any(f".{part}." in dotted for part in parts):
            names.append(name)
    return names


class _TrainableView:
    """What :func:`fit` needs of a model, restricted to the trainable tensors of a UNet.

    Checkpoints then hold the trained tensors only (a few MB for LoRA instead
    of the whole 1.4B-parameter UNet).
    """

    def __init__(self, unet, names):
        self.unet = unet
        self.names = list(names)

    def _params(self):
        params = dict(self.unet.named_parameters())
        return {n: params[n] for n in self.names}

    def state_dict(self):
        return {n: p.detach() for n, p in self._params().items()}

    def load_state_dict(self, state):
        import torch

        with torch.no_grad():
            for n, p in self._params().items():
                p.copy_(state[n].to(p.device, p.dtype))

    def parameters(self):
        return list(self._params().values())

    def train(self, mode=True):
        self.unet.train(mode)
        return self

    def eval(self):
        return self.train(False)


def _add_lora(unet, fcfg):
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:  # pragma: no cover - peft is pinned in the envs
        raise ConfigError("generate.finetune.mode 'lora' needs peft (pinned in pyproject.toml); "
                          "it is not installed") from None
    config = LoraConfig(r=int(fcfg["lora_rank"]), lora_alpha=float(fcfg["lora_alpha"]),
                        target_modules=list(fcfg["lora_targets"]), init_lora_weights="gaussian")
    unet = inject_adapter_in_model(config, unet)
    names = [n for n, _ in unet.named_parameters() if ".lora_" in n]
    if not names:
        raise ConfigError(f"generate.finetune.lora_targets {fcfg['lora_targets']} match no module of the UNet")
    return unet, names


def _merge_lora(unet):
    from diffusers.utils import recurse_remove_peft_layers
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in unet.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    recurse_remove_peft_layers(unet)
    return unet


def _check_data(train_latents, train_cond, unet, backend="text_to_video"):
    lat = np.asarray(train_latents, dtype=np.float32)
    cond = np.asarray(train_cond, dtype=np.float32)
    c = int(unet.config.in_channels)
    dim = int(unet.config.text_dim if backend == "wan" else unet.config.cross_attention_dim)
    if lat.ndim != 5 or lat.shape[2] != c or len(lat) < 1:
        raise InputError("train_latents", f"(N, T, {c}, h, w) scaled VAE latents of the training clips",
                         f"shape {lat.shape}")
    if cond.ndim != 3 or cond.shape[0] != lat.shape[0] or cond.shape[2] != dim:
        raise InputError("train_cond", f"({lat.shape[0]}, L, {dim}) token embeddings, one per training clip",
                         f"shape {cond.shape}")
    longest = getattr(unet.config, "motion_max_seq_length", None) if backend == "animatediff" else None
    if longest is not None and lat.shape[1] > int(longest):
        raise InputError("train_latents", f"at most {longest} frames per clip (the motion modules' "
                         f"motion_max_seq_length)", f"{lat.shape[1]} frames")
    for name, arr in (("train_latents", lat), ("train_cond", cond)):
        if not np.all(np.isfinite(arr)):
            raise InputError(name, "finite values", "NaN or inf")
    return np.ascontiguousarray(lat.transpose(0, 2, 1, 3, 4)), cond


def _quiet_fp32_notice():
    """Silence diffusers' notices about an EMPTY list of float32 modules (UNetMotionModel casts / saves) and about
    the absent components of a pipeline saved without them (Wan's text encoder and tokenizer)."""
    from fmrivid.generate.animatediff import _EMPTY_FP32_NOTICE, _quiet

    return _quiet(rf"{_EMPTY_FP32_NOTICE}|=None of type <class 'NoneType'> cannot be saved")


@contextlib.contextmanager
def _atomic_dir(path):
    """Build a directory under a temporary name; on success it replaces ``path`` whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    os.replace(tmp, path)


def _autocast(fcfg, device):
    import torch

    mode = fcfg["mixed_precision"]
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "no"
    if mode == "no":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def finetune(pipe, train_latents, train_cond, cfg, out_dir, seed=0, device="cpu", log=print, ckpt_dir=None,
             noise_scheduler=None):
    """Fine-tune the generator's UNet on training pairs; write the tuned pipeline.

    Parameters
    ----------
    pipe : fmrivid.models.LoadedModel, diffusers.TextToVideoSDPipeline, AnimateDiffPipeline or WanPipeline
        Loaded in float32 (``models.load(spec, "text_to_video")``,
        :func:`fmrivid.generate.animatediff.load` or :func:`fmrivid.generate.wan.load`); its UNet (Wan: its
        transformer) is trained in place. The backend (:func:`unet_backend`) follows from it.
    train_latents : float32 ndarray (N, T, C, h, w)
        Scaled VAE latents of the TRAINING clips (``features/vae_frames.h5``
        rows of the train split, computed with this pipeline's VAE; AnimateDiff:
        T at most the motion modules' ``motion_max_seq_length``; Wan: the
        normalised latent frames of :func:`fmrivid.generate.wan.training_latents`).
    train_cond : float32 ndarray (N, L, D)
        Conditions of the same clips.
    cfg : dict
        :data:`FINETUNE_DEFAULTS` keys.
    out_dir : str or Path
        Written atomically: the whole pipeline (``save_pretrained``, safetensors),
        ``losses.tsv`` and ``finetune.json`` (mode, trained tensors, counts).
    seed : int
        Seeds batches, timesteps, noise, condition dropout and LoRA init.
    device : str
    log : callable
    ckpt_dir : str or Path, optional
        Checkpoints for resume (default: ``<out_dir>.ckpt`` next to ``out_dir``).
    noise_scheduler : diffusers scheduler, optional
        Whose config (betas, ``num_train_timesteps``, ``prediction_type``) defines the
        training noise and target (default: the pipeline's scheduler). AnimateDiff:
        :func:`fmrivid.generate.animatediff.scheduler` of the generation settings, so
        training and sampling share the betas. Wan: a flow scheduler; its
        ``num_train_timesteps`` and ``flow_shift`` are used.

    Returns
    -------
    list of dict
        The loss history (``step``, ``loss``).
    """
    import torch
    import torch.nn.functional as F

    from fmrivid.generate.pipelines import _pipe

    pipe = getattr(pipe, "model", pipe)
    pipe = pipe if getattr(pipe, "transformer", None) is not None else _pipe(pipe)
    unet = _denoiser(pipe)
    backend = unet_backend(unet)
    fcfg = finetune_settings(cfg, backend)
    device = torch.device(device)
    lat, cond = _check_data(train_latents, train_cond, unet, backend)
    for name in ("unet", "transformer", "vae", "text_encoder"):
        part = getattr(pipe, name, None)
        if part is not None and (next(part.parameters()).dtype != torch.float32
                                 or next(part.parameters()).device.type != device.type):
            with _quiet_fp32_notice():
                part.to(device=device, dtype=torch.float32)
    unet.requires_grad_(False)
    if fcfg["mode"] == "lora":
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            unet, names = _add_lora(unet, fcfg)
        unet.to(device)
        _set_denoiser(pipe, unet)
    else:
        names = trainable_parameter_names(unet, fcfg["trainable"])
        if not names:
            raise ConfigError(f"generate.finetune.trainable {fcfg['trainable']} match no UNet parameter")
        unmatched = [part for part in fcfg["trainable"] if not trainable_parameter_names(unet, [part])]
        if unmatched:
            raise ConfigError(f"generate.finetune.trainable: expected parts that name parameters of the "
                              f"{type(unet).__name__} ({backend}; 'auto': {TRAINABLE_DEFAULTS[backend]}); "
                              f"found {unmatched}, which match none")
    params = dict(unet.named_parameters())
    for name in names:
        params[name].requires_grad_(True)
    n_train = sum(params[n].numel() for n in names)
    n_all = sum(p.numel() for p in unet.parameters())
    log(f"finetune[{backend}, {fcfg['mode']}]: {len(names)} tensors, {n_train:,} of {n_all:,} denoiser parameters "
        f"trainable ({100.0 * n_train / n_all:.2f}%); {len(lat)} training clips")
    if fcfg["gradient_checkpointing"] and hasattr(unet, "enable_gradient_checkpointing"):
        unet.enable_gradient_checkpointing()

    from diffusers import DDPMScheduler

    sched_cfg = (noise_scheduler or pipe.scheduler).config
    if backend == "wan":  # flow matching: the sampler's timestep range and sigma shift
        n_steps, acp = int(sched_cfg.get("num_train_timesteps", 1000)), None
        shift = float(sched_cfg.get("flow_shift", None) or sched_cfg.get("shift", None) or 1.0)
        target_type = "flow_prediction"
    else:
        noise_sched = DDPMScheduler.from_config(sched_cfg)
        acp = noise_sched.alphas_cumprod.to(device=device, dtype=torch.float32)
        n_steps = int(noise_sched.config.num_train_timesteps)
        target_type = noise_sched.config.prediction_type
        if target_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"finetune: scheduler prediction_type {target_type!r} is not supported "
                              f"(expected 'epsilon' or 'v_prediction')")
    null = torch.from_numpy(cond.mean(0)).to(device)
    p_drop = float(fcfg["cond_dropout"])
    autocast = _autocast(fcfg, device)

    def loss_fn(view, batch, gen):
        x0, c = batch["latents"], batch["cond"]
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=gen, device=gen.device).to(device)
        if backend == "wan":  # rectified flow: x_t on the line from x_0 to the noise, velocity target
            u = torch.rand(b, generator=gen, device=gen.device).to(device)
            sigma = shift * u / (1 + (shift - 1) * u)
            t = sigma * n_steps
        else:
            t = torch.randint(0, n_steps, (b,), generator=gen, device=gen.device).to(device)
        keep = (torch.rand(b, generator=gen, device=gen.device) >= p_drop).to(device)
        c = torch.where(keep[:, None, None], c, null[None])
        if backend == "animatediff":  # the motion UNet folds frames into the batch: one text row per frame
            c = c.repeat_interleave(x0.shape[2], dim=0)
        if backend == "wan":
            s = sigma.view(b, 1, 1, 1, 1)
            xt, target = (1 - s) * x0 + s * noise, noise - x0
        else:
            a = acp[t].view(b, 1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            target = noise if target_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        with autocast():
            pred = view.unet(xt, t, encoder_hidden_states=c, return_dict=False)[0]
        return {"loss": F.mse_loss(pred.float(), target)}

    out_dir = Path(out_dir)
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else out_dir.with_name(out_dir.name + ".ckpt")
    view = _TrainableView(unet, names)
    train_cfg = {k: fcfg[k] for k in TRAIN_DEFAULTS}
    history = fit(view, loss_fn, {"latents": lat, "cond": cond}, train_cfg, ckpt, seed=seed, device=device,
                  log=log, params=[params[n] for n in names])
    unet.eval()
    unet.requires_grad_(False)
    if fcfg["mode"] == "lora":
        unet = _merge_lora(unet)
        _set_denoiser(pipe, unet)
    if fcfg["gradient_checkpointing"] and hasattr(unet, "disable_gradient_checkpointing"):
        unet.disable_gradient_checkpointing()
    if backend == "animatediff":
        from fmrivid.generate.animatediff import sync_motion_adapter

        sync_motion_adapter(pipe)
    info = {"backend": backend, "mode": fcfg["mode"], "trained_tensors": names, "trained_parameters": int(n_train),
            "unet_parameters": int(n_all), "n_train_clips": int(len(lat)), "seed": int(seed),
            "config": fcfg}
    with _atomic_dir(out_dir) as tmp, _quiet_fp32_notice():
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        write_losses(tmp / "losses.tsv", history)
        (tmp / "finetune.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    log(f"finetune: wrote {out_dir} (final loss {history[-1]['loss']:.4f})")
    return history
