"""Rule frames: lossless frames of every clip, cut to its event duration."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_frames, snakemake.log[0], snakemake.threads,
          splits_path=snakemake.input.splits, events_paths=list(snakemake.input.events),
          n_frames=snakemake.params.n_frames, size=snakemake.params.size, out_path=snakemake.output[0])
