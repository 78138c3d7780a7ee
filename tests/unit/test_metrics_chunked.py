"""Chunked evaluation: GT cache + per-chunk partials + merge give exactly the unchunked rows and per-clip rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fmrivid.errors import InputError
from fmrivid.metrics import classify, suite
from fmrivid.metrics.stats import PairCache
from fmrivid.metrics.table import write_clip_table, write_table

from clipgen import noisy, smooth_clips

N = 11
CHUNKS = [slice(7, 11), slice(0, 2), slice(2, 7)]  # uneven, and not in clip order
CFG = {"n_boot": 50, "n_perm": 15, "ssim_size": None, "clip_gate": 0.2, "nway": [2, 50], "nway_trials": 10,
       "nway_gt": 3}


def _quiet(*_):
    pass


@pytest.fixture(scope="module")
def data():
    import torch

    from fmrivid import models
    from fmrivid.metrics.perceptual import LPIPS

    torch.set_num_threads(1)
    gt = smooth_clips(0, N, 4, 32, 32, max_freq=0.5)
    rec = noisy(gt, 40, 1)
    rec[5] = smooth_clips(9, 1, 4, 32, 32, max_freq=0.5)[0]  # one failed reconstruction: not every clip alike
    loaded = {"clip": models.load("tiny", "clip", seed=0),
              "image_classifier": models.load("tiny", "image_classifier", seed=0),
              "video_classifier": models.load("tiny", "video_classifier", seed=0),
              "lpips": {"lpips_alex": LPIPS("lpips_alex", random_backbone=True),
                        "lpips_vgg": "not computed: no weights in this test"}}
    ids = [f"clip{i:02d}" for i in range(N)]
    rows, clips = suite.evaluate_videos(gt, rec, ids, "01", "demo", CFG, 3, models=loaded, log=_quiet)
    return {"gt": gt, "rec": rec, "ids": ids, "models": loaded, "rows": rows, "clips": clips}


@pytest.fixture(scope="module")
def parts(data, tmp_path_factory):
    """The partials of CHUNKS, each written to and read back from its HDF5 file."""
    return _chunked(data, tmp_path_factory.mktemp("chunks"))


def _chunked(data, tmp_path, chunks=CHUNKS):
    # the cache holds the clips in another order, plus one the subject did not see: rows are found by clip id
    extra = smooth_clips(7, 1, 4, 32, 32)
    order = np.arange(N)[::-1]
    cache_path = tmp_path / "gt_cache.h5"
    suite.gt_cache(np.concatenate([extra, data["gt"][order]]), ["unseen"] + [data["ids"][i] for i in order],
                   data["models"], CFG, cache_path, log=_quiet)
    cache = suite.read_gt_cache(cache_path)
    parts = []
    for k, rows in enumerate(chunks):
        pos = np.arange(N)[rows]
        part = suite.evaluate_videos_chunk(data["gt"], cache, data["rec"][rows], pos, N, data["ids"], "01",
                                           "demo", CFG, 3, models=data["models"], log=_quiet)
        suite.write_partial(part, tmp_path / f"chunk-{k}.h5")
        parts.append(suite.read_partial(tmp_path / f"chunk-{k}.h5"))
    return parts


def _assert_same_rows(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            same = ra[k] == rb[k] or (isinstance(ra[k], float) and math.isnan(ra[k]) and math.isnan(rb[k]))
            assert same, (ra["metric"], ra["method"], k, ra[k], rb[k])


def test_three_uneven_chunks_equal_the_unchunked_evaluation(data, parts, tmp_path):
    rows, clips = suite.merge_partials(parts, CFG, log=_quiet)
    _assert_same_rows(rows, data["rows"])      # same floats: value, CI, p, n of every row
    assert clips == data["clips"]
    write_table(rows, tmp_path / "a.tsv")
    write_table(data["rows"], tmp_path / "b.tsv")
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    write_clip_table(clips, tmp_path / "a_clips.tsv")
    write_clip_table(data["clips"], tmp_path / "b_clips.tsv")
    assert (tmp_path / "a_clips.tsv").read_bytes() == (tmp_path / "b_clips.tsv").read_bytes()

    table = pd.DataFrame(rows)
    metrics = set(table["metric"])
    assert {"ssim_rgb_uniform", "psnr", "hue_cos", "lpips_alex", "epe_farneback", "clip_video_score",
            "clip_pcc_allpairs", "nway_topk"} <= metrics
    # planted signal: reconstructions are noisy copies of their own GT, so the true pairing beats every shuffle
    for metric in ("ssim_rgb_uniform", "psnr", "pixcorr", "epe_farneback"):
        own = table[(table.metric == metric) & (table.method == "demo")].iloc[0]
        shuf = table[(table.metric == metric) & (table.method == suite.SHUFFLED)].iloc[0]
        assert own["p"] == pytest.approx(1 / (1 + CFG["n_perm"]))
        assert (own["value"] > shuf["value"]) == (metric != "epe_farneback")
    # a metric without shuffled pairings merges without a shuffled row or p
    allpairs = table[table.metric == "clip_pcc_allpairs"].set_index("method")
    assert sorted(allpairs.index) == ["demo", "gt_videos", "static_video"] and allpairs["p"].isna().all()
    # references: a frozen video scores 1 (so 1 is no achievement); the true videos score their own consistency
    assert allpairs.loc["static_video", "value"] == pytest.approx(1.0)
    from fmrivid.metrics import semantic

    gt_emb = suite.frame_embeddings(data["models"]["clip"], data["gt"])
    assert allpairs.loc["gt_videos", "value"] == pytest.approx(semantic.clip_pcc_allpairs(gt_emb).mean())
    assert table[table.metric == "lpips_vgg"]["variant"].iloc[0].endswith("[not computed: no weights in this test]")


def test_video_nway_variant_says_how_many_frames_the_classifier_saw(data):
    n_in = data["models"]["video_classifier"].model.config.num_frames
    video_rows = [r for r in data["rows"] if "video level" in str(r["variant"])]
    said = "4 frames fed as they are" if n_in == 4 else f"each clip's 4 frames resampled to the model's {n_in}"
    assert video_rows and all(r["variant"].endswith(said) for r in video_rows)
    frame_rows = [r for r in data["rows"] if "frame level" in str(r["variant"])]
    assert frame_rows and not any("frames fed" in r["variant"] or "resampled" in r["variant"] for r in frame_rows)


def test_merge_refuses_missing_duplicated_and_foreign_chunks(data, parts):
    with pytest.raises(InputError, match=r"5 clip\(s\) missing \(global indices \[2, 3, 4, 5, 6\]\)"):
        suite.merge_partials(parts[:2], CFG)
    with pytest.raises(InputError, match="covered twice"):
        suite.merge_partials(parts + [parts[2]], CFG)
    with pytest.raises(InputError, match="subject='01'"):
        suite.merge_partials([parts[0], {**parts[1], "subject": "02"}, parts[2]], CFG)
    with pytest.raises(InputError, match="n_perm=99"):
        suite.merge_partials(parts, {**CFG, "n_perm": 99})
    rows, _ = suite.merge_partials(parts[::-1], CFG)     # any order of chunks
    _assert_same_rows(rows, data["rows"])


def test_chunk_refuses_a_cache_of_other_frames_and_bad_files(data, tmp_path):
    other = data["gt"].copy()
    other[3, 0, 0, 0, 0] ^= 1                            # one bit of one GT pixel differs
    cache = suite.gt_cache_arrays(other, data["ids"], {}, log=_quiet)
    with pytest.raises(InputError, match=r"other frames for clips \['clip03'\]"):
        suite.evaluate_videos_chunk(data["gt"], cache, data["rec"][:2], [0, 1], N, data["ids"], "01", "demo",
                                    CFG, 3, log=_quiet)
    good = suite.gt_cache_arrays(data["gt"], data["ids"], {}, log=_quiet)
    with pytest.raises(InputError, match=r"GT outputs of clips \['clipXX'\]"):
        suite.evaluate_videos_chunk(data["gt"], good, data["rec"][:2], [0, 1], N, data["ids"][:-1] + ["clipXX"],
                                    "01", "demo", CFG, 3, log=_quiet)
    with pytest.raises(InputError, match="GT clip_emb of the clip"):   # cache made without the CLIP model
        suite.evaluate_videos_chunk(data["gt"], good, data["rec"][:2], [0, 1], N, data["ids"], "01", "demo",
                                    CFG, 3, models={"clip": data["models"]["clip"]}, log=_quiet)
    with pytest.raises(InputError, match="distinct global clip indices"):
        suite.evaluate_videos_chunk(data["gt"], good, data["rec"][:2], [0, 0], N, data["ids"], "01", "demo",
                                    CFG, 3, log=_quiet)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="unreadable"):
        suite.read_partial(junk)
    with pytest.raises(InputError, match="no such file"):
        suite.read_gt_cache(tmp_path / "absent.h5")
    suite.gt_cache(data["gt"][:2], data["ids"][:2], {}, CFG, tmp_path / "c.h5", log=_quiet)
    with pytest.raises(InputError, match="format='fmrivid-eval-partial/1'"):
        suite.read_partial(tmp_path / "c.h5")            # a GT cache is not a partial
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "junk.h5"]   # no temporary files left


def test_generic_chunks_merge_median_lower_is_better_and_plain_metrics():
    """The collector/merge pair against the unchunked _Collector, for statistics the video metrics do not use."""
    rng = np.random.default_rng(4)
    n, seed = 9, 11
    score = rng.normal(size=(n, n)) + 2.0 * np.eye(n)   # score[rec i, gt j]; the true pairing is larger
    ids = [f"c{i}" for i in range(n)]
    cfg = {"n_boot": 40, "n_perm": 25}

    def pair(ri, gi):
        return score[ri, gi]

    ref = suite._Collector("02", "m", ids, seed, cfg["n_boot"], cfg["n_perm"], _quiet)
    diag = np.diag(score).copy()
    ref.add("med", "median, lower is better", diag, PairCache(pair), greater=False, stat="median")
    ref.add("plain", "no shuffled pairing", diag * 2)
    ref.add("up", "mean, higher is better", diag, PairCache(pair))
    parts = []
    for rows in (slice(4, 9), slice(0, 1), slice(1, 4)):
        pos = np.arange(n)[rows]
        col = suite.ChunkCollector(pos, n, ids[rows], "02", "m", seed, cfg["n_perm"], _quiet)

        def chunk_pair(ri, gi, pos=pos):
            return score[pos[ri], gi]

        col.add("med", "median, lower is better", diag[pos], PairCache(chunk_pair), greater=False, stat="median")
        col.add("plain", "no shuffled pairing", diag[pos] * 2)
        col.add("up", "mean, higher is better", diag[pos], PairCache(chunk_pair))
        parts.append(col.partial())
    rows, clips = suite.merge_partials(parts, cfg, log=_quiet)
    _assert_same_rows(rows, ref.rows)
    assert clips == ref.clips
    p = {r["metric"]: r["p"] for r in rows if r["method"] == "m"}
    assert p["up"] == pytest.approx(1 / 26) and p["med"] == 1.0 and math.isnan(p["plain"])


def test_nway_chunks_with_informative_probabilities():
    """N-way draws follow the global clip index: chunks of random class probabilities merge exactly."""
    rng = np.random.default_rng(2)
    n, t, c = 10, 3, 60
    pg = rng.dirichlet(np.full(c, 0.3), size=(n, t))
    pr = 0.5 * pg + 0.5 * rng.dirichlet(np.full(c, 0.3), size=(n, t))
    cfg = {"n_boot": 30, "n_perm": 12, "nway": [2, 50], "nway_trials": 7, "nway_gt": 3}
    ids = [f"c{i}" for i in range(n)]

    def run(chunks):
        parts = []
        for rows in chunks:
            pos = np.arange(n)[rows]
            col = suite.ChunkCollector(pos, n, ids[rows], "01", "m", 5, cfg["n_perm"], _quiet)
            suite._nway_metrics(col, pg, pr[rows], pos, "frame", "test", cfg, 5)
            parts.append(col.partial())
        return suite.merge_partials(parts, cfg, log=_quiet)

    whole, whole_clips = run([slice(0, n)])
    chunked, chunked_clips = run([slice(6, 10), slice(0, 3), slice(3, 6)])
    _assert_same_rows(chunked, whole)
    assert chunked_clips == whole_clips
    # the unchunked values are the published protocol's (classify.nway_topk) and they are informative
    table = pd.DataFrame(whole)
    for n_gt in (3, 1):
        for n_way in (2, 50):
            ref = classify.nway_topk(pg, pr, n_way, cfg["nway_trials"], n_gt, 5)
            variant = classify.variant(n_way, n_gt, "frame", cfg["nway_trials"], "test")
            got = table[(table.variant == variant) & (table.method == "m")]["value"].iloc[0]
            assert got == pytest.approx(ref.mean(), abs=1e-12)
    own = table[table.method == "m"]["value"].to_numpy()
    shuf = table[table.method == suite.SHUFFLED]["value"].to_numpy()
    assert np.all(own > shuf)


def test_draw_positions_of_global_indices_are_rows_of_the_full_draw():
    full = classify.draw_positions(9, 2, 30, 5, 3, 4, seed=8)
    idx = np.array([7, 2, 5])
    np.testing.assert_array_equal(classify.draw_positions(0, 2, 30, 5, 3, 4, seed=8, indices=idx), full[idx])


def test_stage_chunks_write_what_run_evaluate_writes(tmp_path):
    """run_gt_cache + run_evaluate_chunk per chunk + run_evaluate_merge: the files of run_evaluate, byte for byte."""
    from fmrivid.metrics import stages as metrics_stages
    from fmrivid.io.h5 import write_features

    n, cs = 7, 3
    test_ids = [f"t{i}" for i in (5, 1, 3, 0, 6, 2, 4)]           # splits order differs from prediction order
    ids = sorted(test_ids)
    gt = smooth_clips(1, n, 3, 24, 24)
    pd.DataFrame({"clip_id": ["tr0"] + test_ids, "split": ["train"] + ["test"] * n, "file": "x.mp4",
                  "caption": "c"}).to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    lossless = {"storage": "lossless uint8"}
    frames = {c: gt[i] for i, c in enumerate(ids)}
    frames["tr0"] = gt[0]
    write_features(tmp_path / "frames.h5", list(frames), np.stack(list(frames.values())), lossless)
    rng = np.random.default_rng(0)
    true = rng.normal(size=(n, 8))
    write_features(tmp_path / "pred.h5", ids, (true + rng.normal(size=true.shape)).astype(np.float32))
    write_features(tmp_path / "truth.h5", ids, true.astype(np.float32))
    rec = noisy(gt, 30, 2)
    write_features(tmp_path / "recon.h5", ids, rec, lossless)
    cfg = {**CFG, "device": "cpu", "clip_model": "tiny", "frame_classifier": "tiny", "video_classifier": None,
           "lpips": [], "retrieval_topk": [2], "retrieval_nway": 4, "retrieval_subsets": 3}
    common = {"subject": "01", "method": "demo", "cfg": cfg, "seed": 3, "image_model": "tiny", "log": _quiet}
    metrics_stages.evaluate_unchunked(tmp_path / "recon.h5", tmp_path / "frames.h5", [tmp_path / "pred.h5"],
                        [tmp_path / "truth.h5"], ["text"], out_path=tmp_path / "ref.tsv",
                        out_clips=tmp_path / "ref_clips.tsv", out_models=tmp_path / "ref_models.json", **common)
    metrics_stages.gt_cache(tmp_path / "frames.h5", tmp_path / "splits.tsv", cfg, "tiny", 3, tmp_path / "gt.h5",
                        log=_quiet)
    partials = []
    for k in range(-(-n // cs)):
        rows = slice(k * cs, min(n, (k + 1) * cs))
        write_features(tmp_path / f"chunk-{k}.h5", ids[rows], rec[rows], lossless)
        partials.append(tmp_path / f"part-{k}.h5")
        metrics_stages.evaluate_chunk(tmp_path / f"chunk-{k}.h5", tmp_path / "pred.h5", tmp_path / "frames.h5",
                                  tmp_path / "gt.h5", k, cs, out_partial=partials[-1], **common)
    common.pop("image_model")
    metrics_stages.evaluate(partials[::-1], [tmp_path / "pred.h5"], [tmp_path / "truth.h5"], ["text"],
                              out_table=tmp_path / "merged.tsv", out_clips=tmp_path / "merged_clips.tsv",
                              out_models=tmp_path / "merged_models.json", **common)
    for ref, got in (("ref.tsv", "merged.tsv"), ("ref_clips.tsv", "merged_clips.tsv"),
                     ("ref_models.json", "merged_models.json")):
        assert (tmp_path / got).read_bytes() == (tmp_path / ref).read_bytes(), got
    assert "nway_topk" in (tmp_path / "merged.tsv").read_text()
    # a chunk file that is not the chunk the prediction file's order says is refused
    write_features(tmp_path / "bad.h5", ids[1:4], rec[1:4], lossless)
    with pytest.raises(InputError, match="the clips of chunk 0"):
        metrics_stages.evaluate_chunk(tmp_path / "bad.h5", tmp_path / "pred.h5", tmp_path / "frames.h5",
                                  tmp_path / "gt.h5", 0, cs, out_partial=tmp_path / "bad_part.h5",
                                  image_model="tiny", **common)
    assert not (tmp_path / "bad_part.h5").exists()
