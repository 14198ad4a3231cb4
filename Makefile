# The two commands of the README, and the pieces they are made of.
# Every target is idempotent: run it again on a machine that has everything and it only checks.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/mqic

.PHONY: run test lint test-sqlite test-postgres bench soak venv system-packages postgres

## make run: the whole system on the embedded default (SQLite, a local sandbox HPC).
run: venv
	$(PY) manage.py bootstrap_demo
	$(VENV)/bin/honcho start -f Procfile

## make test: lint, then the whole suite on SQLite and again on PostgreSQL.
test: venv system-packages lint test-sqlite test-postgres

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-sqlite: venv
	$(VENV)/bin/pytest

test-postgres: venv postgres
	DATABASE_URL=$(PG_URL) $(VENV)/bin/pytest

## make bench: the benchmark (not part of the tests); prints a table and writes bench-results/.
bench: venv system-packages
	$(PY) -m tests.bench.run

## make soak: long crash and concurrency runs, excluded from make test.
soak: venv system-packages
	$(VENV)/bin/pytest -m slow

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

# Real sshd for the remote side, Chromium for the admin's browser tests.
system-packages:
	@command -v /usr/sbin/sshd >/dev/null && command -v /usr/bin/chromium >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client chromium; }

postgres:
	@pg_isready -q -h 127.0.0.1 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
