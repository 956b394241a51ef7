# grun-cli. `make test` and `make demo` work as the first command on a fresh clone:
# both install into .venv first when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.grun-installed
PYTEST_ARGS ?=

.PHONY: install test lint demo clean

install: $(STAMP)

# pyvene/pyreft pin transformers 4.45 and notebook tooling in their metadata; they work with
# the pinned transformers 5, so they go in on their own line with --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sweep]'
	$(BIN)/python -m pip install --quiet --no-deps pyvene==0.1.8 pyreft==0.1.0
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

# The offline main job: unlearn with NPO + GRUN on the tiny model (built and fine-tuned on
# the synthetic authors on first use, then cached).
demo: install
	$(BIN)/grun unlearn

clean:
	rm -rf outputs multirun dist build .pytest_cache .ruff_cache
