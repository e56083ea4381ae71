# pesflow developer commands. Every target creates .venv and installs on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(PY) -m pytest
# The default suite runs on as many pytest workers as the machine has cores (at most 4:
# torch runs one thread per worker); one test file per worker keeps module fixtures shared.
# (GNU nproc counts OMP_NUM_THREADS, which is 1 here: it is unset for the count.)
WORKERS ?= $(shell n=$$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

# Small tensors on 2-core machines: one OpenMP thread is fastest and predictable.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: install test test-slow test-all bench bench-science lint format clean demo demo-full demo-qe

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The default test suite (fast; slow/bench markers excluded).
test: $(STAMP)
	$(PYTEST) -n $(WORKERS) --dist loadfile

## Long checks behind the `slow` marker.
test-slow: $(STAMP)
	$(PYTEST) -m slow

test-all: $(STAMP)
	$(PYTEST) -m "slow or not slow"

## Benchmarks: print figures and ratios measured side by side in one run.
## They live in benchmarks/ (not in the wheel) and need the `bench` extra (matplotlib; `dev` has it).
bench: $(STAMP)
	@for m in mlip_core dft_adapters database workflows cluster api; do \
	  echo "== benchmarks.$$m"; $(PY) -m benchmarks.$$m || exit 1; \
	done
	@echo "== benchmarks.mlip_core --lammps"; $(PY) -m benchmarks.mlip_core --lammps

## Does active learning save DFT? One campaign per selection policy (fps, max-first, random)
## through the product's own loop on Cu/EMT; report.json and PNGs in reports/al-efficiency/.
bench-science: $(STAMP)
	$(PY) -m benchmarks.al_efficiency examples/bench_cu_emt.yaml

## The example campaign (Cu, EMT oracle) on SQLite and the temporary local Prefect server.
## Each run starts a fresh campaign; the Prefect home (data/demo/prefect) is kept between runs.
demo: $(STAMP)
	rm -rf data/demo/pesflow.sqlite data/demo/pesflow.sqlite-* data/demo/campaigns data/demo/labels
	PESFLOW_DATA_DIR=data/demo $(VENV)/bin/pesflow run examples/cu_emt.yaml

## The recommended Cu campaign (bulk to the melt, vacancy, strain, two surfaces; < 30 min on
## 2 cores): `pesflow export cu-full -o DIR` (PESFLOW_DATA_DIR=data/demo-full) gives the potential.
demo-full: $(STAMP)
	rm -rf data/demo-full/pesflow.sqlite data/demo-full/pesflow.sqlite-* data/demo-full/campaigns data/demo-full/labels
	PESFLOW_DATA_DIR=data/demo-full $(VENV)/bin/pesflow run examples/cu_full.yaml

## The SiC campaign with a real DFT code, Quantum ESPRESSO's pw.x (Debian: quantum-espresso
## quantum-espresso-data), to its stop rule (13 min measured on 2 loaded cores, README); examples/sic_cp2k.yaml is
## the same campaign with CP2K. `pesflow status sic-qe --markdown` (PESFLOW_DATA_DIR=data/demo-qe)
## prints its table.
demo-qe: $(STAMP)
	rm -rf data/demo-qe/pesflow.sqlite data/demo-qe/pesflow.sqlite-* data/demo-qe/campaigns data/demo-qe/labels
	PESFLOW_DATA_DIR=data/demo-qe $(VENV)/bin/pesflow run examples/sic_qe.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
