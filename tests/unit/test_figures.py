"""Tests of fmrivid.report.figures: frame grids, preview videos, metric bars, loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from PIL import Image

from fmrivid.errors import InputError
from fmrivid.io.video import read_video
from fmrivid.metrics.table import COLUMNS, write_table
from fmrivid.report import figures


def _solid_clips(n, t, h, w, seed):
    """Clips whose every frame is one solid colour, all colours distinct and non-gray."""
    rng = np.random.default_rng(seed)
    colors = set()
    while len(colors) < 2 * n * t:
        c = tuple(int(v) for v in rng.integers(20, 236, 3))
        if len(set(c)) == 3 and min(abs(c[0] - c[1]), abs(c[1] - c[2]), abs(c[0] - c[2])) > 25:
            colors.add(c)
    colors = np.array(sorted(colors), dtype=np.uint8)[rng.permutation(2 * n * t)]
    colors = colors.reshape(2, n, t, 3)
    gt = np.broadcast_to(colors[0][:, :, None, None, :], (n, t, h, w, 3)).copy()
    rec = np.broadcast_to(colors[1][:, :, None, None, :], (n, t, h, w, 3)).copy()
    return gt, rec


def _bbox(img, color):
    ys, xs = np.nonzero(np.all(img[..., :3] == color, axis=-1))
    if ys.size == 0:
        return None
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1, ys.size


# ---------------------------------------------------------------- frame grid


def test_frame_grid_layout(tmp_path):
    n, t, h, w = 3, 4, 12, 10
    gt, rec = _solid_clips(n, t, h, w, seed=0)
    path = figures.frame_grid(gt, rec, ["c0", "c1", "c2"], tmp_path / "grid.png", max_clips=2,
                              title="demo")
    img = np.asarray(Image.open(path).convert("RGB"))
    boxes = {}
    for i in range(n):
        for j in range(t):
            boxes["gt", i, j] = _bbox(img, gt[i, j, 0, 0])
            boxes["rec", i, j] = _bbox(img, rec[i, j, 0, 0])
    # max_clips=2: the third clip is not drawn
    assert all(boxes[k, 2, j] is None for k in ("gt", "rec") for j in range(t))
    drawn = {k: v for k, v in boxes.items() if k[1] < 2}
    assert all(v is not None for v in drawn.values())
    # every frame is a full solid rectangle of the same integer-upscaled size
    sizes = {(b[1] - b[0], b[3] - b[2]) for b in drawn.values()}
    assert len(sizes) == 1
    ch, cw = sizes.pop()
    assert ch % h == 0 and cw % w == 0 and ch // h == cw // w >= 1
    assert all(b[4] == ch * cw for b in drawn.values())
    # rows: clip 0 GT, clip 0 rec, clip 1 GT, clip 1 rec from top to bottom; T frames across
    row_tops = [drawn[k, i, 0][0] for i in range(2) for k in ("gt", "rec")]
    assert row_tops == sorted(row_tops) and len(set(row_tops)) == 4
    for i in range(2):
        for k in ("gt", "rec"):
            lefts = [drawn[k, i, j][2] for j in range(t)]
            tops = {drawn[k, i, j][0] for j in range(t)}
            assert lefts == sorted(lefts) and len(set(lefts)) == t and len(tops) == 1
            # same column positions for every row
            assert lefts == [drawn["gt", 0, j][2] for j in range(t)]
    # the image holds the 4 rows x T columns plus margins for labels and title
    assert img.shape[1] >= t * cw + 60 and img.shape[0] >= 4 * ch + 20
    # clip id labels and title are drawn: dark text pixels left of and above the frames
    first_left = drawn["gt", 0, 0][2]
    assert (img[:, :first_left].min(axis=-1) < 100).any()
    assert (img[: drawn["gt", 0, 0][0]].min(axis=-1) < 100).any()


def test_frame_grid_size_formula_and_determinism(tmp_path):
    gt, rec = _solid_clips(2, 3, 64, 64, seed=1)
    a = figures.frame_grid(gt, rec, ["x", "y"], tmp_path / "a.png")
    b = figures.frame_grid(gt, rec, ["x", "y"], tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()
    width, height = Image.open(a).size
    f = 2  # 64-px frames are doubled (target 128)
    assert width == 110 + 3 * 64 * f + 2 * 2 + 4
    assert height == 4 + 2 * (2 * 64 * f + 2) + 10 + 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_frame_grid_validation(tmp_path):
    gt, rec = _solid_clips(2, 2, 8, 8, seed=2)
    with pytest.raises(InputError, match="clip_ids"):
        figures.frame_grid(gt, rec, ["only-one"], tmp_path / "x.png")
    with pytest.raises(InputError, match="rec"):
        figures.frame_grid(gt, rec[:, :1], ["a", "b"], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- preview video


def test_preview_video_decodes_with_expected_layout(tmp_path):
    n, t, h, w = 2, 3, 64, 64
    gt, rec = _solid_clips(n, t, h, w, seed=3)
    path = figures.preview_video(gt, rec, tmp_path / "preview.mp4", fps=3, clip_ids=None)
    frames, fps = read_video(path)
    assert frames.shape == (n * t, 64 * 4, 2 * 64 * 4 + 2, 3)  # x4 upscale, 2-px separator
    assert fps == pytest.approx(3)
    for k in range(n * t):
        i, j = divmod(k, t)
        left = frames[k, 20:-20, 20:64 * 4 - 20].reshape(-1, 3).mean(0)
        right = frames[k, 20:-20, 64 * 4 + 2 + 20:-20].reshape(-1, 3).mean(0)
        np.testing.assert_allclose(left, gt[i, j, 0, 0], atol=8)
        np.testing.assert_allclose(right, rec[i, j, 0, 0], atol=8)


def test_preview_banner_and_even_sizes():
    gt, rec = _solid_clips(2, 2, 65, 33, seed=4)
    frames = figures.preview_frames(gt, rec, clip_ids=["clip-a", "clip-b"])
    f = 256 // 65  # 3
    h, w = 16 + 65 * f, 2 * 33 * f + 2
    assert frames.shape == (4, h + h % 2, w + w % 2, 3)
    assert frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
    banner = frames[:, :16]
    assert banner.max() == 255 and np.median(banner) == 0  # white text on black
    # below the banner: GT exactly on the left, reconstruction exactly on the right
    np.testing.assert_array_equal(frames[0, 16:16 + 65 * f, :33 * f], np.repeat(
        np.repeat(gt[0, 0], f, 0), f, 1))
    np.testing.assert_array_equal(frames[3, 16:16 + 65 * f, 33 * f + 2:2 * 33 * f + 2],
                                  np.repeat(np.repeat(rec[1, 1], f, 0), f, 1))


# ---------------------------------------------------------------- metric bars


def _table():
    rng = np.random.default_rng(5)
    rows = []
    for subject in ["sub-01", "sub-02"]:
        for method in ["ridge", "full"]:
            for metric in ["psnr", "ssim_rgb_uniform", "two_way_ident"]:
                v = float(rng.uniform(0.2, 0.8))
                rows.append(dict(subject=subject, method=method, metric=metric,
                                 variant=f"{metric} variant", value=v, ci_low=v - 0.05,
                                 ci_high=v + 0.07, n=10))
    return pd.DataFrame(rows, columns=COLUMNS)


def test_metric_bars_values_and_error_bars():
    table = _table()
    fig = figures.metric_bars_figure(table)
    axes = fig.axes
    assert len(axes) == 3
    for ax, metric in zip(axes, sorted(table.metric.unique())):
        sub = table[table.metric == metric].sort_values(["subject", "method"])
        bars = next(c for c in ax.containers if isinstance(c, BarContainer))
        np.testing.assert_allclose([p.get_height() for p in bars.patches], sub.value)
        segments = bars.errorbar.lines[2][0].get_segments()
        np.testing.assert_allclose([s[:, 1].min() for s in segments], sub.ci_low)
        np.testing.assert_allclose([s[:, 1].max() for s in segments], sub.ci_high)
        assert ax.get_title().startswith(metric)


def test_metric_bars_png_from_tsv(tmp_path):
    table = _table()
    tsv = write_table(table.to_dict("records"), tmp_path / "m.tsv")
    path = figures.metric_bars(tsv, tmp_path / "bars.png")
    width, height = Image.open(path).size
    # 3 panels in one row, each max(3, 0.6*4 + 1) = 3.4 x 3.2 inches at 100 dpi
    assert (width, height) == (1020, 320)
    one = figures.metric_bars(table, tmp_path / "one.png", metrics=["psnr"])
    assert Image.open(one).size == (340, 320)
    with pytest.raises(InputError, match="lpips"):
        figures.metric_bars(table, tmp_path / "no.png", metrics=["lpips_alex"])
    with pytest.raises(InputError, match="columns"):
        figures.metric_bars(table.drop(columns="ci_low"), tmp_path / "no.png")
    assert not (tmp_path / "no.png").exists()


# ---------------------------------------------------------------- loss curves


def test_loss_curves(tmp_path):
    steps = np.arange(1, 51)
    curves = {
        "semantic": pd.DataFrame({"step": steps, "loss": 10.0 / steps}),
        "structure": pd.DataFrame({"step": steps, "loss": np.exp(-steps / 10)}),
    }
    fig = figures.loss_curves_figure(curves)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == set(curves)
    np.testing.assert_allclose(lines["semantic"].get_ydata(), 10.0 / steps)
    path = figures.loss_curves(curves, tmp_path / "loss.png")
    assert Image.open(path).size == (640, 400)
    negative = {"nll": pd.DataFrame({"step": steps, "loss": 1.0 - steps / 10})}
    assert figures.loss_curves_figure(negative).axes[0].get_yscale() == "symlog"
    with pytest.raises(InputError, match="step"):
        figures.loss_curves({"bad": pd.DataFrame({"loss": [1.0]})}, tmp_path / "x.png")


def test_html_pages_embed_tables_video_and_provenance(tmp_path):
    import base64
    import re

    from fmrivid.report import html as report_html

    df = pd.DataFrame({"metric": ["psnr", "ssim"], "value": [12.3456789, float("nan")]})
    page = report_html.tables_page({"All <metrics>": (df, "metric-table")}, tmp_path / "t.html", "T").read_text()
    assert '<table class="dataframe metrics" id="metric-table">' in page
    assert "<td>12.3457</td>" in page and "<td>nan</td>" in page and "All &lt;metrics&gt;" in page
    mp4 = tmp_path / "v.mp4"
    mp4.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    page = report_html.video_page(mp4, tmp_path / "v.html", "V").read_text()
    src = re.search(r'<video id="preview"[^>]* src="data:video/mp4;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(src) == mp4.read_bytes()
    doc = {"fmrivid_version": "1", "git_commit": "abc", "models": {"evaluate:clip": {"spec": "tiny", "seed": 0}},
           "packages": {"numpy": "2"}, "input_sha256": {"a.nii.gz": "ff"}, "config": {"seed": 0}}
    page = report_html.provenance_page(doc, tmp_path / "p.html").read_text()
    for needle in ('id="provenance-models"', "evaluate:clip", "<td>abc</td>", "a.nii.gz", "seed: 0"):
        assert needle in page, needle


def test_subject_preview_keeps_evenly_spaced_clips(tmp_path):
    """report.preview_clips: the preview (embedded in the report) holds that many test clips, evenly spaced."""
    from fmrivid.report import stages as report_stages
    from fmrivid.io.h5 import write_features

    rng = np.random.default_rng(0)
    ids = [f"c{i:02d}" for i in range(10)]
    clips = rng.integers(0, 255, (10, 2, 16, 16, 3), dtype=np.uint8)
    write_features(tmp_path / "rec.h5", ids, clips)
    write_features(tmp_path / "frames.h5", ids, clips)
    cfg = {"max_clips": 4, "preview_fps": 2, "preview_clips": 4}
    lines = []
    report_stages.subject_figures(tmp_path / "rec.h5", tmp_path / "frames.h5", cfg, tmp_path / "grid.png",
                               tmp_path / "p.mp4", "01", out_preview_html=tmp_path / "p.html", log=lines.append)
    assert len(read_video(tmp_path / "p.mp4")[0]) == 4 * 2 and "4 of 10 test clips" in lines[0]
    assert "4 of the 10 test clips, evenly spaced" in (tmp_path / "p.html").read_text()
    report_stages.subject_figures(tmp_path / "rec.h5", tmp_path / "frames.h5", {**cfg, "preview_clips": 0},
                               tmp_path / "grid.png", tmp_path / "all.mp4", "01", log=lines.append)
    assert len(read_video(tmp_path / "all.mp4")[0]) == 10 * 2


def test_headline_pairs_each_method_with_its_own_control_and_chance(tmp_path):
    import yaml

    from fmrivid.report import headline as hl

    schema = yaml.safe_load((Path(hl.__file__).parent.parent / "schema" / "config.schema.yaml").read_text())
    assert schema["properties"]["report"]["properties"]["headline"]["default"] == hl.HEADLINE
    rows = []
    for sub, shift in (("01", 0.0), ("02", 0.1)):
        for method, v in (("a", 0.6), ("a_shuffled", 0.3), ("b", 0.5), ("shuffled_gt", 0.2)):
            rows.append({"subject": sub, "method": method, "metric": "pixcorr", "variant": "pc", "value": v + shift,
                         "ci_low": v + shift - 0.05, "ci_high": v + shift + 0.05, "n": 10, "p": 0.01})
        for n in (2, 5, 50):
            for level in ("frame", "video"):
                for k in (1, 3):
                    rows.append({"subject": sub, "method": "a", "metric": "nway_topk",
                                 "variant": f"top-{k} GT classes: {level} level; N={n}", "value": 1 / n + 0.1,
                                 "ci_low": 0, "ci_high": 1, "n": 10, "p": 0.5})
    rows.append({"subject": "01", "method": "a", "metric": "voxel_r", "variant": "r", "value": 0.3, "ci_low": 0.2,
                 "ci_high": 0.4, "n": 10, "p": 0.01})
    table = pd.DataFrame(rows)
    h = hl.write_headline(table, tmp_path / "h.tsv", tmp_path / "h.png", ["pixcorr", "nway_topk", "absent"])
    pc = h[h["metric"] == "pixcorr"].set_index(["method", "subject"])
    assert sorted(pc.index) == [("a", "01"), ("a", "02"), ("b", "01"), ("b", "02")]  # no control as a method
    assert pc.loc[("a", "02"), "value"] == pytest.approx(0.7)
    assert pc.loc[("a", "02"), "shuffled_control"] == pytest.approx(0.4)
    assert pc.loc[("a", "01"), "shuffled_gt"] == pytest.approx(0.2)
    assert np.isnan(pc.loc[("b", "01"), "shuffled_control"])  # b has no control of its own
    nway = sorted(set(h.loc[h["metric"] == "nway_topk", "variant"]))
    assert nway == ["top-3 GT classes: video level; N=2", "top-3 GT classes: video level; N=50"]
    assert list(dict.fromkeys(h["metric"])) == ["pixcorr", "nway_topk"] and "voxel_r" not in set(h["metric"])
    assert pd.read_csv(tmp_path / "h.tsv", sep="\t").shape == (len(h), len(hl.COLUMNS))
    assert (tmp_path / "h.png").stat().st_size > 5000
