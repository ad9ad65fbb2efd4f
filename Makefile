# `make run` serves SIT on http://127.0.0.1:8000; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian's chromium, for the browser test of /docs (never Playwright's own download).
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint format bench clean

run: $(VENV)/.installed
	$(BIN)/flask db upgrade
	$(BIN)/flask sit first-user
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# On every core (pytest-xdist): each test has its own database, folders and ports.
test: $(VENV)/.installed-dev $(CHROMIUM)
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Measures SIT beside a bare WSGI app, a DRF peer and the seed's stack (DRF + Celery on Redis);
# writes bench/RESULTS.md (about 12 min). ARGS="--against REF" runs SIT at git ref REF beside it.
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py $(ARGS)

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[postgres]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench,postgres]'
	touch $@

$(CHROMIUM):
	apt-get update && apt-get install -y --no-install-recommends chromium

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
