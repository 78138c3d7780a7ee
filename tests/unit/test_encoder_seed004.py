"""Seed 004 (encoder-decoder) made faithful: true chunks at the video's frame rate, VGG + SSIM frame-loss terms,
parcel-wise targets.

Each test plants what it checks: the torch SSIM against the metric's scikit-image SSIM, loss terms against their
definition, video frames carrying their own index, parcel means computed independently.
"""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from fmrivid.decoders import encoder, train
from fmrivid.errors import ConfigError, InputError
from fmrivid.features import stages as feature_stages
from fmrivid.io.h5 import read_features
from fmrivid.io.video import write_mp4
from fmrivid.metrics.pixel import ssim_rgb_uniform


def _quiet(msg):
    pass


# --------------------------------------------------------------------------- #
# SSIM
# --------------------------------------------------------------------------- #
def _structured(rng, n, h, w):
    """Gradients, bars and blobs: structure SSIM responds to, and a degraded copy (blur, shift, noise)."""
    yy, xx = np.mgrid[0:h, 0:w]
    gt = np.empty((n, h, w, 3))
    for i in range(n):
        f = rng.uniform(0.1, 0.6, size=3)
        gt[i] = 0.5 + 0.4 * np.sin(f[None, None] * (xx[..., None] + (i + 1) * yy[..., None]))
        gt[i, :, (3 * i) % w:(3 * i) % w + 3] = rng.uniform(size=3)
    rec = 0.5 * gt + 0.5 * np.roll(gt, 1, axis=2) + 0.05 * rng.normal(size=gt.shape)
    return _to_uint8(gt), _to_uint8(rec)


def _to_uint8(a):
    return (np.clip(a, 0, 1) * 255).round().astype(np.uint8)


def _as_tensor(a):
    return torch.from_numpy(a).permute(0, 3, 1, 2).double()


@pytest.mark.parametrize("kind", ["random", "structured", "identical"])
def test_torch_ssim_equals_the_metric(kind):
    rng = np.random.default_rng(1)
    if kind == "random":
        gt = rng.integers(0, 256, size=(4, 16, 20, 3), dtype=np.uint8)
        rec = rng.integers(0, 256, size=(4, 16, 20, 3), dtype=np.uint8)
    else:
        gt, rec = _structured(rng, 4, 18, 24)
        if kind == "identical":
            rec = gt.copy()
    ref = ssim_rgb_uniform(gt[:, None], rec[:, None])  # (N,): one frame per clip
    ours64 = encoder.ssim_uniform(_as_tensor(gt), _as_tensor(rec), data_range=255.0).numpy()
    ours32 = encoder.ssim_uniform(_as_tensor(gt).float() / 255, _as_tensor(rec).float() / 255).numpy()  # in [0, 1]
    assert np.allclose(ours64, ref, rtol=0, atol=1e-10), (ours64, ref)
    assert np.allclose(ours32, ref, rtol=0, atol=2e-5), (ours32, ref)
    assert (kind != "identical") or np.allclose(ref, 1.0)
    assert (kind == "identical") or ref.std() > 0  # the images differ: a constant could not pass


# --------------------------------------------------------------------------- #
# Frame-loss terms
# --------------------------------------------------------------------------- #
def test_frame_loss_terms_follow_their_definition_and_move_the_gradient():
    torch.manual_seed(0)
    target = torch.rand(3, 3, 16, 16)
    frame0 = torch.rand(3, 3, 16, 16)
    vgg = encoder.perceptual_net("tiny", log=_quiet)

    def run(wp, ws):
        frame = frame0.clone().requires_grad_(True)
        terms = encoder.frame_loss_terms(frame, target, wp, ws, vgg)
        terms["frame_loss"].backward()
        return terms, frame.grad.clone()

    base, g_base = run(0.0, 0.0)
    assert "frame_vgg" not in base
    assert torch.allclose(base["frame_loss"], torch.nn.functional.mse_loss(frame0, target))
    vgg_terms, g_vgg = run(0.7, 0.0)
    assert vgg_terms["frame_vgg"] > 0
    assert torch.allclose(vgg_terms["frame_loss"], base["frame_mse"] + 0.7 * vgg_terms["frame_vgg"])
    assert not torch.allclose(g_vgg, g_base)  # the perceptual term reaches the reconstruction
    ssim_terms, g_ssim = run(0.0, 2.0)
    ssim = encoder.ssim_uniform(frame0, target).mean()
    assert torch.allclose(ssim_terms["frame_ssim"], ssim)
    assert torch.allclose(ssim_terms["frame_loss"], base["frame_mse"] + 2.0 * (1 - ssim))
    assert not torch.allclose(g_ssim, g_base)
    # frozen: no weight of the VGG asks for or got a gradient
    assert all(not p.requires_grad and p.grad is None for p in vgg.parameters())
    with pytest.raises(ValueError, match="perceptual"):
        encoder.frame_loss_terms(frame0, target, 1.0, 0.0, None)


