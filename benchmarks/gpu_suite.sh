#!/usr/bin/env bash
# The GPU benchmark suite in one command: ridge, features, generation, backends -> DIR/gpu_suite.json + .tsv
#
#   bash benchmarks/gpu_suite.sh [--out DIR] [--only ridge features generation backends]   # one H200: ~5-9 min
#   bash benchmarks/gpu_suite.sh --cpu-smoke --out DIR                            # CPU, tiny sizes, ~1.5 min
#
# Runs from the repository checkout on a bare GPU machine without network: packages that machine lacks
# (diffusers, himalaya) travel as wheels in .whl/ (git-ignored), made on a machine with PyPI access by
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1 himalaya==0.4.11          # the versions of requirements.lock (6.5 MB)
# They are installed into /tmp/site (FMRIVID_SITE) when python3 cannot import diffusers or himalaya, or
# always with FMRIVID_WHEELS=1; otherwise the current environment is used as it is (the .venv: make install).
# PYTHON picks the interpreter (default: python3). A relative --out is relative to the repository root.
# Where the checkout has no .git (a copied working tree), FMRIVID_COMMIT=<sha> names the commit in the header.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

missing=$("$PY" -c '
import importlib.util
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:  # a broken install counts as missing
        return False
print(" ".join(m for m in ("diffusers", "himalaya") if not found(m)))')
wheels=(.whl/*.whl)
if [ -e "${wheels[0]}" ] && { [ -n "$missing" ] || [ "${FMRIVID_WHEELS:-0}" = 1 ]; }; then
    site=${FMRIVID_SITE:-/tmp/site}
    echo "gpu_suite.sh: installing ${#wheels[@]} wheels of .whl/ into $site (missing here: ${missing:-none})"
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$site" "${wheels[@]}"
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export FMRIVID_WHEELS_INSTALLED="${wheels[*]#.whl/}"
else
    if [ -n "$missing" ]; then
        echo "gpu_suite.sh: no wheels in .whl/ and $PY lacks: $missing (the sections needing them will fail)"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    unset FMRIVID_WHEELS_INSTALLED
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
exec "$PY" benchmarks/gpu_suite.py "$@"
