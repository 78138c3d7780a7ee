"""Benchmarks that cannot rot: the GPU suite's CPU smoke run, and every cheap benchmark at its smallest size.

Each benchmark runs as a user runs it (a fresh process from the repository root, the .venv's python first on
PATH); only its exit status and a few of its outputs are checked, not its timings.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# benchmarks/<file>: arguments of its smallest run (each < 20 s on one core of the 2-core CI machine).
SMOKE_ARGS = {
    "ridge.py": ["--scale", "smoke"],
    "frames_stream.py": ["--scale", "smoke"],
    "metrics_permutation.py": ["--clips", "4", "--frames", "2", "--size", "16", "--perm", "5"],
    "eval_chunks.py": ["--clips", "5", "--frames", "2", "--size", "32", "--chunk", "2", "--perm", "3",
                       "--repeat", "1"],
    "features.py": ["--clips", "2", "--frames", "2", "--size", "32", "--batch-size", "2", "--repeats", "1",
                    "--skip-slow", "--threads", "1"],
    "demo_classifier.py": ["--seeds", "1"],
    "preprocess.py": ["--volumes", "10", "--repeats", "1"],
    "align_encoder.py": ["--repeats", "1", "--threads", "1"],
    "mind_animator.py": ["--repeats", "1", "--steps", "2", "--threads", "1"],
    "ssim.py": ["--sizes", "32", "--frames", "2"],
}
# Run elsewhere, or too slow here: why.
NOT_RUN = {
    "gpu_suite.py": "run by test_gpu_suite_cpu_smoke through gpu_suite.sh",
    "generate.py": "its main() and time_backend() run in the GPU suite's generation and backends sections "
                   "(test_gpu_suite_cpu_smoke)",
    "dag.py": "Snakemake dry runs at full CC2017 scale: ~30 s at its smallest scale",
    "full_scale.py": "run by test_full_scale_smoke (its fixture needs a folder)",
    "scaling.py": "run by test_scaling_fits_planted_exponents (it reads full_scale.py's JSON files)",
}


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    env.pop("FMRIVID_WHEELS", None)  # the current environment, never the carried wheels
    return env


def _run(cmd, timeout):
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_every_benchmark_is_smoke_tested_or_excused():
    files = {p.name for p in (REPO / "benchmarks").glob("*.py")}
    assert files == set(SMOKE_ARGS) | set(NOT_RUN), \
        "add each new benchmark to SMOKE_ARGS (its smallest run) or to NOT_RUN (why not)"


@pytest.mark.parametrize("name", sorted(SMOKE_ARGS))
def test_benchmark_smallest_scale(name):
    _run([sys.executable, str(REPO / "benchmarks" / name)] + SMOKE_ARGS[name], timeout=180)


def test_gpu_suite_cpu_smoke(tmp_path):
    out = tmp_path / "suite"
    proc = _run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--cpu-smoke", "--out", str(out)],
                timeout=300)
    doc = json.loads((out / "gpu_suite.json").read_text())
    assert doc["ok"] is True and doc["failed"] == [], proc.stdout[-3000:]
    assert doc["mode"] == "cpu-smoke"
    assert list(doc["sections"]) == ["header", "ridge", "features", "generation", "backends"]
    for name, section in doc["sections"].items():
        assert section["ok"] and section["error"] is None, (name, section["traceback"])
        assert _number(section["seconds"])

    header = doc["sections"]["header"]["record"]
    assert header["torch"] and header["date_utc"] and header["device"] == "cpu"

    ridge = doc["sections"]["ridge"]["record"]["results"]
    assert set(ridge) == {"fmrivid_gpu", "fmrivid_cpu", "himalaya_gpu"}
    for name, row in ridge.items():
        assert _number(row["seconds"]) and row["seconds"] > 0, name
        assert _number(row["r2_median"]), name
    for name in ("fmrivid_cpu", "himalaya_gpu"):
        assert ridge[name]["vs"] == "fmrivid_gpu"
        assert ridge[name]["max_abs_pred_diff"] < 1e-2 * ridge[name]["pred_abs_max"], ridge[name]
        assert ridge[name]["alphas_agree"] >= 0.75, ridge[name]

    features = doc["sections"]["features"]["record"]["results"]
    assert set(features) == {"clip_vit_l14_image", "vae_sd15_encoder", "wav2vec2_base"}
    for name, row in features.items():
        for key in ("clips_per_s", "items_per_s", "peak_mib", "seconds"):
            assert _number(row[key]) and row[key] > 0, (name, key, row[key])

    generation = doc["sections"]["generation"]["record"]
    assert {"naive", "tuned"} <= set(generation["results"])
    for name, row in generation["results"].items():
        assert _number(row["s_per_clip"]) and row["s_per_clip"] > 0, name
        assert _number(row["peak_mib"]), name
    assert _number(generation["cc2017_test_gpu_hours_tuned"]) and _number(generation["speedup_tuned_vs_naive"])

    backends = doc["sections"]["backends"]["record"]["results"]
    audio_rows = {"audioldm2", "audioldm"}
    assert set(backends) == {"animatediff", "wan", "svd"} | audio_rows
    for name, row in backends.items():
        assert row["ok"] and row["exit_code"] == 0 and row["phase"] == "done", (name, row)
        for key in ("s_per_clip_measured", "s_per_clip_extrapolated", "denoise_s_per_step_per_clip", "peak_mib",
                    "cc2017_test_gpu_hours_extrapolated", "build_seconds", "process_seconds"):
            assert _number(row[key]) and row[key] > 0, (name, key, row[key])
        settings = row["settings"]
        if name in audio_rows:
            # one full batch of captions went through fmrivid.stimuli.audio.synthesize: one waveform of a CC2017
            # clip's 2 s per caption at the vocoder's rate, with the features.audio defaults but the batch size
            assert row["generation_function"] == "fmrivid.stimuli.audio.synthesize"
            assert settings["pipeline"] == name and settings["sampling_rate"] == 16000
            assert settings["duration"] == 2.0 and settings["dtype"] == "float32"
            assert (settings["steps"], settings["guidance_scale"], settings["exact_cpu"]) == (10, 2.5, True)
            assert row["shape"] == [settings["batch_size"], 32000]
            assert 0 < row["other_s_per_clip"]  # text encoding, VAE decoding and the vocoder
        else:
            assert row["generation_function"] == f"fmrivid.generate.{name}.generate"
            # one full batch at the configured geometry went through the backend's generate()
            geometry = [settings[k] for k in ("batch_size", "num_frames", "height", "width")]
            assert row["shape"] == geometry + [3]
        assert row["clips"] == settings["batch_size"] and 1 <= row["steps_timed"] <= 2
        assert row["extrapolated_to_steps"] == row["default_steps"] == settings["steps"]
        # the denoiser ran at least once per clip and step, inside the timed run
        assert row["denoiser_calls"] >= row["steps_timed"] and 0 < row["denoise_seconds"] <= row["seconds"]
        # extrapolation recomputed from its parts
        per_clip = row["other_s_per_clip"] + row["default_steps"] * row["denoise_s_per_step_per_clip"]
        assert row["s_per_clip_extrapolated"] == pytest.approx(per_clip, rel=1e-9)
        assert row["denoise_s_per_step_per_clip"] == pytest.approx(
            row["denoise_seconds"] / row["clips"] / row["steps_timed"], rel=1e-9)
        assert row["cc2017_test_gpu_hours_extrapolated"] == pytest.approx(row["s_per_clip_extrapolated"] / 3, rel=1e-9)
        assert row["process_seconds"] < row["cap_s"]

    rows = (out / "gpu_suite.tsv").read_text().splitlines()
    assert rows[0] == "section\tname\tmetric\tvalue\tunit"
    assert {r.split("\t")[0] for r in rows[1:]} == {"header", "ridge", "features", "generation", "backends"}
    extrapolated = {tuple(r.split("\t")[1:3]) for r in rows if r.startswith("backends\t") and "extrapolated" in r}
    assert {n for n, _ in extrapolated} == set(backends)
    assert {m for _, m in extrapolated} >= {f"s_per_clip_{backends[n]['default_steps']}_steps_extrapolated"
                                            for n in backends}


def _gpu_suite_module():
    spec = importlib.util.spec_from_file_location("gpu_suite_under_test", REPO / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generate_module():
    spec = importlib.util.spec_from_file_location("generate_under_test", REPO / "benchmarks" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_audio_backends_real_size_architectures():
    """The audio rows' real-size pipelines (benchmarks/generate.py), built on the meta device (no memory, no
    weights): the published component configs and sizes of cvssp/audioldm2 and cvssp/audioldm-s-full-v2."""
    import torch

    bg = _generate_module()
    assert set(bg.AUDIO_BACKENDS) <= set(bg.BACKENDS)
    cfg = bg.audio_real_configs("audioldm2")
    unet = cfg["unet"]
    # cvssp/audioldm2 unet/config.json
    assert unet["block_out_channels"] == (128, 256, 384, 640) and unet["in_channels"] == 8
    assert [list(c) for c in unet["cross_attention_dim"]] == [[None, 768, 1024]] * 4
    assert unet["down_block_types"][0] == "DownBlock2D" and unet["layers_per_block"] == 2
    t5, gpt2, clap = cfg["text_encoder_2"], cfg["language_model"], cfg["text_encoder"]
    # google/flan-t5-large, gpt2, laion/clap-htsat-unfused (text tower; the audio tower as AudioLDM 2 updates it)
    assert (t5.d_model, t5.d_ff, t5.num_layers, t5.num_heads, t5.vocab_size) == (1024, 2816, 24, 16, 32128)
    assert t5.is_gated_act and (gpt2.n_embd, gpt2.n_layer, gpt2.n_head, gpt2.vocab_size) == (768, 12, 12, 50257)
    text = clap.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size, text.max_position_embeddings,
            clap.projection_dim) == (768, 12, 50265, 514, 512)
    assert clap.audio_config.hidden_size == 1024 and list(clap.audio_config.depths) == [2, 2, 12, 2]
    assert cfg["projection_model"] == {"text_encoder_dim": 512, "text_encoder_1_dim": 1024, "langauge_model_dim": 768}
    vocoder = cfg["vocoder"]  # 10 ms hop at 16 kHz from 64 mel bins
    assert (math.prod(vocoder.upsample_rates), vocoder.sampling_rate, vocoder.model_in_dim) == (160, 16000, 64)
    old = bg.audio_real_configs("audioldm")
    # cvssp/audioldm-s-full-v2 unet/config.json: self-attention only, the CLAP embedding as a FiLM class embedding
    assert old["unet"]["cross_attention_dim"] == old["unet"]["block_out_channels"] == (128, 256, 384, 640)
    assert old["unet"]["projection_class_embeddings_input_dim"] == old["text_encoder"].projection_dim == 512
    assert old["vae"]["latent_channels"] == cfg["vae"]["latent_channels"] == 8

    with torch.device("meta"):
        pipes = {name: bg._audio_real_pipeline(name) for name in bg.AUDIO_BACKENDS}
    params = {name: bg._params_m(pipe) for name, pipe in pipes.items()}
    new = params["audioldm2"]
    # cvssp/audioldm2 model card: UNet 350M, 1.1B in all; cvssp/audioldm-s-full-v2 model card (Table 1): 421M
    assert 340 < new["unet"] < 360 and 1050 < sum(new.values()) < 1150, new
    assert 415 < sum(params["audioldm"].values()) < 427, params["audioldm"]
    # the flan-t5-large encoder with its 32,128 x 1024 embedding table; GPT-2 base
    assert new["text_encoder_2"] == pytest.approx(341.2, abs=0.5)
    assert new["language_model"] == pytest.approx(124.4, abs=0.5)
    assert type(pipes["audioldm2"].unet).__name__ == "AudioLDM2UNet2DConditionModel"
    assert pipes["audioldm2"].language_model.config.max_new_tokens == 8

    # generated tokenizers: the real maximum lengths, each caption word one token, every id a row of the real table
    pipe = pipes["audioldm2"]
    assert pipe.tokenizer.model_max_length == 512 and pipe.tokenizer_2.model_max_length == 128
    caption = bg.AUDIO_CAPTIONS[0]
    clap_ids = pipe.tokenizer([caption]).input_ids[0]
    t5_ids = pipe.tokenizer_2([caption]).input_ids[0]
    assert len(clap_ids) == len(caption.split()) + 2 and len(t5_ids) == len(caption.split()) + 1
    assert max(clap_ids) < text.vocab_size and max(t5_ids) < t5.vocab_size
    assert pipes["audioldm"].tokenizer.model_max_length == 512


def test_gpu_suite_backend_row_failures():
    """A backend killed at its cap, or failing, gives an error and no TSV rows; what it measured is kept."""
    suite = _gpu_suite_module()
    partial = {"backend": "wan", "phase": "timed", "build_seconds": 12.5, "steps_timed": 3}
    entry, rows, error = suite._backend_entry(partial, cap=120.0, wall=120.0, rc=None)
    assert error == "killed at its cap of 120 s (phase timed)" and rows == [] and not entry["ok"]
    assert entry["build_seconds"] == 12.5 and entry["exit_code"] is None
    failed = {"backend": "svd", "phase": "build", "error": "OutOfMemoryError: CUDA out of memory",
              "traceback": "Traceback ..."}
    entry, rows, error = suite._backend_entry(failed, cap=110.0, wall=3.0, rc=1)
    assert error == "OutOfMemoryError: CUDA out of memory" and rows == [] and "traceback" not in entry
    entry, rows, error = suite._backend_entry({"backend": "svd"}, cap=110.0, wall=1.0, rc=2)
    assert error == "exit code 2 in phase start-up"


def test_full_scale_smoke(tmp_path):
    """benchmarks/full_scale.py --smoke: a row per measured rule with finite time, peak RSS and declared
    resources, every planted-design sample through preprocessing, the selection scored against the planted set."""
    _run([sys.executable, str(REPO / "benchmarks" / "full_scale.py"), "--smoke", "--root", str(tmp_path)],
         timeout=420)
    doc = json.loads((tmp_path / "full_scale.json").read_text())
    rows = {r["rule"]: r for r in doc["rules"]}
    assert {"preprocess", "frames", "image_features", "decode", "gt_cache", "evaluate_chunk"} <= set(rows)
    assert not {"generate_chunk", "merge_recon", "all"} & set(rows)  # the stand-in replaces generation
    for rule, row in rows.items():
        for key in ("wall_s", "peak_rss_mb", "mem_mb", "runtime_min"):
            assert _number(row[key]) and row[key] > 0, (rule, key, row[key])
    assert rows["decode"]["jobs"] == 4  # every decode target (config/cc2017.yaml: text, image, vae, text_tokens)
    rec = doc["recovery"]
    assert (rec["train_samples"], rec["test_samples"]) == (rec["train_samples_expected"],
                                                           rec["test_samples_expected"]) == (480, 240)
    assert 0 < rec["selected"] and 0 <= rec["precision"] <= 1 and 0 <= rec["recall"] <= 1
    assert rec["precision"] > 0.9  # planted voxels rank first even when none passes Bonferroni (2 segments)
    tsv = (tmp_path / "full_scale.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:3] == ["rule", "jobs", "wall_s"] and len(tsv) == len(rows) + 1


def test_scaling_fits_planted_exponents(tmp_path):
    """benchmarks/scaling.py on full_scale.json files with planted costs: a linear rule gets time exponent 1, a
    quadratic one 2 (and is listed as super-linear), a fixed-memory rule memory exponent 0; the plot is written."""
    paths = []
    for clips in (1380, 2760, 5520):
        rows = [{"rule": "linear", "wall_s": 0.01 * clips, "peak_rss_mb": 500.0, "mem_mb": 2000, "runtime_min": 30},
                {"rule": "quadratic", "wall_s": 1e-5 * clips ** 2, "peak_rss_mb": 0.1 * clips, "mem_mb": 4000,
                 "runtime_min": 60}]
        paths.append(tmp_path / f"run{clips}.json")
        paths[-1].write_text(json.dumps({"clips": clips, "rules": rows}))
    proc = _run([sys.executable, str(REPO / "benchmarks" / "scaling.py"), *map(str, paths), "--out",
                 str(tmp_path / "out")], timeout=120)
    table = {line.split("\t")[0]: line.split("\t") for line in
             (tmp_path / "out" / "scaling.tsv").read_text().splitlines()}
    cols = table.pop("rule")
    time_b, mem_b = cols.index("time_exponent"), cols.index("mem_exponent")
    assert float(table["linear"][time_b]) == pytest.approx(1.0, abs=1e-6)
    assert float(table["linear"][mem_b]) == pytest.approx(0.0, abs=1e-6)
    assert float(table["quadratic"][time_b]) == pytest.approx(2.0, abs=1e-6)
    assert float(table["quadratic"][mem_b]) == pytest.approx(1.0, abs=1e-6)
    assert "super-linear in clips (time exponent > 1.15): quadratic" in proc.stdout
    assert (tmp_path / "out" / "scaling.png").stat().st_size > 10_000
