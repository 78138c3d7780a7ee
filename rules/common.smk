# Helper functions only (no rules): config validation, dataset layout, paths, stage fingerprints, input functions.
# Depends on nothing defined later: every rule file may read what is here, nothing here reads a rule file.
import functools
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

import fmrivid.config
import fmrivid.errors
from fmrivid.io import bids, layouts
from fmrivid.decoders import registry as decoder_registry
from fmrivid.fingerprint import fingerprint
from fmrivid.generate.methods import METHODS as GENERATION_METHODS
from fmrivid import resources as _resources

CONFIG_FILES = [str(Path(f)) for f in (workflow.overwrite_configfiles or [])]
if not config and not CONFIG_FILES:  # bare `snakemake`: the demo preset, said out loud
    import yaml as _yaml

    CONFIG_FILES = [str(Path(workflow.basedir) / "config/demo.yaml")]
    print(f"fmrivid: no --configfile given: running the demo preset ({CONFIG_FILES[0]})", file=sys.stderr)
    config.update(_yaml.safe_load(open(CONFIG_FILES[0])))

try:
    _validated = fmrivid.config.validate(config, fmrivid.config.load_schema())
except fmrivid.errors.ConfigError as err:
    raise WorkflowError(str(err))


def _key_sorted(value):
    """Dicts with sorted keys, recursively: params are compared by repr(), so the order of keys in a
    config file must not matter (reordering a YAML file must not rerun anything)."""
    if isinstance(value, dict):
        return {k: _key_sorted(value[k]) for k in sorted(value)}
    return value


config.clear()
config.update(_key_sorted(_validated))

RESULTS = config["results_dir"]
DATASET = config["dataset"]
ROOT = DATASET["root"]
SIMULATE = DATASET["simulate"]

if SIMULATE:
    import fmrivid.simulate

    _plan = fmrivid.simulate.plan(config["simulate"])
    SUBJECTS = list(_plan["subjects"])
    RUNS = list(_plan["runs"])
    TASK = _plan["task"]
    TR = float(_plan["tr"])
    STIMULUS_FILES = [f"{ROOT}/stimuli/{c}.mp4" for c in _plan["clip_ids"]]
    RUN_RECORDS = {_s: layouts.demo_runs(ROOT, _s, TASK, RUNS) for _s in SUBJECTS}
    TABLE_FROM_RULE = False
    N_TEST = sum(1 for _c in _plan["clip_ids"] if _c.startswith("test"))
    N_CLIPS = len(_plan["clip_ids"])
else:
    if not ROOT:
        raise WorkflowError(
            "config key 'dataset.root': expected the folder holding your dataset (dataset.simulate "
            f"is false); found it unset in {CONFIG_FILES or 'the --config values'}. Start from a "
            "preset: --configfile config/bids.yaml (edit dataset), or config/demo.yaml for the demo"
        )
    TASK = DATASET["task"]
    TR = float(DATASET["tr"])
    try:  # file names and small TSVs only: which runs, which clips
        SUBJECTS = layouts.subjects(DATASET)
        RUN_RECORDS = {_s: layouts.runs(DATASET, _s) for _s in SUBJECTS}
        TABLE_FROM_RULE = layouts.table_from_rule(DATASET)
        _table = layouts.stimulus_table(DATASET)
    except fmrivid.errors.FmrividError as err:
        raise WorkflowError(str(err))
    STIMULUS_FILES = sorted(set(_table["file"]))
    N_TEST = int((_table["split"] == "test").sum())
    N_CLIPS = len(_table)
