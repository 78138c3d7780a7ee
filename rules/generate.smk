# The demo generator (a tiny VAE + UNet3D trained on the training clips) and generation from decoded features.


rule train_demo_vae:
    input:
        frames_path=res("features/frames.h5"),
        splits_path=res("splits.tsv"),
    output:
        dir=directory(f"{GENERATOR}/vae"),
    log:
        log_path("train_demo_vae"),
    benchmark:
        bench_path("train_demo_vae")
    group:
        "generator"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(6000),
        runtime=60,
        gpu=1 if config["generate"]["device"].startswith("cuda") else 0,
    params:
        cfg={k: config["generate"][k] for k in ("device", "vae")},  # sampling settings do not retrain it
        seed=config["seed"],
        stage=stage("generate"),
    script:
        "../workflow_scripts/run_stage.py"


rule train_demo_unet:
    input:
        frames_path=res("features/frames.h5"),
        text_path=res("features/text.h5"),
        splits_path=res("splits.tsv"),
        vae_dir=f"{GENERATOR}/vae",
    output:
        dir=directory(f"{GENERATOR}/diffusion"),
    log:
        log_path("train_demo_unet"),
    benchmark:
        bench_path("train_demo_unet")
    group:
        "generator"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(8000),
        runtime=120,
        gpu=1 if config["generate"]["device"].startswith("cuda") else 0,
    params:
        cfg={k: config["generate"][k] for k in ("device", "unet")},
        seed=config["seed"],
        stage=stage("generate"),
    script:
        "../workflow_scripts/run_stage.py"


# ----------------------------------------------------------------------------- diffusers generator
# generate.method text_to_video / structure_motion / two_stage / image_img2img: the pipeline of generate.pipeline
# (text-to-video; text-to-image Stable Diffusion for image_img2img, frame by frame), conditioned on
# ridge-decoded caption token embeddings (negative: the tokens decoded from the mean TRAINING fMRI), and for the
# img2img methods on decoded latents of the generator's own VAE. image_to_video: Stable Video Diffusion from the
# decoded first-frame latent decoded to an image by features.vae_model (any VAE; no caption tokens).
import fmrivid.generate.stages as _generate_stages

if DIFFUSERS:
    try:
        _generate_stages.check_generator_vae(config["generate"], FEATURES["vae_model"])
        _generate_stages.check_pipeline(config["generate"])
        _generate_stages.check_finetune(config["generate"], config["decode"]["neural"])
    except fmrivid.errors.ConfigError as err:
        raise WorkflowError(str(err))
    _pipe = config["generate"]["pipeline"]
    _made = (_pipe["num_frames"], _pipe["height"], _pipe["width"])
    _truth = (FEATURES["n_frames"], FEATURES["size"], FEATURES["size"])
    if _made != _truth:
        raise WorkflowError(
            f"generate.pipeline num_frames/height/width: expected the ground-truth clips' "
            f"features.n_frames/size/size {_truth} (metrics compare frame by frame); found {_made}"
        )
    if TOKENS and "text_tokens" not in DECODE_TARGETS:
        raise WorkflowError(
            f"generate.method {METHOD!r} is conditioned on decoded caption token embeddings: "
            f"decode.targets must include 'text_tokens'; found {DECODE_TARGETS}"
        )
    if TOKENS and not FEATURES["tokens"]["enabled"]:
        raise WorkflowError(
            f"generate.method {METHOD!r} needs features/text_tokens.h5: features.tokens.enabled "
            f"must be true; found false"
        )


rule finetune_generator:
    input:
        unpack(finetune_source),
        tokens_path=res("features/text_tokens.h5"),
        splits_path=res("splits.tsv"),
    output:
        dir=directory(f"{GENERATOR}/finetuned"),
    log:
        log_path("finetune_generator"),
    benchmark:
        bench_path("finetune_generator")
    group:
        "generator"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(16000),
        runtime=240,
        gpu=1 if config["generate"]["device"].startswith("cuda") else 0,
    params:
        cfg={k: config["generate"][k] for k in ("method", "device", "pipeline", "finetune")},
        seed=config["seed"],
        stage=stage("generate"),
    script:
        "../workflow_scripts/run_stage.py"


# GLFA stage 2 (generate.finetune.cotrain): generator, alignment and condition head co-trained; it reads every
# subject's flat maps, hence the all-subject group "tables".
rule cotrain_generator:
    input:
        vae_frames_path=res("features/vae_frames.h5"),
        tokens_path=res("features/text_tokens.h5"),
        splits_path=res("splits.tsv"),
        flatmap_paths=expand(res("surface/sub-{s}_flatmaps.h5"), s=SUBJECTS),
    output:
        dir=directory(f"{GENERATOR}/cotrained"),
        tokens=expand(res("predictions/cotrain/sub-{s}_text_tokens.h5"), s=SUBJECTS),
    log:
        log_path("cotrain_generator"),
    benchmark:
        bench_path("cotrain_generator")
    group:
        "tables"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(16000),
        runtime=240,
        gpu=1 if config["generate"]["device"].startswith("cuda") else 0,
    params:
        subjects=SUBJECTS,
        cfg={k: config["generate"][k] for k in ("device", "pipeline", "finetune")},
        align_cfg=config["decode"].get("align", {}),
        seed=config["seed"],
        stage=stage("generate"),
    script:
        "../workflow_scripts/run_stage.py"


rule generate_chunk:
    input:
        unpack(generate_inputs),
    output:
        res("recon/{method}/sub-{sub}/chunk-{chunk}.h5"),
    log:
        log_path("generate_{method}_sub-{sub}_chunk-{chunk}"),
    benchmark:
        bench_path("generate_{method}_sub-{sub}_chunk-{chunk}")
    wildcard_constraints:
        chunk=r"\d+",
    group:
        "generate"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(16000 if DIFFUSERS else 6000),
        runtime=240 if DIFFUSERS else 60,
        gpu=1 if config["generate"]["device"].startswith("cuda") else 0,
    params:
        cfg=config["generate"],
        seed=config["seed"],
        chunk=lambda wc: int(wc.chunk),
        n_total=N_TEST,
        shuffle=lambda wc: wc.method.endswith("_shuffled"),
        sources=generate_sources,
        vae_model=KEYFRAME_VAE,
        stage=stage("generate"),
    script:
        "../workflow_scripts/run_stage.py"


rule merge_recon:
    input:
        chunk_paths=expand(res("recon/{{method}}/sub-{{sub}}/chunk-{chunk}.h5"), chunk=CHUNKS),
        pred_path=recon_ids,
    output:
        recon=res("recon/{method}/sub-{sub}.h5"),  # the lossless array the metrics read
        mp4=directory(res("videos/{method}/sub-{sub}")),  # one H.264 MP4 per clip, for viewing
    log:
        log_path("merge_recon_{method}_sub-{sub}"),
    benchmark:
        bench_path("merge_recon_{method}_sub-{sub}")
    group:
        "results"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=20,
    params:
        fps=config["report"]["preview_fps"],
        stage=stage("generate"),
    script:
        "../workflow_scripts/run_stage.py"
