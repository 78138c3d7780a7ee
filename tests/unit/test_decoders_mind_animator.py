"""Mind-Animator decoders (semantic, structure, motion) and audio fusion on planted-signal data.

The fMRI of every row is a random linear mixture of hidden per-clip factors plus noise; every target
(text/video embeddings, tokens, first-frame latent, motion) is a function of the same factors. Each
decoder must beat the same decoder trained on shuffled (fMRI, target) pairs on its own target.
"""

import numpy as np
import pytest
import torch

from fmrivid.decoders import fusion, motion, semantic, structure
from fmrivid.errors import ConfigError, InputError
from fmrivid.metrics.semantic import two_way_ident

torch.set_num_threads(1)

N_TRAIN_CLIPS, REPEATS, N_TEST, K, V = 30, 2, 12, 6, 300
T, C, H, W = 5, 4, 8, 8
QUIET = lambda m: None  # noqa: E731

SEM = {"steps": 60, "batch_size": 30, "lr": 3e-3, "hidden": 64, "layers": 1, "dropout": 0.1,
       "token_hidden": 64, "checkpoint_every": 50}
STRUCT = {"steps": 100, "batch_size": 30, "lr": 3e-3, "hidden": 64, "dropout": 0.1, "checkpoint_every": 50}
MOT = {"steps": 100, "batch_size": 30, "lr": 1e-2, "weight_decay": 0.3, "width": 32, "heads": 2, "depth": 1,
       "patch": 2, "fmri_tokens": 2, "checkpoint_every": 50}


def _planted(seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    n_clips = N_TRAIN_CLIPS + N_TEST
    z = rng.normal(size=(n_clips, K))
    text = z @ rng.normal(size=(K, 32))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    video = z @ rng.normal(size=(K, 48))
    tokens = (z @ rng.normal(size=(K, 4 * 8))).reshape(n_clips, 4, 8)
    # the first frame and the motion depend on separate factors: the first frame does not give the motion away
    first = (z[:, :3] @ rng.normal(size=(3, C * H * W)) / np.sqrt(3)).reshape(n_clips, C, H, W)
    motion_field = (z[:, 3:] @ rng.normal(size=(K - 3, C * H * W)) / np.sqrt(K - 3)).reshape(n_clips, C, H, W)
    frames = first[:, None] + 0.5 * np.arange(T)[None, :, None, None, None] * motion_field[:, None]
    audio = np.tanh(z[:, 3:] @ rng.normal(size=(K - 3, 4 * 16))).reshape(n_clips, 4, 16)
    mix = rng.normal(size=(K, V)) / np.sqrt(K)
    train_rows = np.repeat(np.arange(N_TRAIN_CLIPS), REPEATS)   # repeated presentations
    test_rows = np.arange(N_TRAIN_CLIPS, n_clips)
    X = z[train_rows] @ mix + noise * rng.normal(size=(len(train_rows), V))
    Xt = z[test_rows] @ mix + noise / np.sqrt(REPEATS) * rng.normal(size=(len(test_rows), V))
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return {
        "train_X": f32(X), "test_X": f32(Xt), "train_rows": train_rows, "test_rows": test_rows,
        "text": f32(text), "video": f32(video), "tokens": f32(tokens), "first": f32(first),
        "frames": f32(frames), "audio": f32(audio),
    }


@pytest.fixture(scope="module")
def planted():
    return _planted()


def _shuffled(X, seed=1):
    return X[np.random.default_rng(seed).permutation(len(X))]


def _corr(a, b):
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    return float(np.mean((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))))


def _semantic_data(p, X):
    r = p["train_rows"]
    return {"train_X": X, "test_X": p["test_X"], "train_Y": p["text"][r], "train_video": p["video"][r],
            "train_tokens": p["tokens"][r]}


def _motion_data(p, X):
    return {"train_X": X, "test_X": p["test_X"], "train_Y": p["frames"][p["train_rows"]],
            "test_first": p["first"][p["test_rows"]]}


def test_semantic_beats_shuffled_control(planted, tmp_path):
    p = planted
    out = semantic.fit_predict(_semantic_data(p, p["train_X"]), SEM, tmp_path / "sem.safetensors", log=QUIET)
    ctrl = semantic.fit_predict(_semantic_data(p, _shuffled(p["train_X"])), SEM, tmp_path / "ctrl.safetensors",
                                log=QUIET)
    true = p["text"][p["test_rows"]]
    assert out["pred"].shape == true.shape and out["pred"].dtype == np.float32
    assert out["video"].shape == (N_TEST, 48) and out["tokens"].shape == (N_TEST, 4, 8)
    acc, acc_ctrl = two_way_ident(out["pred"], true).mean(), two_way_ident(ctrl["pred"], true).mean()
    assert acc > 0.85 and acc > acc_ctrl + 0.2, (acc, acc_ctrl)
    # predicted text embeddings have the targets' (unit) norm; the InfoNCE loss fell
    np.testing.assert_allclose(np.linalg.norm(out["pred"], axis=1), 1.0, rtol=1e-4)
    assert out["history"][-1]["loss"] < 0.7 * out["history"][0]["loss"]
    assert {"nce_text", "nce_video"} <= set(out["history"][0])
    # tokens decoded from the fMRI embedding beat the shuffled control's tokens
    tok_true = p["tokens"][p["test_rows"]]
    assert _corr(out["tokens"], tok_true) > _corr(ctrl["tokens"], tok_true) + 0.2
    assert out["token_history"][-1]["loss"] < out["token_history"][0]["loss"]


