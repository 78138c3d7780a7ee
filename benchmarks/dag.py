"""How long Snakemake takes to plan fmrivid's DAG at full dataset scale (placeholder inputs, no computation).

Builds a BIDS-shaped folder of EMPTY placeholder files (the parse-time checks only look at names, the
stimulus table and the sidecars' RepetitionTime) at two scales and times, for each:

  1. `snakemake -n`            the dry run of a fresh run (every job planned);
  2. every planned output is created empty (no suffix: a folder), then `snakemake --touch` gives them
     their mtimes in DAG order, so that the workflow looks complete;
  3. `snakemake -n` again      a no-op rerun's planning (nothing to be done);
  4. `snakemake --cores 1`     a no-op rerun (nothing to be done), end to end.

Scales (dataset.simulate: false):
  cc2017  3 subjects, 4,320 training + 1,200 test clips (one per sample), 18 x 2 training runs and
          5 x 10 test runs per subject (as in CC2017: 18 training segments seen twice, 5 test segments ten times)
  fudan   8 subjects, 72,000 training + 3,000 test clips (~75,000 samples), 100 runs per subject

Targets: every timing under 10 s at CC2017 scale and under 30 s at Fudan scale.

Usage:  python benchmarks/dag.py [--scale cc2017 fudan] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"cc2017": 10.0, "fudan": 30.0}
SCALES = {
    "cc2017": {"subjects": 3, "train": 4320, "test": 1200, "runs": 18 * 2 + 5 * 10},
    "fudan": {"subjects": 8, "train": 72000, "test": 3000, "runs": 100},
}


def build(root: Path, subjects: int, train: int, test: int, runs: int, task: str = "movie"):
    """Write placeholder BIDS files and a real stimulus table; return (subjects, runs) labels."""
    subs = [f"{i + 1:02d}" for i in range(subjects)]
    run_ids = [f"{i + 1:03d}" for i in range(runs)]
    for s in subs:
        func = root / f"sub-{s}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        for r in run_ids:
            stem = func / f"sub-{s}_task-{task}_run-{r}"
            for suffix in ("_bold.nii.gz", "_events.tsv"):
                Path(f"{stem}{suffix}").touch()
            Path(f"{stem}_bold.json").write_text('{"RepetitionTime": 2.0}')  # read at parse time (inheritance)
    stim = root / "stimuli"
    (stim / "clips").mkdir(parents=True, exist_ok=True)
    lines = ["clip_id\tfile\tcaption\tsplit"]
    for split, n in (("train", train), ("test", test)):
        for i in range(n):
            cid = f"{split}{i:06d}"
            (stim / "clips" / f"{cid}.mp4").touch()
            lines.append(f"{cid}\tclips/{cid}.mp4\ta placeholder caption\t{split}")
    (stim / "clips.tsv").write_text("\n".join(lines) + "\n")
    return subs, run_ids


def config(root: Path, subs, run_ids, path: Path):
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg.pop("simulate", None)
    # cluster-scale defaults, not the test/demo ones: chunks of the schema's default size, the shuffled control on
    cfg["generate"] = {**cfg.get("generate", {}), "chunk_size": 100, "shuffled_control": True}
    cfg["dataset"] = {"name": "placeholder", "layout": "bids", "root": str(root), "simulate": False,
                      "task": "movie", "subjects": subs, "runs": run_ids, "tr": 2.0,
                      "stimuli_table": "stimuli/clips.tsv"}
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(workdir: Path, cfg: Path, *args, quiet=True) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(cfg), *(["--quiet", "progress"] if quiet else []), *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{out[-4000:]}")
    return (elapsed, cpu), out


def n_jobs(out: str) -> int:
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return 0


def make_outputs(work: Path, dry_run_log: str) -> int:
    """Create every output a dry run lists (empty files; folders for names without a suffix)."""
    outputs = set()
    for line in dry_run_log.splitlines():
        line = line.strip()
        if line.startswith("output: "):
            outputs.update(o.strip() for o in line[len("output: "):].split(","))
    for rel in outputs:
        path = work / rel
        if "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    return len(outputs)


def run_scale(name: str, base: Path):
    spec = SCALES[name]
    root, work = base / name / "bids", base / name / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subs, run_ids = build(root, spec["subjects"], spec["train"], spec["test"], spec["runs"])
    cfg = config(root, subs, run_ids, base / name / "config.yaml")
    print(f"[{name}] placeholders: {spec['subjects']} subjects x {spec['runs']} runs, "
          f"{spec['train'] + spec['test']:,} clips ({time.perf_counter() - t0:.1f} s to write)", flush=True)
    rows = []
    t, out = snakemake(work, cfg, "-n", quiet=False)
    rows.append(("dry run (fresh)", t, f"{n_jobs(out)} jobs planned"))
    print(f"[{name}] dry run: {t[0]:.1f} s", flush=True)
    made = make_outputs(work, out)
    t, out = snakemake(work, cfg, "--touch", "--cores", "1")
    rows.append(("--touch (mark all made)", t, f"{made} placeholder outputs"))
    t, out = snakemake(work, cfg, "-n")
    assert "Nothing to be done" in out, out[-3000:]
    rows.append(("dry run (no-op rerun)", t, "nothing to be done"))
    t, out = snakemake(work, cfg, "--cores", "1")
    assert "Nothing to be done" in out, out[-3000:]
    rows.append(("no-op rerun", t, "nothing to be done"))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", nargs="+", choices=list(SCALES), default=list(SCALES))
    ap.add_argument("--workdir", type=Path, help="where to build the placeholders (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the placeholder folders")
    args = ap.parse_args(argv)
    base = args.workdir or Path(tempfile.mkdtemp(prefix="fmrivid-dag-"))
    results = {}
    try:
        for name in args.scale:
            results[name] = run_scale(name, base)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    # wall: elapsed seconds (what a user waits; inflated when other work shares the CPUs);
    # cpu: user + system CPU seconds of the snakemake process (independent of the machine's load).
    print(f"\n{'scale':8} {'step':26} {'wall s':>7} {'cpu s':>6} {'target':>7} {'wall/target':>11}  note")
    ok = True
    for name, rows in results.items():
        for step, (wall, cpu), note in rows:
            target = TARGETS[name]
            timed = not step.startswith("--touch")
            ok &= (wall <= target) or not timed
            print(f"{name:8} {step:26} {wall:7.1f} {cpu:6.1f} {target if timed else '':>7} "
                  f"{(f'{wall / target:.2f}' if timed else ''):>11}  {note}")
    print("\nall timed steps under target" if ok else "\nSOME STEPS OVER TARGET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
