# Two entry points that work on a fresh machine:
#   make curate   # set up .venv and run the whole pipeline on the offline sample
#   make test     # set up .venv and run the test suite
# Real use: make curate SNAPSHOT=CC-MAIN-2024-10 LIMIT=2 OUT=/data/cc-2024-10
# Cluster: make curate CONFIG=cluster.yaml [MASTER=spark://h:7077 SCHEDULER=tcp://h:8786 SET="dedup.num_bands=20"]
#   (with CONFIG, only the variables given on the command line override the YAML)
# Report: make report [OUT=...]   -> $(OUT)/report.html (+ report.json)

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
SET ?=
PYTEST_ARGS ?=
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_VERSION ?= 3.3.2

# A variable the user gave (command line or environment), not a default of this file.
given = $(filter command environment override,$(firstword $(origin $(1))))
# Without CONFIG the defaults above apply; with CONFIG only given variables override the YAML
# (OUT follows a given SNAPSHOT).
CURATE_ARGS = $(if $(or $(if $(CONFIG),,x),$(call given,SNAPSHOT)),--snapshot $(SNAPSHOT)) \
	$(if $(or $(if $(CONFIG),,x),$(call given,OUT),$(call given,SNAPSHOT)),--out $(OUT)) \
	$(if $(LIMIT),--limit $(LIMIT)) $(if $(CC_BASE),--cc-base $(CC_BASE)) \
	$(if $(MASTER),--master $(MASTER)) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
	$(if $(CONFIG),--config $(CONFIG)) $(foreach s,$(FORCE),--force $(s)) $(foreach s,$(SET),--set $(s))

.PHONY: curate test venv check-java bench bench-scale clean report airflow-venv test-browser experiment

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

test: check-java venv airflow-venv test-browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

report: check-java venv
	$(BIN)/curate report --input $(OUT) $(if $(CONFIG),--config $(CONFIG)) $(if $(MASTER),--master $(MASTER)) \
	  $(foreach s,$(SET),--set $(s))

# Apache Airflow in its own venv (its pins clash with the project's), pinned by Airflow's
# constraints-file approach; tests/pipelines/test_dags.py drives it.
$(AIRFLOW_VENV)/.installed: pipelines/dags/constraints-airflow.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -c pipelines/dags/constraints-airflow.txt
	@touch $@

airflow-venv: $(AIRFLOW_VENV)/.installed

# Headless Chromium (Debian's package) for the report's browser test: installed only when
# missing and apt is there; elsewhere that test skips with the reason (CI fails instead).
test-browser:
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: could not install chromium (apt-get install chromium, as root)"

# Every bench/*.py, one after another; each prints one JSON object on stdout (names go to stderr).
# The scale run is its own target (it takes hours at 16x).
bench: check-java venv
	@set -e; for b in $(filter-out bench/scale.py bench/scale_corpus.py,$(wildcard bench/*.py)); do echo "# $$b" >&2; $(BIN)/python $$b; done

# Issue 13's scale run: real pages multiplied + COCO photos on loopback, curate run at each scale,
# peak RSS of driver/workers/JVM and seconds per stage as one JSON object (docs/benchmarks.md).
SCALES ?= 1 4 16
bench-scale: check-java venv
	$(BIN)/python bench/scale.py --scales $(SCALES)

# What each curation step buys (raw, basic, CLIP score, filter, captioner, CapFilt, CapFilt round 2):
# the same CLIP trained on each, three seeds; table in $(EXPERIMENT_OUT)/experiment.md (pipelines/experiment.py).
EXPERIMENT_OUT ?= out/experiment
experiment: check-java venv
	$(BIN)/python -m pipelines.experiment --out $(EXPERIMENT_OUT)

clean:
	rm -rf out/ spark-warehouse/ .pytest_cache/
