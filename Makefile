# Every target sets up what it needs, idempotently: a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYDEPS := $(VENV)/.installed
NPMDEPS := node_modules/.installed

.PHONY: setup demo test lint bench bench-quick contracts clean

setup: $(PYDEPS) $(NPMDEPS)

# First use: each step says what it installs and how long it took (minutes, the first time).
$(PYDEPS): pyproject.toml
	@echo "setup: $(VENV) with fabstir-sdk (editable) and its dev tools: pytest, ruff, mypy," \
	  "mkdocs, py-libp2p, web3 (pip install -e '.[dev]'; a few minutes the first time)"
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(PY) -m pip install -q --upgrade pip && \
	$(PY) -m pip install -q -e '.[dev]' && \
	echo "setup: $(VENV) ready in $$(( $$(date +%s) - start )) s"
	@touch $@

$(NPMDEPS): package-lock.json
	@echo "setup: node_modules from package-lock.json: anvil $$(node -p \
	  "require('./package-lock.json').packages['node_modules/@foundry-rs/anvil'].version"), solc," \
	  "OpenZeppelin contracts, js-libp2p (npm ci; a minute or two the first time)"
	@start=$$(date +%s); \
	npm ci --no-audit --no-fund --loglevel=error && \
	echo "setup: node_modules ready in $$(( $$(date +%s) - start )) s"
	@touch $@

demo: setup
	$(VENV)/bin/fabstir demo

# Two worker processes, each test file whole in one of them (its module-scoped devnet and hosts
# with it): most tests wait on other processes (anvil, hosts, the portal), so two use the
# machine's cores where one leaves them idle. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/mypy src

# The report needs every figure from one run, the 1,000-session crowd included (minutes).
bench: setup
	nice -n 10 $(PY) -m benchmarks --large --report docs/benchmarks.md

bench-quick: setup
	$(PY) -m benchmarks

contracts: setup
	node scripts/compile_contracts.mjs

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
