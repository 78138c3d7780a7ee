# Raw BOLD runs -> validated, cleaned, lagged, repeat-averaged, voxel-selected samples per subject.


if TABLE_FROM_RULE:

    # CC2017 (one row per 2-s clip of each segment movie) or BIDS stim_file events (dataset.split decides).
    rule stimulus_table:
        input:
            events=all_event_files(),
        output:
            STIMULUS_TABLE,
        log:
            log_path("stimulus_table"),
        benchmark:
            bench_path("stimulus_table")
        group:
            "stimuli"
        conda:
            "../envs/neuro.yaml"
        threads: 1
        resources:
            mem_mb=declared_mem("stimulus_table", 1000),
            runtime=declared_runtime("stimulus_table", 5),
        params:
            dataset=DATASET,
            stage=stage("preprocess"),
        script:
            "../workflow_scripts/run_stage.py"


rule splits:
    input:
        table_path=STIMULUS_TABLE,
    output:
        res("splits.tsv"),
    log:
        log_path("splits"),
    benchmark:
        bench_path("splits")
    group:
        "stimuli"
    conda:
        "../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=declared_mem("splits", 1000),
        runtime=declared_runtime("splits", 5),
    params:
        stage=stage("preprocess"),
    script:
        "../workflow_scripts/run_stage.py"


rule preprocess:
    input:
        bold=run_files("bold"),
        sidecar=run_files("sidecar"),
        events=run_files("events"),
        confounds=run_files("confounds"),
        splits_path=res("splits.tsv"),
        lag_features=res(f"features/{LAG_FEATURE}.h5") if LAG_FEATURE else [],
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
    log:
        log_path("preprocess_sub-{sub}"),
    benchmark:
        bench_path("preprocess_sub-{sub}")
    group:
        "fmri"
    conda:
        "../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=declared_mem("preprocess", 4000),
        runtime=declared_runtime("preprocess", 30),
    params:
        runs=run_records,
        subject=lambda wc: wc.sub,
        tr=TR,
        layout=DATASET["layout"],
        truth_dir=f"{ROOT}/derivatives/ground_truth" if SIMULATE else "",
        cfg=config["preprocess"],
        stage=stage("preprocess"),
    script:
        "../workflow_scripts/run_stage.py"


# preprocess.group_average: one group subject, the mean of every subject's samples on the voxels all kept.
rule group_average:
    input:
        fmri_paths=expand(res("fmri/sub-{sub}.h5"), sub=SUBJECTS),
    output:
        res("fmri/group.h5"),
    log:
        log_path("group_average"),
    benchmark:
        bench_path("group_average")
    group:
        "tables"
    conda:
        "../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=mem(4000),  # every subject's samples at once (CC2017, 3 x 5,520 x 14k voxels float64: 1.9 GB)
        runtime=30,
    params:
        subjects=SUBJECTS,
        stage=stage("preprocess"),
    script:
        "../workflow_scripts/run_stage.py"


# The preprocessed samples on the cortical surface, GIfTI per hemisphere, optional flat maps: volume data projected
# with nilearn vol_to_surf onto preprocess.surface.mesh; CIFTI (fsLR-32k) data written at their own vertices and
# flattened with the 32k_fs_LR flat surfaces of the preprocess.surface.mesh folder.


# Optional preprocessing outputs requested by rule all (final_outputs in common.smk).
PREPROCESS_OUTPUTS = (
    expand(res("surface/sub-{sub}_hemi-{hemi}.func.gii"), sub=SUBJECTS, hemi=["L", "R"])
    + expand(res("qc/sub-{sub}_surface.png"), sub=SUBJECTS)
    + (expand(res("surface/sub-{sub}_flatmaps.h5"), sub=SUBJECTS) if SURFACE["flatmap"] else [])
    if SURFACE["enabled"]
    else []
)


rule surface:
    input:
        fmri_path=res("fmri/sub-{sub}.h5"),
    output:
        left=res("surface/sub-{sub}_hemi-L.func.gii"),
        right=res("surface/sub-{sub}_hemi-R.func.gii"),
        flat=res("surface/sub-{sub}_flatmaps.h5") if SURFACE["flatmap"] else [],
        figure=report(
            res("qc/sub-{sub}_surface.png"),
            caption="report/preprocess_surface.rst",
            category="1. Preprocessing",
            subcategory="sub-{sub}",
        ),
    log:
        log_path("surface_sub-{sub}"),
    benchmark:
        bench_path("surface_sub-{sub}")
    group:
        "fmri"
    conda:
        "../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=20,
    params:
        cfg=SURFACE,
        stage=stage("preprocess"),
    script:
        "../workflow_scripts/run_stage.py"
