"""Incremental reruns, as a user sees them with `snakemake -n` and the default rerun triggers.

Changing one decoder setting plans exactly the rules that read the decoder settings (the decoders, and the
encoding model of the brain metrics) and what depends on them; editing a metrics
module (in a copy of the repository, never this checkout) plans only the metric rules and the report.
The expected sets come from the workflow's own rule graph, not from a hand-written list.
"""

import functools
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


@functools.lru_cache(maxsize=None)
def rulegraph(snakefile, workdir, configfile):
    """(rule names, edges) of `snakemake --rulegraph` (code edits do not change it: cached per config)."""
    dot = snakemake(snakefile, workdir, "--rulegraph", "--configfile", str(configfile))
    names = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", dot, flags=re.M))
    edges = [(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)]
    assert names and edges, dot[-2000:]
    return names, tuple(edges)


def descendants(snakefile, workdir, configfile, rules):
    """The given rules and every rule that depends on them, from `snakemake --rulegraph`."""
    names, edges = rulegraph(str(snakefile), str(workdir), str(configfile))
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
    sys.path.insert(0, str(REPO))
    from fmrivid.config import load_schema

    schema = load_schema()
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


def copy_repo(tmp_path):
    """A copy of the repository's workflow and package (edits never touch this checkout)."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for part in ("Snakefile", "rules", "fmrivid", "workflow_scripts", "config", "envs"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, copy / part)
    return copy


def rule_domains(repo):
    """Rule -> the domain whose stage module it runs (params ``stage=stage("<domain>")``)."""
    found = {}
    for smk in sorted((repo / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            m = re.match(r"\s*rule (\w+):", block)
            d = re.search(r"stage=stage\(\"(\w+)\"\)", block)
            if m and d:
                found[m.group(1)] = d.group(1)
    return found


def edit_one_function(path):
    """Append a statement to the body of the first top-level function of ``path`` (a real code change)."""
    import ast

    text = path.read_text()
    fn = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef))
    lines = text.splitlines(keepends=True)
    lines.insert(fn.end_lineno, "    _edited_by_the_test = True  # noqa: F841\n")
    path.write_text("".join(lines))
    return fn.name


# Every stage module, and three modules of logic that several domains use.
EDITED = sorted(str(p.relative_to(REPO)) for p in (REPO / "fmrivid").glob("*/stages.py")) + [
    "fmrivid/metrics/pixel.py", "fmrivid/decoders/ridge.py", "fmrivid/report/figures.py"]


# A copy's config file has another path: provenance (it records the config files) reruns whatever is edited.
IN_A_COPY = {"provenance", "all"}


def test_editing_a_function_plans_exactly_the_rules_that_import_it_and_their_dependents(tiny_run, tmp_path):
    """Code fingerprints are derived (fmrivid.fingerprint): editing one function of a module plans the rules whose
    stage module imports it, directly or not, and their dependents; nothing upstream, nothing beside.
    `rules_importing` below reads the imports with its own walk, not with fmrivid.fingerprint."""
    import ast

    copy = copy_repo(tmp_path)
    config = copy / "config/test.yaml"
    domains = rule_domains(copy)

    def imports_of(path):
        own = ".".join(path.relative_to(copy).with_suffix("").parts)
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fmrivid"):
                out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.startswith("fmrivid")}
        return out - {own}

    def module_path(name):
        base = copy.joinpath(*name.split("."))
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.exists():
                return cand
        return None

    def reaches(start, target):
        seen, todo = set(), [start, "fmrivid.runner"]
        while todo:
            name = todo.pop()
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # a module runs its packages' __init__ too
                sub = ".".join(parts[:k])
                path = module_path(sub)
                if path is None or sub in seen:
                    continue
                seen.add(sub)
                if path == target:
                    return True
                todo += sorted(imports_of(path))
        return False

    for rel in EDITED:
        path = copy / rel
        original = path.read_text()
        function = edit_one_function(path)
        try:
            rules_importing = [r for r, d in domains.items() if reaches(f"fmrivid.{d}.stages", path)]
            expected = descendants(copy / "Snakefile", tiny_run, config, rules_importing)
            plan = planned(copy / "Snakefile", tiny_run, config)
            assert set(plan) - IN_A_COPY == expected - IN_A_COPY, {
                "edited": f"{rel}:{function}", "planned": sorted(plan), "expected": sorted(expected)}
            if rel.endswith("stages.py"):  # a stage module reruns its own rules (those in this DAG)
                own = {r for r, d in domains.items() if d == path.parent.name} & set(plan)
                assert own, (rel, sorted(plan))
        finally:
            path.write_text(original)
        assert set(planned(copy / "Snakefile", tiny_run, config)) <= IN_A_COPY, f"{rel}: restoring it plans nothing"


def test_editing_decode_reruns_decode_and_its_dependents_only(tiny_run, tmp_path):
    """The case the old hand-listed hashes missed: the body of the ridge decoder's stage function."""
    copy = copy_repo(tmp_path)
    path = copy / "fmrivid/decoders/stages.py"
    text = path.read_text()
    marker = "def decode(fmri_path, features_path, cfg, out_model, out_pred, log=print):\n"
    assert marker in text
    path.write_text(text.replace(marker, marker + "    _edited_by_the_test = True  # noqa: F841\n"))
    plan = planned(copy / "Snakefile", tiny_run, copy / "config/test.yaml")
    assert "decode" in plan and {"evaluate", "metrics_table"} <= set(plan)
    assert not {"preprocess", "frames", "text_features", "train_demo_unet", "gt_cache", "splits"} & set(plan)


def test_every_rule_runs_a_stage_named_as_the_rule():
    """Every rule with a script runs workflow_scripts/run_stage.py with params stage=stage("<domain>") from
    rules/<domain>.smk, and fmrivid.<domain>.stages has a function named as the rule."""
    import importlib

    sys.path.insert(0, str(REPO))
    found = 0
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            m = re.match(r"\s*rule (\w+):", block)
            if not m or not re.search(r"^\s+(script|shell|run):", block, flags=re.M):
                continue
            assert '"../workflow_scripts/run_stage.py"' in block, f"{smk.name}: rule {m.group(1)}"
            d = re.search(r"stage=stage\(\"(\w+)\"\)", block)
            assert d and d.group(1) == smk.stem, f"{smk.name}: rule {m.group(1)} runs no stage of its own domain"
            module = importlib.import_module(f"fmrivid.{d.group(1)}.stages")
            assert callable(getattr(module, m.group(1), None)), f"fmrivid.{d.group(1)}.stages.{m.group(1)}"
            found += 1
    assert found >= 39
