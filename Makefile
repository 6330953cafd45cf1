# One entry point per task; each sets itself up from a fresh clone (Python 3.11+, Node 20, npm).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AZURITE := node_modules/.bin/azurite
# checkov gets its own environment: its pins (packaging<24) clash with pytest's.
VENV_INFRA := .venv-infra
INFRA_STAMP := $(VENV_INFRA)/.installed

.PHONY: setup demo test lint bench soak clean

# Debian's chromium and its driver, for the consent test in a real browser; apt-get as root (CI), else sudo.
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian's Dovecot, the real IMAP and POP3 server the tests of shared/sources run against (its own
# configuration per test run; the system's instance is left alone).
DOVECOT := /usr/sbin/dovecot

setup: $(STAMP) $(AZURITE) $(INFRA_STAMP) $(CHROMEDRIVER) $(DOVECOT)

$(CHROMEDRIVER):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver

$(DOVECOT):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-imapd dovecot-pop3d

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(INFRA_STAMP): tests/infra/requirements-checkov.txt
	$(PYTHON) -m venv $(VENV_INFRA)
	$(VENV_INFRA)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_INFRA)/bin/python -m pip install --quiet -r tests/infra/requirements-checkov.txt
	touch $(INFRA_STAMP)

# npm: Azurite for the local stack, and Microsoft's Kusto language service for the KQL test (tests/infra/test_kql.py).
$(AZURITE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(AZURITE)

# `make demo DELIVERY=eventgrid`: Graph's notifications through Event Grid and the app's queue instead of the webhook.
DELIVERY ?= webhook
demo: setup
	$(PY) -m local.demo --delivery $(DELIVERY)

test: setup lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m local.bench

# The fuzzing at full count (10,000 examples a property), then the soak: a few minutes, longer with
# SOAK_MINUTES (e.g. `make soak SOAK_MINUTES=30`). Stops by itself; exits non-zero on a loss, duplicate or leak.
soak: setup
	HYPOTHESIS_PROFILE=soak $(PY) -m pytest -q -p no:cacheprovider tests/shared/sources/graph/test_webhook_fuzz.py tests/shared/sources/graph/test_consent_fuzz.py
	$(PY) -m local.soak $(if $(SOAK_MINUTES),--minutes $(SOAK_MINUTES))

clean:
	rm -rf $(VENV) $(VENV_INFRA) node_modules .stack .soak .hypothesis .pytest_cache .mypy_cache .ruff_cache
