# perflab: `make report` and `make test` set everything up themselves on a machine with
# only python3 (>= 3.11) and make (and a C compiler for the line index, optional). The venv is
# rebuilt when pyproject.toml, setup.py or the C source changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= dev
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_ROOT_USER_ACTION := ignore

.PHONY: report test system-deps lint unit nbval bench lab clean

# setup.py and the C source too: pip compiles perflab/jsonl/_lineindex.c into the package.
$(STAMP): pyproject.toml setup.py perflab/jsonl/_lineindex.c
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "perflab needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) -V 2>&1)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

## report: run every notebook (quick profile) into reports/<run>/ and print where it is
report: $(STAMP)
	$(BIN)/perflab report --profile quick

## test: lint, unit and integration tests, then nbval over every notebook
test: system-deps lint unit nbval

# Debian's prometheus and chromium, for the live-metrics and report-page tests (as root).
system-deps:
	@sh .ci/system-deps

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two workers (a test file stays on one), then the tests that time a real server, alone.
unit: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -m "not exclusive"
	$(BIN)/pytest -m exclusive

# Two notebooks at a time, each in its own kernel with its cells in order (nbval's
# --dist loadscope); their figures are not checked here, only that every cell runs.
nbval: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadscope --nbval-lax notebooks/

## bench: perflab against its baselines and peers, side by side (median [min-max])
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/concurrency.py
	$(BIN)/python benchmarks/io.py
	$(BIN)/python benchmarks/profiler.py
	$(BIN)/python benchmarks/cluster.py

## lab: JupyterLab on notebooks/ with the project's kernel
lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,lab]'
	$(BIN)/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 \
		$(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info perflab/jsonl/*.so
