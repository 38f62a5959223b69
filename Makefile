# Set-up on a fresh machine: `make demo` and `make test` each create .venv, install torch first
# (TORCH_SPEC, so the CPU wheel is used here; GPU users override it), then the project, then run.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format clean checkpoints chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m interp.demo

test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || $(MAKE) --no-print-directory chromium || \
	  echo "!!! chromium is missing and could not be installed: the HTML report rendering test will be SKIPPED !!!"
	$(BIN)/python -m pytest -q

# Headless Chromium (Debian) renders the HTML report in tests/test_report_render.py.
chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

lint: $(STAMP)
	$(BIN)/ruff check interp tests benchmarks
	$(BIN)/ruff format --check interp tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format interp tests benchmarks
	$(BIN)/ruff check --fix interp tests benchmarks

# Re-train the shipped checkpoints (commands also listed in checkpoints/README.md).
checkpoints: $(STAMP)
	bash checkpoints/train_all.sh

clean:
	rm -rf $(VENV) .pytest_cache
