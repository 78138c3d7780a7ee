"""Published evaluation protocols, reproduced with their quirks, beside fmrivid's own definitions.

A table comparing our number with a paper's is only honest when both are computed the same way. Read against
the papers' public evaluation scripts, several differ from the textbook definition (and from fmrivid's default
rows, which stay the reference of every report):

- **Mind-Animator** (its metric script): frames at 512 x 512, 8 per clip; SSIM on RGB (scikit-image, 7 x 7
  uniform window, data_range 255); PSNR ``20 log10(255 / sqrt(MSE))`` with 100 only when MSE < 1e-10 (a
  one-level difference at 512 px already scores ~107 dB); "Hue-PCC": ``cv2.cvtColor(frame, COLOR_BGR2HSV)`` on
  RGB frames (red and blue swapped), the 8-bit hue (0-179) divided by 360, cosine similarity (NaN for two
  all-zero hue frames, as their division gives); EPE (their EPE.py): Farneback flows of
  ``cv2.cvtColor(frame, COLOR_BGR2GRAY)`` grey frames (the same swap) at 512 px (at 256 px the same motion
  is half as many pixels: fmrivid's own ``epe_farneback`` at the stored size is not comparable with theirs).
  Their ViFi-CLIP score and ViFi-gated CLIP-pcc need models: :mod:`fmrivid.metrics.protocol_models`.
- **Brain-Diffuser** and **MindEye** also score 2-way identification on AlexNet / InceptionV3 / CLIP features
  and EffNet-B / SwAV distances: :mod:`fmrivid.metrics.featnets`.
- **MinD-Video** (``eval_metrics.ssim_score_only``): SSIM on RGB, 7 x 7 uniform window, data_range 255,
  frames at 256 x 256, 6 per clip. GLFA evaluates with the same function.
- **Brain-Diffuser** (``evaluate_reconstruction.py``): the reconstruction resized to 425 x 425 by PIL's default
  (bicubic); PixCorr = ``np.corrcoef`` of the flattened RGB images in [0, 1]; SSIM of ``rgb2gray`` images with
  scikit-image 0.17's ``multichannel=True`` on a 2-D grey image, which treats every image COLUMN as a channel:
  a mean of column-wise 1-D SSIMs (Gaussian sigma 1.5, 11 taps, no sample covariance, data_range 1).
- **NEURONS**: the same column-wise 1-D grey SSIM (``channel_axis=-1`` on a grey image), at 256 x 256.
- **MindEye**: PixCorr and a true 2-D grey SSIM (same Gaussian settings) after torchvision's bilinear resize to
  425 x 425.

Each protocol is a list of :class:`ProtocolMetric`: a batch function ``fn(gt, rec) -> (N,)`` on uint8 clips
(N, T, H, W, 3) at the protocol's frame size, its description, and the published-table key it reports. Rows
are named ``<metric> (<paper> protocol)``; the variant says what is computed and whether the frame count is the
protocol's (the clips are never resampled in time: with another count the variant says "not parity").
Adding a protocol: one entry in :data:`PROTOCOLS`, its functions here, its test against a re-implementation
of the paper's function (``tests/unit/test_protocols.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fmrivid.errors import ConfigError
from fmrivid.metrics import pixel

__all__ = ["PROTOCOLS", "Protocol", "ProtocolMetric", "check_protocols", "column_ssim_gray", "label",
           "protocol_rows"]

#: Clips per call of a protocol metric: bounds memory (8 clips x 6 frames at 512 px in float64: ~0.4 GB per
#: intermediate array) whatever the chunk size.
CLIP_BATCH = 8
GAUSS_SIGMA = 1.5
GAUSS_TRUNCATE = 3.5  # scikit-image's 11-tap window for sigma 1.5


@dataclass(frozen=True)
class ProtocolMetric:
    name: str         # e.g. "ssim"
    key: str          # the published-table metric key it reports (report/published_cc2017.tsv)
    fn: object        # fn(gt, rec) -> (N,) on uint8 clips at the protocol's frame size
    how: str          # what is computed, exactly
    greater: bool = True
    needs: tuple = ()  # models of evaluate.protocol_models it needs: computed in the suite
    #                    (fmrivid.metrics.protocol_models), not by ``fn`` (None)


@dataclass(frozen=True)
class Protocol:
    name: str
    paper: str
    size: int         # frame height and width the paper's script compares at
    n_frames: object  # frames per clip in the paper's evaluation; None: an image protocol, applied to every frame
    resize: str       # how frames reach that size here
    source: str       # the script whose behaviour is reproduced
    metrics: tuple
    resize_fn: object = None  # resize_fn(clips, size) -> uint8 clips, applied before every metric; None: the
    #                           metric functions take the clips at their original size and resize themselves


def label(metric, protocol):
    """Row name of a protocol metric: ``<metric> (<paper> protocol)``."""
    return f"{metric} ({PROTOCOLS[protocol].paper} protocol)"


# --------------------------------------------------------------------------- resizing
def _per_frame_resize(frames, size, resize_frame):
    n, t, h, w, _ = frames.shape
    if (h, w) == (size, size):
        return frames
    out = np.empty((n, t, size, size, 3), np.uint8)
    for i in range(n):
        for j in range(t):
            out[i, j] = resize_frame(frames[i, j])
    return out


def _resize_cv2(frames, size):
    """cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging (fmrivid's resize)."""
    return _per_frame_resize(frames, size, lambda f: pixel._resize_frame(f, size))


def _resize_pil_bicubic(frames, size):
    """PIL ``Image.resize((size, size))`` with its default filter (bicubic), as Brain-Diffuser's script."""
    from PIL import Image

    return _per_frame_resize(frames, size, lambda f: np.asarray(
        Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC)))


