"""Rule brain_metrics: voxel_r of a ridge encoder per subject, isc / fsc across subjects."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_brain_metrics, snakemake.log[0], snakemake.threads,
          fmri_paths=list(snakemake.input.fmri), subjects=list(snakemake.params.subjects),
          features_path=snakemake.input.features, decode_cfg=dict(snakemake.params.decode),
          cfg=dict(snakemake.params.cfg), seed=snakemake.params.seed, out_path=snakemake.output[0])
