"""The one settings file. Everything that differs between machines comes from the environment.

Production is the default: DEBUG is off unless the environment turns it on (`make run` and
`make test` do), and then start-up refuses what would hurt a deploy (see the end of this file):
a missing or placeholder SECRET_KEY, a missing EMAIL_URL, a weak password hasher.
Development (DEBUG=true) has defaults for everything: SQLite, email kept in var/mail/ (shown at
/dev/mail/), the local Redis that `make run` started.
"""

import os
import socket
from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP
from kombu import Exchange, Queue

from offload.conf import DEFAULTS as EFFECT_DEFAULTS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # dev-only state: SQLite file, uploads, beat schedule

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-key" if DEBUG else "")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS=true (the default when DEBUG is off) when the site is served over TLS: redirect to it,
# secure cookies, HSTS. Behind a TLS-terminating proxy, also set TRUST_X_FORWARDED_PROTO=true.
HTTPS = env.bool("HTTPS", default=not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = HTTPS
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes speak plain HTTP
# HTTPS=false for a site on this machine only (compose on localhost): `check --deploy` would only
# repeat it (no HSTS, no redirect, cookies not marked secure). For any other host it still says.
_LOCAL_ONLY = set(ALLOWED_HOSTS) <= {"127.0.0.1", "localhost", "[::1]"}
SILENCED_SYSTEM_CHECKS = [] if HTTPS or not _LOCAL_ONLY else [
    "security.W004", "security.W008", "security.W012", "security.W016"
]  # fmt: skip
# Absolute base for links in emails: workers have no request to build them from.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "ninja",  # Swagger UI from our static files, not a CDN (/api/docs, under the CSP)
    "offload",
    "notifications",
]

MIDDLEWARE = [
    "offload.middleware.healthz_first",  # /healthz for any Host: the container's probe
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Serves the static files collected into the image (runserver serves them in development).
    *([] if DEBUG else ["whitenoise.middleware.WhiteNoiseMiddleware"]),
    "django.contrib.sessions.middleware.SessionMiddleware",
    "notifications.middleware.JsonErrorsForApi",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # turns a locked-out sign-in into a 429
]

# Content-Security-Policy on every response, the admin and /api/docs included: scripts, styles
# and everything else from this origin only, nothing inline (the templates have no inline
# code), no plugins, no framing, forms posting here only.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