def test_tiny_vgg_is_the_torchvision_class_with_vgg16_taps():
    from torchvision.models.vgg import VGG

    msgs = []
    net = encoder.perceptual_net("tiny", log=msgs.append)
    assert any("RANDOM weights" in m and "plumbing" in m for m in msgs)
    assert isinstance(net.features[8], torch.nn.ReLU) and isinstance(net.features[15], torch.nn.ReLU)
    assert len(net.features) == 16
    assert max(p.shape[0] for p in net.parameters()) <= 16  # a few channels
    # the tiny net is the real class: perceptual_net builds it around torchvision's make_layers
    assert "VGG" in net.label and VGG.__module__ == "torchvision.models.vgg"


def test_vgg16_without_cached_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert encoder.vgg16_weights_path() == expected
    with pytest.raises(InputError, match=re.escape(str(expected))):
        encoder.perceptual_net("vgg16", log=_quiet)
    rng = np.random.default_rng(0)
    data = {"train_frames": rng.integers(0, 256, (4, 4, 16, 16, 3), dtype=np.uint8), "train_Y": rng.normal(size=(4, 3)),
            "test_frames": rng.integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)}
    cfg = {**_TINY, "perceptual_weight": 1.0}  # perceptual_model defaults to vgg16
    with pytest.raises(InputError, match="vgg16-397923af.pth"):
        encoder.fit_predict(data, cfg, log=_quiet)


_TINY = {"chunk_frames": 4, "frame_size": 16, "channels3d": [4], "channels2d": [8], "pool_size": 2,
         "decoder_channels": 4, "decoder_upsamples": 2, "dropout": 0.0, "steps": 6, "batch_size": 4,
         "checkpoint_every": 3}


def test_history_logs_each_term_and_the_vgg_is_not_in_the_model_file(tmp_path):
    rng = np.random.default_rng(2)
    data = {"train_frames": rng.integers(0, 256, (8, 4, 16, 16, 3), dtype=np.uint8),
            "train_Y": rng.normal(size=(8, 5)), "test_frames": rng.integers(0, 256, (3, 4, 16, 16, 3), dtype=np.uint8)}
    cfg = {**_TINY, "perceptual_weight": 0.5, "ssim_weight": 0.25, "perceptual_model": "tiny"}
    out = encoder.fit_predict(data, cfg, tmp_path / "m.safetensors", tmp_path / "ck", log=_quiet)
    plain = encoder.fit_predict(data, _TINY, log=_quiet)
    for row in out["history"]:
        assert {"voxel_mse", "frame_mse", "frame_ssim", "frame_vgg", "frame_loss"} <= set(row)
        frame = row["frame_mse"] + 0.5 * row["frame_vgg"] + 0.25 * (1 - row["frame_ssim"])
        assert np.isclose(row["frame_loss"], frame, rtol=1e-5)
        assert np.isclose(row["loss"], 0.5 * row["voxel_mse"] + 0.5 * row["frame_loss"], rtol=1e-5)
    assert "frame_vgg" not in plain["history"][0]
    assert out["history"][0]["voxel_mse"] == plain["history"][0]["voxel_mse"]  # same init, same first batch
    assert not np.array_equal(out["pred"], plain["pred"])  # the extra terms changed the training
    train.write_losses(tmp_path / "losses.tsv", out["history"])
    assert {"frame_vgg", "frame_ssim", "frame_loss"} <= set(pd.read_csv(tmp_path / "losses.tsv", sep="\t").columns)
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        keys = list(f.keys())
    n_model = len(encoder.EncoderDecoder(5, encoder.config(cfg)).state_dict())
    assert len(keys) == n_model and not any(k.startswith(("features", "perceptual", "vgg")) for k in keys)
    model, mcfg = encoder.load_model(tmp_path / "m.safetensors")
    assert mcfg["perceptual_weight"] == 0.5
    assert np.array_equal(encoder.predict(model, data["test_frames"], mcfg)[0], out["pred"])


def test_config_refuses_bad_loss_and_source_settings():
    with pytest.raises(ConfigError, match="perceptual_weight"):
        encoder.config({"perceptual_weight": -1})
    with pytest.raises(ConfigError, match="perceptual_model"):
        encoder.config({"perceptual_model": "vgg19"})
    with pytest.raises(ConfigError, match="frame_source"):
        encoder.config({"frame_source": "movie"})
    with pytest.raises(ConfigError, match="parcels"):
        encoder.config({"parcels": ""})


