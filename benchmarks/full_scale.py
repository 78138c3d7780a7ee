"""Per-rule cost of the CPU stages on one CC2017 subject at (a fraction of) the real design, with recovery checks.

``python benchmarks/full_scale.py --fraction F --root DIR [--smoke] [--cores 1]``

1. Writes (or reuses: ``DIR/data/fixture_manifest.json``) a CC2017-layout fixture of one subject
   (:mod:`fmrivid.simulate.cc2017_fixture`): ``F`` of the real design (18 training segments x 2 repeats, 5 test
   segments x 10 repeats; fewer segments at F < 1), real run lengths (245/246 volumes) and grayordinates (91,282),
   480-s movies at 30 fps and 640 x 640 px, a planted signal in the first ``--planted`` cortical grayordinates.
2. Runs, through Snakemake with ``config/cc2017.yaml`` + ``DIR/dataset.yaml`` + ``config/rehearsal/tiny_models.yaml``
   (the rehearsal's tiny random models), every CPU stage of rule all up to decoding: the stimulus table and splits,
   preprocess (all runs, segment-wise reliability selection), frames (streamed from the movies), every feature
   file (tiny models, every clip), ridge decoding of every decode target, the GT cache of the metrics.
3. Writes a stand-in reconstruction (each test clip's first ground-truth frame repeated: no generation, the cost
   of the metrics only) as the main method's chunks, and runs evaluate_chunk on every chunk (every test clip),
   with Snakemake's generate_chunk rule left out (``--allowed-rules``).
4. Reads every job's Snakemake benchmark file (``--benchmark-extended``: wall s, max_rss, and the job's resources
   as Snakemake resolved them: mem_mb, runtime) and prints / writes ``DIR/full_scale.tsv`` and
   ``DIR/full_scale.json``: one row per rule (jobs of a rule summed for time, max for memory), plus the recovery
   figures: training / test samples (4,320 / 1,200 at full scale) and the voxel selection's precision / recall
   against the planted grayordinates.

``--smoke``: 2 + 1 segments, 2 test repeats, 32-px movies, the rest as above (about 2-3 min on one core).
Fixture sizes (CIFTI runs + 5 MB per 640-px movie): fraction 1: 7.76 GB + 115 MB; 1/2 (9 + 2 segments): 3.43 GB;
1/3 (6 + 2): 2.89 GB; 1/4 (4 + 1): 1.62 GB; smoke: 0.54 GB. Results at full scale: ~1 GB (frames.h5 at 64 px).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PRESET = REPO / "config" / "cc2017.yaml"
TINY = REPO / "config" / "rehearsal" / "tiny_models.yaml"
# The CPU stages measured in step 2 (rule all's jobs of these rules are the targets).
STAGE_RULES = ("stimulus_table", "splits", "preprocess", "frames", "captions", "text_features", "clip_text_features",
               "token_features", "image_features", "vae_features", "vae_video_features", "flow_features",
               "wav2vec_features", "audio", "decode", "gt_cache")
SUBJECT = "1"
SMOKE_DESIGN = {"train_segments": 2, "test_segments": 1, "train_repeats": 2, "test_repeats": 2}


def snakemake(folder, layers, *options, targets=(), log_name, cores=1):
    """Run Snakemake as a user would (preset, dataset file, tiny overlay), output logged to ``folder/log_name``."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
           "--cores", str(cores), "--configfile", *map(str, layers), *map(str, options), "--", *map(str, targets)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, check=False)
    (Path(folder) / log_name).write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"full_scale: snakemake failed (rc {proc.returncode}); see {Path(folder) / log_name}:\n"
                         f"{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout + proc.stderr, time.perf_counter() - start


def planned_jobs(text):
    """Jobs of a dry run's output: [{rule, input: [...], output: [...], resources: {...}}]."""
    jobs, job = [], None
    for line in text.splitlines():
        head = re.match(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):\s*$", line)
        if head:
            job = {"rule": head.group(1), "input": [], "output": [], "resources": {}}
            jobs.append(job)
            continue
        field = re.match(r"^\s*(input|output|resources): (.*)$", line)
        if job is not None and field:
            key, value = field.groups()
            if key == "resources":
                job[key] = dict(kv.split("=", 1) for kv in value.split(", ") if "=" in kv)
            else:
                job[key] = value.split(", ")
    return jobs


def read_benchmarks(folder):
    """Rows of every extended benchmark file under ``folder``: rule, wildcards, s, max_rss, resources."""
    rows = []
    for path in sorted(Path(folder).glob("*.tsv")):
        lines = path.read_text().splitlines()
        if len(lines) < 2 or "rule_name" not in lines[0]:
            continue  # a benchmark file of a run without --benchmark-extended
        cells = lines[1].split("\t")
        resources = ast.literal_eval(cells[-2]) if cells[-2] not in ("-", "") else {}
        rss = cells[2]
        rows.append({"rule": cells[11], "job": path.stem, "s": float(cells[0]),
                     "max_rss_mb": float(rss) if rss not in ("NA", "-") else math.nan,
                     "mem_mb": resources.get("mem_mb"), "runtime_min": resources.get("runtime"),
                     "threads": int(cells[-4]) if cells[-4].isdigit() else None})
    return rows


