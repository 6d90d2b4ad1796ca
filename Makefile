# `make demo` and `make test` each set up what they need on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS_VENV := .venv-models
MODELS_STAMP := $(MODELS_VENV)/.installed
DEMO_LIMIT ?= 1200
DEMO_EPOCHS ?= 8
SYSTEM_TOOLS := ffmpeg ffprobe fluidsynth
# The tests also screenshot the Prefect UI with Debian's headless chromium (no browser download), and compile
# a tiny LD_PRELOAD library that widens a start-up race in FluidSynth (tests/test_synthetic.py).
TEST_TOOLS := chromium cc

.PHONY: demo test lint system-deps test-deps apt-install clean-demo

demo: $(STAMP)
	$(BIN)/musictext pipeline --dataset synthetic --limit $(DEMO_LIMIT) --model dsp
	$(BIN)/musictext status
	$(BIN)/musictext train --model dsp --dataset synthetic --run-id demo --epochs $(DEMO_EPOCHS) --freeze-encoder \
	  --lr 3e-3 --eval-every 40 --device cpu
	$(BIN)/musictext evaluate demo-frames demo-pooled --name demo
	$(BIN)/musictext search "a slow solo piano piece in a minor key" --model dsp --k 5

test: $(STAMP) $(MODELS_STAMP) test-deps
	$(BIN)/python -m pytest -q
	$(MODELS_VENV)/bin/python -m pytest -q tests/models

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports  # the layer rules of ARCHITECTURE.md ("Layout"), contracts in pyproject.toml

system-deps:
	@$(MAKE) --no-print-directory apt-install TOOLS="$(SYSTEM_TOOLS)" PACKAGES="ffmpeg fluidsynth"

test-deps:
	@$(MAKE) --no-print-directory apt-install TOOLS="$(TEST_TOOLS)" PACKAGES="chromium gcc libc6-dev"

# Installs PACKAGES when one of TOOLS is not on PATH (as root, or through sudo).
apt-install:
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; \
	  else echo "missing$$missing and no root/sudo: install $(PACKAGES) with your package manager" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(PACKAGES) >/dev/null; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python system-deps
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0  # the CPU wheel; the train extra's torch range then adds nothing
	$(BIN)/pip install -q -e ".[dev,train,export]"
	touch $(STAMP)

# The model embedders get their own environment (torch, transformers < 5), kept out of the default install.
$(MODELS_STAMP): pyproject.toml | system-deps
	test -x $(MODELS_VENV)/bin/python || $(PYTHON) -m venv $(MODELS_VENV)
	$(MODELS_VENV)/bin/pip install -q --upgrade pip
	$(MODELS_VENV)/bin/pip install -q -e ".[dev,models]"
	touch $(MODELS_STAMP)

clean-demo:
	rm -rf data
