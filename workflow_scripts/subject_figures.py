"""Rule subject_figures: frame grid and animated preview of one subject."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_subject_figures, snakemake.log[0], snakemake.threads,
          recon_path=snakemake.input.recon, frames_path=snakemake.input.frames, cfg=dict(snakemake.params.cfg),
          out_grid=snakemake.output.grid, out_preview=snakemake.output.preview, subject=snakemake.wildcards.sub,
          out_preview_html=snakemake.output.preview_html)