def _resize_torch_bilinear(frames, size):
    """torchvision ``Resize(size, BILINEAR)`` on float tensors in [0, 1], without antialiasing (the tensor default
    of the torchvision MindEye ran); returns float64 in [0, 1]."""
    import torch
    from torchvision.transforms import functional as TF

    n, t, h, w, _ = frames.shape
    x = torch.from_numpy(np.ascontiguousarray(frames)).reshape(n * t, h, w, 3).permute(0, 3, 1, 2).double() / 255
    if (h, w) != (size, size):
        x = TF.resize(x, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    return x.permute(0, 2, 3, 1).reshape(n, t, size, size, 3).numpy()


# --------------------------------------------------------------------------- metric functions
def _gray(frames01):
    """scikit-image ``rgb2gray`` weights (ITU-R 601: 0.2125, 0.7154, 0.0721) on float frames in [0, 1]."""
    from skimage.color import rgb2gray

    return rgb2gray(frames01)


def column_ssim_gray(a, b):
    """Mean over columns of the 1-D SSIM down each column: what scikit-image computes for a 2-D grey image
    passed with ``multichannel=True`` (0.17) or ``channel_axis=-1``.

    Parameters
    ----------
    a, b : ndarray, float, shape (..., H, W)
        Grey images in [0, 1] (data_range 1); leading axes are batched.

    Returns
    -------
    ndarray, shape (...)
        Gaussian window (sigma 1.5, truncate 3.5: 11 taps, reflect mode) along H only, K1 0.01, K2 0.03,
        population covariance, the 5 rows at each end cropped, mean over the rest and over columns.

    Notes
    -----
    All columns and frames in one vectorised pass: 3.9x faster than scikit-image's per-column loop on 16 grey
    425 x 425 frames (0.53 s vs 2.07 s on 2 cores), equal to 2e-18 (``tests/unit/test_protocols.py``).
    """
    from scipy.ndimage import gaussian_filter1d

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    axis = a.ndim - 2

    def f(x):
        return gaussian_filter1d(x, GAUSS_SIGMA, axis=axis, truncate=GAUSS_TRUNCATE, mode="reflect")

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ua, ub = f(a), f(b)
    va = f(a * a) - ua * ua
    vb = f(b * b) - ub * ub
    vab = f(a * b) - ua * ub
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    pad = int(GAUSS_TRUNCATE * GAUSS_SIGMA + 0.5)
    return s[..., pad:-pad, :].mean(axis=(-2, -1))


def _ssim_gray_2d(a, b):
    """2-D grey SSIM, Gaussian window, population covariance, data_range 1 (per frame, scikit-image)."""
    from skimage.metrics import structural_similarity

    return structural_similarity(a, b, gaussian_weights=True, sigma=GAUSS_SIGMA, use_sample_covariance=False,
                                 data_range=1.0)


def _ssim_rgb(gt, rec):
    return pixel.ssim_rgb_uniform(gt, rec)


def _psnr_mind_animator(gt, rec):
    d = gt.astype(np.float64) - rec.astype(np.float64)
    mse = np.mean(d * d, axis=(2, 3, 4))  # (N, T)
    with np.errstate(divide="ignore"):
        val = 20 * np.log10(255 / np.sqrt(mse))
    return np.where(mse < 1e-10, 100.0, val).mean(axis=1)


def _hue_mind_animator(gt, rec):
    n, t = gt.shape[:2]
    out = np.empty((n, t))
    for i in range(n):
        for j in range(t):
            h1 = cv2.cvtColor(np.ascontiguousarray(rec[i, j]), cv2.COLOR_BGR2HSV)[..., 0] / 360.0
            h2 = cv2.cvtColor(np.ascontiguousarray(gt[i, j]), cv2.COLOR_BGR2HSV)[..., 0] / 360.0
            with np.errstate(invalid="ignore", divide="ignore"):
                out[i, j] = np.sum(h1 * h2) / (np.sqrt(np.sum(h1 ** 2)) * np.sqrt(np.sum(h2 ** 2)))
    return out.mean(axis=1)


def _epe_mind_animator(gt, rec):
    """Their EPE.py: Farneback flow (0.5, 3, 15, 3, 5, 1.2, 0) of ``cv2.cvtColor(RGB frame, COLOR_BGR2GRAY)``
    (grey weights of red and blue swapped), end-point error averaged over pixels and frame pairs; NaN with one
    frame."""
    from fmrivid.metrics.motion import FARNEBACK_PARAMS

    n, t = gt.shape[:2]
    if t < 2:
        return np.full(n, np.nan)

    def flows(clip):
        g = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_BGR2GRAY) for f in clip]
        return np.stack([cv2.calcOpticalFlowFarneback(g[k], g[k + 1], None, *FARNEBACK_PARAMS)
                         for k in range(t - 1)])

    return np.array([np.linalg.norm(flows(gt[i]) - flows(rec[i]), axis=-1).mean() for i in range(n)])


