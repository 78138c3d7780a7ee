"""Rule train_demo_vae: the demo VAE, trained on training clips only."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_train_vae, snakemake.log[0], snakemake.threads,
          frames_path=snakemake.input.frames, splits_path=snakemake.input.splits, cfg=dict(snakemake.params.cfg),
          seed=snakemake.params.seed, out_dir=snakemake.output[0])
