"""System checks (``manage.py check``, and every start of runserver, migrate, a worker)."""

from typing import Any

from django.core.checks import Error, register

from .conf import conf


@register()
def lease_outlasts_the_time_limit(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A live attempt must be killed (at the time limit) before its lease lets another take it
    over; otherwise one effect could run twice at once."""
    if conf.EFFECT_LEASE_SECONDS > conf.EFFECT_TIME_LIMIT:
        return []
    return [
        Error(
            f"EFFECT_LEASE_SECONDS ({conf.EFFECT_LEASE_SECONDS}) must be longer than "
            f"EFFECT_TIME_LIMIT ({conf.EFFECT_TIME_LIMIT}).",
            hint="A slow attempt would be taken over by another while it still runs.",
            id="offload.E001",
        )
    ]
