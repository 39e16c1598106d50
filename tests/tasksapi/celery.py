"""The project's Celery app: `celery -A tests.tasksapi worker` finds it here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.tasksapi.settings")

app = Celery("tasksapi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
