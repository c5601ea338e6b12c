# One command to set up and run the assistant (`make demo`), one to set up and test (`make test`).
# Both are idempotent: the setup steps re-run only when pyproject.toml changes.

VENV     ?= .venv
PYTHON   ?= python3
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.mmdialog-installed
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test lint clean

setup: system-deps $(STAMP)

system-deps:
	@scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[offline,dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/mmdialog chat

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
