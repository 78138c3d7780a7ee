"""Rule train_demo_classifier: the demo's frame classifier for N-way accuracy, on the training clips only."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_train_demo_classifier, snakemake.log[0], snakemake.threads,
          frames_path=snakemake.input.frames, captions_path=snakemake.input.captions,
          splits_path=snakemake.input.splits, cfg=dict(snakemake.params.cfg), seed=snakemake.params.seed,
          out_path=snakemake.output[0])
