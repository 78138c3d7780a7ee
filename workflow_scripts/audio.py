"""Rule audio: one AudioLDM WAV per clip caption."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_audio, snakemake.log[0], snakemake.threads,
          captions_path=snakemake.input.captions, events_paths=list(snakemake.input.events), cfg=snakemake.params.cfg,
          device=snakemake.params.device, seed=snakemake.params.seed, out_dir=snakemake.output[0],
          splits_path=snakemake.input.splits)
