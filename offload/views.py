"""Liveness and readiness probes."""

import time
from typing import Any

from celery import current_app as app
from django.db import connection
from django.http import HttpRequest, JsonResponse

from .conf import conf

# The last readiness answer, and until when (time.monotonic()) it is given again.
_ready: tuple[float, int, dict[str, Any]] = (0.0, 503, {})


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers; nothing else is checked."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to do the whole job: database, broker and at least one live worker. Checked at
    most once per READYZ_CACHE_SECONDS in this process."""
    global _ready
    now = time.monotonic()
    if _ready[0] <= now:
        _ready = (now + conf.READYZ_CACHE_SECONDS, *_check_readiness())
    _, status, body = _ready
    return JsonResponse(body, status=status)


def _check_readiness() -> tuple[int, dict[str, Any]]:
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    checks["worker"] = checks["broker"] and _worker_ok()
    failing = [name for name, ok in checks.items() if not ok]
    body = {"status": "ready" if not failing else "not ready", "failing": failing, "checks": checks}
    return (503 if failing else 200), body


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


def _broker_ok() -> bool:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:  # noqa: BLE001
        return False


def _worker_ok() -> bool:
    try:
        # One live worker is enough: stop at the first reply instead of waiting out the timeout.
        return bool(app.control.ping(timeout=1.0, limit=1))
    except Exception:  # noqa: BLE001
        return False
