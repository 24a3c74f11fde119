# `make run` and `make test` work on a fresh machine that has only Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip --no-compile: pip would compile all 18 thousand files it installs, one after the other (about 45 CPU-seconds of
# the install); the runs and tests import about a quarter of them, and Python compiles each on its first import and
# keeps the bytecode (__pycache__), also where the shell sets PYTHONDONTWRITEBYTECODE (results/suite-time.md).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test check install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The default search on mnist5k: the ladder (rtsearch.train --method ladder, the default method, which wins on MACs but not on the clock: README
# "On the clock and on disk"; dense pre-training once, then 8 trials that share its ten rungs (the first makes them) and
# train their re-run agent for up to 40 PPO iterations, TPE + ASHA, MLflow in ./mlruns.db, then the
# fixed-ratio static-only baseline it is set against) at a MACs budget of 0.08, where pruning costs
# accuracy and methods differ (at 0.5 every method is within noise of the dense model on these digits).
# A new sweep name per call so `make run` can be repeated; it lands in runs/sweeps/<name>/ (ignored by git: the
# committed evidence is under results/, indexed by results/README.md).
RUN_NAME ?= mnist5k-small-b0.08-ladder-$(shell date +%Y%m%d-%H%M%S)
run: $(STAMP)
	$(PY) -m rtsearch.tune --method ladder --budget 0.08 --name $(RUN_NAME)

# Two tiers, both in two workers on this 2-core machine (three were slower: results/suite-time.md). Each worker is
# handed one test at a time, in the order tests/conftest.py sets (the longest first), so neither is left with a
# queue of long sweeps at the end.
# `make test`: the whole suite, what CI runs (about 9.5 minutes on the 2-core machine with the install, quiet:
# results/suite-time.md).
test: $(STAMP)
	$(PY) -m ruff check rtsearch experiments tests
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --maxschedchunk 1

# `make check`: the fast tier, for every edit (under 2 minutes here): unit tests, refusals and a tiny
# end-to-end run per method where one is that quick. It leaves out the tests marked `slow` (sweeps, clusters,
# servers, anything over about 5 s) and `study` (the checks of experiments/); `make test` runs them all.
# One torch thread per process: two workers on two cores, and torch's own pool only contends (with other
# load on the machine the tier took 11 min 45 s without it, 66 s with it).
check: $(STAMP)
	$(PY) -m ruff check rtsearch experiments tests
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --maxschedchunk 1 -m "not slow and not study"

clean:
	rm -rf runs mlruns.db mlruns .pytest_cache
