"""The offload app's settings and their defaults, in one place.

A project sets any of them in its Django settings (this project reads them from the environment
of the same name in project/settings.py); whatever it leaves out takes the default here. Each
is read when used, except EFFECT_TIME_LIMIT, which EffectTask reads when it is imported.

    from offload.conf import conf
    conf.EFFECT_MAX_ATTEMPTS
"""

from datetime import timedelta
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Attempts before an effect is dead-lettered (the ledger counts them, across redeliveries).
    "EFFECT_MAX_ATTEMPTS": 5,
    # Retry delay after attempt n: full jitter over EFFECT_RETRY_BACKOFF * 2**(n - 1) seconds
    # (up to 2 s after the first, 4 s after the second...), at most EFFECT_RETRY_BACKOFF_MAX.
    "EFFECT_RETRY_BACKOFF": 2,
    "EFFECT_RETRY_BACKOFF_MAX": 60,
    # Hard time limit of one attempt, in seconds (the soft limit, at 80%, raises in the task).
    "EFFECT_TIME_LIMIT": 60,
    # How long a claim holds its effect, in seconds, renewed every third of it while the
    # attempt runs (lease.py): an attempt whose worker died or was cut off is taken over at
    # most this long after its last renewal.
    "EFFECT_LEASE_SECONDS": 15,
    # The relay (relay.py) runs every EFFECT_RELAY_INTERVAL seconds in the workers and
    # publishes again: effects whose publish failed, EFFECT_RELAY_GRACE seconds after they were
    # recorded; effects recorded or published more than EFFECT_REPUBLISH_AFTER seconds ago that
    # are neither in their queue nor held by a worker (the broker lost the message, or the
    # process died between its commit and its publish); every pending effect when the broker
    # lost its data; attempts whose lease ran out.
    "EFFECT_RELAY_INTERVAL": 1.0,
    "EFFECT_RELAY_GRACE": 5.0,
    "EFFECT_REPUBLISH_AFTER": 5.0,
    # GET /readyz reuses its answer for this many seconds (per web process): a probe or a
    # visitor polling it costs one database query, one broker connection and one worker ping
    # per interval, however often it asks.
    "READYZ_CACHE_SECONDS": 5.0,
    # Done and skipped effects are deleted after this many days (`manage.py effects prune`,
    # or daily by beat).
    "EFFECT_RETENTION_DAYS": 7,
    # GET /metrics answers only with "Authorization: Bearer <METRICS_TOKEN>"; empty: closed.
    "METRICS_TOKEN": "",
}


class Settings:
    """Reads each setting from Django's settings at the time of use, falling back to DEFAULTS
    (so ``override_settings`` and pytest-django's ``settings`` fixture work as usual)."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"offload has no setting {name!r}")
        return getattr(settings, name, DEFAULTS[name])

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.EFFECT_LEASE_SECONDS)

    @property
    def relay_grace(self) -> timedelta:
        return timedelta(seconds=self.EFFECT_RELAY_GRACE)

    @property
    def republish_after(self) -> timedelta:
        return timedelta(seconds=self.EFFECT_REPUBLISH_AFTER)


conf = Settings()
