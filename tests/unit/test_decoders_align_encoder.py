"""GLFA alignment (align) and the encoder-decoder model (encoder) on planted data.

align: 3 subjects see the same clips; each subject's 16x16 flat map is the shared latent response
with its parcels permuted (a different permutation per subject), shifted by a pixel for some, smoothed
and with independent noise. GLFA must raise fSC and ISC of the held-out subject on TEST clips (its
alignment fitted on its training clips only), and LOSO ridge decoding through the alignment must beat
the unaligned maps and a shuffled-pairs decoder.

encoder: voxels driven by the mean colour and the bar speed of 8-frame 16x16 chunks; the model must
beat the same model trained on shuffled stimulus-response pairs.

Both: test data cannot change a model file (leakage), and a run killed mid-training resumes from
its checkpoint to bit-identical model files, through the public API.
"""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from fmrivid.decoders import align, encoder
from fmrivid.errors import ConfigError, InputError

torch.set_num_threads(1)

SUBJECTS = ("01", "02", "03")
HELDOUT = "03"
ALIGN_CFG = {"steps": 120, "batch_size": 32, "checkpoint_every": 40}


def _quiet(msg):
    pass


def assert_same_safetensors(a, b):
    """Same tensors bit for bit and the same metadata (safetensors 0.8 writes its metadata map in a random
    order, so raw bytes are compared after the header, and the header as parsed JSON)."""
    import json

    raw_a, raw_b = a.read_bytes(), b.read_bytes()
    n_a, n_b = (int.from_bytes(r[:8], "little") for r in (raw_a, raw_b))
    assert json.loads(raw_a[8:8 + n_a]) == json.loads(raw_b[8:8 + n_b]), (a, b)
    assert raw_a[8 + n_a:] == raw_b[8 + n_b:], (a, b)


def _parcels_permuted(Z, parcel, perm):
    n, size, _ = Z.shape
    g = size // parcel
    P = Z.reshape(n, g, parcel, g, parcel).transpose(0, 1, 3, 2, 4).reshape(n, g * g, parcel, parcel)[:, perm]
    return P.reshape(n, g, g, parcel, parcel).transpose(0, 1, 3, 2, 4).reshape(n, size, size)


def planted_maps(seed=0, n_train=60, n_test=20, size=16, parcel=4, d=4):
    """(maps_by_subject, clip ids, features (n, d)) of 3 subjects sharing one latent response."""
    rng = np.random.default_rng(seed)
    patterns = np.stack([gaussian_filter(rng.normal(size=(size, size)), 1.5) for _ in range(d)])
    patterns /= patterns.std(axis=(1, 2), keepdims=True)
    n = n_train + n_test
    feats = rng.normal(size=(n, d))
    shared = np.stack([gaussian_filter(rng.normal(size=(size, size)), 1.0) for _ in range(n)])
    Z = np.einsum("nd,dhw->nhw", feats, patterns) + 0.5 * shared / shared.std()
    ids = [f"c{i:03d}" for i in range(n)]
    g = size // parcel
    out = {}
    for k, s in enumerate(SUBJECTS):
        M = _parcels_permuted(Z, parcel, rng.permutation(g * g))
        M = np.roll(M, k % 2, axis=1)
        M = np.stack([gaussian_filter(m, 0.7) for m in M])
        M = (M / M.std() + 0.5 * rng.normal(size=M.shape)).astype(np.float32)
        out[s] = {"train_maps": M[:n_train], "train_ids": ids[:n_train], "test_maps": M[n_train:],
                  "test_ids": ids[n_train:], "mask": None}
    return out, ids, feats


@pytest.fixture(scope="module")
def glfa_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("glfa")
    maps, ids, feats = planted_maps()
    res = align.loso_decode(maps, HELDOUT, ids, feats, ALIGN_CFG, out_align=tmp / "align.safetensors",
                            out_decoder=tmp / "ridge.safetensors", ckpt_dir=tmp / "ck", seed=0, log=_quiet)
    return {"tmp": tmp, "maps": maps, "ids": ids, "feats": feats, "res": res}


def _row(table, metric, subject, **kw):
    rows = [r for r in table if r["metric"] == metric and r["subject"] == subject
            and all(r.get(k) == v for k, v in kw.items())]
    assert len(rows) == 1, (metric, subject, kw)
    return rows[0]