ROOT_URLCONF = "project.urls"
# Error pages and reports mask the password in any URL-valued setting (REDIS_URL...).
DEFAULT_EXCEPTION_REPORTER_FILTER = "project.reporting.SecretUrlFilter"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "notifications.context_processors.links",
                "project.devmail.context",
            ],
        },
    },
]

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the workers write to the same file. WAL lets readers run beside the
    # writer, and IMMEDIATE transactions take the write lock at BEGIN, so two writers queue on
    # `timeout` instead of failing halfway with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Keep connections: otherwise every request and every task (Celery's Django fixup closes
    # them after each one) reconnects and re-runs the PRAGMAs, which cost more than the effect.
    DATABASES["default"]["CONN_MAX_AGE"] = None
    # Tests run a real worker process beside the test process: the test database must be a
    # file both can open, not Django's default in-memory one.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    # Persistent connections: add ?conn_max_age=60 to DATABASE_URL (compose does).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A worker host cut off from the database finds out in seconds instead of blocking in a
    # query for many minutes (the kernel's default): libpq gives up connecting after 5 s and
    # on a silent connection after 5 s idle + 3 unanswered probes 2 s apart, or 10 s of
    # unanswered sends. DATABASE_URL's query string (?connect_timeout=...) overrides each.
    for option, value in {
        "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
        "keepalives_count": 3, "tcp_user_timeout": 10_000,
    }.items():  # fmt: skip
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(option, value)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses locked-out clients before any password check
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = env.list(
    "PASSWORD_HASHERS", default=["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "documents"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=VAR_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # In production WhiteNoise serves static files collected at image build, with hashed names.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_URL = "media/"  # nothing serves it: documents are downloaded through the application
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
# How long the link in a share email works.
SHARE_LINK_MAX_AGE = timedelta(days=env.int("SHARE_LINK_DAYS", default=7))
# Largest document accepted by the API and the pages; larger uploads get a 413.
DOCUMENT_MAX_BYTES = env.int("DOCUMENT_MAX_BYTES", default=10 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # non-file request bodies

# EMAIL_URL: `consolemail://` (the worker log shows each email), `smtp://user:pass@host:port`,
# `smtp+tls://...`. Translated into Django 6.1's MAILERS.
# Without EMAIL_URL, development keeps every email in var/mail/ and shows them at /dev/mail/
# (project/devmail.py); production refuses to start without it (_refusal below).
MAILERS = {
    "default": {
        "BACKEND": "project.devmail.EmailBackend",
        "OPTIONS": {"file_path": str(VAR_DIR / "mail")},
    }
}
if "EMAIL_URL" in env:
    _mail = env.email_url("EMAIL_URL")
    MAILERS = {"default": {"BACKEND": _mail["EMAIL_BACKEND"]}}
    if _mail["EMAIL_BACKEND"].endswith("smtp.EmailBackend"):
        MAILERS["default"]["OPTIONS"] = {
            "host": _mail["EMAIL_HOST"],
            "port": _mail["EMAIL_PORT"],
            "username": _mail["EMAIL_HOST_USER"],
            "password": _mail["EMAIL_HOST_PASSWORD"],
            "use_tls": _mail.get("EMAIL_USE_TLS", False),
            "use_ssl": _mail.get("EMAIL_USE_SSL", False),
            "timeout": 10,  # a hung SMTP server fails the attempt (and it is retried)
        }
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Signal Offload <noreply@example.com>")

# Failed sign-ins: the account owner is alerted at this many failures within the window, and
# the same username from the same address is locked out (429) until the window has passed.
FAILED_LOGIN_ALERT_THRESHOLD = env.int("FAILED_LOGIN_ALERT_THRESHOLD", default=5)
FAILED_LOGIN_WINDOW = timedelta(minutes=env.int("FAILED_LOGIN_WINDOW_MINUTES", default=15))
AXES_FAILURE_LIMIT = env.int("FAILED_LOGIN_LOCKOUT", default=FAILED_LOGIN_ALERT_THRESHOLD)
AXES_COOLOFF_TIME = FAILED_LOGIN_WINDOW
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # successful sign-ins are recorded by record_login
AXES_CLIENT_IP_CALLABLE = "notifications.security.client_ip"
AXES_LOCKOUT_CALLABLE = "notifications.security.lockout_response"
# X-Forwarded-For is trusted only through this many proxies of ours (0: not at all).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)


# Abuse limits (notifications/limits.py), per hour: each of these sends an email, most to an
# address the client chose. 0 turns a limit off; in development (DEBUG) they are off unless
# set, since a developer, a test or a load run signs up hundreds of users from 127.0.0.1.
def _per_hour(name: str, production: int) -> int:
    return env.int(name, default=0 if DEBUG else production)


RATE_LIMITS = {
    "sign_up": {"ip": _per_hour("SIGN_UPS_PER_IP_PER_HOUR", 20)},
    "share": {
        "user": _per_hour("SHARES_PER_USER_PER_HOUR", 50),
        "ip": _per_hour("SHARES_PER_IP_PER_HOUR", 100),
    },
    "email_change": {"user": _per_hour("EMAIL_CHANGES_PER_USER_PER_HOUR", 10)},
    "password_reset": {"ip": _per_hour("PASSWORD_RESETS_PER_IP_PER_HOUR", 20)},
}

# --- Celery (read by project/celery.py through the CELERY_ namespace) -------------------------
TCP_KEEPALIVE_OPTIONS = {
    getattr(socket, name): value
    for name, value in (
        ("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 10_000)
    )
    if hasattr(socket, name)
}  # fmt: skip


def _redis_of_make_run() -> str | None:
    """The URL of the private Redis that `make run` started, while it runs (development only):
    so that a command in a second terminal (createsuperuser, shell, effects) publishes to it."""
    try:
        url, pid = Path(REDIS_URL_FILE).read_text().split()
        os.kill(int(pid), 0)  # still running (a `make run` killed outright leaves the file)
    except (OSError, ValueError):
        return None
    return url


# Where `make run` writes the URL of the Redis it started (devtools/localredis.py --announce).
REDIS_URL_FILE = env.str("REDIS_URL_FILE", default=str(VAR_DIR / "redis.url"))
REDIS_URL = env.str(
    "REDIS_URL", default=(DEBUG and _redis_of_make_run()) or "redis://127.0.0.1:6379/0"
)
# redis:// and rediss:// name kombu's Redis transport with one client per channel
# (offload/transport.py, registered under those names in project/celery.py).
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker keeps trying to reach a broker that went away, however long it is gone (Celery's
# default, 100 tries, is only minutes with offload.worker.Consumer's 1-2 s between tries).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# JSON only: a message in any other format (a pickle pushed by anyone who can write to
# Redis) is refused.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
# No result backend: the effect ledger records every effect's outcome (offload/models.py).
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fixup closes the database connection after every task unless this is set,
# whatever CONN_MAX_AGE says: each effect would reconnect (and re-run SQLite's PRAGMAs).
CELERY_DB_REUSE_MAX = 1000
# Effect tasks are acknowledged after they ran and killed at EFFECT_TIME_LIMIT (EffectTask in
# offload/base.py sets both); a worker process holds at most this many messages per child.
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
# On SIGTERM a worker lets running tasks finish for this long, then hands unfinished and
# prefetched messages back to Redis instead of holding them.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = 10.0
# Reconnects to a broker that went away every second or two, not after Celery's 2-30 s backoff.
CELERY_WORKER_CONSUMER = "offload.worker:Consumer"
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A message delivered to a worker and not acknowledged 15 s later goes back to the queue:
    # so the messages a dead worker had prefetched run elsewhere within 20 s. It can be this
    # short because the ledger's claim makes a redelivery harmless: the copy of a message
    # whose effect runs longer finds it held by a live lease and does nothing.
    "visibility_timeout": 15,
    # Every worker looks for such messages every 5 s (kombu's default: every ~100 s), under a
    # lock that a worker killed while holding it keeps for 30 s at most (default: 300 s).
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
    "unacked_mutex_expire": 30,
    # Fail fast when Redis is unreachable: the request must not wait on the broker, and the
    # relay publishes what could not be published. Without these, kombu retries the connection
    # for 6 s (measured) before a publish gives up. One immediate retry replaces a pooled
    # connection that went stale when Redis restarted. (A worker's consumer reconnects on its
    # own terms: offload.worker.Consumer and CELERY_BROKER_CONNECTION_MAX_RETRIES.)
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
    "socket_connect_timeout": 1,
    # Redis answers in milliseconds; a command unanswered for 3 s is on a dead link. Each
    # periodic call of a worker cut off from Redis blocks its event loop this long, once per
    # pooled connection (tried: 5 s here put the notice of a silent cut at 21 s, 3 s at 16 s).
    "socket_timeout": 3,
    "retry_on_timeout": False,
    # A worker host cut off from Redis (packets vanish, no reset) notices within seconds, not
    # minutes: kombu checks every 5 s for a BRPOP whose reply is more than 1 + 5 s late, and
    # the kernel gives up on a silent connection after 5 s idle + 3 unanswered probes 2 s
    # apart, or 10 s of unanswered sends. (Linux names; elsewhere only the keepalive itself.)
    "health_check_interval": 5,
    "socket_keepalive": True,
    "socket_keepalive_options": TCP_KEEPALIVE_OPTIONS,
}
# The abuse limits' counters (notifications/limits.py) live in Redis, so that every web process
# shares them; a Redis that does not answer within 0.25 s leaves them unchecked (they fail open),
# never a request waiting. Elsewhere the default per-process memory cache.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "limits": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
        }
        if REDIS_URL.startswith(("redis://", "rediss://"))
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "limits"}
    ),
}

