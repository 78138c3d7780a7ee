"""GLFA stage-2 co-training (seed 002 Eq. 6): the UNet's attention/temporal parts, every subject's GLFA alignment
and the fMRI-to-condition head learn together from L_denoise + L_GLFA; generation reads the head's tokens."""

import numpy as np
import pytest
import torch

from fmrivid import models
from fmrivid.errors import ConfigError
from fmrivid.generate import cotrain
from fmrivid.generate.finetune import trainable_parameter_names

H = W = 8
N_TRAIN, N_TEST = 6, 3


def _subject_maps(seed, shift):
    """Flat maps of one subject: a shared per-clip pattern, its topography shifted by ``shift`` columns (what
    GLFA undoes), plus subject noise."""
    rng = np.random.default_rng(100)
    shared = rng.standard_normal((N_TRAIN + N_TEST, H, W)).astype(np.float32)
    noise = np.random.default_rng(seed).standard_normal(shared.shape).astype(np.float32) * 0.1
    maps = np.roll(shared, shift, axis=2) + noise
    ids = [f"c{k}" for k in range(N_TRAIN + N_TEST)]
    return {"train_maps": maps[:N_TRAIN], "train_ids": ids[:N_TRAIN], "test_maps": maps[N_TRAIN:],
            "test_ids": ids[N_TRAIN:], "mask": np.ones((H, W), bool)}


def _data():
    loaded = models.load("tiny", "text_to_video", seed=0)
    unet = loaded.model.unet
    c, dim = int(unet.config.in_channels), int(unet.config.cross_attention_dim)
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((N_TRAIN, 2, c, 4, 4)).astype(np.float32)
    tokens = rng.standard_normal((N_TRAIN, 5, dim)).astype(np.float32)
    maps = {"1": _subject_maps(1, 0), "2": _subject_maps(2, 4)}  # sub-2: shifted by one 4-px parcel
    return loaded, maps, [f"c{k}" for k in range(N_TRAIN)], latents, tokens


ALIGN = {"parcel_size": 4, "kernel_size": 3, "lambda_const": 0.1}
CFG = {"steps": 12, "batch_size": 4, "lr": 1e-3, "head_lr": 2e-2, "checkpoint_every": 12, "head_rank": 4}


def test_cotraining_trains_unet_parts_alignment_and_head_together(tmp_path):
    loaded, maps, ids, latents, tokens = _data()
    before = {k: v.clone() for k, v in loaded.model.unet.state_dict().items()}
    trainable = set(trainable_parameter_names(loaded.model.unet, ["attn1", "attn2", "temp_convs"]))
    history = cotrain.cotrain(loaded, maps, ids, latents, tokens, {**CFG, "cotrain": True}, ALIGN, tmp_path / "ft",
                              seed=0, log=lambda m: None)
    assert {"loss", "denoise", "glfa"} <= set(history[-1])
    after = models.load(str(tmp_path / "ft"), "text_to_video").model.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= trainable  # only attention / temporal convs moved
    # L_GLFA pulled sub-2's shifted topography onto sub-1's (the reference): its aligned test maps are closer
    m1 = cotrain.decode_tokens(tmp_path / "ft" / "fmri_head.safetensors", "1", maps["1"]["test_maps"])
    assert m1.shape == (N_TEST, 5, tokens.shape[2])
    modules, head, meta = cotrain.load_head(tmp_path / "ft" / "fmri_head.safetensors")
    assert modules["1"] is None and meta["target"] == "1"
    with torch.no_grad():
        aligned2 = modules["2"](torch.as_tensor(maps["2"]["test_maps"])).numpy()
    err_before = np.mean((maps["2"]["test_maps"] - maps["1"]["test_maps"]) ** 2)
    err_after = np.mean((aligned2 - maps["1"]["test_maps"]) ** 2)
    assert err_after < 0.8 * err_before
    # the head learned from the brain: its tokens differ between clips (it starts at the mean tokens for all)
    assert np.abs(m1 - m1.mean(0, keepdims=True)).max() > 1e-4
    assert not np.allclose(head.up.bias.detach().numpy(), tokens.mean(0).reshape(-1))


def test_the_glfa_term_is_what_aligns_the_subjects(tmp_path):
    loaded, maps, ids, latents, tokens = _data()
    cotrain.cotrain(loaded, maps, ids, latents, tokens, {**CFG, "cotrain": True, "glfa_weight": 0.0}, ALIGN,
                    tmp_path / "none", seed=0, log=lambda m: None)
    loaded, *_ = _data()
    cotrain.cotrain(loaded, maps, ids, latents, tokens, {**CFG, "cotrain": True, "glfa_weight": 1.0}, ALIGN,
                    tmp_path / "glfa", seed=0, log=lambda m: None)

    def error(folder):
        modules, _, _ = cotrain.load_head(tmp_path / folder / "fmri_head.safetensors")
        with torch.no_grad():
            a2 = modules["2"](torch.as_tensor(maps["2"]["test_maps"])).numpy()
        return np.mean((a2 - maps["1"]["test_maps"]) ** 2)

    assert error("glfa") < 0.8 * error("none")


def test_cotrain_settings_are_checked(tmp_path):
    loaded, maps, ids, latents, tokens = _data()
    with pytest.raises(ConfigError, match="cotrain"):
        cotrain.cotrain(loaded, maps, ids, latents, tokens, {"cotrain": True, "mode": "lora"}, ALIGN,
                        tmp_path / "x", log=lambda m: None)
    assert not (tmp_path / "x").exists()


def test_a_checkpoint_of_other_cotraining_settings_is_never_resumed(tmp_path):
    loaded, maps, ids, latents, tokens = _data()
    cfg = {**CFG, "cotrain": True, "steps": 4, "checkpoint_every": 2}

    def killer(message):
        if message.startswith("step 3/4"):
            raise KeyboardInterrupt("killed after step 3 (last checkpoint: step 2)")

    with pytest.raises(KeyboardInterrupt):
        cotrain.cotrain(loaded, maps, ids, latents, tokens, cfg, ALIGN, tmp_path / "a", seed=0, log=killer)
    lines = []
    loaded, *_ = _data()  # another head learning rate: the checkpoint's optimizer does not fit it
    cotrain.cotrain(loaded, maps, ids, latents, tokens, {**cfg, "head_lr": 1e-3}, ALIGN, tmp_path / "a", seed=0,
                    log=lines.append)
    assert any("from another config/data" in line for line in lines)
    lines = []
    loaded, *_ = _data()
    with pytest.raises(KeyboardInterrupt):
        cotrain.cotrain(loaded, maps, ids, latents, tokens, cfg, ALIGN, tmp_path / "b", seed=0, log=killer)
    loaded, *_ = _data()
    cotrain.cotrain(loaded, maps, ids, latents, tokens, cfg, ALIGN, tmp_path / "b", seed=0, log=lines.append)
    assert any("resuming from the checkpoint at step 2" in line for line in lines)  # same settings: resumed
