"""Keeping a claim alive while its attempt runs, and knowing when it is no longer held.

A claim holds its effect for EFFECT_LEASE_SECONDS. While the attempt runs, a heartbeat thread
in the worker process renews it every third of that, so a long effect (up to the time limit)
is never taken over; once the process dies or is cut off from the database, renewals stop and
another worker can take the effect over when the lease runs out. Every renewal is fenced by the
attempt number, like every other write of an attempt: one that finds the row taken over marks
the attempt lost.

A second thread in a prefork pool process guards the hard time limit. Celery's pool enforces
it from the worker's event loop, which stands still while the worker reconnects to a broker it
lost (a host cut off from Redis, for as long as the cut lasts); an attempt still running 2 s
past its limit kills its own process then, as the pool would have. That thread makes no
database call, so a renewal blocked on a dead link cannot delay it.
"""

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.db import Error as DatabaseFailure
from django.db import connection

from . import ledger
from .conf import conf
from .ledger import Claim

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This attempt no longer holds its effect: another attempt took it over, or may have."""


@dataclass(eq=False)
class Lease:
    claim: Claim
    # time.monotonic() until which the claim surely holds: the last confirmed renewal plus the
    # lease, less a second for the clock and the round trip.
    holds_until: float
    # time.monotonic() past which the attempt has outlived its hard time limit (and the grace).
    deadline: float
    lost: bool = field(default=False)

    def check(self) -> None:
        """Raise LeaseLost unless the claim surely still holds: call it before a side effect
        that cannot be taken back (an email), so a stale attempt stops short of it."""
        if self.lost or time.monotonic() >= self.holds_until:
            raise LeaseLost(f"effect {self.claim.id}: attempt {self.claim.attempt} lost its lease")


current_lease: ContextVar[Lease | None] = ContextVar("current_lease", default=None)


class Heartbeat:
    """One daemon thread per worker process, renewing the leases of the attempts running in it.

    Started on the first attempt in a process (after the worker forked it), idle between
    attempts: an effect that takes milliseconds is never renewed at all.
    """

    # Seconds past the hard time limit that the pool is given to enforce it itself.
    GRACE = 2.0

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._pid = 0
        # Set in prefork pool processes (apps.py, worker_process_init), where the hard time
        # limit means killing the process; a thread pool or `celery worker -P solo` has none.
        self.enforces_time_limit = False

    @contextmanager
    def hold(self, claim: Claim, deadline: float = float("inf")) -> Iterator[Lease]:
        """Renew ``claim`` while the block runs; ``deadline`` (time.monotonic()) is when the
        attempt reaches its hard time limit."""
        lease = Lease(
            claim,
            holds_until=time.monotonic() + conf.EFFECT_LEASE_SECONDS - 1,
            deadline=deadline + self.GRACE,
        )
        with self._lock:
            self._ensure_running()
            self._leases.add(lease)
        token = current_lease.set(lease)
        try:
            yield lease
        finally:
            current_lease.reset(token)
            with self._lock:
                self._leases.discard(lease)

    def _ensure_running(self) -> None:
        """Under self._lock: a thread pool's attempts may start together."""
        if self._pid != os.getpid():  # none yet in this process (a forked child starts fresh)
            self._pid = os.getpid()
            threading.Thread(target=self._renew, name="offload-heartbeat", daemon=True).start()
            if self.enforces_time_limit:
                threading.Thread(target=self._guard, name="offload-time-limit", daemon=True).start()

    def _leases_now(self) -> list[Lease]:
        with self._lock:
            return list(self._leases)

    def _renew(self) -> None:
        while True:
            time.sleep(conf.EFFECT_LEASE_SECONDS / 3)
            for lease in self._leases_now():
                try:
                    self.renew(lease)
                except Exception:
                    logger.exception("effect=%s lease renewal failed", lease.claim.id)

    def _guard(self) -> None:
        while True:
            time.sleep(0.5)
            for lease in self._leases_now():
                if time.monotonic() > lease.deadline:
                    logger.error(
                        "effect=%s attempt=%s ran past its hard time limit and the worker did"
                        " not stop it (cut off from the broker?): killing pool process %s, as"
                        " the pool would have",
                        lease.claim.id, lease.claim.attempt, os.getpid(),
                    )  # fmt: skip
                    os.kill(os.getpid(), signal.SIGKILL)

    def renew(self, lease: Lease) -> None:
        started = time.monotonic()
        try:
            held = ledger.renew(lease.claim)
        except DatabaseFailure as exc:
            # The lease still runs out on its own; a later tick tries again on a new connection.
            logger.warning("effect=%s lease renewal failed: %s", lease.claim.id, exc)
            connection.close()
            return
        if held:
            lease.holds_until = started + conf.EFFECT_LEASE_SECONDS - 1
        else:
            lease.lost = True


heartbeat = Heartbeat()


def enforce_time_limits(**_: object) -> None:
    """Connected to Celery's worker_process_init signal: this is a prefork pool process."""
    heartbeat.enforces_time_limit = True
