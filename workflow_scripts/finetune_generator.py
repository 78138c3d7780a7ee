"""Rule finetune_generator: fine-tune the diffusers generator on the training clips only."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_finetune_generator, snakemake.log[0], snakemake.threads,
          vae_frames_path=snakemake.input.vae_frames, tokens_path=snakemake.input.tokens,
          splits_path=snakemake.input.splits, cfg=dict(snakemake.params.cfg), seed=snakemake.params.seed,
          out_dir=snakemake.output[0])
