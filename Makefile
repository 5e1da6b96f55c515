# Two entry points for a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-all install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# stardist is installed only for the real microscopy images + masks its wheel ships
	# (mask Dice on real data); its model code and heavy needs are not used.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt stardist==0.9.2
	touch $(STAMP)

install: $(STAMP)

# The main study on the embedded default data (no downloads, CPU-sized budget).
run: $(STAMP)
	$(PY) studies/syncgan_ratio.py

# The test suite (slow end-to-end runs are excluded; `make test-all` runs them too). The
# `server` tests (a real PostgreSQL + authenticated MLflow server on 127.0.0.1) are included.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) mlruns mlflow.db ray_results .pytest_cache
