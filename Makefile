# `make demo` and `make test` work on a fresh machine: both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test test-unit test-wheel lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,openvino,station,cluster,demo,dev,bench]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/edgead demo

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check edgead tests benchmarks
	$(VENV)/bin/ruff format --check edgead tests benchmarks
	$(VENV)/bin/mypy edgead/ops edgead/bundle.py edgead/bundle_checks.py edgead/signing.py \
		edgead/errors.py edgead/_io.py edgead/config.py edgead/runtime edgead/devices \
		edgead/data edgead/export edgead/evaluation.py edgead/calibrate.py edgead/runrecord.py \
		edgead/rundir.py

# The device install, tested: wheel -> fresh venv with only the runtime extras -> no torch -> scores.
test-wheel: install
	EDGEAD_WHEEL_TEST=1 $(PY) -m pytest -q tests/install

test-unit: install
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
