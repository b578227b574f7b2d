# Two entry points that work on a fresh machine:
#   make curate   # set up .venv and run the whole pipeline on the offline sample
#   make test     # set up .venv and run the test suite
# Real use: make curate SNAPSHOT=CC-MAIN-2024-10 LIMIT=2 OUT=/data/cc-2024-10

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SNAPSHOT ?= sample
LIMIT ?=
OUT ?= out/$(SNAPSHOT)
CC_BASE ?=
MASTER ?=
SCHEDULER ?=
CONFIG ?=
FORCE ?=
PYTEST_ARGS ?=

CURATE_ARGS = --snapshot $(SNAPSHOT) --out $(OUT) \
	$(if $(LIMIT),--limit $(LIMIT)) $(if $(CC_BASE),--cc-base $(CC_BASE)) \
	$(if $(MASTER),--master $(MASTER)) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
	$(if $(CONFIG),--config $(CONFIG)) $(foreach s,$(FORCE),--force $(s))

.PHONY: curate test venv check-java bench clean

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+ or run make PYTHON=python3.x"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,models]"
	@touch $@

venv: $(BIN)/.installed

check-java:
	@command -v java >/dev/null 2>&1 || [ -n "$$JAVA_HOME" ] || { \
	  echo "error: Spark needs Java 17. Install it: Debian/Ubuntu 'apt-get install openjdk-17-jre-headless'," ; \
	  echo "       macOS 'brew install openjdk@17', or set JAVA_HOME."; exit 1; }

curate: check-java venv
	$(BIN)/curate run $(CURATE_ARGS)

test: check-java venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every bench/*.py, one after another; each prints one JSON object on stdout (names go to stderr).
bench: check-java venv
	@set -e; for b in bench/*.py; do echo "# $$b" >&2; $(BIN)/python $$b; done

clean:
	rm -rf out/ spark-warehouse/ .pytest_cache/
