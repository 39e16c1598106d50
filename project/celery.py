"""The Celery app: `celery -A project worker|beat|flower` finds it here."""

import os

from celery import Celery

from offload.transport import register

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Before any connection: redis:// and rediss:// broker URLs use offload's Redis transport.
register()

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
