"""Rule flow_features: Farneback optical flow of every clip."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_flow_features, snakemake.log[0], snakemake.threads,
          frames_path=snakemake.input.frames, cfg=snakemake.params.cfg, out_path=snakemake.output[0])
