# Load the Celery app whenever Django starts (as tests/sample does), so enqueue() publishes
# through this project's broker.
from .celery import app as celery_app

__all__ = ("celery_app",)
