"""Stage functions of the feature rules: inputs checked, attrs written, nothing partial left."""

import json

import numpy as np
import pandas as pd
import pytest

from fmrivid import models

from fmrivid.features import stages as features_stages

from fmrivid.io import splits as splits_io
from fmrivid.errors import InputError
from fmrivid.io.h5 import read_features
from fmrivid.io.video import write_mp4

FPS = 8
QUIET = dict(log=lambda message: None)


def _video(path, seconds, seed):
    rng = np.random.default_rng(seed)
    write_mp4(path, rng.integers(0, 256, (int(seconds * FPS), 32, 32, 3), dtype=np.uint8), FPS)


@pytest.fixture
def stimuli(tmp_path):
    """Two 2-s clips, a splits file and one run's events (each clip shown for 2 s)."""
    for k in range(2):
        _video(tmp_path / f"c{k}.mp4", 2.0, k)
    splits = pd.DataFrame({"clip_id": ["c0", "c1"], "split": ["train", "test"],
                           "file": [str(tmp_path / "c0.mp4"), str(tmp_path / "c1.mp4")],
                           "caption": ["a red circle", "a blue square"]})
    splits.to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    events = pd.DataFrame({"onset": [4.0, 10.0], "duration": [2.0, 2.0], "clip_id": ["c0", "c1"]})
    events.to_csv(tmp_path / "events.tsv", sep="\t", index=False)
    return tmp_path


def _frames(root):
    features_stages.frames(root / "splits.tsv", [root / "events.tsv"], 4, 32, root / "frames.h5", **QUIET)
    return root / "frames.h5"


def test_video_shorter_than_its_events_stops_the_frames_rule(stimuli):
    events = pd.read_csv(stimuli / "events.tsv", sep="\t")
    events.loc[1, "duration"] = 3.0
    events.to_csv(stimuli / "events.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"c1.mp4: expected a video covering 0-3 s; found 16 frames "
                                         r"at 8 fps = 2.000 s \[clip 'c1'\]"):
        _frames(stimuli)
    assert not list(stimuli.glob("frames*.h5"))


def test_unreadable_and_truncated_videos_stop_the_frames_rule(stimuli):
    good = (stimuli / "c1.mp4").read_bytes()
    (stimuli / "c1.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputError, match=r"c1.mp4: expected a readable video.*\[clip 'c1'\]"):
        _frames(stimuli)
    (stimuli / "c1.mp4").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match=r"c1.mp4.*\[clip 'c1'\]"):
        _frames(stimuli)
    assert not list(stimuli.glob("frames*.h5"))


def test_frames_follow_the_event_duration(stimuli):
    events = pd.read_csv(stimuli / "events.tsv", sep="\t")
    events["duration"] = 1.0  # only the first second of each video was shown
    events.to_csv(stimuli / "events.tsv", sep="\t", index=False)
    ids, frames, attrs = read_features(_frames(stimuli))
    from fmrivid.features.frames import extract_clip_frames

    assert ids == ["c0", "c1"] and attrs["storage"] == "lossless"
    np.testing.assert_array_equal(frames[1], extract_clip_frames(stimuli / "c1.mp4", 4, 32, 1.0))


def test_missing_captions_stop_the_captions_rule(stimuli):
    splits = pd.read_csv(stimuli / "splits.tsv", sep="\t")
    splits.loc[1, "caption"] = np.nan
    splits.to_csv(stimuli / "splits.tsv", sep="\t", index=False)
    cfg = {"source": "metadata", "model": "tiny", "batch_size": 2, "max_new_tokens": 4}
    with pytest.raises(InputError, match=r"splits.tsv: expected a caption for every clip.*\['c1'\]"):
        features_stages.captions(stimuli / "splits.tsv", cfg, "cpu", 0, stimuli / "captions.tsv", **QUIET)
    assert not (stimuli / "captions.tsv").exists()
    features_stages.captions(stimuli / "splits.tsv", dict(cfg, source="fill"), "cpu", 0, stimuli / "captions.tsv",
                             frames_path=_frames(stimuli), **QUIET)
    table = splits_io.read_captions(stimuli / "captions.tsv")
    assert table["source"].tolist() == ["metadata", "model"]
    assert table["caption"][0] == "a red circle" and ", and then " in table["caption"][1]