def test_info_nce_with_repeats_equals_multi_positive_loss():
    # rows 0 and 4 are two presentations of one stimulus (identical targets): plain InfoNCE equals the
    # multi-positive loss that counts both as positives of each other, as the docstring says
    g = torch.Generator().manual_seed(0)
    t = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    t = torch.cat([t, t[:1]])
    a = t + 0.5 * torch.randn(5, 8, generator=g)
    logits = torch.nn.functional.normalize(a, dim=1) @ t.T / 0.1
    same = torch.eye(5)
    same[0, 4] = same[4, 0] = 1.0
    target = same / same.sum(1, keepdim=True)
    multi = 0.5 * sum(-(target * torch.log_softmax(m, 1)).sum(1).mean() for m in (logits, logits.T))
    assert torch.allclose(semantic.info_nce(a, t, 0.1), multi, atol=1e-5)
    # uninformative logits give log(B); aligned embeddings give far less
    assert abs(float(semantic.info_nce(t[:4], t[:4], 1e6)) - np.log(4)) < 1e-4
    assert float(semantic.info_nce(t[:4], t[:4], 0.1)) < 0.1


def test_structure_beats_shuffled_control(planted, tmp_path):
    p = planted
    data = {"train_X": p["train_X"], "test_X": p["test_X"], "train_Y": p["first"][p["train_rows"]]}
    out = structure.fit_predict(data, STRUCT, tmp_path / "s.safetensors", log=QUIET)
    ctrl = structure.fit_predict({**data, "train_X": _shuffled(p["train_X"])}, STRUCT, tmp_path / "c.safetensors",
                                 log=QUIET)
    true = p["first"][p["test_rows"]]
    assert out["pred"].shape == true.shape
    r, r_ctrl = _corr(out["pred"], true), _corr(ctrl["pred"], true)
    assert r > 0.6 and r > r_ctrl + 0.3, (r, r_ctrl)


def test_motion_beats_shuffled_control(planted, tmp_path):
    p = planted
    out = motion.fit_predict(_motion_data(p, p["train_X"]), MOT, tmp_path / "m.safetensors", log=QUIET)
    ctrl = motion.fit_predict(_motion_data(p, _shuffled(p["train_X"])), MOT, tmp_path / "c.safetensors", log=QUIET)
    true = p["frames"][p["test_rows"]]
    first = p["first"][p["test_rows"]]
    assert out["pred"].shape == true.shape
    np.testing.assert_array_equal(out["pred"][:, 0], first)
    r, r_ctrl = motion.frame_correlation(out["pred"], true), motion.frame_correlation(ctrl["pred"], true)
    assert r > r_ctrl + 0.1, (r, r_ctrl)
    # the motion itself (change from the given first frame) is decoded, the control's is not
    d, d_ctrl = (_corr(x[:, 1:] - first[:, None], true[:, 1:] - first[:, None]) for x in (out["pred"], ctrl["pred"]))
    assert d > 0.3 and d > d_ctrl + 0.25, (d, d_ctrl)


def test_sparse_causal_attention_sees_first_and_previous_frame_only():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 5, 3, 4, generator=g) for _ in range(3))
    base = motion.sparse_causal_attention(q, k, v, heads=2)
    for t_changed in range(5):
        k2, v2 = k.clone(), v.clone()
        k2[:, t_changed] += 1.0
        v2[:, t_changed] += 1.0
        out = motion.sparse_causal_attention(q, k2, v2, heads=2)
        changed = [t for t in range(5) if not torch.allclose(out[:, t], base[:, t])]
        expected = sorted({t for t in range(5) if t_changed in (0, max(t - 1, 0))})
        assert changed == expected, (t_changed, changed)


def test_motion_step_is_causal():
    # a change to the last input frame does not alter the predictions made from the earlier frames
    torch.manual_seed(0)
    model = motion.MotionDecoder(V, (C, H, W), T, 32, 2, 1, 2, 2, 0.0).eval()
    z = torch.randn(2, T, C, H, W)
    x = torch.randn(2, V)
    ctx = model.context(x)
    torch.nn.init.normal_(model.head.weight)  # non-trivial output
    base = model.step(z, ctx)
    z2 = z.clone()
    z2[:, -1] += 1.0
    out = model.step(z2, ctx)
    assert torch.allclose(out[:, :-1], base[:, :-1]) and not torch.allclose(out[:, -1], base[:, -1])