CHUNK_SIZE = int(config["generate"]["chunk_size"])
CHUNKS = [f"{k:03d}" for k in range(max(1, -(-N_TEST // CHUNK_SIZE)))]  # generation/metrics jobs per subject
# the data sizes resource formulas follow (fmrivid/resources.py), and the metric rules' CLIP
SIZES = {"clips": N_CLIPS, "test_clips": N_TEST}
EVAL_MODEL = config["evaluate"]["clip_model"] or config["features"]["image_model"]

# The stimulus table: the dataset's own file, or written by rule stimulus_table (CC2017; BIDS without one).
STIMULUS_TABLE = f"{RESULTS}/stimuli/clips.tsv" if TABLE_FROM_RULE else f"{ROOT}/{DATASET['stimuli_table']}"
DECODE_TARGETS = list(config["decode"]["targets"])
GENERATOR = f"{RESULTS}/models/generator"
METHOD = config["generate"]["method"]


def run_files(kind):
    """Input function: the `kind` files (bold, sidecar, events, confounds) of every run of a subject."""

    def _files(wildcards):
        return sorted(set(layouts.run_files(RUN_RECORDS[wildcards.sub], kind)))

    return _files


def run_records(wildcards):
    """Params: the run records of a subject (label, bold, sidecar, events, confounds, group, kind)."""
    return RUN_RECORDS[wildcards.sub]


def all_run_files():
    """Every raw file of every subject's runs (for checksums in the provenance page)."""
    return sorted(
        {
            r[k]
            for recs in RUN_RECORDS.values()
            for r in recs
            for k in ("bold", "sidecar", "events", "confounds")
            if r[k]
        }
    )


@functools.cache  # one fingerprint per domain and Snakemake start
def stage(domain):
    """params.stage of the rules of rules/<domain>.smk.

    It holds the stage module fmrivid.<domain>.stages (the function named as the rule runs, see fmrivid/runner.py)
    and the fingerprint of everything that module imports within fmrivid. An edit to any code a rule can run
    changes the fingerprint, so that the rule and its dependents rerun, and nothing else.
    """
    name = f"fmrivid.{domain}.stages"
    return {"module": name, "code": fingerprint(name, "fmrivid.runner")}


def res(path):
    """A path under the results directory."""
    return f"{RESULTS}/{path}"


def log_path(name):
    return f"{RESULTS}/logs/{name}.log"


def bench_path(name):
    return f"{RESULTS}/benchmarks/{name}.tsv"


def mem(base_mb):
    """Memory request that grows with each retry, so --retries recovers from OOM kills."""
    return lambda wildcards, attempt: base_mb * attempt


def declared_mem(rule, legacy_mb, model=None):
    """``mem_mb`` of the CPU stages measured at full scale. A formula of the data size calibrated by
    benchmarks/full_scale.py (fmrivid/resources.py); with a real model (spec not tiny) at least ``legacy_mb``,
    the estimate for that model. Grows with the attempt like :func:`mem`."""
    return mem(_resources.mem_mb(rule, SIZES, legacy_mb, _resources.uses_real_model(model)))


def declared_runtime(rule, legacy_min, model=None):
    """``runtime`` in minutes, as declared_mem does for memory."""
    return _resources.runtime_min(rule, SIZES, legacy_min, _resources.uses_real_model(model))


def gt_mem_mb():
    """Base memory of the metric rules that hold the ground-truth side of every test clip (gt_cache, evaluate_chunk).

    Frames (uint8) plus float64 hue and flow fields: ~24 bytes per test pixel, + 2 GB for the models; at least
    4 GB. CC2017 (1,200 test clips x 6 frames x 256^2) asks ~13 GB; the demo 4 GB.
    """
    pixels = N_TEST * int(config["features"]["n_frames"]) * int(config["features"]["size"]) ** 2
    return max(4000, 2000 + -(-pixels * 24 // 10**6))


# ----------------------------------------------------------------------------- features (rules/features.smk)
FEATURES = config["features"]
CAPTION_MODEL = FEATURES["captions"]["model"] if FEATURES["captions"]["source"] != "metadata" else None


def all_event_files():
    """Every run's _events.tsv (clip durations come from the events; CC2017 has none: the table's duration_s)."""
    return sorted({r["events"] for recs in RUN_RECORDS.values() for r in recs if r["events"]})


def captions_input(wildcards):
    """The splits; the frames too when a captioner runs (features.captions.source is not metadata)."""
    files = {"splits_path": res("splits.tsv")}
    if FEATURES["captions"]["source"] != "metadata":
        files["frames_path"] = res("features/frames.h5")
    return files


def vae_input(wildcards):
    """The generator's trained VAE when features.vae_model is 'generator'; else nothing (a model spec)."""
    return {"vae_dir": f"{GENERATOR}/vae"} if FEATURES["vae_model"] == "generator" else {}


def optional_feature_outputs():
    """Feature files the config enables beyond those the decoders read (targets of rule all)."""
    out = []
    if FEATURES["clip_text"]:
        out.append(res("features/clip_text.h5"))
    if FEATURES["tokens"]["enabled"]:
        out.append(res("features/text_tokens.h5"))
    if FEATURES["vae_all_frames"]:
        out.append(res("features/vae_frames.h5"))
    if FEATURES["flow"]["enabled"]:
        out.append(res("features/flow.h5"))
    if FEATURES["wav2vec"]["enabled"]:
        out.append(res("features/wav2vec.h5"))
    elif FEATURES["audio"]["enabled"]:
        out.append(res("audio"))
    return out


# ----------------------------------------------------------------------------- decoders, generation, metrics
# (input functions live here: `snakemake --lint` wants functions apart from rules)
NEURAL = [d for d in config["decode"]["neural"] if d in decoder_registry.NEURAL]  # rule neural_decode's decoders
DIFFUSERS = GENERATION_METHODS[METHOD].diffusers  # a diffusers pipeline (else the demo generator trained here)
TOKENS = "tokens" in GENERATION_METHODS[METHOD].decoded.values()  # conditioned on decoded caption tokens
# image_to_video: features.vae_model decodes the decoded first-frame latent to the keyframe image (else None)
KEYFRAME_VAE = FEATURES["vae_model"] if GENERATION_METHODS[METHOD].keyframe else None
FINETUNE = DIFFUSERS and config["generate"]["finetune"]["enabled"]
# GLFA stage 2 (generate.finetune.cotrain): rule cotrain_generator instead of finetune_generator
COTRAIN = FINETUNE and config["generate"]["finetune"]["cotrain"]
SURFACE = config["preprocess"]["surface"]
VARIANTS = dict(config["generate"]["variants"]) or {METHOD: {}}  # generation variants, each evaluated as a method
LAG_FEATURE = config["preprocess"]["qc"]["lag_scan_feature"]


def _first_frame_pred(wildcards):
    """Decoded first-frame latents for motion/fusion: the structure decoder's, else ridge's `vae`."""
    if "structure" in config["decode"]["neural"]:
        return res(f"predictions/structure/sub-{wildcards.sub}_vae.h5")
    if "vae" in DECODE_TARGETS:
        return res(f"predictions/ridge/sub-{wildcards.sub}_vae.h5")
    raise WorkflowError(
        "decode.neural has motion/fusion: they need decoded first-frame latents, from "
        "'structure' in decode.neural or 'vae' in decode.targets; found neither"
    )


def _decoded_text(wildcards):
    """Decoded caption embeddings in features/text.h5's space: the semantic decoder's (when it predicts that
    space, decode.semantic.text_target text), else ridge's."""
    semantic = "semantic" in config["decode"]["neural"] and config["decode"]["semantic"]["text_target"] == "text"
    return res(f"predictions/{'semantic' if semantic else 'ridge'}/sub-{wildcards.sub}_text.h5")


DECODED_INPUTS = {"first": _first_frame_pred, "text": _decoded_text}  # registry Decoder.decoded -> input function


def neural_inputs(wildcards):
    """Inputs of neural_decode from the decoder registry entry. They are its samples, its target and extra feature
    files (by data key) and the decoded inputs it reads from other decoders (``decoded_<key>``)."""
    d = decoder_registry.get(wildcards.decoder)
    stem = config["decode"][d.name][d.target_setting] if d.target_setting else d.target
    files = {"fmri": res(f"fmri/sub-{wildcards.sub}.h5"), "features": res(f"features/{stem}.h5")}
    files.update({key: res(f"features/{stem}.h5") for key, stem in d.features.items()})
    files.update({f"decoded_{key}": DECODED_INPUTS[key](wildcards) for key in d.decoded})
    for extra in sorted(EXTRAS_ASKED.get(d.name, ())):  # generate.variants reads it: train on its feature
        if d.extras[extra]:
            files[extra] = res(f"features/{d.extras[extra]}.h5")
    return files


def align_inputs(wildcards):
    """Extra inputs of align_decode: the features of extras a generation variant reads (tokens: align)."""
    entry = decoder_registry.get("align")
    return {x: res(f"features/{entry.extras[x]}.h5") for x in sorted(EXTRAS_ASKED.get("align", ()))}


ENCODER = decoder_registry.decoder_config("encoder", config["decode"])  # decode.encoder with its defaults


def encoder_inputs(wildcards):
    """Inputs of encoder_model: the subject's samples, its chunks (features/encoder_chunks.h5 when
    decode.encoder.frame_source is video, else the shared features/frames.h5) and the parcel atlas when
    decode.encoder.parcels names one."""
    chunks = "encoder_chunks" if ENCODER["frame_source"] == "video" else "frames"
    fmri = res("fmri/group.h5") if wildcards.sub == GROUP else res(f"fmri/sub-{wildcards.sub}.h5")
    files = {"fmri_path": fmri, "frames_path": res(f"features/{chunks}.h5")}
    if ENCODER["parcels"]:
        files["parcels_path"] = ENCODER["parcels"]
    return files


GROUP = "group"  # preprocess.group_average: the group subject (fmri/group.h5), decoded by the encoder only


def decoder_subjects(decoder):
    """Subjects a decoder runs on: every subject, and the group subject for the encoder-decoder."""
    group = [GROUP] if decoder == "encoder" and config["preprocess"]["group_average"] else []
    return SUBJECTS + group


def decoder_tables():
    """metrics/decoders/<decoder>_sub-XX_<target>.tsv of every decoder in decode.neural."""
    return [
        res(f"metrics/decoders/{d}_sub-{s}_{decoder_registry.get(d).target}.tsv")
        for d in config["decode"]["neural"]
        for s in decoder_subjects(d)
    ]


def decoder_losses(wildcards=None):
    """Loss curves of every decoder in decode.neural (name -> TSV), for the report."""
    return {
        f"{d} sub-{s}": res(f"models/{d}/sub-{s}_{decoder_registry.get(d).target}_losses.tsv")
        for d in config["decode"]["neural"]
        for s in decoder_subjects(d)
    }


def _decoded_latents(sub, kind):
    """Decoded latents of the test clips: kind 'first' (first frame) or 'frames' (every frame)."""
    neural = config["decode"]["neural"]
    if kind == "first":
        if "structure" in neural:
            return res(f"predictions/structure/sub-{sub}_vae.h5")
        target = "vae"
    else:
        for d in ("motion", "fusion"):
            if d in neural:
                return res(f"predictions/{d}/sub-{sub}_vae_frames.h5")
        target = "vae_frames"
    if target not in DECODE_TARGETS:
        raise WorkflowError(
            f"generate.method {METHOD!r} needs decoded {target} latents: add {target!r} to "
            f"decode.targets (or {'structure' if kind == 'first' else 'motion'} to decode.neural); "
            f"found targets {DECODE_TARGETS}"
        )
    return res(f"predictions/ridge/sub-{sub}_{target}.h5")


RIDGE_TARGET = {"caption": "text", "tokens": "text_tokens", "first": "vae", "frames": "vae_frames"}


def decoded_source(sub, kind, source, where):
    """(prediction file, dataset) of decoded input `kind` (caption/tokens/first/frames) from `source`: auto,
    ridge, a decoder of decode.neural, or decoder:dataset (an extra prediction of its file)."""
    if source == "auto":
        if kind in ("first", "frames"):
            return _decoded_latents(sub, kind), "features"
        source = "ridge"
    decoder, _, dataset = source.partition(":")
    if decoder == "cotrain":  # the co-trained head's tokens of the aligned flat maps (rule cotrain_generator)
        if kind != "tokens" or not COTRAIN or dataset:
            raise WorkflowError(
                f"config key '{where}': 'cotrain' gives condition tokens only, with generate.finetune.enabled and "
                f"generate.finetune.cotrain true; found {source!r} for {kind} (cotrain {COTRAIN})"
            )
        return res(f"predictions/cotrain/sub-{sub}_text_tokens.h5"), "tokens"
    if decoder == "ridge":
        target = RIDGE_TARGET[kind]
        if target not in DECODE_TARGETS or dataset:
            raise WorkflowError(
                f"config key '{where}': ridge-decoded {target} is not made: add {target!r} to decode.targets "
                f"(found {DECODE_TARGETS})"
                if not dataset
                else f"config key '{where}': ridge has no dataset {dataset!r}"
            )
        return res(f"predictions/ridge/sub-{sub}_{target}.h5"), "features"
    if decoder not in config["decode"]["neural"]:
        raise WorkflowError(
            f"config key '{where}': expected auto, ridge or a decoder of decode.neural "
            f"{config['decode']['neural']}; found {source!r}"
        )
    entry = decoder_registry.get(decoder)
    dataset = dataset or ("tokens" if kind == "tokens" and "tokens" in entry.extras else "")
    if dataset and dataset not in entry.extras:
        raise WorkflowError(
            f"config key '{where}': decoder {decoder} writes no dataset {dataset!r} (it has {sorted(entry.extras)})"
        )
    return res(f"predictions/{decoder}/sub-{sub}_{entry.target}.h5"), dataset or "features"


def _variant_inputs(sub, method):
    """keyword of generate_chunk -> (file, dataset) of the generation variant evaluated as `method`."""
    name = method[: -len("_shuffled")] if method.endswith("_shuffled") else method
    if name not in VARIANTS:
        raise WorkflowError(
            f"config key 'evaluate.methods': {method!r} is no generation variant (generate.variants: {list(VARIANTS)})"
        )
    return {
        key: decoded_source(sub, kind, VARIANTS[name].get(kind, "auto"), f"generate.variants.{name}.{kind}")
        for key, kind in GENERATION_METHODS[METHOD].decoded.items()
    }


def generate_inputs(wildcards):
    """Inputs of generate_chunk, from its variant (generate.variants) and the method's entry in
    fmrivid/generate/methods.py: decoded inputs, and the demo generator's models, or (diffusers) the token decoder
    + the fMRI for the mean-training-fMRI negative when the tokens are ridge's."""
    sub = wildcards.sub
    chosen = _variant_inputs(sub, wildcards.method)
    files = {key: path for key, (path, _) in chosen.items()}
    if not DIFFUSERS:
        files.update(vae_dir=f"{GENERATOR}/vae", diffusion_dir=f"{GENERATOR}/diffusion")
        return files
    if KEYFRAME_VAE:  # its VAE, when it is the demo generator's (features.vae_model generator)
        files.update(vae_input(wildcards))
    if TOKENS and chosen["text_tokens"][1] == "features":  # ridge tokens: their negative comes from the ridge model
        files.update(
            token_model=res(f"models/ridge/sub-{sub}_text_tokens.safetensors"),
            fmri_path=res(f"fmri/sub-{sub}.h5"),
        )
    if FINETUNE:
        files["pipeline"] = f"{GENERATOR}/cotrained" if COTRAIN else f"{GENERATOR}/finetuned"
    return files


def generate_sources(wildcards):
    """Param of generate_chunk: keyword -> dataset of its prediction file (features unless an extra)."""
    return {key: dataset for key, (_, dataset) in _variant_inputs(wildcards.sub, wildcards.method).items()}


def recon_ids(wildcards):
    """The prediction file whose clip ids (in order) the merged reconstructions must have (image_to_video, with no
    tokens: the decoded first-frame latents)."""
    if DIFFUSERS and not TOKENS:
        return _decoded_latents(wildcards.sub, "first")
    return res(f"predictions/ridge/sub-{wildcards.sub}_{'text_tokens' if DIFFUSERS else 'text'}.h5")


def classifier_input(wildcards):
    """The demo classifier trained in the workflow, when evaluate.frame_classifier is 'demo'."""
    return (
        {"classifier_path": res("models/demo_classifier.safetensors")}
        if config["evaluate"]["frame_classifier"] == "demo"
        else {}
    )


import fmrivid.metrics.stages as _metric_stages

EVAL_METHODS = _metric_stages.eval_methods(config)  # the generation methods evaluated, main first, controls after
COMPARE = _metric_stages.compare_pair(config)  # the pair of methods the qualitative protocol compares


def _extras_asked():
    """Decoder -> extra datasets of its prediction file that a generation variant reads (checked at parse)."""
    asked = {}
    for name, sources in VARIANTS.items():
        if name.endswith("_shuffled") or not name.replace("-", "_").isidentifier():
            raise WorkflowError(
                f"config key 'generate.variants.{name}': expected a name of letters, digits, _ or - that does "
                "not end in _shuffled (the control's suffix)"
            )
        for key, kind in GENERATION_METHODS[METHOD].decoded.items():
            path, dataset = decoded_source(
                SUBJECTS[0], kind, sources.get(kind, "auto"), f"generate.variants.{name}.{kind}"
            )
            if dataset != "features":  # the source names a decoder (decoder or decoder:dataset)
                asked.setdefault(sources[kind].partition(":")[0], set()).add(dataset)
    return asked


EXTRAS_ASKED = _extras_asked()


def finetune_source(wildcards):
    """The training data of finetune_generator (the rule). Wan encodes the training frames with its own 3-D
    VAE, the other generators read the per-frame latents of their own (2-D) VAE."""
    if GENERATION_METHODS[METHOD].generator == "wan":
        return {"frames_path": res("features/frames.h5")}
    return {"vae_frames_path": res("features/vae_frames.h5")}
