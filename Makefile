# amber: every job is one make target. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.DEFAULT_GOAL := help
.PHONY: help venv build demo test test-rust test-python bench lint fmt clean fuzz

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.deps: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.deps ## Create the virtual environment with pinned Python dependencies

build: $(VENV)/.deps ## Build the Rust CLI and the Python extension into the venv
	$(CARGO) build --release --locked -p amber-cli
	mkdir -p build/wheel-data/scripts
	cp target/release/amber build/wheel-data/scripts/amber
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin develop --release --locked --quiet

demo: build ## Train a pipeline, save it with metadata, load it in a fresh process, predict
	$(PY) examples/demo.py

test: build test-rust test-python ## Run every test (Rust and Python)

test-rust: ## Rust tests for the whole workspace
	$(CARGO) test --workspace --release --locked

test-python: build ## Python tests (real scikit-learn models, real files, real processes)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q

bench: build ## Benchmark against pickle, joblib, skops and the machine's limits
	$(PIP) install --quiet -r requirements-bench.txt
	$(PY) bench/run.py --compressed --write-docs

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fuzz: ## Run every fuzz target for FUZZ_SECONDS each (default 60; needs the nightly toolchain)
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} fuzz/run.sh

fmt: ## Format the Rust code
	$(CARGO) fmt --all

clean: ## Remove build outputs and the venv
	rm -rf target build $(VENV)
