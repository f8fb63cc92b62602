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

demo: $(INSTALLED)
	$(PYTHON) -m dataset.build_sudoku_dataset --generate --box-shape 2x2 --subsample-size 200 \
		--test-subsample-size 100 --num-aug 4 --output-dir demo/sudoku-4x4 --overwrite
	$(PYTHON) -m dataset.inspect demo/sudoku-4x4 --render demo/sudoku-4x4.png

bench: $(INSTALLED)
	$(PYTHON) -m benchmarks.run
