# Helper functions only (no rules): config validation, dataset layout, paths, code hashes.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

import fmrivid.config
import fmrivid.errors
from fmrivid.io import bids, layouts
from fmrivid.utils import code_hash

CONFIG_FILES = [str(Path(f)) for f in (workflow.overwrite_configfiles or [])]
if not config and not CONFIG_FILES:  # bare `snakemake`: the demo preset, said out loud
    import yaml as _yaml

    CONFIG_FILES = [str(Path(workflow.basedir) / "config/demo.yaml")]
    print(f"fmrivid: no --configfile given: running the demo preset ({CONFIG_FILES[0]})", file=sys.stderr)
    config.update(_yaml.safe_load(open(CONFIG_FILES[0])))

try:
    _validated = fmrivid.config.validate(
        config, fmrivid.config.load_schema(Path(workflow.basedir) / "config/schema/config.schema.yaml")
    )
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
else:
    if not ROOT:
        raise WorkflowError("config key 'dataset.root': expected the folder holding your dataset (dataset.simulate "
                            f"is false); found it unset in {CONFIG_FILES or 'the --config values'}. Start from a "
                            "preset: --configfile config/bids.yaml (edit dataset), or config/demo.yaml for the demo")
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
CHUNK_SIZE = int(config["generate"]["chunk_size"])
CHUNKS = [f"{k:03d}" for k in range(max(1, -(-N_TEST // CHUNK_SIZE)))]  # generation/metrics jobs per subject

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
    return sorted({r[k] for recs in RUN_RECORDS.values() for r in recs
                   for k in ("bold", "sidecar", "events", "confounds") if r[k]})


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


def gt_mem_mb():
    """Base memory of the metric rules that hold the ground-truth side of every test clip (gt_cache, evaluate_chunk).

    Frames (uint8) plus float64 hue and flow fields: ~24 bytes per test pixel, + 2 GB for the models; at least
    4 GB. CC2017 (1,200 test clips x 6 frames x 256^2) asks ~13 GB; the demo 4 GB.
    """
    pixels = N_TEST * int(config["features"]["n_frames"]) * int(config["features"]["size"]) ** 2
    return max(4000, 2000 + -(-pixels * 24 // 10**6))


def final_outputs():
    return [
        res("tables/metrics.tsv"),
        res("tables/summary.tsv"),
        res("report/metrics.png"),
        *([res("report/training_curves.png")] if config["generate"]["method"] == "demo" else []),  # demo generator
        res("report/provenance.yaml"),
        *expand(res("report/sub-{sub}_grid.png"), sub=SUBJECTS),
        *expand(res("report/sub-{sub}_preview.mp4"), sub=SUBJECTS),
        *expand(res("qc/sub-{sub}_selection.png"), sub=SUBJECTS),
        *EVALUATION_OUTPUTS,  # defined in rules/report.smk
        *PREPROCESS_OUTPUTS,  # defined in rules/preprocess.smk (surface projection when enabled)
        *optional_feature_outputs(),
        *([res("report/decoder_curves.png")] if config["decode"]["neural"] else []),
    ]


# ----------------------------------------------------------------------------- features (rules/features.smk)
FEATURES = config["features"]
FEATURE_CODE = ("features", "models.py", "extractor_kinds.py", "io/h5.py", "io/atomic.py", "io/video.py")


def all_event_files():
    """Every run's _events.tsv (clip durations come from the events; CC2017 has none: the table's duration_s)."""
    return sorted({r["events"] for recs in RUN_RECORDS.values() for r in recs if r["events"]})


def captions_input(wildcards):
    """The splits; the frames too when a captioner runs (features.captions.source is not metadata)."""
    files = {"splits": res("splits.tsv")}
    if FEATURES["captions"]["source"] != "metadata":
        files["frames"] = res("features/frames.h5")
    return files


def vae_input(wildcards):
    """The generator's trained VAE when features.vae_model is 'generator'; else nothing (a model spec)."""
    return {"vae": f"{GENERATOR}/vae"} if FEATURES["vae_model"] == "generator" else {}


def vae_spec(wildcards, input):
    return input.vae if FEATURES["vae_model"] == "generator" else FEATURES["vae_model"]


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


# ----------------------------------------------------------------------------- input functions of decode/generate/evaluate
# (kept here: `snakemake --lint` wants functions apart from rules; they read globals set in those files)


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
        raise WorkflowError(f"generate.method {METHOD!r} needs decoded {target} latents: add {target!r} to "
                            f"decode.targets (or {'structure' if kind == 'first' else 'motion'} to decode.neural); "
                            f"found targets {DECODE_TARGETS}")
    return res(f"predictions/ridge/sub-{sub}_{target}.h5")


def generate_inputs(wildcards):
    """Inputs of generate_chunk: the demo generator and decoded caption embeddings, or (diffusers methods) the
    decoded token embeddings, their ridge model + the fMRI (mean-training-fMRI negative), decoded latents."""
    sub = wildcards.sub
    if not DIFFUSERS:
        return {"pred": res(f"predictions/ridge/sub-{sub}_text.h5"), "vae": f"{GENERATOR}/vae",
                "diffusion": f"{GENERATOR}/diffusion"}
    files = {"text_tokens": res(f"predictions/ridge/sub-{sub}_text_tokens.h5"),
             "token_model": res(f"models/ridge/sub-{sub}_text_tokens.safetensors"),
             "fmri": res(f"fmri/sub-{sub}.h5")}
    if METHOD == "structure_motion":
        files.update(first_frame=_decoded_latents(sub, "first"), motion=_decoded_latents(sub, "frames"))
    elif METHOD == "two_stage":
        files.update(vae=_decoded_latents(sub, "first"))
    if FINETUNE:
        files["pipeline"] = f"{GENERATOR}/finetuned"
    return files


def recon_ids(wildcards):
    """The prediction file whose clip ids (in order) the merged reconstructions must have."""
    return res(f"predictions/ridge/sub-{wildcards.sub}_{'text_tokens' if DIFFUSERS else 'text'}.h5")


def classifier_input(wildcards):
    """The demo classifier trained in the workflow, when evaluate.frame_classifier is 'demo'."""
    return {"classifier": res("models/demo_classifier.safetensors")} \
        if config["evaluate"]["frame_classifier"] == "demo" else {}
