"""Incremental reruns, as a user sees them with `snakemake -n` and the default rerun triggers.

Changing one decoder setting plans exactly the rules that read the decoder settings (the decoders, and the
encoding model of the brain metrics) and what depends on them; editing a metrics
module (in a copy of the repository, never this checkout) plans only the metric rules and the report.
The expected sets come from the workflow's own rule graph, not from a hand-written list.
"""

import re
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from conftest import REPO, SMK_ENV

pytestmark = pytest.mark.workflow


def snakemake(snakefile, workdir, *args):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args],
                          capture_output=True, text=True, env=SMK_ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def planned(snakefile, workdir, configfile):
    """Rule -> number of jobs that `snakemake -n` would run."""
    out = snakemake(snakefile, workdir, "-n", "--configfile", str(configfile))
    if "Nothing to be done" in out:
        return Counter()
    stats = out.split("Job stats:")[1].split("total")[0]
    return Counter({r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)\s*$", stats, flags=re.M)})


def descendants(snakefile, workdir, configfile, rules):
    """The given rules and every rule that depends on them, from `snakemake --rulegraph`."""
    dot = snakemake(snakefile, workdir, "--rulegraph", "--configfile", str(configfile))
    names = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", dot, flags=re.M))
    edges = [(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)]
    assert names and edges, dot[-2000:]
    rules = [r for r in rules if r in names.values()]  # rules this config's DAG does not run are no roots
    found, todo = set(rules), list(rules)
    while todo:
        r = todo.pop()
        for a, b in edges:
            if a == r and b not in found:
                found.add(b)
                todo.append(b)
    return found


def rules_reading(*exprs):
    """Rules whose params hold one of `exprs` as a whole (e.g. 'config["decode"]', not its sub-keys)."""
    found = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            m = re.match(r"\s*rule (\w+):", block)
            if m and any(re.search(re.escape(e) + r"(?!\[)", block) for e in exprs):
                found.append(m.group(1))
    return found


def test_reordering_the_config_file_plans_nothing(tiny_run, tmp_path):
    """Params are compared by repr(): the order of keys in a YAML file must not look like a change.

    Only provenance reruns: it records the config files' paths (the layers), and this one has another name."""

    def reverse(value):
        return {k: reverse(value[k]) for k in reversed(list(value))} if isinstance(value, dict) else value

    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    path = tmp_path / "reordered.yaml"
    path.write_text(yaml.safe_dump(reverse(cfg), sort_keys=False))
    assert planned(REPO / "Snakefile", tiny_run, path) == Counter({"provenance": 1, "all": 1})


def test_changing_a_decoder_setting_plans_that_decoder_and_its_dependents(tiny_run, tmp_path):
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    schema = yaml.safe_load((REPO / "config/schema/config.schema.yaml").read_text())
    alphas = cfg.get("decode", {}).get("alphas") or schema["properties"]["decode"]["properties"]["alphas"]["default"]
    cfg["decode"]["alphas"] = list(alphas)[:-1]  # one penalty fewer
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg))

    plan = planned(REPO / "Snakefile", tiny_run, path)
    readers = rules_reading('config["decode"]', 'config["decode"]["alphas"]')  # the decoders (and encoders)
    assert "decode" in readers
    expected = descendants(REPO / "Snakefile", tiny_run, path, readers)
    assert set(plan) == expected, {"planned": sorted(plan), "expected": sorted(expected)}
    n_subjects, n_targets = cfg["simulate"]["n_subjects"], len(cfg["decode"].get("targets", ["text", "image", "vae"]))
    assert plan["decode"] == n_subjects * n_targets
    # Nothing upstream of the decoders (preprocessing, features, the generator's training) reruns.
    assert not {"preprocess", "frames", "text_features", "train_demo_unet", "simulate_demo"} & set(plan)


def test_editing_a_metrics_module_plans_only_metrics_and_report(tiny_run, tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    for part in ("Snakefile", "rules", "fmrivid", "workflow_scripts", "config", "envs"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, copy / part)
    module = copy / "fmrivid/metrics/pixel.py"  # (stats.py also serves the generator's shuffled control)
    module.write_text(module.read_text() + "\n# a harmless edit: a comment is code, its hash changes\n")

    plan = planned(copy / "Snakefile", tiny_run, copy / "config/test.yaml")
    expected = descendants(copy / "Snakefile", tiny_run, copy / "config/test.yaml",
                           ["gt_cache", "evaluate_chunk", "evaluate", "brain_metrics", "metrics_table"])
    # (every rule that runs fmrivid.metrics/pixel.py; the demo classifier hashes only its own module)
    assert set(plan) == expected, {"planned": sorted(plan), "expected": sorted(expected)}
    assert {"evaluate", "metrics_table"} <= set(plan)
    assert not {"decode", "generate_chunk", "preprocess", "train_demo_unet"} & set(plan)


def test_every_rule_hashes_the_code_it_runs():
    """Snakemake tracks a script's own text, not the fmrivid modules it imports: each rule's params hold a
    code_hash() of those modules (and the modules named there exist)."""
    sys.path.insert(0, str(REPO))
    from fmrivid.utils import code_hash

    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            m = re.match(r"\s*rule (\w+):", block)
            if not m or not re.search(r"^\s+(script|shell|run):", block, flags=re.M):
                continue
            calls = re.findall(r"code=code_hash\(([^)]*)\)", block)
            assert calls, f"{smk.name}: rule {m.group(1)} has no params code=code_hash(...)"
            for args in calls:
                parts = re.findall(r"\"([^\"]+)\"", args)
                if parts:  # literal module names: they must exist (code_hash raises otherwise)
                    assert len(code_hash(*parts)) == 16
