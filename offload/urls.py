"""Probes and metrics: ``path("", include("offload.urls"))`` in the project's urls."""

from django.urls import path

from . import views
from .metrics import metrics

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
]
