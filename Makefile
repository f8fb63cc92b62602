# Two commands do everything on a fresh machine: `make test` and `make demo`.
PYTHON_SYSTEM ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.requirements-installed

.PHONY: setup test demo bench

setup: $(INSTALLED)

# Re-installs only when requirements.txt changes, so repeated runs are fast.
$(INSTALLED): requirements.txt
	test -x $(PYTHON) || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

test: $(INSTALLED)
	$(PYTHON) -m pytest

# TRM and DFM trained, evaluated and compared on CPU; the report goes to demo/report/report.md.
# DATA=DIR runs the same pipeline on an existing dataset directory instead of generated 4x4 Sudoku.
demo: $(INSTALLED)
	$(PYTHON) -m experiments.demo $(if $(DATA),--data $(DATA))

bench: $(INSTALLED)
	$(PYTHON) -m benchmarks.run
