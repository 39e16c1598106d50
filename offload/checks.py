"""System checks (``manage.py check``, and every start of runserver, migrate, a worker)."""

from typing import Any

from celery import current_app
from django.core.checks import CheckMessage, Error, Warning, register

from .conf import conf


@register()
def lease_can_be_renewed(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A lease is renewed every third of its length and trusted until a second before its end:
    shorter than 3 s, a live attempt could lose it between two renewals."""
    if conf.EFFECT_LEASE_SECONDS >= 3:
        return []
    return [
        Error(
            f"EFFECT_LEASE_SECONDS ({conf.EFFECT_LEASE_SECONDS}) must be at least 3.",
            hint="A running attempt could be taken over between two renewals of its lease.",
            id="offload.E001",
        )
    ]


@register()
def visibility_timeout_is_short(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A message a dead worker had prefetched comes back after the broker's visibility timeout
    (kombu's default: an hour); the ledger makes a redelivery harmless, so it can be short."""
    options = current_app.conf.broker_transport_options or {}
    timeout = options.get("visibility_timeout", 3600)
    if timeout <= 60:
        return []
    return [
        Warning(
            f"The broker's visibility_timeout is {timeout} s: the messages a dead worker had "
            "prefetched wait that long before another worker runs them.",
            hint="Set CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'] to seconds (15 "
            "here): a redelivered message whose effect is still running does nothing.",
            id="offload.W001",
        )
    ]
