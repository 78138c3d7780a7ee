"""Rule timelines: qualitative per-clip timelines (GT vs each method)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_timelines, snakemake.log[0], snakemake.threads,
          recon_paths=list(snakemake.input.recon), methods=list(snakemake.params.methods),
          frames_path=snakemake.input.frames, cfg=dict(snakemake.params.cfg), fps=snakemake.params.fps,
          out_dir=snakemake.output[0])
