"""What offload changes in a Celery worker: no publish that waits for the broker forever, and a
prompt reconnection when it is back.

Set ``CELERY_WORKER_CONSUMER = "offload.worker:Consumer"``.
"""

from functools import partial
from typing import Any

from celery.worker import heartbeat
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer import heart


class Heart(heartbeat.Heart):
    """Celery's worker heartbeat (the event Flower shows a worker as online by), sent once.

    Celery sends it with ``retry=True`` and no retry policy, which is kombu's "retry forever":
    on a host cut off from Redis, the event loop then waits inside that publish until the link
    comes back, minutes later, and with it everything the loop drives (reading the queue, the
    pool's time limits). Sent without retries, a heartbeat that fails waits in Celery's
    buffer of events for the connection to come back, and the loop goes on.
    """

    def _send(self, event: str, retry: bool = False) -> Any:
        return super()._send(event, retry=False)  # type: ignore[misc]  # untyped in celery-types


class HeartStep(heart.Heart):
    """Takes the place of Celery's step of the same name (Consumer.Blueprint below)."""

    def start(self, c: Any) -> None:
        interval = self.heartbeat_interval  # type: ignore[attr-defined]  # untyped
        c.heart = Heart(c.timer, c.event_dispatcher, interval)
        c.heart.start()


class Consumer(CeleryConsumer):
    """Celery's consumer, with the heartbeat above and a lost broker retried every second or
    two.

    Celery's own reconnection backs off by 2 s more on each try, up to 30 s: a Redis back after
    an 8 s outage was found again 12 s in, after a minute's outage up to 30 s late, while the
    relay had already published everything. There is no setting for these intervals.
    """

    class Blueprint(CeleryConsumer.Blueprint):  # type: ignore[misc,valid-type]  # untyped
        default_steps = [
            "offload.worker:HeartStep" if step == "celery.worker.consumer.heart:Heart" else step
            for step in CeleryConsumer.Blueprint.default_steps
        ]

    def ensure_connected(self, conn: Any) -> Any:
        conn.ensure_connection = partial(
            conn.ensure_connection, interval_start=1, interval_step=1, interval_max=2
        )
        return super().ensure_connected(conn)