def _pixcorr01(gt, rec):
    """np.corrcoef of the flattened RGB frames in [0, 1], mean over frames (NaN for a constant frame)."""
    n, t = gt.shape[:2]
    a = gt.reshape(n, t, -1).astype(np.float64) / 255.0
    b = rec.reshape(n, t, -1).astype(np.float64) / 255.0
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return r.mean(axis=1)


def _column_ssim_frames(gt, rec):
    return column_ssim_gray(_gray(gt.astype(np.float64) / 255.0), _gray(rec.astype(np.float64) / 255.0)).mean(1)


def _pixcorr_mindeye(gt, rec):
    a, b = _resize_torch_bilinear(gt, 425), _resize_torch_bilinear(rec, 425)
    n, t = a.shape[:2]
    a = a.reshape(n, t, -1) - a.reshape(n, t, -1).mean(-1, keepdims=True)
    b = b.reshape(n, t, -1) - b.reshape(n, t, -1).mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))).mean(1)


def _ssim_mindeye(gt, rec):
    a, b = _gray(_resize_torch_bilinear(gt, 425)), _gray(_resize_torch_bilinear(rec, 425))
    n, t = a.shape[:2]
    return np.array([[_ssim_gray_2d(b[i, j], a[i, j]) for j in range(t)] for i in range(n)]).mean(1)


_SSIM_RGB = ("scikit-image SSIM on RGB (channel_axis=-1), 7x7 uniform window, sample covariance, data_range=255, "
             "per frame, mean over frames")
_COLUMN_SSIM = ("SSIM of rgb2gray frames in [0,1] passed to scikit-image with a channel flag on a 2-D image: a "
                "mean of column-wise 1-D SSIMs (Gaussian sigma 1.5, 11 taps, population covariance, "
                "data_range=1), not a 2-D SSIM; mean over frames")

#: Brain-Diffuser's and MindEye's feature-network metrics (:mod:`fmrivid.metrics.featnets`): the same six in
#: both papers, each with its own preprocessing (and EffNet-B weights).
_TWO_WAY = ("2-way identification: np.corrcoef of the flattened features of GT and reconstruction, success = r < "
            "congruent r (strict), successes / (N - 1), distractors frame t of the other clips; mean over frames")
_DISTANCE = ("correlation distance (scipy.spatial.distance.correlation, 1 - Pearson r) of the flattened features "
             "of GT and reconstruction; mean over frames; lower is better")
