"""fmrivid.io.layouts: what Snakemake reads at parse time (subjects, run records, the clip table)."""

import pandas as pd
import pytest

from fmrivid.io import cc2017, layouts
from fmrivid.simulate import bids_fixtures

CC = {"space": "cifti", "mni_file": "{seg}_{rep}_mni.nii.gz", "train_segments": 2, "test_segments": 1,
      "train_repeats": 2, "test_repeats": 3, "fps": 30}


@pytest.fixture(scope="module")
def wild(tmp_path_factory):
    return bids_fixtures.write_bids_wild(tmp_path_factory.mktemp("wild"))


def test_cc2017_records_and_table(tmp_path):
    for seg, rep, _, path in cc2017.list_runs(tmp_path, "1", CC, check=False):  # names only are read here
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    ds = {"layout": "cc2017", "root": str(tmp_path), "subjects": ["1"], "tr": 2.0, "cc2017": CC}
    recs = layouts.runs(ds, "1")
    assert [r["label"] for r in recs] == ["seg1_1", "seg1_2", "seg2_1", "seg2_2", "test1_1", "test1_2", "test1_3"]
    assert recs[0]["group"] == "seg1" and recs[0]["kind"] == "cifti" and recs[0]["events"] == ""
    assert layouts.table_from_rule(ds)
    out = tmp_path / "results/stimuli/clips.tsv"
    table = layouts.write_stimulus_table(ds, out, log=lambda m: None)
    written = layouts.read_table(out)
    assert len(written) == 3 * 240 and list(written["split"].value_counts()) == [480, 240]
    assert (out.parent / written["file"][0]).resolve() == (tmp_path / "stimuli/seg1.mp4").resolve()
    assert written.loc[5, "start_s"] == 10.0 and len(table) == len(written)
    with pytest.raises(Exception, match="dataset.subjects"):
        layouts.subjects(dict(ds, subjects=[]))


def test_bids_table_from_events_and_split_override(wild, tmp_path):
    ds = dict(wild)
    assert layouts.table_from_rule(ds)  # no clips.tsv in a wild dataset
    table = layouts.write_stimulus_table(ds, tmp_path / "clips.tsv", log=lambda m: None)
    assert (table["split"] == "test").sum() == 4
    written = layouts.read_table(tmp_path / "clips.tsv")
    assert all((tmp_path / f).resolve().exists() for f in written["file"])  # paths relative to the table
    # A table file of the user's own is used as it is, unless dataset.split says where the split comes from.
    own = written.assign(file=[f.rsplit("/", 1)[-1] for f in written["file"]], split="train")
    own.loc[:3, "split"] = "test"
    folder = tmp_path.parent / "own"
    (folder / "stimuli").mkdir(parents=True)
    own.to_csv(folder / "stimuli/clips.tsv", sep="\t", index=False)
    mine = dict(ds, root=str(folder), split={"source": "table", "test": [], "min_repeats": 2})
    assert not layouts.table_from_rule(mine)
    listed = dict(mine, split={"source": "list", "test": [written["clip_id"][0]], "min_repeats": 2})
    assert layouts.table_from_rule(listed)
    split = pd.Series(dict(zip(*[layouts.stimulus_table(listed)[c] for c in ("clip_id", "split")])))
    assert (split == "test").sum() == 1 and split[written["clip_id"][0]] == "test"


def test_bids_records_name_every_file(wild):
    recs = layouts.runs(wild, "01")
    assert [r["label"] for r in recs] == ["01", "02", "03"]
    assert all(r["sidecar"].endswith("task-movie_bold.json") for r in recs)  # inherited from the top level
    assert recs[1]["bold"].endswith("_bold.nii") and recs[0]["bold"].endswith("_bold.nii.gz")
    assert layouts.run_files(recs, "confounds") == [] and len(layouts.run_files(recs, "events")) == 3
