"""config/test.yaml through a real one-node SLURM cluster (the slurm profile template, --executor slurm).

Checks that every job of the DAG ran inside a SLURM job submitted with sbatch, one per group job (short steps
are grouped: a few global jobs plus two per subject and one per generation chunk, whatever the number of clips), and that the metric tables
equal, byte for byte, those of the local run (the session's `tiny_run`).
"""

import re
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

import slurm_cluster

from conftest import REPO, SMK_ENV

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        c = slurm_cluster.start_cluster(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.ClusterUnavailable as err:
        pytest.skip(f"no SLURM cluster: {err}")
    try:
        yield c
    finally:
        slurm_cluster.stop_cluster(c)


def slurm_profile(dest):
    """The repository's SLURM template adapted as a site would: no accounting here, no conda here."""
    prof = yaml.safe_load((REPO / "config/profiles/slurm/config.yaml").read_text())
    assert prof["executor"] == "slurm"
    prof.pop("software-deployment-method")  # the test uses the active venv (the envs are checked elsewhere)
    prof.update({
        "slurm-status-command": "squeue",   # no slurmdbd: sacct has no rows (CLUSTER-NOTES.md)
        "slurm-no-account": True,
        "slurm-init-seconds-before-status-checks": 2,
        "seconds-between-status-checks": 2,   # CI time: poll the tiny run's jobs often
        "cores": 2,                         # this node has 2 CPUs: a group job may ask for at most 2
        "retries": 0,                       # a failure must fail the test, not be retried
        "jobs": 4,
        "slurm-keep-successful-logs": True,  # the job logs show which rules each SLURM job ran
    })
    dest.mkdir()
    (dest / "config.yaml").write_text(yaml.safe_dump(prof))
    return dest


def dag_jobs(workdir):
    """(rule, wildcards) of every job a run of config/test.yaml executes, from a dry run."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                           "-n", "--forceall", "--configfile", str(REPO / "config/test.yaml")],
                          capture_output=True, text=True, env=SMK_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _jobs_in(proc.stdout + proc.stderr)


def cluster_jobs(workdir, configfile):
    """Number of cluster jobs a whole run submits: group jobs plus ungrouped jobs (but `all`), from a dry run."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                           "-n", "--forceall", "--configfile", str(configfile)],
                          capture_output=True, text=True, env=SMK_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    groups = len(re.findall(r"Group job \w+", out))
    ungrouped = [r for r in re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M) if r != "all"]
    return groups + len(ungrouped)


def _jobs_in(text):
    """(rule, wildcards) for each 'rule X:' block of a Snakemake log."""
    jobs = []
    for block in re.split(r"\n(?=[ \t]*(?:local)?rule \w+:)", text):  # indented inside "Group job" blocks
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            wc = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
            jobs.append((m.group(1), wc.group(1).strip() if wc else ""))
    return jobs


def test_slurm_run_equals_local_run(cluster, request, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    profile = slurm_profile(tmp_path / "profile")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
                           "--workflow-profile", str(profile), "--configfile", str(REPO / "config/test.yaml")],
                          capture_output=True, text=True, env=SMK_ENV, timeout=900, cwd=tmp_path)
    wall = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    (tmp_path / "snakemake.out").write_text(out)
    assert proc.returncode == 0, f"SLURM run failed:\n{out[-8000:]}\n{cluster.ctld_log.read_text()[-3000:]}"
    print(f"SLURM run of config/test.yaml: {wall:.0f} s")

    # Every SLURM job id Snakemake reports was accepted by this cluster's slurmctld through sbatch.
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    accepted = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", cluster.ctld_log.read_text()))
    assert submitted and set(submitted) <= accepted, (submitted, accepted)
    completed = set(re.findall(r"_job_complete: JobId=(\d+) WEXITSTATUS 0", cluster.ctld_log.read_text()))
    assert set(submitted) <= completed

    # One sbatch per group job (test_cluster_jobs_grow_with_subjects_not_clips checks how that number scales).
    assert len(submitted) == cluster_jobs(tmp_path / "dry0", REPO / "config/test.yaml"), out[-3000:]

    # Every job of the DAG (but the target rule `all`, which has no action) ran inside one of those jobs:
    # the SLURM job logs list the rules their job step executed.
    expected = Counter(j for j in dag_jobs(tmp_path / "dry") if j[0] != "all")
    logs = sorted((work / ".snakemake/slurm_logs").rglob("*.log"))
    assert logs, "no SLURM job logs"
    ran = Counter()
    for log in logs:  # a job's log shows each rule twice (the group job and its srun step): count it once
        ran.update({j for j in _jobs_in(log.read_text()) if j[0] != "all"})
    assert ran == expected, {"missing": expected - ran, "extra": ran - expected}

    # Same results as the local run (asked for only now: under pytest-xdist another worker makes it meanwhile).
    tiny_run = request.getfixturevalue("tiny_run")
    for table in ("tables/metrics.tsv", "tables/summary.tsv"):
        local = (tiny_run / "results" / table).read_bytes()
        remote = (work / "results" / table).read_bytes()
        assert remote == local, table


