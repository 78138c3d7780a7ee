"""Cost growth of each rule with the data: log-log fits over runs of ``benchmarks/full_scale.py`` at fractions of
the CC2017 design (issue 18).

Each input is a ``full_scale.json`` (one subject at 1/4, 1/2 or all of the design: fewer segments, the real
repeats, run length, 91,282 grayordinates and frame size). Per rule, the wall time and the peak RSS are fitted as
``y = a * clips^b`` by least squares on log-log axes; ``b`` is the exponent. A per-clip stage should have a time
exponent of at most 1 (a little above 1 is noise and fixed costs shrinking in relative terms; well above it is a
bug: something is recomputed per clip or per chunk over all clips). Memory exponents near 0 mean a model- or
run-bound footprint, near 1 one that holds every clip.

Grayordinates are fixed by the CIFTI format (every fraction has 91,282), so this script fits against clips only;
the preprocessing cost per run is linear in grayordinates by construction (one pass per run over a
volumes x grayordinates array).

    python benchmarks/scaling.py RUN.json [RUN.json ...] [--out DIR]

``--calibrate FILE`` also writes the resource calibration :mod:`fmrivid.resources` reads (its default file is
``fmrivid/resources_calibration.tsv``): per rule, peak RSS and the longest job's wall time fitted as ``a + b * units``
(units: the dataset's clips, or its test clips for the rules holding every test clip's GT; the least-squares line
raised until no measured point lies above it), and the smallest peak.

Writes ``DIR/scaling.tsv`` (rule, points, time and memory exponents, the largest run's figures and declared
resources) and ``DIR/scaling.png`` (time and peak RSS against clips, one line per rule, log-log), and prints the
table. Rules whose time exponent exceeds ``--max-exponent`` (default 1.15) are listed as super-linear.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


#: rules whose memory and time follow the test clips (they hold the GT of every test clip), not all clips
TEST_CLIP_RULES = ("gt_cache", "evaluate_chunk")


def load_runs(paths):
    """[(clips, {rule: row})] of each ``full_scale.json``, sorted by clips; refuses duplicates. Each row gets the
    run's ``clips`` and ``test_clips``."""
    runs = {}
    for path in paths:
        doc = json.loads(Path(path).read_text())
        clips = int(doc["clips"])
        if clips in runs:
            raise SystemExit(f"{path}: a second run of {clips} clips (one run per design size)")
        test = int((doc.get("recovery") or {}).get("test_samples") or 0)
        runs[clips] = {r["rule"]: dict(r, clips=clips, test_clips=test) for r in doc["rules"]}
    return sorted(runs.items())


def fit_line(xs, ys):
    """Least-squares intercept and slope of y on x (slope 0 with one distinct x)."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def upper_line(xs, ys):
    """Intercept and slope of the least-squares line raised until no point lies above it (a cost growing faster
    than linearly, like preprocess memory, would otherwise be under-declared at the largest size); slope >= 0."""
    a, b = fit_line(xs, ys)
    b = max(b, 0.0)  # a cost does not shrink with the data (a negative slope is timing noise)
    return max(a, max(y - b * x for x, y in zip(xs, ys))), b


def calibration_rows(runs):
    """The :mod:`fmrivid.resources` calibration: per rule, peak RSS and the longest job's wall time as a + b * units
    (:func:`upper_line`)."""
    out = []
    for rule in sorted({rule for _, rows in runs for rule in rows}):
        pts = [rows[rule] for _, rows in runs if rule in rows]
        unit = "test_clips" if rule in TEST_CLIP_RULES else "clips"
        xs = [float(p[unit]) for p in pts]
        mem_a, mem_b = upper_line(xs, [float(p["peak_rss_mb"]) for p in pts])
        time_a, time_b = upper_line(xs, [float(p.get("max_job_s", p["wall_s"])) for p in pts])
        out.append({"rule": rule, "unit": unit, "mem_a_mb": round(mem_a, 1), "mem_b_mb": round(mem_b, 5),
                    "mem_floor_mb": round(min(float(p["peak_rss_mb"]) for p in pts), 1),
                    "time_a_s": round(time_a, 2), "time_b_s": round(time_b, 6), "runs": len(pts),
                    "units_measured": "/".join(str(int(x)) for x in xs)})
    return out


def write_calibration(rows, path):
    from fmrivid.resources import FIELDS

    lines = ["\t".join(FIELDS)] + ["\t".join(str(r[f]) for f in FIELDS) for r in rows]
    Path(path).write_text("\n".join(lines) + "\n")
    print(f"calibration of {len(rows)} rules written to {path}")


def fit_exponent(xs, ys):
    """Least-squares slope and intercept of log(y) on log(x); None with fewer than 2 distinct x or a y <= 0."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y is not None and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None, None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return slope, my - slope * mx


