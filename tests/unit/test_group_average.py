"""The group subject (seed 004's "group brain"): subjects' samples averaged by clip on the voxels all kept."""

import numpy as np
import pytest

from fmrivid.errors import InputError
from fmrivid.preprocess.group import group_average
from fmrivid.preprocess.pipeline import SubjectData, read_subject, write_subject


def subject(tmp_path, name, ijk, rng, signal, order=None, train_ids=None):
    train = train_ids or [f"tr{i}" for i in range(6)]
    test = [f"te{i}" for i in range(4)]
    order = order or (lambda ids: ids)
    tr, te = order(train), order(test)
    # each voxel's value = the clip's planted signal at that voxel + this subject's noise
    def rows(ids):
        return np.array([[signal[c][tuple(v)] for v in ijk] for c in ids]) + rng.normal(0, 1, (len(ids), len(ijk)))
    sd = SubjectData(name, rows(tr), tr, rows(te), te, np.asarray(ijk), np.eye(4), (4, 4, 4),
                     np.arange(len(ijk), dtype=float))
    path = tmp_path / f"sub-{name}.h5"
    write_subject(path, sd)
    return path


def test_group_is_the_mean_over_subjects_on_common_voxels(tmp_path):
    rng = np.random.default_rng(0)
    grid = [tuple(v) for v in np.argwhere(np.ones((4, 4, 4)))]
    ids = [f"tr{i}" for i in range(6)] + [f"te{i}" for i in range(4)]
    signal = {c: {v: rng.normal() * 3 for v in grid} for c in ids}
    a = subject(tmp_path, "01", grid[:40], rng, signal)
    b = subject(tmp_path, "02", grid[10:50], rng, signal, order=lambda x: x[::-1])  # other row order
    c = subject(tmp_path, "03", grid[5:45], rng, signal)
    info = group_average({"01": a, "02": b, "03": c}, tmp_path / "sub-group.h5", log=lambda *_: None)
    assert info["n_voxels"] == 30 and info["n_subjects"] == 3
    g = read_subject(tmp_path / "sub-group.h5")
    assert [tuple(v) for v in g["ijk"]] == sorted(grid[10:40])
    subs = {s: read_subject(p) for s, p in (("01", a), ("02", b), ("03", c))}
    for split in ("train", "test"):
        for r, clip in enumerate(g[f"{split}_ids"]):
            for k, v in enumerate(map(tuple, g["ijk"])):
                vals = []
                for d in subs.values():
                    row = d[f"{split}_ids"].index(clip)
                    col = [tuple(x) for x in d["ijk"]].index(v)
                    vals.append(d[f"{split}_X"][row, col])
                assert g[f"{split}_X"][r, k] == pytest.approx(np.mean(vals), abs=1e-5)
    # averaging raises the planted signal's share: the group correlates better with it than any subject
    truth = np.array([[signal[c][tuple(v)] for v in g["ijk"]] for c in g["test_ids"]])

    def corr(x, y):
        return np.corrcoef(x.ravel(), y.ravel())[0, 1]

    one = subs["01"]
    cols = [[tuple(x) for x in one["ijk"]].index(tuple(v)) for v in g["ijk"]]
    assert corr(g["test_X"], truth) > corr(one["test_X"][:, cols], truth) + 0.02


def test_group_refuses_other_clips_repeats_and_grids(tmp_path):
    rng = np.random.default_rng(1)
    grid = [tuple(v) for v in np.argwhere(np.ones((4, 4, 4)))][:20]
    ids = [f"tr{i}" for i in range(6)] + [f"te{i}" for i in range(4)] + ["trX"]
    signal = {c: {v: 0.0 for v in grid} for c in ids}
    a = subject(tmp_path, "01", grid, rng, signal)
    other = subject(tmp_path, "02", grid, rng, signal, train_ids=[f"tr{i}" for i in range(5)] + ["trX"])
    with pytest.raises(InputError, match="train clips"):
        group_average({"01": a, "02": other}, tmp_path / "g.h5", log=lambda *_: None)
    rep = subject(tmp_path, "03", grid, rng, signal, train_ids=["tr0", "tr0", "tr1", "tr2", "tr3", "tr4"])
    with pytest.raises(InputError, match="average_train_repeats"):
        group_average({"03": rep, "04": rep}, tmp_path / "g.h5", log=lambda *_: None)
    with pytest.raises(InputError, match="at least 2"):
        group_average({"01": a}, tmp_path / "g.h5", log=lambda *_: None)
    assert not (tmp_path / "g.h5").exists()