# --------------------------------------------------------------------------- #
# True chunks at the stimulus frame rate
# --------------------------------------------------------------------------- #
def _index_video(path, n, fps, side=24):
    """Frame i is uniform grey 8 + 4 i: its index survives H.264 (error << 2) and resizing."""
    frames = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        frames[i] = 8 + 4 * i
    write_mp4(path, frames, fps)


def _indices(chunks):
    return np.rint((chunks.reshape(*chunks.shape[:2], -1).mean(-1) - 8) / 4).astype(int)


def test_encoder_chunks_are_consecutive_frames_from_the_clip_start(tmp_path):
    _index_video(tmp_path / "movie.mp4", 58, 30)
    _index_video(tmp_path / "other.mp4", 40, 30)
    starts = {"a": 0.0, "b": 0.5, "c": 0.9, "d": 0.2}  # frames 0, 15, 27 of movie; 6 of other
    table = pd.DataFrame({"clip_id": list(starts), "split": ["train", "train", "test", "test"],
                          "file": [str(tmp_path / f) for f in ("movie.mp4", "movie.mp4", "movie.mp4", "other.mp4")],
                          "start_s": list(starts.values())})
    table.to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    out = tmp_path / "encoder_chunks.h5"
    feature_stages.encoder_chunks(tmp_path / "splits.tsv", 24, 12, out, log=_quiet)
    ids, chunks, attrs = read_features(out)
    assert ids == list(starts) and chunks.shape == (4, 24, 12, 12, 3) and chunks.dtype == np.uint8
    assert attrs["kind"] == "encoder_chunks" and int(attrs["n_frames"]) == 24
    for row, start in enumerate(starts.values()):
        first = round(start * 30)
        assert list(_indices(chunks)[row]) == list(range(first, first + 24)), (row, _indices(chunks)[row])
    # the encoder takes them as they are: 24 distinct frames, the middle frame is first + 12
    x = encoder.prepare_chunks(chunks, 24, 12)
    assert np.array_equal(x, chunks) and len(np.unique(_indices(x)[2])) == 24


def test_too_short_video_names_it_fps_start_and_frames_available(tmp_path):
    _index_video(tmp_path / "demo_clip.mp4", 8, 4)  # the demo's clips: 2 s at 4 fps
    pd.DataFrame({"clip_id": ["x"], "split": ["train"], "file": [str(tmp_path / "demo_clip.mp4")],
                  "start_s": [0.5]}).to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    with pytest.raises(InputError) as err:
        feature_stages.encoder_chunks(tmp_path / "splits.tsv", 32, 8, tmp_path / "c.h5", log=_quiet)
    msg = str(err.value)
    assert "demo_clip.mp4" in msg and "4-fps" in msg and "0.5 s" in msg and "6 frames available" in msg, msg
    assert "chunk_frames" in msg and not (tmp_path / "c.h5").exists()


