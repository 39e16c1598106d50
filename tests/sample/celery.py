"""The sample's Celery app: `celery -A tests.sample worker` finds it here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.sample.settings")

app = Celery("sample")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