def test_glfa_parts_do_what_eq1_eq2_say():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 8, 8)).astype(np.float32)
    mask = np.ones((8, 8), bool)
    mask[0, 0] = False
    m = align.GLFA(8, 8, parcel_size=4, kernel_size=3, mask=mask)
    with torch.no_grad():
        assert torch.allclose(m(torch.as_tensor(x)), torch.as_tensor(x * mask))  # identity at init
        # global: a permutation matrix moves whole parcels (output parcel q = input parcel perm[q])
        perm = np.array([2, 0, 3, 1])
        m.global_weight.copy_(torch.eye(4)[perm].T)
        moved = m.global_align(torch.as_tensor(x)).numpy()
        assert np.allclose(moved, _parcels_permuted(x, 4, perm))
        # local: one pixel's own kernel takes its left neighbour, no other pixel changes
        m.global_weight.copy_(torch.eye(4))
        m.local_weight[:, 5 * 8 + 5] = 0
        m.local_weight[3, 5 * 8 + 5] = 1.0  # tap (row 1, col 0) of the 3x3 kernel = pixel (5, 4)
        out = m(torch.as_tensor(x)).numpy()
    expected = x * mask
    expected[:, 5, 5] = x[:, 5, 4]
    assert np.allclose(out, expected)
    # the shifted-sum layer computes what the unfold (patch) formulation computes, for any weights
    with torch.no_grad():
        torch.nn.init.normal_(m.local_weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.normal_(m.local_bias, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(m.local_align(torch.as_tensor(x)), m.local_align_unfold(torch.as_tensor(x)),
                              atol=1e-5)


def test_glfa_raises_fsc_and_isc_of_heldout_subject(glfa_run):
    table = glfa_run["res"]["table"]
    for metric in ("fsc", "isc"):
        row = _row(table, metric, HELDOUT)
        assert row["heldout"] and row["n_clips"] == 20
        assert row["after"] > row["before"] + 0.3 and row["after"] > 0.5, row
    for other in ("01", "02"):
        row = _row(table, "fsc_pair", other, partner=HELDOUT)
        assert row["after"] > row["before"] + 0.3, row
    values = glfa_run["res"]["align"]["values"]
    assert values["after"]["fsc"][HELDOUT].shape == (20,) and values["after"]["isc"][HELDOUT].shape == (256,)
    assert np.isclose(values["after"]["isc"][HELDOUT].mean(), _row(table, "isc", HELDOUT)["after"])
    hist = glfa_run["res"]["align"]["history"]
    assert hist["heldout"][-1]["align"] < 0.7 * hist["heldout"][0]["align"]


def test_loso_decoding_beats_unaligned_and_shuffled(glfa_run):
    res = glfa_run["res"]
    assert res["pred"].shape == (20, 4) and res["pred"].dtype == np.float32
    r = {row["variant"]: row["value"] for row in res["table"] if row["metric"] == "decode_r"}
    assert r["aligned"] > 0.7, r
    assert r["aligned"] > r["unaligned"] + 0.2, r
    assert r["aligned"] > r["shuffled"] + 0.4, r


def test_saved_alignment_reproduces_aligned_maps(glfa_run):
    maps, res = glfa_run["maps"], glfa_run["res"]
    modules, meta = align.load_align(glfa_run["tmp"] / "align.safetensors")
    assert meta["target"] == "01" and meta["heldout"] == HELDOUT and modules["01"] is None
    got = align.apply_align(glfa_run["tmp"] / "align.safetensors", HELDOUT, maps[HELDOUT]["test_maps"])
    assert np.array_equal(got, res["align"]["aligned"][HELDOUT]["test_maps"])


def test_glfa_leakage_test_maps_do_not_touch_the_models(glfa_run, tmp_path):
    maps = {s: dict(e) for s, e in glfa_run["maps"].items()}
    rng = np.random.default_rng(99)
    for s in maps:
        maps[s]["test_maps"] = rng.normal(size=maps[s]["test_maps"].shape).astype(np.float32) * 5
    feats = glfa_run["feats"].copy()
    feats[60:] = rng.normal(size=feats[60:].shape)  # test features are for scoring only
    align.loso_decode(maps, HELDOUT, glfa_run["ids"], feats, ALIGN_CFG, out_align=tmp_path / "align.safetensors",
                      out_decoder=tmp_path / "ridge.safetensors", seed=0, log=_quiet)
    for name in ("align.safetensors", "ridge.safetensors"):
        assert_same_safetensors(tmp_path / name, glfa_run["tmp"] / name)


def test_glfa_resume_after_kill_is_bit_identical(glfa_run, tmp_path):
    state = {"heldout_stage": False}

    def dying(msg):
        if msg.startswith("align: fitting held-out"):
            state["heldout_stage"] = True
        if state["heldout_stage"] and msg.startswith("step 96/"):
            raise KeyboardInterrupt  # the job is killed after the step-80 checkpoint of the held-out stage

    kw = dict(out_model=tmp_path / "align.safetensors", ckpt_dir=tmp_path / "ck", seed=0)
    with pytest.raises(KeyboardInterrupt):
        align.fit_align(glfa_run["maps"], None, ALIGN_CFG, log=dying, heldout=HELDOUT, **kw)
    assert not (tmp_path / "align.safetensors").exists()
    msgs = []
    align.fit_align(glfa_run["maps"], None, ALIGN_CFG, log=msgs.append, heldout=HELDOUT, **kw)
    assert any("resuming from the checkpoint at step 120" in m for m in msgs)  # common stage: finished
    assert any("resuming from the checkpoint at step 80" in m for m in msgs)  # held-out stage
    assert_same_safetensors(tmp_path / "align.safetensors", glfa_run["tmp"] / "align.safetensors")


def test_two_subjects_align_heldout_onto_the_other():
    maps, ids, feats = planted_maps(seed=3)
    maps = {s: maps[s] for s in ("01", "02")}  # the demo has 2 subjects: LOSO leaves one training subject
    res = align.loso_decode(maps, "02", ids, feats, {**ALIGN_CFG, "steps": 100}, seed=0, log=_quiet)
    assert res["align"]["history"]["common"] == [] and res["align"]["modules"]["01"] is None
    for metric in ("fsc", "isc"):
        row = _row(res["table"], metric, "02")
        assert row["after"] > row["before"] + 0.3, row
    r = {row["variant"]: row["value"] for row in res["table"] if row["metric"] == "decode_r"}
    assert r["aligned"] > r["shuffled"] + 0.4 and r["aligned"] > r["unaligned"] + 0.2, r


def test_read_flatmaps_round_trip(tmp_path):
    from fmrivid.io.h5 import write_features

    maps = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    mask = np.ones((4, 4), bool)
    mask[0] = False
    write_features(tmp_path / "flat.h5", list("abcde"), maps,
                   {"kind": "flatmap", "mask": mask.astype(int).tolist(),
                    "split": ["train", "train", "test", "train", "test"]})
    got = align.read_flatmaps(tmp_path / "flat.h5")
    assert got["train_ids"] == ["a", "b", "d"] and got["test_ids"] == ["c", "e"]
    assert np.array_equal(got["train_maps"], maps[[0, 1, 3]]) and np.array_equal(got["mask"], mask)


def test_align_bad_input_names_the_problem():
    maps, ids, feats = planted_maps(n_train=6, n_test=3)
    with pytest.raises(ConfigError, match="parcel_size"):
        align.fit_align(maps, None, {"parcel_size": 5, "steps": 1}, log=_quiet)
    with pytest.raises(ConfigError, match="unknown keys"):
        align.config({"lamda": 1})
    bad = {s: dict(e) for s, e in maps.items()}
    bad["02"]["train_maps"] = bad["02"]["train_maps"][:, :8]
    with pytest.raises(InputError, match="sub-02 train_maps"):
        align.fit_align(bad, None, {"steps": 1}, log=_quiet)
    with pytest.raises(InputError, match="features"):
        align.loso_decode(maps, HELDOUT, ids[:3], feats[:3], {"steps": 1}, log=_quiet)


# --------------------------------------------------------------------------- #
# encoder
# --------------------------------------------------------------------------- #
ENC_CFG = {"chunk_frames": 8, "frame_size": 16, "channels3d": [8, 16], "channels2d": [16], "pool_size": 2,
           "decoder_channels": 8, "decoder_upsamples": 2, "dropout": 0.0, "steps": 80, "batch_size": 16,
           "lr": 3e-3, "checkpoint_every": 20}


def planted_clips(rng, n, t=8, s=16):
    """Uniform-colour clips with a white bar moving at a per-clip speed; drivers (r, g, b, |speed|)."""
    colour = rng.uniform(0.15, 0.85, size=(n, 3))
    speed = rng.uniform(-2, 2, size=n)
    frames = np.empty((n, t, s, s, 3))
    for i in range(n):
        for k in range(t):
            img = np.broadcast_to(colour[i], (s, s, 3)).copy()
            pos = int(round(s / 2 + speed[i] * (k - t / 2))) % s
            img[:, max(0, pos - 1):pos + 2] = 1.0
            frames[i, k] = img
    frames += 0.05 * rng.normal(size=frames.shape)
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8), np.column_stack([colour, np.abs(speed)])


@pytest.fixture(scope="module")
def enc_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("enc")
    rng = np.random.default_rng(0)
    ftr, ztr = planted_clips(rng, 48)
    fte, zte = planted_clips(rng, 24)
    A = rng.normal(size=(4, 24))
    data = {"train_frames": ftr, "train_Y": ztr @ A + 0.1 * rng.normal(size=(48, 24)), "test_frames": fte}
    test_Y = zte @ A + 0.1 * rng.normal(size=(24, 24))
    real = encoder.fit_predict(data, ENC_CFG, tmp / "enc.safetensors", tmp / "ck", seed=0, log=_quiet)
    control = encoder.fit_predict(data, ENC_CFG, tmp / "ctl.safetensors", seed=0, log=_quiet, control=True)
    return {"tmp": tmp, "data": data, "test_Y": test_Y, "real": real, "control": control}


def test_encoder_beats_shuffled_stimulus_control(enc_run):
    real, control = enc_run["real"], enc_run["control"]
    assert real["pred"].shape == (24, 24) and real["pred"].dtype == np.float32
    assert real["recon"].shape == (24, 16, 16, 3) and real["recon"].dtype == np.uint8
    r_real = encoder.evaluate(real["pred"], enc_run["test_Y"])["median_r"]
    r_ctl = encoder.evaluate(control["pred"], enc_run["test_Y"])["median_r"]
    assert r_real > 0.7 and r_real > r_ctl + 0.4, (r_real, r_ctl)
    h = real["history"]
    assert h[-1]["voxel_mse"] < 0.5 * h[0]["voxel_mse"] and h[-1]["frame_mse"] < h[0]["frame_mse"]


def test_encoder_model_file_reloads(enc_run):
    model, cfg = encoder.load_model(enc_run["tmp"] / "enc.safetensors")
    pred, recon = encoder.predict(model, enc_run["data"]["test_frames"], cfg)
    assert np.array_equal(pred, enc_run["real"]["pred"]) and np.array_equal(recon, enc_run["real"]["recon"])


def test_encoder_leakage_test_frames_do_not_touch_the_model(enc_run, tmp_path):
    data = dict(enc_run["data"])
    data["test_frames"] = np.random.default_rng(5).integers(0, 256, size=(7, 5, 20, 20, 3), dtype=np.uint8)
    out = encoder.fit_predict(data, ENC_CFG, tmp_path / "enc.safetensors", seed=0, log=_quiet)
    assert out["pred"].shape == (7, 24)
    assert_same_safetensors(tmp_path / "enc.safetensors", enc_run["tmp"] / "enc.safetensors")


def test_encoder_resume_after_kill_is_bit_identical(enc_run, tmp_path):
    def dying(msg):
        if msg.startswith("step 64/"):
            raise KeyboardInterrupt  # killed after the step-60 checkpoint

    with pytest.raises(KeyboardInterrupt):
        encoder.fit_predict(enc_run["data"], ENC_CFG, tmp_path / "enc.safetensors", tmp_path / "ck", log=dying)
    assert not (tmp_path / "enc.safetensors").exists()
    msgs = []
    out = encoder.fit_predict(enc_run["data"], ENC_CFG, tmp_path / "enc.safetensors", tmp_path / "ck",
                              log=msgs.append)
    assert any("resuming from the checkpoint at step 60" in m for m in msgs)
    assert_same_safetensors(tmp_path / "enc.safetensors", enc_run["tmp"] / "enc.safetensors")
    assert np.array_equal(out["pred"], enc_run["real"]["pred"])


def test_prepare_chunks_resamples_time_and_space():
    frames = np.zeros((2, 4, 8, 8, 3), np.uint8)
    for k in range(4):
        frames[:, k] = 10 * (k + 1)
    frames[1, :, :4] = 200  # top half bright in clip 1
    out = encoder.prepare_chunks(frames, chunk_frames=7, frame_size=4)
    assert out.shape == (2, 7, 4, 4, 3) and out.dtype == np.uint8
    # frame k of the chunk is input frame round(k * 3 / 6): 0, 0 (0.5 rounds to even), 1, 2 (1.5), 2, 2 (2.5), 3
    assert list(out[0, :, 0, 0, 0]) == [10, 10, 20, 30, 30, 30, 40]
    assert np.all(out[1, :, :2] == 200) and np.all(out[1, 0, 2:] == 10)


def test_encoder_bad_input_names_the_problem(enc_run):
    data = dict(enc_run["data"])
    with pytest.raises(InputError, match="train_frames"):
        encoder.fit_predict({**data, "train_frames": data["train_frames"].astype(np.float32)}, ENC_CFG, log=_quiet)
    with pytest.raises(InputError, match="train_Y"):
        encoder.fit_predict({**data, "train_Y": data["train_Y"][:10]}, ENC_CFG, log=_quiet)
    with pytest.raises(ConfigError, match="frame_size"):
        encoder.config({"frame_size": 18, "decoder_upsamples": 2})
