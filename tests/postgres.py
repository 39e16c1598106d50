"""For the PostgreSQL-only tests: what another connection of this process is doing."""

from django.db import connection


def backend_pid() -> int:
    """This thread's connection, as pg_stat_activity names it."""
    return connection.cursor().connection.info.backend_pid


def waiting_on_a_lock(pid: int) -> bool:
    """Whether the connection ``pid`` waits for a lock another transaction holds."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() == ("Lock",)
