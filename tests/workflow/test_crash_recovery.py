"""Crash recovery: SIGKILL the whole workflow (Snakemake and its jobs) in the middle of training and in the
middle of generation, rerun as a user would (--rerun-incomplete), and get tables identical to an uninterrupted
run (the session's `tiny_run`), with no truncated file ever taken as complete. Decoding, training, generation,
every metric and the tables are recomputed from scratch there, so the same check shows that a CPU rerun gives
byte-identical metric tables.

Also checks that every rule's memory request grows with the attempt, so `--retries` recovers from OOM kills.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO, SMK_ENV

pytestmark = pytest.mark.workflow

TABLES = [f"results/tables/{t}.tsv" for t in ("metrics", "summary", "summary_mean", "wilcoxon", "cc2017_comparison")]
# Compared byte for byte with the uninterrupted run, beside TABLES.
ALSO_IDENTICAL = ["results/metrics/brain.tsv", "results/metrics/demo/sub-01.tsv", "results/metrics/demo/sub-01_clips.tsv",
                  "results/metrics/demo/sub-02.tsv"]
METRICS = ("ssim_rgb_uniform", "ssim_gray_gaussian", "psnr", "pixcorr", "hue_cos", "lpips_alex", "lpips_vgg",
           "epe_farneback", "clip_pcc_adjacent", "clip_pcc_allpairs", "nway_topk", "retrieval_topk",
           "retrieval_nway_top1", "two_way_ident", "isc", "fsc", "voxel_r")


def start(workdir, *args):
    """Start Snakemake in its own process group (so that a kill reaches its jobs, as a node failure would)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *TABLES,
           "--cores", "2", *args, "--configfile", str(REPO / "config/test.yaml")]  # --configfile takes several
    log = open(workdir / f"snakemake-{time.monotonic_ns()}.out", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=SMK_ENV, start_new_session=True)


def kill_when(proc, logs, pattern, timeout=600):
    """SIGKILL the process group of `proc` as soon as one of `logs` (a glob) matches `pattern`.

    Returns the log that matched and its text at the moment of the kill.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for log in logs():
            text = log.read_text() if log.exists() else ""
            if re.search(pattern, text):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return log, text
        if proc.poll() is not None:
            pytest.fail(f"workflow ended (rc={proc.returncode}) before {pattern!r} appeared")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"{pattern!r} did not appear within {timeout} s")


def group_members(pgid):
    """Live (non-zombie) processes of the process group `pgid`."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = (Path("/proc") / d / "stat").read_text()
                if os.getpgid(int(d)) == pgid and stat.rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(d))
            except (ProcessLookupError, FileNotFoundError):
                pass
    return pids


def no_process_left(pgid, timeout=10):
    """True when every process of the group has gone (SIGKILL is delivered asynchronously)."""
    t0 = time.monotonic()
    while group_members(pgid) and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
    return not group_members(pgid)


def unlock(workdir):
    """After a crash Snakemake's lock remains: `snakemake --unlock`, as its message tells the user."""
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                    "--unlock", "--configfile", str(REPO / "config/test.yaml")],
                   capture_output=True, text=True, env=SMK_ENV, timeout=300, check=True)


