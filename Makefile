# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo up test lint type bench faults fmt clean install browser

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,ml]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ohlcv demo

up: $(STAMP)
	$(VENV)/bin/ohlcv up

# Debian's Chromium for the browser tests (an Evidently report opened headless)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }

test: $(STAMP) browser
	$(PY) -m pytest -q -ra -n 3 --dist loadscope

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

type: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench

faults: $(STAMP)
	$(PY) -m pytest -q -ra -m faults tests/faults

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
