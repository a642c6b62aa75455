# derl-gym: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp
# CPU build already on disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel setuptools
	$(PIP) install $(TORCH_PIN)
	$(PIP) install -e ".[all]" "$(TORCH_PIN)"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/derl-gym evolve --preset alfworld-tiny --method derl --backend process --run-dir runs/demo

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PY) benchmarks/bench_expression.py

clean:
	rm -rf $(VENV) runs .pytest_cache
