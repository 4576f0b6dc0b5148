# Every target creates or reuses the virtualenv in .venv, installed from constraints.txt.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export VEIL_DATA_DIR ?= $(CURDIR)/.veil-demo

.PHONY: demo cluster-demo mqtt-broker test test-slow test-postgres reliability lint format serve bench bench-quick venv system system-test clean

venv: $(STAMP)

# bubblewrap and prlimit run every job's sandbox: installed here when missing (as root).
system:
	@PYTHON=$(PYTHON) scripts/system-packages

# The tests also drive the web console in Debian's Chromium, and tests/postgres runs on
# Debian's PostgreSQL (the tests start their own server).
system-test:
	@PYTHON=$(PYTHON) scripts/system-packages --browser --postgres

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	# Bytecode caches now, readable by all: Veil's processes write none (sandbox/config/datadir.py).
	$(BIN)/python -m compileall -q sandbox policies analytics keys cluster i18n node
	touch $(STAMP)

demo: system $(STAMP)
	$(BIN)/veil demo

# The MQTT broker of tests/sources (amqtt) has its own virtualenv: its pins conflict with
# syft's (tests/sources/amqtt-requirements.txt says which).
MQTT_BROKER := .venv-mqtt-broker
mqtt-broker: $(MQTT_BROKER)/.installed

$(MQTT_BROKER)/.installed: tests/sources/amqtt-requirements.txt
	test -x $(MQTT_BROKER)/bin/python || $(PYTHON) -m venv $(MQTT_BROKER)
	$(MQTT_BROKER)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r tests/sources/amqtt-requirements.txt
	touch $@

# Test files run in TEST_WORKERS processes (pytest-xdist; a file's tests stay together).
TEST_WORKERS ?= 2

test: system-test $(STAMP) mqtt-broker lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not statistical" --durations=30

# The demo across a cluster on this machine: PostgreSQL, three OpenBao nodes (raft), two
# API processes behind one address and three job workers; then a node of each is killed.
cluster-demo: system $(STAMP)
	@PYTHON=$(PYTHON) scripts/system-packages --postgres
	$(BIN)/python cluster/demo.py

# Only the database tests on a real PostgreSQL (Debian's package; the tests start their
# own server); make test runs them too.
test-postgres: $(STAMP)
	@PYTHON=$(PYTHON) scripts/system-packages --postgres
	$(BIN)/python -m pytest -m postgres tests/postgres

test-slow: system-test $(STAMP) mqtt-broker
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m slow || [ $$? -eq 5 ]  # 5: none

# Long hardening runs (minutes, loopback only): fuzzing, crashes, key-server loss,
# concurrency and the statistical DP check; prints what was tried and what held.
reliability: system-test $(STAMP)
	$(BIN)/python reliability/run.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

serve: system $(STAMP)
	$(BIN)/veil serve

bench: system $(STAMP)
	@PYTHON=$(PYTHON) scripts/system-packages --postgres  # the scaling benchmark's database
	$(BIN)/python bench/run.py

bench-quick: system $(STAMP)  # smaller inputs, fewer repetitions: for development only
	@PYTHON=$(PYTHON) scripts/system-packages --postgres
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) $(MQTT_BROKER) .veil-demo .pytest_cache .mypy_cache .ruff_cache
