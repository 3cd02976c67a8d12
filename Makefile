# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= bundled,dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell echo '$(TORCH_SPEC) $(EXTRAS)' | cksum | cut -d' ' -f1)

# Environment defaults live in the program (finetune_core/environment.py), not here.

.PHONY: install demo lint postgres-server test test-fast docs docs-gen docs-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Torch first, pinned to a CPU build, so resolving the project never pulls a CUDA build.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/finetune run examples/sst2.yaml --summary-json runs/demo-summary.json

# ruff's lint and format check (settings in pyproject.toml); `make test` runs it first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two pytest-xdist workers, each test file on one worker (its module fixtures start once): most of
# the suite's time is spent waiting on servers and subprocesses, and each test runs torch on one thread.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The Prefect-server-on-PostgreSQL test needs a PostgreSQL with its contrib extensions (Prefect's
# schema uses pg_trgm, which the pgserver wheel lacks): Debian's, installed here where apt-get can.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null; } || \
	  echo "PostgreSQL server binaries missing: tests/deployments/test_postgres.py will say so"

test: lint postgres-server
	$(PYTEST)

# Unit tests only: no servers, no real backbone.
test-fast: install
	$(PYTEST) -m "not integration"


# The documentation site (mkdocs.yml) into site/. `make test` builds it strictly too (tests/test_docs.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The generated reference pages: the configuration from the Pydantic models, the CLI from its parser.
docs-gen: install
	$(BIN)/python -m docs.gen.config_reference
	$(BIN)/python -m docs.gen.cli_reference

# Open the built site in headless Chromium (Debian's package, installed when missing) and check it rendered.
docs-check: docs
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(BIN)/python -m docs.gen.check_site site

clean:
	rm -rf runs mlruns mlflow.db .pytest_cache site
