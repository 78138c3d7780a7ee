"""Rule captions: one caption per clip (metadata or a captioner)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_captions, snakemake.log[0], snakemake.threads,
          splits_path=snakemake.input.splits, frames_path=snakemake.input.get("frames"), cfg=snakemake.params.cfg,
          device=snakemake.params.device, seed=snakemake.params.seed, out_path=snakemake.output[0])
