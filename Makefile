# Two entry points for a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-all install lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# stardist is installed only for the real microscopy images + masks its wheel ships
	# (mask Dice on real data); its model code and heavy needs are not used.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt stardist==0.9.2
	touch $(STAMP)

install: $(STAMP)

# Formatting and lint (ruff, configured in pyproject.toml): `make test` runs them before pytest.
# `.venv/bin/ruff format . && .venv/bin/ruff check --fix .` applies them.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# The main study on the embedded default data (no downloads, CPU-sized budget).
run: $(STAMP)
	$(PY) studies/syncgan_ratio.py

# The MLflow UI test (tests/test_mlflow_ui.py) drives Debian's Chromium through Playwright, whose
# own browser download cannot work offline: the package is installed here when it is missing
# (apt-get as root, or through passwordless sudo), once per machine.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "Chromium is missing for the MLflow UI test: install Debian's package (apt-get install chromium)" >&2; exit 1; fi; \
	echo "installing Debian's chromium (for the MLflow UI test)"; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null

# The test suite (slow end-to-end runs are excluded; `make test-all` runs them too: the fault
# tests, the baselines study end to end, the longest smoke runs, the study on a two-node cluster). The `server` tests (a real
# PostgreSQL + authenticated MLflow server on 127.0.0.1) and the MLflow UI test in headless
# Chromium are included.
test: $(STAMP) $(CHROMIUM) lint
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) mlruns mlflow.db ray_results .pytest_cache
