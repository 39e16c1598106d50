"""A minimal second Django project that uses nothing of this one but the offload package.

Loaded only by the processes tests/test_reusable.py starts (DJANGO_SETTINGS_MODULE=
tests.sample.settings), never by the test process itself. No EFFECT_* setting on purpose:
offload's defaults (offload/conf.py) must be enough.
"""

import os

SECRET_KEY = "sample-project-test-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",  # offload's Effect names the user an effect concerns
    "offload",
    "tests.sample",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["SAMPLE_DATABASE"],
        # The worker and the test's shell write to the same file: IMMEDIATE takes the write
        # lock at BEGIN, so a second writer waits up to `timeout` instead of failing halfway.
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
    }
}

CELERY_BROKER_URL = os.environ["REDIS_URL"]
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
