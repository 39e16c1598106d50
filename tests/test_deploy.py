"""The production stack, checked statically (tests/test_compose.py runs it): the compose file
against the Compose Specification schema and our own rules, the Dockerfile with hadolint, and
Django's deployment checks with production settings from the environment."""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml

from devtools.dockerd import standin_tags
from devtools.localredis import free_port
from devtools.processes import ROOT

SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
APP_SERVICES = {"web", "worker", "beat", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.mark.skipif(not SCHEMA.exists(), reason="shared/schemas is not beside the checkout")
def test_the_compose_file_follows_the_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(compose)]
    assert errors == []


def test_compose_runs_every_part_with_a_health_check(compose):
    services = compose["services"]
    assert APP_SERVICES | {"redis", "postgres", "mailpit"} <= set(services)
    for name in APP_SERVICES | {"redis", "postgres", "mailpit"}:
        assert "test" in services[name]["healthcheck"], name
        assert services[name]["restart"] == "unless-stopped", name
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["env_file"] == ".env"
    assert "gunicorn" in services["web"]["command"]


def test_redis_is_private_persistent_and_password_protected(compose):
    redis = compose["services"]["redis"]
    assert "ports" not in redis
    assert compose["networks"]["backend"]["internal"] is True
    assert redis["networks"] == ["backend"]
    command = redis["command"]
    for option in (
        "--appendonly yes",
        "--appendfsync everysec",
        "--maxmemory-policy noeviction",
        "--requirepass",
    ):
        assert option in command, option
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "${REDIS_PASSWORD" in compose["x-app"]["environment"]["REDIS_URL"]


def test_redis_is_a_precise_release_and_every_base_image_has_its_stand_in(compose):
    """A patch release, not a moving tag (redis:7.4-alpine moved under CVE fixes), and
    `make compose-test` builds a stand-in under every tag the files name."""
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine", compose["services"]["redis"]["image"])
    pulled = {s["image"] for s in compose["services"].values() if "build" not in s}
    dockerfile = (ROOT / "Dockerfile").read_text()
    pulled |= set(re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE))
    assert set(standin_tags()) == pulled


def test_postgres_keeps_its_data_and_is_not_published(compose):
    postgres = compose["services"]["postgres"]
    assert "ports" not in postgres
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_flower_needs_credentials_and_listens_on_loopback_only(compose):
    flower = compose["services"]["flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    example = (ROOT / ".env.example").read_text()
    assert "FLOWER_BASIC_AUTH=" in example


def test_mailpit_shows_the_emails(compose):
    mailpit = compose["services"]["mailpit"]
    assert any(port.endswith(":8025") for port in mailpit["ports"])
    assert compose["x-app"]["environment"]["EMAIL_URL"] == "smtp://mailpit:1025"


def test_no_secret_is_committed(compose):
    text = (ROOT / "docker-compose.yml").read_text()
    for name in (
        "SECRET_KEY",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "FLOWER_BASIC_AUTH",
        "METRICS_TOKEN",
    ):
        assert f"{name}=" not in text and f"{name}: " not in text.replace(f"{name}: ${{", ""), name
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("#"):  # a comment, or a setting left at its default
            continue
        if any(word in line for word in ("PASSWORD", "SECRET", "TOKEN", "AUTH")) and "=" in line:
            assert "change-me" in line, line
    ignored = subprocess.run(["git", "check-ignore", ".env"], cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0, ".env must be git-ignored"


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "error", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_and_runs_unprivileged():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM python:3.13-slim") == 2
    assert "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile
    assert "collectstatic" in dockerfile and "PYTHONUNBUFFERED=1" in dockerfile


@pytest.mark.parametrize(
    ("https", "hosts", "passes"),
    [
        ("true", "offload.example.com", True),
        ("false", "localhost,127.0.0.1", True),  # compose on this machine, plain HTTP
        ("false", "offload.example.com", False),  # a real host without TLS: the checks say so
    ],
)
def test_deployment_checks_pass_with_production_settings(https, hosts, passes):
    env = {
        **os.environ,
        "DEBUG": "false",
        "HTTPS": https,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": hosts,
        "EMAIL_URL": "smtp+tls://mailer:secret@smtp.example.com:587",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert (result.returncode == 0) == passes, result.stdout + result.stderr
    if passes:
        assert "no issues" in result.stdout
    else:
        assert "security.W008" in result.stderr  # SECURE_SSL_REDIRECT


PRODUCTION = {"SECRET_KEY": secrets.token_urlsafe(48), "EMAIL_URL": "smtp://mail.example.com:25"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"DEBUG": None, "SECRET_KEY": None}, "SECRET_KEY"),  # production is the default
        ({"SECRET_KEY": None}, "SECRET_KEY"),
        ({"SECRET_KEY": "change-me-to-50-random-characters" + "x" * 30}, "SECRET_KEY"),
        ({"SECRET_KEY": "short-but-not-a-placeholder"}, "SECRET_KEY"),
        ({"EMAIL_URL": None}, "EMAIL_URL"),
        ({"PASSWORD_HASHERS": "django.contrib.auth.hashers.MD5PasswordHasher"}, "PASSWORD_HASHERS"),
        ({"METRICS_TOKEN": "change-me"}, "METRICS_TOKEN"),
        ({"FLOWER_BASIC_AUTH": "admin:change-me"}, "FLOWER_BASIC_AUTH"),
        ({"REDIS_URL": "redis://:change-me@redis:6379/0"}, "REDIS_URL"),
        ({"DATABASE_URL": "postgres://offload:change-me@postgres/offload"}, "DATABASE_URL"),
        ({"EMAIL_URL": "smtp://mailer:change-me@smtp.example.com:587"}, "EMAIL_URL"),
    ],
)
def test_production_refuses_to_start_on_a_setting_that_would_hurt(change, named):
    """One line naming the variable, no traceback, exit status 1: for manage.py and for every
    process that loads the settings (gunicorn and celery show Django's ImproperlyConfigured)."""
    env = {**os.environ, "DEBUG": "false", **PRODUCTION} | change
    env = {name: value for name, value in env.items() if value is not None}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"refusing to start: {named} "), line
    if "SECRET_KEY" in env:
        assert env["SECRET_KEY"] not in line, "the refusal never prints the secret"


