"""Liveness and readiness probes."""

from celery import current_app as app
from django.db import connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers; nothing else is checked."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to do the whole job: database, broker and at least one live worker."""
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    checks["worker"] = checks["broker"] and _worker_ok()
    failing = [name for name, ok in checks.items() if not ok]
    status = 503 if failing else 200
    body = {"status": "ready" if not failing else "not ready", "failing": failing, "checks": checks}
    return JsonResponse(body, status=status)


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
