# fewshot-gen — two commands do everything on a fresh machine:
#   make run    set up, then run every notebook at the lab profile  → runs/<stamp>/{results.json,report.md,report.html}
#   make test   set up, then run every test (unit, runner, notebooks at the smoke profile)
#
# Set-up: uses the active virtualenv if there is one, else creates .venv/ here. On this project's build
# machine the pins below install from a local package cache; elsewhere override TORCH_PINS (e.g. empty, to
# keep the CUDA/MPS build you already have): `make test TORCH_PINS=`.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PY := $(VENV)/bin/python
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.fewshot-installed
PROFILE ?= lab
THREADS ?= 2
# Only pip's "is ignored" warnings about this machine's optional local indexes are filtered out.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

export OMP_NUM_THREADS ?= $(THREADS)
export MKL_NUM_THREADS ?= $(THREADS)

.PHONY: help setup run test lint test-unit test-notebooks notebooks benchmarks lab explore clean

help:
	@echo "make run    - set up and run all notebooks at the lab profile (runs/<stamp>/)"
	@echo "make test   - set up and run every test"
	@echo "make notebooks - re-execute the notebooks in place at the lab profile (commit their outputs)"
	@echo "make benchmarks - print speed figures (run by hand)"
	@echo "make lab    - open the notebooks in JupyterLab (127.0.0.1, token printed)"
	@echo "make explore - serve the latent explorer (notebook 08) as a Voila web app on 127.0.0.1"

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@echo "Setting up $(VENV) (first time: about 1-2 minutes) …"
	@$(PY) -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	@$(PY) -m pip install -q $(TORCH_PINS) -e ".[dev,build]" 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import fewshot_lib, torch, papermill, nbval; print('fewshot_lib ready, torch', torch.__version__)"
	@touch $(STAMP)

setup: $(STAMP)

# Two notebooks at a time, one CPU thread each (the package's thread policy): both cores of a laptop busy.
JOBS ?= 2

run: $(STAMP)
	FEWSHOT_PROGRESS=plain $(VENV)/bin/fewshot run --profile $(PROFILE) --jobs $(JOBS)

lint: $(STAMP)
	$(VENV)/bin/ruff check fewshot_lib scripts benchmarks tests notebooks
	$(VENV)/bin/ruff format --check fewshot_lib scripts benchmarks tests notebooks

# Tests run on every core (up to 4) with pytest-xdist, one CPU thread per worker. `--dist loadscope` keeps each
# file on one worker — a notebook's cells share one kernel and must run in order; the long notebooks are handed
# out first — and splits only files with test classes: test_full_profile.py has one class per notebook, so its
# ten minute-long runs spread over the workers. TEST_JOBS=0 runs in one process.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
XDIST = $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadscope)
TEST_ENV = FEWSHOT_PROFILE=smoke FEWSHOT_PROGRESS=plain OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
NBVAL = --nbval-lax --nbval-current-env --nbval-cell-timeout=600 --nbval-sanitize-with $(CURDIR)/tests/nbval_sanitize.cfg

test: $(STAMP) lint
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider $(XDIST) $(NBVAL) notebooks tests

test-unit: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider $(XDIST) tests

test-notebooks: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider $(XDIST) $(NBVAL) notebooks

notebooks: $(STAMP)
	cd notebooks && for nb in [0-9][0-9]_*.ipynb; do \
		echo "== $$nb"; FEWSHOT_PROFILE=$(PROFILE) FEWSHOT_PROGRESS=plain $(VENV)/bin/papermill -k python3 \
			--no-progress-bar "$$nb" "$$nb"; done

benchmarks: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

# Interactive use. Both bind to 127.0.0.1 and need the printed token; see the README before serving a class.
LAB_PORT ?= 8888
EXPLORE_PORT ?= 8866

lab: $(STAMP)
	@TOKEN=$$($(PY) -c "import secrets; print(secrets.token_urlsafe(24))"); \
	echo "JupyterLab on notebooks/: http://127.0.0.1:$(LAB_PORT)/lab?token=$$TOKEN  (Ctrl-C stops it)"; \
	FEWSHOT_PROGRESS=widget $(VENV)/bin/jupyter lab --no-browser --ServerApp.ip=127.0.0.1 \
		--ServerApp.port=$(LAB_PORT) --ServerApp.root_dir=notebooks --IdentityProvider.token=$$TOKEN \
		--MappingKernelManager.cull_idle_timeout=7200 $$([ "$$(id -u)" = 0 ] && echo --allow-root)

explore: $(STAMP)
	$(PY) -m fewshot_lib.explore.serve --port $(EXPLORE_PORT)

clean:
	rm -rf runs .pytest_cache
