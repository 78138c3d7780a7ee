"""Rule surface: project the preprocessed samples of one subject onto a surface mesh."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_surface, snakemake.log[0], snakemake.threads, fmri_path=snakemake.input[0],
          cfg=dict(snakemake.params.cfg), out_left=snakemake.output.left, out_right=snakemake.output.right,
          out_flat=snakemake.output.flat or None, out_figure=snakemake.output.figure)
