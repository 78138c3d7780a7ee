# Decoders from fMRI to each feature, trained on the training split only.


rule decode:
    input:
        fmri=res("fmri/sub-{sub}.h5"),
        features=res("features/{target}.h5"),
    output:
        model=res("models/ridge/sub-{sub}_{target}.safetensors"),
        pred=res("predictions/ridge/sub-{sub}_{target}.h5"),
    wildcard_constraints:
        target="|".join(DECODE_TARGETS),
    params:
        cfg=config["decode"],
        code=code_hash("decoders", "preprocess/pipeline.py", "io"),
    log:
        log_path("decode_sub-{sub}_{target}"),
    benchmark:
        bench_path("decode_sub-{sub}_{target}")
    group:
        "subject"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/decode.py"


# ----------------------------------------------------------------------------- neural decoders (decode.neural)
# Each trains on the training split only (safetensors model; checkpoints under results/checkpoints/ for a
# resume after a kill), predicts the test split and evaluates itself on its own target against a shuffled
# control (metrics/decoders/<decoder>_sub-XX.tsv, joined into tables/metrics.tsv).
import fmrivid.decoders.stage as _dstage

NEURAL = [d for d in config["decode"]["neural"] if d in _dstage.NEURAL]


def _first_frame_pred(wildcards):
    """Decoded first-frame latents for motion/fusion: the structure decoder's, else ridge's `vae`."""
    if "structure" in config["decode"]["neural"]:
        return res(f"predictions/structure/sub-{wildcards.sub}_vae.h5")
    if "vae" in DECODE_TARGETS:
        return res(f"predictions/ridge/sub-{wildcards.sub}_vae.h5")
    raise WorkflowError("decode.neural has motion/fusion: they need decoded first-frame latents, from "
                        "'structure' in decode.neural or 'vae' in decode.targets; found neither")


def _decoded_text(wildcards):
    return res(f"predictions/{'semantic' if 'semantic' in config['decode']['neural'] else 'ridge'}/"
               f"sub-{wildcards.sub}_text.h5")


def neural_inputs(wildcards):
    d = wildcards.decoder
    files = {"fmri": res(f"fmri/sub-{wildcards.sub}.h5")}
    if d == "semantic":
        files.update(text=res("features/text.h5"), video=res("features/image.h5"))
    elif d == "structure":
        files.update(vae=res("features/vae.h5"))
    else:
        files.update(vae_frames=res("features/vae_frames.h5"), first=_first_frame_pred(wildcards))
        if d == "fusion":
            files.update(audio=res("features/wav2vec.h5"), text=res("features/text.h5"),
                         decoded_text=_decoded_text(wildcards))
    return files


def decoder_tables():
    """metrics/decoders/<decoder>_sub-XX_<target>.tsv of every decoder in decode.neural."""
    return [res(f"metrics/decoders/{d}_sub-{s}_{_dstage.TARGET[d]}.tsv")
            for d in config["decode"]["neural"] for s in SUBJECTS]


def decoder_losses(wildcards=None):
    """Loss curves of every decoder in decode.neural (name -> TSV), for the report."""
    return {f"{d} sub-{s}": res(f"models/{d}/sub-{s}_{_dstage.TARGET[d]}_losses.tsv")
            for d in config["decode"]["neural"] for s in SUBJECTS}


rule neural_decode:
    input:
        unpack(neural_inputs),
    output:
        model=res("models/{decoder}/sub-{sub}_{target}.safetensors"),
        pred=res("predictions/{decoder}/sub-{sub}_{target}.h5"),
        losses=res("models/{decoder}/sub-{sub}_{target}_losses.tsv"),
        table=res("metrics/decoders/{decoder}_sub-{sub}_{target}.tsv"),
    wildcard_constraints:
        decoder="|".join(_dstage.NEURAL),
        target="text|vae|vae_frames",
    params:
        cfg=config["decode"],
        eval_cfg=config["evaluate"],
        seed=config["seed"],
        ckpt=lambda wc: res(f"checkpoints/{wc.decoder}/sub-{wc.sub}"),
        code=code_hash("decoders", "preprocess/pipeline.py", "io", "metrics"),
    log:
        log_path("neural_decode_{decoder}_sub-{sub}_{target}"),
    benchmark:
        bench_path("neural_decode_{decoder}_sub-{sub}_{target}")
    group:
        "subject"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(6000),
        runtime=120,
        gpu=1 if config["decode"]["device"].startswith("cuda") else 0,
    script:
        "../workflow_scripts/neural_decode.py"


rule align_decode:
    input:
        maps=expand(res("surface/sub-{s}_flatmaps.h5"), s=SUBJECTS),
        features=res("features/text.h5"),
    output:
        model=res("models/align/sub-{sub}_text.safetensors"),
        decoder=res("models/align/sub-{sub}_text_ridge.safetensors"),
        pred=res("predictions/align/sub-{sub}_text.h5"),
        losses=res("models/align/sub-{sub}_text_losses.tsv"),
        table=res("metrics/decoders/align_sub-{sub}_text.tsv"),
    params:
        subjects=SUBJECTS,
        cfg=config["decode"],
        eval_cfg=config["evaluate"],
        seed=config["seed"],
        ckpt=lambda wc: res(f"checkpoints/align/sub-{wc.sub}"),
        code=code_hash("decoders", "io", "metrics"),
    log:
        log_path("align_decode_sub-{sub}"),
    benchmark:
        bench_path("align_decode_sub-{sub}")
    group:
        "subject"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(6000),
        runtime=120,
        gpu=1 if config["decode"]["device"].startswith("cuda") else 0,
    script:
        "../workflow_scripts/align_decode.py"


rule encoder_model:
    input:
        fmri=res("fmri/sub-{sub}.h5"),
        frames=res("features/frames.h5"),
    output:
        model=res("models/encoder/sub-{sub}_voxels.safetensors"),
        pred=res("predictions/encoder/sub-{sub}_voxels.h5"),
        losses=res("models/encoder/sub-{sub}_voxels_losses.tsv"),
        table=res("metrics/decoders/encoder_sub-{sub}_voxels.tsv"),
    params:
        cfg=config["decode"],
        eval_cfg=config["evaluate"],
        seed=config["seed"],
        ckpt=lambda wc: res(f"checkpoints/encoder/sub-{wc.sub}"),
        code=code_hash("decoders", "preprocess/pipeline.py", "io", "metrics"),
    log:
        log_path("encoder_model_sub-{sub}"),
    benchmark:
        bench_path("encoder_model_sub-{sub}")
    group:
        "subject"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(8000),
        runtime=240,
        gpu=1 if config["decode"]["device"].startswith("cuda") else 0,
    script:
        "../workflow_scripts/encoder_model.py"
