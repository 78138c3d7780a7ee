"""The shared decoder training loop: learns, checkpoints, resumes bit-identically, ignores stale checkpoints."""

import numpy as np
import pytest
import torch

from fmrivid.decoders import train


def _problem(seed=0, n=64, d=10, k=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    W = rng.normal(size=(d, k)).astype(np.float32)
    return X, (X @ W + 0.01 * rng.normal(size=(n, k))).astype(np.float32)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 3))


def _loss(model, batch, gen):
    pred = model(batch["x"])
    return {"loss": torch.nn.functional.mse_loss(pred, batch["y"]), "noise": torch.rand((), generator=gen)}


CFG = {"steps": 40, "batch_size": 16, "lr": 1e-2, "checkpoint_every": 10}


def test_fit_learns_and_logs(tmp_path):
    X, Y = _problem()
    hist = train.fit(_model(), _loss, {"x": X, "y": Y}, CFG, tmp_path / "ck", seed=1, log=lambda m: None)
    assert hist[0]["step"] == 1 and hist[-1]["step"] == 40
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    train.write_losses(tmp_path / "losses.tsv", hist)
    lines = (tmp_path / "losses.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["step", "loss", "noise"] and len(lines) == len(hist) + 1


def test_resume_is_bit_identical(tmp_path):
    X, Y = _problem()
    full = _model()
    h_full = train.fit(full, _loss, {"x": X, "y": Y}, CFG, tmp_path / "a", seed=3, log=lambda m: None)

    # "killed" after 20 steps: same fingerprint needs the same cfg, so stop by raising from the loss
    calls = {"n": 0}

    def dying(model, batch, gen):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt
        return _loss(model, batch, gen)

    with pytest.raises(KeyboardInterrupt):
        train.fit(_model(), dying, {"x": X, "y": Y}, CFG, tmp_path / "b", seed=3, log=lambda m: None)
    msgs = []
    resumed = _model()
    h_res = train.fit(resumed, _loss, {"x": X, "y": Y}, CFG, tmp_path / "b", seed=3, log=msgs.append)
    assert any("resuming from the checkpoint at step 20" in m for m in msgs)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert h_full == h_res


def test_checkpoint_of_other_config_is_ignored(tmp_path):
    X, Y = _problem()
    train.fit(_model(), _loss, {"x": X, "y": Y}, CFG, tmp_path / "c", seed=0, log=lambda m: None)
    msgs = []
    train.fit(_model(), _loss, {"x": X, "y": Y}, {**CFG, "lr": 5e-3}, tmp_path / "c", seed=0, log=msgs.append)
    assert any("another config" in m for m in msgs)
    assert not any("resuming" in m for m in msgs)


def test_save_and_load_model(tmp_path):
    m = _model()
    train.save_model(m, tmp_path / "m.safetensors", {"decoder": "x"})
    state, meta = train.load_state(tmp_path / "m.safetensors")
    assert meta == {"decoder": "x"}
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    with pytest.raises(Exception, match="no such file"):
        train.load_state(tmp_path / "missing.safetensors")


def test_checkpoint_of_other_data_values_is_ignored(tmp_path):
    """Same shapes, config and seed but other values (e.g. re-preprocessed fMRI): no resume."""
    X, Y = _problem()
    train.fit(_model(), _loss, {"x": X, "y": Y}, CFG, tmp_path / "d", seed=0, log=lambda m: None)
    msgs = []
    train.fit(_model(), _loss, {"x": X + 1.0, "y": Y}, CFG, tmp_path / "d", seed=0, log=msgs.append)
    assert any("another config" in m for m in msgs) and not any("resuming" in m for m in msgs)
