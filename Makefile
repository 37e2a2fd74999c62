# Two commands for a new user: `make demo` and `make test`. Each creates .venv and installs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.splice-installed
# Two pytest workers, one test file each at a time (module fixtures stay in one process): most
# tests wait on party processes, so two workers fit two cores (12 -> 9.5 min measured).
TEST_WORKERS ?= 2

.PHONY: demo test lint typecheck install clean bench browsers

# setup.py builds the one C extension (services/engine/gbdt/_kernel.c): a change to it reinstalls.
$(STAMP): pyproject.toml setup.py services/engine/gbdt/_kernel.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU wheel; anything unpinned pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/splice demo --out demo-out

lint: $(STAMP)
	$(BIN)/ruff check services contracts tests benchmarks
	$(BIN)/ruff format --check services contracts tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# The console's browser tests drive Debian's chromium (no browser download: Playwright is given
# its path). The test set-up runs this target when /usr/bin/chromium is missing.
CHROMIUM ?= /usr/bin/chromium
browsers:
	@test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| (echo "make browsers: could not install Debian's chromium (apt-get install -y chromium needs root and the Debian archive)" >&2; exit 1)
	@$(CHROMIUM) --version

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py --out benchmarks/results/throughput.json

clean:
	rm -rf $(VENV) demo-out .mypy_cache .pytest_cache .ruff_cache