def scaling_table(runs):
    """One row per rule present in at least two runs."""
    rules = sorted({rule for _, rows in runs for rule in rows})
    table = []
    for rule in rules:
        pts = [(clips, rows[rule]) for clips, rows in runs if rule in rows]
        if len(pts) < 2:
            continue
        xs = [c for c, _ in pts]
        b_time, _ = fit_exponent(xs, [r["wall_s"] for _, r in pts])
        b_mem, _ = fit_exponent(xs, [r["peak_rss_mb"] for _, r in pts])
        last = pts[-1][1]
        table.append({"rule": rule, "points": len(pts), "clips": "/".join(str(c) for c in xs),
                      "time_exponent": b_time, "mem_exponent": b_mem, "wall_s_largest": last["wall_s"],
                      "peak_rss_mb_largest": last["peak_rss_mb"], "mem_mb_declared": last.get("mem_mb"),
                      "runtime_min_declared": last.get("runtime_min")})
    return table


def _fmt(v):
    if v is None:
        return ""
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def write_outputs(runs, table, out, max_exponent):
    out.mkdir(parents=True, exist_ok=True)
    cols = list(table[0]) if table else ["rule"]
    lines = ["\t".join(cols)] + ["\t".join(_fmt(r[c]) for c in cols) for r in table]
    (out / "scaling.tsv").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in sorted(table, key=lambda r: -r["wall_s_largest"]):
        pts = [(c, rows[row["rule"]]) for c, rows in runs if row["rule"] in rows]
        xs = [c for c, _ in pts]
        label = f"{row['rule']} (b={_fmt(row['time_exponent'])})"
        axes[0].plot(xs, [r["wall_s"] for _, r in pts], "o-", label=label)
        axes[1].plot(xs, [r["peak_rss_mb"] for _, r in pts], "o-", label=row["rule"])
    lo, hi = runs[0][0], runs[-1][0]
    ref = max(r["wall_s_largest"] for r in table) if table else 1
    axes[0].plot([lo, hi], [ref * lo / hi, ref], "k--", lw=1, label="slope 1")
    for ax, what in zip(axes, ("wall time (s)", "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clips of the design (one subject)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    axes[0].set_title("time per rule, log-log (b: fitted exponent)")
    axes[1].set_title("peak RSS per rule")
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=110)
    plt.close(fig)
    print("\t".join(cols))
    for line in lines[1:]:
        print(line)
    worse = [r["rule"] for r in table if r["time_exponent"] is not None and r["time_exponent"] > max_exponent]
    print(f"super-linear in clips (time exponent > {max_exponent}): {', '.join(worse) if worse else 'none'}")
    return worse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="full_scale.json files of one subject at several design sizes")
    ap.add_argument("--out", default="benchmarks/results", help="folder for scaling.tsv and scaling.png")
    ap.add_argument("--max-exponent", type=float, default=1.15)
    ap.add_argument("--calibrate", default=None, help="also write fmrivid.resources' calibration TSV here")
    args = ap.parse_args(argv)
    runs = load_runs(args.runs)
    if len(runs) < 2:
        raise SystemExit("need runs of at least two design sizes")
    table = scaling_table(runs)
    write_outputs(runs, table, Path(args.out), args.max_exponent)
    if args.calibrate:
        write_calibration(calibration_rows(runs), args.calibrate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
