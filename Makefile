# derl-gym: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed-stamp
LOCK := requirements.lock
# uv does not read pip's config: hand it the same local wheel folders and indexes (the CPU torch on disk).
UV_INDEX = $(shell $(PYTHON) tools/pip_index_args.py) --index-strategy unsafe-best-match
# The platform the lock is resolved for (the supported Python on Linux x86-64).
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28

.PHONY: setup lock demo test test-all bench clean

setup: $(STAMP)

# Installs exactly the versions in $(LOCK): with uv when it can be had (fast), otherwise with plain pip.
$(STAMP): $(LOCK) setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "uv==$(UV_VERSION)" || echo "uv unavailable: installing with pip"
	if [ -x $(UV) ]; then \
	  $(UV) pip sync --python $(PY) $(UV_INDEX) $(LOCK) && \
	  $(UV) pip install --python $(PY) --no-deps -e . ; \
	else \
	  $(PIP) install -r $(LOCK) && $(PIP) install --no-deps -e . ; \
	fi
	touch $(STAMP)

# Re-resolve the lock from setup.cfg's ranges (run after changing a dependency in setup.cfg).
lock:
	test -x $(UV) || { test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PIP) install -q "uv==$(UV_VERSION)"; }
	$(UV) pip compile setup.cfg --extra all -c tools/lock-constraints.txt $(LOCK_TARGET) $(UV_INDEX) \
	  --no-emit-find-links --no-emit-index-url --upgrade -o $(LOCK)

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