def test_fusion_runs_fused_and_fmri_only(planted, tmp_path):
    p = planted
    r = p["train_rows"]
    sem = semantic.fit_predict(_semantic_data(p, p["train_X"]), {**SEM, "steps": 20}, tmp_path / "s.safetensors",
                               log=QUIET)
    test_audio, idx = fusion.retrieve_audio(sem["pred"], p["text"][r], p["audio"][r], return_index=True)
    data = {**_motion_data(p, p["train_X"]), "train_audio": p["audio"][r], "test_audio": test_audio}
    cfg = {**MOT, "steps": 20}
    fused = fusion.fit_predict(data, cfg, tmp_path / "f.safetensors", log=QUIET)
    only = fusion.fit_predict(data, {**cfg, "audio": False}, tmp_path / "o.safetensors", log=QUIET)
    assert fused["mode"] == "fused" and only["mode"] == "fmri_only"
    assert fused["pred"].shape == only["pred"].shape == p["frames"][p["test_rows"]].shape
    assert np.all(np.isfinite(fused["pred"])) and not np.allclose(fused["pred"], only["pred"])
    # fMRI-only through fusion is the motion decoder itself: same weights, same predictions (here with
    # the first frame given flat, as the structure decoder predicts features/vae.h5 rows)
    flat = {**_motion_data(p, p["train_X"]), "test_first": p["first"][p["test_rows"]].reshape(N_TEST, -1)}
    mot = motion.fit_predict(flat, cfg, tmp_path / "m.safetensors", log=QUIET)
    np.testing.assert_array_equal(only["pred"], mot["pred"])
    # the fused model depends on the audio it is given
    other = fusion.fit_predict({**data, "test_audio": test_audio[::-1].copy()}, cfg, tmp_path / "f2.safetensors",
                               log=QUIET)
    assert not np.allclose(other["pred"], fused["pred"])
    assert (tmp_path / "f.safetensors").read_bytes() == (tmp_path / "f2.safetensors").read_bytes()
    with pytest.raises(InputError, match="test_audio"):
        fusion.fit_predict({k: v for k, v in data.items() if k != "test_audio"}, cfg, tmp_path / "x.safetensors",
                           log=QUIET)
    assert not (tmp_path / "x.safetensors").exists()


def test_retrieve_audio_returns_training_rows_only():
    rng = np.random.default_rng(3)
    train_text = rng.normal(size=(20, 16))
    train_audio = rng.normal(size=(20, 3, 5))
    pred = rng.normal(size=(50, 16))
    audio, idx = fusion.retrieve_audio(pred, train_text, train_audio, return_index=True)
    assert audio.shape == (50, 3, 5) and idx.min() >= 0 and idx.max() < 20
    for row, i in zip(audio, idx):
        matches = [j for j in range(20) if np.array_equal(row, train_audio[j])]
        assert matches == [i]
    # the nearest (cosine) training caption wins: a scaled copy of a training embedding finds it
    audio2, idx2 = fusion.retrieve_audio(3.0 * train_text[[4, 11]], train_text, train_audio, return_index=True)
    assert idx2.tolist() == [4, 11] and np.array_equal(audio2, train_audio[[4, 11]])
    with pytest.raises(InputError, match="pred_text"):
        fusion.retrieve_audio(pred[:, :5], train_text, train_audio)


def test_checkpoints_do_not_depend_on_test_data(planted, tmp_path):
    p = planted
    cfg = {**SEM, "steps": 20}
    data = _semantic_data(p, p["train_X"])
    a = semantic.fit_predict(data, cfg, tmp_path / "a.safetensors", ckpt_dir=tmp_path / "ca", log=QUIET)
    other = np.random.default_rng(9).normal(size=(5, V)).astype(np.float32) * 100
    b = semantic.fit_predict({**data, "test_X": other}, cfg, tmp_path / "b.safetensors", ckpt_dir=tmp_path / "cb",
                             log=QUIET)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    for name in ("contrastive/checkpoint.safetensors", "tokens/checkpoint.safetensors"):
        assert (tmp_path / "ca" / name).read_bytes() == (tmp_path / "cb" / name).read_bytes()
    assert a["history"] == b["history"] and b["pred"].shape == (5, 32)


