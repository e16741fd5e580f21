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
# Bytecode caches on even where the environment turns them off (PYTHONDONTWRITEBYTECODE): pytest then
# keeps its assertion-rewritten test modules (tests/**/__pycache__, git-ignored) and each test worker
# collects in ~3 s instead of ~9 s of CPU; Python keys each cached file by its source's mtime and size.
unexport PYTHONDONTWRITEBYTECODE
PYTEST_ARGS ?=

.PHONY: docs help venv test-apiserver test-prometheus serving-env optimize-env browser test-env test test-unit test-fast stress demo compile render images bench lint format clean

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

# The live-analysis tests' real Prometheus (Debian's package, unpacked into the cache).
test-prometheus:
	@bash scripts/build-test-prometheus.sh

serving-env:
	@bash scripts/make-venv.sh vllm
	@bash scripts/make-tiny-model.sh

optimize-env:
	@bash scripts/make-venv.sh optimize

browser:
	@bash scripts/ensure-browser.sh

test-env: venv test-apiserver test-prometheus serving-env optimize-env browser

# The fast tiers (tests/conftest.py --tiers fast: unit and cluster, less their serving/optimize tests)
# mostly wait on the API server, Prometheus and subprocesses, so they run on FAST_WORKERS pytest-xdist
# workers, whole files per worker (a module's servers start once; each worker starts its own API
# server on its own ports, from the cached CRD snapshot: a few seconds); 0 runs them in one process.
# Three on 2 shared cores (issue 30): 4.4 min at load 3-4.6; four took 4.9 min at load 2-7, its
# fourth worker costing ~30 CPU-s of its own.
# make test's first run adds the serving/optimize tests marked `parallel` (their outcome does not depend
# on speed: llmcompressor, vLLM's parser, correctness, quality, faults) to those workers, where they use
# the cores the fast tiers leave idle; its second run takes the rest (comparisons, latency bounds, live
# analysis, the e2e pipelines) one at a time, since those are CPU-sensitive.
FAST_WORKERS ?= 3
WORKERS := -n $(FAST_WORKERS) --dist loadfile
FAST_TIERS := tests/unit tests/cluster --tiers fast $(WORKERS)

# Both runs always; exit status: the first failure, else 0 if either ran tests (5: none selected).
# TESTS=<paths> runs only those, in one process (PYTEST_ARGS adds to either form).
test: test-env
ifneq ($(strip $(TESTS)),)
	@$(PY) -m pytest $(TESTS) --durations=15 $(PYTEST_ARGS)
else
	@$(PY) -m pytest --tiers parallel $(WORKERS) --durations=15 $(PYTEST_ARGS); fast=$$?; \
	echo "==> the speed-sensitive serving and e2e tests, one at a time (parallel run: exit $$fast)"; \
	$(PY) -m pytest --tiers serial --durations=15 $(PYTEST_ARGS); slow=$$?; \
	echo "==> make test: parallel run exit $$fast, serial run exit $$slow"; \
	for rc in $$fast $$slow; do case $$rc in 0|5) ;; *) exit $$rc;; esac; done; \
	test $$fast = 0 -o $$slow = 0 || exit 5
endif

test-unit: venv test-prometheus
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The inner loop: unit and cluster tiers (no vLLM, no llmcompressor), on parallel workers.
test-fast: venv test-apiserver test-prometheus
	@$(PY) -m pytest $(FAST_TIERS) --durations=10 $(PYTEST_ARGS)

# The timing-sensitive tiers three times in a row beside busy processes (what a loaded CI machine does).
stress: venv test-apiserver serving-env
	@bash scripts/stress-tests.sh 3 $$(nproc) tests/unit tests/cluster tests/serving/test_validation.py

demo: venv serving-env optimize-env
	@$(VENV)/bin/llm-rollout run-local --demo

compile: venv
	@$(VENV)/bin/llm-rollout compile --out build/pipelines

render: venv
	@$(VENV)/bin/llm-rollout render --out manifests

# The two images the compiled pipelines reference by default (components/images.py), tagged with
# the package version; IMAGE_REGISTRY=registry.example.com/team to build for your own registry.
# Needs podman or docker (none here: the release workflow .github/workflows/release.yml publishes).
IMAGE_REGISTRY ?= ghcr.io/kfp-llm-rollout
IMAGE_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
ENGINE ?= $(shell command -v podman || command -v docker)
images:
	@test -n "$(ENGINE)" || { echo "make images: needs podman or docker (neither is installed)"; exit 1; }
	$(ENGINE) build -f containers/Containerfile -t $(IMAGE_REGISTRY)/components:$(IMAGE_VERSION) .
	$(ENGINE) build -f containers/Containerfile.optimize -t $(IMAGE_REGISTRY)/optimize:$(IMAGE_VERSION) .

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