# One queue per kind of effect, so a slow SMTP server never delays file cleanup. A worker
# started with no -Q consumes all of them.
EFFECT_QUEUES = ("emails", "files", "records")
CELERY_TASK_DEFAULT_QUEUE = "records"
CELERY_TASK_QUEUES = [Queue(name, Exchange(name), routing_key=name) for name in EFFECT_QUEUES]
CELERY_TASK_ROUTES = {"send_*": {"queue": "emails"}, "delete_stored_file": {"queue": "files"}}
# Django's Tasks API (django.tasks) on the same ledger and workers: `@task` + `.enqueue()`.
# A task's queue_name is its Celery queue; "default" is the task's route above.
TASKS = {
    "default": {
        "BACKEND": "offload.backends.LedgerBackend",
        "QUEUES": ["default", *EFFECT_QUEUES],
    }
}
# Task events cost a Redis publish each (2-3 per task, and a "sent" event per publish, which
# took a publish from 0.38 to 0.66 ms here). They stay off unless someone watches: Flower turns
# worker events on by itself while it runs (its --enable_events, on by default).
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_BEAT_SCHEDULE_FILENAME = env.str(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule")
)

# --- Logs: one line per event on stderr; LOG_FORMAT=json for machines -------------------------
# Celery workers use this configuration too (no root-logger hijack), so an effect's lines look
# the same in the web and the worker logs.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"},
        "json": {"()": "project.logs.JSONFormatter"},
    },
    "filters": {"access_lines": {"()": "project.logs.AccessLines"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's lines through the one handler, once, in the same format (its defaults add
        # a second console handler under DEBUG, and send runserver's request lines nowhere
        # once their own handler is replaced). No ADMINS: no error emails.
        "django": {"handlers": ["console"], "propagate": False},
        # runserver's request lines: share and reset links redacted, live polls left out
        # (gunicorn's: gunicorn.conf.py).
        "django.server": {"filters": ["access_lines"], "propagate": True},
        # A 4xx is in the access line already; 5xx (ERROR, with the traceback) still logs.
        "django.request": {"level": "ERROR"},
        # offload logs one line per attempt, at its end (done, retry...): Celery's received
        # and succeeded lines would repeat it. Its warnings and errors still log.
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
        # django-axes says four things at INFO about every sign-in; a failure is a WARNING.
        "axes": {"level": "WARNING"},
        # Its started/finished lines repeat offload's own (effect=... step=...).
        "django.tasks": {"level": "WARNING"},
    },
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# GET /readyz reuses its answer this long, per web process (offload/conf.py).
READYZ_CACHE_SECONDS = env.float(
    "READYZ_CACHE_SECONDS", default=EFFECT_DEFAULTS["READYZ_CACHE_SECONDS"]
)
# GET /metrics (Prometheus) answers only with "Authorization: Bearer <METRICS_TOKEN>"; with no
# token set it is closed.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Effects (offload/): each from the environment variable of the same name; what they mean
# and their defaults are in offload/conf.py.
EFFECT_MAX_ATTEMPTS = env.int("EFFECT_MAX_ATTEMPTS", default=EFFECT_DEFAULTS["EFFECT_MAX_ATTEMPTS"])
EFFECT_RETRY_BACKOFF = env.int(
    "EFFECT_RETRY_BACKOFF", default=EFFECT_DEFAULTS["EFFECT_RETRY_BACKOFF"]
)
EFFECT_TIME_LIMIT = env.int("EFFECT_TIME_LIMIT", default=EFFECT_DEFAULTS["EFFECT_TIME_LIMIT"])
EFFECT_LEASE_SECONDS = env.int(
    "EFFECT_LEASE_SECONDS", default=EFFECT_DEFAULTS["EFFECT_LEASE_SECONDS"]
)
EFFECT_RELAY_INTERVAL = env.float(
    "EFFECT_RELAY_INTERVAL", default=EFFECT_DEFAULTS["EFFECT_RELAY_INTERVAL"]
)
EFFECT_RELAY_GRACE = env.float("EFFECT_RELAY_GRACE", default=EFFECT_DEFAULTS["EFFECT_RELAY_GRACE"])
EFFECT_REPUBLISH_AFTER = env.float(
    "EFFECT_REPUBLISH_AFTER", default=EFFECT_DEFAULTS["EFFECT_REPUBLISH_AFTER"]
)
EFFECT_RETENTION_DAYS = env.int(
    "EFFECT_RETENTION_DAYS", default=EFFECT_DEFAULTS["EFFECT_RETENTION_DAYS"]
)
# Beat schedules the pruning; the relay runs in the workers themselves (offload/relay.py).
CELERY_BEAT_SCHEDULE = {
    "prune-effects": {"task": "prune_effects", "schedule": crontab(hour=3, minute=17)},
}

# Links shown in the navigation bar.
FLOWER_URL = env.str("FLOWER_URL", default="http://127.0.0.1:5555")
MAILPIT_URL = env.str("MAILPIT_URL", default="")


# --- Production is the default: refuse to start on what would hurt a deploy --------------------
def _refusal() -> str | None:
    """With DEBUG off, the first setting that must not go to production, named, and what to do."""
    if not SECRET_KEY or SECRET_KEY.startswith("change-me") or len(SECRET_KEY) < 50:
        return (
            "SECRET_KEY must be 50 or more random characters, not a placeholder: `python -c"
            " 'import secrets; print(secrets.token_urlsafe(50))'` (or DEBUG=true to develop)"
        )
    if "EMAIL_URL" not in env:
        return (
            "EMAIL_URL is not set: where should email go? smtp://user:password@host:port, or"
            " consolemail:// to print it (or DEBUG=true to develop)"
        )
    if weak := [h for h in PASSWORD_HASHERS if "MD5" in h or "SHA1" in h]:
        return f"PASSWORD_HASHERS names a weak, test-speed hasher ({weak[0]}): unset it"
    for name in ("METRICS_TOKEN", "FLOWER_BASIC_AUTH", "REDIS_URL", "DATABASE_URL", "EMAIL_URL"):
        if "change-me" in env.str(name, default=""):  # .env.example's placeholders
            return (
                f"{name} holds a change-me placeholder from .env.example: set a real secret"
                " (`make env` writes a .env with random ones)"
            )
    return None


if not DEBUG and (_problem := _refusal()):
    raise ImproperlyConfigured(_problem)
