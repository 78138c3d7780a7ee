"""Feature-network metrics of Brain-Diffuser and MindEye: 2-way identification on AlexNet(2), AlexNet(5),
InceptionV3 and CLIP ViT-L/14 features, and the EffNet-B / SwAV correlation distances.

What the papers' code computes (read from Brain-Diffuser ``scripts/eval_extract_features.py`` +
``scripts/evaluate_reconstruction.py``, and MindEye ``src/Reconstruction_Metrics.ipynb`` / ``.py``; facts only,
the code here is ours):

Networks and layers (both papers; torchvision models in eval mode, no grad):

- **AlexNet(2)**: ``alexnet`` IMAGENET1K_V1 (``alexnet-owt-7be5be79.pth``), output of ``features[4]`` (the
  ReLU after conv2), flattened: 192 x 27 x 27 = 139,968 values at a 224 px input (192 x 31 x 31 = 184,512 at
  MindEye's 256 px).
- **AlexNet(5)**: same net, ``features[11]`` (the ReLU after conv5, before the last max-pool): 256 x 13 x 13 =
  43,264 at 224 px (256 x 15 x 15 = 57,600 at 256 px).
- **InceptionV3**: ``inception_v3`` IMAGENET1K_V1 (``inception_v3_google-0cc3c7bd.pth``), ``avgpool`` output
  (adaptive, 2048 x 1 x 1, flattened). Loading the ImageNet weights sets ``transform_input=True``: the net
  itself re-maps ImageNet-normalised input to the (x - 0.5) / 0.5 scale its Google weights expect. Kept here
  (also for random weights, so the architecture is the same).
- **CLIP ViT-L/14**: OpenAI ``clip`` package, the image embedding (``model.visual`` output = ``encode_image``:
  the projection of the post-LayerNorm class token, NOT L2-normalised). fmrivid holds CLIP as a
  ``transformers`` ``CLIPModel``: ``get_image_features`` is the same quantity; see :func:`clip_featnet`.
- **EffNet-B**: ``efficientnet_b1`` ``avgpool`` output (1280-d). Brain-Diffuser calls
  ``efficientnet_b1(weights=True)``: torchvision's legacy-argument shim reads ``True`` as ``pretrained=True``
  and loads **IMAGENET1K_V1** (``efficientnet_b1_rwightman-bac287d4.pth``, ported from timm). MindEye uses
  ``EfficientNet_B1_Weights.DEFAULT`` = **IMAGENET1K_V2** (``efficientnet_b1-c27df63c.pth``): the two papers'
  EffNet-B numbers come from different weights.
- **SwAV**: ``torch.hub.load('facebookresearch/swav:main', 'resnet50')``: a torchvision ``resnet50`` with the
  800-epoch SwAV state dict (``swav_800ep_pretrain.pth.tar``; keys prefixed ``module.``, stripped; loaded
  non-strictly, so the projection head and prototypes in the file are ignored and ``fc`` stays randomly
  initialised, which the ``avgpool`` output never sees). 2048-d.

Input preprocessing (the one real difference between the two papers):

- **Brain-Diffuser** (every net, CLIP included): the PNG opened with PIL, ``T.functional.resize(img, (224,
  224))`` on the PIL image = PIL ``Image.resize((224, 224), BILINEAR)`` (PIL's bilinear filter is antialiased
  when shrinking), ``to_tensor`` (/255, float32), ``Normalize`` with ImageNet mean/std (0.485, 0.456, 0.406 /
  0.229, 0.224, 0.225) or, for CLIP, CLIP's (0.48145466, 0.4578275, 0.40821073 / 0.26862954, 0.26130258,
  0.27577711). InceptionV3 therefore runs at 224 px, not its native 299; no centre crop anywhere.
- **MindEye**: float tensors in [0, 1], ``transforms.Resize(s, BILINEAR)`` on the tensor batch (torchvision
  0.14.1: no antialiasing for tensors) with an int ``s`` (the SHORTER edge goes to ``s``; square frames become
  s x s), then the same ``Normalize``; ``s`` = 256 for AlexNet, 342 for InceptionV3, 255 for EffNet-B, 224
  for SwAV and CLIP. For AlexNet, InceptionV3 and EffNet-B these are the torchvision weights' ``transforms()``
  resize sizes with the centre crop left out (the notebook points to ``weights.transforms()``).
  MindEye ran CLIP in float16 on CUDA (``clip.load`` keeps half weights there); :func:`clip_featnet`
  runs the loaded model in its own dtype (float32 unless loaded otherwise), without autocast.

2-way identification (identical rule in both papers: Brain-Diffuser ``pairwise_corr_all``, MindEye
``two_way_identification``; no flag needed): features flattened per image (float32), ``r = np.corrcoef(gt,
rec)[:N, N:]`` (float64 Pearson; rows GT, columns reconstructions), ``congruents = diag(r)``, ``success = r <
congruents`` (column j compared with ITS congruent r[j, j]; strictly less, so a tie is a failure and a NaN
correlation, e.g. from a constant feature vector, is never a success), ``mean(success.sum(0)) / (N - 1)``
(the diagonal is never a success). Brain-Diffuser also returns a binomial p-value that its table does not
use.

Distances (EffNet-B, SwAV): ``mean_i scipy.spatial.distance.correlation(gt_i, rec_i)`` = 1 - Pearson r of
the flattened features. scipy computes in the features' float32 (its ``_validate_vector`` keeps the dtype);
:func:`distance` computes in float64, which differs from scipy-on-float32 by float32 rounding (~1e-7) and
equals scipy-on-float64 to 1e-10. Old scipy (1.9, MindEye's) took ``abs`` of the result, new scipy clips it
to [0, 2]; both only touch values within rounding of 0, and we clip like the new one.

Video clips: every frame of a clip is an image. A reconstruction frame t of clip i is identified against the
GT frame t of every clip (its distractors are frame t of the OTHER clips), and a clip's value is the mean over
its frames of the per-frame success fraction (distance: of the per-frame distance). With one frame per clip
(or the clips taken as images) the mean over clips of our per-clip value is exactly the paper's number: the
per-image success fraction ``success_cnt[j] / (N - 1)`` averaged over images equals ``np.mean(success_cnt) /
(N - 1)``. :func:`two_way_from_corr` accepts any pairing of reconstruction rows with GT clips (fmrivid's
permutation null re-pairs them).

Weights are read from the torch hub cache (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub``);
fmrivid never downloads them. :func:`featnet_status` says whether a net can run (the suite records the reason
instead of a number when not); ``weights="random"`` builds the real torchvision architecture with seeded
random weights, for tests only (labelled "[random weights: not <net>]").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmrivid.errors import InputError

__all__ = ["CLIP_INPUTS", "NETS", "PROTOCOLS", "FeatNet", "InputSpec", "NetSpec", "clip_featnet",
           "corr_to_gt", "distance", "featnet_status", "load_featnet", "preprocess", "two_way",
           "two_way_from_corr", "weight_path"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Protocols whose preprocessing is reproduced (keys of ``fmrivid.metrics.protocols.PROTOCOLS``).
PROTOCOLS = ("brain_diffuser", "mindeye")

#: Resize methods: PIL bilinear to exactly size x size (Brain-Diffuser), or torchvision ``Resize(size,
#: BILINEAR)`` of a float tensor without antialiasing, shorter edge to ``size`` (MindEye).
_RESIZE_HOW = {
    "pil_bilinear": "PIL Image.resize(({s}, {s}), BILINEAR) of the uint8 frame, then to_tensor (/255)",
    "tensor_bilinear": "torchvision Resize({s}, BILINEAR, antialias=False) of the [0,1] float32 tensor "
                       "(shorter edge to {s})",
}


@dataclass(frozen=True)
class InputSpec:
    """How one paper feeds one net."""

    size: int         # s: Brain-Diffuser resizes to s x s; MindEye's Resize(s) sends the shorter edge to s
    resize: str       # key of _RESIZE_HOW
    weights: str      # torchvision weights enum member, or "swav_800ep"
    file: str         # weight file in torch.hub.get_dir()/checkpoints
    dim: int          # flattened feature size for square frames
    source: str       # how the paper's code names these weights


@dataclass(frozen=True)
class NetSpec:
    """A feature network: torchvision constructor, feature node and per-protocol inputs."""

    name: str
    label: str        # the papers' table column
    builder: str      # torchvision.models function
    node: str         # torchvision feature-extractor node (= the module the papers hook)
    layer: str        # what that node is
    metric: str       # "two_way" or "distance"
    inputs: dict      # protocol -> InputSpec


_ALEX = "alexnet-owt-7be5be79.pth"
_INC = "inception_v3_google-0cc3c7bd.pth"
_EFF1 = "efficientnet_b1_rwightman-bac287d4.pth"
_EFF2 = "efficientnet_b1-c27df63c.pth"
_SWAV = "swav_800ep_pretrain.pth.tar"
_SWAV_URL = "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"

NETS = {s.name: s for s in [
    NetSpec("alexnet2", "AlexNet(2)", "alexnet", "features.4", "features[4] (ReLU after conv2)", "two_way", {
        "brain_diffuser": InputSpec(224, "pil_bilinear", "IMAGENET1K_V1", _ALEX, 192 * 27 * 27,
                                    "alexnet(pretrained=True)"),
        "mindeye": InputSpec(256, "tensor_bilinear", "IMAGENET1K_V1", _ALEX, 192 * 31 * 31,
                             "AlexNet_Weights.IMAGENET1K_V1"),
    }),
    NetSpec("alexnet5", "AlexNet(5)", "alexnet", "features.11", "features[11] (ReLU after conv5)", "two_way", {
        "brain_diffuser": InputSpec(224, "pil_bilinear", "IMAGENET1K_V1", _ALEX, 256 * 13 * 13,
                                    "alexnet(pretrained=True)"),
        "mindeye": InputSpec(256, "tensor_bilinear", "IMAGENET1K_V1", _ALEX, 256 * 15 * 15,
                             "AlexNet_Weights.IMAGENET1K_V1"),
    }),
    NetSpec("inception", "InceptionV3", "inception_v3", "avgpool", "avgpool (2048-d; transform_input=True)",
            "two_way", {
                "brain_diffuser": InputSpec(224, "pil_bilinear", "IMAGENET1K_V1", _INC, 2048,
                                            "inception_v3(pretrained=True)"),
                "mindeye": InputSpec(342, "tensor_bilinear", "IMAGENET1K_V1", _INC, 2048,
                                     "Inception_V3_Weights.DEFAULT"),
            }),
    NetSpec("effnet", "EffNet-B", "efficientnet_b1", "avgpool", "avgpool (1280-d)", "distance", {
        "brain_diffuser": InputSpec(224, "pil_bilinear", "IMAGENET1K_V1", _EFF1, 1280,
                                    "efficientnet_b1(weights=True), read by torchvision as pretrained=True"),
        "mindeye": InputSpec(255, "tensor_bilinear", "IMAGENET1K_V2", _EFF2, 1280,
                             "EfficientNet_B1_Weights.DEFAULT"),
    }),
    NetSpec("swav", "SwAV", "resnet50", "avgpool", "avgpool (2048-d)", "distance", {
        "brain_diffuser": InputSpec(224, "pil_bilinear", "swav_800ep", _SWAV, 2048,
                                    "torch.hub.load('facebookresearch/swav:main', 'resnet50')"),
        "mindeye": InputSpec(224, "tensor_bilinear", "swav_800ep", _SWAV, 2048,
                             "torch.hub.load('facebookresearch/swav:main', 'resnet50')"),
    }),
]}

#: CLIP ViT-L/14 image embedding: input size and resize per protocol (CLIP mean/std; 768-d for ViT-L/14).
CLIP_INPUTS = {
    "brain_diffuser": InputSpec(224, "pil_bilinear", "openai ViT-L/14", "", 768,
                                "clip.load('ViT-L/14') model.visual in float32"),
    "mindeye": InputSpec(224, "tensor_bilinear", "openai ViT-L/14", "", 768,
                         "clip.load('ViT-L/14') encode_image (float16 on CUDA)"),
}


def _check(name, protocol):
    if name not in NETS:
        raise ValueError(f"featnets: unknown net {name!r}; expected one of {sorted(NETS)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"featnets: unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}")
    return NETS[name], NETS[name].inputs[protocol]


def weight_path(name, protocol="brain_diffuser"):
    """``torch.hub.get_dir()/checkpoints/<file>``: where the weights of net ``name`` under ``protocol`` must be."""
    import torch

    _, inp = _check(name, protocol)
    return Path(torch.hub.get_dir()) / "checkpoints" / inp.file


def _how_to_get(name, protocol):
    spec, inp = _check(name, protocol)
    if name == "swav":
        return f"download {_SWAV_URL} into that folder"
    return (f"copy torchvision's {spec.builder} {inp.weights} weights "
            f"(https://download.pytorch.org/models/{inp.file}) into that folder")


def featnet_status(name, protocol="brain_diffuser"):
    """Whether net ``name`` can run with real weights here.

    Returns
    -------
    str or None
        None when the weight file is in the torch hub cache; otherwise "not computed: ..." naming the file and
        how to get it (fmrivid never downloads it).
    """
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return "not computed: torchvision is not installed"
    path = weight_path(name, protocol)
    if not path.is_file():
        return (f"not computed: {NETS[name].label} weights not in the torch cache ({path}); fmrivid never "
                f"downloads them - {_how_to_get(name, protocol)} (or set TORCH_HOME)")
    return None


# --------------------------------------------------------------------------- preprocessing
def preprocess(frames, size, resize, mean, std):
    """Frames as the paper feeds them to a net.

    Parameters
    ----------
    frames : ndarray, uint8, shape (K, H, W, 3)
    size : int
    resize : {"pil_bilinear", "tensor_bilinear"}
    mean, std : sequence of 3 floats

    Returns
    -------
    torch.Tensor, float32, shape (K, 3, h, w)
        ``pil_bilinear``: PIL ``resize((size, size), BILINEAR)``, /255, normalised (as torchvision's
        ``resize`` on a PIL image, ``to_tensor`` and ``Normalize``). ``tensor_bilinear``: /255 in float32,
        torchvision ``resize(x, [size], BILINEAR, antialias=False)`` (shorter edge to ``size``), normalised.
    """
    import torch
    from torchvision.transforms import functional as TF

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"featnets: expected uint8 frames (K, H, W, 3); found {frames.dtype} {frames.shape}")
    if resize == "pil_bilinear":
        from PIL import Image

        out = []
        for f in frames:
            img = Image.fromarray(np.ascontiguousarray(f))
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            out.append(torch.from_numpy(np.array(img, dtype=np.uint8)))
        x = torch.stack(out).permute(0, 3, 1, 2).float().div(255)
    elif resize == "tensor_bilinear":
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255)
        x = TF.resize(x, [size], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    else:
        raise ValueError(f"featnets: unknown resize {resize!r}; expected one of {sorted(_RESIZE_HOW)}")
    m = torch.as_tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return x.sub_(m).div_(s).contiguous()


# --------------------------------------------------------------------------- networks
def _build(spec, random):
    """The torchvision architecture of ``spec`` (weights=None), as the pretrained builder configures it."""
    import torchvision.models as tvm

    if spec.builder == "inception_v3":
        # what inception_v3(weights=...) sets; init_weights only matters for random weights
        return tvm.inception_v3(weights=None, transform_input=True, aux_logits=True, init_weights=bool(random))
    return getattr(tvm, spec.builder)(weights=None)


def _load_state(model, spec, inp, path):
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is an input error
        raise InputError(path, f"a readable torch state dict for {spec.label}", f"{type(exc).__name__}: {exc}")
    if isinstance(state, dict) and "state_dict" in state and spec.name == "swav":
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(path, f"a state dict for {spec.label}", type(state).__name__)
    if spec.name == "swav":
        state = {k.replace("module.", ""): v for k, v in state.items()}
        own = model.state_dict()
        missing = sorted(k for k in own if k not in state and not k.startswith("fc."))
        if missing:
            raise InputError(path, "the SwAV ResNet-50 state dict (module.-prefixed resnet50 keys)",
                             f"{len(missing)} backbone keys missing, e.g. {missing[:3]}")
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    else:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InputError(path, f"torchvision {spec.builder} {inp.weights} weights",
                             str(exc).splitlines()[0])


class FeatNet:
    """A feature network ready to embed uint8 frames as one paper does.

    Attributes
    ----------
    name : str
        Key of :data:`NETS` (or ``"clip"``).
    protocol : str
        ``"brain_diffuser"`` or ``"mindeye"``: whose preprocessing and weights.
    random : bool
        Randomly initialised (tests only: the numbers are not the paper's metric).
    batch_size : int
        Frames per forward pass; every pass holds exactly this many frames (the last batch padded by repeating
        its first frame), so a frame's features do not depend on the frames passed with it.
    """

    def __init__(self, name, protocol, model, size, resize, mean, std, description, random, device, batch_size,
                 forward=None):
        self.name = name
        self.protocol = protocol
        self.model = model
        self.size = int(size)
        self.resize = resize
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.random = bool(random)
        self.device = device
        self.batch_size = int(batch_size)
        self._description = description
        self._forward = forward

    def describe(self):
        """One line saying exactly what is computed (for a variant string)."""
        return self._description

    def _run(self, x):
        if self._forward is not None:
            return self._forward(x).float().flatten(1)
        return next(iter(self.model(x).values())).float().flatten(1)  # the feature extractor's one node

    def features(self, frames, batch_size=None):
        """Flattened features of every frame.

        Parameters
        ----------
        frames : ndarray, uint8, shape (K, H, W, 3)
        batch_size : int, optional
            Frames per forward pass (default: the net's ``batch_size``).

        Returns
        -------
        ndarray, float32, shape (K, D)
        """
        import torch

        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{self.name}.features: expected uint8 frames (K, H, W, 3); found "
                             f"{frames.dtype} {frames.shape}")
        b = int(batch_size or self.batch_size)
        if b < 1:
            raise ValueError(f"{self.name}.features: batch_size must be >= 1; found {b}")
        k = frames.shape[0]
        outs = []
        with torch.inference_mode():
            for start in range(0, k, b):
                part = frames[start:start + b]
                m = part.shape[0]
                if m < b:
                    part = np.concatenate([part, np.repeat(part[:1], b - m, axis=0)])
                x = preprocess(part, self.size, self.resize, self.mean, self.std).to(self.device)
                outs.append(self._run(x)[:m].cpu().numpy())
        if not outs:
            return np.zeros((0, 0), np.float32)
        return np.ascontiguousarray(np.concatenate(outs), dtype=np.float32)

    __call__ = features


def _describe(label, layer, weights_txt, size, resize, norm, protocol, random):
    prot = {"brain_diffuser": "Brain-Diffuser eval_extract_features.py",
            "mindeye": "MindEye Reconstruction_Metrics"}[protocol]
    text = (f"{label}: {weights_txt}, {layer}, flattened; frames by {_RESIZE_HOW[resize].format(s=size)}, "
            f"{norm} mean/std, no crop; eval mode, float32 (as {prot})")
    if random:
        text += f" [random weights: not {label}]"
    return text


def load_featnet(name, weights="torch_cache", device="cpu", protocol="brain_diffuser", batch_size=16, seed=0):
    """Load feature network ``name`` as ``protocol``'s evaluation code uses it.

    Parameters
    ----------
    name : {"alexnet2", "alexnet5", "inception", "effnet", "swav"}
    weights : {"torch_cache", "random"}
        ``"torch_cache"``: the paper's weights from ``torch.hub.get_dir()/checkpoints`` (never downloaded);
        ``"random"``: the same torchvision architecture with random weights drawn under ``torch.manual_seed(seed)``
        inside a forked RNG (tests).
    device : str
    protocol : {"brain_diffuser", "mindeye"}
        Whose input size, resize and (EffNet-B) weights.
    batch_size : int
        Frames per forward pass (fixed-shape passes; see :class:`FeatNet`).
    seed : int
        Seed of the random weights.

    Returns
    -------
    FeatNet

    Raises
    ------
    InputError
        ``weights="torch_cache"`` and the weight file is missing (the message names it and how to get it) or
        unreadable.
    """
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    spec, inp = _check(name, protocol)
    if weights not in ("torch_cache", "random"):
        raise ValueError(f"load_featnet: weights must be 'torch_cache' or 'random'; found {weights!r}")
    random = weights == "random"
    if not random:
        path = weight_path(name, protocol)
        if not path.is_file():
            raise InputError(path, f"{spec.label} weights ({inp.source}) in the torch hub cache",
                             f"missing; fmrivid never downloads them - {_how_to_get(name, protocol)} "
                             f"(or set TORCH_HOME)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = _build(spec, random)
    if not random:
        _load_state(model, spec, inp, path)
    model.eval()
    with warnings.catch_warnings():  # "eval nodes are a subsequence of train nodes": we only run eval
        warnings.filterwarnings("ignore", message="NOTE: The nodes obtained by tracing")
        extractor = create_feature_extractor(model, return_nodes=[spec.node]).to(device).eval()
    extractor.requires_grad_(False)
    if spec.name == "swav":
        weights_txt = f"SwAV ResNet-50 ({inp.file}, {inp.source})"
    else:
        weights_txt = f"torchvision {spec.builder} {inp.weights} ({inp.file}; {inp.source})"
    desc = _describe(spec.label, spec.layer, weights_txt, inp.size, inp.resize, "ImageNet", protocol, random)
    return FeatNet(name, protocol, extractor, inp.size, inp.resize, IMAGENET_MEAN, IMAGENET_STD, desc, random,
                   device, batch_size)


def clip_featnet(loaded, protocol="brain_diffuser", batch_size=16):
    """The CLIP image-embedding net of ``protocol`` on an fmrivid ``"clip"`` model (``transformers`` CLIPModel).

    ``get_image_features`` (projection of the post-LayerNorm class token, not normalised) is what OpenAI's
    ``encode_image`` / ``model.visual`` return. Frames get the protocol's resize to 224 and CLIP's mean/std; a
    model whose vision tower expects another size (a tiny test model) gets that size instead, and its
    description says so.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel
    protocol : {"brain_diffuser", "mindeye"}
    batch_size : int

    Returns
    -------
    FeatNet
        ``name="clip"``; ``random`` is True for a tiny (randomly initialised) model.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"featnets: unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}")
    model = loaded.model
    if not hasattr(model, "get_image_features"):
        raise ValueError(f"clip_featnet: expected a 'clip' model; found {type(model).__name__}")
    inp = CLIP_INPUTS[protocol]
    info = getattr(loaded, "info", None) or {}
    native = int(model.config.vision_config.image_size)
    size = inp.size if native == inp.size else native
    random = bool(info.get("tiny"))
    label = "CLIP ViT-L/14"
    what = f"CLIP image embedding of {info.get('spec', type(model).__name__)} (get_image_features)"
    desc = _describe(label, "projected class token, not L2-normalised", what, size, inp.resize, "CLIP",
                     protocol, random)
    if size != inp.size:
        desc += f" [input {size} px, the model's size; the protocol's is {inp.size}: not parity]"
    param = next(model.parameters())

    def forward(x):
        out = model.get_image_features(pixel_values=x.to(param.device, param.dtype))
        return out if hasattr(out, "shape") else out.pooler_output  # transformers >= 5: projected, in pooler_output

    return FeatNet("clip", protocol, model, size, inp.resize, CLIP_MEAN, CLIP_STD, desc, random,
                   param.device, batch_size, forward=forward)


# --------------------------------------------------------------------------- correlations and scores
#: Bytes of float64 feature rows held at once by :func:`corr_to_gt` and :func:`distance`.
MAX_BYTES = 256 * 2 ** 20


def _zrows(x):
    """Rows centred and scaled to unit norm in float64 (NaN rows for constant rows)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]


def _gt_blocks(gt_feats, rows):
    """(start, block) pairs of GT clips: from an (N, T, D) array, or from an iterable/callable of blocks."""
    if callable(gt_feats):
        gt_feats = gt_feats()
    if hasattr(gt_feats, "shape") and len(gt_feats.shape) == 3:
        for start in range(0, gt_feats.shape[0], rows):
            yield start, gt_feats[start:start + rows]
        return
    start = 0
    for block in gt_feats:
        block = np.asarray(block)
        yield start, block
        start += block.shape[0]


def corr_to_gt(rec_feats, gt_feats, max_bytes=MAX_BYTES):
    """Pearson correlation of every reconstruction frame with the same frame of every GT clip.

    Parameters
    ----------
    rec_feats : array, shape (M, T, D)
        Flattened features of M reconstructed clips (a memmap is fine).
    gt_feats : array (N, T, D), or an iterable of (n_b, T, D) blocks, or a callable returning one
        GT clips' features, possibly produced block by block (e.g. computed on the fly).
    max_bytes : int
        About how many bytes of float64 rows are held at once (rec block + GT block): AlexNet(2) has 139,968
        values per frame, so N x T x D in float64 is never formed.

    Returns
    -------
    ndarray, float64, shape (M, N, T)
        ``C[m, n, t]`` = Pearson r of rec clip m frame t with GT clip n frame t (as ``np.corrcoef``: float64,
        clipped to [-1, 1], NaN when either frame's features are constant).
    """
    rec_feats = rec_feats if hasattr(rec_feats, "shape") else np.asarray(rec_feats)
    if len(rec_feats.shape) != 3:
        raise ValueError(f"corr_to_gt: rec_feats must be (M, T, D); found shape {rec_feats.shape}")
    m, t, d = rec_feats.shape
    rows = max(1, int(max_bytes) // (2 * 8 * max(d, 1)))
    cols = []
    for _, g in _gt_blocks(gt_feats, rows):
        if len(g.shape) != 3 or tuple(g.shape[1:]) != (t, d):
            raise ValueError(f"corr_to_gt: GT features must be (N, {t}, {d}) like the reconstructions; found "
                             f"a block of shape {tuple(g.shape)}")
        out = np.empty((m, g.shape[0], t))
        for sg in range(0, g.shape[0], rows):  # a block larger than the budget is cut again
            gb = g[sg:sg + rows]
            for j in range(t):
                zg = _zrows(gb[:, j])
                for sr in range(0, m, rows):
                    out[sr:sr + rows, sg:sg + gb.shape[0], j] = _zrows(rec_feats[sr:sr + rows, j]) @ zg.T
        cols.append(out)
    c = np.concatenate(cols, axis=1) if cols else np.zeros((m, 0, t))
    return np.clip(c, -1.0, 1.0, out=c)


def two_way_from_corr(C, ri, gi):
    """2-way identification of reconstruction rows ``ri`` taken as matching GT clips ``gi``.

    Parameters
    ----------
    C : ndarray, shape (M, N, T)
        :func:`corr_to_gt` output.
    ri, gi : int arrays, shape (K,)
        Reconstruction row ``ri[k]`` is scored as the reconstruction of GT clip ``gi[k]``.

    Returns
    -------
    ndarray, float64, shape (K,)
        For each k: the fraction of the other N - 1 GT clips j != gi[k] with ``C[ri[k], j, t] < C[ri[k],
        gi[k], t]`` (strict: ties and NaN fail, as Brain-Diffuser's ``pairwise_corr_all`` and MindEye's
        ``two_way_identification``), mean over frames t.
    """
    C = np.asarray(C)
    ri = np.asarray(ri, dtype=np.intp).reshape(-1)
    gi = np.asarray(gi, dtype=np.intp).reshape(-1)
    if C.ndim != 3 or ri.shape != gi.shape:
        raise ValueError(f"two_way_from_corr: expected C (M, N, T) and ri, gi of one length; found {C.shape}, "
                         f"{ri.shape}, {gi.shape}")
    n = C.shape[1]
    if n < 2:
        raise ValueError(f"two_way_from_corr: needs at least 2 GT clips; found {n}")
    rows = C[ri]                                    # (K, N, T)
    cong = rows[np.arange(len(ri)), gi]             # (K, T)
    with np.errstate(invalid="ignore"):
        success = rows < cong[:, None, :]           # j == gi is never < itself
    return success.sum(axis=1).mean(axis=1) / (n - 1)


def two_way(C):
    """:func:`two_way_from_corr` with reconstruction i paired with GT clip i: (M,) per clip."""
    C = np.asarray(C)
    idx = np.arange(C.shape[0])
    return two_way_from_corr(C, idx, idx)


def distance(rec_feats, gt_feats, max_bytes=MAX_BYTES):
    """Correlation distance of paired clips, mean over frames.

    Parameters
    ----------
    rec_feats, gt_feats : arrays, shape (M, T, D)
        Reconstruction m is compared with GT m, frame by frame.

    Returns
    -------
    ndarray, float64, shape (M,)
        Mean over frames of ``scipy.spatial.distance.correlation(gt, rec)`` = 1 - Pearson r (float64, clipped
        to [0, 2]; NaN for a constant frame).
    """
    a = rec_feats if hasattr(rec_feats, "shape") else np.asarray(rec_feats)
    b = gt_feats if hasattr(gt_feats, "shape") else np.asarray(gt_feats)
    if len(a.shape) != 3 or tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"distance: expected two (M, T, D) arrays of one shape; found {a.shape}, {b.shape}")
    m, t, d = a.shape
    rows = max(1, int(max_bytes) // (2 * 8 * max(d * t, 1)))
    out = np.empty((m, t))
    for s in range(0, m, rows):
        x = np.asarray(a[s:s + rows], dtype=np.float64).reshape(-1, d)
        y = np.asarray(b[s:s + rows], dtype=np.float64).reshape(-1, d)
        r = np.einsum("ij,ij->i", _zrows(x), _zrows(y))
        out[s:s + rows] = np.clip(1.0 - r, 0.0, 2.0).reshape(-1, t)
    return out.mean(axis=1)
