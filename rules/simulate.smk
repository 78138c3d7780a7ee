# The embedded demo dataset (only when dataset.simulate is true).

if SIMULATE:

    rule simulate_demo:
        output:
            bold=expand(
                "{root}/sub-{sub}/func/sub-{sub}_task-{task}_run-{run}_bold.nii.gz",
                root=ROOT,
                sub=SUBJECTS,
                task=TASK,
                run=RUNS,
            ),
            sidecar=expand(
                "{root}/sub-{sub}/func/sub-{sub}_task-{task}_run-{run}_bold.json",
                root=ROOT,
                sub=SUBJECTS,
                task=TASK,
                run=RUNS,
            ),
            events=expand(
                "{root}/sub-{sub}/func/sub-{sub}_task-{task}_run-{run}_events.tsv",
                root=ROOT,
                sub=SUBJECTS,
                task=TASK,
                run=RUNS,
            ),
            table=STIMULUS_TABLE,
            videos=STIMULUS_FILES,
        log:
            log_path("simulate_demo"),
        benchmark:
            bench_path("simulate_demo")
        group:
            "stimuli"
        conda:
            "../envs/neuro.yaml"
        threads: 1
        resources:
            mem_mb=mem(2000),
            runtime=20,
        params:
            root=lambda wildcards, output: output.table[: -len(DATASET["stimuli_table"]) - 1],
            cfg=config["simulate"],
            stage=stage("simulate"),
        script:
            "../workflow_scripts/run_stage.py"
