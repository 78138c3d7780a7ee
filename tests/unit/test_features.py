"""Tests of fmrivid.features: frame sampling from videos and model embeddings."""

import imageio.v2 as imageio
import numpy as np
import pandas as pd
import pytest
import torch

from fmrivid import models
from fmrivid.errors import InputError
from fmrivid.features import embed, frames
from fmrivid.io.video import read_video, write_mp4

FPS = 10
N_VIDEO = 30  # 3 s
SIDE = 64
SQUARE = 6


def _moving_square(n=N_VIDEO, side=SIDE):
    """Bright square whose left edge is at x = 2 * frame index (a clock we can read back)."""
    video = np.zeros((n, side, side, 3), dtype=np.uint8)
    for i in range(n):
        video[i, 20:20 + SQUARE, 2 * i:2 * i + SQUARE] = 255
    return video


def _frame_index_seen(image):
    """Invert the clock: square centroid (in pixels of ``image``) -> source frame index."""
    scale = SIDE / image.shape[1]
    weight = image.astype(float).mean(axis=2)
    x = (weight.sum(axis=0) * np.arange(image.shape[1])).sum() / weight.sum()
    left_edge = (x + 0.5) * scale - 0.5 - (SQUARE - 1) / 2
    return left_edge / 2


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("videos") / "square.mp4"
    write_mp4(path, _moving_square(), FPS)
    return path


@pytest.fixture(scope="module")
def tiny_clip():
    return models.load("tiny", "clip", seed=0)


@pytest.fixture(scope="module")
def minilm():
    return models.load("minilm", "text_encoder")


# --------------------------------------------------------------------------- frames


