# Two commands a newcomer runs on a fresh clone: `make demo` and `make test`.
# Only Python 3.11+ is needed (and Java 17 + Maven for the Apache Kafka suite).
SHELL := /bin/bash
PY ?= $(shell for p in python3 python3.11 python3.12 python3.13; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint schemas bench kafka-start kafka-stop clean

$(STAMP): pyproject.toml
	@test -n "$(PY)" || { echo "make: Python 3.11 or newer is required" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,rocksdb]'
	@touch $(STAMP)

install: $(STAMP)

# EXIT=1: exit with status 0 right after the summary (CI); otherwise keep serving.
demo: $(STAMP)
	$(BIN)/hub run --demo $(if $(EXIT),--exit,)

# Kafka behaviour is tested on Apache Kafka when HUB_TEST_KAFKA=apache (CI sets it, and
# HUB_REQUIRE_APACHE_KAFKA=1 turns "cannot start it" into a failure); a quick local
# run uses the embedded broker.
test: $(STAMP)
	@if [ "$$HUB_TEST_KAFKA" = "apache" ]; then $(BIN)/python -m hub.brokers.apache fetch; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not apache" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check schemas mappers streams hub tests bench
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/python -m schemas.generate

bench: $(STAMP)
	$(BIN)/python bench/bench_map.py
	$(BIN)/python bench/bench_normalize.py

kafka-start: $(STAMP)
	$(BIN)/python -m hub.brokers.apache start

kafka-stop: $(STAMP)
	$(BIN)/python -m hub.brokers.apache stop

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
