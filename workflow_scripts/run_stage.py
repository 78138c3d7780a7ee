"""Every rule's script: runs fmrivid.<domain>.stages.<rule name> with the rule's inputs, outputs and params.

See fmrivid/runner.py. The package of this checkout comes first on sys.path, so each clone runs its own code.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid.runner import run  # noqa: E402

run(snakemake)