def per_rule(rows):
    """One row per rule: jobs, wall s (sum), peak RSS (max), declared mem_mb / runtime (max over its jobs)."""
    table = {}
    for r in rows:
        t = table.setdefault(r["rule"], {"rule": r["rule"], "jobs": 0, "wall_s": 0.0, "max_job_s": 0.0,
                                         "peak_rss_mb": 0.0, "mem_mb": 0, "runtime_min": 0})
        t["jobs"] += 1
        t["wall_s"] = round(t["wall_s"] + r["s"], 2)
        t["max_job_s"] = round(max(t["max_job_s"], r["s"]), 2)
        t["peak_rss_mb"] = round(max(t["peak_rss_mb"], r["max_rss_mb"]), 1)
        t["mem_mb"] = max(t["mem_mb"], int(r["mem_mb"] or 0))
        t["runtime_min"] = max(t["runtime_min"], int(r["runtime_min"] or 0))
    for t in table.values():
        t["rss_over_mem"] = round(t["peak_rss_mb"] / t["mem_mb"], 3) if t["mem_mb"] else math.nan
        t["s_over_runtime"] = round(t["max_job_s"] / 60.0 / t["runtime_min"], 4) if t["runtime_min"] else math.nan
    return sorted(table.values(), key=lambda t: -t["wall_s"])


def write_standin(results, method, chunk_size, log=print):
    """The stand-in reconstruction of every test clip: its first ground-truth frame repeated (lossless uint8),
    cut in the chunks generate_chunk would write (clip order of the subject's ridge text prediction)."""
    import numpy as np

    from fmrivid.io.h5 import read_features, write_features
    from fmrivid.io.splits import chunk_rows

    order, _, _ = read_features(results / "predictions" / "ridge" / f"sub-{SUBJECT}_text.h5")
    order = [str(c) for c in order]
    n_chunks = max(1, -(-len(order) // chunk_size))
    for chunk in range(n_chunks):
        rows = chunk_rows(len(order), chunk, chunk_size)
        ids = order[rows]
        _, gt, _ = read_features(results / "features" / "frames.h5", ids)
        video = np.repeat(gt[:, :1], gt.shape[1], axis=1)
        path = results / "recon" / method / f"sub-{SUBJECT}" / f"chunk-{chunk:03d}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_features(path, ids, video, {"method": method, "storage": "lossless", "dtype": "uint8",
                                          "chunk": chunk, "standin": "first ground-truth frame repeated"})
    log(f"full_scale: stand-in reconstruction of {len(order)} test clips in {n_chunks} chunk(s)")
    return n_chunks


