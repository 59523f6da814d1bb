# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## read the bundled sample recording, print and plot its token grid
	$(PY) -m neurofm demo --out out

test: $(STAMP)  ## lint, then the whole test suite
	$(PY) -m ruff check neurofm tests bench
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check neurofm tests bench
	$(PY) -m ruff format --check neurofm tests bench

bench: $(STAMP)  ## performance figures (see README)
	$(PY) bench/preprocess.py
	$(PY) bench/encoder.py
	$(PY) bench/fmri.py
	$(PY) bench/dataloader.py

clean:
	rm -rf $(VENV) out .pytest_cache