def test_sigkill_during_training_and_generation_then_rerun(tiny_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)  # copy2 keeps mtimes: the copy is up to date
    res = work / "results"
    unet_dir = res / "models/generator/diffusion"
    # The state of a first run that has just reached the UNet's training: preprocessing, features and the VAE
    # made; the ridge decoders, the UNet, reconstructions, metrics and tables not yet. Saves recomputing the
    # upstream steps.
    for path in [unet_dir, res / "models/ridge", res / "predictions", res / "recon", res / "videos", res / "metrics",
                 res / "tables", res / "logs/train_demo_unet.log", *res.glob("logs/generate_*.log"),
                 *res.glob("logs/decode_*.log")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    # 1. Killed in the middle of training the UNet (after its first optimiser step, before it is saved).
    proc = start(work)
    _, text = kill_when(proc, lambda: [res / "logs/train_demo_unet.log"], r"unet step 1/")
    assert not re.search(r"\] done$", text, flags=re.M), "training finished before the kill (not half-way)"
    assert no_process_left(proc.pid)
    assert not unet_dir.exists(), "a half-trained model sits at the final path"

    # 2. Rerun; killed in the middle of generating one subject's videos (some clips done, not all).
    unlock(work)
    proc = start(work, "--rerun-incomplete")
    log, text = kill_when(proc, lambda: sorted(res.glob("logs/generate_*.log")), r"generated \d+/\d+ clips")
    assert not re.search(r"generated \(", text), "generation finished before the kill"
    sub, chunk = log.stem.split("_")[-2:]  # generate_demo_sub-01_chunk-000
    killed = res / "recon/demo" / sub / f"{chunk}.h5"
    assert (unet_dir / "unet").is_dir(), "training was not redone"
    assert not killed.exists(), f"{killed.name}: a partial reconstruction sits at the final path"
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), *TABLES,
                          "-n", "--configfile", str(REPO / "config/test.yaml")],
                         capture_output=True, text=True, env=SMK_ENV, timeout=300)
    assert re.search(r"^generate_chunk\s+\d", dry.stdout, flags=re.M), "the interrupted chunk is not planned"

    # 3. Rerun to the end: identical tables and reconstructions, and no temporary file taken as an output.
    unlock(work)
    proc = start(work, "--rerun-incomplete")
    assert proc.wait(timeout=900) == 0, sorted(work.glob("snakemake-*.out"))[-1].read_text()[-5000:]
    for table in TABLES + ALSO_IDENTICAL:
        assert (work / table).read_bytes() == (tiny_run / table).read_bytes(), f"{table} differs after a rerun"
    runs = "".join(p.read_text() for p in work.glob("snakemake-*.out"))
    for rule in ("decode", "train_demo_unet", "generate_chunk", "merge_recon", "evaluate", "brain_metrics",
                 "metrics_table"):  # over the three runs: recomputed, not copied from the first run
        assert re.search(rf"rule {rule}:", runs), f"{rule} did not rerun"
    table = (work / TABLES[0]).read_text()
    assert table.splitlines()[0].split("\t") == ["subject", "method", "metric", "variant", "value", "ci_low",
                                                  "ci_high", "n", "p"]
    for metric in METRICS:
        assert f"\t{metric}\t" in table, metric
    for recon in sorted((tiny_run / "results/recon/demo").glob("sub-*.h5")):
        with h5py.File(recon) as a, h5py.File(res / "recon/demo" / recon.name) as b:
            assert np.array_equal(a["features"][()], b["features"][()]), recon.name
    assert sorted(p.name for p in res.glob("recon/demo/sub-*.h5") if ".tmp-" not in p.name) == sorted(
        p.name for p in (tiny_run / "results/recon/demo").glob("sub-*.h5"))


def _mem_function():
    src = (REPO / "rules/common.smk").read_text()
    m = re.search(r"^def mem\(.*?(?=^def |\Z)", src, flags=re.S | re.M)
    ns = {}
    exec(m.group(0), ns)
    return ns["mem"]


def test_memory_requests_grow_with_the_attempt():
    mem = _mem_function()
    for base in (1000, 4000):
        assert [mem(base)(None, a) for a in (1, 2, 3)] == [base, 2 * base, 3 * base]
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            name = re.match(r"\s*rule (\w+):", block)
            if name and ("script:" in block or "shell:" in block):
                # mem(...) directly, or declared_mem(...) (a calibrated formula of the data size, wrapped in mem)
                assert re.search(r"mem_mb=(mem|declared_mem)\(", block), \
                    f"{smk.name}: rule {name.group(1)}: mem_mb=mem(...) or declared_mem(...)"
    src = (REPO / "rules/common.smk").read_text()
    assert re.search(r"def declared_mem\(.*?\n    return mem\(", src, flags=re.S)