def test_feature_stages_write_attrs_and_align_rows(stimuli, tmp_path):
    frames = _frames(stimuli)
    cfg = {"source": "metadata", "model": "tiny", "batch_size": 2, "max_new_tokens": 4}
    captions = stimuli / "captions.tsv"
    features_stages.captions(stimuli / "splits.tsv", cfg, "cpu", 0, captions, **QUIET)
    features_stages.token_features(captions, "tiny", 2, "cpu", 0, stimuli / "tokens.h5", **QUIET)
    features_stages.clip_text_features(captions, "tiny", 2, "cpu", 0, stimuli / "clip_text.h5", **QUIET)
    features_stages.flow_features(frames, {"grid": 2}, stimuli / "flow.h5", **QUIET)
    vae_dir = tmp_path / "vae"
    models.load("tiny", "vae").model.save_pretrained(vae_dir)
    features_stages.vae_features(frames, str(vae_dir), 2, "cpu", stimuli / "vae_all.h5", frames="all", **QUIET)
    features_stages.vae_features(frames, str(vae_dir), 2, "cpu", stimuli / "vae.h5", **QUIET)
    audio_cfg = {"model": "tiny", "steps": 2, "guidance_scale": 2.5, "batch_size": 2}
    features_stages.audio(captions, [stimuli / "events.tsv"], audio_cfg, "cpu", 0, stimuli / "audio", **QUIET)
    assert sorted(p.name for p in (stimuli / "audio").iterdir()) == ["audio.tsv", "c0.wav", "c1.wav"]
    w2v_cfg = {"model": "tiny", "window_trs": 1.0, "layer": -1, "batch_size": 4}
    features_stages.wav2vec_features(stimuli / "audio", w2v_cfg, 0.5, "cpu", 0, stimuli / "w2v.h5", **QUIET)

    shapes = {}
    for name in ("tokens", "clip_text", "flow", "vae_all", "vae", "w2v"):
        ids, data, attrs = read_features(stimuli / f"{name}.h5")
        assert ids == ["c0", "c1"] and data.dtype == np.float32 and np.isfinite(data).all(), name
        assert {"kind", "model", "revision", "dtype", "settings"} <= set(attrs), name
        shapes[name] = data.shape
    assert shapes["w2v"][:2] == (2, 4)  # 2-s clips, TR 0.5 s: one row per TR
    assert shapes["flow"] == (2, 3, 2, 2, 2)
    assert shapes["vae_all"][:2] == (2, 4) and shapes["vae"] == (2, int(np.prod(shapes["vae_all"][2:])))
    _, first, _ = read_features(stimuli / "vae.h5")
    _, every, attrs = read_features(stimuli / "vae_all.h5")
    np.testing.assert_allclose(first, every[:, 0].reshape(2, -1), atol=1e-5)
    assert json.loads(attrs["settings"])["frames"] == "all" and attrs["dtype"] == "float32"
    _, _, attrs = read_features(stimuli / "w2v.h5")
    assert attrs["class"] == "transformers.Wav2Vec2Model" and json.loads(attrs["settings"])["tr"] == 0.5
    # Sub-TR audio tokens: 4 per TR of 0.5 s gives 16 rows per 2-s clip, each the mean of its 0.125-s window.
    features_stages.wav2vec_features(stimuli / "audio", {**w2v_cfg, "tokens_per_tr": 4}, 0.5, "cpu", 0,
                                     stimuli / "w2v4.h5", **QUIET)
    _, fine, attrs = read_features(stimuli / "w2v4.h5")
    assert fine.shape[:2] == (2, 16) and json.loads(attrs["settings"])["tokens_per_tr"] == 4
    _, coarse, _ = read_features(stimuli / "w2v.h5")
    assert not np.allclose(fine[:, ::4], coarse)  # finer windows, other means


def test_audio_needs_one_duration_and_every_clip_presented(stimuli):
    cfg = {"source": "metadata", "model": "tiny", "batch_size": 2, "max_new_tokens": 4}
    features_stages.captions(stimuli / "splits.tsv", cfg, "cpu", 0, stimuli / "captions.tsv", **QUIET)
    events = pd.read_csv(stimuli / "events.tsv", sep="\t")
    events.iloc[:1].to_csv(stimuli / "events.tsv", sep="\t", index=False)
    audio_cfg = {"model": "tiny", "steps": 1, "guidance_scale": 1.0, "batch_size": 2}
    with pytest.raises(InputError, match=r"events.tsv: expected every clip presented.*\['c1'\]"):
        features_stages.audio(stimuli / "captions.tsv", [stimuli / "events.tsv"], audio_cfg, "cpu", 0,
                         stimuli / "audio", **QUIET)
    assert not (stimuli / "audio").exists()


def test_clips_cut_from_one_movie_use_the_start_column(stimuli):
    """CC2017-style: several clips of one movie file, at start_s seconds into it."""
    splits = pd.read_csv(stimuli / "splits.tsv", sep="\t")
    splits["file"] = str(stimuli / "c0.mp4")
    splits["start_s"] = [0.0, 1.0]
    splits["duration_s"] = [1.0, 1.0]
    splits.to_csv(stimuli / "splits.tsv", sep="\t", index=False)
    events = pd.read_csv(stimuli / "events.tsv", sep="\t").assign(duration=1.0)
    events.to_csv(stimuli / "events.tsv", sep="\t", index=False)
    ids, frames, _ = read_features(_frames(stimuli))
    from fmrivid.features.frames import extract_clip_frames

    np.testing.assert_array_equal(frames[1], extract_clip_frames(stimuli / "c0.mp4", 4, 32, 1.0, start=1.0))
    assert not np.array_equal(frames[0], frames[1])
    splits["start_s"] = [0.0, 1.5]  # 1.5 + 1 s > the 2-s movie
    splits.to_csv(stimuli / "splits.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"c0.mp4: expected a video covering 1.5-2.5 s.*\[clip 'c1'\]"):
        _frames(stimuli)
