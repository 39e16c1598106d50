"""Abuse limits: each action here sends an email to an address the client chose (a sign-up, a
share, an address change) or to an account's owner (a password reset), so each is limited per
hour, per address and per user (settings.RATE_LIMITS).

Counted in the cache named "limits" (Redis, shared by every web process), in fixed hourly
windows. A request takes its place before the view runs, so that concurrent requests cannot
all slip under a limit, and gives it back when the view refuses it (a form sent back with an
error costs nothing). The one over the limit gets a 429 with Retry-After, the seconds until
its window ends. IPv6 clients are counted by their /64, which one client usually holds whole.
The cache being down never refuses anyone: the limits fail open, with a warning.
"""

import ipaddress
import logging
import math
import time
from functools import wraps

from django.conf import settings
from django.core.cache import caches
from redis.exceptions import RedisError

from .security import client_ip, refusal

logger = logging.getLogger(__name__)

WINDOW = 3600  # seconds: the limits are per hour
MESSAGES = {
    "sign_up": "Too many sign-ups from your address.",
    "share": "Too many shares.",
    "email_change": "Too many address changes.",
    "password_reset": "Too many password reset requests from your address.",
}


def limited(action: str):
    """Decorate a view whose successful POST or PATCH counts against ``action``'s limits."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in ("POST", "PATCH"):
                return view(request, *args, **kwargs)
            taken = _take(request, action)
            if isinstance(taken, int):
                return too_many(request, action, taken)
            went_through = False
            try:
                response = view(request, *args, **kwargs)
                went_through = response.status_code < 400
                return response
            finally:
                if not went_through:
                    _give_back(taken)

        return wrapper

    return decorator


def _take(request, action: str) -> list[str] | int:
    """Count this request against each of ``action``'s limits that is on: the keys it counted
    in, or, when one is used up, the seconds until the window ends (and nothing counted)."""
    now = time.time()
    window, wait = divmod(int(now), WINDOW)
    wait = WINDOW - wait
    who = {"ip": _network(client_ip(request)), "user": getattr(request.user, "pk", None)}
    limits = {
        f"limit:{action}:{per}:{who[per]}:{window}": limit
        for per, limit in settings.RATE_LIMITS[action].items()
        if limit and who[per] is not None
    }
    cache, taken = caches["limits"], []
    try:
        for key, limit in limits.items():
            cache.add(key, 0, timeout=wait + 60)  # outlives its window: incr() never misses it
            count = cache.incr(key)
            taken.append(key)
            if count > limit:
                _give_back(taken)
                return wait
    except (RedisError, ValueError) as exc:  # a cache that cannot answer must not refuse anyone
        logger.warning("abuse limits not checked: the limits cache did not answer (%s)", exc)
        _give_back(taken)
        return []
    return taken


def _give_back(keys: list[str]) -> None:
    try:
        for key in keys:
            caches["limits"].decr(key)
    except (RedisError, ValueError) as exc:
        logger.warning("abuse limits: a count not given back (%s)", exc)


def _network(ip: str | None) -> str | None:
    """The address a limit counts: an IPv4 address, or an IPv6 address's /64."""
    if ip is None or ":" not in ip:
        return ip
    try:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    except ValueError:  # not an address (a proxy's header): counted as it is
        return ip


def too_many(request, action: str, wait: int):
    """429 with Retry-After: JSON for the API, a page for people."""
    minutes = math.ceil(wait / 60)
    message = f"{MESSAGES[action]} Try again in {minutes} minute{'s' if minutes > 1 else ''}."
    response = refusal(request, message, "notifications/too_many.html")
    response["Retry-After"] = str(wait)
    return response
