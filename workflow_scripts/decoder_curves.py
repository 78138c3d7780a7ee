"""Rule decoder_curves: the loss curves of the neural decoders, one figure."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_training_curves, snakemake.log[0], snakemake.threads,
          dirs=dict(snakemake.input.items()), out_path=snakemake.output[0])
