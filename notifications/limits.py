"""Abuse limits: how many sign-ups one address, and how many shares one user and one address,
may make per hour (settings.RATE_LIMITS). Each sends an email to an address the client chose.

Counted in the cache named "limits" (Redis, shared by every web process), in fixed hourly
windows: only what went through counts (a form sent back with an error costs nothing), and the
request after the last one allowed gets a 429 with Retry-After, the seconds until its window
ends. The cache being down never refuses anyone: the limits fail open, with a warning.
"""

import logging
import time
from functools import wraps

from django.conf import settings
from django.core.cache import caches
from django.http import JsonResponse
from django.shortcuts import render
from redis.exceptions import RedisError

from .security import client_ip

logger = logging.getLogger(__name__)

WINDOW = 3600  # seconds: the limits are per hour
MESSAGES = {
    "sign_up": "Too many sign-ups from your address.",
    "share": "Too many shares.",
}


def limited(action: str):
    """Decorate a view whose successful POST counts against ``action``'s limits."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method != "POST":
                return view(request, *args, **kwargs)
            keys = _keys(request, action)
            if (wait := _over_limit(keys)) is not None:
                return too_many(request, action, wait)
            response = view(request, *args, **kwargs)
            if response.status_code < 400:
                _count(keys)
            return response

        return wrapper

    return decorator


def _keys(request, action: str) -> dict[str, int]:
    """{cache key of this window: limit} for each of ``action``'s limits that is on."""
    window = int(time.time() // WINDOW)
    who = {"ip": client_ip(request), "user": getattr(request.user, "pk", None)}
    return {
        f"limit:{action}:{per}:{who[per]}:{window}": limit
        for per, limit in settings.RATE_LIMITS[action].items()
        if limit and who[per] is not None
    }


def _over_limit(keys: dict[str, int]) -> int | None:
    """Seconds until the window ends when any limit is used up; None otherwise."""
    if not keys:
        return None
    try:
        counts = caches["limits"].get_many(keys)
    except RedisError as exc:  # a cache that cannot answer must not refuse anyone
        logger.warning("abuse limits not checked: the limits cache did not answer (%s)", exc)
        return None
    if any(counts.get(key, 0) >= limit for key, limit in keys.items()):
        return WINDOW - int(time.time()) % WINDOW
    return None


def _count(keys: dict[str, int]) -> None:
    cache = caches["limits"]
    try:
        for key in keys:
            cache.add(key, 0, timeout=WINDOW)
            cache.incr(key)
    except RedisError as exc:  # as above: the request went through, uncounted
        logger.warning("abuse limits not counted: the limits cache did not answer (%s)", exc)


def too_many(request, action: str, wait: int):
    """429 with Retry-After: JSON for the API, a page for people."""
    minutes = max(1, round(wait / 60))
    message = f"{MESSAGES[action]} Try again in {minutes} minutes."
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message, "errors": {}}, status=429)
    else:
        response = render(request, "notifications/too_many.html", {"message": message}, status=429)
    response["Retry-After"] = str(wait)
    return response
