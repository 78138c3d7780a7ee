"""The neural decoders, declared once: read by the rules (inputs, wildcards), the stages (what to load and how
to score), the config schema (``decode.<name>`` sections, the ``decode.neural`` choices) and the reference.

Adding a decoder: write ``fmrivid/decoders/<name>.py`` with ``PARAMS`` (key -> (default, description)),
``DEFAULTS`` and ``fit_predict(data, cfg, out_model, ckpt_dir, seed, device, log)``, add one :class:`Decoder`
line to :data:`DECODERS`, and its test. Nothing else names it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


# Settings of each decoder: key -> (default, description[, choices]). The schema's decode.<name> sections and the
# modules' DEFAULTS are made from these.
TRAIN_PARAMS = {
    "steps": (300, "optimiser steps"),
    "batch_size": (32, "samples per step (capped at the number of training samples)"),
    "lr": (0.001, "AdamW peak learning rate (5% linear warm-up, cosine decay to 10%)"),
    "weight_decay": (0.01, "AdamW weight decay"),
    "grad_clip": (1.0, "gradient-norm clipping (0: off)"),
    "checkpoint_every": (50, "steps between checkpoints (resume granularity)"),
}
SEMANTIC_PARAMS = {
    **TRAIN_PARAMS,
    "alpha": (0.5, "weight of InfoNCE(fMRI, text); 1 - alpha weighs InfoNCE(fMRI, video)"),
    "temperature": (0.07, "InfoNCE temperature (cosine similarities are divided by it)"),
    "hidden": (1024, "width of the fMRI encoder's hidden layers"),
    "layers": (2, "hidden layers of the fMRI encoder MLP"),
    "dropout": (0.3, "dropout after each hidden layer (training only)"),
    "token_hidden": (1024, "width of the 3-layer token MLP (stage 2, only with token targets)"),
    "text_target": ("text", "feature its text head is trained on and predicts: text (features.text_model) or "
                            "clip_text (CLIP text of features.image_model, as Mind-Animator); the file keeps the "
                            "name predictions/semantic/sub-XX_text.h5", ["text", "clip_text"]),
}
STRUCTURE_PARAMS = {
    **TRAIN_PARAMS,
    "hidden": (1024, "width of the MLP's hidden layers"),
    "layers": (1, "hidden layers (1 = Mind-Animator's 2-layer MLP: Linear-hidden-Linear)"),
    "dropout": (0.3, "dropout after each hidden layer (training only)"),
}
MOTION_PARAMS = {
    **TRAIN_PARAMS,
    "width": (128, "token width of the transformer"),
    "heads": (4, "attention heads (must divide width)"),
    "depth": (2, "transformer blocks (sparse causal self-attention + cross-attention + MLP)"),
    "patch": (2, "latent patch size per token (must divide the latent height and width)"),
    "fmri_tokens": (4, "context tokens the fMRI sample is mapped to (cross-attention keys/values)"),
    "dropout": (0.0, "dropout in attention and MLP (training only)"),
    "pca": (0, "principal components of the standardized fMRI the fMRI tokens are made from (fitted on training "
               "samples only; 0: all voxels; audio-guided seed: fMRI -> PCA -> embedding)"),
}
FUSION_PARAMS = {
    **MOTION_PARAMS,
    "audio": (True, "true: fMRI tokens attend to the audio tokens (fused); false: fMRI-only, same code"),
}
ALIGN_PARAMS = {
    "parcel_size": (4, "side (pixels) of the square parcels mixed by the global alignment; divides the map size"),
    "kernel_size": (3, "side of each pixel's own kernel in the locally connected layer (odd, stride 1)"),
    "lambda_const": (0.1, "weight lambda of the consistency loss L_const (aligned vs own original map), Eq. 3"),
    "target": (None, "reference subject whose flat-map space is the common space; null: first training subject"),
    "use_mask": (True, "losses and metrics on the flat-map pixels covered in every subject (the files' mask)"),
    "ridge_alphas": ([0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0], "LOSO ridge decoder: candidate alphas"),
    "ridge_cv": (5, "LOSO ridge decoder: folds (contiguous rows) to choose an alpha per feature"),
    "steps": (400, "optimiser steps of each alignment stage (training subjects, then the held-out one)"),
    "batch_size": (64, "training clips per step"),
    "lr": (0.01, "AdamW peak learning rate (5% warm-up, cosine decay)"),
    "weight_decay": (0.0, "AdamW weight decay (0: it would pull W away from a permutation)"),
    "grad_clip": (1.0, "gradient-norm clipping (0: off)"),
    "checkpoint_every": (100, "steps between checkpoints (resume granularity)"),
}
ENCODER_PARAMS = {
    "chunk_frames": (32, "frames per sample (one TR). frame_source video: this many consecutive frames at the video's "
                         "own rate from the clip's start; frames: a clip's frames resampled uniformly in time to this "
                         "(taken as they are when the clip already has this many)"),
    "frame_size": (112, "frames resized (area averaging) to frame_size x frame_size pixels"),
    "channels3d": ([16, 32], "output channels of the 3-D conv blocks (each halves time, height and width)"),
    "channels2d": ([64, 64], "output channels of the 2-D conv blocks after time is collapsed (each halves H, W)"),
    "pool_size": (4, "side of the adaptive average pool before the fully connected voxel read-out"),
    "dropout": (0.1, "dropout before the voxel read-out"),
    "decoder_channels": (32, "channels of the frame decoder's convolutions"),
    "decoder_upsamples": (4, "x2 upsampling stages of the decoder (frame_size divisible by 2**decoder_upsamples)"),
    "voxel_weight": (0.5, "weight of the voxel MSE in the loss (paper: 0.5)"),
    "frame_weight": (0.5, "weight of the middle-frame loss: frame_weight * (MSE + perceptual_weight * L_vgg + "
                          "ssim_weight * (1 - SSIM)) (paper: 0.5; 0 = encoder only)"),
    "perceptual_weight": (0.0, "weight of the perceptual term L_vgg inside the frame loss: mean over VGG16 layers "
                               "relu2_2 and relu3_3 of the MSE between the feature maps of the reconstructed and the "
                               "true middle frame (ImageNet-normalised); seed 004 L_psim, weight not in the seed; "
                               "0: off (no VGG loaded)"),
    "ssim_weight": (0.0, "weight of (1 - SSIM) inside the frame loss; SSIM as the decoded_frame_ssim metric (RGB, 7x7 "
                         "uniform window, differentiable torch version); seed 004 L_ssim, weight not in the seed; "
                         "0: off"),
    "perceptual_model": ("vgg16", "network of the perceptual term: vgg16 (torchvision IMAGENET1K_V1 weights, read "
                                  "from the local torch hub cache, torch.hub.get_dir() + "
                                  "checkpoints/vgg16-397923af.pth; never downloaded) or tiny (the torchvision VGG class with a "
                                  "random 4-8-16-channel features stack: plumbing tests only, not a perceptual loss)",
                         ["vgg16", "tiny"]),
    "frame_source": ("frames", "the encoder's input chunks: frames (features/frames.h5, features.n_frames frames "
                               "spread over each clip, resampled to chunk_frames) or video (features/encoder_chunks.h5:"
                               " chunk_frames consecutive frames at the video's frame rate from each clip's start, "
                               "seed 004)", ["frames", "video"]),
    "parcels": (None, "NIfTI label image on the grid of the subject's fMRI (Schaefer-1000 in seed 004): the encoder's "
                      "targets become per-parcel means of the selected voxels (label 0: background; parcels without "
                      "a selected voxel dropped); null: one target per voxel. Volumetric data only"),
    "predict_batch": (64, "samples per forward pass at prediction time"),
    "steps": (300, "optimiser steps"),
    "batch_size": (16, "samples per step"),
    "lr": (0.001, "AdamW peak learning rate (paper: Adam 1e-4 for 11 epochs)"),
    "weight_decay": (0.01, "AdamW weight decay"),
    "grad_clip": (1.0, "gradient-norm clipping (0: off)"),
    "checkpoint_every": (50, "steps between checkpoints (resume granularity)"),
}


@dataclass(frozen=True)
class Decoder:
    """One neural decoder.

    name: its ``decode.neural`` entry, ``{decoder}`` wildcard and module ``fmrivid.decoders.<name>``.
    target: the feature it predicts (``features/<target>.h5``; ``predictions/<name>/sub-XX_<target>.h5``).
    features: extra training inputs, data key -> feature file stem (``train_<key>`` rows of the training clips).
    decoded: decoded test inputs from other decoders: ``first`` (first-frame latents), ``text`` (decoded caption).
    score: how it is evaluated against a shuffled control: ``embedding`` (2-way identification, retrieval),
        ``latent`` (per-clip r of latents), ``latent_frames`` (r of frames 2..n, first frame given).
    rule: the rule that runs it (``neural_decode`` for those that read one subject's samples).
    summary: one line for the schema and the reference.
    params: its settings, key -> (default, description) (the ``decode.<name>`` section).
    label: what its target is, in the text of its metric rows (default: the target's name).
    extras: more predictions it can write into its prediction file as extra datasets, name -> the feature file
        stem it must then be trained on (None: always written). Generation reads them by name
        (``generate.variants``: e.g. ``tokens: semantic`` reads ``tokens``; ``frames: fusion:fmri_only``). An
        extra trained on a feature also gets ``negative_<name>``: decoded from the mean training fMRI.
    """

    name: str
    target: str
    summary: str
    params: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    decoded: tuple = ()
    score: str = "latent"
    rule: str = "neural_decode"
    label: str = ""
    extras: dict = field(default_factory=dict)
    target_setting: str = ""  # a setting of its section that names another feature file for its target
    module_name: str = ""  # fmrivid.decoders.<name>, written out: code fingerprints follow it like an import

    def __post_init__(self):
        if self.module_name != f"fmrivid.decoders.{self.name}":
            raise ValueError(f"decoder {self.name!r}: module_name must be 'fmrivid.decoders.{self.name}'")
    @property
    def module(self):
        """Its module, imported on demand (the registry itself stays free of torch)."""
        return importlib.import_module(self.module_name)


DECODERS = {d.name: d for d in [
    Decoder("semantic", "text", "tri-modal InfoNCE to the text/CLIP space", params=SEMANTIC_PARAMS,
            features={"video": "image"}, score="embedding", extras={"tokens": "text_tokens"},
            target_setting="text_target",
            module_name="fmrivid.decoders.semantic"),
    Decoder("structure", "vae", "first-frame VAE latent", params=STRUCTURE_PARAMS,
            label="first-frame VAE latents", module_name="fmrivid.decoders.structure"),
    Decoder("motion", "vae_frames", "sparse-causal transformer over frame latents", params=MOTION_PARAMS,
            decoded=("first",), score="latent_frames", label="frame VAE latents",
            module_name="fmrivid.decoders.motion"),
    Decoder("fusion", "vae_frames", "motion with wav2vec2 audio tokens; fMRI-only and fused side by side",
            params=FUSION_PARAMS, features={"audio": "wav2vec", "text": "text"}, decoded=("first", "text"),
            score="latent_frames", label="frame VAE latents", extras={"fmri_only": None},
            module_name="fmrivid.decoders.fusion"),
    Decoder("align", "text", "GLFA leave-one-subject-out on flat maps; needs preprocess.surface.flatmap",
            params=ALIGN_PARAMS, score="embedding", rule="align_decode", extras={"tokens": "text_tokens"},
            module_name="fmrivid.decoders.align"),
    Decoder("encoder", "voxels", "stimulus-to-voxel convnet with a middle-frame decoder", params=ENCODER_PARAMS,
            rule="encoder_model", module_name="fmrivid.decoders.encoder"),
]}

#: decoders run by rule neural_decode (one subject's samples in, one target out)
NEURAL = tuple(n for n, d in DECODERS.items() if d.rule == "neural_decode")


def get(name):
    from fmrivid.errors import ConfigError

    if name not in DECODERS:
        raise ConfigError(f"config key 'decode.neural': unknown decoder {name!r} (expected one of {list(DECODERS)})")
    return DECODERS[name]


def params(name):
    """Settings of a decoder: key -> (default, description)."""
    return get(name).params


def defaults(name=None):
    """Default settings of decoder ``name`` (``None``: the shared training loop's, :data:`TRAIN_PARAMS`)."""
    return {k: v[0] for k, v in (TRAIN_PARAMS if name is None else params(name)).items()}


def decoder_config(name, cfg):
    """The module's defaults updated with the ``decode.<name>`` section (unknown keys refused)."""
    from fmrivid.errors import ConfigError

    defaults = globals()["defaults"](name)
    section = dict(cfg.get(name) or {})
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown config key(s) decode.{name}.{unknown} (expected some of {sorted(defaults)})")
    defaults.update(section)
    return defaults


def _json_type(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def schema_sections():
    """JSON-schema sections ``decode.<name>`` of every decoder and the ``decode.neural`` item enum."""
    sections = {}
    for name in DECODERS:
        props = {}
        for key, (default, description, *choices) in params(name).items():
            kind = ["string", "null"] if default is None else _json_type(default)
            props[key] = {"type": kind, "default": list(default) if isinstance(default, tuple) else default,
                          "description": description, **({"enum": list(choices[0])} if choices else {})}
        sections[name] = {
            "type": "object", "additionalProperties": False, "default": {},
            "description": f"Settings of the {name} decoder (fmrivid.decoders.{name}; used when it is in "
                           "decode.neural).",
            "properties": props,
        }
    return sections


def neural_description():
    return ("Neural decoders trained beside ridge, each evaluated on its own target against a shuffled control "
            "(metrics/decoders/): " + ", ".join(f"{n} ({d.summary})" for n, d in DECODERS.items()) + ".")
