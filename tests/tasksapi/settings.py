"""A Django project that knows Django's Tasks API and nothing of this repository but offload's
backend: its own settings with TASKS, one model, one @task, one receiver.

Loaded only by the processes tests/test_tasks_api.py starts (DJANGO_SETTINGS_MODULE=
tests.tasksapi.settings). No EFFECT_* setting: offload's defaults hold.
"""

import os

SECRET_KEY = "tasksapi-project-test-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "offload",
    "tests.tasksapi",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["TASKSAPI_DATABASE"],
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
    }
}

TASKS = {
    "default": {
        "BACKEND": "offload.backends.LedgerBackend",
        # Two attempts, then FAILED; the first retry waits up to a second.
        "OPTIONS": {"MAX_ATTEMPTS": 2, "BACKOFF": 1},
    }
}

CELERY_BROKER_URL = os.environ["REDIS_URL"]
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
# Its own queue, which no other test's worker reads.
CELERY_TASK_DEFAULT_QUEUE = "tasksapi"