_FEATNET_METRICS = tuple(
    ProtocolMetric(f"{net}_2way", f"{net}_2way", None, f"{_TWO_WAY}; {label}", needs=("featnets",))
    for net, label in (("alexnet2", "AlexNet(2)"), ("alexnet5", "AlexNet(5)"), ("inception", "InceptionV3"),
                       ("clip", "CLIP"))) + tuple(
    ProtocolMetric(f"{net}_distance", f"{net}_distance", None, f"{_DISTANCE}; {label}", greater=False,
                   needs=("featnets",)) for net, label in (("effnet", "EffNet-B"), ("swav", "SwAV")))

#: MinD-Video's ``ssim_score_only``, which GLFA evaluates with too.
_MINDVIDEO_SSIM = (ProtocolMetric("ssim", "ssim_rgb_uniform", _ssim_rgb, _SSIM_RGB),)
_CV2 = "cv2 INTER_AREA/INTER_LINEAR"

PROTOCOLS = {p.name: p for p in [
    Protocol("mind_animator", "Mind-Animator", 512, 8, _CV2, "its metric script", (
        ProtocolMetric("ssim", "ssim_rgb_uniform", _ssim_rgb, _SSIM_RGB),
        ProtocolMetric("psnr", "psnr", _psnr_mind_animator,
                       "20*log10(255/sqrt(MSE)) per RGB frame, 100 only when MSE < 1e-10; mean over frames"),
        ProtocolMetric("hue_pcc", "hue_cos", _hue_mind_animator,
                       "cosine of the hue of cv2.cvtColor(RGB frame, COLOR_BGR2HSV) (red and blue swapped), "
                       "8-bit hue / 360; NaN for two all-zero hues; mean over frames (called Hue-PCC; not "
                       "Pearson)"),
        ProtocolMetric("epe", "epe_farneback", _epe_mind_animator,
                       "end-point error of Farneback flows (0.5, 3, 15, 3, 5, 1.2, 0) of cv2.cvtColor(RGB frame, "
                       "COLOR_BGR2GRAY) (red and blue weights swapped), mean over pixels and frame pairs; lower is "
                       "better", greater=False),
        ProtocolMetric("vifi_score", "vifi_score", None, "ViFi-CLIP video score (VIFI_score.py)", needs=("vifi",)),
        ProtocolMetric("clip_pcc", "clip_pcc_adjacent", None, "ViFi-gated CLIP ViT-B/32 adjacent-frame cosine "
                       "(ST_level_metric.py)", needs=("vifi", "clip_b32")),
    ), _resize_cv2),
    Protocol("mindvideo", "MinD-Video", 256, 6, _CV2, "eval_metrics.ssim_score_only", _MINDVIDEO_SSIM, _resize_cv2),
    Protocol("glfa", "GLFA", 256, 16, _CV2, "MinD-Video's ssim_score_only (GLFA §4.3)", _MINDVIDEO_SSIM, _resize_cv2),
    Protocol("brain_diffuser", "Brain-Diffuser", 425, None, "PIL Image.resize default (bicubic), GT and reconstruction",
             "evaluate_reconstruction.py (scikit-image 0.17)", (
                 ProtocolMetric("pixcorr", "pixcorr", _pixcorr01,
                                "np.corrcoef of the flattened RGB frame in [0,1] (NaN for a constant frame); mean "
                                "over frames"),
                 ProtocolMetric("ssim", "ssim_gray_gaussian", _column_ssim_frames, _COLUMN_SSIM),
                 *_FEATNET_METRICS,
             ), _resize_pil_bicubic),
    Protocol("neurons", "NEURONS", 256, 6, _CV2, "its eval_metrics.py", (
        ProtocolMetric("ssim", "ssim_gray_gaussian", _column_ssim_frames, _COLUMN_SSIM),
        ProtocolMetric("clip_pcc", "clip_pcc_allpairs", None,
                       "mean off-diagonal cosine (sklearn cosine_similarity, diagonal zeroed, sum / (T (T-1))) of "
                       "the CLIP image embeddings (get_image_features, the model's processor) of all pairs of "
                       "reconstructed frames, frames at the stored size (clip_score_frame)", needs=("clip",)),
    ), _resize_cv2),
    Protocol("mindeye", "MindEye", 425, None, "torchvision Resize(425, BILINEAR, antialias=False) on [0,1] tensors",
             "its reconstruction metrics notebook", (
                 ProtocolMetric("pixcorr", "pixcorr", _pixcorr_mindeye,
                                "Pearson r of the flattened RGB frame in [0,1]; mean over frames"),
                 ProtocolMetric("ssim", "ssim_gray_gaussian", _ssim_mindeye,
                                "2-D SSIM of rgb2gray frames in [0,1], Gaussian sigma 1.5, population covariance, "
                                "data_range=1; mean over frames"),
                 *_FEATNET_METRICS,
             )),
]}

