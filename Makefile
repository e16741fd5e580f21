# kfp-llm-rollout: every target sets up what it needs on a fresh machine.
#   make demo   the whole pipeline on this machine (local platform, a real vLLM process)
#   make test   every test tier against real parts (API server, vLLM, llmcompressor, kfp.local)
#   make bench  benchmarks (ratios measured side by side in one run)
# Expensive things (API server build, vLLM/llmcompressor venvs, the tiny model) are cached in
# $(LLM_ROLLOUT_CACHE) and rebuilt only when their inputs change.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export LLM_ROLLOUT_CACHE ?= $(HOME)/.cache/llm-rollout
PYTEST_ARGS ?=

.PHONY: docs help venv test-apiserver serving-env optimize-env browser test-env test test-unit test-fast stress demo compile render bench lint format clean

help:
	@sed -n '1,6p' Makefile

$(VENV)/.stamp: pyproject.toml
	@echo "==> creating $(VENV) (library, kfp, dev tools)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.stamp

test-apiserver:
	@bash scripts/build-test-apiserver.sh

serving-env:
	@bash scripts/make-venv.sh vllm
	@bash scripts/make-tiny-model.sh

optimize-env:
	@bash scripts/make-venv.sh optimize

browser:
	@bash scripts/ensure-browser.sh

test-env: venv test-apiserver serving-env optimize-env browser

test: test-env
	@$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

test-unit: venv
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The inner loop: unit and cluster tiers (no vLLM, no llmcompressor).
test-fast: venv test-apiserver
	@$(PY) -m pytest tests/unit tests/cluster -m "not serving and not optimize" --durations=10 $(PYTEST_ARGS)

# The timing-sensitive tiers three times in a row beside busy processes (what a loaded CI machine does).
stress: venv test-apiserver serving-env
	@bash scripts/stress-tests.sh 3 $$(nproc) tests/unit tests/cluster tests/serving/test_validation.py

demo: venv serving-env optimize-env
	@$(VENV)/bin/llm-rollout run-local --demo

compile: venv
	@$(VENV)/bin/llm-rollout compile --out build/pipelines

render: venv
	@$(VENV)/bin/llm-rollout render --out manifests

bench: test-env
	@$(PY) bench/run_all.py

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

format: venv
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

clean:
	rm -rf build .pytest_cache .ruff_cache

docs: venv
	@$(PY) pipelines/docs.py
