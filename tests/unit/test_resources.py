"""Declared resources follow the data (fmrivid/resources.py, issue 18): the formulas cover every peak measured by
benchmarks/full_scale.py at each design size without declaring more than 2x it, every calibrated rule uses them,
and a real model keeps its estimate."""

import json
import re

import pytest

from conftest import REPO
from fmrivid import resources

RUNS = sorted((REPO / "benchmarks/results/full_scale").glob("*.json"))


def test_every_rule_using_a_formula_is_calibrated_and_every_calibrated_rule_uses_one():
    used = set()
    for path in (REPO / "rules").glob("*.smk"):
        used |= set(re.findall(r'declared_(?:mem|runtime)\(\s*"([a-z0-9_]+)"', path.read_text()))
    assert used == set(resources.calibration())


@pytest.mark.skipif(not RUNS, reason="no full_scale.py measurements committed")
def test_declarations_cover_every_measured_peak_within_2x():
    assert len(RUNS) >= 2
    largest = max(RUNS, key=lambda p: json.loads(p.read_text())["clips"])
    for path in RUNS:
        doc = json.loads(path.read_text())
        sizes = {"clips": doc["clips"], "test_clips": doc["recovery"]["test_samples"]}
        for row in doc["rules"]:
            declared = resources.mem_mb(row["rule"], sizes, legacy_mb=10**6, real_model=False)
            assert declared >= row["peak_rss_mb"], (path.name, row["rule"], declared, row["peak_rss_mb"])
            minutes = resources.runtime_min(row["rule"], sizes, legacy_min=10**6, real_model=False)
            assert minutes * 60 >= row["max_job_s"], (path.name, row["rule"], minutes, row["max_job_s"])
            if path == largest:  # at full scale none declares more than 2x what it uses (rounding to 100 MB aside)
                assert declared <= max(2 * row["peak_rss_mb"], resources.MIN_MB) + 100, \
                    (row["rule"], declared, row["peak_rss_mb"])


def test_formula_grows_with_the_data_and_real_models_keep_their_estimate(tmp_path):
    cal = tmp_path / "cal.tsv"
    cal.write_text("\t".join(resources.FIELDS) + "\n"
                   + "\t".join(["r", "clips", "100", "0.5", "120", "30", "0.1", "3", "1200/2760/5520"]) + "\n")
    small = resources.mem_mb("r", {"clips": 100, "test_clips": 20}, 4000, path=cal)
    big = resources.mem_mb("r", {"clips": 20000, "test_clips": 4000}, 4000, path=cal)
    assert small == resources.MIN_MB and big == 100 * -(-1.5 * (100 + 0.5 * 20000) // 100)
    assert resources.mem_mb("r", {"clips": 100, "test_clips": 20}, 4000, real_model=True, path=cal) == 4000
    assert resources.runtime_min("r", {"clips": 60000, "test_clips": 0}, 30, path=cal) == 201  # 2 x (30 + 0.1 x 60000) s
    assert resources.mem_mb("unknown_rule", {"clips": 1}, 1234, path=cal) == 1234  # not calibrated: as declared
    with pytest.raises(KeyError, match="test_clips"):
        resources._units({"rule": "r", "unit": "test_clips"}, {"clips": 1})


@pytest.mark.parametrize("spec, real", [("tiny", False), ("tiny#vae", False), ("generator", False), (None, False),
                                        ("", False), ("openai/clip-vit-large-patch14", True),
                                        ("ali-vilab/text-to-video-ms-1.7b#vae", True), ("/models/clip", True)])
def test_real_model_specs(spec, real):
    assert resources.uses_real_model(spec) is real
