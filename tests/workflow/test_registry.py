"""Adding a neural decoder touches its module and one registry line: it then appears in the DAG, the schema and
the config reference, and runs through the real stage function (in a copy of the repository)."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import SMK_ENV
from test_incremental import copy_repo

pytestmark = pytest.mark.workflow

TOY = '''"""Toy decoder (a test's): predicts the training mean of its target, times ``scale``."""

import numpy as np

from fmrivid.decoders import registry

DEFAULTS = registry.defaults("toy")


def fit_predict(data, cfg, out_model, ckpt_dir, seed, device, log):
    from safetensors.numpy import save_file

    mean = data["train_Y"].mean(0) * float(cfg["scale"])
    save_file({"mean": np.ascontiguousarray(mean, np.float32)}, str(out_model))
    log(f"toy: mean of {len(data['train_Y'])} training rows")
    return {"pred": np.repeat(mean[None], len(data["test_X"]), 0), "history": [{"step": 1, "loss": 0.0}]}
'''

ENTRY = '''    Decoder("toy", "vae", "training mean of the first-frame latents", params={"scale": (1.0, "multiplies the mean")},
            module_name="fmrivid.decoders.toy"),
]}'''


def add_toy_decoder(copy):
    (copy / "fmrivid/decoders/toy.py").write_text(TOY)
    registry = copy / "fmrivid/decoders/registry.py"
    text = registry.read_text()
    assert text.count("\n]}") == 1
    registry.write_text(text.replace("\n]}", "\n" + ENTRY, 1))


def run_py(copy, code):
    env = {**os.environ, "PYTHONPATH": str(copy)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_toy_decoder_needs_only_its_module_and_a_registry_entry(tiny_run, tmp_path):
    copy = copy_repo(tmp_path)
    add_toy_decoder(copy)
    # The schema and the generated reference know it.
    section = json.loads(run_py(copy, "import json, fmrivid.config as c; s = c.load_schema()['properties']['decode']"
                                      "['properties']; print(json.dumps([s['toy'], s['neural']['items']['enum']]))"))
    assert section[0]["properties"]["scale"] == {"type": "number", "default": 1.0, "description": "multiplies the mean"}
    assert "toy" in section[1]
    assert "decode.toy.scale" in run_py(copy, "import runpy, sys; sys.argv = ['x']; "
                                              "runpy.run_module('fmrivid.config', run_name='__main__')")
    # The DAG plans it (inputs from its registry entry).
    cfg = yaml.safe_load((copy / "config/test.yaml").read_text())
    cfg["decode"]["neural"] = ["toy"]
    cfg["decode"]["toy"] = {"scale": 0.5}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(copy / "Snakefile"), "-d", str(tmp_path / "w"),
                           "-n", "--configfile", str(tmp_path / "toy.yaml")], capture_output=True, text=True,
                          env=SMK_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results/models/toy/sub-01_vae.safetensors" in proc.stdout
    assert "results/metrics/decoders/toy_sub-02_vae.tsv" in proc.stdout
    # It runs through the real stage function on the shared tiny run's samples and latents.
    res = tiny_run / "results"
    out = tmp_path / "out"
    out.mkdir()
    run_py(copy, f"""
import yaml, fmrivid.config
from fmrivid.decoders.stages import neural_decode
full = fmrivid.config.validate(yaml.safe_load(open({str(tmp_path / 'toy.yaml')!r})))
neural_decode("toy", "01", {str(res / 'fmri/sub-01.h5')!r}, {str(res / 'features/vae.h5')!r},
              dict(full["decode"], device="cpu"), full["evaluate"], 0,
              {str(out / 'model.safetensors')!r}, {str(out / 'pred.h5')!r}, {str(out / 'losses.tsv')!r},
              {str(out / 'table.tsv')!r}, log=lambda m: None)
""")
    table = (out / "table.tsv").read_text()
    assert "toy_vae" in table and "latent_corr" in table
