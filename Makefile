# One command to set up and run the assistant (`make demo`), one to set up and test (`make test`).
# Both are idempotent: the setup steps re-run only when pyproject.toml changes.

VENV     ?= .venv
PYTHON   ?= python3
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.mmdialog-installed
PYTEST_ARGS ?=

.PHONY: setup system-deps demo demo-model test lint clean

setup: system-deps $(STAMP)

system-deps:
	@scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[offline,dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/mmdialog serve

# Retrain the shipped demo model from scratch: the synthetic world (about 4 minutes, cached), then
# training (13 minutes on 2 CPU cores with native bf16, 20 in fp32 without it); the result replaces configs/demo_model.
WORLD ?= data/world
demo-model: setup
	$(BIN)/mmdialog synth --out $(WORLD) --seed 0 --scenes 6000
	$(BIN)/mmdialog train --config train/demo train.data=$(WORLD)/train.jsonl \
	    train.eval_data=$(WORLD)/valid.jsonl train.vision_pretraining.scenes=$(WORLD)/scenes.jsonl \
	    train.output_dir=runs/demo
	$(BIN)/python -m mmdialog.ship runs/demo/best configs/demo_model

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
