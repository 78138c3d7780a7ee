"""GLFA: global-local functional alignment of subjects' 2-D flat maps, and leave-one-subject-out decoding.

After anatomical alignment (every subject projected to the same surface and rasterised to the same
flat map, :mod:`fmrivid.preprocess.surface`), subjects still differ in where a function sits on the
map. GLFA (Li et al., ECCV 2024, seed 002, Sec. 3.5) learns, per subject, a map of its flat maps into
a common functional space:

* **Global alignment** (Eq. 1): the ``H x W`` map is cut into ``P`` square parcels of
  ``parcel_size x parcel_size`` pixels; each output parcel is a learned linear mix of the input
  parcels, pixel by pixel at the same position inside the parcel: ``F_parcel (p*p, P) @ W (P, P)``.
* **Local alignment** (Eq. 2): a locally connected 2-D layer, i.e. a ``kernel_size`` convolution
  with stride 1 whose weights are NOT shared: every pixel has its own kernel (and bias), so it can
  borrow from its own neighbours (``torch.nn.functional.unfold``).

Training (Eq. 3), on training clips only::

    L = 1/N_pairs * sum_{a<b} [ L_align(a, b) + lambda * (L_const(a) + L_const(b)) ]
    L_align(a, b) = || aligned_a - aligned_b ||^2     (same training clips, both subjects)
    L_const(a)    = || aligned_a - original_a ||^2     (the map keeps its own information)

with squared norms taken as means over the covered pixels (a constant rescaling of the paper's
Frobenius norms, so ``lambda`` keeps its meaning whatever the map size).

Choices the paper leaves open, and what this module does:

* **One module per subject, a reference subject as the common space.** The paper's losses need a
  subject-specific projection (a map shared by all subjects cannot undo subject-specific
  topography), so every subject gets its own module, except the reference (``target``) subject whose
  module is the identity: its flat-map space is the common space, as in pairwise cortical alignment
  to a reference (paper's ref. [7]). This also rules out the trivial solution in which every aligned
  map collapses to the same constant.
* **An unknown (held-out) subject** gets its module fitted afterwards, with the modules of the
  training subjects frozen, on the held-out subject's TRAINING clips only (its responses to clips the
  others also saw; no stimulus features). Its loss is Eq. 3 restricted to the pairs that contain it
  (the frozen subjects' consistency terms are constants and are dropped).
* Both modules start at the identity (``W = I``, centre tap 1, bias 0), so before training the
  aligned map is the original map.
* **Alignment on its own.** The paper adds L_GLFA to its video model's denoising loss (Eq. 6); here
  the alignment is fitted by Eq. 3 alone, so that it can be evaluated (fSC / ISC) and reused by any
  decoder, and the LOSO decoder is a ridge on the aligned maps (the LEA-style baseline of the
  paper's Table 2).

Evaluation (:func:`alignment_table`): fSC and ISC (:mod:`fmrivid.metrics.brain`, GLFA's definitions)
on the TEST clips, before (anatomical alignment only) and after GLFA, for every subject, plus the
pairwise fSC r(s_i, s_j) of the paper's Table 1.

Decoding (:func:`loso_decode`): a ridge decoder (:class:`fmrivid.decoders.ridge.RidgeCV`, alpha per
target by CV) is trained on the aligned training maps of every subject except the held-out one, then
decodes the held-out subject's aligned test maps. The same decoder on its unaligned maps and a
decoder trained with shuffled sample-feature pairs are the controls.

One module (~650 lines) on purpose: it follows the paper's Sec. 3.5 equation by equation (model, losses,
two-stage fit, leave-one-subject-out decoding), so that it can be read against the seed in one place.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from fmrivid.decoders import registry, train
from fmrivid.errors import ConfigError, InputError

__all__ = ["DEFAULTS", "GLFA", "config", "read_flatmaps", "fit_align", "load_align", "apply_align",
           "alignment_values", "alignment_table", "loso_decode"]

_FORMAT = "fmrivid.decoders.align.GLFA"

DEFAULTS = registry.defaults("align")  # settings and their descriptions: fmrivid/decoders/registry.py


def config(cfg=None):
    """``DEFAULTS`` updated with ``cfg`` (the ``decoders.align`` section); checks the values.

    Raises
    ------
    ConfigError
        Unknown key or a value out of range (the message names the key).
    """
    out = dict(DEFAULTS)
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"decoders.align: unknown keys {unknown}; expected keys among {sorted(DEFAULTS)}")
    out.update(cfg)
    for key in ("parcel_size", "kernel_size"):
        if not isinstance(out[key], (int, np.integer)) or int(out[key]) < 1:
            raise ConfigError(f"decoders.align.{key}: expected a positive integer; found {out[key]!r}")
    if int(out["kernel_size"]) % 2 != 1:
        raise ConfigError(f"decoders.align.kernel_size: expected an odd integer; found {out['kernel_size']!r}")
    if float(out["lambda_const"]) < 0:
        raise ConfigError(f"decoders.align.lambda_const: expected >= 0; found {out['lambda_const']!r}")
    if not out["ridge_alphas"] or any(float(a) <= 0 for a in out["ridge_alphas"]):
        raise ConfigError(f"decoders.align.ridge_alphas: expected positive numbers; found {out['ridge_alphas']!r}")
    train.train_config(out)  # checks steps / batch_size / checkpoint_every
    return out


class GLFA(torch.nn.Module):
    """One subject's global-local alignment of (N, H, W) flat maps.

    Parameters
    ----------
    height, width : int
        Flat-map size; both divisible by ``parcel_size``.
    parcel_size : int
        Side of the square parcels of the global alignment.
    kernel_size : int
        Side (odd) of the per-pixel kernels of the locally connected layer.
    mask : array_like of bool, shape (H, W), optional
        Covered pixels; outputs are zero elsewhere.
    """

    def __init__(self, height, width, parcel_size, kernel_size, mask=None):
        super().__init__()
        if height % parcel_size or width % parcel_size:
            raise ConfigError(f"decoders.align.parcel_size: expected a divisor of the flat-map size "
                              f"{height}x{width}; found {parcel_size}")
        self.height, self.width = int(height), int(width)
        self.parcel_size, self.kernel_size = int(parcel_size), int(kernel_size)
        self.grid = (self.height // self.parcel_size, self.width // self.parcel_size)
        n_parcels = self.grid[0] * self.grid[1]
        k2 = self.kernel_size ** 2
        self.global_weight = torch.nn.Parameter(torch.eye(n_parcels))            # W^parcel, Eq. 1
        local = torch.zeros(k2, self.height * self.width)
        local[k2 // 2] = 1.0                                                     # centre tap: identity
        self.local_weight = torch.nn.Parameter(local)                            # unshared kernels, Eq. 2
        self.local_bias = torch.nn.Parameter(torch.zeros(self.height * self.width))
        mask = np.ones((height, width), bool) if mask is None else np.asarray(mask, bool)
        self.register_buffer("mask", torch.as_tensor(mask.astype(np.float32)))

    def global_align(self, x):
        """Eq. 1: parcel-by-parcel linear map; (B, H, W) -> (B, H, W)."""
        b, p = x.shape[0], self.parcel_size
        gh, gw = self.grid
        parcels = x.reshape(b, gh, p, gw, p).permute(0, 2, 4, 1, 3).reshape(b, p * p, gh * gw)
        mixed = parcels @ self.global_weight
        return mixed.reshape(b, p, p, gh, gw).permute(0, 3, 1, 4, 2).reshape(b, self.height, self.width)

    def local_align(self, x):
        """Eq. 2: locally connected 2-D layer (stride 1, zero padding); (B, H, W) -> (B, H, W).

        Computed as a sum over the ``k*k`` kernel offsets of the shifted (padded) map times that
        offset's per-pixel weight map: the same numbers as :meth:`local_align_unfold` without its
        (B, k*k, H*W) patch tensor (``benchmarks/align_encoder.py`` compares the two).
        """
        k, h, w = self.kernel_size, self.height, self.width
        xp = F.pad(x, (k // 2,) * 4)
        weight = self.local_weight.reshape(k * k, h, w)
        out = self.local_bias.reshape(h, w).expand(x.shape[0], h, w)
        for o in range(k * k):
            di, dj = divmod(o, k)
            out = out + xp[:, di:di + h, dj:dj + w] * weight[o]
        return out

    def local_align_unfold(self, x):
        """Reference of :meth:`local_align` with ``torch.nn.functional.unfold`` (patch tensor)."""
        patches = F.unfold(x[:, None], self.kernel_size, padding=self.kernel_size // 2)  # (B, k*k, H*W)
        out = (patches * self.local_weight).sum(1) + self.local_bias
        return out.reshape(x.shape[0], self.height, self.width)

    def forward(self, x):
        x = x * self.mask
        return self.local_align(self.global_align(x)) * self.mask


# --------------------------------------------------------------------------- #
# Input
# --------------------------------------------------------------------------- #
def read_flatmaps(path):
    """A subject's flat-map file (``surface/sub-XX_flatmaps.h5``) as the dict :func:`fit_align` takes.

    Returns
    -------
    dict
        ``train_maps`` (N_train, H, W) float32, ``train_ids``, ``test_maps``, ``test_ids``, ``mask``
        (H, W) bool (pixels covered by the surface).
    """
    from fmrivid.io.h5 import read_features

    ids, maps, attrs = read_features(path)
    if maps.ndim != 3:
        raise InputError(path, "flat maps of shape (samples, H, W)", f"shape {maps.shape}")
    try:
        split = json.loads(attrs["split"]) if isinstance(attrs.get("split"), str) else list(attrs["split"])
    except (KeyError, ValueError, TypeError):
        raise InputError(path, "a 'split' attribute (train/test per row)", f"attributes {sorted(attrs)}") from None
    if len(split) != len(ids) or set(split) - {"train", "test"}:
        raise InputError(path, f"a 'split' attribute of {len(ids)} 'train'/'test' values",
                         f"{len(split)} values {sorted(set(map(str, split)))}")
    split = np.asarray(split)
    mask = attrs.get("mask")
    mask = np.asarray(json.loads(mask) if isinstance(mask, str) else mask, bool) if mask is not None else None
    if mask is not None and mask.shape != maps.shape[1:]:
        raise InputError(path, f"a mask of shape {maps.shape[1:]}", f"shape {mask.shape}")
    ids = np.asarray(ids, dtype=object)
    return {"train_maps": maps[split == "train"].astype(np.float32), "train_ids": list(ids[split == "train"]),
            "test_maps": maps[split == "test"].astype(np.float32), "test_ids": list(ids[split == "test"]),
            "mask": mask}


def _check_maps(maps_by_subject):
    """Validate the per-subject dicts; return (H, W)."""
    if not isinstance(maps_by_subject, dict) or len(maps_by_subject) < 2:
        raise InputError("maps_by_subject", "flat maps of at least 2 subjects",
                         f"{len(maps_by_subject) if isinstance(maps_by_subject, dict) else type(maps_by_subject)}")
    shape = None
    for sub in sorted(maps_by_subject):
        entry = maps_by_subject[sub]
        for split in ("train", "test"):
            name = f"sub-{sub} {split}_maps"
            for key in (f"{split}_maps", f"{split}_ids"):
                if key not in entry:
                    raise InputError(f"sub-{sub}", f"keys train_maps, train_ids, test_maps, test_ids",
                                     f"no '{key}'")
            maps = np.asarray(entry[f"{split}_maps"])
            if maps.ndim != 3:
                raise InputError(name, "flat maps of shape (samples, H, W)", f"shape {maps.shape}")
            if not np.all(np.isfinite(maps)):
                raise InputError(name, "finite values", "NaN or inf")
            ids = list(entry[f"{split}_ids"])
            if len(ids) != len(maps) or len(set(ids)) != len(ids):
                raise InputError(f"sub-{sub} {split}_ids", f"{len(maps)} distinct clip ids (one per map)",
                                 f"{len(ids)} ids, {len(set(ids))} distinct")
            if shape is None:
                shape = maps.shape[1:]
            elif maps.shape[1:] != shape:
                raise InputError(name, f"maps of size {shape} like the other subjects", f"size {maps.shape[1:]}")
        if set(entry["train_ids"]) & set(entry["test_ids"]):
            raise InputError(f"sub-{sub}", "disjoint train and test clips",
                             f"{len(set(entry['train_ids']) & set(entry['test_ids']))} clips in both")
        mask = entry.get("mask")
        if mask is not None and np.asarray(mask).shape != shape:
            raise InputError(f"sub-{sub} mask", f"shape {shape}", f"shape {np.asarray(mask).shape}")
    return shape


def _common_ids(maps_by_subject, subjects, split, order_by):
    """Clip ids of ``split`` present for every subject, in ``order_by``'s order."""
    others = [set(maps_by_subject[s][f"{split}_ids"]) for s in subjects]
    return [c for c in maps_by_subject[order_by][f"{split}_ids"] if all(c in o for o in others)]


