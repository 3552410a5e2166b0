# stylegan-rlo: `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow demo bench lint clean

setup: $(STAMP)

# Re-runs only when the package metadata changes (idempotent).
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,logreg]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) scripts/bench.py --res 32 --cbase 2048 --cmax 128 --batch 8 --map 2 --iters 16 --warmup 2 --device cpu --threads 2 --loss logistic
	$(PY) scripts/bench.py --res 32 --cbase 2048 --cmax 128 --batch 8 --map 2 --iters 16 --warmup 2 --device cpu --threads 2 --loss rooted --k 8

clean:
	rm -rf $(VENV) build *.egg-info demo-out
