# fmrivid: from raw fMRI to reconstructed videos and a report bundle, as one DAG.
# Usage (see README.md):  snakemake --cores 2 [--configfile config/my.yaml] [target]
from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


report: "rules/report/workflow.rst"


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
