# fmrivid: two commands a user needs.
#   make demo   create .venv, install pinned dependencies, run the demo DAG, write results/report.zip
#   make test   create .venv, install pinned dependencies, run the test suite
#   make rehearse   every dataset preset's whole DAG on fixtures in the real layouts, tiny models (REHEARSE_DIR)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
CONFIG ?= config/demo.yaml

.PHONY: install demo report test dry-run lint clean rehearse

# --no-compile: modules are byte-compiled when first imported (~15 s once for what the workflow imports), not
# all files of the wheels up front (the install takes ~1 min instead of ~2 from local wheels). Python must then
# be allowed to write its bytecode cache, or every job process recompiles torch & co. (measured: +4 min of tests).
unexport PYTHONDONTWRITEBYTECODE

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --report results/report.zip
	@echo "report: results/report.zip"

report: install
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --report results/report.zip

dry-run: install
	$(BIN)/snakemake -n --configfile $(CONFIG)

lint: install
	$(BIN)/snakemake --lint --configfile $(CONFIG)

test: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup --durations=30 tests

rehearse: install
	$(BIN)/python -m fmrivid.rehearse $(REHEARSE_DIR) --cores $(CORES)

clean:
	rm -rf results/* .snakemake
