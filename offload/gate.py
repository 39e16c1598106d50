"""A worker takes no messages while it cannot reach the database (see DatabaseGate)."""

import logging
import threading
from typing import Any

from django.db import Error as DatabaseFailure
from django.db import connection

logger = logging.getLogger(__name__)


class DatabaseGate(threading.Thread):
    """Stops this worker taking messages while it cannot reach the database, and lets it take
    them again once it can.

    A worker cut off from the database but not from Redis would take its share of messages
    and hand each back unclaimed (EffectTask requeues them after a pause), while workers that
    reach the database stand idle. Every second this thread asks the database ``SELECT 1``;
    after three failures in a row it has the worker cancel its queues, and the first answer
    adds them back. It asks through Celery's remote control, addressed to this worker alone,
    because the consumer belongs to the worker's event loop.
    """

    FAILURES = 3

    def __init__(self, consumer: Any) -> None:
        super().__init__(name="offload-database-gate", daemon=True)
        self.consumer = consumer
        self.stopping = threading.Event()
        self.failures = 0
        self.closed: list[str] = []  # the queues it cancelled

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - Redis unreachable too: try next second
                logger.debug("database gate: %s", exc)
        connection.close()

    def tick(self) -> None:
        if _database_answers():
            self.failures = 0
            if self.closed:
                self._send("add_consumer", self.closed)
                logger.info("the database answers again: taking messages from %s", self.closed)
                self.closed = []
            return
        self.failures += 1
        if self.failures >= self.FAILURES and not self.closed:
            queues = [queue.name for queue in self.consumer.task_consumer.queues]
            self._send("cancel_consumer", queues)
            self.closed = queues
            logger.warning(
                "the database does not answer: this worker stops taking messages from %s", queues
            )

    def _send(self, command: str, queues: list[str]) -> None:
        control = self.consumer.app.control
        for queue in queues:
            # Dropped by the worker if it arrives more than 5 s late: a cancel held back by a
            # broker that was out of reach too must not stop a worker whose database is back.
            getattr(control, command)(queue, destination=[self.consumer.hostname], timeout=5)


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseFailure:
        connection.close()
        return False
    return True


_gate: DatabaseGate | None = None


def start_in_worker(sender: Any = None, **kwargs: Any) -> None:
    """Connected to Celery's worker_ready signal, whose sender is the worker's consumer."""
    global _gate
    _gate = DatabaseGate(sender)
    _gate.start()


def stop_in_worker(**kwargs: Any) -> None:
    """Connected to Celery's worker_shutting_down signal."""
    if _gate is not None:
        _gate.stopping.set()
