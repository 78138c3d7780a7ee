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
include: "rules/decoders.smk"
include: "rules/generate.smk"
include: "rules/metrics.smk"
include: "rules/report.smk"


# What `snakemake` (rule all) makes: tables, figures, previews and provenance of the report.
FINAL_OUTPUTS = [
    res("tables/metrics.tsv"),
    res("tables/summary.tsv"),
    res("report/metrics.png"),
    res("report/headline.png"),
    res("tables/headline.tsv"),
    *([res("report/training_curves.png")] if config["generate"]["method"] == "demo" else []),  # demo generator
    res("report/provenance.yaml"),
    *expand(res("report/sub-{sub}_grid.png"), sub=SUBJECTS),
    *expand(res("report/sub-{sub}_preview.mp4"), sub=SUBJECTS),
    *expand(res("qc/sub-{sub}_selection.png"), sub=SUBJECTS),
    *EVALUATION_OUTPUTS,  # rules/report.smk
    *PREPROCESS_OUTPUTS,  # rules/preprocess.smk (surface projection when enabled)
    *optional_feature_outputs(),
    *([res("report/decoder_curves.png")] if config["decode"]["neural"] else []),
]


rule all:
    default_target: True
    input:
        FINAL_OUTPUTS,
