"""fmrivid: reconstruct watched video from fMRI, as one reproducible Snakemake workflow.

All scientific logic lives in this package; the Snakemake rules only call it.
Everything here is importable and testable without Snakemake.
"""

__version__ = "0.1.0"
