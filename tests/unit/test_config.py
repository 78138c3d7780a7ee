import pytest

import fmrivid.config as fc
from fmrivid.errors import ConfigError
from conftest import REPO


def test_defaults_are_filled_and_documented():
    cfg = fc.validate({})
    assert cfg["preprocess"]["selection"]["method"] == "reliability"
    assert cfg["decode"]["targets"] == ["text", "image", "vae", "text_tokens"]
    # real-data defaults: no simulated data, no demo generator/classifier, no neural decoder at demo sizes
    assert not cfg["dataset"]["simulate"] and cfg["dataset"]["root"] == ""
    assert cfg["generate"]["method"] == "text_to_video" and cfg["decode"]["neural"] == []
    assert cfg["evaluate"]["frame_classifier"] == "google/vit-base-patch16-224"
    assert "tiny" not in {cfg["features"]["image_model"], cfg["generate"]["pipeline"]["model"]}
    rows = list(fc.describe())
    assert len(rows) > 40
    undocumented = [key for key, _, _, desc in rows if not desc.strip()]
    assert undocumented == []


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'decode\.alpah'"):
        fc.validate({"decode": {"alpah": [1.0]}})
    with pytest.raises(ConfigError, match=r"unknown config key 'preprocesss'"):
        fc.validate({"preprocesss": {}})


def test_wrong_value_is_named():
    with pytest.raises(ConfigError, match=r"'preprocess\.selection\.method': expected one of"):
        fc.validate({"preprocess": {"selection": {"method": "magic"}}})
    with pytest.raises(ConfigError, match=r"'dataset\.tr'"):
        fc.validate({"dataset": {"tr": -2}})


def test_shipped_configs_validate():
    for name in ("demo.yaml", "test.yaml"):
        cfg = fc.load(REPO / "config" / name)
        assert cfg["dataset"]["simulate"] is True


def test_generator_schema_defaults_match_code():
    from fmrivid.generate.demo import default_config, tiny_config

    cfg = fc.validate({})["generate"]
    assert {k: cfg[k] for k in ("vae", "unet", "sample")} == default_config()
    test_cfg = fc.load(REPO / "config" / "test.yaml")["generate"]
    assert {k: test_cfg[k] for k in ("vae", "unet", "sample")} == tiny_config()


def test_rehearsal_layers_a_recipe_between_the_dataset_file_and_the_tiny_overlay():
    from fmrivid.rehearse import TINY, snakemake_command

    cmd = snakemake_command("preset.yaml", "dataset.yaml", "config/recipes/x.yaml", "--report", "r.zip", cores=3)
    i = cmd.index("--configfile")
    assert cmd[i + 1:] == ["preset.yaml", "dataset.yaml", "config/recipes/x.yaml", str(TINY)]  # targets/options first
    assert cmd[cmd.index("--report") + 1] == "r.zip" and cmd.index("--report") < i
    assert cmd[cmd.index("--cores") + 1] == "3"
