# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first,
# from the lock (requirements/dev.lock: exact versions and hashes of every package), so
# a new release on the registry never changes what a fresh clone gets. `make lock`
# refreshes the lock from pyproject.toml's [dev] extras and constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCKED := $(VENV)/.locked
LOCK := requirements/dev.lock
# `make lock` keeps today's pins where they still satisfy pyproject.toml; UPGRADE=1 moves
# every package to its newest allowed release.
UPGRADE ?=
LOCK_FLAGS := --extra dev -c constraints.txt --universal --python-version 3.11 --generate-hashes
UV_TOOL := .venv-lock/bin/uv

.PHONY: demo test lint bench venv lock clean sample-weights

# A changed lock rebuilds the environment from scratch: what is installed is exactly the
# lock. A changed pyproject.toml only reinstalls neurofm itself, then `pip check` fails if
# it declares a dependency the lock lacks (run `make lock`).
$(LOCKED): $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	touch $(LOCKED)

$(STAMP): $(LOCKED) pyproject.toml
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check || (echo "pyproject.toml and $(LOCK) disagree: run make lock" && false)
	$(PY) -m neurofm.devcheck
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## read the bundled sample recording, print and plot its token grid
	$(PY) -m neurofm demo --out out

test: $(STAMP)  ## lint, then the whole test suite
	$(PY) -m ruff check neurofm tests bench
	NEUROFM_REQUIRE_BASELINES=1 $(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check neurofm tests bench
	$(PY) -m ruff format --check neurofm tests bench

bench: $(STAMP)  ## performance figures (see README)
	$(PY) bench/preprocess.py
	$(PY) bench/encoder.py
	$(PY) bench/fmri.py
	$(PY) bench/dataloader.py
	$(PY) bench/pretrain.py
	$(PY) bench/encode.py
	$(PY) bench/encode_stream.py

# The small checkpoints shipped in the package (eeg-tiny.sample, tokenizer-tiny.sample):
# pretrained on ../shared/data/eeg on a 2-core CPU (times in their model cards)
sample-weights: $(STAMP)  ## retrain and re-ship the sample weights from ../shared/data/eeg
	$(PY) -m neurofm preprocess configs/preprocess/shared_eeg.yaml
	$(PY) -m neurofm pretrain configs/pretrain/eeg_tiny_tokenizer.yaml resume=false
	$(PY) -m neurofm pretrain configs/pretrain/eeg_tiny_codes.yaml resume=false
	$(PY) bench/probes.py --model runs/eeg-tiny-codes/checkpoint --out runs/probes.json
	$(PY) -m neurofm.train.sample

# uv resolves the lock; it lives in its own small venv so that a broken lock can always be
# regenerated without first installing from it.
$(UV_TOOL):
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q uv

lock: $(UV_TOOL)  ## re-resolve requirements/dev.lock (UPGRADE=1: newest allowed releases)
	$(UV_TOOL) pip compile pyproject.toml $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) -o $(LOCK)

clean:
	rm -rf $(VENV) .venv-lock out .pytest_cache
