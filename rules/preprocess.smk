# Raw BOLD runs -> validated, cleaned, lagged, repeat-averaged, voxel-selected samples per subject.


rule splits:
    input:
        table=STIMULUS_TABLE,
    output:
        res("splits.tsv"),
    params:
        code=code_hash("io"),
    log:
        log_path("splits"),
    benchmark:
        bench_path("splits")
    conda:
        "../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=5,
    script:
        "../workflow_scripts/splits.py"


rule preprocess:
    input:
        bold=run_files("bold"),
        sidecar=run_files("sidecar"),
        events=run_files("events"),
        splits=res("splits.tsv"),
    output:
        h5=res("fmri/sub-{sub}.h5"),
        qc=report(
            res("qc/sub-{sub}_selection.png"),
            caption="report/qc.rst",
            category="1. Preprocessing",
            subcategory="sub-{sub}",
        ),
        selection_tsv=report(
            res("qc/sub-{sub}_selection.tsv"),
            caption="report/preprocess_selection_table.rst",
            category="1. Preprocessing",
            subcategory="sub-{sub}",
        ),
        lag_tsv=report(
            res("qc/sub-{sub}_lag_scan.tsv"),
            caption="report/preprocess_lag_scan.rst",
            category="1. Preprocessing",
            subcategory="sub-{sub}",
        ),
        lag_png=report(
            res("qc/sub-{sub}_lag_scan.png"),
            caption="report/preprocess_lag_scan.rst",
            category="1. Preprocessing",
            subcategory="sub-{sub}",
        ),
        tsnr=report(
            res("qc/sub-{sub}_tsnr.png"),
            caption="report/preprocess_tsnr.rst",
            category="1. Preprocessing",
            subcategory="sub-{sub}",
        ),
    params:
        runs=RUNS,
        tr=TR,
        layout=DATASET["layout"],
        truth_dir=f"{ROOT}/derivatives/ground_truth" if SIMULATE else "",
        cfg=config["preprocess"],
        code=code_hash("preprocess", "io"),
    log:
        log_path("preprocess_sub-{sub}"),
    benchmark:
        bench_path("preprocess_sub-{sub}")
    conda:
        "../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/preprocess.py"