#: Protocols whose papers score N-way video classification with MinD-Video's ``video_classify_metric``:
#: VideoMAE rebuilt for the clip's own frame count and fed the frames as they are (fmrivid's default resamples
#: every clip to the model's 16 frames). Their rows are computed once, as :data:`NWAY_LABEL`.
NWAY_NATIVE = ("mindvideo", "mind_animator", "neurons", "glfa")
NWAY_LABEL = "nway_topk (MinD-Video protocol)"


def wants_native_nway(names):
    """Whether any protocol of ``names`` scores video N-way as MinD-Video's code does."""
    return any(n in NWAY_NATIVE for n in check_protocols(names))


#: What ``evaluate.protocol`` accepts: fmrivid's own definitions and the presets above.
NAMES = ("fmrivid",) + tuple(PROTOCOLS)


#: Published numbers of a protocol's paper that its public evaluation code does not compute: (protocol,
#: published metric key) -> why no protocol row reproduces them.
NOT_IN_CODE = {
    ("mindvideo", "psnr"): "MinD-Video's public evaluation code (scripts/run_metrics.py, eval_metrics.py) "
                           "computes no PSNR: no protocol to reproduce",
    ("mind_animator", "retrieval_large_top10"): "Mind-Animator's large set adds its own HCP clips' embeddings, "
                                                "which are not public (Retrieval/Large_set.py): fmrivid's "
                                                "large-gallery row (other clips as distractors) is fmrivid_value, "
                                                "not parity",
}


def check_protocols(names):
    """The protocol list of ``evaluate.protocol``, checked (fmrivid first and required)."""
    names = [str(n) for n in (names or ["fmrivid"])]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ConfigError(f"evaluate.protocol: expected names among {list(NAMES)}; found {unknown}")
    if "fmrivid" not in names:
        raise ConfigError(f"evaluate.protocol: expected 'fmrivid' in the list (its definitions are the reference "
                          f"the report, controls and headline are built on); found {names}")
    return list(dict.fromkeys(names))


def variant(protocol, metric, n_frames, how=None):
    """Variant string of a protocol row: what is computed (``how``, default ``metric.how``), at which size, and
    whether the frame count is the paper's."""
    p = PROTOCOLS[protocol]
    if p.n_frames is None:
        frames = f"each of the {n_frames} frames per clip scored as an image (an image protocol)"
    elif n_frames == p.n_frames:
        frames = f"{n_frames} frames per clip, as the protocol"
    else:
        frames = f"{n_frames} frames per clip (the protocol: {p.n_frames}; not parity)"
    return (f"{how or metric.how}; frames at {p.size}x{p.size} ({p.resize}); {frames}; {p.paper} protocol, as "
            f"{p.source} computes it")


def protocol_rows(protocols, gt, rec):
    """Per-clip values of every protocol metric: ``[(protocol, metric, resized_pair_fn, values), ...]``.

    ``gt`` and ``rec`` are uint8 (N, T, H, W, 3) clips at any size; each protocol resizes them to its own. The
    pair function ``fn(gt_clips, rec_clips)`` takes clips at the ORIGINAL size (it resizes), for the shuffled
    pairings of the permutation test.
    """
    out = []
    for name in check_protocols(protocols):
        if name == "fmrivid":
            continue
        p = PROTOCOLS[name]
        for m in p.metrics:
            if m.needs:
                continue
            if p.resize_fn is None:
                def one(g, r, m=m):
                    return m.fn(g, r)
            else:
                def one(g, r, m=m, p=p):
                    return m.fn(p.resize_fn(g, p.size), p.resize_fn(r, p.size))

            def fn(g, r, one=one):  # a few clips at a time: 512-px float64 frames of a whole chunk are GBs
                return np.concatenate([one(g[i:i + CLIP_BATCH], r[i:i + CLIP_BATCH])
                                       for i in range(0, len(g), CLIP_BATCH)]) if len(g) else np.zeros(0)
            out.append((name, m, fn, fn(gt, rec)))
    return out
