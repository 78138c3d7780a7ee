"""Rule merge_recon: the chunks of one subject and method, concatenated in clip order, plus one MP4 per clip."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_merge_chunks, snakemake.log[0], snakemake.threads,
          chunk_paths=list(snakemake.input.chunks), pred_path=snakemake.input.pred, out_path=snakemake.output.recon,
          mp4_dir=snakemake.output.mp4, fps=snakemake.params.fps)
