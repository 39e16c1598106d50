# Load the Celery app whenever Django starts (as project/__init__.py does): `celery -A` would
# find it without this, but a plain Django process (the shell that creates a Note) would not,
# and offload() would then publish through Celery's default app and its default broker.
from .celery import app as celery_app

__all__ = ("celery_app",)
