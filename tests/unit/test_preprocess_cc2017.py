"""A CC2017-shaped dataset of real CIFTI-2 files goes through ingestion, trimming to 240 volumes and selection."""

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
import fmrivid.config as fc
from fmrivid.preprocess import stages as preprocess_stages
from fmrivid.errors import InputError
from fmrivid.io import cc2017, cifti
from fmrivid.io.h5 import write_features
from fmrivid.preprocess.pipeline import read_subject

N_PLANTED = 1500
LAG_TRS = 2  # planted response 4 s after the clip (TR 2 s)
CC = {"space": "cifti", "mni_file": "{seg}_{rep}_mni.nii.gz", "train_segments": 3, "test_segments": 2,
      "train_repeats": 2, "test_repeats": 2, "fps": 30}


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """2 shared cores: oversubscribed BLAS threads make the 5-fold ridge scan 20x slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def cc_root(tmp_path_factory):
    """subject1 with seg1..3 (245 volumes, 2 repeats) and test1 (245) / test2 (246), 2 repeats each.

    The first N_PLANTED cortical vertices respond to a per-clip signal of the segment (the same in every
    repeat), LAG_TRS volumes after the clip; every other grayordinate is noise on a baseline of 1000.
    """
    root = tmp_path_factory.mktemp("cc2017")
    models = cifti.hcp_91k_axis()
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.8, 1.2, N_PLANTED).astype(np.float32)
    train, test = cc2017.segments(CC["train_segments"], CC["test_segments"])
    ids, feats = [], []
    for seg in train + test:
        n_vol = 246 if seg == "test2" else 245
        first = 2 if n_vol == 246 else 1
        movie = rng.standard_normal(240).astype(np.float32)  # one value per 2-s clip
        ids += [cc2017.clip_id(seg, i) for i in range(240)]
        feats.append(np.c_[movie, rng.standard_normal(240)])  # the planted feature and an unrelated one
        for rep in (1, 2):
            data = rng.standard_normal((n_vol, len(models)), dtype=np.float32)
            signal = np.zeros(n_vol, np.float32)
            signal[first + LAG_TRS:first + LAG_TRS + 240] = movie[: n_vol - first - LAG_TRS][:240]
            data[:, :N_PLANTED] += 1.5 * signal[:, None] * weights
            data += 1000.0 + np.linspace(0, 20, n_vol, dtype=np.float32)[:, None]  # baseline and drift
            cifti.write_dtseries(cc2017.run_path(root, "1", seg, rep), data, 2.0, models)
    write_features(root / "features.h5", ids, np.concatenate(feats).astype(np.float32), {"kind": "planted"})
    return root


def _splits(tmp_path):
    table = cc2017.stimulus_table(CC).assign(caption="")
    path = tmp_path / "splits.tsv"
    table[["clip_id", "split", "file", "caption"]].to_csv(path, sep="\t", index=False)
    return path


def _cfg():
    raw = yaml.safe_load(open(REPO / "config" / "cc2017.yaml"))
    pre = raw["preprocess"]
    pre["selection"].update({"top_k": N_PLANTED, "min_voxels": 10})
    pre["qc"] = {"lag_scan_max_s": 8.0, "lag_scan_voxels": 3000}
    return fc.validate({"preprocess": pre})["preprocess"]


def test_cc2017_config_describes_the_real_dataset():
    cfg = fc.load(REPO / "config" / "cc2017.yaml")
    ds = cfg["dataset"]
    assert ds["layout"] == "cc2017" and ds["tr"] == 2.0 and not ds["simulate"]
    assert (ds["cc2017"]["train_segments"], ds["cc2017"]["test_segments"]) == (18, 5)
    assert (ds["cc2017"]["train_repeats"], ds["cc2017"]["test_repeats"]) == (2, 10)
    assert ds["cc2017"]["fps"] == 30
    assert cfg["preprocess"]["trim"]["preset"] == "cc2017" and cfg["preprocess"]["detrend_order"] == 4
    assert cfg["preprocess"]["cifti_cortex_only"] and cfg["preprocess"]["selection"]["reliability_groups"] == "segment"


def test_cc2017_cifti_ingestion_trimming_selection(cc_root, tmp_path):
    runs = cc2017.list_runs(cc_root, "1", CC)
    assert [p.name for *_, p in runs][:2] == ["seg1_1_Atlas.dtseries.nii", "seg1_2_Atlas.dtseries.nii"]
    img = cifti.check_header(runs[0][3], expected_tr=2.0)
    assert img.shape == (245, 91282) and int(cifti.cortex_columns(img).sum()) == 59412
    out = tmp_path / "out"
    preprocess_stages.preprocess([str(p) for *_, p in runs], [], [], [f"{s}_{r}" for s, r, _, _ in runs], "1", 2.0,
                          _splits(tmp_path), _cfg(), out / "fmri/sub-1.h5", out / "qc/sel.png",
                          out_lag_tsv=out / "qc/lag.tsv", out_selection_tsv=out / "qc/sel.tsv",
                          layout="cc2017", lag_features=cc_root / "features.h5", log=lambda m: None)
    sub = read_subject(out / "fmri/sub-1.h5")
    trims = {label: (first, last) for label, first, last in sub["info"]["trim"]}
    assert trims["seg1_1"] == (1, 4) and trims["test1_2"] == (1, 4) and trims["test2_1"] == (2, 4)
    # 240 clips per segment: the lag reads the trailing volumes before they are trimmed (trailing_for_lag).
    assert sub["info"]["events_dropped"] == 0
    assert sub["train_X"].shape[0] == 3 * 240 and sub["test_X"].shape[0] == 2 * 240
    assert sub["train_ids"][0] == "seg1_000" and sub["test_ids"][-1] == "test2_239"
    assert sub["space"] == "cifti" and sub["grayordinate"].max() < 59412  # cortex only
    planted = set(range(N_PLANTED))
    chosen = set(sub["grayordinate"].tolist())
    precision = len(chosen & planted) / len(chosen)
    recall = len(chosen & planted) / N_PLANTED
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    lag = pd.read_csv(out / "qc/lag.tsv", sep="\t")
    ridge = lag[lag["method"] == "ridge_features"]
    assert float(ridge.loc[ridge["best"], "lag_s"].iloc[0]) == LAG_TRS * 2.0  # training clips only
    # Both repeats replay the same movie: repeat identification cannot tell lags apart, and says so.
    assert not lag.loc[lag["method"] == "repeat_identification", "informative"].any()


def test_cc2017_missing_run_named(cc_root, tmp_path):
    cc = {**CC, "train_repeats": 3}
    with pytest.raises(InputError, match=r"seg1_3_Atlas\.dtseries\.nii: expected repeat 3 of segment seg1 of "
                                         r"subject 1 \(CC2017 layout\); found no such file"):
        cc2017.list_runs(cc_root, "1", cc)


def test_cc2017_trailing_trim_before_lag_drops_last_clips(cc_root, tmp_path):
    """trim.trailing_for_lag false: the trailing volumes are cut first, so lag 4 s drops the last 2 clips."""
    runs = cc2017.list_runs(cc_root, "1", CC)
    cfg = _cfg()
    cfg["trim"]["trailing_for_lag"] = False
    cfg["out_of_run"] = "drop"
    out = tmp_path / "out"
    preprocess_stages.preprocess([str(p) for *_, p in runs], [], [], [f"{s}_{r}" for s, r, _, _ in runs], "1", 2.0,
                          _splits(tmp_path), cfg, out / "fmri/sub-1.h5", out / "qc/sel.png", layout="cc2017",
                          log=lambda m: None)
    sub = read_subject(out / "fmri/sub-1.h5")
    assert sub["info"]["events_dropped"] == 2 * len(runs)
    assert sub["train_X"].shape[0] == 3 * 238 and sub["test_ids"][-1] == "test2_237"


def test_one_segment_design_is_one_clear_line():
    """Segment-wise reliability on one training segment: a ConfigError naming the key, not a traceback."""
    from fmrivid.errors import ConfigError
    from fmrivid.preprocess.select import segment_reliability_scores

    rng = np.random.default_rng(0)
    ids = [f"seg1_{i:03d}" for i in range(10)] * 2
    with pytest.raises(ConfigError, match=r"'preprocess\.selection\.reliability_groups': 'segment' expected at "
                                          r"least 2 groups .* found 1 such group among \['seg1'\]"):
        segment_reliability_scores(rng.normal(size=(20, 5)), ids, ["seg1"] * 20)