def test_clip_frames_shape_order_and_timing(video_path):
    out = frames.extract_clip_frames(video_path, 6, 32)
    assert out.shape == (6, 32, 32, 3) and out.dtype == np.uint8
    seen = np.array([_frame_index_seen(f) for f in out])
    assert np.all(np.diff(seen) > 0)
    expected = [k * N_VIDEO // 6 for k in range(6)]  # starts of 6 equal intervals
    np.testing.assert_allclose(seen, expected, atol=0.3)


def test_clip_frames_duration_and_start(video_path):
    seen = [_frame_index_seen(f) for f in frames.extract_clip_frames(video_path, 5, 32, 1.5)]
    np.testing.assert_allclose(seen, [k * 15 // 5 for k in range(5)], atol=0.3)
    later = frames.extract_clip_frames(video_path, 4, 32, duration=1.0, start=1.2)
    expected = [12 + k * 10 // 4 for k in range(4)]
    np.testing.assert_allclose([_frame_index_seen(f) for f in later], expected, atol=0.3)


def test_resize_is_area_averaging(video_path):
    decoded, _ = read_video(video_path)
    out = frames.extract_clip_frames(video_path, 3, 16)
    index = [k * N_VIDEO // 3 for k in range(3)]
    blocks = decoded[index].reshape(3, 16, 4, 16, 4, 3).astype(float).mean(axis=(2, 4))
    assert np.abs(out.astype(float) - blocks).max() <= 1.0
    same = frames.extract_clip_frames(video_path, 3, SIDE)
    np.testing.assert_array_equal(same, decoded[index])


def test_truncated_video_is_an_input_error_naming_it(video_path, tmp_path):
    data = video_path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.mp4"):
        frames.extract_clip_frames(cut, 4, 16)


def test_truncated_streamable_video_is_caught(tmp_path):
    """moov atom first: ffmpeg decodes the first half without complaint."""
    path = tmp_path / "fast.mp4"
    noise = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    writer = imageio.get_writer(str(path), format="FFMPEG", fps=FPS, codec="libx264",
                                ffmpeg_params=["-movflags", "+faststart"], macro_block_size=1,
                                pixelformat="yuv420p", ffmpeg_log_level="error")
    for frame in noise:
        writer.append_data(frame)
    writer.close()
    assert frames.extract_clip_frames(path, 4, 16).shape == (4, 16, 16, 3)
    cut = tmp_path / "fast_cut.mp4"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert len(read_video(cut)[0]) < 40  # the decoder alone would not notice
    with pytest.raises(InputError, match="fast_cut.mp4.*truncated"):
        frames.extract_clip_frames(cut, 4, 16)


def test_video_shorter_than_duration_is_an_input_error(video_path):
    with pytest.raises(InputError, match="square.mp4.*3.000 s"):
        frames.extract_clip_frames(video_path, 4, 16, duration=5.0)
    with pytest.raises(InputError, match="square.mp4"):
        frames.extract_clip_frames(video_path, 4, 16, duration=2.0, start=2.0)


def test_extract_frames_from_a_table(video_path, tmp_path):
    root = tmp_path
    write_mp4(root / "sub" / "other.mp4", _moving_square()[::-1], FPS)
    (root / video_path.name).write_bytes(video_path.read_bytes())
    table = pd.DataFrame({
        "clip_id": ["c2", "c0", "c1"],
        "file": ["sub/other.mp4", video_path.name, video_path.name],
        "duration": [1.0, 1.0, 2.0],
        "start": [0.0, 0.0, 1.0],
    })
    ids, out = frames.extract_frames(table, root, 4, 32, duration_col="duration",
                                     start_col="start")
    assert ids == ["c2", "c0", "c1"]
    assert out.shape == (3, 4, 32, 32, 3) and out.dtype == np.uint8
    for row, (_, item) in enumerate(table.iterrows()):
        single = frames.extract_clip_frames(root / item.file, 4, 32, item.duration,
                                            start=item.start)
        np.testing.assert_array_equal(out[row], single)
    reversed_clock = [_frame_index_seen(f) for f in out[0]]
    assert np.all(np.diff(reversed_clock) < 0)
    tsv = root / "clips.tsv"
    table.to_csv(tsv, sep="\t", index=False)
    np.testing.assert_array_equal(
        frames.extract_frames(tsv, root, 4, 32, "duration", start_col="start")[1], out)


def test_extract_frames_errors_name_clip_and_file(video_path):
    root = video_path.parent
    missing = pd.DataFrame({"clip_id": ["a", "b"], "file": [video_path.name, "gone.mp4"]})
    with pytest.raises(InputError, match=r"gone.mp4.*no such file.*'b'"):
        frames.extract_frames(missing, root, 2, 16)
    short = pd.DataFrame({"clip_id": ["a", "long"], "file": [video_path.name] * 2,
                          "d": [1.0, 9.0]})
    with pytest.raises(InputError, match=r"square.mp4.*'long'"):
        frames.extract_frames(short, root, 2, 16, duration_col="d")
    with pytest.raises(InputError, match="duplicates"):
        frames.extract_frames(pd.DataFrame({"clip_id": ["a", "a"], "file": ["x", "y"]}),
                              root, 2, 16)
    with pytest.raises(InputError, match="missing"):
        frames.extract_frames(pd.DataFrame({"clip_id": ["a"]}), root, 2, 16)


# --------------------------------------------------------------------------- embeddings


CAPTIONS = ["a red circle drifts left", "a red circle moves left", "a blue square drifts up",
            "the quick brown fox jumps over the lazy dog while a green triangle spins"]


def test_minilm_matches_sentence_transformers_offline(monkeypatch, minilm):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(models.minilm_dir()), device="cpu").encode(CAPTIONS)
    ours = embed.text_embeddings(minilm, CAPTIONS, batch_size=3)
    assert ours.dtype == np.float32 and ours.shape == (4, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    similarity = ours @ ours.T
    assert similarity[0, 1] > similarity[0, 2]


def test_text_embeddings_are_batch_size_invariant(minilm, tiny_clip):
    for loaded in (minilm, tiny_clip):
        together = embed.text_embeddings(loaded, CAPTIONS, batch_size=64)
        alone = np.concatenate([embed.text_embeddings(loaded, [c], batch_size=1)
                                for c in CAPTIONS])
        np.testing.assert_allclose(together, alone, atol=1e-5)
    assert embed.text_embeddings(tiny_clip, CAPTIONS).shape == (4, 16)
    assert embed.text_embeddings(minilm, []).shape == (0, 384)


def _frames(n=5, t=3, side=32, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, t, side, side, 3), dtype=np.uint8)


def test_image_embeddings_are_clip_projections_of_normalised_pixels(tiny_clip):
    clips = _frames()
    ours = embed.image_embeddings(tiny_clip, clips, which="first")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    pixels = (torch.from_numpy(clips[:, 0]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    model = tiny_clip.model
    with torch.inference_mode():
        hidden = model.vision_model(pixel_values=pixels).pooler_output
        reference = model.visual_projection(hidden).numpy()
    assert ours.shape == (5, 16) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_image_embeddings_which_and_batch_size(tiny_clip):
    clips = _frames()
    per_frame = [embed.image_embeddings(tiny_clip, clips[:, [j]], which="first")
                 for j in range(3)]
    middle = embed.image_embeddings(tiny_clip, clips, batch_size=2, which="middle")
    np.testing.assert_allclose(middle, per_frame[1], atol=1e-5)
    mean = embed.image_embeddings(tiny_clip, clips, batch_size=4, which="mean")
    np.testing.assert_allclose(mean, np.mean(per_frame, axis=0), atol=1e-5)
    one_by_one = np.concatenate([embed.image_embeddings(tiny_clip, clips[[i]], batch_size=1)
                                 for i in range(5)])
    np.testing.assert_allclose(embed.image_embeddings(tiny_clip, clips, batch_size=32),
                               one_by_one, atol=1e-5)
    larger = embed.image_embeddings(tiny_clip, _frames(2, 1, 48), which="first")
    assert larger.shape == (2, 16)
    with pytest.raises(ValueError, match="which"):
        embed.image_embeddings(tiny_clip, clips, which="last")
    with pytest.raises(ValueError, match="uint8"):
        embed.image_embeddings(tiny_clip, clips.astype(np.float32))


def test_vae_latents_are_scaled_posterior_means():
    loaded = models.load("tiny", "vae", seed=2)
    vae = loaded.model
    images = _frames(5, 1, 16)[:, 0]
    ours = embed.vae_latents(loaded, images, batch_size=16)
    assert ours.shape == (5, 4, 8, 8) and ours.dtype == np.float32
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert x.min() >= -1 and x.max() <= 1
    with torch.inference_mode():
        moments = vae.quant_conv(vae.encoder(x))
    reference = moments[:, :4].numpy() * vae.config.scaling_factor
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    one_by_one = np.concatenate([embed.vae_latents(vae, images[[i]], batch_size=1)
                                 for i in range(5)])
    np.testing.assert_allclose(ours, one_by_one, atol=1e-5)
    # CPU kernels round differently for different batch sizes: equal to float32 precision
    np.testing.assert_allclose(ours, embed.vae_latents(vae, images, batch_size=2), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours, embed.vae_latents(vae, images, batch_size=16))


def test_vae_latents_subtract_a_shift_factor_when_configured():
    plain = models.load("tiny", "vae", seed=2)
    shifted = models.load("tiny", "vae", seed=2, tiny_config={"shift_factor": 0.5,
                                                              "scaling_factor": 2.0})
    images = _frames(2, 1, 16)[:, 0]
    expected = (embed.vae_latents(plain, images) / plain.model.config.scaling_factor - 0.5) * 2
    np.testing.assert_allclose(embed.vae_latents(shifted, images), expected, atol=1e-5)
