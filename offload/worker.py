"""What offload changes in a Celery worker: how soon it reconnects to a broker that came back.

Set ``CELERY_WORKER_CONSUMER = "offload.worker:Consumer"``.
"""

from functools import partial
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer


class Consumer(CeleryConsumer):
    """Celery's consumer, retrying a lost broker connection every second or two.

    Celery's own backs off by 2 s more on each try, up to 30 s: a Redis back after an 8 s
    outage was found again 12 s in, after a minute's outage up to 30 s late, while the relay
    had already published everything. There is no setting for these intervals.
    """

    def ensure_connected(self, conn: Any) -> Any:
        conn.ensure_connection = partial(
            conn.ensure_connection, interval_start=1, interval_step=1, interval_max=2
        )
        return super().ensure_connected(conn)