def _rows(entry, split, ids):
    index = {c: k for k, c in enumerate(entry[f"{split}_ids"])}
    return np.asarray(entry[f"{split}_maps"], np.float32)[[index[c] for c in ids]]


def _joint_mask(maps_by_subject, shape, use_mask):
    mask = np.ones(shape, bool)
    if use_mask:
        for sub in sorted(maps_by_subject):
            if maps_by_subject[sub].get("mask") is not None:
                mask &= np.asarray(maps_by_subject[sub]["mask"], bool)
    if mask.sum() < 2:
        raise InputError("flat-map masks", "at least 2 pixels covered in every subject", f"{int(mask.sum())}")
    return mask


def _masked_mse(a, b, mask):
    return ((a - b) ** 2 * mask).sum() / (mask.sum() * a.shape[0])


# --------------------------------------------------------------------------- #
# Fitting
# --------------------------------------------------------------------------- #
def fit_align(maps_by_subject, target=None, cfg=None, out_model=None, ckpt_dir=None, seed=0, device="cpu",
              log=print, heldout=None):
    """Fit GLFA modules: the training subjects jointly, then (optionally) a held-out subject.

    Parameters
    ----------
    maps_by_subject : dict of str -> dict
        Subject -> ``{"train_maps": (N, H, W), "train_ids": [...], "test_maps": (M, H, W),
        "test_ids": [...], "mask": (H, W) bool or None}`` (see :func:`read_flatmaps`). Only
        ``train_maps`` enter the fit; ``test_maps`` are only transformed and scored.
    target : str, optional
        Reference subject (its space is the common space); default ``cfg["target"]`` or the first
        training subject in sorted order. Must not be ``heldout``.
    cfg : dict
        ``decoders.align`` section (keys of :data:`DEFAULTS`).
    out_model : path, optional
        safetensors file with every subject's module (tensors ``<sub>.global_weight`` etc.) and the
        config, target, held-out subject and subjects in its metadata.
    ckpt_dir : path, optional
        Checkpoints for resume: ``<ckpt_dir>/common`` and ``<ckpt_dir>/heldout-<sub>-<hash of the
        common modules>``.
    seed : int
    device : str
        ``"cpu"`` or ``"cuda[:k]"`` (CPU with a message when CUDA is absent).
    log : callable
    heldout : str, optional
        Subject left out of the common space and aligned to it afterwards from its training clips.
        With 2 subjects in all, the other one is the target and only the held-out module is fitted.

    Returns
    -------
    dict
        ``modules`` (subject -> :class:`GLFA` or None for the target), ``target``, ``heldout``,
        ``mask`` (H, W), ``history`` (``{"common": [...], "heldout": [...]}``), ``aligned``
        (subject -> ``{"train_maps", "test_maps"}`` after alignment, float32, same rows as the input),
        ``table`` (:func:`alignment_table` on the test clips), ``values`` (:func:`alignment_values`:
        the per-clip / per-pixel arrays behind the table), ``config``.
    """
    from fmrivid.devices import resolve_device

    cfg = config(cfg)
    device = resolve_device(device, log)
    maps_by_subject = {str(k): v for k, v in maps_by_subject.items()} if isinstance(maps_by_subject, dict) \
        else maps_by_subject
    heldout = None if heldout is None else str(heldout)
    shape = _check_maps(maps_by_subject)
    subjects = sorted(maps_by_subject)
    if heldout is not None and heldout not in maps_by_subject:
        raise InputError("heldout", f"one of the subjects {subjects}", repr(heldout))
    training = [s for s in subjects if s != heldout]
    if len(training) < 2 and heldout is None:
        raise InputError("maps_by_subject", "at least 2 subjects to align", f"{training}")
    target = target if target is not None else (cfg["target"] if cfg["target"] is not None else training[0])
    target = str(target)
    if target not in training:
        raise ConfigError(f"decoders.align.target: expected one of the training subjects {training}; "
                          f"found {target!r}")
    mask = _joint_mask(maps_by_subject, shape, cfg["use_mask"])
    ids = _common_ids(maps_by_subject, training, "train", target)
    if len(ids) < 2 and len(training) > 1:
        raise InputError("train_ids", f"at least 2 training clips shared by subjects {training}", f"{len(ids)}")
    learn = [s for s in training if s != target]
    order = [target] + learn

    def make(sub):
        return GLFA(shape[0], shape[1], cfg["parcel_size"], cfg["kernel_size"], mask)

    torch.manual_seed(int(seed))
    modules = torch.nn.ModuleDict({s: make(s) for s in learn}).to(device)
    m = torch.as_tensor(mask.astype(np.float32), device=device)
    lam = float(cfg["lambda_const"])

    def common_loss(model, batch, gen):
        x = batch["x"]
        aligned = [x[:, 0] * m] + [model[s](x[:, k + 1]) for k, s in enumerate(learn)]
        const = [x.new_zeros(())] + [_masked_mse(aligned[k + 1], x[:, k + 1], m) for k in range(len(learn))]
        align_terms, total = [], 0.0
        for a in range(len(order)):
            for b in range(a + 1, len(order)):
                la = _masked_mse(aligned[a], aligned[b], m)
                align_terms.append(la)
                total = total + la + lam * (const[a] + const[b])
        n_pairs = len(align_terms)
        return {"loss": total / n_pairs, "align": sum(align_terms) / n_pairs,
                "const": sum(const) / max(1, len(learn))}

    n_parcels = (shape[0] // cfg["parcel_size"]) * (shape[1] // cfg["parcel_size"])
    if learn:
        x = np.stack([_rows(maps_by_subject[s], "train", ids) for s in order], axis=1)  # (N, S, H, W)
        log(f"align: GLFA of {learn} onto sub-{target} from {len(ids)} shared training clips, "
            f"maps {shape[0]}x{shape[1]}, {n_parcels} parcels, {int(mask.sum())} pixels")
        hist_common = train.fit(modules, common_loss, {"x": x}, cfg, None if ckpt_dir is None else
                                _sub_dir(ckpt_dir, "common"), seed=seed, device=device, log=log)
    else:  # one training subject: its space is the common space, only the held-out subject is fitted
        log(f"align: one training subject (sub-{target}): its flat-map space is the common space")
        hist_common = []
    for p in modules.parameters():
        p.requires_grad_(False)
    out_modules = {s: modules[s] for s in learn}
    out_modules[target] = None
    hist_heldout = []
    if heldout is not None:
        h_ids = _common_ids(maps_by_subject, training + [heldout], "train", heldout)
        if len(h_ids) < 2:
            raise InputError(f"sub-{heldout} train_ids", "at least 2 training clips also seen by the training "
                             "subjects", f"{len(h_ids)}")
        with torch.no_grad():
            ref = np.stack([_apply(out_modules[s], _rows(maps_by_subject[s], "train", h_ids), mask, device)
                            for s in training], axis=1)
        torch.manual_seed(int(seed) + 1)
        module_h = make(heldout).to(device)

        def heldout_loss(model, batch, gen):
            xa = model(batch["x"])
            const = _masked_mse(xa, batch["x"] * m, m)
            align = sum(_masked_mse(xa, batch["ref"][:, k], m) for k in range(len(training))) / len(training)
            return {"loss": align + lam * const, "align": align, "const": const}

        log(f"align: fitting held-out sub-{heldout} to the common space from its {len(h_ids)} training clips")
        # the held-out stage's targets come from the common stage: its checkpoints live in a folder named
        # after the common modules' weights, so a changed common stage never resumes a stale held-out run
        ck = None if ckpt_dir is None else _sub_dir(ckpt_dir, f"heldout-{heldout}-{_state_hash(modules, target)}")
        hist_heldout = train.fit(module_h, heldout_loss, {"x": _rows(maps_by_subject[heldout], "train", h_ids),
                                                          "ref": ref}, cfg, ck, seed=seed, device=device, log=log)
        for p in module_h.parameters():
            p.requires_grad_(False)
        out_modules[heldout] = module_h
    if out_model is not None:
        _save(out_modules, out_model, cfg, target, heldout, shape, mask)
    aligned = {}
    for s in subjects:
        if s not in out_modules:
            continue
        entry = maps_by_subject[s]
        aligned[s] = {"train_maps": _apply(out_modules[s], entry["train_maps"], mask, device),
                      "test_maps": _apply(out_modules[s], entry["test_maps"], mask, device)}
    before = {s: {"test_maps": np.asarray(maps_by_subject[s]["test_maps"], np.float32)} for s in aligned}
    values = alignment_values(maps_by_subject, before, aligned, mask, order_by=target)
    table = alignment_table(maps_by_subject, before, aligned, mask, order_by=target, heldout=heldout)
    for row in table:
        if row["metric"] in ("fsc", "isc"):
            log(f"align: sub-{row['subject']} {row['metric']} {row['before']:.3f} -> {row['after']:.3f}"
                + (" (held out)" if row["heldout"] else ""))
    return {"modules": out_modules, "target": target, "heldout": heldout, "mask": mask,
            "history": {"common": hist_common, "heldout": hist_heldout}, "aligned": aligned, "table": table,
            "values": values, "config": cfg}


def _state_hash(modules, target):
    import hashlib

    h = hashlib.sha256(str(target).encode())
    for name, tensor in sorted(modules.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _sub_dir(ckpt_dir, name):
    from pathlib import Path

    return Path(ckpt_dir) / name


def _apply(module, maps, mask, device):
    """Aligned maps (float32 numpy); the identity (masked) for the target (module None)."""
    maps = np.asarray(maps, np.float32)
    if module is None:
        return maps * mask
    if len(maps) == 0:
        return maps.copy()
    with torch.no_grad():
        out = [module(torch.as_tensor(maps[i:i + 256], device=device)).cpu().numpy()
               for i in range(0, len(maps), 256)]
    return np.concatenate(out).astype(np.float32)


def _save(modules, path, cfg, target, heldout, shape, mask):
    holder = torch.nn.ModuleDict({s: m for s, m in sorted(modules.items()) if m is not None})
    meta = {"format": _FORMAT, "config": json.dumps(cfg, sort_keys=True), "target": target,
            "heldout": "" if heldout is None else heldout, "subjects": json.dumps(sorted(modules)),
            "height": shape[0], "width": shape[1]}
    train.save_model(holder, path, meta)


def load_align(path, device="cpu"):
    """Modules saved by :func:`fit_align`: ``(modules, meta)``; ``modules[target]`` is None (identity)."""
    state, meta = train.load_state(path, device=device)
    if meta.get("format") != _FORMAT:
        raise InputError(path, f"a GLFA model file (format {_FORMAT})", f"format {meta.get('format')!r}")
    cfg = json.loads(meta["config"])
    h, w = int(meta["height"]), int(meta["width"])
    modules = {}
    for sub in json.loads(meta["subjects"]):
        if sub == meta["target"]:
            modules[sub] = None
            continue
        part = {k[len(sub) + 1:]: v for k, v in state.items() if k.startswith(sub + ".")}
        module = GLFA(h, w, cfg["parcel_size"], cfg["kernel_size"], part["mask"].cpu().numpy() > 0)
        module.load_state_dict(part)
        modules[sub] = module.to(device).eval()
    return modules, {**meta, "config": cfg}


def apply_align(path, subject, maps, device="cpu"):
    """Align one subject's (N, H, W) flat maps with a model file from :func:`fit_align`."""
    modules, meta = load_align(path, device)
    if subject not in modules:
        raise InputError(path, f"a GLFA module for sub-{subject}", f"subjects {sorted(modules)}")
    mask = np.ones((int(meta["height"]), int(meta["width"])), bool)
    if modules[subject] is not None:
        mask = modules[subject].mask.cpu().numpy() > 0
    else:
        others = [m for m in modules.values() if m is not None]
        if others:
            mask = others[0].mask.cpu().numpy() > 0
    return _apply(modules[subject], maps, mask, device)


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #
def alignment_values(maps_by_subject, before, after, mask, order_by):
    """Per-clip fSC and per-pixel ISC arrays on the test clips shared by all subjects.

    Parameters
    ----------
    maps_by_subject : dict
        The input of :func:`fit_align` (for the test clip ids).
    before, after : dict of str -> dict
        Subject -> ``{"test_maps": (M, H, W)}`` (rows in ``maps_by_subject[s]["test_ids"]`` order).
    mask : ndarray of bool, shape (H, W)
        Pixels used as voxels.
    order_by : str
        Subject whose test order the shared clips follow.

    Returns
    -------
    dict
        ``ids`` (shared test clips), ``before`` / ``after``: ``{"fsc": {sub: (clips,)}, "isc": {sub:
        (pixels,)}, "fsc_pair": {(a, b): (clips,)}}`` (:func:`fmrivid.metrics.brain.fsc` /
        :func:`~fmrivid.metrics.brain.isc` values, ready for a bootstrap summary).
    """
    from fmrivid.metrics.brain import column_corr, fsc, isc

    subjects = sorted(after)
    ids = _common_ids(maps_by_subject, subjects, "test", order_by)
    if len(ids) < 2:
        raise InputError("test_ids", f"at least 2 test clips shared by subjects {subjects}", f"{len(ids)}")
    flat = mask.reshape(-1)
    out = {"ids": ids}
    for stage, maps in (("before", before), ("after", after)):
        mats = {}
        for s in subjects:
            entry = {"test_maps": maps[s]["test_maps"], "test_ids": maps_by_subject[s]["test_ids"]}
            mats[s] = _rows(entry, "test", ids).reshape(len(ids), -1)[:, flat].astype(np.float64)
        out[stage] = {"fsc": fsc(mats), "isc": isc(mats),
                      "fsc_pair": {(a, b): column_corr(mats[a].T, mats[b].T)
                                   for i, a in enumerate(subjects) for b in subjects[i + 1:]}}
    return out


def alignment_table(maps_by_subject, before, after, mask, order_by, heldout=None):
    """fSC and ISC on the test clips shared by all subjects, before and after alignment.

    Parameters are those of :func:`alignment_values`; ``heldout`` is marked in the ``heldout`` column.

    Returns
    -------
    list of dict
        Rows ``subject, partner, metric, before, after, n_clips, heldout``: ``fsc`` (mean over clips of
        the pattern correlation with the others' mean pattern) and ``isc`` (mean over pixels of the
        time-course correlation with the others' mean), ``partner`` "others"; and ``fsc_pair``, the
        paper's r(s_i, s_j) (mean over clips of the correlation between the two subjects' patterns).
    """
    vals = alignment_values(maps_by_subject, before, after, mask, order_by)
    b, a, n = vals["before"], vals["after"], len(vals["ids"])
    rows = []
    for s in sorted(after):
        common = {"subject": s, "partner": "others", "n_clips": n, "heldout": s == heldout}
        for metric in ("fsc", "isc"):
            rows.append({**common, "metric": metric, "before": float(b[metric][s].mean()),
                         "after": float(a[metric][s].mean())})
    for (s, t), values in b["fsc_pair"].items():
        rows.append({"subject": s, "partner": t, "metric": "fsc_pair", "n_clips": n, "heldout": heldout in (s, t),
                     "before": float(values.mean()), "after": float(a["fsc_pair"][(s, t)].mean())})
    return rows


# --------------------------------------------------------------------------- #
# Leave-one-subject-out decoding
# --------------------------------------------------------------------------- #
def _feature_rows(feature_ids, features, ids, what):
    index = {str(c): k for k, c in enumerate(feature_ids)}
    missing = [c for c in ids if str(c) not in index]
    if missing:
        raise InputError("features", f"a row for every {what} clip", f"no row for {len(missing)} clips "
                         f"(e.g. {missing[:3]})")
    return np.asarray(features, np.float64)[[index[str(c)] for c in ids]]


def loso_decode(maps_by_subject, heldout, feature_ids, features, cfg=None, out_align=None, out_decoder=None,
                ckpt_dir=None, seed=0, device="cpu", log=print):
    """Leave-one-subject-out decoding through GLFA.

    The alignment is fitted as in :func:`fit_align` (``heldout`` aligned from its training clips
    only); a :class:`~fmrivid.decoders.ridge.RidgeCV` decoder is fitted on the aligned TRAINING maps
    of the other subjects (rows stacked over subjects) against the features of their training
    clips, and predicts the held-out subject's test features from its aligned test maps.

    Parameters
    ----------
    maps_by_subject : dict
        As for :func:`fit_align`.
    heldout : str
        The subject to decode (never seen by the decoder).
    feature_ids : sequence of str
        Clip ids of the rows of ``features``.
    features : array_like, shape (n_clips, d)
        Stimulus features. Only rows of the training subjects' training clips are used for fitting;
        rows of the held-out subject's test clips, when present, are used for scoring only.
    cfg : dict
        ``decoders.align`` section.
    out_align, out_decoder : path, optional
        Alignment model (safetensors, :func:`fit_align`) and ridge decoder (``RidgeCV.save``).
    ckpt_dir : path, optional
        Checkpoints of the alignment stages.

    Returns
    -------
    dict
        ``pred`` (n_test, d) float32: decoded features of the held-out subject's test clips (its
        ``test_ids`` order); ``test_ids``; ``pred_unaligned`` (same decoder on the unaligned maps);
        ``pred_shuffled`` (decoder trained on shuffled map-feature pairs, aligned maps); ``table``:
        the :func:`alignment_table` rows plus, when the test features are given, rows
        ``metric="decode_r"`` with ``variant`` aligned / unaligned / shuffled and ``value`` the mean
        over feature dimensions of the Pearson r over test clips; ``align``: the :func:`fit_align`
        result; ``pred_mean_train`` (1, d): the decoder applied to the held-out subject's mean aligned
        TRAINING map (the negative condition of a generator fed these predictions).
    """
    from fmrivid.decoders.ridge import RidgeCV
    from fmrivid.metrics.brain import column_corr

    cfg = config(cfg)
    heldout = str(heldout)
    maps_by_subject = {str(k): v for k, v in maps_by_subject.items()}
    features = np.asarray(features)
    if features.ndim == 1:
        features = features[:, None]
    if features.ndim != 2 or len(features) != len(feature_ids):
        raise InputError("features", f"a (clips, dims) array with {len(feature_ids)} rows (one per id)",
                         f"shape {features.shape}")
    res = fit_align(maps_by_subject, None, cfg, out_align, ckpt_dir, seed, device, log, heldout=heldout)
    mask = res["mask"].reshape(-1)
    training = [s for s in sorted(maps_by_subject) if s != heldout]
    X, Y = [], []
    for s in training:
        ids = list(maps_by_subject[s]["train_ids"])
        X.append(res["aligned"][s]["train_maps"].reshape(len(ids), -1)[:, mask])
        Y.append(_feature_rows(feature_ids, features, ids, f"training (sub-{s})"))
    X, Y = np.concatenate(X), np.concatenate(Y)
    ridge_kw = {"alphas": [float(a) for a in cfg["ridge_alphas"]], "cv": int(cfg["ridge_cv"]), "device": device}
    log(f"align: ridge decoder on {len(X)} aligned training maps of {training} -> {Y.shape[1]} features")
    decoder = RidgeCV(**ridge_kw).fit(X, Y)
    perm = np.random.default_rng(int(seed)).permutation(len(Y))
    control = RidgeCV(**ridge_kw).fit(X, Y[perm])
    if out_decoder is not None:
        decoder.save(out_decoder)
    test_ids = list(maps_by_subject[heldout]["test_ids"])
    n = len(test_ids)
    aligned_test = res["aligned"][heldout]["test_maps"].reshape(n, -1)[:, mask]
    raw_test = (np.asarray(maps_by_subject[heldout]["test_maps"], np.float32) * res["mask"]).reshape(n, -1)[:, mask]
    out = {"pred": decoder.predict(aligned_test), "test_ids": test_ids,
           "pred_unaligned": decoder.predict(raw_test), "pred_shuffled": control.predict(aligned_test),
           "table": list(res["table"]), "align": res}
    own_train = res["aligned"][heldout].get("train_maps")
    if own_train is not None and len(own_train):  # the held-out subject's mean training map, decoded
        mean_map = np.asarray(own_train, np.float32).reshape(len(own_train), -1)[:, mask].mean(0, keepdims=True)
        out["pred_mean_train"] = decoder.predict(mean_map)
    known = {str(c) for c in feature_ids}
    if n >= 2 and all(str(c) in known for c in test_ids):
        truth = _feature_rows(feature_ids, features, test_ids, "test")
        for variant, key in (("aligned", "pred"), ("unaligned", "pred_unaligned"), ("shuffled", "pred_shuffled")):
            r = float(column_corr(out[key].astype(np.float64), truth).mean())
            out["table"].append({"subject": heldout, "metric": "decode_r", "variant": variant, "value": r,
                                 "n_clips": n, "heldout": True})
            log(f"align: LOSO decoding of sub-{heldout}, {variant}: mean r {r:.3f}")
    return out