def recovery(results, data_root, counts):
    """Samples per split (expected 240 per segment) and selection precision / recall vs the planted grayordinates."""
    import h5py
    import numpy as np

    truth = json.loads((Path(data_root) / "fixture_truth.json").read_text())
    lo, hi = truth["planted_grayordinates"]
    with h5py.File(results / "fmri" / f"sub-{SUBJECT}.h5", "r") as f:
        n_train, n_test = int(f["train"]["X"].shape[0]), int(f["test"]["X"].shape[0])
        selected = np.asarray(f["voxels"]["grayordinate"][()])
        info = json.loads(f.attrs["info"])
    hit = int(((selected >= lo) & (selected < hi)).sum())
    return {"train_samples": n_train, "test_samples": n_test,
            "train_samples_expected": 240 * counts["train_segments"],
            "test_samples_expected": 240 * counts["test_segments"],
            "selected": int(selected.size), "planted": hi - lo, "selected_planted": hit,
            "precision": round(hit / max(selected.size, 1), 4), "recall": round(hit / (hi - lo), 4),
            "segments_tested": info.get("n_groups"),
            # the selection kept its best min_voxels by score because none passed the Bonferroni threshold
            "selection_fallback": bool(info.get("fallback_top_k"))}


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder for the fixture (data/), results/ and the tables")
    parser.add_argument("--fraction", type=float, default=1.0, help="of the real design (1/4: 0.25)")
    parser.add_argument("--smoke", action="store_true", help="2 + 1 segments, 2 test repeats, 32-px movies")
    parser.add_argument("--size", type=int, default=None, help="movie frame side (default 640; --smoke 32)")
    parser.add_argument("--planted", type=int, default=None,
                        help="planted grayordinates (default 13,400, about what Wen et al. select; --smoke 400)")
    parser.add_argument("--signal", type=float, default=1.0, help="planted response SD / noise SD")
    parser.add_argument("--cores", type=int, default=1, help="Snakemake --cores (1: jobs do not share the CPU)")
    args = parser.parse_args(argv)

    from fmrivid.simulate import cc2017_fixture as fx

    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    counts = SMOKE_DESIGN if args.smoke else fx.design(args.fraction)
    size = args.size or (32 if args.smoke else fx.REAL_FRAME_SIZE)
    planted = args.planted or (400 if args.smoke else 13400)
    fixture_est = fx.fixture_bytes(*counts.values())
    print(f"full_scale: design {counts} ({fixture_est / 1e9:.2f} GB of runs), movies {size} px", flush=True)
    start = time.perf_counter()
    dataset = fx.write_cc2017_fixture(root / "data", subjects=(SUBJECT,), **counts, fps=30, size=size,
                                      n_planted=planted, signal=args.signal,
                                      log=lambda m: print(m, flush=True))
    fixture_s = time.perf_counter() - start
    manifest = json.loads((root / "data" / fx.MANIFEST).read_text())
    results = root / "results"
    import yaml

    (root / "dataset.yaml").write_text(yaml.safe_dump({"results_dir": str(results), "dataset": dataset},
                                                      sort_keys=False))
    layers = [PRESET, root / "dataset.yaml", TINY]

    # 2. the CPU stages: rule all's jobs of STAGE_RULES
    if results.exists():  # every job runs, so that every benchmark file is this run's
        shutil.rmtree(results)
    text, _ = snakemake(root, layers, "--dry-run", "--forceall", log_name="snakemake_plan.log")
    plan = planned_jobs(text)
    targets = sorted({o for j in plan if j["rule"] in STAGE_RULES for o in j["output"]})
    if not targets or not any(j["rule"] == "evaluate_chunk" for j in plan):
        raise SystemExit(f"full_scale: no stage or evaluate_chunk jobs planned; see {root / 'snakemake_plan.log'}")
    evaluate_jobs = [j for j in plan if j["rule"] == "evaluate_chunk" and not
                     any("_shuffled/" in o for o in j["output"])]
    method = evaluate_jobs[0]["output"][0].split("/metrics/")[1].split("/")[0]
    print(f"full_scale: {len(targets)} stage outputs of {len({j['rule'] for j in plan if j['rule'] in STAGE_RULES})}"
          f" rules; then {len(evaluate_jobs)} evaluate_chunk job(s) of method {method}", flush=True)
    _, stages_s = snakemake(root, layers, "--benchmark-extended", targets=targets, log_name="snakemake_stages.log",
                            cores=args.cores)
    print(f"full_scale: stages done in {stages_s:.0f} s", flush=True)

    # 3. stand-in reconstruction, then the metrics of every test clip (generate_chunk left out)
    write_standin(results, method, _config_chunk_size(layers))
    rules_text, _ = snakemake(root, layers, "--list-rules", log_name="snakemake_rules.log")
    rules = [r.strip() for r in rules_text.splitlines() if re.fullmatch(r"\s*\w+\s*", r)]
    allowed = [r for r in rules if r not in ("generate_chunk", "merge_recon", "all")]
    eval_targets = [j["output"][0] for j in evaluate_jobs]
    _, metrics_s = snakemake(root, layers, "--benchmark-extended", "--allowed-rules", *allowed, targets=eval_targets,
                             log_name="snakemake_metrics.log", cores=args.cores)
    print(f"full_scale: metrics done in {metrics_s:.0f} s", flush=True)

    # 4. the table
    rows = per_rule(read_benchmarks(results / "benchmarks"))
    rec = recovery(results, root / "data", counts)
    runs = counts["train_segments"] * counts["train_repeats"] + counts["test_segments"] * counts["test_repeats"]
    doc = {"design": counts, "fraction": None if args.smoke else args.fraction, "smoke": args.smoke,
           "frame_size": size, "runs": runs, "grayordinates": fx.N_GRAYORDINATES, "planted": planted,
           "signal": args.signal, "clips": 240 * (counts["train_segments"] + counts["test_segments"]),
           "fixture_bytes": manifest["bytes"], "fixture_write_s": manifest["seconds"],
           "fixture_s_this_run": round(fixture_s, 1), "stages_s": round(stages_s, 1),
           "metrics_s": round(metrics_s, 1), "cores": args.cores, "rules": rows, "recovery": rec}
    (root / "full_scale.json").write_text(json.dumps(doc, indent=1))
    cols = ["rule", "jobs", "wall_s", "max_job_s", "peak_rss_mb", "mem_mb", "runtime_min", "rss_over_mem",
            "s_over_runtime"]
    lines = ["\t".join(cols)] + ["\t".join(_fmt(r[c]) for c in cols) for r in rows]
    (root / "full_scale.tsv").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in doc.items() if k != "rules"}, indent=1))
    return doc


def _config_chunk_size(layers):
    """generate.chunk_size of the layered config files (the schema's default 100 when none sets it)."""
    import yaml

    size = 100
    for layer in layers:
        size = (yaml.safe_load(Path(layer).read_text()) or {}).get("generate", {}).get("chunk_size", size)
    return int(size)


if __name__ == "__main__":
    main()
