"""Rule gt_cache: GT-side outputs of the video metrics (flows, hue, CLIP embeddings, classifier outputs), once."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_gt_cache, snakemake.log[0], snakemake.threads,
          frames_path=snakemake.input.frames, splits_path=snakemake.input.splits, cfg=dict(snakemake.params.cfg),
          image_model=snakemake.params.image_model, seed=snakemake.params.seed, out_path=snakemake.output[0],
          classifier_path=snakemake.input.get("classifier"))
