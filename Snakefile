# fmrivid: from raw fMRI to reconstructed videos and a report bundle, as one DAG.
# Usage (see README.md):  snakemake --cores 2 --configfile PRESET.yaml [MORE.yaml ...] [target]
# A run reads the schema defaults (config/schema/config.schema.yaml: real-data settings) + the --configfile files,
# later files overriding earlier ones (a dataset preset, a recipe, your own). No --configfile: the demo preset
# (config/demo.yaml). There is no `configfile:` directive on purpose: it would be the base of every run.
from snakemake.utils import min_version

min_version("9.0")

report: "rules/report/workflow.rst"


# Wildcards never span folders: without this, recon/<m>/sub-01/chunk-000.h5 also matches recon/{method}/sub-{sub}.h5
# (sub = "01/chunk-000") and planning explores those dead ends for every chunk.
wildcard_constraints:
    sub=r"[A-Za-z0-9]+",  # BIDS labels are alphanumeric
    method=r"[^/]+",
    chunk=r"\d+",


include: "rules/common.smk"
include: "rules/simulate.smk"
include: "rules/preprocess.smk"
include: "rules/features.smk"
include: "rules/decode.smk"
include: "rules/generate.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