GROUPS = {
    "stimuli": "stimulus-side steps computed once for all clips (splits, frames, captions, audio, embeddings)",
    "generator": "training the generator and what reads only its models",
    "fmri": "one subject's preprocessing (preprocess, surface) and decoders (ridge, neural, encoder)",
    "align": "GLFA alignment with one subject held out (reads every subject's flat maps)",
    "results": "one subject's steps after generation (merged chunks, metrics, figures)",
    "generate": "one chunk of one subject's test clips (generation and its metrics): jobs grow with chunks, not clips",
    "tables": "the combined tables, figures and provenance, and other steps reading every subject (group_average, "
              "cotrain_generator)",
}
PER_SUBJECT = {"fmri", "align", "results", "generate"}
UNGROUPED = {"all"}  # no action: never submitted


def _without_expand(text):
    """`text` without its expand(...) calls (their {sub} is filled in, not a wildcard)."""
    while (i := text.find("expand(")) >= 0:
        depth, j = 0, i + len("expand")
        for j in range(i + len("expand"), len(text)):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                break
        text = text[:i] + text[j + 1:]
    return text


def test_every_rule_joins_a_group():
    """Keeps the number of SLURM jobs at a few global ones + 2 per subject: a new rule must join a group."""
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            m = re.match(r"\s*rule (\w+):", block)
            if not m or m.group(1) in UNGROUPED:
                continue
            g = re.search(r"group:\s*\n\s*\"(\w+)\"", block)
            assert g and g.group(1) in GROUPS, (
                f"{smk.name}: rule {m.group(1)} needs `group:` one of " + "; ".join(f"{k}: {v}" for k, v in
                                                                                 GROUPS.items()))
            output = re.search(r"\n(\s+)output:\n(.*?)\n\1\w+:", block, flags=re.S)
            per_subject = bool(output) and "{sub}" in _without_expand(output.group(2))
            assert per_subject == (g.group(1) in PER_SUBJECT), (
                f"{smk.name}: rule {m.group(1)}: per-subject rules go in {sorted(PER_SUBJECT)}, others not")


def test_cluster_jobs_grow_with_subjects_and_chunks_not_clips(tmp_path):
    """Dry runs: one more subject adds two cluster jobs (fmri, results) plus one per generation chunk and method;
    twice the clips add none when the chunks are twice as large, and one job per new chunk otherwise."""
    import math

    import fmrivid.config
    from fmrivid.metrics import stages as metrics_stages

    base = yaml.safe_load((REPO / "config/test.yaml").read_text())
    base["generate"] = {**base["generate"], "chunk_size": 2}  # several chunks per subject and method

    def jobs(name, chunk_size=None, **simulate):
        cfg = {**base, "simulate": {**base["simulate"], **simulate}}
        if chunk_size:
            cfg["generate"] = {**cfg["generate"], "chunk_size": chunk_size}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        (tmp_path / name).mkdir()
        return cluster_jobs(tmp_path / name, path)

    full = fmrivid.config.validate(base, fmrivid.config.load_schema())
    s, cs = full["simulate"], full["generate"]["chunk_size"]
    methods = len(metrics_stages.eval_methods(full))
    chunks = math.ceil(s["n_test_clips"] / cs)
    assert chunks >= 2
    assert not full["decode"]["neural"]  # no GLFA job in config/test.yaml
    per_subject = len(PER_SUBJECT - {"generate", "align"}) + methods * chunks  # one job per chunk: generation + metrics
    twice = {"n_train_clips": 2 * s["n_train_clips"], "n_test_clips": 2 * s["n_test_clips"],
             "trials_per_run": 2 * s["trials_per_run"]}
    n = jobs("base")
    assert jobs("one_more_subject", n_subjects=s["n_subjects"] + 1) == n + per_subject
    assert jobs("twice_the_clips_twice_the_chunk", chunk_size=2 * cs, **twice) == n
    assert jobs("twice_the_clips", **twice) == n + s["n_subjects"] * methods * chunks
    assert n - per_subject * s["n_subjects"] <= len(GROUPS) - len(PER_SUBJECT) + 2  # a few global jobs