def test_resume_after_kill_gives_same_model(planted, tmp_path):
    """Killed in stage 2 of the semantic decoder: the rerun resumes both stages, same bytes."""
    p = planted
    cfg = {**SEM, "steps": 20, "checkpoint_every": 5}
    data = _semantic_data(p, p["train_X"])
    full = semantic.fit_predict(data, cfg, tmp_path / "full.safetensors", ckpt_dir=tmp_path / "c1", log=QUIET)

    calls = {"n": 0}
    real_loss = torch.nn.functional.mse_loss

    def dying(*a, **k):  # stage 2's loss: die at its 8th step (after its checkpoint at step 5)
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return real_loss(*a, **k)

    import fmrivid.decoders.semantic as sem_mod
    sem_mod.F.mse_loss = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            semantic.fit_predict(data, cfg, tmp_path / "res.safetensors", ckpt_dir=tmp_path / "c2", log=QUIET)
    finally:
        sem_mod.F.mse_loss = real_loss
    assert not (tmp_path / "res.safetensors").exists()
    msgs = []
    res = semantic.fit_predict(data, cfg, tmp_path / "res.safetensors", ckpt_dir=tmp_path / "c2", log=msgs.append)
    assert any("resuming from the checkpoint at step 20" in m for m in msgs)   # stage 1 complete
    assert any("resuming from the checkpoint at step 5" in m for m in msgs)    # stage 2 part-done
    assert (tmp_path / "full.safetensors").read_bytes() == (tmp_path / "res.safetensors").read_bytes()
    np.testing.assert_array_equal(full["tokens"], res["tokens"])
    assert full["token_history"] == res["token_history"]


def test_bad_input_and_config_are_named(planted, tmp_path):
    p = planted
    data = {"train_X": p["train_X"], "test_X": p["test_X"], "train_Y": p["first"][p["train_rows"]][:10]}
    with pytest.raises(InputError, match=r"data\['train_Y'\].*60 rows"):
        structure.fit_predict(data, STRUCT, tmp_path / "s.safetensors", log=QUIET)
    with pytest.raises(InputError, match=r"data\['test_X'\]"):
        structure.fit_predict({**data, "test_X": p["test_X"][:, :7]}, STRUCT, tmp_path / "s.safetensors", log=QUIET)
    with pytest.raises(ConfigError, match="decoders.structure: unknown key"):
        structure.fit_predict(data, {"stepz": 3}, tmp_path / "s.safetensors", log=QUIET)
    with pytest.raises(ConfigError, match="decoders.motion.patch"):
        motion.fit_predict(_motion_data(p, p["train_X"]), {**MOT, "patch": 3}, tmp_path / "m.safetensors",
                           log=QUIET)
    with pytest.raises(ConfigError, match="decoders.semantic.alpha"):
        semantic.fit_predict(_semantic_data(p, p["train_X"]), {"alpha": 2}, tmp_path / "x.safetensors", log=QUIET)
    assert not list(tmp_path.iterdir())


def test_defaults_document_every_key():
    import inspect

    for mod in (semantic, structure, motion, fusion):
        src = inspect.getsource(mod)
        for key in mod.DEFAULTS:
            if key in mod.DEFAULTS and f'"{key}":' in src:
                line = next(ln for ln in src.splitlines() if f'"{key}":' in ln)
                assert "#" in line, (mod.__name__, key)


def test_fusion_pca_is_fitted_on_training_fmri_and_saved(planted, tmp_path):
    """Audio-guided seed: fMRI -> PCA -> embedding. The components come from the training rows only and live in
    the model file; asking for more components than training rows is a ConfigError naming the key."""
    from safetensors import safe_open

    p = planted
    r = p["train_rows"]
    data = {**_motion_data(p, p["train_X"]), "train_audio": p["audio"][r], "test_audio": p["audio"][p["test_rows"]]}
    cfg = {**MOT, "steps": 10, "pca": 8}
    out = fusion.fit_predict(data, cfg, tmp_path / "p.safetensors", log=QUIET)
    assert np.all(np.isfinite(out["pred"]))
    with safe_open(str(tmp_path / "p.safetensors"), "np") as fh:
        comps = fh.get_tensor("fmri.pca.components")
    X = p["train_X"]
    Xs = (X - X.mean(0)) / np.where(X.std(0) > 1e-8, X.std(0), 1.0)
    _, _, vt = np.linalg.svd(Xs - Xs.mean(0), full_matrices=False)
    assert comps.shape == (8, X.shape[1])
    np.testing.assert_allclose(np.abs(comps @ vt[:8].T), np.eye(8), atol=1e-3)  # the training rows' components
    # test rows do not change the model: same file with other test fMRI
    fusion.fit_predict({**data, "test_X": data["test_X"][::-1].copy()}, cfg, tmp_path / "q.safetensors", log=QUIET)
    assert (tmp_path / "p.safetensors").read_bytes() == (tmp_path / "q.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="pca"):
        fusion.fit_predict(data, {**cfg, "pca": len(X) + 1}, tmp_path / "x.safetensors", log=QUIET)