def test_production_settings_start_and_development_needs_nothing():
    for env in ({"DEBUG": "false", **PRODUCTION}, {"DEBUG": "true"}):
        bare = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "EMAIL_URL")}
        result = subprocess.run(
            [sys.executable, "manage.py", "check"],
            cwd=ROOT, env=bare | env, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


def test_an_error_page_never_shows_a_password_inside_a_url_setting(rf, settings):
    secret = secrets.token_hex(8)
    settings.DEBUG = True
    settings.REDIS_URL = f"redis://:{secret}@redis:6379/0"
    settings.CELERY_BROKER_URL = f"redis://default:{secret}@redis:6379/0"
    html = debug_page_of_an_error(rf)
    assert "redis:6379/0" in html, "the setting is shown, its password is not"
    assert secret not in html


def debug_page_of_an_error(rf) -> str:
    """The page DEBUG shows for an error here (a frame that holds no secret itself)."""
    from django.views.debug import ExceptionReporter

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return ExceptionReporter(rf.get("/"), *sys.exc_info()).get_traceback_html()


def test_a_production_web_process_refuses_to_start_until_static_files_are_collected(tmp_path):
    """gunicorn with DEBUG=false and an empty STATIC_ROOT stops at once, saying what to run
    (instead of answering 500 on every page); after collectstatic it serves the pages."""
    import requests

    from devtools.processes import start_web

    env = {
        **os.environ,
        "DEBUG": "false",
        "HTTPS": "false",  # plain HTTP on loopback, as behind a TLS-terminating proxy
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1",
        "STATIC_ROOT": str(tmp_path / "static"),
        "EMAIL_URL": "consolemail://",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    port = str(free_port())
    refused = subprocess.run(
        [sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "static files are not collected: run `python manage.py collectstatic" in refused.stderr

    for command in (["collectstatic", "--noinput"], ["migrate", "--noinput"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True,
                       capture_output=True)  # fmt: skip
    web = start_web(env, tmp_path / "web.log")
    try:
        page = requests.get(web.url + "/", timeout=10)
    finally:
        web.stop()
    assert page.status_code == 200, page.text[:500]
    assert "/static/" in page.text
