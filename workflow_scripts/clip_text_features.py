"""Rule clip_text_features: CLIP text embeddings of every caption."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_clip_text_features, snakemake.log[0], snakemake.threads,
          captions_path=snakemake.input.captions, model=snakemake.params.model, batch_size=snakemake.params.batch_size,
          device=snakemake.params.device, seed=snakemake.params.seed, out_path=snakemake.output[0])
