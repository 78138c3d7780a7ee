"""Model-based metrics of the published protocols: Mind-Animator's ViFi-CLIP score and gated CLIP-pcc.

Read against Mind-Animator's evaluation scripts (``ViFi_CLIP/VIFI_score.py``, ``ST_level_metric.py``) and
ViFi-CLIP's model code:

- **VIFI score**: the cosine between the ViFi-CLIP video embeddings of the GT and of the reconstruction. A
  ViFi-CLIP video embedding is CLIP ViT-B/16's projected image features of the sampled frames, averaged over
  frames *before* the L2 normalisation. The frames come through mmaction's validation pipeline:
  ``SampleFrames(clip_len=8, frame_interval=1, num_clips=32, test_mode=True)`` (an 8-frame clip sampled 32 times;
  a shorter video is looped, so with 6 frames frames 0 and 1 weigh twice), ``Resize((256, 256))`` (bilinear,
  aspect kept), ``CenterCrop(224)``, and ImageNet mean/std normalisation (not CLIP's), on 512 x 512 frames.
- **CLIP-pcc** (their "ST-consistency"): 0 for a clip whose VIFI score is <= 0.6; otherwise the mean cosine of
  the CLIP ViT-B/32 image embeddings of adjacent reconstructed frames (``clip.load`` preprocessing: bicubic
  resize to 224, centre crop, CLIP normalisation), frames resized to 512 x 512 by ``cv2.resize`` first.

Not reproduced: their frames go through GIF and AVI files (palette quantisation, a lossy codec) and CUDA
autocast; fmrivid reads lossless frames and computes in float32. Models come from the local cache: ViFi-CLIP
as a CLIP ViT-B/16 in Hugging Face format holding the released Kinetics-400 fine-tuned weights
(``evaluate.protocol_models.vifi``), ViT-B/32 as ``openai/clip-vit-base-patch32``; ``tiny`` models in tests.
With a model of another input size S (tiny ones), the pipeline scales: resize to round(S x 256 / 224), crop S.
"""

from __future__ import annotations

import cv2
import numpy as np

#: mmaction SampleFrames of ViFi-CLIP's validation pipeline in Mind-Animator's script (NUM_FRAMES 32 in the
#: zero-shot K400 config it loads).
VIFI_CLIP_LEN = 8
VIFI_NUM_CLIPS = 32
VIFI_RESIZE, VIFI_CROP = 256, 224
IMAGENET_MEAN = np.array([123.675, 116.28, 103.53])
IMAGENET_STD = np.array([58.395, 57.12, 57.375])
MA_SIZE = 512
CLIP_PCC_GATE = 0.6


def vifi_frame_indices(n_frames, clip_len=VIFI_CLIP_LEN, num_clips=VIFI_NUM_CLIPS):
    """Frame indices mmaction's ``SampleFrames(clip_len, frame_interval=1, num_clips, test_mode=True)`` draws
    from an ``n_frames``-frame video (out-of-bound indices looped)."""
    n_frames = int(n_frames)
    avg = (n_frames - clip_len + 1) / float(num_clips)
    if n_frames > clip_len - 1:
        offsets = (np.arange(num_clips) * avg + avg / 2.0).astype(np.int32)
    else:
        offsets = np.zeros(num_clips, dtype=np.int32)
    return np.mod((offsets[:, None] + np.arange(clip_len)[None, :]).reshape(-1), n_frames)


