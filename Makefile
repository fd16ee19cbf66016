# Two commands do all set-up on a fresh machine (Python 3.11; Java 17 for the JVM engine tests):
#   make demo   - venv, install, sample data, history, model training and the daily pipeline through Airflow, a summary
#   make test   - venv, install, Java 17, Maven and Chromium if missing, the pinned JVM JARs, the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PEOPLE ?= 20000
DAYS   ?= 38
AIRFLOW_DAYS ?= 2
SEED   ?= 42
START  ?= 2026-11-01
# cdp generate --format: real (the channels as real systems export them, conf/sources.yaml) | default
FORMAT ?= real
POPULATION ?= retail

export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := True
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install jars spark-connect spark-cluster spark-down system-deps demo mlflow-ui test test-all test-fast lint bench-ingest bench-identity bench-tags bench-ml bench-serve clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# The JVM JARs pinned in conf/jars.txt (delta-spark for engine `classic` and the JVM Connect server),
# fetched with Maven into .jars/ and checked against their pinned SHA-1.
.jars/.fetched: conf/jars.txt scripts/fetch-jars.sh
	bash scripts/fetch-jars.sh conf/jars.txt .jars
	@touch $@

jars: .jars/.fetched

install: $(VENV)/.installed

$(AIRFLOW_HOME)/airflow.db: $(VENV)/.installed
	@mkdir -p $(AIRFLOW_HOME)
	@chmod 700 $(AIRFLOW_HOME)  # airflow standalone writes the admin password in here, readable by all otherwise
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }

# Each batch date D runs as `airflow dags test cdp_daily D+1`: a run's logical date is the end of its
# data interval (standard Airflow), and the DAG processes the interval's start date.
# A demo starts from empty demo folders: the pipeline refuses to run days out of order or over landing
# files that changed since they were loaded, and a new demo world is both.
DEMO_FOLDERS = landing lakehouse exports
# The demo's token key (keyed tokens of identifiers in quality examples, suppressions): created once by
# `cdp token-key`, owner-readable only, git-ignored; kept across demos (a new key orphans old tokens).
TOKEN_KEY_FILE ?= $(CURDIR)/.secrets/token.key
demo: export CDP_TOKEN_KEY_FILE := $(TOKEN_KEY_FILE)
# History for the models, then Airflow: DAYS days are generated; all but the last AIRFLOW_DAYS are
# loaded by `cdp load-history --for-training` (in batches ending on the days the ml cutoff layout reads a
# One-ID snapshot of: 36 days with conf's horizon 14 and 3 cutoffs), then `cdp_train` trains and promotes
# the champions through Airflow, then the last AIRFLOW_DAYS days run through Airflow's cdp_daily and are
# scored with them.
demo: SHELL := /bin/bash
demo: install $(AIRFLOW_HOME)/airflow.db
	@echo "demo: starting from empty $(DEMO_FOLDERS) (the demo's own folders)"; rm -rf $(DEMO_FOLDERS)
	$(BIN)/cdp token-key --file $(TOKEN_KEY_FILE)
	$(BIN)/cdp generate --people $(PEOPLE) --days $(DAYS) --seed $(SEED) --start $(START) --format $(FORMAT) --population $(POPULATION)
	@set -eo pipefail; history=$$(expr $(DAYS) - $(AIRFLOW_DAYS)); mkdir -p lakehouse/_runs; \
	last=$$($(BIN)/python -m spark_jobs.dates $(START) $$history | tr ' ' '\n' | tail -1); \
	echo "== cdp load-history --from $(START) --to $$last --for-training (log: lakehouse/_runs/demo-history.log)"; \
	$(BIN)/cdp load-history --from $(START) --to $$last --for-training 2>&1 | tee lakehouse/_runs/demo-history.log \
	  | grep --line-buffered -E "^(load-history |ingest |[a-z]+ as of )" | sed -u 's/^/   /' \
	  || { tail -40 lakehouse/_runs/demo-history.log; exit 1; }; \
	train=$$($(BIN)/python -m spark_jobs.dates $(START) $$history --train); \
	echo "== airflow dags test cdp_train $$train"; \
	$(BIN)/airflow dags test cdp_train $$train > $(AIRFLOW_HOME)/dags-test-cdp_train.log 2>&1 \
	  || { tail -60 $(AIRFLOW_HOME)/dags-test-cdp_train.log; exit 1; }; \
	grep -oE "cdp_[a-z]+ v[0-9]+: (promoted|not promoted)[^[]*" $(AIRFLOW_HOME)/dags-test-cdp_train.log | sed 's/^/   /'; \
	for d in $$($(BIN)/python -m spark_jobs.dates $(START) $(DAYS) --logical | tr ' ' '\n' | tail -n $(AIRFLOW_DAYS)); do \
	  echo "== airflow dags test cdp_daily $$d"; \
	  $(BIN)/airflow dags test cdp_daily $$d > $(AIRFLOW_HOME)/dags-test-$$d.log 2>&1 \
	    || { tail -60 $(AIRFLOW_HOME)/dags-test-$$d.log; exit 1; }; \
	  grep -E "state=(success|failed)" $(AIRFLOW_HOME)/dags-test-$$d.log | tail -1 | sed -E 's/.*(DagRun Finished: dag_id=[^,]*).*(state=[a-z]+).*/   \1 \2/'; \
	done
	$(BIN)/cdp summary
	@echo "Delta tables: lakehouse/<layer>/<table> (read them with Spark, delta-rs or DuckDB); bad lines: lakehouse/bronze/bronze_quarantine"
	@echo "Airflow logs of each run: .airflow/dags-test-<date>.log, .airflow/dags-test-cdp_train.log; the models: make mlflow-ui"
	@echo "Scheduler + UI: AIRFLOW_HOME=$(AIRFLOW_HOME) AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags $(BIN)/airflow standalone (stop with Ctrl-C; README: Operations)"

mlflow-ui: install
	@echo "MLflow UI, model-training view: http://127.0.0.1:5000$$($(BIN)/python -c 'from ml.tracking import UI_PATH; print(UI_PATH)')"
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db} --port 5000

# A JVM Spark Connect server with delta-spark (sc://127.0.0.1:15002), on local[2] or on a standalone
# master with two workers; README: Engines. Stop either with `make spark-down`.
spark-connect: install system-deps jars
	bash scripts/spark-stack.sh start

spark-cluster: install system-deps jars
	bash scripts/spark-stack.sh start --cluster --workers 2

spark-down:
	bash scripts/spark-stack.sh stop

system-deps:
	bash scripts/system-deps.sh

test: install system-deps jars
	$(BIN)/python -m pytest -m "not heavy" -n 2 --dist loadgroup --durations=25

test-all: install system-deps jars
	$(BIN)/python -m pytest -m "" -n 2 --dist loadgroup --durations=25

test-fast: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

bench-ingest: install
	$(BIN)/python bench/ingest.py

bench-ml: install
	$(BIN)/python bench/models.py --scales 100000 1000000

bench-identity: install system-deps
	$(BIN)/python bench/identity.py --scales 10000 100000 1000000 --days 7 --with-previous --repeat 3 --repeat-big 1

bench-tags: install system-deps
	$(BIN)/python bench/tags.py --scales 100000 1000000 --days 30 --repeat 3 --repeat-big 1 --driver-memory 12g --timeout 1800

bench-serve: install system-deps
	$(BIN)/python bench/serve.py --people 1000000

clean:
	rm -rf landing lakehouse $(AIRFLOW_HOME) .pytest_cache