def test_prepare_chunks_keeps_frames_already_chunk_long():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(3, 5, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(encoder.prepare_chunks(frames, 5, 8), frames)
    resized = encoder.prepare_chunks(frames, 5, 4)  # same frames, only resized
    manual = frames.reshape(3, 5, 4, 2, 4, 2, 3).astype(np.float64).mean((3, 5))
    assert np.abs(resized.astype(np.float64) - manual).max() <= 0.5 + 1e-9
    # fewer frames than chunk_frames are still spread by repetition
    assert encoder.prepare_chunks(frames[:, :2], 5, 8).shape == (3, 5, 8, 8, 3)


# --------------------------------------------------------------------------- #
# Parcel targets
# --------------------------------------------------------------------------- #
def _atlas(tmp_path, shape=(5, 6, 4), affine=None, name="schaefer_toy.nii.gz", seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=shape).astype(np.int16)  # 0 background, parcels 1-3
    labels[0, 0, 0] = 7  # a parcel no selected voxel falls in
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    path = tmp_path / name
    nib.save(nib.Nifti1Image(labels, affine), str(path))
    return path, labels


def _subject(rng, labels, n_vox=30, window=1):
    shape = labels.shape
    flat = rng.choice(np.arange(1, labels.size), size=n_vox, replace=False)  # not voxel 0 (parcel 7)
    ijk = np.column_stack(np.unravel_index(flat, shape))
    return {"train_X": rng.normal(size=(10, window * n_vox)), "test_X": rng.normal(size=(4, window * n_vox)),
            "ijk": ijk, "shape": shape, "affine": np.diag([2.0, 2.0, 2.0, 1.0]), "space": "volume"}


@pytest.mark.parametrize("window", [1, 2])
def test_parcel_targets_are_means_of_the_selected_voxels(tmp_path, window):
    path, labels = _atlas(tmp_path)
    sub = _subject(np.random.default_rng(4), labels, window=window)
    msgs = []
    out = encoder.parcel_targets(sub, path, log=msgs.append)
    vox_labels = labels[tuple(sub["ijk"].T)]
    kept = sorted(set(vox_labels) - {0})
    assert list(out["parcels"]) == kept
    v = len(vox_labels)
    for split in ("train", "test"):
        X = sub[f"{split}_X"]
        want = np.empty((len(X), window * len(kept)))
        for t in range(window):  # independent reference: a loop over volumes and parcels
            for j, p in enumerate(kept):
                want[:, t * len(kept) + j] = X[:, t * v:(t + 1) * v][:, vox_labels == p].mean(1)
        assert np.allclose(out[f"{split}_X"], want, atol=1e-5)
    assert list(out["n_voxels"]) == [int((vox_labels == p).sum()) for p in kept]
    # parcel 7 (no selected voxel) and the background voxels are dropped, and said so
    assert any(f"{len(kept)} parcels" in m and "without a selected voxel dropped" in m for m in msgs), msgs


def test_parcels_refuse_an_atlas_off_the_data_grid_and_cifti(tmp_path):
    path, labels = _atlas(tmp_path)
    sub = _subject(np.random.default_rng(5), labels)
    bad_shape, _ = _atlas(tmp_path, shape=(5, 6, 5), name="wrong_shape.nii.gz")
    with pytest.raises(InputError, match=r"wrong_shape\.nii\.gz.*\(5, 6, 4\).*\(5, 6, 5\)"):
        encoder.parcel_targets(sub, bad_shape, log=_quiet)
    bad_affine, _ = _atlas(tmp_path, affine=np.diag([3.0, 3.0, 3.0, 1.0]), name="wrong_affine.nii.gz")
    with pytest.raises(InputError, match="wrong_affine.nii.gz"):
        encoder.parcel_targets(sub, bad_affine, log=_quiet)
    with pytest.raises(ConfigError, match="volumetric"):
        encoder.parcel_targets({**sub, "space": "cifti"}, path, log=_quiet)


# --------------------------------------------------------------------------- #
# The stage: true chunks in, parcel rows out
# --------------------------------------------------------------------------- #
def test_encoder_model_stage_reads_chunks_and_scores_parcels(tmp_path):
    from fmrivid.decoders.stages import encoder_model
    from fmrivid.io.h5 import write_features
    from fmrivid.preprocess.pipeline import SubjectData, write_subject

    rng = np.random.default_rng(6)
    path, labels = _atlas(tmp_path)
    sub = _subject(rng, labels, n_vox=30)
    train_ids, test_ids = [f"tr{i}" for i in range(10)], [f"te{i}" for i in range(4)]
    write_subject(tmp_path / "sub-01.h5", SubjectData("01", sub["train_X"], train_ids, sub["test_X"], test_ids,
                                                      sub["ijk"], sub["affine"], sub["shape"], np.ones(30)))
    chunks = rng.integers(0, 256, size=(14, 4, 16, 16, 3), dtype=np.uint8)
    write_features(tmp_path / "encoder_chunks.h5", train_ids + test_ids, chunks,
                   {"kind": "encoder_chunks", "n_frames": 4, "size": 16})
    cfg = {"device": "cpu", "encoder": {**_TINY, "steps": 2, "frame_source": "video", "parcels": str(path)}}
    outs = {k: tmp_path / f"out_{k}" for k in ("model.safetensors", "pred.h5", "losses.tsv", "table.tsv")}
    encoder_model("01", tmp_path / "sub-01.h5", tmp_path / "encoder_chunks.h5", cfg, {"n_boot": 10}, 0,
                  outs["model.safetensors"], outs["pred.h5"], outs["losses.tsv"], outs["table.tsv"],
                  parcels_path=str(path), log=_quiet)
    n_parcels = len(set(labels[tuple(sub["ijk"].T)]) - {0})
    table = pd.read_csv(outs["table.tsv"], sep="\t")
    r_rows = table[table["metric"] == "voxel_r"]
    assert len(r_rows) == 2 and set(table["metric"]) == {"voxel_r", "decoded_frame_ssim"}
    assert all(f"per parcel, {n_parcels} parcels" in v for v in r_rows["variant"])
    _, pred, attrs = read_features(outs["pred.h5"])
    assert pred.shape == (4, n_parcels) and attrs["target"] == "parcels"
    assert {"frame_ssim", "frame_loss", "run"} <= set(pd.read_csv(outs["losses.tsv"], sep="\t").columns)
    # frame_source video with the shared frames file (another kind) is refused, naming the file
    write_features(tmp_path / "frames.h5", train_ids + test_ids, chunks, {"kind": "frames", "n_frames": 4})
    with pytest.raises(InputError, match="frames.h5"):
        encoder_model("01", tmp_path / "sub-01.h5", tmp_path / "frames.h5", cfg, {"n_boot": 10}, 0,
                      outs["model.safetensors"], outs["pred.h5"], outs["losses.tsv"], outs["table.tsv"], log=_quiet)