def _vifi_pixels(frames, size):
    """uint8 (K, H, W, 3) frames -> float32 (K, 3, size, size): frames at 512 (cv2 as the protocol), bilinear
    resize of the (square) frame to round(size x 256 / 224), centre crop ``size``, ImageNet normalisation."""
    from fmrivid.metrics.pixel import _resize_frame

    scale = round(size * VIFI_RESIZE / VIFI_CROP)
    top = (scale - size) // 2
    out = np.empty((len(frames), 3, size, size), np.float32)
    for k, f in enumerate(frames):
        f = _resize_frame(f, MA_SIZE)
        f = cv2.resize(f, (scale, scale), interpolation=cv2.INTER_LINEAR)[top:top + size, top:top + size]
        out[k] = ((f.astype(np.float64) - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    return out


def _image_size(loaded):
    config = loaded.model.config
    return int(getattr(config, "vision_config", config).image_size)


def vifi_video_embeddings(loaded, clips, batch_size=32):
    """ViFi-CLIP video embeddings (N, D) float64, L2-normalised, of uint8 clips (N, T, H, W, 3).

    Each distinct frame is encoded once; the video embedding is the mean of the projected features over the
    sampled index list (a frame drawn k times weighs k), then normalised, as ViFi-CLIP's forward pass."""
    import torch

    clips = np.asarray(clips)
    n, t = clips.shape[:2]
    size = _image_size(loaded)
    weights = np.bincount(vifi_frame_indices(t), minlength=t).astype(np.float64)
    weights /= weights.sum()
    model = loaded.model
    param = next(model.parameters())
    flat = clips.reshape((n * t,) + clips.shape[2:])
    feats = []
    with torch.inference_mode():
        for start in range(0, len(flat), batch_size):  # fixed-size batches: a frame's features never depend
            part = flat[start:start + batch_size]          # on its batch-mates
            m = len(part)
            if m < batch_size:
                part = np.concatenate([part, np.repeat(part[:1], batch_size - m, axis=0)])
            px = torch.from_numpy(_vifi_pixels(part, size)).to(param.device, param.dtype)
            out = model.get_image_features(pixel_values=px)
            out = out if hasattr(out, "shape") else out.pooler_output  # transformers >= 5: a ModelOutput
            feats.append(out.float().cpu().numpy()[:m])
    feats = np.concatenate(feats).astype(np.float64).reshape(n, t, -1)
    video = np.einsum("ntd,t->nd", feats, weights)
    return video / np.linalg.norm(video, axis=1, keepdims=True)


def vifi_describe(name):
    return (f"cosine of ViFi-CLIP video embeddings of GT and reconstruction ({name}): projected CLIP "
            f"image features of mmaction's test-mode sampling (8-frame clip x 32, looped) averaged then "
            f"normalised; frames at 512x512 (cv2), bilinear resize to 256, centre crop 224, ImageNet mean/std; "
            f"float32, lossless frames (theirs: AVI from GIF, CUDA autocast)")


def clip_pcc_describe(vifi_name, clip_name):
    return (f"mean cosine of CLIP {clip_name} image embeddings of adjacent reconstructed frames (frames "
            f"cv2-resized to 512x512, then the CLIP processor: bicubic 224, centre crop, CLIP normalisation); 0 "
            f"where the VIFI score ({vifi_name}) is <= {CLIP_PCC_GATE}")


def resize_clips(clips, size=MA_SIZE):
    """cv2.resize of every frame to ``size`` x ``size`` with the default INTER_LINEAR (their ST script)."""
    n, t = clips.shape[:2]
    out = np.empty((n, t, size, size, 3), np.uint8)
    for i in range(n):
        for j in range(t):
            out[i, j] = cv2.resize(np.ascontiguousarray(clips[i, j]), (size, size))
    return out


def adjacent_cosine(emb):
    """Mean cosine of adjacent frames' embeddings: (N, T, D) -> (N,)."""
    e = np.asarray(emb, np.float64)
    e = e / np.linalg.norm(e, axis=2, keepdims=True)
    return np.einsum("ntd,ntd->nt", e[:, :-1], e[:, 1:]).mean(axis=1)


def gated(adjacent, vifi_scores, gate=None):
    """Their ``cal_CLIP_pcc``: 0 where the VIFI score is <= gate (default :data:`CLIP_PCC_GATE`), else the
    adjacent-frame cosine."""
    gate = CLIP_PCC_GATE if gate is None else gate
    return np.where(np.asarray(vifi_scores) <= gate, 0.0, np.asarray(adjacent, np.float64))
