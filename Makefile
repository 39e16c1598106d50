# The front door: `make run` and `make test` work on a fresh machine with Python >= 3.12.
VENV := .venv
BIN := $(VENV)/bin
# Development and the tests run with DEBUG on; everywhere else production is the default
# (project/settings.py). `DEBUG=false make ...` tries the production settings.
export DEBUG ?= true

# A Python >= 3.12: python3.13, python3.12 or python3 from PATH, else the newest pyenv has.
# Each candidate is run, not just found: a pyenv shim exists even when it cannot run.
PYTHON ?= $(shell for p in python3.13 python3.12 python3; do \
	  $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { command -v $$p; exit; }; \
	done; \
	v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])(\.[0-9]+)?$$' | sort -V | tail -n 1); \
	[ -n "$$v" ] && PYENV_VERSION=$$v pyenv which python 2>/dev/null)

.PHONY: run test compose-test bench screenshots lint format migrate env clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "No Python >= 3.12 found: install one or pass PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

migrate: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput

# Web (127.0.0.1:8000), worker, beat and Flower (127.0.0.1:5555), logs interleaved.
# Without REDIS_URL a private Redis-compatible server is started on a free port and stopped on exit.

run: migrate
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m devtools.localredis -- $(BIN)/honcho start -f Procfile

# Every test, with a private Redis unless REDIS_URL is given. Extra pytest flags: make test ARGS="-k x".
test: $(VENV)/.installed
	$(BIN)/python -m devtools.localredis -- $(BIN)/python -m pytest $(ARGS)

# docker compose up on a real Docker engine, and the user's journey against it (tests/test_compose.py).
# Without DOCKER_HOST it starts a private dockerd (root, Debian's docker.io) with stand-in base
# images built from Debian packages where no registry is reachable (devtools/dockerd.py).
compose-test: $(VENV)/.installed
	COMPOSE_TEST=1 $(BIN)/python -m devtools.dockerd -- $(BIN)/python -m pytest tests/test_compose.py $(ARGS)

# Side-by-side measurements with their own Redis and workers: writes docs/BENCHMARKS.md (~5 min
# on SQLite; as long again on PostgreSQL when DATABASE_URL names one, in a database of its own).
bench: $(VENV)/.installed
	$(BIN)/python -m bench

# The browser tests, writing their screenshots into docs/screenshots/ (README shows them).
screenshots: $(VENV)/.installed
	SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(BIN)/python -m devtools.localredis -- $(BIN)/python -m pytest tests/test_browser.py

# Style, the import contracts (pyproject.toml) and types of the reusable machinery (offload/).
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy offload

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# .env for docker compose, from .env.example with a fresh random value for every "change-me".
env:
	@test ! -e .env || { echo ".env exists: not overwriting it"; exit 1; }
	@python3 -c 'import re, secrets, sys; \
	  text = open(".env.example").read(); \
	  sys.stdout.write(re.sub(r"change-me[\w-]*", lambda m: secrets.token_urlsafe(48), text))' > .env
	@echo "wrote .env with random secrets (Flower login: see FLOWER_BASIC_AUTH in .env)"

clean:
	rm -rf $(VENV) var/db.sqlite3* var/media var/celerybeat-schedule*
