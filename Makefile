# The two commands of the README, and the pieces they are made of.
# Every target is idempotent: run it again on a machine that has everything and it only checks.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/mqic
# make test runs the SQLite pass on TEST_WORKERS pytest-xdist workers and, beside it, the PostgreSQL
# pass on PG_WORKERS (each worker has a test database of its own); 0 runs a pass in one process.
# Most tests wait on real processes (sshd, pueued, qcluster, Chromium), so more workers than cores
# pay: on 2 cores the two passes side by side take ~5 minutes against ~8 one after the other.
TEST_WORKERS ?= 4
PG_WORKERS ?= 2

.PHONY: run stop test lint test-sqlite test-postgres bench soak venv system-packages postgres redis

## make run: the whole system on the embedded default (SQLite, a local sandbox HPC; MQIC_DEMO_HOSTS=2 for two).
# sandbox/demo.py starts the local HPC(s), makes a secret key once into var/secret_key, prepares the
# database (bootstrap_demo) and runs the Procfile's processes; Ctrl-C (or `make stop`) stops all of
# them and the HPC daemons. Everything under var/ is private to its owner.
run: venv
	umask 077; mkdir -p var && chmod -R go-rwx var
	umask 077; exec $(PY) -m sandbox.demo run

## make stop: from another terminal, what Ctrl-C on `make run` does.
stop:
	$(PY) -m sandbox.demo stop

## make test: lint, then side by side the whole suite on SQLite and, on PostgreSQL, what depends on
## the database engine; each pass's output is printed whole once it ends.
test: venv system-packages lint postgres redis
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-sqlite: venv
	$(VENV)/bin/pytest -n $(TEST_WORKERS)

# The PostgreSQL pass also runs the tests marked postgres (several qcluster nodes; Redis as the broker),
# which the SQLite pass deselects and lists.
test-postgres: venv postgres redis
	DATABASE_URL=$(PG_URL) $(VENV)/bin/pytest -n $(PG_WORKERS) -m "engine and not slow"

## make bench: the benchmark (not part of the tests); prints a table and writes bench-results/.
# Scenarios 1 and 7-9 run real pueue from MQIC_REAL_PUEUE_BIN (as make test does); 9 runs on
# PostgreSQL with the Redis broker.
bench: venv system-packages postgres redis
	$(PY) -m tests.bench.run

## make soak: long crash and concurrency runs, excluded from make test.
soak: venv system-packages postgres redis
	$(VENV)/bin/pytest -m slow
	DATABASE_URL=$(PG_URL) $(VENV)/bin/pytest -m "slow and engine"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

# Real sshd for the remote side, Chromium for the admin's browser tests, the login shells of the
# test accounts (tests/support/accounts.py), iptables for the jump-host test's rule.
SYSTEM_PACKAGES := openssh-server openssh-client chromium tcsh fish zsh iptables
system-packages:
	@for f in /usr/sbin/sshd /usr/bin/chromium /usr/bin/tcsh /usr/bin/fish /usr/bin/zsh /usr/sbin/iptables; do \
	  test -x $$f || missing=1; done; [ -z "$$missing" ] || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); }

postgres:
	@pg_isready -q -h 127.0.0.1 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start

redis:
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
