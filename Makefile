# Two entry points: `make demo` (Superset + bundled dashboard on an embedded sample) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# locust in a virtual environment of its own: its gevent needs a greenlet that Superset 6.1's pin excludes.
LOAD_VENV := .venv-load
LOAD_STAMP := $(LOAD_VENV)/.installed
# Debian's Chromium and ChromeDriver for the browser tests (a tool's own browser download cannot work here).
BROWSER := /usr/bin/chromedriver
# Debian's Redis for the background-sync tests (a real broker for a real Celery worker and beat).
REDIS := /usr/bin/redis-server
# Debian's Java 17 for Spark (pyspark's jars: local mode and the Thrift Server of the lake tests).
JAVA := /usr/bin/java
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test lint demo bench load-test load-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,superset]'
	touch $(STAMP)

$(LOAD_STAMP):
	$(PYTHON) -m venv $(LOAD_VENV)
	$(LOAD_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOAD_VENV)/bin/python -m pip install -q 'locust>=2.40,<3' 'matplotlib>=3.8'
	touch $(LOAD_STAMP)

$(BROWSER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

$(REDIS):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server

$(JAVA):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openjdk-17-jre-headless

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# .venv-load: the load test's smoke run (tests/e2e/test_load_smoke.py) is part of the suite.
test: $(STAMP) $(LOAD_STAMP) $(BROWSER) $(REDIS) $(JAVA) lint
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) scripts/demo.py

bench: $(STAMP)
	$(PY) benchmarks/fetch_benchmark.py
	$(PY) benchmarks/query_benchmark.py
	$(PY) benchmarks/store_benchmark.py

# Superset under simulated users while Celery beat syncs from the emulator (benchmarks/load_test.py): the full run
# (30 days, about 1M events, 10 users, 5 minutes), and the 30-second smoke run that `make test` also runs.
load-test: $(STAMP) $(LOAD_STAMP) $(REDIS)
	$(PY) benchmarks/load_test.py

load-smoke: $(STAMP) $(LOAD_STAMP) $(REDIS)
	$(PY) benchmarks/load_test.py --smoke

clean:
	rm -rf $(VENV) $(LOAD_VENV) var test-output
